/**
 * The lab on real kernels: two namespaces, a wire this process relays, and hosts whose sockets
 * are ordinary Node sockets. Every assertion is on what a kernel or the wire showed.
 */
import { describe, expect, it } from 'vitest';
import net from 'node:net';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { execFileSync, execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { findSocket, sockets, tcpState } from '../../src/index';
import {
  connectPair,
  createLab,
  fdOf,
  formatSegment,
  isPureAck,
  labAvailable,
  waitForState,
  waitUntil,
  type Lab,
  type LogEntry,
} from '../../src/testing/index';
import { itLab, itNeedsLab, labGate } from './helpers';
import { idMapped } from '../helpers';
import { run } from '../../src/testing/netns';

const root = path.join(__dirname, '..', '..');
const dist = path.join(root, 'dist', 'testing', 'index.js');
const pexecFile = promisify(execFile);

/** Connects a to b:80 and returns both ends. */
async function connection(lab: Lab, options: { allowHalfOpen?: boolean; pauseOnConnect?: boolean } = {}) {
  const server = await lab.b.listen(80, options);
  const accepted = once(server, 'connection') as Promise<[net.Socket]>;
  const sa = await lab.a.connect(80, options);
  const [sb] = await accepted;
  return { sa, sb, server };
}

const delivered = (log: readonly LogEntry[]): string[] =>
  log.filter((e) => e.verdict === 'pass' || e.verdict === 'release').map((e) => `${e.from} ${formatSegment(e)}`);

function netnsNames(): string[] {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((line) => line.split(' ')[0])
    .filter(Boolean);
}

/** What this process's fds point at (`/proc/self/fd`). */
function fdTargets(): string[] {
  const dir = '/proc/self/fd';
  return fs.readdirSync(dir).flatMap((fd) => {
    try {
      return [fs.readlinkSync(path.join(dir, fd))];
    } catch {
      return [];
    }
  });
}

/** Pids of this process's children, from /proc/<pid>/stat (field 4 is the parent's pid). */
function childPids(): number[] {
  return fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d)).flatMap((pid) => {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      return ppid === process.pid ? [Number(pid)] : [];
    } catch {
      return [];
    }
  });
}

describe('the lab', () => {
  itLab('carries a TCP connection a -> b, data both ways, and logs the 3-way handshake', async (lab) => {
    const { sa, sb } = await connection(lab);
    expect(sa.localAddress).toBe(lab.a.address);
    expect(sa.remoteAddress).toBe(lab.b.address);
    expect(sb.remoteAddress).toBe(lab.a.address);
    sa.write('ping');
    expect(String((await once(sb, 'data'))[0])).toBe('ping');
    sb.write('pong!');
    expect(String((await once(sa, 'data'))[0])).toBe('pong!');

    const [syn, synAck, ack] = lab.wire.log;
    expect(syn).toMatchObject({ from: 'a', flags: ['SYN'], relSeq: 0, relAck: undefined, len: 0, verdict: 'pass' });
    expect(synAck).toMatchObject({ from: 'b', flags: ['SYN', 'ACK'], relSeq: 0, relAck: 1, len: 0, verdict: 'pass' });
    expect(ack).toMatchObject({ from: 'a', flags: ['ACK'], relSeq: 1, relAck: 1, len: 0, verdict: 'pass' });
    expect(syn.src).toEqual({ address: lab.a.address, port: sa.localPort });
    expect(syn.dst).toEqual({ address: lab.b.address, port: 80 });
    expect(synAck.ack).toBe((syn.seq + 1) >>> 0);
    expect(syn.at).toBeLessThanOrEqual(synAck.at);
    // The data: 4 bytes from a at relative SEQ 1, 5 bytes from b at SEQ 1 acknowledging a's 4.
    const data = lab.wire.log.filter((e) => e.len > 0).map((e) => `${e.from} ${formatSegment(e)}`);
    expect(data).toEqual(['a <SEQ=1><ACK=1><CTL=PSH,ACK><DATA=4>', 'b <SEQ=1><ACK=5><CTL=PSH,ACK><DATA=5>']);
    // Each host's kernel sees the connection in its own namespace only.
    expect(lab.a.sockets({ states: ['ESTABLISHED'] })).toEqual([
      expect.objectContaining({ local: { address: '10.77.0.1', port: sa.localPort }, remote: { address: '10.77.0.2', port: 80 } }),
    ]);
    expect(lab.b.sockets({ states: ['LISTEN'] })).toEqual([
      expect.objectContaining({ local: { address: '0.0.0.0', port: 80 }, remote: { address: '0.0.0.0', port: 0 } }),
    ]);
  });

  itLab('drop: with b\'s pure ACKs dropped, a\'s FIN is acknowledged only by b\'s FIN (3-segment close)', async (lab) => {
    const { sa, sb } = await connection(lab, { allowHalfOpen: true });
    lab.wire.clearLog();
    lab.wire.drop((s) => s.from === 'b' && isPureAck(s));
    sa.end();
    sb.resume();
    await once(sb, 'end');
    expect(tcpState(sb)).toBe('CLOSE_WAIT');
    // b acknowledged the FIN (delayed ACK, a few ms); the wire dropped it, so a is still in FIN_WAIT1.
    await waitUntil("b's ACK of the FIN dropped", () => lab.wire.log.some((e) => e.from === 'b' && e.verdict === 'drop'));
    expect(tcpState(sa)).toBe('FIN_WAIT1');
    sb.end();
    await waitForState(sa, 'CLOSE'); // FIN_WAIT1 -> TIME_WAIT, FIN_WAIT2 skipped
    expect(lab.a.sockets({ states: ['TIME_WAIT'] })).toHaveLength(1);
    // a's kernel has sent its last ACK; the wire logs it once it has read it from a's device.
    await waitUntil("a's last ACK on the wire", () => lab.wire.log.some((e) => e.from === 'a' && e.relSeq === 2));
    expect(delivered(lab.wire.log)).toEqual([
      'a <SEQ=1><ACK=1><CTL=FIN,ACK>',
      'b <SEQ=1><ACK=2><CTL=FIN,ACK>',
      'a <SEQ=2><ACK=2><CTL=ACK>',
    ]);
    expect(lab.wire.log.filter((e) => e.verdict === 'drop').map((e) => `${e.from} ${formatSegment(e)}`)).toContain(
      'b <SEQ=1><ACK=2><CTL=ACK>',
    );
  });

  itLab('hold + release: a FIN held on the wire reaches b only when released', async (lab) => {
    const { sa, sb } = await connection(lab, { allowHalfOpen: true });
    let ended = false;
    sb.on('end', () => (ended = true)).resume();
    lab.wire.hold((s) => s.flags.includes('FIN'));
    sa.end();
    await waitForState(sa, 'FIN_WAIT1');
    await waitUntil('the FIN held', () => lab.wire.held.length === 1);
    expect(lab.wire.held[0]).toMatchObject({ from: 'a', flags: ['FIN', 'ACK'], relSeq: 1 });
    // b's kernel has not seen it: still ESTABLISHED, and Node read no EOF.
    expect(tcpState(sb)).toBe('ESTABLISHED');
    expect(ended).toBe(false);
    lab.wire.pass();
    expect(lab.wire.release()).toBe(1);
    expect(lab.wire.held).toEqual([]);
    await once(sb, 'end');
    expect(tcpState(sb)).toBe('CLOSE_WAIT');
    await waitForState(sa, 'FIN_WAIT2');
    // b can still send in CLOSE_WAIT, and a receives it in FIN_WAIT2.
    sb.write('after');
    expect(String((await once(sa, 'data'))[0])).toBe('after');
    const fins = lab.wire.log.filter((e) => e.flags.includes('FIN')).map((e) => e.verdict);
    expect(fins).toEqual(['hold', 'release']);
  });

  itLab('sockets(): sock_diag inside the host\'s namespace, the same entries, filters and timers as finwait\'s sockets()', async (lab) => {
    const { sa, sb } = await connection(lab, { allowHalfOpen: true });
    const [ea] = lab.a.sockets({ states: ['ESTABLISHED'] });
    // The very shape finwait's sockets() returns (compared with an entry of this namespace's).
    const pair = await connectPair();
    try {
      const [own] = sockets({ localPort: pair.client.localPort as number, states: ['ESTABLISHED'] });
      expect(Object.keys(ea).sort()).toEqual(Object.keys(own).sort());
    } finally {
      await pair.close();
    }
    expect(ea).toMatchObject({
      family: 4,
      local: { address: '10.77.0.1', port: sa.localPort },
      remote: { address: '10.77.0.2', port: 80 },
      state: 'ESTABLISHED',
      timer: { kind: 'off', expiresMs: 0, retransmits: 0 },
      recvQ: 0,
      sendQ: 0,
      inode: fs.fstatSync(fdOf(sa)).ino,
      uid: process.getuid?.() ?? 0,
    });
    // b's end is in b's namespace only, and neither is in this process's namespace.
    expect(lab.b.sockets({ states: ['ESTABLISHED'] }).map((e) => e.inode)).toEqual([fs.fstatSync(fdOf(sb)).ino]);
    expect(sockets({ localPort: sa.localPort as number, remotePort: 80 }).filter((e) => e.local.address === '10.77.0.1')).toEqual([]);
    // Every filter of sockets(), in the kernel.
    expect(lab.a.sockets({ localPort: sa.localPort as number })).toHaveLength(1);
    expect(lab.a.sockets({ remotePort: 80, states: ['ESTABLISHED', 'TIME_WAIT'] })).toHaveLength(1);
    expect(lab.b.sockets({ port: 80 }).map((e) => e.state).sort()).toEqual(['ESTABLISHED', 'LISTEN']);
    expect(lab.b.sockets({ port: 80, family: 6 })).toEqual([]);
    expect(lab.a.sockets({ states: ['LISTEN'] })).toEqual([]);
    expect(() => lab.a.sockets({ states: ['FIN_WAIT_2' as never] })).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => lab.a.sockets({ prot: 80 } as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    // A retransmission timer while a's data is lost on the wire, with the bytes in sendQ.
    lab.wire.drop((s) => s.from === 'a' && s.len > 0);
    sa.write('lost');
    const pending = await waitUntil('a retransmitting', () =>
      lab.a.sockets({ localPort: sa.localPort as number }).find((e) => e.timer.kind === 'retransmit' && e.timer.retransmits >= 1),
    );
    expect(pending).toMatchObject({ state: 'ESTABLISHED', sendQ: 4 });
    expect(pending.timer.expiresMs).toBeGreaterThan(0);
    lab.wire.pass();
    await waitUntil('the bytes acknowledged', () => lab.a.sockets({ localPort: sa.localPort as number })[0]?.sendQ === 0);
    // After the close, a's TIME_WAIT: no inode, the 60 s timewait timer.
    sa.end();
    await waitForState(sa, 'FIN_WAIT2');
    sb.end();
    await waitForState(sa, 'CLOSE');
    const [tw] = lab.a.sockets({ states: ['TIME_WAIT'] });
    expect(tw).toMatchObject({ local: { port: sa.localPort }, inode: 0, timer: { kind: 'timewait' } });
    expect(tw.timer.expiresMs).toBeGreaterThan(55_000);
    expect(tw.timer.expiresMs).toBeLessThanOrEqual(60_000);
    // findSocket(): the same entry by one exact lookup in the host's namespace, by 4-tuple and
    // cookie; nothing for it in this process's namespace, nor for a 4-tuple nobody has.
    expect(lab.a.findSocket(tw)).toMatchObject({ state: 'TIME_WAIT', cookie: tw.cookie, local: tw.local, remote: tw.remote, inode: 0 });
    expect(lab.a.findSocket({ local: tw.local, remote: tw.remote, cookie: tw.cookie })?.state).toBe('TIME_WAIT');
    expect(findSocket(tw)).toBeUndefined();
    expect(lab.a.findSocket({ local: tw.local, remote: { address: '10.77.0.2', port: 81 } })).toBeUndefined();
    expect(() => lab.a.findSocket({ local: tw.local } as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
  });

  itLab('a predicate or a \'segment\' listener that throws: reported as \'error\', and the segment still goes through', async (lab) => {
    const errors: string[] = [];
    lab.wire.on('error', (error: Error) => errors.push(error.message));
    const server = await lab.b.listen(80);
    const accepted = once(server, 'connection') as Promise<[net.Socket]>;
    const a = await lab.a.connect(80);
    const [b] = await accepted;
    const isData = (e: { len: number; flags: string[] }): boolean => e.len > 0 && !e.flags.includes('SYN') && !e.flags.includes('FIN');
    let thrownOnce = false;
    lab.wire.on('segment', (e: LogEntry) => {
      if (isData(e) && e.from === 'a' && !thrownOnce) {
        thrownOnce = true;
        throw new Error('listener failed');
      }
    });
    lab.wire.hold((segment) => {
      if (isData(segment) && segment.from === 'b') throw new Error('predicate failed');
      return false;
    });
    const got = { a: '', b: '' };
    a.on('data', (chunk: Buffer) => (got.a += chunk.toString()));
    b.on('data', (chunk: Buffer) => (got.b += chunk.toString()));
    a.write('ping');
    await waitUntil('b has the data', () => got.b === 'ping');
    b.write('pong');
    await waitUntil('a has the data', () => got.a === 'pong');
    expect(errors).toEqual(['listener failed', 'predicate failed']);
    // Each data segment crossed once: none waited for a retransmission.
    expect(lab.wire.log.filter((e) => isData(e)).map((e) => `${e.from} ${e.verdict}`)).toEqual(['a pass', 'b pass']);
  });

  itLab('connect: localPort binds that port; reuseAddress sets SO_REUSEADDR before the bind', async (lab) => {
    await lab.b.listen(80);
    await lab.b.listen(81);
    const first = await lab.a.connect(80, { localPort: 40_000, reuseAddress: true });
    expect(first.localPort).toBe(40_000);
    // Two sockets share a local port only if both set SO_REUSEADDR (and neither listens).
    await expect(lab.a.connect(81, { localPort: 40_000 })).rejects.toMatchObject({ code: 'EADDRINUSE', syscall: 'bind' });
    const second = await lab.a.connect(81, { localPort: 40_000, reuseAddress: true });
    expect([second.localPort, second.remotePort]).toEqual([40_000, 81]);
    expect(lab.a.sockets({ localPort: 40_000 })).toHaveLength(2);
    await expect(lab.a.connect(80, { reuseAddress: 1 as never })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
  });

  itLab('sysctl writes the namespace\'s own value, read back, and leaves the others alone', async (lab) => {
    const file = '/proc/sys/net/ipv4/tcp_fin_timeout';
    const before = fs.readFileSync(file, 'utf8').trim();
    const other = before === '7' ? '8' : '7';
    expect(lab.a.sysctl('net.ipv4.tcp_fin_timeout', other)).toBe(other);
    expect(fs.readFileSync(file, 'utf8').trim()).toBe(before);
    const inB = execFileSync('ip', ['netns', 'exec', lab.b.netns, 'cat', file], { encoding: 'utf8' }).trim();
    const inA = execFileSync('ip', ['netns', 'exec', lab.a.netns, 'cat', file], { encoding: 'utf8' }).trim();
    expect([inA, inB]).toEqual([other, before]);
    expect(() => lab.a.sysctl('kernel.hostname', 'x')).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => lab.a.sysctl('net.ipv4.no_such_sysctl', 1)).toThrow(
      expect.objectContaining({ code: 'ENOENT', syscall: 'open', message: expect.stringContaining('this kernel has no sysctl net.ipv4.no_such_sysctl') }),
    );
  });

  itLab('nft applies rules in the host\'s namespace: b resets a SYN although it listens', async (lab) => {
    await lab.b.listen(80);
    await lab.b.nft(`
      table inet lab {
        chain input {
          type filter hook input priority 0; policy accept;
          tcp dport 80 reject with tcp reset
        }
      }`);
    await expect(lab.a.connect(80)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    expect(lab.wire.log.map((e) => `${e.from} ${e.flags.join(',')}`)).toEqual(['a SYN', 'b RST,ACK']);
    // Rules in b do not apply in a.
    await lab.a.listen(80);
    const self = await lab.a.connect(80, { host: '127.0.0.1' });
    expect(tcpState(self)).toBe('ESTABLISHED');
    await expect(lab.b.nft('table inet lab { chain input { nonsense; }; }')).rejects.toMatchObject({
      code: 'ERR_FINWAIT_NFT',
      message: expect.stringMatching(/nonsense|syntax/),
    });
  });

  it('close() leaves no namespace, no TUN device, no fd and no process behind', async (ctx) => {
    const gate = labGate(labAvailable(), process.env);
    if (!gate.run) {
      if (gate.fail) throw new Error(gate.fail);
      ctx.skip(gate.skip);
    }
    const fdsBefore = fdTargets().length;
    const lab = await createLab();
    const names = [lab.a.netns, lab.b.netns];
    try {
      expect(netnsNames()).toEqual(expect.arrayContaining(names));
      expect(execFileSync('ip', ['-n', lab.a.netns, '-br', 'addr', 'show', 'wire0'], { encoding: 'utf8' })).toContain('10.77.0.1/24');
      expect(fdTargets().filter((t) => t === '/dev/net/tun')).toHaveLength(2);
      const { sa } = await connection(lab);
      sa.write('x');
      await lab.a.nft('table inet t { chain c { type filter hook output priority 0; }; }');
    } finally {
      await lab.close();
    }
    await lab.close(); // idempotent
    expect(netnsNames().filter((n) => names.includes(n))).toEqual([]);
    expect(fs.readdirSync('/run/netns').filter((n) => names.includes(n))).toEqual([]);
    expect(fdTargets().filter((t) => t === '/dev/net/tun' || t.startsWith('net:['))).toEqual([]);
    expect(fdTargets().length).toBeLessThanOrEqual(fdsBefore);
    expect(execFileSync('ip', ['-br', 'link'], { encoding: 'utf8' })).not.toMatch(/^wire0/m);
    expect(childPids()).toEqual([]);
  });

  it('a closed lab\'s hosts refuse to be used: ERR_FINWAIT_LAB_CLOSED, never a stale namespace fd', async (ctx) => {
    const gate = labGate(labAvailable(), process.env);
    if (!gate.run) {
      if (gate.fail) throw new Error(gate.fail);
      ctx.skip(gate.skip);
    }
    const lab = await createLab();
    expect(lab.a.sockets()).toEqual([]);
    await lab.close();
    const closed = expect.objectContaining({ code: 'ERR_FINWAIT_LAB_CLOSED' });
    expect(() => lab.a.sockets()).toThrow(closed);
    expect(() => lab.b.sysctl('net.ipv4.tcp_fin_timeout', 5)).toThrow(closed);
    await expect(lab.a.connect(80)).rejects.toEqual(closed);
    await expect(lab.b.listen(80)).rejects.toEqual(closed);
    await expect(lab.b.nft('table inet lab { }')).rejects.toEqual(closed);
  });

  itNeedsLab('a lab closed while a host connects or listens: the promises reject with ERR_FINWAIT_LAB_CLOSED', async () => {
    const lab = await createLab();
    await lab.b.listen(80);
    lab.wire.drop(); // the SYN never arrives: the connect is pending when the lab closes
    const connecting = lab.a.connect(80).catch((error: unknown) => error);
    await waitUntil('the SYN on the wire', () => lab.wire.log.length > 0);
    // Closed in the same turn, before it could say 'listening'.
    const listening = lab.b.listen(81).catch((error: unknown) => error);
    await lab.close();
    const closed = expect.objectContaining({ code: 'ERR_FINWAIT_LAB_CLOSED' });
    expect(await connecting).toEqual(closed);
    expect(await listening).toEqual(closed);
  });

  itNeedsLab("sweeps a lab namespace whose owner's socket is gone, whatever the pid in its name; other names are left alone", async () => {
    // Made by hand: a lab's name, this live process's pid in it, and no owner's socket inside.
    const orphan = `finwait-${process.pid}-${randomBytes(6).toString('hex')}-a`;
    // Not a lab's name (the form of older versions): never judged.
    const other = `finwait-${process.pid}-99-99-a`;
    const made: string[] = [];
    try {
      for (const name of [orphan, other]) {
        execFileSync('ip', ['netns', 'add', name]);
        made.push(name);
      }
      const lab = await createLab();
      // The lab's own namespaces hold its owner's socket, @finwait-lab.
      expect(execFileSync('ip', ['netns', 'exec', lab.a.netns, 'ss', '-xlH'], { encoding: 'utf8' })).toContain('@finwait-lab');
      await lab.close();
      expect(netnsNames()).not.toContain(orphan);
      expect(netnsNames()).toContain(other);
    } finally {
      for (const name of made) if (netnsNames().includes(name)) execFileSync('ip', ['netns', 'del', name]);
    }
  });

  itNeedsLab('labs created at once in one process never sweep each other', async () => {
    const labs = await Promise.all([1, 2, 3, 4].map(() => createLab()));
    try {
      const names = labs.flatMap((lab) => [lab.a.netns, lab.b.netns]);
      expect(new Set(names).size).toBe(8);
      expect(names.filter((name) => !netnsNames().includes(name))).toEqual([]);
      // Each still works: its wire carries a connection.
      for (const lab of labs) {
        await lab.b.listen(80);
        (await lab.a.connect(80)).destroy();
      }
    } finally {
      await Promise.all(labs.map((lab) => lab.close()));
    }
  });

  it('cleans up what it made when createLab fails half-way', async (ctx) => {
    const gate = labGate(labAvailable(), process.env);
    if (!gate.run) {
      if (gate.fail) throw new Error(gate.fail);
      ctx.skip(gate.skip);
    }
    // An `ip` that creates namespaces but fails to configure them (`ip -n NAME ...`).
    const realIp = execFileSync('sh', ['-c', 'command -v ip'], { encoding: 'utf8' }).trim();
    const script = `
      require(${JSON.stringify(dist)}).createLab().then(
        () => console.log('created'),
        (e) => console.log(JSON.stringify({ message: e.message, code: e.code, pid: process.pid })));`;
    const bin = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-fake-ip-'));
    try {
      fs.writeFileSync(path.join(bin, 'ip'), `#!/bin/sh\nif [ "$1" = "-n" ]; then echo "configuration refused" >&2; exit 2; fi\nexec ${realIp} "$@"\n`, { mode: 0o755 });
      const { stdout } = await pexecFile(process.execPath, ['-e', script], { env: { ...process.env, PATH: `${bin}:${process.env.PATH}` } });
      const { message, code, pid } = JSON.parse(stdout) as { message: string; code: string; pid: number };
      expect(message).toContain('configuration refused');
      expect(code).toBe('ERR_FINWAIT_LAB_UNAVAILABLE');
      expect(netnsNames().filter((n) => n.startsWith(`finwait-${pid}-`))).toEqual([]);
    } finally {
      fs.rmSync(bin, { recursive: true, force: true });
    }
  });

  it('is unavailable without privileges, and says what is missing', async () => {
    // Root with an empty capability bounding set: no CAP_NET_ADMIN, no CAP_SYS_ADMIN.
    const script = `
      const t = require(${JSON.stringify(dist)});
      t.createLab().catch((e) => console.log(JSON.stringify({ available: t.labAvailable(), code: e.code, message: e.message })));`;
    let stdout: string;
    try {
      ({ stdout } = await pexecFile('setpriv', ['--bounding-set=-all', '--inh-caps=-all', process.execPath, '-e', script]));
    } catch (error) {
      // Not root, or no setpriv: this process is unprivileged already.
      ({ stdout } = await pexecFile(process.execPath, ['-e', script]));
      if (labAvailable().ok) throw error;
    }
    const result = JSON.parse(stdout) as { available: { ok: boolean; reason: string }; code: string; message: string };
    expect(result.available.ok).toBe(false);
    expect(result.available.reason).toMatch(/CAP_NET_ADMIN|tun|Linux/);
    expect(result.code).toBe('ERR_FINWAIT_LAB_UNAVAILABLE');
    expect(result.message).toContain(result.available.reason);
  });

  it("a failed command (ip's) is reported in one line: its stderr's lines joined", async () => {
    const script = 'echo "mount --make-shared /run/netns failed: Operation not permitted" >&2; echo "Command failed -:1" >&2; exit 1';
    await expect(run('sh', ['-c', script])).rejects.toThrow(/^sh -c .*: mount --make-shared \/run\/netns failed: Operation not permitted; Command failed -:1$/);
  });

  it('idMapped: uid 65534 is in a full map, not in the one-id map of unshare -r (where uid 0 is not root)', () => {
    expect(idMapped('         0          0 4294967295\n', 65534)).toBe(true);
    expect(idMapped('         0          0          1\n', 65534)).toBe(false);
    expect(idMapped('         0       1000          1\n      1000     100000      65536\n', 65534)).toBe(true);
    expect(idMapped('', 0)).toBe(false);
    let inUserns: string;
    try {
      inUserns = execFileSync('unshare', ['-r', 'cat', '/proc/self/uid_map'], { encoding: 'utf8', stdio: 'pipe' });
    } catch {
      return; // no user namespaces here: the fixed maps above stand
    }
    expect(idMapped(inUserns, 0)).toBe(true);
    expect(idMapped(inUserns, 65534)).toBe(false);
  });

  it('labGate: runs, skips with the reason, or fails under CI=true', () => {
    expect(labGate({ ok: true }, { CI: 'true' })).toEqual({ run: true });
    expect(labGate({ ok: false, reason: 'no root' }, {})).toEqual({ run: false, skip: 'the lab is unavailable: no root' });
    expect(labGate({ ok: false, reason: 'no root' }, { CI: 'true' })).toMatchObject({ run: false, fail: expect.stringContaining('no root') });
  });
});
