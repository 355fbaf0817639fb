/**
 * The environment of a user's fresh machine for npm and node-gyp run by a test: HOME is an empty
 * folder (no ~/.npmrc, no node-gyp header cache), no npm_* settings inherited from the npm running
 * the tests (`npm test` exports its whole configuration, a `nodedir` included), no compiler or
 * libc overrides, and TMPDIR inside the test's own temporary folder, so that nothing can be left
 * in /tmp. npm's cache stays the real one: installing a tarball's dependencies needs no download
 * when they are cached, and the registry is used only when they are not.
 */
import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

/** npm's cache folder as the user running the tests has it configured. */
export function npmCache(): string {
  if (process.env.npm_config_cache) return process.env.npm_config_cache;
  const out = execFileSync('npm', ['config', 'get', 'cache'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  return out || path.join(os.homedir(), '.npm');
}

/** A fresh machine's environment whose HOME and TMPDIR are new empty folders under `dir`. */
export function freshNpmEnv(dir: string, extra: NodeJS.ProcessEnv = {}): { env: NodeJS.ProcessEnv; home: string; tmp: string } {
  const home = path.join(dir, 'home');
  const tmp = path.join(dir, 'tmp');
  fs.mkdirSync(home, { recursive: true });
  fs.mkdirSync(tmp, { recursive: true });
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (/^(npm_|INIT_CWD$|NODE$|CC$|CXX$|LINK$|MAKE$|PYTHON$|LIBC$|PREBUILDS_ONLY$|FINWAIT_NATIVE$|FINWAIT_PREBUILD$)/i.test(key)) continue;
    env[key] = value;
  }
  Object.assign(env, { HOME: home, TMPDIR: tmp, npm_config_cache: npmCache(), npm_config_update_notifier: 'false', npm_config_fund: 'false', npm_config_audit: 'false' }, extra);
  return { env, home, tmp };
}

/** Every path under `dir`, relative to it (empty when nothing was left there). */
export function leftIn(dir: string): string[] {
  return fs.readdirSync(dir, { recursive: true }).map(String);
}

/** What `npm pack` of this tree gave, and the two installs of its tarball. */
export interface Pack {
  /** The tarball npm made. */
  tarball: string;
  /** The paths it holds, as `npm pack --json` lists them. */
  files: string[];
  /** An empty project with the tarball installed (`npm install --ignore-scripts`: nothing compiled). */
  app: string;
  /** The same, installed with `--os=win32 --cpu=x64`. */
  appWin32: string;
  /** HOME and TMPDIR of the fresh machine the pack and the installs ran on. */
  home: string;
  tmp: string;
}

/** What `npm pack` needs to build the package (prebuilds + tsc), copied so it builds there. */
const PACK_SOURCES = ['package.json', 'README.md', 'CHANGELOG.md', 'docs', 'binding.gyp', 'addon', 'src', 'scripts', 'tsconfig.json', 'tsconfig.build.json'];

/** Runs `npm args` in `cwd` without blocking the event loop; rejects with npm's stderr. */
async function npmIn(args: string[], cwd: string, env: NodeJS.ProcessEnv): Promise<string> {
  try {
    const { stdout } = await promisify(execFile)('npm', args, { cwd, env, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
    return stdout;
  } catch (error) {
    const e = error as Error & { stderr?: string };
    throw new Error(`npm ${args.join(' ')} failed in ${cwd}: ${e.message}\n${e.stderr ?? ''}`);
  }
}

async function makePack(dir: string): Promise<Pack> {
  const root = path.join(__dirname, '..');
  const { env, home, tmp } = freshNpmEnv(dir);
  // Pack from a copy: a build there cannot disturb build/, which the other test files load from.
  const work = path.join(dir, 'finwait');
  for (const entry of PACK_SOURCES) fs.cpSync(path.join(root, entry), path.join(work, entry), { recursive: true });
  fs.rmSync(path.join(work, 'prebuilds'), { recursive: true, force: true });
  fs.symlinkSync(path.join(root, 'node_modules'), path.join(work, 'node_modules'), 'dir');
  const out = await npmIn(['pack', '--json', '--pack-destination', dir], work, env);
  const [info] = JSON.parse(out.slice(out.indexOf('[')));
  const pack: Pack = {
    tarball: path.join(dir, info.filename),
    files: info.files.map((f: { path: string }) => f.path),
    app: path.join(dir, 'app'),
    appWin32: path.join(dir, 'app-win32'),
    home,
    tmp,
  };
  for (const [app, flags] of [[pack.app, []], [pack.appWin32, ['--os=win32', '--cpu=x64']]] as const) {
    fs.mkdirSync(app);
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: path.basename(app), private: true }));
    await npmIn(['install', '--ignore-scripts', '--prefer-offline', ...flags, pack.tarball], app, env);
  }
  return pack;
}

/**
 * `npm pack` of this tree, made once per test run on a fresh machine (see freshNpmEnv: no
 * ~/.npmrc, so the prebuilds are built offline against the running Node's headers) and shared
 * by the test files that examine it (package.test.ts, arm64.test.ts): the pack compiles the
 * addon twice (linux-x64, and linux-arm64 with the cross compiler), about a minute of CPU. The
 * first caller makes it in the run's shared folder (FINWAIT_TEST_SHARED, made by the global
 * setup) and every other waits for the result, or its error.
 */
export async function sharedPack(): Promise<Pack> {
  const shared = process.env.FINWAIT_TEST_SHARED;
  if (!shared) throw new Error('FINWAIT_TEST_SHARED is not set: run the tests with the project\'s vitest.config.mts, whose global setup makes that folder');
  const dir = path.join(shared, 'pack');
  const done = path.join(shared, 'pack.json');
  try {
    fs.mkdirSync(dir); // the first caller makes the pack; the folder is its claim
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    for (;;) {
      if (fs.existsSync(done)) {
        const result = JSON.parse(fs.readFileSync(done, 'utf8')) as { pack?: Pack; error?: string };
        if (result.error) throw new Error(`the shared npm pack failed (in another test file): ${result.error}`);
        return result.pack!;
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }
  try {
    const pack = await makePack(dir);
    fs.writeFileSync(`${done}.new`, JSON.stringify({ pack }));
    fs.renameSync(`${done}.new`, done);
    return pack;
  } catch (error) {
    fs.writeFileSync(`${done}.new`, JSON.stringify({ error: (error as Error).message }));
    fs.renameSync(`${done}.new`, done);
    throw error;
  }
}
