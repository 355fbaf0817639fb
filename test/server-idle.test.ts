/**
 * closeServer() on idle HTTP/1.1 keep-alive connections: they are closed together (one FIN each,
 * their states read for all of them at once, no timer or report of their own until one is due),
 * with the same guarantees as every other close: no RST, a request racing the FIN read and
 * discarded and never given to the application, the peer's RST and the deadline reported as such,
 * and a gracefulClose() of the same socket joining the close under way.
 */
import { describe, expect, it } from 'vitest';
import dc from 'node:diagnostics_channel';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { closeServer, gracefulClose, reset, type CloseReport } from '../src/index';
import { handleFd } from '../src/fd';
import { FIN_CHANNEL } from '../src/ops';
import { waitFor } from './helpers';

/**
 * Runs `then` right after closeServer() sent the FIN on `socket` (announced on the FIN channel
 * just before shutdown(2)), in the same turn of the event loop: before the close's first look,
 * which comes a timer later, so the close is still lingering.
 */
function afterFin(socket: net.Socket, then: () => void): void {
  const fd = handleFd(socket);
  const onFin = (message: unknown): void => {
    if ((message as { fd: number }).fd !== fd) return;
    dc.unsubscribe(FIN_CHANNEL, onFin);
    setImmediate(then);
  };
  dc.subscribe(FIN_CHANNEL, onFin);
}

/**
 * A client that never stops talking after the server's FIN: a byte every 3 ms (no Nagle: its small
 * writes would wait for the server's delayed ACK, quiet for 40 ms), so the close is never quiet for
 * 20 ms and keeps reading (and discarding) until its deadline. `also` runs with the first byte.
 * Returns what stops it.
 */
function talkAfterFin(accepted: net.Socket, client: net.Socket, also?: () => void): () => void {
  client.on('error', () => {});
  client.setNoDelay(true);
  let talk: NodeJS.Timeout | undefined;
  afterFin(accepted, () => {
    client.write('x');
    talk = setInterval(() => client.writable && client.write('x'), 3);
    also?.();
  });
  return () => clearInterval(talk);
}

interface Client {
  socket: net.Socket;
  /** How the connection ended at the client: 'fin' (EOF), or the error's code. */
  ended: Promise<string>;
}

async function idleServer(handler: http.RequestListener = (_req, res) => res.end('ok')): Promise<{ server: http.Server; port: number; accepted: net.Socket[] }> {
  const server = http.createServer({ keepAliveTimeout: 60_000 }, handler);
  const accepted: net.Socket[] = [];
  server.on('connection', (s: net.Socket) => accepted.push(s));
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as net.AddressInfo).port, accepted };
}

/** A keep-alive connection that made one request and got its response, now idle. */
async function idleClient(port: number, allowHalfOpen = false): Promise<Client> {
  const socket = net.connect({ port, host: '127.0.0.1', allowHalfOpen });
  await once(socket, 'connect');
  let text = '';
  const onData = (d: Buffer): void => {
    text += d.toString('latin1');
  };
  socket.on('data', onData);
  const ended = new Promise<string>((resolve) => {
    socket.once('end', () => resolve('fin'));
    socket.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
  });
  socket.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n');
  await waitFor('the response', () => (text.endsWith('ok') ? true : undefined));
  socket.off('data', onData);
  socket.resume();
  return { socket, ended };
}

describe('closeServer, idle keep-alive connections closed together', () => {
  it('200 idle connections: each gets FIN, none an RST, every report graceful with the kernel states seen', async () => {
    const { server, port } = await idleServer();
    const clients: Client[] = [];
    for (let i = 0; i < 200; i++) clients.push(await idleClient(port));
    const report = await closeServer(server, { drainWindow: 20, timeout: 5000 });
    const endings = await Promise.all(clients.map((c) => c.ended));
    expect(endings.every((e) => e === 'fin')).toBe(true);
    expect(report.totals).toMatchObject({ graceful: 200, total: 200, resetSent: 0, resetReceived: 0, interrupted: 0 });
    for (const c of report.connections) {
      expect(c).toMatchObject({ protocol: 'http/1.1', bytesDiscarded: 0, requestAfterFin: false, applicationDone: true, kernelView: true });
      expect(['peer-fin', 'all-acknowledged']).toContain(c.reason);
      expect(c.durations.total).toBeGreaterThanOrEqual(c.durations.linger);
    }
    // Those that a look decided show the kernel's state (the FIN acknowledged, or both FINs through).
    const looked = report.connections.filter((c) => c.states.length > 0);
    for (const c of looked) expect(['FIN_WAIT1', 'FIN_WAIT2', 'CLOSE', 'TIME_WAIT']).toContain(c.states.at(-1)!.state);
    for (const c of clients) c.socket.destroy();
  });

  it('a client that never answers the FIN: closed once everything is acknowledged and it was quiet (FIN_WAIT2), no RST when it closes later', async () => {
    const { server, port } = await idleServer();
    const client = await idleClient(port, true); // allowHalfOpen: it does not send its FIN
    const report = await closeServer(server, { drainWindow: 20, timeout: 5000 });
    expect(await client.ended).toBe('fin');
    expect(report.connections[0]).toMatchObject({ outcome: 'graceful', reason: 'all-acknowledged', unackedAtClose: 0 });
    expect(report.connections[0]!.states.map((s) => s.state)).toContain('FIN_WAIT2');
    // Its FIN now meets the server's orphan: no RST comes back (an RST would be an 'error').
    const closed = once(client.socket, 'close');
    const errors: Error[] = [];
    client.socket.on('error', (e) => errors.push(e));
    client.socket.end();
    await closed;
    expect(errors).toEqual([]);
  });

  it('a request sent after the FIN is read and discarded, never given to the application, and reported', async () => {
    const urls: string[] = [];
    const { server, port, accepted } = await idleServer((req, res) => {
      urls.push(req.url!);
      res.end('ok');
    });
    const client = await idleClient(port, true);
    afterFin(accepted[0]!, () => client.socket.write('GET /late HTTP/1.1\r\nhost: x\r\n\r\n'));
    const report = await closeServer(server, { drainWindow: 20, timeout: 5000 });
    client.socket.destroy();
    expect(urls).toEqual(['/']);
    expect(report.connections[0]).toMatchObject({ outcome: 'interrupted', requestAfterFin: true, applicationDone: false });
    expect(report.connections[0]!.bytesDiscarded).toBe('GET /late HTTP/1.1\r\nhost: x\r\n\r\n'.length);
  });

  it("the peer's RST during the linger is reported as reset-received, not graceful", async () => {
    const { server, port, accepted } = await idleServer();
    const client = await idleClient(port, true);
    client.socket.on('error', () => {});
    afterFin(accepted[0]!, () => {
      client.socket.write('x');
      reset(client.socket);
    });
    const report = await closeServer(server, { drainWindow: 20, timeout: 5000 });
    expect(report.connections[0]).toMatchObject({ outcome: 'reset-received', reason: 'peer-reset' });
    expect(report.totals).toMatchObject({ graceful: 0, resetReceived: 1 });
  });

  it('a peer that keeps sending after the FIN is reset at the deadline, and the report says so', async () => {
    const { server, port, accepted } = await idleServer();
    const client = await idleClient(port, true);
    const stop = talkAfterFin(accepted[0]!, client.socket);
    const report = await closeServer(server, { drainWindow: 20, timeout: 400 });
    stop();
    client.socket.destroy();
    expect(report.connections[0]).toMatchObject({ outcome: 'reset-sent', reason: 'deadline' });
    expect(report.connections[0]!.bytesDiscarded).toBeGreaterThan(0);
  });

  it('gracefulClose() of a socket whose idle close is under way joins it: the same report', async () => {
    const { server, port, accepted } = await idleServer();
    const client = await idleClient(port, true);
    let joined: Promise<CloseReport> | undefined;
    afterFin(accepted[0]!, () => (joined = gracefulClose(accepted[0]!, { timeout: 5000 })));
    const report = await closeServer(server, { drainWindow: 20, timeout: 5000 });
    const own = await joined!;
    client.socket.destroy();
    expect(own).toMatchObject({ outcome: 'graceful', reason: 'all-acknowledged' });
    expect(report.connections[0]).toMatchObject({ outcome: 'graceful', reason: own.reason, states: own.states });
  });

  it('gracefulClose() joining with an earlier deadline resets at that deadline', async () => {
    const { server, port, accepted } = await idleServer();
    const client = await idleClient(port, true);
    let joined: Promise<CloseReport> | undefined;
    const stop = talkAfterFin(accepted[0]!, client.socket, () => (joined = gracefulClose(accepted[0]!, { timeout: 100 })));
    const report = await closeServer(server, { drainWindow: 20, timeout: 5000 });
    const own = await joined!;
    stop();
    client.socket.destroy();
    expect(own).toMatchObject({ outcome: 'reset-sent', reason: 'deadline' });
    expect(report.connections[0]).toMatchObject({ outcome: 'reset-sent', reason: 'deadline' });
  });

  it('the application destroying the socket during the linger: the kernel says no RST went (an orphan), reported graceful', async () => {
    const { server, port, accepted } = await idleServer();
    const client = await idleClient(port, true);
    afterFin(accepted[0]!, () => accepted[0]!.destroy());
    const report = await closeServer(server, { drainWindow: 20, timeout: 5000 });
    expect(await client.ended).toBe('fin');
    client.socket.destroy();
    expect(report.connections[0]).toMatchObject({ outcome: 'graceful', reason: 'closed-elsewhere' });
    // Looked up after the fd closed: the orphan of our FIN (FIN_WAIT1 until acknowledged, then FIN_WAIT2).
    expect(['FIN_WAIT1', 'FIN_WAIT2']).toContain(report.connections[0]!.states.at(-1)!.state);
  });
});
