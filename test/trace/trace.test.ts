/**
 * traceConnections() on real loopback connections, with the source every user has: the sock_diag
 * destroy multicast of this namespace and sampled states. What it reports is what it saw: a
 * TIME_WAIT after the end makes it graceful, and what it cannot see stays 'unknown'.
 */
import { once } from 'node:events';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { tcpState } from '../../src/ops';
import { RECONCILE, traceConnections, type ConnectionTrace } from '../../src/trace/trace';
import type { ConnectionEnd } from '../../src/trace/ends';
import { sockets } from '../../src/diag';
import { pair, waitFor, type Pair } from '../helpers';
import { ownTrace } from './helpers';

let trace: ConnectionTrace | undefined;
afterEach(() => {
  trace?.close();
  trace = undefined;
});

function start(): ConnectionEnd[] {
  const ends: ConnectionEnd[] = [];
  trace = traceConnections((end) => ends.push(end), { source: 'destroy-multicast', interval: 20 });
  return ends;
}

/** The ends of the connection between ports a and b, once both came. */
function both(ends: ConnectionEnd[], a: number, b: number): Promise<[ConnectionEnd, ConnectionEnd]> {
  return waitFor('both ends of the connection', () => {
    const mine = ends.filter((e) => (e.local.port === a && e.remote.port === b) || (e.local.port === b && e.remote.port === a));
    const ea = mine.find((e) => e.local.port === a);
    const eb = mine.find((e) => e.local.port === b);
    return ea && eb ? ([ea, eb] as [ConnectionEnd, ConnectionEnd]) : undefined;
  });
}

/** Until two more samples were taken: everything open now has been seen in its state. */
async function sampled(): Promise<void> {
  const from = trace!.samples;
  await waitFor('two samples', () => (trace!.samples >= from + 2 ? true : undefined));
}

/** The cookies of a pair's two sockets, as sock_diag names them. */
function cookies(p: Pair): [string, string] {
  const [c] = sockets({ localPort: p.client.localPort!, remotePort: p.server.localPort! });
  const [s] = sockets({ localPort: p.server.localPort!, remotePort: p.client.localPort! });
  return [c!.cookie, s!.cookie];
}

describe('traceConnections(): the destroy multicast source (no privilege)', () => {
  it('a graceful close: the end that closed first is graceful through TIME_WAIT; the other is graceful only if its LAST_ACK was seen', async () => {
    const ends = start();
    const p = await pair();
    const c = p.client.localPort!;
    const s = p.server.localPort!;
    const payload = Buffer.alloc(10_000, 1);
    p.server.resume();
    p.server.on('end', () => p.server.end());
    p.client.resume();
    await sampled();
    p.client.end(payload);
    const [client, server] = await both(ends, c, s);
    expect(client).toMatchObject({ outcome: 'graceful', closedFirst: 'local', source: 'destroy-multicast', pathSeen: 'sampled', family: 4 });
    expect(client.path[0]).toBe('ESTABLISHED');
    expect(client.path.at(-1)).toBe('TIME_WAIT');
    expect(client.counters!.bytesAcked).toBeGreaterThanOrEqual(payload.length);
    expect(client.counters!.bytesAcked).toBeLessThanOrEqual(payload.length + 2);
    expect(server.counters!.bytesReceived).toBeGreaterThanOrEqual(payload.length);
    // The passive end: never more than was seen.
    if (server.path.includes('LAST_ACK')) expect(server.outcome).toBe('graceful');
    else expect(server.outcome).toBe('unknown');
    expect(server.path.at(-1)).toBe('CLOSE');
    // The owner of each socket was found in /proc (this process).
    expect(client.pid).toBe(process.pid);
    await p.close();
  });

  it('an RST: neither end is called graceful, and the error stays unknown to this source', async () => {
    const ends = start();
    const p = await pair();
    const c = p.client.localPort!;
    const s = p.server.localPort!;
    p.server.on('error', () => {});
    const [cc, sc] = cookies(p);
    await sampled();
    p.client.resetAndDestroy();
    // The kernel clears the reset socket's remote address: the sample kept it.
    const [client, server] = await both(ends, c, s);
    expect([client.cookie, server.cookie]).toEqual([cc, sc]);
    for (const end of [client, server]) {
      expect(end.outcome).toBe('unknown');
      expect(end.path).toEqual(['ESTABLISHED', 'CLOSE']);
      expect(end.error).toBeUndefined();
    }
    await p.close();
  });

  it('short connections that no sample saw still end, with their 4-tuple and final counters', async () => {
    const ends = start();
    const server = net.createServer((socket) => socket.end('bye')).listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as net.AddressInfo).port;
    const clients = await Promise.all(
      Array.from({ length: 5 }, async () => {
        const socket = net.connect(port, '127.0.0.1');
        await once(socket, 'connect');
        const local = socket.localPort!;
        socket.resume();
        await once(socket, 'end');
        socket.end();
        await once(socket, 'close');
        return local;
      }),
    );
    for (const local of clients) {
      const [client, accepted] = await both(ends, local, port);
      expect(accepted.closedFirst === 'local' || accepted.outcome === 'unknown').toBe(true);
      expect(accepted.outcome).not.toBe('reset-sent');
      expect(client.counters!.bytesReceived).toBeGreaterThanOrEqual(3);
    }
    server.close();
  });

  it('a listener no sample saw is no connection: its destroy message (remote cleared, no receive MSS ever) gives no end', async () => {
    const ends: ConnectionEnd[] = [];
    trace = traceConnections((end) => ends.push(end), { source: 'destroy-multicast', interval: 60_000 });
    const listener = net.createServer().listen(0, '127.0.0.1');
    await once(listener, 'listening');
    const port = (listener.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => listener.close(() => resolve()));
    // A marker after it: the destroy messages come in order, so once the marker's end came, the listener's was read.
    const marker = await pair();
    const markerPort = marker.client.localPort!;
    marker.server.resetAndDestroy();
    marker.client.on('error', () => {});
    await waitFor("the marker's end", () => ends.find((e) => e.local.port === markerPort));
    expect(ends.filter((e) => e.local.port === port)).toEqual([]);
    await marker.close();
  });

  it("after a loss, a connection missing from the kernel's tables whose end has not come yet is forgotten only if still missing at the next look (its destroy message comes when the socket is freed)", async () => {
    const own = ownTrace({ source: 'destroy-multicast', interval: 20 });
    const { trace: t, ends } = own;
    trace = t;
    /**
     * A connection whose server, paused, does not read the client's RST: its fd stays open in
     * CLOSE, out of the kernel's tables, its socket not freed, so no destroy message yet.
     */
    const heldReset = async (): Promise<Pair> => {
      const endsBefore = ends.length;
      const p = await pair({ server: { pauseOnConnect: true } });
      try {
        p.server.on('error', () => {});
        own.follow(p.client, p.server);
        await waitFor('both ends sampled', () => (t.following === 2 ? true : undefined));
        p.client.resetAndDestroy();
        await waitFor("the client's end (its socket freed)", () => (ends.length === endsBefore + 1 ? true : undefined));
        await waitFor('the RST at the server', () => (tcpState(p.server) === 'CLOSE' ? true : undefined));
        return p;
      } catch (error) {
        await p.close();
        throw error;
      }
    };
    const p = await heldReset();
    try {
      const { client, server } = p;
      expect(sockets({ states: ['ESTABLISHED'] }).some((e) => e.local.port === server.localPort && e.remote.port === client.localPort)).toBe(false);
      // First look: missing, not forgotten.
      expect(t[RECONCILE]()).toBe(0);
      expect(t.following).toBe(1);
      // Its fd closed, the socket freed: its end comes, with the state a sample saw it in.
      server.destroy();
      await waitFor("the server's end", () => (ends.length === 2 ? true : undefined));
      expect(own.forgotten()).toBe(0);
      expect(t.following).toBe(0);
      expect(ends.map((e) => e.path[0])).toEqual(['ESTABLISHED', 'ESTABLISHED']);
    } finally {
      await p.close();
    }
    // A connection still missing at the next look is forgotten (its end lost, or held past it).
    const held = await heldReset();
    try {
      expect(t[RECONCILE]()).toBe(0);
      expect(t[RECONCILE]()).toBe(1);
      expect(own.forgotten()).toBe(1);
      expect(t.following).toBe(0);
      // Held past the second look, it was not lost after all: its end, when its socket is freed, is
      // reported once, with the path it was followed through before it was forgotten.
      const heldPort = held.server.localPort;
      held.server.destroy();
      await waitFor("the held server's end", () => (ends.length === 4 ? true : undefined));
      const late = ends[3];
      expect(late.local.port).toBe(heldPort);
      expect(late.path).toEqual(['ESTABLISHED', 'CLOSE']);
      expect(late.startSeen).toBe(false);
      expect(t.following).toBe(0);
    } finally {
      await held.close();
    }
  });

  it('bad options are coded errors; close() is idempotent; the trace can be unref()ed', () => {
    expect(() => traceConnections(undefined as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => traceConnections(() => {}, { source: 'ebpf' as never })).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => traceConnections(() => {}, { interval: 5 })).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => traceConnections(() => {}, { interval: Number.NaN })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => traceConnections(() => {}, { owners: 1 as never })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    const t = traceConnections(() => {}, { source: 'destroy-multicast' });
    // The documented members and nothing of the package's own (metrics' look-up is under a symbol).
    expect(Object.keys(t).sort()).toEqual(['close', 'following', 'lost', 'ref', 'samples', 'source', 'unref']);
    expect(t.unref()).toBe(t);
    t.close();
    t.close();
    expect(t.following).toBe(0);
  });
});
