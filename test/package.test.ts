/**
 * The published package: `npm pack` holds the linux-x64 and linux-arm64 (glibc) prebuilds, dist/
 * and what a compile needs; it is made offline on a fresh machine (no ~/.npmrc, so no configured
 * nodedir: the headers are the running Node's). The tarball installed into an empty folder with
 * --ignore-scripts (so nothing is compiled) works through both require() and import(), and
 * installs on any OS.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { leftIn, sharedPack, type Pack } from './npm-env';
import { ELF_MACHINE, NEWEST_VERSION, elfInfo, tooNew } from '../scripts/elf.mjs';

const root = path.join(__dirname, '..');
let pack: Pack;
let files: string[];

/** True if the cross compiler for linux-arm64 is here (CI=true requires it: the pack fails without it). */
const crossCompiler = process.env.CI === 'true' || spawnSync('aarch64-linux-gnu-g++', ['--version'], { stdio: 'ignore' }).status === 0;
/** The prebuilds the tarball must carry on this machine. */
const expected = ['linux-x64', ...(crossCompiler ? ['linux-arm64'] : [])];

beforeAll(async () => {
  // The pack and its installs (into 'app', and into 'app-win32' with --os=win32 --cpu=x64),
  // made once for the run: arm64.test.ts runs the same tarball's arm64 prebuild.
  pack = await sharedPack();
  files = pack.files;
}, 300_000);

describe('npm pack', () => {
  it('contains the prebuilds, dist/ with types, the install script and the addon sources', () => {
    const prebuilds = files.filter((f) => f.startsWith('prebuilds/'));
    expect(prebuilds.sort()).toEqual(expected.map((dir) => `prebuilds/${dir}/finwait.glibc.node`).sort());
    for (const f of ['dist/index.js', 'dist/index.mjs', 'dist/index.d.ts', 'dist/index.d.mts', 'dist/testing/index.js', 'dist/testing/index.mjs', 'dist/testing/index.d.ts', 'dist/testing/index.d.mts', 'binding.gyp', 'addon/finwait.h', 'addon/fd_poll.cc', 'scripts/install.cjs', 'README.md', 'CHANGELOG.md', 'docs/api.md', 'docs/kernel.md', 'package.json']) {
      expect(files).toContain(f);
    }
    expect(files.filter((f) => /^(test|src|build)\//.test(f) || (f.startsWith('scripts/') && f !== 'scripts/install.cjs'))).toEqual([]);
  });

  it('ships prebuilds whose binaries match the architecture their folders name', () => {
    const dir = path.join(pack.app, 'node_modules', 'finwait', 'prebuilds');
    expect(fs.readdirSync(dir).sort()).toEqual([...expected].sort());
    for (const folder of fs.readdirSync(dir)) {
      const [platform, arch] = folder.split('-');
      expect(platform).toBe('linux');
      for (const file of fs.readdirSync(path.join(dir, folder))) {
        expect(elfInfo(fs.readFileSync(path.join(dir, folder, file))).machine, `${folder}/${file}`).toBe(ELF_MACHINE[arch!]);
      }
    }
  });

  it("ships prebuilds that need no newer glibc or libstdc++ than Node's own binaries, so they load where Node does", () => {
    const dir = path.join(pack.app, 'node_modules', 'finwait', 'prebuilds');
    for (const folder of fs.readdirSync(dir)) {
      const { needs } = elfInfo(fs.readFileSync(path.join(dir, folder, 'finwait.glibc.node')));
      expect(Object.keys(needs).sort(), folder).toEqual(['libc.so.6', 'libgcc_s.so.1', 'libstdc++.so.6']);
      expect(tooNew(needs), `${folder}, limits ${JSON.stringify(NEWEST_VERSION)}`).toEqual([]);
    }
  });

  it('is made offline on a fresh machine: no headers fetched into HOME, nothing left in TMPDIR', () => {
    expect(leftIn(pack.home).filter((f) => !f.startsWith('.npm'))).toEqual([]);
    // npm itself keeps Node's module compile cache there on Node 22 and later.
    expect(leftIn(pack.tmp).filter((f) => !f.startsWith('node-compile-cache'))).toEqual([]);
  });
});

describe('the tarball on other platforms', () => {
  it('installs with npm --os=win32 --cpu=x64 (no os or cpu field refuses it with EBADPLATFORM)', () => {
    const pkg = path.join(pack.appWin32, 'node_modules', 'finwait', 'package.json');
    const manifest = JSON.parse(fs.readFileSync(pkg, 'utf8'));
    expect(manifest.name).toBe('finwait');
    expect(manifest.os).toBeUndefined();
    expect(manifest.cpu).toBeUndefined();
  });

  it('never loads the glibc prebuild on musl (node-gyp-build with LIBC=musl, as on Alpine): it has to build', () => {
    const app = pack.app;
    const resolve = `console.log(require('node-gyp-build').resolve(require('node:path').dirname(require.resolve('finwait/package.json'))))`;
    const glibc = execFileSync(process.execPath, ['-e', resolve], { cwd: app, encoding: 'utf8' });
    expect(glibc.trim()).toBe(path.join(app, 'node_modules', 'finwait', 'prebuilds', `linux-${process.arch}`, 'finwait.glibc.node'));
    const musl = spawnSync(process.execPath, ['-e', resolve], { cwd: app, encoding: 'utf8', env: { ...process.env, LIBC: 'musl' } });
    expect(musl.status).toBe(1);
    expect(musl.stderr).toMatch(/No native build was found for .*libc=musl/);
    // finwait itself still imports; the kernel calls say why they cannot run.
    const code = `const f = require('finwait'); try { f.tcpState(0); } catch (e) { console.log(e.code); }`;
    const out = execFileSync(process.execPath, ['-e', code], { cwd: app, encoding: 'utf8', env: { ...process.env, LIBC: 'musl' } });
    expect(out.trim()).toMatch(/^(ERR_DLOPEN_FAILED|ENOTSUP)$/);
  });
});

describe('the installed tarball (no scripts ran, nothing compiled)', () => {
  const app = () => pack.app;
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
  const app = () => pack.app;
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
