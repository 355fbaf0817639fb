/**
 * The install step (scripts/install.cjs, npm's `install` script) on a user's machine: it keeps a
 * binary that loads, builds from source offline where none does (musl, a fresh clone), and
 * never fails the install: without a compiler it warns and exits 0; off Linux it builds nothing.
 * Run in a copy of what the tarball holds for a build, on a fresh machine's environment.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freshNpmEnv, leftIn } from './npm-env';

const root = path.join(__dirname, '..');
const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'));
let tmp: string;
let dir: string;
let fresh: ReturnType<typeof freshNpmEnv>;
/** PATH folders: `nocxx` has every command of this PATH but the C and C++ compilers; `bare` only node. */
let nocxx: string;
let bare: string;

const prefix = path.resolve(path.dirname(fs.realpathSync(process.execPath)), '..');
const headers = path.join(prefix, 'include', 'node');
const hasHeaders = fs.existsSync(path.join(headers, 'common.gypi')) && fs.existsSync(path.join(headers, 'node_api.h'));
const binary = () => path.join(dir, 'build', 'Release', 'finwait.node');
const prebuild = () => path.join(dir, 'prebuilds', `linux-${process.arch}`, 'finwait.glibc.node');

/** A folder of links to every command on PATH whose name `keep` accepts. */
function pathWith(name: string, keep: (command: string) => boolean): string {
  const bin = path.join(tmp, name);
  fs.mkdirSync(bin);
  for (const from of (process.env.PATH ?? '').split(path.delimiter)) {
    let entries: string[] = [];
    try {
      entries = fs.readdirSync(from);
    } catch {
      continue;
    }
    for (const command of entries) {
      if (!keep(command) || fs.existsSync(path.join(bin, command))) continue;
      fs.symlinkSync(path.join(from, command), path.join(bin, command));
    }
  }
  if (!fs.existsSync(path.join(bin, 'node'))) fs.symlinkSync(process.execPath, path.join(bin, 'node'));
  return bin;
}

/** Runs the install script in the copy, as npm would (npm hands scripts its node-gyp). */
function install(options: { path?: string; env?: NodeJS.ProcessEnv; args?: string[]; preload?: string } = {}): SpawnSyncReturns<string> {
  const env: NodeJS.ProcessEnv = { ...fresh.env, npm_config_node_gyp: require.resolve('node-gyp/bin/node-gyp.js'), ...options.env };
  if (options.path) env.PATH = options.path;
  const args = [...(options.preload ? ['-r', options.preload] : []), path.join(dir, 'scripts', 'install.cjs'), ...(options.args ?? [])];
  return spawnSync(process.execPath, args, { cwd: dir, env, encoding: 'utf8', timeout: 180_000 });
}

/** True if node-gyp-build finds a binary in the copy that loads and has the Linux back-end. */
function loads(env: NodeJS.ProcessEnv = fresh.env): boolean {
  const code = `process.exit(require(${JSON.stringify(require.resolve('node-gyp-build'))})(${JSON.stringify(dir)}).constants.supported ? 0 : 1)`;
  return spawnSync(process.execPath, ['-e', code], { env, stdio: 'ignore' }).status === 0;
}

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-install-'));
  fresh = freshNpmEnv(tmp);
  dir = path.join(tmp, 'finwait');
  for (const entry of ['package.json', 'binding.gyp', 'addon', 'scripts/install.cjs']) fs.cpSync(path.join(root, entry), path.join(dir, entry), { recursive: true });
  // The dependencies as an install lays them out (copies: gyp places a linked one's outputs by its real path).
  for (const dep of ['node-addon-api', 'node-gyp-build']) {
    fs.cpSync(path.dirname(require.resolve(`${dep}/package.json`)), path.join(dir, 'node_modules', dep), { recursive: true });
  }
  const compiler = /^(?:.*-)?(?:g\+\+|c\+\+|gcc|cc|clang|clang\+\+)(?:-[\d.]+)?$/;
  nocxx = pathWith('nocxx', (c) => !compiler.test(c));
  bare = pathWith('bare', (c) => c === 'node');
});

afterAll(() => {
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

describe('package.json', () => {
  it('restricts neither os nor cpu (npm would refuse the install with EBADPLATFORM)', () => {
    expect(pkg.os).toBeUndefined();
    expect(pkg.cpu).toBeUndefined();
  });

  it('runs scripts/install.cjs at install, which the package ships, and which needs nothing but node-gyp-build and node-gyp', () => {
    expect(pkg.scripts.install).toBe('node scripts/install.cjs');
    expect(pkg.files).toContain('scripts/install.cjs');
    const source = fs.readFileSync(path.join(root, 'scripts', 'install.cjs'), 'utf8');
    const required = [...source.matchAll(/require(?:\.resolve)?\('([^']+)'\)/g)].map((m) => m[1]);
    expect(required.filter((r) => !r!.startsWith('node:') && !/^(node-gyp-build|node-gyp\/bin\/node-gyp\.js)$/.test(r!))).toEqual([]);
  });
});

describe('the install script on Linux', () => {
  it('builds from source where no binary loads, offline, with the running Node\'s headers (a fresh clone, musl)', (ctx) => {
    if (!hasHeaders) {
      const why = `${process.execPath} has no headers in ${headers}, so the build would download them`;
      if (process.env.CI === 'true') throw new Error(`CI=true: this test may not be skipped: ${why}`);
      ctx.skip(why);
    }
    const result = install();
    expect(result.status, result.stderr).toBe(0);
    expect(result.stderr).toContain(`building the native addon from source for linux-${process.arch} (Node ${process.version}) with the headers in ${headers}`);
    expect(result.stderr).not.toMatch(/warning/);
    expect(loads()).toBe(true);
    expect(leftIn(fresh.home)).toEqual([]); // no node-gyp header download into ~/.cache/node-gyp
    expect(leftIn(fresh.tmp)).toEqual([]);
  }, 180_000);

  it('keeps a binary that loads: nothing is built again', (ctx) => {
    if (!fs.existsSync(binary())) ctx.skip('the build of the test before did not run');
    const before = fs.statSync(binary()).mtimeMs;
    const result = install({ path: bare });
    expect(result.status, result.stderr).toBe(0);
    expect(result.stderr).toBe('');
    expect(fs.statSync(binary()).mtimeMs).toBe(before);
  });

  it('uses the glibc prebuild on glibc: no compiler needed', (ctx) => {
    if (!fs.existsSync(binary())) ctx.skip('the build of the first test did not run');
    fs.mkdirSync(path.dirname(prebuild()), { recursive: true });
    fs.renameSync(binary(), prebuild());
    fs.rmSync(path.join(dir, 'build'), { recursive: true });
    const result = install({ path: nocxx });
    expect(result.status, result.stderr).toBe(0);
    expect(result.stderr).toBe('');
    expect(fs.existsSync(path.join(dir, 'build'))).toBe(false);
    expect(loads()).toBe(true);
  });

  it('skips the glibc prebuild on musl (LIBC=musl) and builds; without a compiler, one warning and exit 0', () => {
    const result = install({ path: nocxx, env: { LIBC: 'musl' } });
    expect(result.status, result.stderr).toBe(0);
    expect(result.stderr).toContain(`building the native addon from source for linux-${process.arch}`);
    const warning = result.stderr.slice(result.stderr.indexOf('finwait: warning:'));
    expect(warning).toMatch(new RegExp(`^finwait: warning: no prebuilt binary loads on linux-${process.arch} \\(Node ${process.version}\\) and building from source failed: missing: a C\\+\\+ compiler \\(g\\+\\+, or CXX naming one\\)\\.\\n`));
    expect(warning).toContain('closeServer() and gracefulClose() still work with what Node alone can do');
    expect(warning).toContain('throw ENOTSUP');
    expect(warning).toContain('then run `npm rebuild finwait`');
    expect(warning.match(/warning/g)).toHaveLength(1);
    expect(fs.existsSync(path.join(dir, 'build'))).toBe(false); // no half-made build/ to shadow anything
    expect(loads({ ...fresh.env, LIBC: 'musl' })).toBe(false);
  });

  it('names everything missing: python3, make and a C++ compiler', () => {
    const result = install({ path: bare, env: { LIBC: 'musl' } });
    expect(result.status, result.stderr).toBe(0);
    expect(result.stderr).toContain('building from source failed: missing: python3, make, a C++ compiler (g++, or CXX naming one).');
  });

  it('names a CXX that does not run', () => {
    const result = install({ env: { LIBC: 'musl', CXX: path.join(tmp, 'no-such-g++') } });
    expect(result.status, result.stderr).toBe(0);
    expect(result.stderr).toContain(`missing: a C++ compiler (CXX=${path.join(tmp, 'no-such-g++')} does not run)`);
  });

  it('with --rebuild (npm run build:addon) fails with the reason instead', () => {
    const result = install({ path: nocxx, args: ['--rebuild'] });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain(`finwait: error: the native addon could not be built for linux-${process.arch} (Node ${process.version}): missing: a C++ compiler`);
  });
});

describe('the install script off Linux', () => {
  for (const platform of ['darwin', 'win32', 'freebsd']) {
    it(`builds nothing on ${platform} and needs no compiler`, () => {
      const preload = path.join(tmp, `as-${platform}.cjs`);
      fs.writeFileSync(preload, `Object.defineProperty(process, 'platform', { value: ${JSON.stringify(platform)} });\n`);
      fs.rmSync(path.join(dir, 'prebuilds'), { recursive: true, force: true });
      const result = install({ path: bare, preload });
      expect(result.status, result.stderr).toBe(0);
      expect(result.stderr).toBe(`finwait: nothing to build on ${platform}: the kernel calls are Linux-only for now and throw ENOTSUP here; closeServer() and gracefulClose() work with what Node alone can do.\n`);
      expect(fs.existsSync(path.join(dir, 'build'))).toBe(false);
    });
  }
});
