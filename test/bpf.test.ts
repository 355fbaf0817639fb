/**
 * TCP state changes from the BPF tracepoint program, on real loopback connections: the sequences
 * of a graceful close on both ends, the socket's own cookie and counters, the error an RST or a
 * refused connect leaves, same-state records dropped, a Worker ended with the stream open, and
 * the EPERM a process without privilege gets.
 */
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { native } from '../src/binding';
import { openStateChanges, RECORD, type StateChange, type StateChangeStream } from '../src/bpf';
import { findSocket, socketTuple } from '../src/diag';
import { queues, shutdown, tcpInfo, tcpState } from '../src/ops';
import { BPF, bpfAvailable, canBecome, itNeeds, nextError, pair, waitFor } from './helpers';

const dist = path.join(__dirname, '..', 'dist', 'bpf.js');

const itBpf = (name: string, fn: () => Promise<void>, timeout?: number) => itNeeds(BPF, bpfAvailable, name, fn, timeout);

/** Every change the stream delivers, and a way to wait for those of one socket. */
function recorder(): { stream: StateChangeStream; changes: StateChange[]; of(cookie: bigint): StateChange[] } {
  const changes: StateChange[] = [];
  const stream = openStateChanges((batch) => changes.push(...batch));
  return { stream, changes, of: (cookie) => changes.filter((c) => c.cookie === cookie) };
}

/** The socket's SO_COOKIE, as sock_diag reports it. */
function cookieOf(socket: net.Socket): bigint {
  const entry = findSocket(socketTuple(socket)!);
  return BigInt(`0x${entry!.cookie}`);
}

const path_ = (changes: StateChange[]) => changes.map((c) => `${c.from}>${c.to}`);

/** This process's pid as the kernel's initial pid namespace numbers it (what BPF sees). */
function hostPid(): number {
  return Number(/^NSpid:\s*(\d+)/m.exec(fs.readFileSync('/proc/self/status', 'utf8'))![1]);
}

describe('openStateChanges()', () => {
  it('rejects a callback that is not a function with ERR_INVALID_ARG_TYPE', () => {
    expect(() => openStateChanges(42 as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
  });

  it('the native source takes only a ring size that is a power of 2 of at least a page (ERR_OUT_OF_RANGE)', () => {
    const Source = native().BpfStateChanges!;
    for (const size of [1000, 4097, 0, -4096]) {
      expect(() => new Source(size, false)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    }
  });

  it('without the native part: ENOTSUP from openStateChanges(), and stateChangesUnavailable() says why', () => {
    const script = `
      const { openStateChanges, stateChangesUnavailable } = require(${JSON.stringify(dist)});
      let error;
      try { openStateChanges(() => {}); } catch (e) { error = e; }
      console.log(JSON.stringify({ code: error.code, why: stateChangesUnavailable() }));
    `;
    const env = { ...process.env, FINWAIT_NATIVE: path.join(__dirname, 'no-such-dir', 'finwait.node') };
    const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', env, timeout: 20_000 });
    expect(child.stderr).toBe('');
    const result = JSON.parse(child.stdout) as { code: string; why: string };
    expect(result.code).toBe('ENOTSUP');
    expect(result.why).toMatch(/native part could not be loaded/);
  });

  itBpf('graceful close: the closer goes ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE; the peer CLOSE_WAIT, LAST_ACK, CLOSE; cookies are SO_COOKIE', async () => {
    const { stream, of } = recorder();
    const p = await pair();
    try {
      const client = cookieOf(p.client);
      const server = cookieOf(p.server);
      const tuple = socketTuple(p.client)!;
      expect(client).not.toBe(server);
      p.server.on('end', () => p.server.end());
      p.server.resume();
      p.client.resume();
      p.client.end('hello');
      await waitFor('both ends closed', () => (of(client).at(-1)?.to === 'CLOSE' && of(server).at(-1)?.to === 'CLOSE' ? true : undefined));
      expect(path_(of(client))).toEqual(['CLOSE>SYN_SENT', 'SYN_SENT>ESTABLISHED', 'ESTABLISHED>FIN_WAIT1', 'FIN_WAIT1>FIN_WAIT2', 'FIN_WAIT2>CLOSE']);
      expect(path_(of(server))).toEqual(['LISTEN>SYN_RECV', 'SYN_RECV>ESTABLISHED', 'ESTABLISHED>CLOSE_WAIT', 'CLOSE_WAIT>LAST_ACK', 'LAST_ACK>CLOSE']);
      // The CLOSE is the hand-over to TIME_WAIT: sock_diag still finds the connection there.
      expect(findSocket({ ...tuple, cookie: of(client)[0].cookie.toString(16).padStart(16, '0') })?.state).toBe('TIME_WAIT');
      const last = of(client).at(-1)!;
      expect(last).toMatchObject({
        family: 4,
        localAddress: '127.0.0.1',
        localPort: tuple.local.port,
        remoteAddress: '127.0.0.1',
        remotePort: tuple.remote.port,
        error: 0,
        netnsCookie: native().netnsCookie(),
        unackedBytes: 0,
      });
      // A client's first change comes before its port is chosen.
      expect(of(client)[0]).toMatchObject({ localPort: 0, remotePort: tuple.remote.port });
      // connect() ran in this process; the peer's changes came with the packets.
      expect(of(client)[0].pid).toBe(hostPid());
      expect(of(client)[0].comm).toBe(fs.readFileSync('/proc/self/comm', 'utf8').trim());
      // Sequence space acknowledged: the SYN, 5 bytes and the FIN; the peer received 5 and a FIN.
      expect(last.bytesAcked).toBe(7n);
      expect(of(server).at(-1)!.bytesReceived).toBe(6n);
      const times = of(client).map((c) => c.time);
      expect([...times].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))).toEqual(times);
      expect(times[0]).toBeLessThanOrEqual(process.hrtime.bigint());
    } finally {
      stream.close();
      await p.close();
    }
  });

  itBpf('IPv6: addresses and ports of both ends; the counters equal tcp_info read on the fd right after the change', async () => {
    const { stream, of } = recorder();
    const p = await pair({ host: '::1', server: { allowHalfOpen: true } });
    try {
      const client = cookieOf(p.client);
      p.client.write(Buffer.alloc(1000, 1));
      p.server.resume();
      await waitFor('1000 bytes read', () => (p.server.bytesRead === 1000 ? true : undefined));
      shutdown(p.client, 'write');
      await waitFor('FIN_WAIT2', () => (of(client).at(-1)?.to === 'FIN_WAIT2' ? true : undefined));
      const change = of(client).at(-1)!;
      const info = tcpInfo(p.client);
      expect(change).toMatchObject({ family: 6, localAddress: '::1', localPort: p.client.localPort, remoteAddress: '::1', remotePort: p.client.remotePort });
      expect({ acked: change.bytesAcked, received: change.bytesReceived, retransmits: change.retransmits }).toEqual({
        acked: BigInt(info.bytesAcked!),
        received: BigInt(info.bytesReceived!),
        retransmits: info.totalRetrans,
      });
      expect(change.bytesAcked).toBe(1002n); // SYN, 1000 bytes, FIN
    } finally {
      stream.close();
      await p.close();
    }
  });

  itBpf('an RST received on unread data: the receiver goes ESTABLISHED → CLOSE with error 104, the sender with 0', async () => {
    const { stream, of } = recorder();
    const p = await pair({ server: { pauseOnConnect: true } });
    try {
      const client = cookieOf(p.client);
      const server = cookieOf(p.server);
      p.client.write('unread');
      await waitFor('unread bytes on the server', () => (queues(p.server).unread > 0 ? true : undefined));
      const reset = nextError(p.client);
      p.server.destroy(); // close() with unread data sends an RST
      expect((await reset).code).toBe('ECONNRESET');
      await waitFor('the client CLOSE', () => (of(client).at(-1)?.to === 'CLOSE' ? true : undefined));
      expect(of(client).at(-1)).toMatchObject({ from: 'ESTABLISHED', to: 'CLOSE', error: 104 });
      await waitFor('the server CLOSE', () => (of(server).at(-1)?.to === 'CLOSE' ? true : undefined));
      expect(of(server).at(-1)).toMatchObject({ from: 'ESTABLISHED', to: 'CLOSE', error: 0 });
    } finally {
      stream.close();
      await p.close();
    }
  });

  itBpf('a refused connect: CLOSE → SYN_SENT → CLOSE with error 111', async () => {
    const { stream, changes } = recorder();
    try {
      const probe = net.createServer().listen(0, '127.0.0.1');
      await once(probe, 'listening');
      const { port } = probe.address() as net.AddressInfo;
      await new Promise<void>((resolve) => probe.close(() => resolve()));
      const socket = net.connect(port, '127.0.0.1');
      expect((await nextError(socket)).code).toBe('ECONNREFUSED');
      const refused = await waitFor('the refused CLOSE', () => changes.find((c) => c.remotePort === port && c.to === 'CLOSE' && c.from === 'SYN_SENT'));
      expect(refused.error).toBe(111);
      expect(path_(changes.filter((c) => c.cookie === refused.cookie))).toEqual(['CLOSE>SYN_SENT', 'SYN_SENT>CLOSE']);
    } finally {
      stream.close();
    }
  });

  itBpf('close() after shutdown() stores FIN_WAIT1 again: the program records it, the stream leaves it out', async () => {
    const { stream, of } = recorder();
    const raw = new (native().BpfStateChanges!)(1 << 16, false);
    const p = await pair({ server: { pauseOnConnect: true } });
    try {
      const client = cookieOf(p.client);
      p.client.on('error', () => {});
      // The peer reads nothing: data waits unsent behind its closed window, and the FIN behind
      // the data, so the client stays in FIN_WAIT1 whatever the timing.
      p.client.write(Buffer.alloc(8 << 20));
      await waitFor('unsent bytes', () => (queues(p.client).unsent > 0 ? true : undefined));
      shutdown(p.client, 'write');
      expect(tcpState(p.client)).toBe('FIN_WAIT1');
      p.client.destroy();
      p.server.destroy(); // unread data: an RST to the orphan
      await waitFor('the client CLOSE', () => (of(client).at(-1)?.to === 'CLOSE' ? true : undefined));
      expect(path_(of(client)).slice(2)).toEqual(['ESTABLISHED>FIN_WAIT1', 'FIN_WAIT1>CLOSE']);
      expect(of(client).at(-1)!.error).toBe(104);
      const buffer = new Uint8Array(RECORD * 256);
      const view = new DataView(buffer.buffer);
      const seen: string[] = [];
      for (let n = raw.read(buffer); n > 0; n = raw.read(buffer)) {
        for (let i = 0; i < n; i++) {
          if (view.getBigUint64(i * RECORD + 8, true) === client) seen.push(`${buffer[i * RECORD + 32]}>${buffer[i * RECORD + 33]}`);
        }
      }
      expect(seen.slice(2)).toEqual(['1>4', '4>4', '4>7']); // ESTABLISHED → FIN_WAIT1 → FIN_WAIT1 → CLOSE
    } finally {
      raw.close();
      stream.close();
      await p.close();
    }
  });

  itBpf('close() stops the calls, lost counts nothing on a quiet ring, and a second close() is a no-op', async () => {
    let calls = 0;
    const stream = openStateChanges(() => calls++);
    const p = await pair();
    await waitFor('a batch', () => (calls > 0 ? true : undefined));
    stream.close();
    const before = calls;
    p.client.end();
    await p.close();
    await new Promise((resolve) => setImmediate(resolve));
    expect(calls).toBe(before);
    expect(stream.lost).toBe(0);
    expect(() => stream.close()).not.toThrow();
  });

  itBpf('an open stream keeps the process alive like a server; unref() lets it exit, ref() keeps it again', async () => {
    const run = (calls: string) => {
      const script = `
        const { openStateChanges } = require(${JSON.stringify(dist)});
        const stream = openStateChanges(() => {})${calls};
        // Fires only if something else keeps the process alive for 300 ms.
        setTimeout(() => { console.log('alive'); stream.close(); }, 300).unref();
      `;
      const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 20_000 });
      return { status: child.status, stdout: child.stdout.trim(), stderr: child.stderr };
    };
    expect(run('')).toEqual({ status: 0, stdout: 'alive', stderr: '' });
    expect(run('.unref()')).toEqual({ status: 0, stdout: '', stderr: '' });
    expect(run('.unref().ref()')).toEqual({ status: 0, stdout: 'alive', stderr: '' });
  });

  itBpf('loads under a CPU profiler: the verifier gives up when a signal is pending, and node --cpu-prof sends SIGPROF every 20 µs here', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-prof-'));
    try {
      const script = `
        const { openStateChanges } = require(${JSON.stringify(dist)});
        const codes = [];
        for (let i = 0; i < 10; i++) {
          try { openStateChanges(() => {}).close(); codes.push('ok'); } catch (e) { codes.push(e.code); }
        }
        console.log(JSON.stringify(codes));
      `;
      const child = spawnSync(process.execPath, ['--cpu-prof', `--cpu-prof-dir=${dir}`, '--cpu-prof-interval', '20', '-e', script], { encoding: 'utf8', timeout: 30_000 });
      expect({ status: child.status, stderr: child.stderr }).toEqual({ status: 0, stderr: '' });
      expect(JSON.parse(child.stdout)).toEqual(Array(10).fill('ok'));
      // The profiler ran all along: its samples are in the profile it wrote.
      const [profile] = fs.readdirSync(dir);
      expect(JSON.parse(fs.readFileSync(path.join(dir, profile), 'utf8')).samples.length).toBeGreaterThan(0);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  itBpf('a full ring: the program counts what it could not write, and the reader gets what fit', async () => {
    const raw = new (native().BpfStateChanges!)(4096, false); // one page: room for 28 records of RECORD (136) + 8 bytes
    try {
      expect(raw.lost()).toBe(0);
      for (let i = 0; i < 10; i++) {
        const p = await pair();
        await p.close(); // 6 to 10 changes each (4 to connect, at least one per end), nothing read meanwhile
      }
      const buffer = new Uint8Array(RECORD * 64);
      let read = 0;
      for (let n = raw.read(buffer); n > 0; n = raw.read(buffer)) read += n;
      expect(read).toBeGreaterThan(0);
      expect(read).toBeLessThanOrEqual(Math.floor(4096 / (RECORD + 8)));
      expect(raw.lost()).toBeGreaterThanOrEqual(60 - read);
    } finally {
      raw.close();
    }
    expect(() => raw.lost()).toThrow(expect.objectContaining({ code: 'EBADF' }));
    expect(() => raw.read(new Uint8Array(RECORD))).toThrow(expect.objectContaining({ code: 'EBADF' }));
  });

  itBpf('a Worker terminated with the stream open ends the Worker, not the process, and leaves no BPF fd (3 runs)', async () => {
    const script = `
      const { Worker } = require('node:worker_threads');
      const fs = require('node:fs');
      const bpfFds = () => fs.readdirSync('/proc/self/fd').filter((fd) => {
        try { return /bpf/.test(fs.readlinkSync('/proc/self/fd/' + fd)); } catch { return false; }
      }).length;
      const worker = new Worker(\`
        const net = require('node:net');
        const { parentPort } = require('node:worker_threads');
        const { openStateChanges } = require(${JSON.stringify(dist)});
        let seen = 0;
        openStateChanges((changes) => { seen += changes.length; });
        const server = net.createServer((s) => s.end()).listen(0, '127.0.0.1', () => {
          const again = () => net.connect(server.address().port, '127.0.0.1').on('close', again).resume();
          again(); // connections open and close until the end: the ring is never idle
          const timer = setInterval(() => { if (seen > 20) { clearInterval(timer); parentPort.postMessage('busy'); } }, 5);
        });
      \`, { eval: true });
      worker.once('message', () => {
        const open = bpfFds();
        worker.terminate().then((code) => console.log(JSON.stringify({ code, open, after: bpfFds() })));
      });
      worker.on('error', (e) => { console.log('worker error', e.message); process.exitCode = 1; });
    `;
    for (let run = 0; run < 3; run++) {
      const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30_000 });
      expect({ run, status: child.status, signal: child.signal, stderr: child.stderr.slice(0, 500) }).toEqual({ run, status: 0, signal: null, stderr: '' });
      // Open: the ring, the counter, the program and its link; after: none.
      expect(JSON.parse(child.stdout)).toEqual({ code: 1, open: 4, after: 0 });
    }
  }, 60_000);

  itNeeds('uid 65534 (setpriv)', () => canBecome(65534), 'without privilege (uid 65534): EPERM naming CAP_BPF and CAP_PERFMON, and stateChangesUnavailable() says so', async () => {
    const script = `
      const { openStateChanges, stateChangesUnavailable } = require(${JSON.stringify(dist)});
      let error;
      try { openStateChanges(() => {}).close(); } catch (e) { error = e; }
      console.log(JSON.stringify({ code: error && error.code, message: error && error.message, why: stateChangesUnavailable() }));
    `;
    const child = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', '--inh-caps=-all', process.execPath, '-e', script], {
      encoding: 'utf8',
      timeout: 20_000,
    });
    expect(child.stderr).toBe('');
    const result = JSON.parse(child.stdout) as { code: string; message: string; why: string };
    expect(result.code).toBe('EPERM');
    expect(result.message).toMatch(/CAP_BPF and CAP_PERFMON, or root/);
    expect(result.message).toMatch(/bpf EPERM \(BPF_MAP_CREATE\)/);
    expect(result.why).toBe(result.message);
  });
});

describe('openStateChanges({ closeOnly: true })', () => {
  it('rejects options that are not an object, or a closeOnly that is not a boolean (ERR_INVALID_ARG_TYPE)', () => {
    expect(() => openStateChanges(() => {}, null as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => openStateChanges(() => {}, { closeOnly: 1 as never })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
  });

  itBpf('reports only the ends, each with the state it left: one record per end of a graceful close', async () => {
    const changes: StateChange[] = [];
    const stream = openStateChanges((batch) => changes.push(...batch), { closeOnly: true });
    try {
      const p = await pair();
      const c = p.client.localPort!;
      const s = p.server.localPort!;
      p.server.resume();
      p.server.on('end', () => p.server.end());
      p.client.resume();
      p.client.end();
      const mine = (): StateChange[] => changes.filter((x) => (x.localPort === c && x.remotePort === s) || (x.localPort === s && x.remotePort === c));
      await waitFor('both ends', () => (mine().length >= 2 ? true : undefined));
      await p.close();
      expect(mine().map((x) => `${x.localPort === c ? 'client' : 'server'} ${x.from} -> ${x.to}`).sort()).toEqual(['client FIN_WAIT2 -> CLOSE', 'server LAST_ACK -> CLOSE']);
      expect(changes.every((x) => x.to === 'CLOSE')).toBe(true);
    } finally {
      stream.close();
    }
  });
});

describe('openStateChanges({ byCookie: true }): the cookie filter', () => {
  it('rejects a byCookie that is not a boolean, a maxCookies without byCookie, and a maxCookies out of 1 to 2^24', () => {
    const open = (options: object) => () => openStateChanges(() => {}, options);
    expect(open({ byCookie: 'yes' })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(open({ maxCookies: 10 })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    expect(open({ byCookie: true, maxCookies: '10' })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    for (const maxCookies of [0, -1, 1.5, 2 ** 24 + 1, NaN]) {
      expect(open({ byCookie: true, maxCookies })).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    }
  });

  itBpf('addCookie() and removeCookie(): a bigint from 1n to 2n ** 64n - 1n, only on a filtered stream, only while it is open', async () => {
    const plain = openStateChanges(() => {});
    const filtered = openStateChanges(() => {}, { byCookie: true });
    try {
      expect(() => plain.addCookie(5n)).toThrow(expect.objectContaining({ code: 'ERR_FINWAIT_NO_COOKIE_FILTER' }));
      expect(() => plain.removeCookie(5n)).toThrow(expect.objectContaining({ code: 'ERR_FINWAIT_NO_COOKIE_FILTER' }));
      expect(() => filtered.addCookie(5 as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
      for (const cookie of [0n, -1n, 2n ** 64n]) {
        expect(() => filtered.addCookie(cookie)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
      }
      expect(filtered.removeCookie(2n ** 64n - 1n)).toBe(false); // never added
      filtered.addCookie(2n ** 64n - 1n);
      filtered.addCookie(2n ** 64n - 1n); // adding again changes nothing
      expect(filtered.removeCookie(2n ** 64n - 1n)).toBe(true);
      expect(filtered.removeCookie(2n ** 64n - 1n)).toBe(false);
    } finally {
      plain.close();
      filtered.close();
    }
    expect(() => filtered.addCookie(5n)).toThrow(expect.objectContaining({ code: 'ERR_FINWAIT_STREAM_CLOSED' }));
  });

  itBpf('maxCookies: the filter holds that many cookies; one more is E2BIG, and room comes back with a removal', async () => {
    const stream = openStateChanges(() => {}, { byCookie: true, maxCookies: 2 });
    try {
      stream.addCookie(1n);
      stream.addCookie(2n);
      expect(() => stream.addCookie(3n)).toThrow(expect.objectContaining({ code: 'E2BIG', syscall: 'bpf', message: expect.stringMatching(/^The cookie filter is full/) }));
      expect(stream.removeCookie(1n)).toBe(true);
      stream.addCookie(3n);
    } finally {
      stream.close();
    }
  });

  itBpf("reports only the sockets added (an unfiltered stream sees the other's changes), and a socket's CLOSE takes its cookie out", async () => {
    const all = recorder();
    const filteredChanges: StateChange[] = [];
    const filtered = openStateChanges((batch) => filteredChanges.push(...batch), { byCookie: true });
    const watched = await pair();
    const other = await pair();
    try {
      const cookie = cookieOf(watched.client);
      const otherCookie = cookieOf(other.client);
      filtered.addCookie(cookie);
      for (const p of [watched, other]) {
        p.server.resume();
        p.server.on('end', () => p.server.end());
        p.client.resume();
        p.client.end();
      }
      const closed = (changes: StateChange[], c: bigint) => changes.some((x) => x.cookie === c && x.to === 'CLOSE');
      await waitFor('both clients closed, as the unfiltered stream saw', () => (closed(all.changes, cookie) && closed(all.changes, otherCookie) ? true : undefined));
      await waitFor('the watched client closed, as the filtered stream saw', () => (closed(filteredChanges, cookie) ? true : undefined));
      // The changes after the cookie went in; none of the other connection, nor of the server ends.
      expect(path_(filteredChanges)).toEqual(['ESTABLISHED>FIN_WAIT1', 'FIN_WAIT1>FIN_WAIT2', 'FIN_WAIT2>CLOSE']);
      expect(filteredChanges.every((x) => x.cookie === cookie)).toBe(true);
      expect(path_(all.of(otherCookie)).slice(2)).toEqual(['ESTABLISHED>FIN_WAIT1', 'FIN_WAIT1>FIN_WAIT2', 'FIN_WAIT2>CLOSE']);
      // Its end took the cookie out of the filter.
      expect(filtered.removeCookie(cookie)).toBe(false);
    } finally {
      filtered.close();
      all.stream.close();
      await watched.close();
      await other.close();
    }
  });

  itBpf('dataSegsIn: the data segments the socket received, as tcp_info counts them', async () => {
    const { stream, of } = recorder();
    const p = await pair({ server: { allowHalfOpen: true } });
    try {
      const server = cookieOf(p.server);
      p.server.resume();
      for (let i = 0; i < 3; i++) {
        p.client.write(Buffer.alloc(100, i));
        await waitFor(`${100 * (i + 1)} bytes read`, () => (p.server.bytesRead === 100 * (i + 1) ? true : undefined));
      }
      shutdown(p.server, 'write');
      const fin = await waitFor('the server in FIN_WAIT2', () => of(server).find((x) => x.to === 'FIN_WAIT2'));
      // Three writes, each read before the next: three data segments; the peer's FIN carried none.
      const info = tcpInfo(p.server);
      expect(info.dataSegsIn).toBe(3);
      expect(fin.dataSegsIn).toBe(3);
    } finally {
      stream.close();
      await p.close();
    }
  });
});

/** A server on 127.0.0.1 whose sockets end their reads and close when the client does, and its port. */
async function echoServer(): Promise<{ server: net.Server; port: number; accepted: net.Socket[] }> {
  const accepted: net.Socket[] = [];
  const server = net.createServer((socket) => {
    accepted.push(socket);
    socket.resume();
    socket.on('end', () => socket.end());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as net.AddressInfo).port, accepted };
}

/** A client that connects to `port`, ends at once and is closed when this resolves. */
async function shortConnection(port: number): Promise<number> {
  const client = net.connect(port, '127.0.0.1');
  client.resume();
  await once(client, 'connect');
  const local = client.localPort!;
  client.end();
  await once(client, 'close');
  return local;
}

describe('openStateChanges({ byPort: true }): the port filter', () => {
  it('rejects a byPort that is not a boolean (ERR_INVALID_ARG_TYPE)', () => {
    expect(() => openStateChanges(() => {}, { byPort: 'yes' as never })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
  });

  itBpf('addPort() and removePort(): a namespace cookie from 1n and a port from 1 to 65535, only on a stream with the filter, only while it is open', async () => {
    const plain = openStateChanges(() => {});
    const filtered = openStateChanges(() => {}, { byPort: true });
    try {
      expect(() => plain.addPort(1n, 80)).toThrow(expect.objectContaining({ code: 'ERR_FINWAIT_NO_PORT_FILTER' }));
      expect(() => plain.removePort(1n, 80)).toThrow(expect.objectContaining({ code: 'ERR_FINWAIT_NO_PORT_FILTER' }));
      expect(() => filtered.addPort(1 as never, 80)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
      expect(() => filtered.addPort(1n, '80' as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
      for (const netns of [0n, -1n, 2n ** 64n]) expect(() => filtered.addPort(netns, 80)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
      for (const port of [0, -1, 1.5, 65536, NaN]) expect(() => filtered.addPort(1n, port)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
      expect(filtered.removePort(2n ** 64n - 1n, 65535)).toBe(false); // never added
      filtered.addPort(2n ** 64n - 1n, 65535);
      filtered.addPort(2n ** 64n - 1n, 65535); // adding again changes nothing
      expect(filtered.removePort(2n ** 64n - 1n, 65534)).toBe(false);
      expect(filtered.removePort(2n ** 64n - 1n, 65535)).toBe(true);
      expect(filtered.removePort(2n ** 64n - 1n, 65535)).toBe(false);
    } finally {
      plain.close();
      filtered.close();
    }
    expect(() => filtered.addPort(1n, 80)).toThrow(expect.objectContaining({ code: 'ERR_FINWAIT_STREAM_CLOSED' }));
  });

  itBpf("reports only the sockets on the ports added, in that namespace (not their clients, not another port's), until removePort()", async () => {
    const changes: StateChange[] = [];
    const stream = openStateChanges((batch) => changes.push(...batch), { byPort: true, closeOnly: true });
    const a = await echoServer();
    const b = await echoServer();
    try {
      const netns = native().netnsCookie();
      stream.addPort(netns, a.port);
      // Another namespace's cookie with b's port: b's sockets are not on it.
      stream.addPort(netns + 1n, b.port);
      const aClient = await shortConnection(a.port);
      const bClient = await shortConnection(b.port);
      const ended = (port: number) => changes.filter((c) => c.localPort === port);
      // The server end of a's connection (LAST_ACK -> CLOSE) comes; a marker connection to a
      // again, after b's, says b's end would have come by then (the ring keeps the kernel's order).
      const marker = await shortConnection(a.port);
      await waitFor("a's two server ends", () => (ended(a.port).length === 2 ? true : undefined));
      expect(ended(a.port).map((c) => [c.remotePort, c.from, c.to])).toEqual([
        [aClient, 'LAST_ACK', 'CLOSE'],
        [marker, 'LAST_ACK', 'CLOSE'],
      ]);
      expect(ended(a.port).every((c) => c.netnsCookie === netns)).toBe(true);
      // Nothing of b's port, nor of any client (their local ports are not followed).
      expect(changes.length).toBe(2);
      expect(bClient).toBeGreaterThan(0);
      expect(stream.removePort(netns, a.port)).toBe(true);
      stream.addPort(netns, b.port);
      await shortConnection(a.port);
      const bLast = await shortConnection(b.port);
      await waitFor("b's server end", () => (ended(b.port).length === 1 ? true : undefined));
      expect(ended(b.port)[0]).toMatchObject({ remotePort: bLast, from: 'LAST_ACK', to: 'CLOSE' });
      expect(ended(a.port).length).toBe(2);
    } finally {
      stream.close();
      a.server.close();
      b.server.close();
    }
  });

  itBpf('with byCookie too: a change is reported if either filter keeps it', async () => {
    const changes: StateChange[] = [];
    const stream = openStateChanges((batch) => changes.push(...batch), { byPort: true, byCookie: true, closeOnly: true });
    const a = await echoServer();
    const b = await echoServer();
    try {
      stream.addPort(native().netnsCookie(), a.port);
      const client = net.connect(b.port, '127.0.0.1');
      client.resume();
      await once(client, 'connect');
      const cookie = native().socketCookie((client as unknown as { _handle: { fd: number } })._handle.fd);
      stream.addCookie(cookie);
      const local = client.localPort!;
      client.end();
      await once(client, 'close');
      await shortConnection(a.port);
      await waitFor("the followed client's end and a's server end", () => (changes.length === 2 ? true : undefined));
      expect(changes.map((c) => [c.localPort, c.to])).toEqual(expect.arrayContaining([[local, 'CLOSE'], [a.port, 'CLOSE']]));
      expect(changes.find((c) => c.localPort === local)!.cookie).toBe(cookie);
    } finally {
      stream.close();
      a.server.close();
      b.server.close();
    }
  });
});

describe('openStateChanges({ maxDelay }): changes read on a timer', () => {
  it('rejects a maxDelay that is not a number (ERR_INVALID_ARG_TYPE) or not an integer from 0 to 60,000 (ERR_OUT_OF_RANGE)', () => {
    const open = (options: object) => () => openStateChanges(() => {}, options);
    expect(open({ maxDelay: '10' })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    for (const maxDelay of [-1, 1.5, 60_001, NaN, Infinity]) expect(open({ maxDelay })).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
  });

  /** The server end of a connection to `a` (LAST_ACK -> CLOSE, with the client's last ACK), once sock_diag shows it gone. */
  async function serverEnd(a: { port: number; accepted: net.Socket[] }): Promise<number> {
    const local = await shortConnection(a.port);
    const tuple = { local: { address: '127.0.0.1', port: a.port }, remote: { address: '127.0.0.1', port: local } };
    await waitFor('the server end freed', () => (findSocket(tuple) === undefined ? true : undefined));
    return local;
  }

  /** A stream of the closes on a new echo server's port, with `maxDelay`; both closed after `run`. */
  async function withPortStream(
    maxDelay: number,
    run: (a: Awaited<ReturnType<typeof echoServer>>, stream: StateChangeStream, changes: StateChange[]) => Promise<void>,
  ): Promise<void> {
    const changes: StateChange[] = [];
    const stream = openStateChanges((batch) => changes.push(...batch), { byPort: true, closeOnly: true, maxDelay });
    const a = await echoServer();
    try {
      stream.addPort(native().netnsCookie(), a.port);
      await run(a, stream, changes);
    } finally {
      stream.close();
      a.server.close();
    }
  }

  itBpf('a change waits in the ring: nothing wakes the process for it', () =>
    withPortStream(60_000, async (a, stream, changes) => {
      await serverEnd(a);
      // Its record is in the ring; the loop has polled its fds since (a whole connection of another
      // server, several turns): no call came. (The timer, 60 s away, would read it.)
      const other = await echoServer();
      await shortConnection(other.port);
      other.server.close();
      await new Promise((resolve) => setImmediate(resolve));
      expect(changes).toEqual([]);
      expect(stream.lost).toBe(0);
    }),
  );

  itBpf('a change waiting in the ring is read by the timer', () =>
    withPortStream(20, async (a, _stream, changes) => {
      const local = await serverEnd(a);
      await waitFor('the server end read', () => (changes.length === 1 ? true : undefined));
      expect(changes[0]).toMatchObject({ localPort: a.port, remotePort: local, from: 'LAST_ACK', to: 'CLOSE' });
    }),
  );
});
