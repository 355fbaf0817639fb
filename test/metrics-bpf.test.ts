/**
 * serverMetrics() on the BPF source (a file of its own: the first serverMetrics() of a process
 * chooses the trace's source): each outcome as the kernel saw it, with the program writing only
 * the ends.
 */
import { spawn } from 'node:child_process';
import dc from 'node:diagnostics_channel';
import { once } from 'node:events';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { describe, expect } from 'vitest';
import { END_CHANNEL, listenReusePort, queues, serverMetrics, tcpState, type ConnectionEndMessage } from '../src/index';
import { BPF, bpfAvailable, itNeeds, waitFor } from './helpers';

describe('serverMetrics() on BPF', () => {
  itNeeds(BPF, bpfAvailable, 'graceful, reset-sent and reset-received, each counted once, from the ends alone', async () => {
    let accepted = 0;
    let unreadEnd: net.Socket | undefined;
    const server = net.createServer({ pauseOnConnect: true }, (socket) => {
      socket.on('error', () => {});
      const n = accepted++;
      // The first is closed with its request unread (the kernel resets it), the second answered and
      // ended, the third held open (its client resets it), the fourth ended and never read (the
      // client's FIN, unread by Node, takes it into TIME_WAIT: looked up).
      if (n === 0) void waitFor('the request unread', () => (queues(socket).unread > 0 ? true : undefined)).then(() => socket.destroy());
      else if (n === 1) socket.resume().end('bye');
      else if (n === 2) socket.resume();
      else {
        unreadEnd = socket;
        socket.end('bye');
      }
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as net.AddressInfo).port;
    const metrics = serverMetrics(server, { source: 'bpf' });
    try {
      expect(metrics.source).toBe('bpf');
      const unread = net.connect(port, '127.0.0.1');
      unread.on('error', () => {});
      unread.write('request');
      // (once() would reject on the ECONNRESET this client gets.)
      await new Promise((resolve) => unread.on('close', resolve));
      const answered = net.connect(port, '127.0.0.1');
      answered.resume();
      await once(answered, 'close');
      // The client resets a connection the server holds.
      const reset = net.connect(port, '127.0.0.1');
      await once(reset, 'connect');
      await waitFor('the server took it', () => (metrics.pending === 1 ? true : undefined));
      reset.resetAndDestroy();
      await waitFor('three ends counted', () => (Object.values(metrics.counts).reduce((a, b) => a + b, 0) === 3 ? true : undefined));
      expect(metrics.counts).toMatchObject({ graceful: 1, 'reset-sent': 1, 'reset-received': 1, unknown: 0 });
      const published: ConnectionEndMessage[] = [];
      const onMessage = (m: unknown): void => void published.push(m as ConnectionEndMessage);
      dc.subscribe(END_CHANNEL, onMessage);
      try {
        const last = net.connect(port, '127.0.0.1');
        last.resume();
        await once(last, 'close');
        const socket = await waitFor('the fourth', () => unreadEnd);
        await waitFor('its TIME_WAIT', () => (tcpState(socket) === 'CLOSE' ? true : undefined));
        expect(socket.readableEnded).toBe(false);
        expect(metrics.pending).toBe(1);
        socket.destroy();
        await waitFor('four ends counted', () => (published.length === 1 ? true : undefined));
        expect(published[0]).toMatchObject({ outcome: 'graceful', end: { path: ['FIN_WAIT2', 'TIME_WAIT'] } });
        expect(published[0]!.because).toMatch(/found by its 4-tuple/);
      } finally {
        dc.unsubscribe(END_CHANNEL, onMessage);
      }
      expect(metrics.counts).toMatchObject({ graceful: 2, 'reset-sent': 1, 'reset-received': 1, unknown: 0 });
      expect(metrics.pending).toBe(0);
    } finally {
      metrics.close();
      server.close();
    }
  });

  itNeeds(
    BPF,
    bpfAvailable,
    'another process accepting on the same port (SO_REUSEPORT): its connections, whose ends the port filter lets through, are never counted',
    async () => {
      let ours = 0;
      const server = net.createServer((socket) => {
        ours++;
        socket.resume();
        socket.on('end', () => socket.end());
      });
      const { port } = await listenReusePort(server, { port: 0, host: '127.0.0.1' });
      const metrics = serverMetrics(server, { source: 'bpf' });
      // The other process: the same port, its own connections (one line each it accepts).
      const script = `
        const net = require('node:net');
        const { listenReusePort } = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.js'))});
        const server = net.createServer((socket) => {
          console.log('accepted');
          socket.resume();
          socket.on('end', () => socket.end());
        });
        listenReusePort(server, { port: ${port}, host: '127.0.0.1' }).then(() => console.log('listening'));`;
      const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
      let theirs = 0;
      const lines = readline.createInterface({ input: child.stdout! });
      const listening = new Promise<void>((resolve) => {
        lines.on('line', (line) => {
          if (line === 'listening') resolve();
          else if (line === 'accepted') theirs++;
        });
      });
      try {
        await Promise.race([listening, once(child, 'exit').then(() => Promise.reject(new Error('the other process exited')))]);
        // One connection at a time, each closed by the client first (the server's end is LAST_ACK
        // -> CLOSE), until each process took at least three and the last was ours: its end comes
        // after every other in the ring.
        let made = 0;
        let lastOurs = false;
        while ((theirs < 3 || ours < 3 || !lastOurs) && made < 400) {
          const before = ours;
          const client = net.connect(port, '127.0.0.1');
          client.resume();
          await once(client, 'connect');
          client.end();
          await once(client, 'close');
          made++;
          // The accept reached one of the two processes by now, or soon after (the other's line).
          await waitFor('the connection accepted', () => (ours + theirs === made ? true : undefined));
          lastOurs = ours > before;
        }
        expect(theirs).toBeGreaterThanOrEqual(3);
        expect(ours).toBeGreaterThanOrEqual(3);
        await waitFor('our connections counted', () => (metrics.pending === 0 ? true : undefined));
        expect(metrics.counts).toMatchObject({ graceful: ours, 'reset-sent': 0, 'reset-received': 0, unknown: 0 });
        expect(Object.values(metrics.counts).reduce((a, b) => a + b, 0)).toBe(ours);
      } finally {
        metrics.close();
        server.close();
        child.kill();
        lines.close();
      }
    },
    20_000,
  );
});
