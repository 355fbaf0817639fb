/**
 * The published package: `npm pack` holds the prebuild, dist/ and what a compile needs; the
 * tarball installed into an empty folder with --ignore-scripts (so nothing is compiled) works
 * through both require() and import().
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const root = path.join(__dirname, '..');
let tmp: string;
let tarball: string;
let files: string[];

/** ELF e_machine values for the architectures prebuilds are named after. */
const ELF_MACHINE: Record<string, number> = { x64: 62, arm64: 183, ia32: 3, arm: 40 };

/** What `npm pack` needs to build the package (prebuildify + tsc), copied so it builds there. */
const SOURCES = ['package.json', 'README.md', 'binding.gyp', 'addon', 'src', 'scripts', 'tsconfig.json', 'tsconfig.build.json'];

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-pack-'));
  // Pack from a copy: prebuildify rebuilds in build/, which the other test files are loading from.
  const work = path.join(tmp, 'finwait');
  for (const entry of SOURCES) fs.cpSync(path.join(root, entry), path.join(work, entry), { recursive: true });
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(work, 'node_modules'), 'dir');
  const out = execFileSync('npm', ['pack', '--json', '--pack-destination', tmp], {
    cwd: work,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const [info] = JSON.parse(out.slice(out.indexOf('[')));
  tarball = path.join(tmp, info.filename);
  files = info.files.map((f: { path: string }) => f.path);
  const app = path.join(tmp, 'app');
  fs.mkdirSync(app);
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', private: true }));
  execFileSync('npm', ['install', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline', tarball], {
    cwd: app,
    stdio: 'ignore',
  });
}, 240_000);

afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('npm pack', () => {
  it('contains the prebuild for this platform, dist/ with types, and the addon sources', () => {
    const prebuild = files.find((f) => f.startsWith(`prebuilds/${process.platform}-${process.arch}/`) && f.endsWith('.node'));
    expect(prebuild, files.join('\n')).toBeDefined();
    for (const f of ['dist/index.js', 'dist/index.mjs', 'dist/index.d.ts', 'dist/index.d.mts', 'dist/testing/index.js', 'dist/testing/index.mjs', 'dist/testing/index.d.ts', 'dist/testing/index.d.mts', 'binding.gyp', 'addon/finwait.h', 'addon/fd_poll.cc', 'README.md', 'package.json']) {
      expect(files).toContain(f);
    }
    expect(files.filter((f) => f.startsWith('test/') || f.startsWith('src/') || f.startsWith('build/'))).toEqual([]);
  });

  it('ships a prebuild whose binary matches the architecture its folder names', () => {
    const dir = path.join(tmp, 'app', 'node_modules', 'finwait', 'prebuilds');
    for (const folder of fs.readdirSync(dir)) {
      const [platform, arch] = folder.split('-');
      for (const file of fs.readdirSync(path.join(dir, folder))) {
        const bytes = fs.readFileSync(path.join(dir, folder, file));
        if (platform === 'linux') {
          expect(bytes.subarray(0, 4).toString('latin1')).toBe('\x7fELF');
          expect(bytes.readUInt16LE(18), `${folder}/${file}`).toBe(ELF_MACHINE[arch]);
        }
      }
    }
  });
});

describe('the installed tarball (no scripts ran, nothing compiled)', () => {
  const app = () => path.join(tmp, 'app');
  const script = `
    const net = require('node:net');
    const server = net.createServer((s) => s.resume()).listen(0, '127.0.0.1', () => {
      const c = net.connect(server.address().port, '127.0.0.1', () => {
        console.log(finwait.tcpState(c), typeof finwait.closeWrite);
        c.destroy(); server.close();
      });
    });`;

  it('works through require()', () => {
    expect(fs.existsSync(path.join(app(), 'node_modules', 'finwait', 'build'))).toBe(false);
    const out = execFileSync(process.execPath, ['-e', `const finwait = require('finwait');${script}`], { cwd: app(), encoding: 'utf8' });
    expect(out.trim()).toBe('ESTABLISHED function');
  });

  it('serves the finwait/vitest matchers', () => {
    const out = execFileSync(process.execPath, ['-e', "console.log(Object.keys(require('finwait/vitest').matchers).join(','))"], { cwd: app(), encoding: 'utf8' });
    expect(out.trim()).toBe('toBeInTcpState,toHaveSeenStates');
  });

  it('installs the finwait command, which runs', () => {
    const bin = path.join(app(), 'node_modules', '.bin', 'finwait');
    const help = execFileSync(bin, ['--help'], { cwd: app(), encoding: 'utf8' });
    expect(help).toMatch(/usage: finwait <command>/);
    const out = execFileSync(bin, ['demo', 'reset', '--json'], { cwd: app(), encoding: 'utf8' });
    expect(JSON.parse(out)).toMatchObject({ scenario: 'reset' });
  });

  it('works through import(), sharing the one CommonJS implementation', () => {
    const code = `import * as finwait from 'finwait'; import { createRequire } from 'node:module';
      const require = createRequire(import.meta.url);
      if (finwait.tcpState !== require('finwait').tcpState) throw new Error('two copies loaded');
      ${script}`;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', code], { cwd: app(), encoding: 'utf8' });
    expect(out.trim()).toBe('ESTABLISHED function');
  });
});

describe('the finwait/testing sub-path of the installed tarball', () => {
  const app = () => path.join(tmp, 'app');
  const script = `
    t.connectPair().then(async (p) => {
      console.log(await t.waitForState(p.client, 'ESTABLISHED'), typeof t.createLab, typeof t.labAvailable().ok);
      await p.close();
    });`;

  it('works through require()', () => {
    const out = execFileSync(process.execPath, ['-e', `const t = require('finwait/testing');${script}`], { cwd: app(), encoding: 'utf8' });
    expect(out.trim()).toBe('ESTABLISHED function boolean');
  });

  it('works through import(), sharing the one CommonJS implementation', () => {
    const code = `import * as t from 'finwait/testing'; import { createRequire } from 'node:module';
      const require = createRequire(import.meta.url);
      if (t.createLab !== require('finwait/testing').createLab) throw new Error('two copies loaded');
      ${script}`;
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', code], { cwd: app(), encoding: 'utf8' });
    expect(out.trim()).toBe('ESTABLISHED function boolean');
  });
});

describe('linked into a project (npm link: a symlink out of node_modules), under vitest', () => {
  it('imports finwait and finwait/testing through their ESM entries, which vitest then transforms', () => {
    // vitest transforms a dependency that resolves outside node_modules, as a linked one does:
    // the ESM wrappers must give the CommonJS exports there too, not only under Node's loader.
    const project = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-linked-'));
    try {
      fs.mkdirSync(path.join(project, 'node_modules'));
      fs.symlinkSync(root, path.join(project, 'node_modules', 'finwait'), 'dir');
      fs.symlinkSync(path.join(root, 'node_modules', 'vitest'), path.join(project, 'node_modules', 'vitest'), 'dir');
      fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'linked', private: true, type: 'module' }));
      fs.writeFileSync(
        path.join(project, 'linked.test.mjs'),
        `import { expect, test } from 'vitest';
         import { tcpState } from 'finwait';
         import { connectPair } from 'finwait/testing';
         import { matchers } from 'finwait/vitest';
         expect.extend(matchers);
         test('a pair through the linked package', async () => {
           const p = await connectPair();
           expect(tcpState(p.client)).toBe('ESTABLISHED');
           expect(p.client).toBeInTcpState('ESTABLISHED');
           await p.close();
         });`,
      );
      const out = execFileSync(path.join(root, 'node_modules', '.bin', 'vitest'), ['run', '--root', project], {
        cwd: project,
        encoding: 'utf8',
        env: { ...process.env, NO_COLOR: '1', CI: 'true' },
      });
      expect(out).toMatch(/Tests\s+1 passed/);
    } finally {
      fs.rmSync(project, { recursive: true, force: true });
    }
  }, 60_000);
});
