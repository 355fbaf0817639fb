// Builds the prebuilds `npm pack` ships, offline: prebuilds/linux-x64/finwait.glibc.node and
// prebuilds/linux-arm64/finwait.glibc.node (the names `prebuildify --napi --strip --tag-libc`
// gives; node-gyp-build never picks a glibc-tagged file on musl, which builds from source).
//
// The headers are the running Node's own (its prefix's include/node), never a download; the
// addon uses Node-API only, so one binary serves every Node from 20 on. The architecture that is
// not the host's is cross-compiled (g++-aarch64-linux-gnu or g++-x86-64-linux-gnu on Debian);
// without that compiler it is skipped with a message, except under CI=true or `npm publish`,
// where a package without it is an error. Each binary is checked before it is kept: the ELF
// machine its folder names, and no symbol version newer than Node's own binaries need.
//
// Builds happen in a temporary copy, so build/ (what the tests load) is left alone.
//
// usage: node scripts/prebuild.mjs [x64] [arm64]   (both by default; `npm pack` runs it)
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { ELF_MACHINE, NEWEST_VERSION, elfInfo, tooNew } from './elf.mjs';

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const name = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')).name;

/** GNU triplets of the cross toolchains, by Node's arch name. */
const TRIPLET = { x64: 'x86_64-linux-gnu', arm64: 'aarch64-linux-gnu' };
const ARCHES = Object.keys(TRIPLET);

class PrebuildError extends Error {}

function log(message) {
  process.stderr.write(`prebuild: ${message}\n`);
}

/** The include/node of the running Node, or of npm_config_nodedir; never one to download. */
function nodeDir() {
  const prefix = path.resolve(path.dirname(fs.realpathSync(process.execPath)), '..');
  const candidates = [prefix];
  if (process.env.npm_config_nodedir) candidates.push(path.resolve(process.env.npm_config_nodedir));
  for (const dir of candidates) {
    if (['common.gypi', 'node_api.h'].every((f) => fs.existsSync(path.join(dir, 'include', 'node', f)))) return dir;
  }
  throw new PrebuildError(
    `no Node headers at ${path.join(prefix, 'include', 'node')} (the prefix of ${process.execPath}, Node ${process.version})` +
      `${process.env.npm_config_nodedir ? ` nor under npm_config_nodedir=${process.env.npm_config_nodedir}` : ''}; ` +
      'prebuilds are built against the running Node\'s headers and never downloaded: run with a Node whose prefix has ' +
      'include/node (the nodejs.org builds, the node-linux-<arch> npm packages and most distribution packages have it) ' +
      'or set npm_config_nodedir to one',
  );
}

function found(command) {
  return spawnSync(command, ['--version'], { stdio: 'ignore' }).status === 0;
}

/** How to build for `arch`: the native compiler, or the cross one, or why it cannot. */
function toolchain(arch) {
  if (arch === process.arch) return { env: {}, strip: 'strip' };
  const triplet = TRIPLET[arch];
  const cxx = `${triplet}-g++`;
  if (!found(cxx)) {
    const pkg = `g++-${triplet.replace(/_/g, '-')}`;
    return { missing: `${cxx} not found (Debian/Ubuntu: apt-get install ${pkg})` };
  }
  return {
    env: { CC: `${triplet}-gcc`, CXX: cxx, LINK: cxx, AR: `${triplet}-ar` },
    strip: `${triplet}-strip`,
  };
}

/** Builds the addon for `arch` in a copy under `work`; returns the path of the stripped binary. */
function build(arch, tools, nodedir, work) {
  const src = path.join(work, arch);
  fs.mkdirSync(src);
  for (const entry of ['package.json', 'binding.gyp', 'addon']) fs.cpSync(path.join(root, entry), path.join(src, entry), { recursive: true });
  // binding.gyp asks `node -p "require('node-addon-api')"` from its own folder. A copy, not a
  // link: gyp places that target's outputs by its real path, which from here would be outside.
  fs.cpSync(path.dirname(require.resolve('node-addon-api/package.json')), path.join(src, 'node_modules', 'node-addon-api'), { recursive: true });
  const nodeGyp = require.resolve('node-gyp/bin/node-gyp.js');
  const env = { ...process.env, ...tools.env };
  // Settings from npm's config must not pick other headers or another target than these.
  for (const key of Object.keys(env)) if (/^npm_config_(nodedir|arch|target|target_arch|dist_url|devdir)$/i.test(key)) delete env[key];
  const result = spawnSync(process.execPath, [nodeGyp, 'rebuild', '--release', `--arch=${arch}`, `--nodedir=${nodedir}`, '--jobs=max', '--loglevel=warn'], {
    cwd: src,
    env,
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  if (result.status !== 0) throw new PrebuildError(`node-gyp failed for linux-${arch} (exit ${result.status ?? result.signal}); its output is above`);
  const binary = path.join(src, 'build', 'Release', `${name}.node`);
  execFileSync(tools.strip, ['--strip-all', binary]);
  return binary;
}

/** Throws unless `file` is an ELF for `arch` needing no newer glibc/libstdc++ than Node does. */
function check(file, arch) {
  const { machine, needs } = elfInfo(fs.readFileSync(file));
  if (machine !== ELF_MACHINE[arch]) throw new PrebuildError(`the linux-${arch} build is ELF machine ${machine}, not ${ELF_MACHINE[arch]}`);
  const newer = tooNew(needs);
  if (newer.length) {
    const limits = Object.entries(NEWEST_VERSION).map(([k, v]) => `${k}_${v}`).join(', ');
    throw new PrebuildError(
      `the linux-${arch} build needs symbol versions newer than Node's own binaries (${limits}): ${newer.join(', ')}; ` +
        'it would not load on the older distributions where Node runs: build it on an older distribution (or in a container of one)',
    );
  }
}

function main() {
  if (process.platform !== 'linux') throw new PrebuildError(`the Linux prebuilds are built on Linux, not ${process.platform}`);
  if (!(process.arch in TRIPLET)) throw new PrebuildError(`prebuilds are built on x64 or arm64 Linux, not ${process.arch}`);
  // A package that is published or made by CI must carry every prebuild.
  const strict = process.env.CI === 'true' || process.env.npm_command === 'publish';
  const asked = process.argv.slice(2);
  for (const arch of asked) if (!ARCHES.includes(arch)) throw new PrebuildError(`unknown architecture '${arch}': ${ARCHES.join(' or ')}`);
  const arches = asked.length ? ARCHES.filter((a) => asked.includes(a)) : ARCHES;
  const nodedir = nodeDir();
  const out = path.join(root, 'prebuilds');
  // What is packed is what this run built: no binary of an earlier run stays behind.
  if (asked.length) for (const arch of arches) fs.rmSync(path.join(out, `linux-${arch}`), { recursive: true, force: true });
  else fs.rmSync(out, { recursive: true, force: true });
  const tools = Object.fromEntries(arches.map((arch) => [arch, toolchain(arch)]));
  for (const arch of arches) {
    if (!tools[arch].missing) continue;
    if (strict) {
      const why = process.env.CI === 'true' ? 'CI=true' : 'npm publish';
      throw new PrebuildError(`cannot build the linux-${arch} prebuild, which ${why} requires: ${tools[arch].missing}`);
    }
    log(`skipping linux-${arch}: ${tools[arch].missing}; the package will have no linux-${arch} prebuild, and installs there build from source`);
  }
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-prebuild-'));
  try {
    for (const arch of arches.filter((a) => !tools[a].missing)) {
      log(`building linux-${arch} with the headers in ${path.join(nodedir, 'include', 'node')}`);
      const binary = build(arch, tools[arch], nodedir, work);
      check(binary, arch);
      const dest = path.join(out, `linux-${arch}`, `${name}.glibc.node`);
      fs.mkdirSync(path.dirname(dest), { recursive: true });
      fs.copyFileSync(binary, dest);
      log(`wrote ${path.relative(root, dest)}`);
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

try {
  main();
} catch (error) {
  if (!(error instanceof PrebuildError)) throw error;
  log(`error: ${error.message}`);
  process.exitCode = 1;
}
