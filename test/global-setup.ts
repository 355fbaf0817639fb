/**
 * The whole run gets a temporary folder of its own (TMPDIR, which os.tmpdir() and every child
 * process use), and at the end it must be empty: a test that leaves a file or folder behind in
 * the machine's /tmp fails the run, naming what it left. The folder is removed either way.
 *
 * Beside it, a folder for what test files build once per run and share (FINWAIT_TEST_SHARED:
 * the package's `npm pack`, see sharedPack() in npm-env.ts), removed at the end.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

let dir: string | undefined;
let shared: string | undefined;
let previous: string | undefined;

export function setup(): void {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-test-run-'));
  shared = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-test-shared-'));
  process.env.FINWAIT_TEST_SHARED = shared;
  // Others may pass through (not list or write): the demo test runs a copy as an unprivileged user.
  fs.chmodSync(dir, 0o711);
  previous = process.env.TMPDIR;
  process.env.TMPDIR = dir;
  // Node 22+ caches compiled modules for npm in a folder under the temp dir: npm's, not ours.
  process.env.NODE_DISABLE_COMPILE_CACHE = '1';
}

export function teardown(): void {
  if (shared) fs.rmSync(shared, { recursive: true, force: true });
  delete process.env.FINWAIT_TEST_SHARED;
  if (!dir) return;
  const left = fs.readdirSync(dir);
  fs.rmSync(dir, { recursive: true, force: true });
  if (previous === undefined) delete process.env.TMPDIR;
  else process.env.TMPDIR = previous;
  if (left.length > 0) {
    // vitest reports an error thrown here but still exits 0: fail the run through the exit code.
    process.exitCode = 1;
    throw new Error(`the tests left ${left.length} entries in the temporary folder: ${left.join(', ')}`);
  }
}
