#!/usr/bin/env node
// finwait's install step, run by npm on the user's machine before anything else (plain CommonJS,
// no dependency but node-gyp-build, and node-gyp when a build is needed). It never fails the install:
//
// - Linux: if node-gyp-build finds a binary that loads (a prebuild, or build/ from an earlier
//   build), done. Otherwise the addon is built from source with node-gyp (musl, other
//   architectures, a prebuild the system cannot load), against the running Node's headers when
//   its prefix has them. If that fails, one warning says what is missing, and the exit is 0.
// - Elsewhere (macOS, Windows, FreeBSD): there is no back-end yet, so nothing is built and no
//   compiler is needed.
//
// `node scripts/install.cjs --rebuild` (npm run build:addon) builds from source whatever is there,
// and fails with the reason: for developers changing addon/.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const rebuild = process.argv.includes('--rebuild');
const target = `${process.platform}-${process.arch} (Node ${process.version})`;

function say(message) {
  process.stderr.write(`finwait: ${message}\n`);
}

/** True if node-gyp-build finds a binary here that loads, tried in a child so nothing can crash this. */
function binaryLoads() {
  const ngb = require.resolve('node-gyp-build');
  const code = `require(${JSON.stringify(ngb)})(${JSON.stringify(root)})`;
  return spawnSync(process.execPath, ['-e', code], { stdio: 'ignore', timeout: 60_000 }).status === 0;
}

/** True if `command --version` runs. */
function runs(command) {
  return spawnSync(command, ['--version'], { stdio: 'ignore', timeout: 30_000 }).status === 0;
}

/** Where the running Node is installed: its headers, if any, are in include/node there. */
function nodePrefix() {
  return path.resolve(path.dirname(fs.realpathSync(process.execPath)), '..');
}

/** True if `prefix` holds the headers a build needs (no download then). */
function hasHeaders(prefix) {
  const dir = path.join(prefix, 'include', 'node');
  return fs.existsSync(path.join(dir, 'common.gypi')) && fs.existsSync(path.join(dir, 'node_api.h'));
}

/** node-gyp's entry: the project's own (developers), else the one npm runs scripts with. */
function nodeGyp() {
  try {
    return { command: process.execPath, args: [require.resolve('node-gyp/bin/node-gyp.js')] };
  } catch {
    const npms = process.env.npm_config_node_gyp;
    if (npms && /\.[cm]?js$/.test(npms)) return { command: process.execPath, args: [npms] };
    return { command: npms || 'node-gyp', args: [] };
  }
}

/** What a build from source needs that this machine lacks, in words. */
function missingTools() {
  const missing = [];
  const python = process.env.npm_config_python || process.env.PYTHON;
  if (!(python ? runs(python) : runs('python3') || runs('python'))) missing.push(python ? `python3 (${python} does not run)` : 'python3');
  const make = process.env.MAKE || 'make';
  if (!runs(make)) missing.push(make);
  // The Makefile node-gyp writes compiles with $(CXX), make's default for which is g++.
  const cxx = process.env.CXX;
  if (!runs(cxx || 'g++')) missing.push(cxx ? `a C++ compiler (CXX=${cxx} does not run)` : 'a C++ compiler (g++, or CXX naming one)');
  return missing;
}

/** Builds build/Release/finwait.node from source, with the headers under `nodedir` if given; true if it then loads. */
function buildFromSource(nodedir) {
  const gyp = nodeGyp();
  // One compiler per CPU: the addon is a dozen files.
  const args = [...gyp.args, 'rebuild', '--release', '--jobs=max'];
  if (nodedir) args.push(`--nodedir=${nodedir}`);
  // binding.gyp runs `node` (to find node-addon-api); npm has it on PATH, a bare call may not.
  const env = { ...process.env };
  if (!runs('node')) env.PATH = `${env.PATH || ''}${path.delimiter}${path.dirname(process.execPath)}`;
  say(`building the native addon from source for ${target}${nodedir ? ` with the headers in ${path.join(nodedir, 'include', 'node')}` : ''}`);
  const result = spawnSync(gyp.command, args, { cwd: root, env, stdio: ['ignore', 'inherit', 'inherit'] });
  if (result.error) say(`could not run node-gyp: ${result.error.message}`);
  return result.status === 0 && binaryLoads();
}

function main() {
  if (process.platform !== 'linux') {
    // No back-end yet: addon/unsupported.cc would only make every call throw ENOTSUP.
    say(`nothing to build on ${process.platform}: the kernel calls are Linux-only for now and throw ENOTSUP here; ` +
      'closeServer() and gracefulClose() work with what Node alone can do.');
    return 0;
  }
  if (!rebuild && binaryLoads()) return 0;
  const prefix = nodePrefix();
  const local = hasHeaders(prefix);
  if (buildFromSource(local ? prefix : undefined)) return 0;
  // A half-made build/ must not shadow a prebuild or a later build.
  fs.rmSync(path.join(root, 'build'), { recursive: true, force: true });
  const missing = missingTools();
  const why = missing.length
    ? `missing: ${missing.join(', ')}`
    : local
      ? 'node-gyp failed (its output is above)'
      : `node-gyp failed (its output is above); this Node has no headers in ${path.join(prefix, 'include', 'node')}, so node-gyp had to get them (npm_config_nodedir, or a download from nodejs.org)`;
  if (rebuild) {
    say(`error: the native addon could not be built for ${target}: ${why}`);
    return 1;
  }
  say(
    `warning: no prebuilt binary loads on ${target} and building from source failed: ${why}.\n` +
      '  finwait is installed without its native addon: closeServer() and gracefulClose() still work with what ' +
      'Node alone can do (their reports say so), while the kernel calls (tcpInfo, tcpState, closeWrite, reset, ' +
      'sockets, watch, ...) throw ENOTSUP.\n' +
      `  To get them: install ${missing.length ? missing.join(', ') : 'what node-gyp asked for'} ` +
      '(Debian/Ubuntu: apt-get install python3 make g++; Alpine: apk add python3 make g++), then run `npm rebuild finwait`.',
  );
  return 0;
}

try {
  process.exitCode = main();
} catch (error) {
  // Installing never fails on finwait's account.
  say(`warning: the install step failed unexpectedly (${error && error.message}); the native addon may be missing (npm rebuild finwait)`);
  process.exitCode = rebuild ? 1 : 0;
}
