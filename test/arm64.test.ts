/**
 * The linux-arm64 prebuild works: the packed tarball (npm pack, both prebuilds), installed with
 * --ignore-scripts (so nothing is compiled) into an empty folder, runs on an arm64 Node, under
 * user-mode emulation on an x64 host (qemu-aarch64-static, with the arm64 glibc and libstdc++ of
 * libc6-arm64-cross and libstdc++6-arm64-cross) and natively on an arm64 one. The arm64 Node is
 * FINWAIT_ARM64_NODE (`node scripts/fetch-node.mjs linux-arm64 22` prints one; .ci/run sets it).
 *
 * Skipped with the reason where something is missing, except under CI=true, where a skip is a
 * failure. Emulation facts: qemu-user hands TCP_INFO back as 4 bytes (tcpi_state is right, the
 * rest is missing) and fails SO_COOKIE with EINVAL.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { sharedPack } from './npm-env';

const SYSROOT = '/usr/aarch64-linux-gnu';
const emulated = process.arch !== 'arm64';

/** The command that runs arm64 Node here, or why there is none. */
function arm64Node(): { command: string[]; env: NodeJS.ProcessEnv } | { missing: string[] } {
  if (process.platform !== 'linux') return { missing: [`linux-arm64 binaries do not run on ${process.platform}`] };
  if (!emulated) return { command: [process.execPath], env: {} };
  const missing: string[] = [];
  if (process.arch !== 'x64') missing.push(`emulation is set up for x64 hosts, not ${process.arch}`);
  if (spawnSync('qemu-aarch64-static', ['--version'], { stdio: 'ignore' }).status !== 0) missing.push('qemu-aarch64-static (Debian: qemu-user-static)');
  if (!fs.existsSync(path.join(SYSROOT, 'lib', 'ld-linux-aarch64.so.1'))) missing.push(`the arm64 glibc in ${SYSROOT} (Debian: libc6-arm64-cross)`);
  if (!fs.existsSync(path.join(SYSROOT, 'lib', 'libstdc++.so.6'))) missing.push(`the arm64 libstdc++ in ${SYSROOT} (Debian: libstdc++6-arm64-cross)`);
  if (spawnSync('aarch64-linux-gnu-g++', ['--version'], { stdio: 'ignore' }).status !== 0) missing.push('aarch64-linux-gnu-g++ to build the prebuild (Debian: g++-aarch64-linux-gnu)');
  const node = process.env.FINWAIT_ARM64_NODE;
  if (!node) missing.push('an arm64 Node in FINWAIT_ARM64_NODE (FINWAIT_ARM64_NODE=$(node scripts/fetch-node.mjs linux-arm64 22))');
  else if (!fs.existsSync(node)) missing.push(`FINWAIT_ARM64_NODE=${node}, which does not exist`);
  if (missing.length) return { missing };
  return { command: ['qemu-aarch64-static', node!], env: { QEMU_LD_PREFIX: SYSROOT } };
}

const runner = arm64Node();
const gate =
  'missing' in runner
    ? process.env.CI === 'true'
      ? { fail: `CI=true: the arm64 test may not be skipped, and this machine lacks: ${runner.missing.join('; ')}` }
      : { skip: `the arm64 prebuild cannot be run here: missing ${runner.missing.join('; ')}` }
    : {};

let app: string;

beforeAll(async () => {
  if (!('command' in runner)) return;
  // The package as `npm pack` makes it (both prebuilds, built offline on a fresh machine),
  // installed with --ignore-scripts: the tarball package.test.ts examines, made once for the run.
  app = (await sharedPack()).app;
}, 300_000);

/**
 * On loopback: the state of a fresh connection; closeWrite() (our FIN acknowledged: FIN_WAIT2,
 * the peer sees 'end'); reset() after it (the peer, in CLOSE_WAIT, fails its next write); and
 * reset() of an established connection (the peer, reading, sees ECONNRESET). One JSON line.
 */
const SCRIPT = `
const net = require('node:net');
const path = require('node:path');
const finwait = require('finwait');
const facts = { arch: process.arch, binary: path.relative(path.dirname(require.resolve('finwait/package.json')),
  require('node-gyp-build').resolve(path.dirname(require.resolve('finwait/package.json')))) };
const guard = setTimeout(() => { console.log(JSON.stringify({ ...facts, timedOut: true })); process.exit(1); }, 60000);
const server = net.createServer({ allowHalfOpen: true });
const peers = [];
server.on('connection', (s) => { peers.push(s); s.resume(); });
const connect = () => new Promise((resolve) => {
  const before = peers.length;
  const c = net.connect(server.address().port, '127.0.0.1', () => {
    const wait = () => (peers.length > before ? resolve([c, peers[before]]) : setImmediate(wait));
    wait();
  });
});
const once = (emitter, name) => new Promise((resolve) => emitter.once(name, resolve));
server.listen(0, '127.0.0.1', async () => {
  const [a, peerA] = await connect();
  facts.state = finwait.tcpState(a);
  const ended = once(peerA, 'end');
  try { await finwait.closeWrite(a); facts.closeWrite = 'resolved'; } catch (e) { facts.closeWrite = e.code + ' ' + e.message; }
  facts.afterCloseWrite = finwait.tcpState(a);
  await ended;
  facts.peerEnd = true;
  const failedA = once(peerA, 'error');
  finwait.reset(a);
  peerA.write('x');
  facts.peerWriteAfterReset = (await failedA).code;
  const [b, peerB] = await connect();
  const failedB = once(peerB, 'error');
  finwait.reset(b);
  facts.peerAfterReset = (await failedB).code;
  clearTimeout(guard);
  server.close();
  console.log(JSON.stringify(facts));
});
`;

describe(`the linux-arm64 prebuild from the packed tarball${emulated ? ', under qemu-aarch64-static' : ''}`, () => {
  it('loads on arm64 Node and reads, half-closes and resets real connections', (ctx) => {
    if (gate.fail) throw new Error(gate.fail);
    if (gate.skip) ctx.skip(gate.skip);
    if (!('command' in runner)) return;
    const [command, ...args] = runner.command;
    const result = spawnSync(command!, [...args, '-e', SCRIPT], { cwd: app, env: { ...process.env, ...runner.env }, encoding: 'utf8', timeout: 90_000 });
    expect(result.status, `${result.stdout}\n${result.stderr}`).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual({
      arch: 'arm64',
      binary: path.join('prebuilds', 'linux-arm64', 'finwait.glibc.node'),
      state: 'ESTABLISHED',
      closeWrite: 'resolved',
      afterCloseWrite: 'FIN_WAIT2',
      peerEnd: true,
      // The peer got our FIN, so it is in CLOSE_WAIT: Linux fails a write after an RST there with
      // EPIPE (tcp_reset()), and with ECONNRESET if the RST is seen during the write.
      peerWriteAfterReset: expect.stringMatching(/^(EPIPE|ECONNRESET)$/),
      peerAfterReset: 'ECONNRESET',
    });
  }, 120_000);
});
