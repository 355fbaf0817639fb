/**
 * Who sent the RST, on every back-end, between two real kernels with every segment seen on the
 * lab's wire: a close with TCP_LINGER2 = -1 in FIN_WAIT2, and an orphan in FIN_WAIT2 that
 * receives data, both send the RST from this end (kernel rows 15 and 16), where polling alone
 * used to report the peer's (on bpf too, where the orphan's RST answering data comes with sk_err
 * ECONNRESET, as one received). What the destroy multicast cannot see: a timewait socket's end. And
 * what only the BPF stream's sk_err tells: an orphan the kernel gave up on timed out (the other
 * back-ends see it vanish, as an RST would make it).
 */
import { afterAll, beforeAll, describe, expect } from 'vitest';
import { once } from 'node:events';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import type net from 'node:net';
import { closeWrite, reset, setLinger2, setUserTimeout, watch } from '../../src/index';
import { native, type NativeEventsSocket } from '../../src/binding';
import { setWatchBackend, watcherOf, type Lifecycle, type WatchBackendName } from '../../src/lifecycle/watch';
import { destroyMulticastStatus } from '../../src/lifecycle/sources/destroy-multicast';
import { bpfStatus } from '../../src/lifecycle/sources/bpf';
import { messageCookie } from '../../src/diag';
import { createLab, labAvailable, type Lab } from '../../src/testing/index';
import { bpfAvailable, itNeeds, waitFor, type Availability } from '../helpers';
import { itLab } from '../testing/helpers';

/** A connection a → b:80 across the wire, both ends half-open capable, b reading; a watched. */
async function connection(lab: Lab): Promise<{ a: net.Socket; b: net.Socket; lc: Lifecycle }> {
  const server = await lab.b.listen(80, { allowHalfOpen: true });
  // Every connection b accepts may be reset by a test (the ss -K test's marker): never uncaught.
  server.on('connection', (socket: net.Socket) => socket.on('error', () => {}));
  const accepted = once(server, 'connection') as Promise<[net.Socket]>;
  const a = await lab.a.connect(80, { allowHalfOpen: true });
  const [b] = await accepted;
  a.on('error', () => {});
  b.on('error', () => {});
  b.resume();
  return { a, b, lc: watch(a) };
}

/** The RSTs the wire carried from host `side`. */
function rstsFrom(lab: Lab, side: 'a' | 'b'): number {
  return lab.wire.log.filter((e) => e.from === side && e.flags.includes('RST')).length;
}

/** Waits for the wire to have carried an RST from `side` (it logs a segment a turn after the kernel sent it). */
async function rstOnWire(lab: Lab, side: 'a' | 'b'): Promise<void> {
  await waitFor(`an RST from ${side} on the wire`, () => (rstsFrom(lab, side) > 0 ? true : undefined));
}

/** a in FIN_WAIT2 (its FIN acknowledged, b in CLOSE_WAIT), then its fd closed: an orphan. */
async function orphanInFinWait2(lab: Lab, linger2?: number): Promise<{ a: net.Socket; b: net.Socket; lc: Lifecycle }> {
  const c = await connection(lab);
  await closeWrite(c.a);
  await c.lc.until('FIN_WAIT2', { timeout: 5000 });
  if (linger2 !== undefined) expect(setLinger2(c.a, linger2)).toBe(linger2);
  c.a.destroy();
  await waitFor('the orphan in FIN_WAIT2', () => (lab.a.sockets({ states: ['FIN_WAIT2'] }).length === 1 ? true : undefined));
  return c;
}

describe.each(['bpf', 'destroy-multicast', 'poll'] as WatchBackendName[])('on %s', (backend) => {
  beforeAll(() => setWatchBackend(backend));
  afterAll(() => setWatchBackend(undefined));

  itLab('kernel row 15: TCP_LINGER2 = -1 close in FIN_WAIT2: this end sends the RST, reset-sent', async (lab) => {
    const { a, b, lc } = await connection(lab);
    expect(lc.backend.name).toBe(backend);
    await closeWrite(a);
    await lc.until('FIN_WAIT2', { timeout: 5000 });
    expect(setLinger2(a, -1)).toBe(-1);
    const peerReset = once(b, 'error') as Promise<[NodeJS.ErrnoException]>;
    a.destroy();
    const result = await lc.done;
    expect(result).toMatchObject({ outcome: 'reset-sent', role: 'active', anomalies: [] });
    expect(result.history.at(-1)).toMatchObject({ state: 'CLOSED', event: 'rst-sent' });
    // From the other end: the RST came from a, and b's next write finds the connection reset.
    await rstOnWire(lab, 'a');
    expect(rstsFrom(lab, 'a')).toBe(1);
    b.write('after the RST');
    expect((await peerReset)[0].code).toMatch(/^(ECONNRESET|EPIPE)$/);
    expect(rstsFrom(lab, 'b')).toBe(0);
  });

  itLab('kernel row 16: an orphan in FIN_WAIT2 receiving data answers with an RST and is gone: reset-sent', async (lab) => {
    const { b, lc } = await orphanInFinWait2(lab);
    b.write('data for a closed socket');
    const result = await lc.done;
    expect(result).toMatchObject({ outcome: 'reset-sent', role: 'active', anomalies: [] });
    expect(result.history.at(-1)).toMatchObject({ state: 'CLOSED', event: 'rst-sent', source: 'diag' });
    await rstOnWire(lab, 'a');
    expect(rstsFrom(lab, 'a')).toBe(1);
    expect(rstsFrom(lab, 'b')).toBe(0);
  });

  itLab('the same orphan reset by the peer instead: reset-received', async (lab) => {
    const { b, lc } = await orphanInFinWait2(lab);
    reset(b);
    const result = await lc.done;
    expect(result).toMatchObject({ outcome: 'reset-received', anomalies: [] });
    await rstOnWire(lab, 'b');
    expect(rstsFrom(lab, 'b')).toBe(1);
    expect(rstsFrom(lab, 'a')).toBe(0);
  });

  itLab('an orphan in FIN_WAIT2 kept as a full socket (TCP_LINGER2 above 60 s) answering data: reset-sent', async (lab) => {
    const { b, lc } = await orphanInFinWait2(lab, 120);
    // A FIN_WAIT2 timer longer than TIME_WAIT's 60 s keeps the full socket (on a keepalive timer).
    expect(lab.a.sockets({ states: ['FIN_WAIT2'] })[0]!.timer.kind).toBe('keepalive');
    const matched = bpfStatus().matched;
    b.write('data for a closed socket');
    expect(await lc.done).toMatchObject({ outcome: 'reset-sent', anomalies: [] });
    // On bpf its CLOSE record came with sk_err ECONNRESET, as for an RST received: the count of RSTs sent decided.
    expect(bpfStatus().matched - matched).toBe(backend === 'bpf' ? 1 : 0);
    await rstOnWire(lab, 'a');
    expect(rstsFrom(lab, 'a')).toBe(1);
  });
});

describe('what the destroy multicast cannot see', () => {
  itLab('a TIME_WAIT killed early (ss -K) sends no message (a timewait socket is no full socket): seen when next looked at', async (lab) => {
    setWatchBackend('destroy-multicast');
    try {
      const { a, b, lc } = await connection(lab);
      a.resume();
      await closeWrite(a);
      b.end();
      await lc.until('TIME_WAIT', { timeout: 5000 });
      a.destroy();
      const [timeWait] = lab.a.sockets({ states: ['TIME_WAIT'] });
      expect(timeWait!.cookie).toBe(watcherOf(lc)!.cookie);
      // Our own listener in a's namespace, joined for this test: every message there.
      const nsFd = fs.openSync(`/run/netns/${lab.a.netns}`, 'r');
      let socket: NativeEventsSocket;
      try {
        socket = new (native().SockDiagEventsSocket!)(nsFd, 0);
      } finally {
        fs.closeSync(nsFd);
      }
      const listener = socket.fd;
      const seen: (number | string | undefined)[] = [];
      const buffer = new Uint8Array(64 * 1024);
      const lengths = new Int32Array(64);
      const drain = () => {
        for (let n; (n = native().sockDiagReadEvents!(listener, buffer, lengths)) > 0; ) {
          for (let i = 0; i < n; i++) seen.push(messageCookie(new DataView(buffer.buffer), i * 1024, Math.abs(lengths[i]!)));
        }
      };
      try {
        native().sockDiagJoin!(listener, 1);
        const matched = destroyMulticastStatus().matched;
        execFileSync('ip', ['netns', 'exec', lab.a.netns, 'ss', '-K', 'state', 'time-wait'], { stdio: 'pipe' });
        expect(lab.a.sockets({ states: ['TIME_WAIT'] })).toEqual([]);
        // A full socket closed after the kill: its message comes, the TIME_WAIT's never came.
        const marker = await lab.a.connect(80);
        const markerCookie = lab.a.sockets({ states: ['ESTABLISHED'] }).find((e) => e.local.port === marker.localPort)!.cookie;
        reset(marker);
        await waitFor('the marker socket\'s message', () => {
          drain();
          return seen.some((c) => c === Number.parseInt(markerCookie, 16)) ? true : undefined;
        });
        expect(seen).not.toContain(Number.parseInt(timeWait!.cookie, 16));
        expect(destroyMulticastStatus().matched).toBe(matched);
        // So watch() still shows TIME_WAIT until it looks, at its timer's end (looked at now here).
        expect(lc.state).toBe('TIME_WAIT');
        watcherOf(lc)!.lookNow();
        expect(lc.state).toBe('CLOSED');
        expect(await lc.done).toMatchObject({ outcome: 'graceful' });
      } finally {
        socket.close();
      }
    } finally {
      setWatchBackend(undefined);
    }
  });
});

describe('what only the BPF stream tells', () => {
  beforeAll(() => setWatchBackend('bpf'));
  afterAll(() => setWatchBackend(undefined));

  /** The lab and the BPF stream (both need root, or the capabilities each asks for). */
  const labAndBpf = (): Availability => {
    const lab = labAvailable();
    return lab.ok ? bpfAvailable() : lab;
  };

  itNeeds('the lab and the BPF state-change stream', labAndBpf, 'an orphan in FIN_WAIT1 given up after retransmissions (TCP_USER_TIMEOUT): timed-out when it ends, from sk_err ETIMEDOUT', async () => {
    const lab = await createLab();
    try {
      await givenUp(lab);
    } finally {
      await lab.close();
    }
  });

  itNeeds('the lab and the BPF state-change stream', labAndBpf, 'an orphan in LAST_ACK killed with ss -K sends nothing: the model has no kill, so timed-out (ECONNABORTED), at once', async () => {
    const lab = await createLab();
    try {
      const { a, b, lc } = await connection(lab);
      expect(lc.backend).toEqual({ name: 'bpf' });
      a.resume();
      b.end(); // b's FIN: a in CLOSE_WAIT
      await lc.until('CLOSE_WAIT', { timeout: 5000 });
      // b's ACK of a's FIN never arrives: a's orphan stays in LAST_ACK, retransmitting its FIN.
      lab.wire.drop((s) => s.from === 'b');
      const matched = bpfStatus().matched;
      a.destroy();
      await waitFor('the orphan in LAST_ACK', () => (lab.a.sockets({ states: ['LAST_ACK'] }).length === 1 ? true : undefined));
      execFileSync('ip', ['netns', 'exec', lab.a.netns, 'ss', '-K', 'state', 'last-ack'], { stdio: 'pipe' });
      const result = await lc.done;
      expect(result).toMatchObject({ outcome: 'timed-out', role: 'passive', anomalies: [] });
      expect(result.history.at(-1)).toMatchObject({ state: 'CLOSED', event: 'timeout', source: 'event' });
      expect(bpfStatus().matched).toBe(matched + 1);
      // The kill sent nothing (tcp_abort() resets only from ESTABLISHED, CLOSE_WAIT, FIN_WAIT1/2, SYN_RECV).
      expect(rstsFrom(lab, 'a')).toBe(0);
    } finally {
      await lab.close();
    }
  });

  async function givenUp(lab: Lab): Promise<void> {
    const { a, lc } = await connection(lab);
    expect(lc.backend).toEqual({ name: 'bpf' });
    expect(setUserTimeout(a, 600)).toBe(600);
    // Nothing from a reaches b any more: a's FIN is retransmitted until the user timeout.
    lab.wire.drop((s) => s.from === 'a');
    const matched = bpfStatus().matched;
    a.destroy();
    await waitFor('the orphan in FIN_WAIT1', () => (lab.a.sockets({ states: ['FIN_WAIT1'] }).length === 1 ? true : undefined));
    const result = await lc.done;
    expect(result).toMatchObject({ outcome: 'timed-out', role: 'active', anomalies: [] });
    expect(result.history.at(-1)).toMatchObject({ state: 'CLOSED', event: 'timeout', source: 'event' });
    expect(bpfStatus().matched).toBe(matched + 1);
    // Nothing but a's retransmissions went out: no RST from either end.
    expect(rstsFrom(lab, 'a') + rstsFrom(lab, 'b')).toBe(0);
  }
});
