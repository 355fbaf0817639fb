/**
 * serverMetrics() on the BPF source (a file of its own: the first serverMetrics() of a process
 * chooses the trace's source): each outcome as the kernel saw it, with the program writing only
 * the ends.
 */
import dc from 'node:diagnostics_channel';
import { once } from 'node:events';
import net from 'node:net';
import { describe, expect } from 'vitest';
import { END_CHANNEL, queues, serverMetrics, tcpState, type ConnectionEndMessage } from '../src/index';
import { bpfUnavailable } from '../src/trace/bpf-source';
import { itNeeds, waitFor, type Availability } from './helpers';

function bpf(): Availability {
  const why = bpfUnavailable();
  return why === undefined ? { ok: true } : { ok: false, reason: why };
}

describe('serverMetrics() on BPF', () => {
  itNeeds('BPF (CAP_BPF and CAP_PERFMON, or root)', bpf, 'graceful, reset-sent and reset-received, each counted once, from the ends alone', async () => {
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
});
