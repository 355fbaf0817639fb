/**
 * finwait where its native part cannot be loaded (no prebuilt binary for the platform and no
 * compiler at install, as on musl without build tools): importing never throws, every kernel-only
 * call throws one ENOTSUP naming the platform and what is missing, capabilities() says so, and
 * closeServer()/gracefulClose() still close gracefully with what Node alone can do. The addon is
 * made unavailable by pointing FINWAIT_NATIVE at a file that does not exist; the sockets are real.
 */
import { afterEach, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { once } from 'node:events';
import * as finwait from '../src/index';
import { pair, type Pair, withoutNativePart } from './helpers';

const fixtures = path.join(__dirname, 'fixtures');
withoutNativePart();

let p: Pair | undefined;
afterEach(async () => {
  await p?.close();
  p = undefined;
});

/** What the peer saw: every byte, then 'end' or an error. */
function peerView(socket: net.Socket): Promise<{ bytes: number; end?: true; error?: string }> {
  return new Promise((resolve) => {
    let bytes = 0;
    socket.on('data', (chunk: Buffer) => (bytes += chunk.length));
    socket.once('end', () => resolve({ bytes, end: true }));
    socket.once('error', (error: NodeJS.ErrnoException) => resolve({ bytes, error: error.code }));
  });
}

describe('without the native part', () => {
  it('capabilities() says so, with the error kernel calls throw', () => {
    const caps = finwait.capabilities();
    expect(caps).toMatchObject({ kernel: false, close: 'node', platform: `${process.platform}-${process.arch}-glibc` });
    expect(caps.error).toMatchObject({ code: 'ENOTSUP' });
    expect(caps.error!.message).toContain(`not available on ${process.platform}-${process.arch}-glibc`);
    expect(caps.error!.message).toContain('npm rebuild finwait');
    expect(caps.error!.cause).toBeInstanceOf(Error);
  });

  it('every kernel-only call throws the same ENOTSUP, and nothing is sent', async () => {
    p = await pair();
    const c = p.client;
    const calls: Record<string, () => unknown> = {
      tcpInfo: () => finwait.tcpInfo(c),
      tcpState: () => finwait.tcpState(c),
      tcpStates: () => finwait.tcpStates([c]),
      queues: () => finwait.queues(c),
      shutdown: () => finwait.shutdown(c, 'write'),
      getLinger: () => finwait.getLinger(c),
      setLinger: () => finwait.setLinger(c, 0),
      reset: () => finwait.reset(c),
      getUserTimeout: () => finwait.getUserTimeout(c),
      setKeepCnt: () => finwait.setKeepCnt(c, 5),
      sockets: () => finwait.sockets(),
      findSocket: () => finwait.findSocket({ local: { address: '127.0.0.1', port: 1 }, remote: { address: '127.0.0.1', port: 2 } }),
      watch: () => finwait.watch(c),
      closeWrite: () => finwait.closeWrite(c),
    };
    const expected = finwait.capabilities().error;
    for (const [name, call] of Object.entries(calls)) {
      let thrown: unknown;
      try {
        await call();
      } catch (error) {
        thrown = error;
      }
      expect(thrown, name).toBe(expected);
    }
    expect(c.writableEnded).toBe(false);
    expect(c.destroyed).toBe(false);
  });

  it('gracefulClose(): the peer closes after our FIN, graceful, every byte delivered', async () => {
    p = await pair();
    const seen = peerView(p.server);
    p.client.write(Buffer.alloc(500_000, 1));
    const report = await finwait.gracefulClose(p.client);
    expect(report).toMatchObject({ outcome: 'graceful', reason: 'peer-fin', kernelView: false, states: [], unackedAtClose: -1 });
    expect(report.kernelError).toBe(finwait.capabilities().error);
    expect(await seen).toEqual({ bytes: 500_000, end: true });
  });

  it('gracefulClose(): a peer that never closes is reset at the deadline, and sees ECONNRESET', async () => {
    p = await pair({ server: { allowHalfOpen: true } });
    const seen = peerView(p.server);
    const started = performance.now();
    const report = await finwait.gracefulClose(p.client, { timeout: 300 });
    expect(performance.now() - started).toBeGreaterThanOrEqual(295);
    expect(report).toMatchObject({ outcome: 'reset-sent', reason: 'deadline', kernelView: false });
    // Our FIN came first ('end'), then the RST fails the peer's next write.
    expect(await seen).toEqual({ bytes: 0, end: true });
    const failed = once(p.server, 'error');
    p.server.write('after the reset');
    expect((await failed)[0]).toMatchObject({ code: expect.stringMatching(/^(ECONNRESET|EPIPE)$/) });
  });

  it('gracefulClose() with timeout 0 resets at once and resolves: the peer sees ECONNRESET', async () => {
    p = await pair();
    const failed = once(p.server, 'error');
    const report = await finwait.gracefulClose(p.client, { timeout: 0 });
    expect(report).toMatchObject({ outcome: 'reset-sent', reason: 'deadline', kernelView: false });
    expect((await failed)[0]).toMatchObject({ code: 'ECONNRESET' });
  });

  it('closeServer(): a response still in flight at the deadline is reset, and the call resolves', async () => {
    let started = false;
    const server = http.createServer((_req, res) => {
      started = true;
      res.write('never finished'); // the handler never ends it
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const request = http.get({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', agent: false });
    const failed = new Promise<string>((resolve) => request.on('error', (error: NodeJS.ErrnoException) => resolve(error.code ?? '')));
    request.on('response', (res) => res.resume());
    while (!started) await new Promise((resolve) => setTimeout(resolve, 1));
    const report = await finwait.closeServer(server, { timeout: 200 });
    expect(report.totals).toMatchObject({ resetSent: 1, total: 1 });
    expect(report.connections[0]).toMatchObject({ outcome: 'reset-sent', reason: 'deadline', kernelView: false });
    expect(await failed).toBe('ECONNRESET');
  });

  it("gracefulClose(): the peer's reset is 'reset-received'", async () => {
    p = await pair();
    const closing = finwait.gracefulClose(p.client, { timeout: 5000 });
    p.server.resetAndDestroy();
    expect(await closing).toMatchObject({ outcome: 'reset-received', reason: 'peer-reset', kernelView: false });
  });

  it("gracefulClose(): a TLS socket Node cannot reset is 'destroyed' at the deadline, and says what Node still held", async () => {
    const server = tls.createServer({
      key: fs.readFileSync(path.join(fixtures, 'key.pem')),
      cert: fs.readFileSync(path.join(fixtures, 'cert.pem')),
      allowHalfOpen: true,
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const accepted = once(server, 'secureConnection') as Promise<[tls.TLSSocket]>;
    const client = tls.connect({
      port: (server.address() as net.AddressInfo).port,
      host: '127.0.0.1',
      ca: fs.readFileSync(path.join(fixtures, 'cert.pem')),
      servername: 'localhost',
      allowHalfOpen: true, // passed on to its net.Socket; not in tls.ConnectionOptions' type
    } as tls.ConnectionOptions);
    await once(client, 'secureConnect');
    const [peer] = await accepted;
    try {
      client.on('error', () => {});
      const ended = once(client, 'end'); // our close_notify and FIN, sent first
      const report = await finwait.gracefulClose(peer, { timeout: 200 });
      expect(report).toMatchObject({ outcome: 'destroyed', reason: 'deadline', kernelView: false, unsentInNode: 0 });
      expect(peer.destroyed).toBe(true);
      await ended;
    } finally {
      client.destroy();
      server.close();
    }
  });

  it('gracefulClose() still refuses bad arguments and closed sockets with codes', async () => {
    await expect(finwait.gracefulClose(42 as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    p = await pair();
    await expect(finwait.gracefulClose(p.client, { timeout: -1 })).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
    p.client.destroy();
    await expect(finwait.gracefulClose(p.client)).rejects.toMatchObject({ code: 'ERR_SOCKET_CLOSED' });
  });

  it('closeServer(): an HTTP response in flight completes; the report says the kernel view was missing', async () => {
    let respond: (() => void) | undefined;
    const server = http.createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('first half, ');
      respond = () => res.end('second half');
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as net.AddressInfo;
    const agent = new http.Agent({ keepAlive: true });
    try {
      const response = new Promise<string>((resolve, reject) => {
        http
          .get({ port, host: '127.0.0.1', agent }, (res) => {
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (chunk: string) => (body += chunk));
            res.on('end', () => resolve(body));
          })
          .on('error', reject);
      });
      // Wait until the handler runs: the response is in flight when the shutdown begins.
      while (!respond) await new Promise((resolve) => setTimeout(resolve, 1));
      const closing = finwait.closeServer(server, { timeout: 5000 });
      setTimeout(() => respond!(), 100);
      const report = await closing;
      expect(await response).toBe('first half, second half');
      expect(report).toMatchObject({
        kernelView: false,
        untracked: -1,
        totals: { graceful: 1, resetSent: 0, resetReceived: 0, destroyed: 0, total: 1 },
      });
      expect(report.connections[0]).toMatchObject({ outcome: 'graceful', reason: 'peer-fin', kernelView: false });
      expect(server.listening).toBe(false);
    } finally {
      agent.destroy();
      server.close();
    }
  });

  it('closeServer(): an idle keep-alive connection closes gracefully; one that never closes is reset at the deadline', async () => {
    const server = net.createServer({ allowHalfOpen: true });
    finwait.trackConnections(server);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as net.AddressInfo;
    const polite = net.connect(port, '127.0.0.1'); // ends when it sees our FIN (allowHalfOpen false)
    const stubborn = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    await Promise.all([once(polite, 'connect'), once(stubborn, 'connect')]);
    const ports = { polite: polite.localPort!, stubborn: stubborn.localPort! };
    while ((await new Promise<number>((resolve) => server.getConnections((_, n) => resolve(n)))) < 2) {
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    polite.resume();
    stubborn.resume();
    stubborn.on('error', () => {});
    const report = await finwait.closeServer(server, { timeout: 400 });
    expect(report.kernelView).toBe(false);
    expect(report.totals, JSON.stringify(report.connections)).toMatchObject({ graceful: 1, resetSent: 1, resetReceived: 0, destroyed: 0, total: 2 });
    const byPort = new Map(report.connections.map((c) => [c.peer.port, c]));
    expect(byPort.get(ports.polite)).toMatchObject({ outcome: 'graceful', reason: 'peer-fin' });
    expect(byPort.get(ports.stubborn)).toMatchObject({ outcome: 'reset-sent', reason: 'deadline' });
    polite.destroy();
    stubborn.destroy();
  });

  it('the test kit says the lab is unavailable instead of throwing', async () => {
    const { labAvailable } = await import('../src/testing/index');
    expect(labAvailable()).toMatchObject({ ok: false });
  });
});

