/**
 * serverMetrics() on real loopback connections: each connection a server accepts is counted once
 * by the outcome the kernel's account of its end gives, under its label, and published on
 * END_CHANNEL. The source every user has (the destroy multicast) is used here; the BPF source's
 * exact outcomes are tested with the trace (test/trace/bpf-trace.test.ts).
 */
import dc from 'node:diagnostics_channel';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { END_CHANNEL, queues, serverMetrics, tcpState, type ConnectionEndMessage, type ServerMetrics } from '../src/index';
import { END_WAIT_MS, sweepMetrics } from '../src/metrics';
import { waitFor } from './helpers';

const opened: { metrics?: ServerMetrics; server?: net.Server }[] = [];
afterEach(() => {
  for (const o of opened.splice(0)) {
    o.metrics?.close();
    o.server?.close();
  }
});

async function listen(server: net.Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as net.AddressInfo).port;
}

function total(m: ServerMetrics): number {
  return Object.values(m.counts).reduce((a, b) => a + b, 0);
}

describe('serverMetrics()', () => {
  it('counts every connection of a server once, when the kernel frees it, under the listener, and publishes each end', async () => {
    const server = net.createServer((socket) => socket.end('bye'));
    const port = await listen(server);
    const metrics = serverMetrics(server, { source: 'destroy-multicast', interval: 20 });
    opened.push({ metrics, server });
    const published: ConnectionEndMessage[] = [];
    const onMessage = (m: unknown): void => void published.push(m as ConnectionEndMessage);
    dc.subscribe(END_CHANNEL, onMessage);
    try {
      for (let i = 0; i < 5; i++) {
        const c = net.connect(port, '127.0.0.1');
        c.resume();
        await once(c, 'close');
      }
      await waitFor('five ends counted', () => (total(metrics) === 5 ? true : undefined));
      expect(metrics.pending).toBe(0);
      // The server closed first, and Node read the client's FIN after: each went into TIME_WAIT, told without a look.
      expect(metrics.counts.graceful).toBe(5);
      expect([...metrics.byLabel.keys()]).toEqual([`127.0.0.1:${port}`]);
      expect(published).toHaveLength(5);
      expect(published[0]).toMatchObject({ server, label: `127.0.0.1:${port}`, outcome: 'graceful', end: { local: { port } } });
      // Node read each client's FIN: no sock_diag look-up was needed.
      for (const m of published) expect(m.because).toMatch(/peer's FIN was read .*not looked up/);
      expect(metrics.source).toBe('destroy-multicast');
    } finally {
      dc.unsubscribe(END_CHANNEL, onMessage);
    }
  });

  it('labels by what the application says (here the last route), asked when Node closes the socket', async () => {
    const routes = new WeakMap<net.Socket, string>();
    const server = http.createServer((req, res) => {
      routes.set(req.socket, req.url!);
      res.setHeader('connection', 'close');
      res.end('ok');
    });
    const port = await listen(server);
    const metrics = serverMetrics(server, { source: 'destroy-multicast', interval: 20, label: (socket) => routes.get(socket) ?? 'none' });
    opened.push({ metrics, server });
    for (const path of ['/a', '/b', '/a']) {
      await new Promise<void>((resolve, reject) => {
        http.get({ port, host: '127.0.0.1', path, agent: false }, (res) => res.resume().on('end', resolve)).on('error', reject);
      });
    }
    await waitFor('three ends counted', () => (total(metrics) === 3 ? true : undefined));
    const byLabel = Object.fromEntries([...metrics.byLabel].map(([label, counts]) => [label, Object.values(counts).reduce((a, b) => a + b, 0)]));
    expect(byLabel).toEqual({ '/a': 2, '/b': 1 });
  });

  it('a client that closes first: graceful from what Node saw (all read, then the FIN) and the kernel freeing it acknowledged', async () => {
    const server = net.createServer((socket) => {
      socket.resume();
      socket.on('end', () => socket.end());
    });
    const port = await listen(server);
    const metrics = serverMetrics(server, { source: 'destroy-multicast', interval: 20 });
    opened.push({ metrics, server });
    const published: ConnectionEndMessage[] = [];
    const onMessage = (m: unknown): void => void published.push(m as ConnectionEndMessage);
    dc.subscribe(END_CHANNEL, onMessage);
    try {
      const c = net.connect(port, '127.0.0.1');
      c.resume();
      c.end('request');
      await once(c, 'close');
      await waitFor('the end counted', () => (total(metrics) === 1 ? true : undefined));
      expect(metrics.counts.graceful).toBe(1);
      expect(published[0]!.because).toMatch(/the peer's FIN was read|the peer closed first|LAST_ACK/);
    } finally {
      dc.unsubscribe(END_CHANNEL, onMessage);
    }
  });

  it("an end Node did not see finish (its socket never read the peer's FIN) is looked up: the TIME_WAIT after it makes it graceful", async () => {
    let held: net.Socket | undefined;
    // Paused: the server's FIN goes out, the client's FIN comes and is never read by Node.
    const server = net.createServer({ pauseOnConnect: true }, (socket) => {
      held = socket;
      socket.end('bye');
    });
    const port = await listen(server);
    const metrics = serverMetrics(server, { source: 'destroy-multicast' });
    opened.push({ metrics, server });
    const published: ConnectionEndMessage[] = [];
    const onMessage = (m: unknown): void => void published.push(m as ConnectionEndMessage);
    dc.subscribe(END_CHANNEL, onMessage);
    try {
      const c = net.connect(port, '127.0.0.1');
      c.resume();
      await once(c, 'close');
      await waitFor('the server socket', () => held);
      // The client's FIN came in FIN_WAIT2: the kernel freed the socket into a TIME_WAIT.
      await waitFor('the TIME_WAIT', () => (tcpState(held!) === 'CLOSE' ? true : undefined));
      expect(held!.readableEnded).toBe(false);
      held!.destroy();
      await waitFor('the end counted', () => (total(metrics) === 1 ? true : undefined));
      expect(metrics.counts.graceful).toBe(1);
      expect(published[0]!.because).toMatch(/TIME_WAIT \(found by its 4-tuple\)/);
      expect(published[0]!.end.path.at(-1)).toBe('TIME_WAIT');
    } finally {
      dc.unsubscribe(END_CHANNEL, onMessage);
    }
  });

  it('a server listening on a Unix socket: its connections are not TCP, none is followed', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-metrics-'));
    const file = path.join(dir, 's.sock');
    const server = net.createServer((socket) => socket.end('bye'));
    server.listen(file);
    await once(server, 'listening');
    const metrics = serverMetrics(server, { source: 'destroy-multicast' });
    opened.push({ metrics, server });
    try {
      const accepted = once(server, 'connection');
      const c = net.connect(file);
      c.resume();
      await accepted;
      expect(metrics.pending).toBe(0);
      await once(c, 'close');
      expect(total(metrics)).toBe(0);
    } finally {
      server.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('an RST the client sends is never counted graceful; close() stops counting', async () => {
    const server = net.createServer((socket) => socket.on('error', () => {}));
    const port = await listen(server);
    const metrics = serverMetrics(server, { source: 'destroy-multicast', interval: 20 });
    opened.push({ metrics, server });
    const accepted = once(server, 'connection');
    const c = net.connect(port, '127.0.0.1');
    await once(c, 'connect');
    await accepted;
    c.resetAndDestroy();
    await waitFor('the end counted', () => (total(metrics) === 1 ? true : undefined));
    expect(metrics.counts.graceful).toBe(0);
    // Node saw the RST (ECONNRESET on the accepted socket): that names it.
    expect(metrics.counts['reset-received']).toBe(1);
    metrics.close();
    metrics.close();
    const d = net.connect(port, '127.0.0.1');
    d.resume();
    await once(d, 'connect');
    d.end();
    await once(d, 'close');
    expect(total(metrics)).toBe(1);
  });

  it('an end the kernel never reports (an orphan stuck behind a zero window) is counted unknown 10 minutes after Node closed it, and forgotten', async () => {
    let held: net.Socket | undefined;
    const server = net.createServer((socket) => {
      held = socket;
      socket.on('error', () => {});
      // More than the paused client's buffers take: the rest waits behind its zero window.
      socket.write(Buffer.alloc(16 * 1024 * 1024));
    });
    const port = await listen(server);
    const metrics = serverMetrics(server, { source: 'destroy-multicast' });
    opened.push({ metrics, server });
    const client = net.connect(port, '127.0.0.1');
    client.on('error', () => {});
    await once(client, 'connect');
    client.pause();
    await waitFor('the server socket', () => held);
    await waitFor('the zero window', () => (queues(held!).unsent > 0 ? true : undefined));
    const closed = once(held!, 'close');
    held!.destroy();
    await closed;
    // Node closed it; the kernel keeps the orphan (FIN_WAIT1, probing the window) for minutes.
    expect(metrics.pending).toBe(1);
    sweepMetrics(performance.now() + END_WAIT_MS - 1000);
    expect(metrics.pending).toBe(1);
    sweepMetrics(performance.now() + END_WAIT_MS + 1000);
    expect(metrics.pending).toBe(0);
    expect(metrics.counts.unknown).toBe(1);
    expect(metrics.byLabel.get(`127.0.0.1:${port}`)).toMatchObject({ unknown: 1 });
    client.destroy();
  });

  it('bad arguments are coded errors', () => {
    expect(() => serverMetrics({} as net.Server)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => serverMetrics(net.createServer(), { label: 'x' as never })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => serverMetrics(net.createServer(), null as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
  });
});
