import { afterEach, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import diagnosticsChannel from 'node:diagnostics_channel';
import { once } from 'node:events';
import { execFile } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { performance } from 'node:perf_hooks';
import { closeWrite, findSocket, reset, setLinger2, shutdown, tcpState, watch } from '../../src/index';
import { socketTuple } from '../../src/diag';
import { STATE_CHANNEL, watcherOf, type Transition } from '../../src/lifecycle/watch';
import { pair, readAll, waitFor, type Pair } from '../helpers';
import { itLab } from '../testing/helpers';
import { isPureAck } from '../../src/testing/index';

let p: Pair | undefined;
afterEach(async () => {
  await p?.close();
  p = undefined;
});

const states = (lc: { history: readonly { state: string }[] }) => lc.history.map((h) => h.state);

describe('watch', () => {
  it('normal close: active end through FIN_WAIT1, FIN_WAIT2, TIME_WAIT (sock_diag, 60 s timer); passive end through CLOSE_WAIT, LAST_ACK, CLOSED', async () => {
    p = await pair({ server: { allowHalfOpen: true } });
    const active = watch(p.client);
    const passive = watch(p.server);
    const tuple = {
      local: { address: p.client.localAddress!, port: p.client.localPort! },
      remote: { address: p.client.remoteAddress!, port: p.client.remotePort! },
    };
    p.server.resume();
    p.client.resume();
    p.client.end();
    await active.until('FIN_WAIT2', { timeout: 5000 });
    await passive.until('CLOSE_WAIT', { timeout: 5000 });
    p.server.end();
    const timeWait = await active.until('TIME_WAIT', { timeout: 5000 });
    expect(timeWait.source).toBe('diag');
    // The rest of the active end's life is its TIME_WAIT timer, asserted instead of waited for.
    const entry = findSocket(tuple);
    expect(entry?.state).toBe('TIME_WAIT');
    expect(entry?.timer.kind).toBe('timewait');
    expect(entry!.timer.expiresMs).toBeGreaterThan(50_000);
    expect(entry!.timer.expiresMs).toBeLessThanOrEqual(60_000);
    expect(states(active).slice(0, 3)).toEqual(['ESTABLISHED', 'FIN_WAIT1', 'FIN_WAIT2']);
    expect(states(active)).toContain('TIME_WAIT');

    const result = await passive.done;
    expect(result.outcome).toBe('graceful');
    expect(result.role).toBe('passive');
    // An fd still open when LAST_ACK ends reads CLOSE, kept in the history as observed: after
    // LAST_ACK that can only be CLOSED. Had Node closed the fd first, sock_diag says so instead.
    expect(states(passive).filter((s) => s !== 'CLOSE')).toEqual(['ESTABLISHED', 'CLOSE_WAIT', 'LAST_ACK', 'CLOSED']);
    const [before, last] = result.history.slice(-2);
    if (before?.state === 'CLOSE') {
      expect(before.source).toBe('kernel');
      expect(last).toMatchObject({ state: 'CLOSED', source: 'inferred', event: 'ack-of-fin' });
    } else {
      expect(last).toMatchObject({ state: 'CLOSED', source: 'diag', event: 'ack-of-fin' });
    }
    const serverTuple = { local: tuple.remote, remote: tuple.local };
    expect(findSocket(serverTuple)).toBeUndefined();
    expect(result.anomalies).toEqual([]);
  });

  it('half-close: data flows after the FIN, then both ends close', async () => {
    p = await pair({ server: { allowHalfOpen: true } });
    const client = watch(p.client);
    const server = watch(p.server);
    p.server.resume();
    await closeWrite(p.client);
    await client.until('FIN_WAIT2', { timeout: 5000 });
    await server.until('CLOSE_WAIT', { timeout: 5000 });
    const got = readAll(p.client);
    p.server.write('after your FIN, ');
    p.server.end('still delivered');
    expect((await got).toString()).toBe('after your FIN, still delivered');
    const result = await server.done;
    expect(result).toMatchObject({ outcome: 'graceful', role: 'passive' });
    await client.until('TIME_WAIT', { timeout: 5000 });
    expect(states(client), JSON.stringify(client.history)).toEqual(expect.arrayContaining(['ESTABLISHED', 'FIN_WAIT1', 'FIN_WAIT2', 'TIME_WAIT']));
  });

  it('reset by us: reset-sent here, reset-received at the peer, no TIME_WAIT', async () => {
    p = await pair();
    const ours = watch(p.client);
    const theirs = watch(p.server);
    p.server.on('error', () => {});
    reset(p.client);
    expect(await ours.done).toMatchObject({ outcome: 'reset-sent' });
    expect(await theirs.done).toMatchObject({ outcome: 'reset-received' });
    expect(states(ours)).not.toContain('TIME_WAIT');
    expect(states(theirs)).not.toContain('TIME_WAIT');
  });

  it('reset by the peer: reset-received here', async () => {
    p = await pair();
    const ours = watch(p.client);
    p.client.on('error', () => {});
    p.client.resume();
    reset(p.server);
    expect(await ours.done).toMatchObject({ outcome: 'reset-received' });
  });

  it('close with unread data: reset-sent on that side, reset-received on the other', async () => {
    p = await pair({ server: { pauseOnConnect: true } });
    const closer = watch(p.server);
    const peer = watch(p.client);
    p.client.on('error', () => {});
    p.client.resume();
    p.client.write('never read');
    await waitFor('unread bytes at the server', () => (p!.server.readableLength === 0 && closer.state === 'ESTABLISHED' ? true : undefined));
    await new Promise<void>((resolve) => {
      const check = () => (findSocket({ local: { address: p!.server.localAddress!, port: p!.server.localPort! }, remote: { address: p!.server.remoteAddress!, port: p!.server.remotePort! } })?.recvQ ? resolve() : setTimeout(check, 1));
      check();
    });
    p.server.destroy();
    expect(await closer.done).toMatchObject({ outcome: 'reset-sent' });
    expect(await peer.done).toMatchObject({ outcome: 'reset-received' });
  });

  it('reset() once TIME_WAIT began (the fd reads CLOSE) sends nothing: no reset recorded, the TIME_WAIT followed', async () => {
    p = await pair({ client: { allowHalfOpen: true }, server: { allowHalfOpen: true } });
    const lc = watch(p.client);
    const tuple = socketTuple(p.client)!;
    p.client.resume();
    p.server.resume();
    shutdown(p.client, 'write');
    await waitFor('CLOSE_WAIT at the server', () => (tcpState(p!.server) === 'CLOSE_WAIT' ? true : undefined));
    shutdown(p.server, 'write');
    await waitFor('the client fd in CLOSE', () => (tcpState(p!.client) === 'CLOSE' ? true : undefined));
    reset(p.client);
    expect((await lc.until('TIME_WAIT', { timeout: 5000 })).source).toBe('diag');
    expect(findSocket(tuple)).toMatchObject({ state: 'TIME_WAIT' });
    expect(lc.history.map((h) => h.event)).not.toContain('rst-sent');
    expect(lc.state).toBe('TIME_WAIT');
  });

  it("a FIN sent with finwait's shutdown() and answered at once is not taken for an RST (20 connections)", async () => {
    const wrong: string[] = [];
    for (let i = 0; i < 20; i++) {
      const q = await pair();
      try {
        const lc = watch(q.client);
        q.client.resume();
        shutdown(q.client, 'write'); // the server's Node answers 'end' with its own FIN at once
        await lc.until('TIME_WAIT', { timeout: 5000 });
        if (lc.history.some((h) => h.event === 'rst-received')) wrong.push(lc.history.map((h) => `${h.state}/${h.event}`).join(' '));
      } finally {
        await q.close();
      }
    }
    expect(wrong).toEqual([]);
  });

  it('an orphan in FIN_WAIT1 that the peer resets is reset-received, not a TIME_WAIT inferred', async () => {
    p = await pair({ server: { pauseOnConnect: true } });
    const lc = watch(p.client);
    p.client.on('error', () => {});
    // More than the paused peer's window takes: our FIN waits behind unsent bytes in FIN_WAIT1.
    p.client.write(Buffer.alloc(8 * 1024 * 1024));
    p.client.end();
    await waitFor('bytes unsent in the kernel', () => (tcpState(p!.client) === 'ESTABLISHED' && p!.server.readableLength === 0 ? true : undefined));
    const tuple = socketTuple(p.client)!;
    p.client.destroy();
    await lc.until('FIN_WAIT1', { timeout: 5000 });
    await waitFor('the orphan in FIN_WAIT1', () => (findSocket(tuple)?.state === 'FIN_WAIT1' && findSocket(tuple)?.inode === 0 ? true : undefined));
    p.server.destroy(); // unread bytes: the server's kernel answers with RST
    const result = await lc.done;
    expect(result).toMatchObject({ outcome: 'reset-received' });
    expect(states(lc)).not.toContain('TIME_WAIT');
  });

  it('an orphaned FIN_WAIT2 whose TCP_LINGER2 runs out: timed-out, no TIME_WAIT inferred', async () => {
    p = await pair({ server: { allowHalfOpen: true }, client: { allowHalfOpen: true } });
    const closer = watch(p.client);
    const peer = watch(p.server);
    p.server.resume();
    expect(setLinger2(p.client, 1)).toBe(1);
    await closeWrite(p.client);
    await peer.until('CLOSE_WAIT');
    p.client.destroy(); // the fd closes: an orphan in FIN_WAIT2 with a 1 s timer; the peer never closes
    const result = await closer.done;
    expect(result.outcome).toBe('timed-out');
    expect(states(closer)).not.toContain('TIME_WAIT');
    expect(result.history.at(-1)).toMatchObject({ state: 'CLOSED', event: 'fin-wait2-timeout', source: 'diag' });
    expect(peer.state).toBe('CLOSE_WAIT');
  });

  it("follows a socket whose handle another library hooked first: Node's events, and the connection named at once", async () => {
    p = await pair({ server: { allowHalfOpen: true } });
    // Own close and shutdown methods on both handles, as another library's hooks would be.
    for (const socket of [p.client, p.server]) {
      const handle = (socket as unknown as { _handle: Record<string, (...args: unknown[]) => unknown> })._handle;
      for (const name of ['close', 'shutdown']) {
        const original = handle[name]!;
        handle[name] = function (this: unknown, ...args: unknown[]) {
          return original.apply(this, args);
        };
      }
    }
    const active = watch(p.client);
    const passive = watch(p.server);
    expect(watcherOf(active)!.cookie).toMatch(/^[0-9a-f]{16}$/);
    expect(watcherOf(passive)!.cookie).toMatch(/^[0-9a-f]{16}$/);
    p.client.resume();
    p.server.resume();
    p.client.end();
    await passive.until('CLOSE_WAIT', { timeout: 5000 });
    p.server.end();
    await active.until('TIME_WAIT', { timeout: 5000 });
    const result = await passive.done;
    expect(result).toMatchObject({ outcome: 'graceful', role: 'passive', anomalies: [] });
    expect(result.history.at(-1)!.state).toBe('CLOSED');
    expect(active.anomalies).toEqual([]);
  });

  it('follows both ends of a TLS connection (hooks on the TLS handle): close_notify and FIN, TIME_WAIT from sock_diag', async () => {
    const fixtures = path.join(__dirname, '..', 'fixtures');
    const ca = fs.readFileSync(path.join(fixtures, 'cert.pem'));
    const server = tls.createServer({ key: fs.readFileSync(path.join(fixtures, 'key.pem')), cert: ca, allowHalfOpen: true });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const accepted = once(server, 'secureConnection') as Promise<[tls.TLSSocket]>;
    const client = tls.connect({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', ca, servername: 'localhost' });
    try {
      const active = watch(client); // while connecting
      await once(client, 'secureConnect');
      const [peer] = await accepted;
      const passive = watch(peer);
      const tuple = socketTuple(client)!;
      client.resume();
      peer.resume();
      peer.on('end', () => peer.end());
      client.end();
      const result = await passive.done;
      // Seen or inferred, every state of each path; an fd's CLOSE is there when a read caught it.
      const steps = (lc: { history: readonly { state: string }[] }) => states(lc).filter((s) => s !== 'CLOSE');
      expect(result).toMatchObject({ outcome: 'graceful', role: 'passive', anomalies: [] });
      expect(steps(result)).toEqual(['ESTABLISHED', 'CLOSE_WAIT', 'LAST_ACK', 'CLOSED']);
      const timeWait = await active.until('TIME_WAIT', { timeout: 5000 });
      expect(timeWait.source).toBe('diag');
      expect(findSocket(tuple)).toMatchObject({ state: 'TIME_WAIT', cookie: watcherOf(active)!.cookie });
      expect(steps(active)).toEqual(['ESTABLISHED', 'FIN_WAIT1', 'FIN_WAIT2', 'TIME_WAIT']);
      expect(active.anomalies).toEqual([]);
    } finally {
      client.destroy();
      server.close();
    }
  });

  it("a FIN sent with finwait's shutdown() is seen like Node's end(): named first, then followed to TIME_WAIT", async () => {
    p = await pair({ server: { allowHalfOpen: true } });
    const lc = watch(p.client);
    const tuple = socketTuple(p.client)!;
    p.client.resume();
    p.server.resume();
    expect(watcherOf(lc)!.cookie).toBeUndefined();
    shutdown(p.client, 'write');
    // Named before shutdown(2) ran (finwait:socket:fin), not by a later poll.
    const cookie = watcherOf(lc)!.cookie;
    expect(cookie).toMatch(/^[0-9a-f]{16}$/);
    await lc.until('FIN_WAIT2', { timeout: 5000 });
    p.server.end();
    await once(p.server, 'close');
    p.client.destroy();
    const timeWait = await lc.until('TIME_WAIT', { timeout: 5000 });
    expect(timeWait.source).toBe('diag');
    expect(findSocket(tuple)).toMatchObject({ state: 'TIME_WAIT', cookie });
    expect(lc.anomalies).toEqual([]);
  });

  it('a new connection on the 4-tuple of a watched TIME_WAIT is not taken for it: lookups ask for its cookie', async () => {
    const listener = net.createServer().listen(0, '127.0.0.1');
    await once(listener, 'listening');
    const port = (listener.address() as net.AddressInfo).port;
    const sockets: net.Socket[] = [];
    try {
      // A client address of its own: ports of 127.0.0.1 may be held by other TIME_WAIT sockets.
      const localAddress = `127.${1 + Math.floor(Math.random() * 250)}.${Math.floor(Math.random() * 256)}.${2 + Math.floor(Math.random() * 250)}`;
      const accepted = once(listener, 'connection') as Promise<[net.Socket]>;
      const first = net.connect({ port, host: '127.0.0.1', localAddress });
      sockets.push(first);
      await once(first, 'connect');
      const [server] = await accepted;
      sockets.push(server);
      const lc = watch(server);
      const tuple = socketTuple(server)!;
      // The server closes first, so its end goes to TIME_WAIT; the client answers with its FIN.
      first.resume();
      server.resume();
      const firstClosed = once(first, 'close');
      server.end();
      await lc.until('TIME_WAIT', { timeout: 5000 });
      await firstClosed;
      // The watcher read the cookie before TIME_WAIT began (when the FIN was about to go out): the
      // TIME_WAIT socket has the same one.
      const cookie = watcherOf(lc)?.cookie;
      expect(cookie).toMatch(/^[0-9a-f]{16}$/);
      expect(findSocket(tuple)).toMatchObject({ state: 'TIME_WAIT', cookie });
      // A SYN from the same client port ends the TIME_WAIT (RFC 1122 4.2.2.13) and takes over its
      // 4-tuple: a lookup by the 4-tuple alone now finds the new connection.
      const again = once(listener, 'connection') as Promise<[net.Socket]>;
      const second = net.connect({ port, host: '127.0.0.1', localAddress, localPort: tuple.remote.port });
      sockets.push(second);
      await once(second, 'connect');
      sockets.push(...(await again));
      expect(findSocket(tuple)).toMatchObject({ state: 'ESTABLISHED' });
      expect(findSocket(tuple)?.cookie).not.toBe(cookie);
      expect(findSocket({ ...tuple, cookie })).toBeUndefined();
      // The watcher would look at its TIME_WAIT again when the 60 s timer runs out: look now.
      expect(watcherOf(lc)!.due - performance.now()).toBeGreaterThan(50_000);
      watcherOf(lc)!.lookNow();
      expect(lc.anomalies).toEqual([]);
      expect(lc.state).toBe('CLOSED');
      expect(await lc.done).toMatchObject({ outcome: 'graceful', role: 'active' });
    } finally {
      for (const s of sockets) s.destroy();
      listener.close();
    }
  });

  it('follows a connection watched from before it connects', async () => {
    // The peer stays half-open, so our FIN_WAIT2 lasts (an auto-ending peer makes a 3-segment close).
    const server = net.createServer({ allowHalfOpen: true }, (s) => s.resume()).listen(0, '127.0.0.1');
    await once(server, 'listening');
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    const lc = watch(client);
    expect(lc.state).toBeUndefined();
    const established = await lc.until('ESTABLISHED', { timeout: 5000 });
    expect(established.source).toMatch(/^(kernel|event)$/); // polled, or Node's 'connect'
    client.end();
    await lc.until('FIN_WAIT2', { timeout: 5000 });
    expect(lc.history.map((h) => h.state)).toEqual(['ESTABLISHED', 'FIN_WAIT1', 'FIN_WAIT2']);
    client.destroy();
    server.close();
  });

  it("emits 'transition' and publishes on diagnostics_channel finwait:socket:state", async () => {
    p = await pair();
    const published: Transition[] = [];
    const onMessage = (m: unknown) => published.push(m as Transition);
    diagnosticsChannel.subscribe(STATE_CHANNEL, onMessage);
    try {
      const lc = watch(p.client);
      const emitted: Transition[] = [];
      lc.on('transition', (t: Transition) => emitted.push(t));
      p.server.on('error', () => {});
      reset(p.client);
      await lc.done;
      expect(emitted.length).toBeGreaterThan(0);
      expect(emitted.at(-1)).toMatchObject({ to: 'CLOSED' });
      // The state watch() read at once is where watching began, no transition: the first leaves it.
      expect(lc.history[0]).toMatchObject({ state: 'ESTABLISHED', source: 'kernel' });
      expect(emitted[0]).toMatchObject({ from: 'ESTABLISHED' });
      const mine = published.filter((m) => (m as unknown as { lifecycle: unknown }).lifecycle === lc);
      expect(mine).toEqual(emitted.map((t) => expect.objectContaining(t)));
    } finally {
      diagnosticsChannel.unsubscribe(STATE_CHANNEL, onMessage);
    }
  });

  it('until() rejects on timeout and when the connection ended without the state', async () => {
    p = await pair();
    const lc = watch(p.client);
    await expect(lc.until('FIN_WAIT2', { timeout: 20 })).rejects.toMatchObject({ code: 'ERR_FINWAIT_TIMEOUT' });
    const never = lc.until('CLOSING');
    p.server.on('error', () => {});
    reset(p.client);
    await expect(never).rejects.toMatchObject({ code: 'ERR_FINWAIT_STATE_NOT_REACHED' });
    await expect(lc.until('ESTABLISHED')).resolves.toMatchObject({ state: 'ESTABLISHED' });
    // Asked after the end: at once, not never.
    await lc.done;
    await expect(lc.until('TIME_WAIT')).rejects.toMatchObject({ code: 'ERR_FINWAIT_STATE_NOT_REACHED' });
  });

  it('until() refuses what it could never settle on: a misspelt state, a timeout setTimeout cannot take', async () => {
    p = await pair();
    const lc = watch(p.client);
    await expect(lc.until('TIME-WAIT' as never)).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
    await expect(lc.until(5 as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    await expect(lc.until('FIN_WAIT2', null as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    await expect(lc.until('FIN_WAIT2', { timeout: NaN })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    for (const timeout of [-1, Infinity, 2 ** 31]) {
      await expect(lc.until('FIN_WAIT2', { timeout })).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
    }
  });

  it('refuses what it cannot watch, with codes', async () => {
    expect(() => watch(3 as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    p = await pair();
    p.client.destroy();
    expect(() => watch(p!.client)).toThrow(expect.objectContaining({ code: 'ERR_SOCKET_CLOSED' }));
    const lc = watch(p.server);
    expect(watch(p.server)).toBe(lc);
  });

  it('refuses a destroyed socket with ERR_SOCKET_CLOSED, saying to watch before the close', async () => {
    p = await pair();
    p.client.destroy();
    expect(() => watch(p!.client)).toThrow(expect.objectContaining({ code: 'ERR_SOCKET_CLOSED', message: expect.stringContaining('Call watch() before the close') }));
  });

  it('refuses a Unix socket with ENOTSUP, as the state calls do', async () => {
    const dir = await import('node:fs').then((fs) => fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-')));
    const server = net.createServer().listen(path.join(dir, 's'));
    await once(server, 'listening');
    // Still connecting (no fd yet): refused by its handle's kind.
    const client = net.connect(path.join(dir, 's'));
    try {
      expect(() => watch(client)).toThrow(expect.objectContaining({ code: 'ENOTSUP' }));
      await once(client, 'connect');
      expect(() => watch(client)).toThrow(expect.objectContaining({ code: 'ENOTSUP' }));
    } finally {
      client.destroy();
      await new Promise((resolve) => server.close(resolve));
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  itLab("follows a lab host's socket in the host's own network namespace: TIME_WAIT from its sock_diag", async (lab) => {
    const server = await lab.b.listen(80, { allowHalfOpen: true });
    const accepted = once(server, 'connection') as Promise<[net.Socket]>;
    const a = await lab.a.connect(80);
    const [b] = await accepted;
    const active = watch(a);
    const passive = watch(b);
    const tuple = socketTuple(a)!;
    b.resume();
    a.resume();
    b.on('end', () => b.end());
    a.end();
    await passive.done;
    // Named when its FIN was about to go out, in the host's namespace.
    expect(watcherOf(active)).toMatchObject({ namespaced: true });
    expect(watcherOf(active)!.cookie).toMatch(/^[0-9a-f]{16}$/);
    const timeWait = await active.until('TIME_WAIT', { timeout: 5000 });
    // Only the host's namespace has it: this process's own sock_diag does not.
    expect(timeWait.source).toBe('diag');
    expect(findSocket(tuple)).toBeUndefined();
    expect(lab.a.sockets({ states: ['TIME_WAIT'] }).map((e) => e.cookie)).toContain(watcherOf(active)!.cookie);
    expect(active.state).toBe('TIME_WAIT');
    expect(active.anomalies).toEqual([]);
    a.destroy();
    b.destroy();
  });

  itLab('names a passive end only when Node closes it before the last ACK, and follows that LAST_ACK orphan to CLOSED', async (lab) => {
    const server = await lab.b.listen(80, { allowHalfOpen: true, pauseOnConnect: true });
    const accepted = once(server, 'connection') as Promise<[net.Socket]>;
    const a = await lab.a.connect(80, { allowHalfOpen: true });
    const [b] = await accepted;
    const active = watch(a);
    const passive = watch(b);
    a.resume();
    // B does not read (paused), so Node sees no 'end' and does not destroy it once its own end()
    // is done: its fd stays open in LAST_ACK until the test closes it. The poller sees CLOSE_WAIT.
    a.end();
    await passive.until('CLOSE_WAIT', { timeout: 2000 });
    // A's ACK of B's FIN is held on the wire: B stays in LAST_ACK.
    lab.wire.hold((s) => s.from === 'a' && isPureAck(s));
    b.end();
    await passive.until('LAST_ACK', { timeout: 2000 });
    // Its peer closed first: no TIME_WAIT can follow, so it was not named at its FIN.
    expect(watcherOf(passive)!.cookie).toBeUndefined();
    b.destroy();
    // Closed in LAST_ACK, the connection lives on without an fd: named at the close, and looked
    // up in B's namespace.
    expect(watcherOf(passive)).toMatchObject({ namespaced: true, cookie: expect.stringMatching(/^[0-9a-f]{16}$/) });
    const orphan = lab.b.sockets({ states: ['LAST_ACK'] });
    expect(orphan.map((e) => e.cookie)).toContain(watcherOf(passive)!.cookie);
    expect(orphan[0]!.inode).toBe(0);
    lab.wire.pass();
    lab.wire.release();
    const result = await passive.done;
    expect(result).toMatchObject({ outcome: 'graceful', role: 'passive', anomalies: [] });
    expect(result.history.map((h) => h.state)).toEqual(['ESTABLISHED', 'CLOSE_WAIT', 'LAST_ACK', 'CLOSED']);
    expect(result.history.at(-1)!.source).toBe('diag');
    expect(lab.b.sockets({ states: ['LAST_ACK'] })).toEqual([]);
    // The active end went on to TIME_WAIT, seen in A's namespace.
    expect(await active.until('TIME_WAIT', { timeout: 5000 })).toMatchObject({ source: 'diag' });
    a.destroy();
  });

  it('never keeps the process alive on its own', async () => {
    const script = `
      const net = require('node:net');
      const { watch } = require(${JSON.stringify(path.join(__dirname, '..', '..', 'dist', 'index.js'))});
      const server = net.createServer({ allowHalfOpen: true }, (s) => s.resume()).listen(0, '127.0.0.1', () => {
        const c = net.connect(server.address().port, '127.0.0.1', () => {
          watch(c); // its TIME_WAIT would be followed for 60 s
          c.end(); server.close();
          setTimeout(() => { for (const s of [c]) s.destroy(); }, 5).unref();
          server.getConnections(() => {});
        });
        server.on('connection', (s) => s.on('end', () => s.end()));
      });`;
    const started = Date.now();
    await promisify(execFile)(process.execPath, ['-e', script], { timeout: 15_000 });
    expect(Date.now() - started).toBeLessThan(15_000);
  });
});
