// Writes the ESM entry points next to the CommonJS build: each re-exports the one CJS
// implementation, so state and error classes load once whichever way finwait is imported.
import { createRequire } from 'node:module';
import { writeFileSync } from 'node:fs';
import { join, dirname, basename } from 'node:path';
import { fileURLToPath } from 'node:url';

const dist = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist');
const require = createRequire(import.meta.url);
const entries = process.argv.slice(2).length ? process.argv.slice(2) : ['index'];

// An entry may be in a subfolder (`testing/index`): the wrapper sits next to its CJS file.
for (const entry of entries) {
  const file = basename(entry);
  const names = Object.keys(require(join(dist, `${entry}.js`))).filter((n) => n !== 'default' && n !== '__esModule');
  // require(), not `import cjs from`: a bundler or vitest that transforms this file (finwait linked
  // with `npm link`, outside node_modules) takes a default import of a module marked __esModule as
  // its `default` export, which has none; Node's own require gives module.exports everywhere.
  const js = [
    `import { createRequire } from 'node:module';`,
    `const cjs = createRequire(import.meta.url)('./${file}.js');`,
    `export const { ${names.join(', ')} } = cjs;`,
    'export default cjs;',
    '',
  ].join('\n');
  writeFileSync(join(dist, `${entry}.mjs`), js);
  writeFileSync(join(dist, `${entry}.d.mts`), `export * from './${file}.js';\n`);
}
