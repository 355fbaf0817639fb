/**
 * The API reference (`npm run docs`, TypeDoc) builds without a warning: every export of finwait,
 * finwait/testing and finwait/vitest has a doc comment, every `{@link}` resolves, and every type
 * the public API uses is exported. Checked without writing the HTML (`--emit none`), ~10 s.
 */
import { expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';

const root = path.join(__dirname, '..');

it('npm run docs: TypeDoc validates the three entry points with no warning', async () => {
  const typedoc = path.join(root, 'node_modules', 'typedoc', 'bin', 'typedoc');
  // --disableSources: no source links, which need the checkout's git remote (a clone without
  // one, or a worktree, warned "The provided git remote "origin" was not valid") and are not
  // what is checked here.
  const { stdout, stderr } = await promisify(execFile)(process.execPath, [typedoc, '--emit', 'none', '--disableSources'], {
    cwd: root,
    env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' },
  });
  // A warning fails the run (treatWarningsAsErrors: execFile rejects); none is printed either.
  expect(stdout + stderr).not.toMatch(/\[(warning|error)\]/);
}, 60_000);
