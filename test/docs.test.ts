/**
 * The documentation cannot drift from the tests: every link into the repository from a page of
 * docs/ (and the README) points at a file that exists, and every kernel row of docs/kernel.md
 * links the test file whose test is named after that row.
 */
import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';

const root = path.join(__dirname, '..');
const pages = [
  path.join(root, 'README.md'),
  ...fs.readdirSync(path.join(root, 'docs')).filter((f) => f.endsWith('.md')).map((f) => path.join(root, 'docs', f)),
];

/** Relative markdown links of a page: `[text](../test/x.test.ts)`, anchors and URLs left out. */
function links(file: string): string[] {
  const text = fs.readFileSync(file, 'utf8');
  return [...text.matchAll(/\]\(([^)\s#]+)(?:#[^)]*)?\)/g)].map((m) => m[1]).filter((target) => !/^[a-z]+:/.test(target));
}

describe('documentation links', () => {
  it.each(pages.map((p) => [path.relative(root, p), p]))('%s links only to files that exist', (_name, page) => {
    for (const target of links(page)) {
      expect(fs.existsSync(path.resolve(path.dirname(page), target)), `${path.relative(root, page)} -> ${target}`).toBe(true);
    }
  });

  it('each kernel row of docs/kernel.md links the test named after it', () => {
    const text = fs.readFileSync(path.join(root, 'docs', 'kernel.md'), 'utf8');
    const rows = [...text.matchAll(/^\| (\d+) \|.*\]\((\.\.\/test\/[^)]+)\) \|$/gm)];
    expect(rows.map((r) => Number(r[1]))).toEqual(Array.from({ length: rows.length }, (_, i) => i + 1));
    expect(rows.length).toBeGreaterThanOrEqual(14);
    for (const [, row, target] of rows) {
      const source = fs.readFileSync(path.resolve(root, 'docs', target), 'utf8');
      // A test named "N. …" (test/kernel/) or "kernel row N: …".
      expect(source, `row ${row} in ${target}`).toMatch(new RegExp(`\\(\\s*['"\`](${row}\\. |kernel row ${row}:)`));
    }
  });

  it('docs/testing.md shows test/examples/lab-half-close.test.ts as it is, so the example it shows is run', () => {
    const page = fs.readFileSync(path.join(root, 'docs', 'testing.md'), 'utf8');
    const example = fs.readFileSync(path.join(root, 'test', 'examples', 'lab-half-close.test.ts'), 'utf8');
    expect(page).toContain('```ts\n' + example + '```');
  });

  it('every export of finwait, finwait/testing and finwait/vitest is named in its reference page', async () => {
    const read = (...pages: string[]) => pages.map((p) => fs.readFileSync(path.join(root, 'docs', p), 'utf8')).join('\n');
    const entries: [string, object, string][] = [
      ['finwait', await import('../src/index'), read('api.md', 'shutdown.md')],
      ['finwait/testing', await import('../src/testing/index'), read('testing.md')],
      ['finwait/vitest', await import('../src/vitest'), read('testing.md')],
    ];
    for (const [entry, exports, text] of entries) {
      const missing = Object.keys(exports).filter((name) => name !== 'default' && !text.includes(`\`${name}`) && !text.includes(`.${name}(`));
      expect(missing, `${entry}: exports no page names`).toEqual([]);
    }
  });
});
