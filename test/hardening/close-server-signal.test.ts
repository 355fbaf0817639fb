/**
 * closeServer({ signal }) with many connections: no MaxListenersExceededWarning (each connection's
 * close listened on the caller's signal), and an abort still resets every connection at once.
 */
import { expect, it } from 'vitest';
import net from 'node:net';
import { once } from 'node:events';
import { closeServer, trackConnections } from '../../src/index';

it('25 connections closing under one signal: no warning; the abort resets them all and says so', async () => {
  const warnings: Error[] = [];
  const onWarning = (warning: Error) => warnings.push(warning);
  process.on('warning', onWarning);
  const server = net.createServer({ allowHalfOpen: true });
  trackConnections(server);
  const accepted: net.Socket[] = [];
  // 4 MiB to a client that reads nothing: the FIN queued behind it cannot be acknowledged, so
  // every close lingers until the abort.
  server.on('connection', (socket) => {
    accepted.push(socket);
    socket.write(Buffer.alloc(4 * 1024 * 1024));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address() as net.AddressInfo;
  const clients: net.Socket[] = [];
  try {
    for (let i = 0; i < 25; i++) {
      const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
      client.on('error', () => {});
      clients.push(client);
      await once(client, 'connect');
      client.pause();
    }
    while (accepted.length < 25) await new Promise((resolve) => setTimeout(resolve, 1));
    const controller = new AbortController();
    // No drain window: a net connection whose application takes no signal gets our FIN at once
    // (otherwise it waits until nothing has gone either way for the window, and here the write
    // never drains).
    const closing = closeServer(server, { timeout: 10_000, drainWindow: 0, signal: controller.signal });
    // Every close has begun: end() was called on each connection.
    while (!accepted.every((s) => s.writableEnded)) await new Promise((resolve) => setTimeout(resolve, 1));
    controller.abort();
    const report = await closing;
    expect(accepted.every((s) => s.destroyed)).toBe(true);
    expect(report.totals).toMatchObject({ graceful: 0, resetSent: 25, resetReceived: 0, destroyed: 0, total: 25 });
    expect(new Set(report.connections.map((c) => c.reason))).toEqual(new Set(['aborted']));
    await new Promise((resolve) => setImmediate(resolve));
    expect(warnings.map((w) => w.name)).not.toContain('MaxListenersExceededWarning');
  } finally {
    process.off('warning', onWarning);
    for (const c of clients) c.destroy();
    server.close();
  }
});
