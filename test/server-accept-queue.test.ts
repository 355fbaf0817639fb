/**
 * The accept-queue drain under a steady stream of new connections: closeServer() takes in what
 * waits in the kernel's accept queue and closes the listener as soon as the queue is empty, not
 * after a fixed second of accepting each new arrival only to close it; and no client waiting in
 * the queue is reset when the listener closes.
 */
import { describe, expect, it } from 'vitest';
import net from 'node:net';
import { once } from 'node:events';
import { spawn } from 'node:child_process';
import { closeServer } from '../src/index';
import { waitFor } from './helpers';

/** A client process opening a new connection every 5 ms (a steady stream, not a flood); counts how each ended. */
const clientScript = `
  const net = require('node:net');
  const port = Number(process.argv[1]);
  const ends = {};
  let opened = 0;
  let open = 0;
  let refused = false;
  const timer = setInterval(() => {
    if (refused) return;
    const s = net.connect(port, '127.0.0.1');
    open++;
    let connected = false;
    s.on('connect', () => { connected = true; if (++opened === 100) process.send('flowing'); });
    s.on('end', () => done('fin'));
    s.on('error', (e) => done(connected ? 'connected-then-' + e.code : e.code));
    s.resume();
    let counted = false;
    function done(how) {
      if (counted) return;
      counted = true;
      open--;
      ends[how] = (ends[how] || 0) + 1;
      s.destroy();
      if (how === 'ECONNREFUSED') refused = true;
      if (refused && open === 0) { clearInterval(timer); process.send(ends, () => process.exit(0)); }
    }
  }, 5);
`;

describe('closeServer, accept-queue drain', () => {
  it('under a steady stream of new connections (one every 5 ms): the listener closes at the first empty queue, no connected client is reset', async () => {
    const server = net.createServer((socket) => socket.end('bye')); // a stream of short connections
    server.listen({ port: 0, host: '127.0.0.1', backlog: 511 });
    await once(server, 'listening');
    const { port } = server.address() as net.AddressInfo;
    const child = spawn(process.execPath, ['-e', clientScript, String(port)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const messages: unknown[] = [];
    child.on('message', (m) => messages.push(m));
    try {
      await waitFor('connections flowing', () => (messages.includes('flowing') ? true : undefined), 10_000);
      const report = await closeServer(server, { timeout: 5000, drainWindow: 3000 });
      const ends = (await waitFor('the client done', () => messages.find((m) => typeof m === 'object'), 10_000)) as Record<string, number>;
      expect(server.listening).toBe(false);
      // Not a fixed second (nor the drain window) of accepting: the listener closed at the first empty queue.
      expect(report.duration).toBeLessThan(900);
      expect(report.acceptedFromQueue).toBeLessThan(report.duration / 5 + 10);
      // Every connection that got in ended with our FIN; the others were refused (never connected),
      // except at most the one whose handshake was under way in the instant the listener closed
      // (the kernel drops a listener's half-open connections; their client then gets RST, before
      // or after its 'connect' event, depending on when the client's loop saw the connect).
      expect(Object.keys(ends).filter((k) => !['fin', 'ECONNREFUSED', 'connected-then-ECONNRESET', 'ECONNRESET'].includes(k)), JSON.stringify(ends)).toEqual([]);
      expect((ends['connected-then-ECONNRESET'] ?? 0) + (ends.ECONNRESET ?? 0), JSON.stringify(ends)).toBeLessThanOrEqual(1);
      expect(ends.ECONNREFUSED).toBeGreaterThan(0);
      expect(report.totals.resetSent + report.totals.resetReceived).toBe(0);
    } finally {
      child.kill();
    }
  });
});
