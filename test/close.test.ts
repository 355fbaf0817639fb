import { afterEach, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { once } from 'node:events';
import { findSocket, gracefulClose, tcpState } from '../src/index';
import { pair, readAll, waitFor, type Pair } from './helpers';

let p: Pair | undefined;
afterEach(async () => {
  await p?.close();
  p = undefined;
});

const tupleOf = (s: import('node:net').Socket) => ({
  local: { address: s.localAddress!, port: s.localPort! },
  remote: { address: s.remoteAddress!, port: s.remotePort! },
});

/** What the peer saw: every byte, then 'end', and never ECONNRESET. */
function peerView(socket: import('node:net').Socket): Promise<{ bytes: number; ended: boolean; error?: string }> {
  return new Promise((resolve) => {
    let bytes = 0;
    socket.on('data', (chunk: Buffer) => (bytes += chunk.length));
    socket.once('end', () => resolve({ bytes, ended: true }));
    socket.once('error', (error: NodeJS.ErrnoException) => resolve({ bytes, ended: false, error: error.code }));
  });
}

describe('gracefulClose', () => {
  it("peer closed first: 'peer-fin', graceful, the peer got every byte", async () => {
    p = await pair({ client: { allowHalfOpen: true } });
    p.client.resume();
    const seen = peerView(p.server);
    p.server.end();
    await once(p.client, 'end');
    expect(tcpState(p.client)).toBe('CLOSE_WAIT');
    p.client.write(Buffer.alloc(200_000, 1));
    const report = await gracefulClose(p.client);
    expect(report).toMatchObject({ outcome: 'graceful', reason: 'peer-fin' });
    expect(await seen).toEqual({ bytes: 200_000, ended: true });
  });

  it("peer never closes but stops sending: 'all-acknowledged', closed with no RST, an orphan FIN_WAIT2 left", async () => {
    p = await pair({ server: { allowHalfOpen: true } });
    const seen = peerView(p.server);
    p.client.write(Buffer.alloc(300_000, 2));
    const tuple = tupleOf(p.client);
    const report = await gracefulClose(p.client);
    expect(report).toMatchObject({ outcome: 'graceful', reason: 'all-acknowledged', unackedAtClose: 0 });
    expect(report.states.map((s) => s.state)).toContain('FIN_WAIT2');
    expect(await seen).toEqual({ bytes: 300_000, ended: true });
    expect(findSocket(tuple)?.state).toBe('FIN_WAIT2'); // the kernel keeps waiting for the peer's FIN
    expect(tcpState(p.server)).toBe('CLOSE_WAIT'); // the peer can still send...
  });

  it('unread data at close is drained, not answered with RST', async () => {
    p = await pair({ server: { pauseOnConnect: true, allowHalfOpen: true }, client: { allowHalfOpen: true } });
    p.client.write(Buffer.alloc(50_000, 3));
    const tuple = tupleOf(p.server);
    await waitFor('unread bytes in the kernel', () => (findSocket(tuple)?.recvQ === 50_000 ? true : undefined));
    const seen = peerView(p.client);
    const closing = gracefulClose(p.server);
    await waitFor('our FIN', () => (tcpState(p!.client) === 'CLOSE_WAIT' ? true : undefined));
    p.client.end(); // the peer is done too
    const report = await closing;
    expect(report.outcome).toBe('graceful');
    expect(report.bytesDiscarded).toBe(50_000);
    expect(await seen).toEqual({ bytes: 0, ended: true });
  });

  it('a peer that keeps sending and never closes is reset at the deadline, on time', async () => {
    p = await pair({ server: { allowHalfOpen: true }, client: { allowHalfOpen: true } });
    const chunk = Buffer.alloc(1000);
    const talker = setInterval(() => p!.client.writable && p!.client.write(chunk), 2);
    p.client.on('error', () => {});
    await once(p.server, 'data'); // it is talking
    try {
      const report = await gracefulClose(p.server, { timeout: 300 });
      expect(report).toMatchObject({ outcome: 'reset-sent', reason: 'deadline' });
      expect(report.durations.total).toBeGreaterThanOrEqual(299);
      expect(report.durations.total).toBeLessThan(1300);
      expect(report.bytesDiscarded).toBeGreaterThan(0);
      await waitFor('RST at the peer', () => (p!.client.destroyed || tcpState(p!.client) === 'CLOSE' ? true : undefined));
    } finally {
      clearInterval(talker);
    }
  });

  it('stops lingering after maxDiscard bytes', async () => {
    p = await pair({ server: { allowHalfOpen: true }, client: { allowHalfOpen: true } });
    p.client.on('error', () => {});
    p.client.write(Buffer.alloc(100_000));
    const report = await gracefulClose(p.server, { maxDiscard: 1000 });
    expect(report).toMatchObject({ outcome: 'reset-sent', reason: 'discard-limit' });
    expect(report.bytesDiscarded).toBeGreaterThan(1000);
  });

  it('reports what was still queued when a peer that reads nothing is reset at the deadline', async () => {
    p = await pair({ server: { pauseOnConnect: true } });
    p.client.write(Buffer.alloc(16 * 1024 * 1024));
    const report = await gracefulClose(p.client, { timeout: 100 });
    expect(report).toMatchObject({ outcome: 'reset-sent', reason: 'deadline' });
    expect(report.unsentInNode).toBeGreaterThan(0);
    expect(report.unackedAtClose).toBeGreaterThan(0);
  });

  it("the peer's reset: 'reset-received'", async () => {
    p = await pair({ server: { pauseOnConnect: true } });
    p.client.write(Buffer.alloc(16 * 1024 * 1024));
    const closing = gracefulClose(p.client);
    p.server.destroy(); // unread bytes: the kernel answers with RST
    expect(await closing).toMatchObject({ outcome: 'reset-received', reason: 'peer-reset' });
  });

  it('an AbortSignal resets at once', async () => {
    p = await pair({ server: { allowHalfOpen: true, pauseOnConnect: true } });
    p.client.write(Buffer.alloc(16 * 1024 * 1024));
    const controller = new AbortController();
    const closing = gracefulClose(p.client, { signal: controller.signal });
    controller.abort();
    expect(await closing).toMatchObject({ outcome: 'reset-sent', reason: 'aborted' });
  });

  it('works on TLS: close_notify and FIN, the peer gets everything', async () => {
    const fixtures = path.join(__dirname, 'fixtures');
    const server = tls.createServer({ key: fs.readFileSync(path.join(fixtures, 'key.pem')), cert: fs.readFileSync(path.join(fixtures, 'cert.pem')) });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const accepted = once(server, 'secureConnection') as Promise<[tls.TLSSocket]>;
    const client = tls.connect({ port: (server.address() as { port: number }).port, host: '127.0.0.1', ca: fs.readFileSync(path.join(fixtures, 'cert.pem')), servername: 'localhost' });
    await once(client, 'secureConnect');
    const [peer] = await accepted;
    try {
      const got = readAll(client);
      peer.write(Buffer.alloc(100_000, 5));
      const report = await gracefulClose(peer);
      expect(report.outcome).toBe('graceful');
      expect((await got).length).toBe(100_000);
    } finally {
      client.destroy();
      server.close();
    }
  });

  it('a write after the close began (ERR_STREAM_WRITE_AFTER_END): no RST is claimed, the kernel says what happened, and a second call joins the first', async () => {
    // The peer does not answer our FIN by itself, so the close lingers when the app writes.
    p = await pair({ client: { allowHalfOpen: true } });
    const seen = peerView(p.client);
    const appErrors: string[] = [];
    p.server.on('error', (error: NodeJS.ErrnoException) => appErrors.push(error.code ?? ''));
    const tuple = tupleOf(p.server);
    const first = gracefulClose(p.server, { timeout: 5000 });
    const second = gracefulClose(p.server, { timeout: 5000 });
    await waitFor('our FIN at the peer', () => (tcpState(p!.client) === 'CLOSE_WAIT' ? true : undefined));
    p.server.write('too late'); // Node refuses it and destroys the socket: its fd closes, no RST
    const report = await first;
    expect(await second).toBe(report);
    expect(appErrors).toEqual(['ERR_STREAM_WRITE_AFTER_END']);
    expect(report).toMatchObject({ outcome: 'graceful', reason: 'closed-elsewhere', error: { code: 'ERR_STREAM_WRITE_AFTER_END' } });
    // What the kernel showed: our FIN acknowledged, then the orphan; never a made-up CLOSED.
    expect(report.states.map((s) => s.state)).not.toContain('CLOSED');
    // Our FIN is out; its ACK may still be on its way (delayed): FIN_WAIT1, then FIN_WAIT2.
    expect(['FIN_WAIT1', 'FIN_WAIT2']).toContain(report.states.at(-1)?.state);
    await waitFor('the orphan in FIN_WAIT2', () => (findSocket(tuple)?.state === 'FIN_WAIT2' ? true : undefined));
    p.client.end();
    expect(await seen).toEqual({ bytes: 0, ended: true }); // FIN, not RST
    await waitFor('TIME_WAIT', () => (findSocket(tuple)?.state === 'TIME_WAIT' ? true : undefined));
    expect(await gracefulClose(p.server)).toBe(report); // the socket's close, asked again after it ended
  });

  it("a second call joins the close under way: its earlier deadline and its signal apply, both resolve with one report", async () => {
    p = await pair({ client: { allowHalfOpen: true } });
    p.client.on('error', () => {});
    p.client.pause();
    p.server.write(Buffer.alloc(8 * 1024 * 1024)); // cannot drain: the close lingers
    const first = gracefulClose(p.server, { timeout: 10_000 });
    const controller = new AbortController();
    const second = gracefulClose(p.server, { timeout: 8000, signal: controller.signal });
    controller.abort();
    const report = await first;
    expect(await second).toBe(report);
    expect(report).toMatchObject({ outcome: 'reset-sent', reason: 'aborted' });
    await expect(gracefulClose(p.client, { signal: controller.signal })).rejects.toMatchObject({ code: 'ABORT_ERR' });
  });

  it('the application destroys the socket mid-close with data still queued in Node: destroyed, the bytes counted, no RST claimed', async () => {
    p = await pair({ client: { allowHalfOpen: true } });
    p.client.pause(); // reads nothing: Node's queue cannot drain
    p.server.write(Buffer.alloc(8 * 1024 * 1024, 7));
    const closing = gracefulClose(p.server, { timeout: 5000 });
    await waitFor('Node still holding bytes', () => (p!.server.writableLength > 0 ? true : undefined));
    const queued = p.server.writableLength;
    p.server.destroy();
    const report = await closing;
    expect(report).toMatchObject({ outcome: 'destroyed', reason: 'closed-elsewhere' });
    expect(report.unsentInNode).toBeGreaterThan(0);
    expect(report.unsentInNode).toBeLessThanOrEqual(queued);
    expect(report.states.at(-1)?.state).toBe('FIN_WAIT1'); // the kernel still sends what it holds, then FIN
  });

  it('rejects bad arguments and closed sockets with codes', async () => {
    await expect(gracefulClose(1 as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    p = await pair();
    await expect(gracefulClose(p.client, { timeout: -1 })).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
    await expect(gracefulClose(p.client, { maxDiscard: 'x' as never })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    await expect(gracefulClose(p.client, null as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    p.client.destroy();
    await expect(gracefulClose(p.client)).rejects.toMatchObject({ code: 'ERR_SOCKET_CLOSED' });
  });
});
