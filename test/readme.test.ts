/** The examples of the README and of docs/ run as written (importing 'finwait' through the package's own exports). */
import { afterAll, describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { TCP_STATES } from '../src/index';

const root = path.join(__dirname, '..');
const dir = path.join(root, 'test', '.readme-examples');
const pages = ['README.md', ...fs.readdirSync(path.join(root, 'docs')).filter((f) => f.endsWith('.md')).map((f) => `docs/${f}`)];
const examples = pages.flatMap((page) =>
  [...fs.readFileSync(path.join(root, page), 'utf8').matchAll(/```js\n([\s\S]*?)```/g)].map((m, i) => [`${page} #${i + 1}`, m[1]] as const),
);

afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('README and docs/ examples', () => {
  it('has examples', () => {
    expect(examples.length).toBeGreaterThan(0);
  });

  it.each(examples.map(([name, code], i) => [name, code, i + 1]))('%s runs as written', async (_name, code, i) => {
    fs.mkdirSync(dir, { recursive: true });
    const file = path.join(dir, `example-${i}.mjs`);
    fs.writeFileSync(file, code as string);
    const { stdout } = await promisify(execFile)(process.execPath, [file], { cwd: root, timeout: 15_000 });
    // Each example prints the states its comments promise.
    const promised = [...(code as string).matchAll(/\/\/ ([A-Z][A-Z_0-9]+)\b/g)].map((m) => m[1]);
    for (const state of promised.filter((word) => (TCP_STATES as readonly string[]).includes(word))) {
      expect(stdout).toContain(state);
    }
  });
});
