/**
 * The environment of a user's fresh machine for npm and node-gyp run by a test: HOME is an empty
 * folder (no ~/.npmrc, no node-gyp header cache), no npm_* settings inherited from the npm running
 * the tests (`npm test` exports its whole configuration, a `nodedir` included), no compiler or
 * libc overrides, and TMPDIR inside the test's own temporary folder, so that nothing can be left
 * in /tmp. npm's cache stays the real one: installing a tarball's dependencies needs no download
 * when they are cached, and the registry is used only when they are not.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

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
