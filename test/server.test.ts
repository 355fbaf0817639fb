import { describe, expect, it } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { closeServer, listenReusePort, sockets, trackConnections } from '../src/index';
import { waitFor } from './helpers';

/** One HTTP/1.1 request on a raw socket; resolves with the response's head and what followed. */
function rawRequest(socket: net.Socket, request: string): Promise<string> {
  return new Promise((resolve) => {
    let text = '';
    const onData = (chunk: Buffer): void => {
      text += chunk.toString();
      if (/\r\n\r\n[\s\S]*$/.test(text) && text.includes('\r\n\r\n') && text.endsWith('ok')) {
        socket.off('data', onData);
        resolve(text);
      }
    };
    socket.on('data', onData);
    socket.write(request);
  });
}

/** What a client saw at the end: 'end' (FIN) or an error code. */
function ending(socket: net.Socket): Promise<string> {
  return new Promise((resolve) => {
    socket.once('end', () => resolve('end'));
    socket.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
  });
}

describe('closeServer (http)', () => {
  it('finishes in-flight responses with Connection: close, closes idle keep-alive connections gracefully, reports each', async () => {
    let release!: () => void;
    const slow = new Promise<void>((resolve) => (release = resolve));
    const server = http.createServer(async (req, res) => {
      if (req.url === '/slow') await slow;
      res.end('ok');
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as net.AddressInfo;
    const connect = async () => {
      const s = net.connect(port, '127.0.0.1');
      await once(s, 'connect');
      return s;
    };
    // Two idle keep-alive connections (one request served each) and one with a request in flight.
    const idle = await Promise.all([connect(), connect()]);
    for (const s of idle) await rawRequest(s, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    const busy = await connect();
    const busyResponse = rawRequest(busy, 'GET /slow HTTP/1.1\r\nHost: x\r\n\r\n');
    await waitFor('the slow request to arrive', () => (server.listenerCount('request') > 0 && (busy.bytesWritten > 0) ? true : undefined));
    const endings = [...idle, busy].map(ending);
    const ports = [...idle, busy].map((s) => s.localPort).sort();

    const shutdown = closeServer(server, { timeout: 5000, drainWindow: 50 });
    setTimeout(release, 100);
    const report = await shutdown;

    const head = await busyResponse;
    expect(head).toMatch(/^HTTP\/1\.1 200/);
    expect(head.toLowerCase()).toContain('connection: close');
    expect(await Promise.all(endings)).toEqual(['end', 'end', 'end']);
    expect(report.totals).toEqual({ graceful: 3, interrupted: 0, handedOff: 0, resetSent: 0, resetReceived: 0, destroyed: 0, total: 3 });
    expect(report.untracked).toBe(0);
    expect(report.connections.map((c) => c.peer.port).sort()).toEqual(ports);
    expect(server.listening).toBe(false);
    for (const s of [...idle, busy]) s.destroy();
  });

  it('pipelined requests: a response whose headers went out and the one queued behind it both arrive before the FIN', async () => {
    let endOne!: () => void;
    let answerTwo!: () => void;
    const one = new Promise<void>((resolve) => (endOne = resolve));
    const two = new Promise<void>((resolve) => (answerTwo = resolve));
    let received = 0;
    const server = http.createServer(async (req, res) => {
      received++;
      if (req.url === '/one') {
        res.writeHead(200, { 'content-type': 'text/plain' }); // headers out: keep-alive promised
        res.write('one-');
        await one;
        res.end('done');
      } else {
        await two;
        res.end('two-done');
      }
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as net.AddressInfo;
    const client = net.connect(port, '127.0.0.1');
    await once(client, 'connect');
    let text = '';
    client.on('data', (chunk: Buffer) => (text += chunk.toString()));
    const ended = ending(client);
    client.write('GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n');
    await waitFor('both requests parsed, the first response begun', () => (received === 2 && text.includes('one-') ? true : undefined));

    const shutdown = closeServer(server, { timeout: 5000 });
    endOne();
    // The second is answered only after the first is complete (and Node made it the current one).
    await waitFor('the first response complete', () => (text.includes('0\r\n\r\n') ? true : undefined));
    await new Promise((resolve) => setImmediate(resolve));
    answerTwo();
    const report = await shutdown;

    expect(await ended).toBe('end');
    expect(text).toMatch(/one-\r\n4\r\ndone\r\n0\r\n\r\n/); // chunked, complete
    expect(text.endsWith('two-done')).toBe(true);
    expect(text.toLowerCase()).toMatch(/connection: close[\s\S]*two-done$/); // the last one says so
    expect(text.match(/HTTP\/1\.1 200/g)).toHaveLength(2);
    expect(report.totals).toEqual({ graceful: 1, interrupted: 0, handedOff: 0, resetSent: 0, resetReceived: 0, destroyed: 0, total: 1 });
    client.destroy();
  });

  it('an abort (even right after the call, during the accept-queue drain) resets what is open at once, and says so', async () => {
    const server = http.createServer((_req, res) => res.end('ok'));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as net.AddressInfo;
    const client = net.connect(port, '127.0.0.1');
    await once(client, 'connect');
    await rawRequest(client, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n'); // now an idle keep-alive connection
    const ended = ending(client);
    const closed = once(server, 'close');
    const controller = new AbortController();
    const shutdown = closeServer(server, { timeout: 10_000, drainWindow: 5000, signal: controller.signal });
    controller.abort();
    const report = await shutdown;
    expect(report.totals).toEqual({ graceful: 0, interrupted: 0, handedOff: 0, resetSent: 1, resetReceived: 0, destroyed: 0, total: 1 });
    expect(report.connections[0]).toMatchObject({ outcome: 'reset-sent', reason: 'aborted' });
    expect(await ended).toBe('ECONNRESET');
    await closed; // nothing left open: the server could close
    expect(report.duration).toBeLessThan(1000);
    client.destroy();
  });

  it('serves a request that arrives on an idle keep-alive connection during the drain window, with Connection: close', async () => {
    const server = http.createServer((_req, res) => res.end('ok'));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const s = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    await once(s, 'connect');
    await rawRequest(s, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    const shutdown = closeServer(server, { drainWindow: 1000 });
    const last = await rawRequest(s, 'GET /last HTTP/1.1\r\nHost: x\r\n\r\n');
    expect(last.toLowerCase()).toContain('connection: close');
    const report = await shutdown;
    expect(report.connections).toHaveLength(1);
    expect(report.connections[0]).toMatchObject({ outcome: 'graceful', requestsDuringShutdown: 1 });
    s.destroy();
  });

  it('resets only what is left at the deadline, and counts it', async () => {
    const server = http.createServer(() => {
      /* never answers */
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const s = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    await once(s, 'connect');
    s.write('GET /never HTTP/1.1\r\nHost: x\r\n\r\n');
    await waitFor('the request to be in flight', () => {
      const c = sockets({ states: ['ESTABLISHED'], localPort: (server.address() as net.AddressInfo).port })[0];
      return c && c.recvQ === 0 ? true : undefined;
    });
    await new Promise((resolve) => setImmediate(resolve));
    const seen = ending(s);
    const report = await closeServer(server, { timeout: 200 });
    expect(report.totals).toMatchObject({ resetSent: 1, graceful: 0 });
    expect(report.connections[0]).toMatchObject({ reason: 'deadline' });
    // Never early: a timer counts whole milliseconds of the event loop's clock and can fire up to
    // ~2 ms before the deadline by performance.now(); closeServer() then waits the rest.
    expect(report.duration).toBeGreaterThanOrEqual(200);
    expect(await seen).toBe('ECONNRESET');
  });
});

describe('closeServer (an http server on a Unix domain socket)', () => {
  it('closes its connections with what Node alone can do (no TCP state to read), gracefully, and says so', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-unix-'));
    const file = path.join(dir, 'server.sock');
    const server = http.createServer((_req, res) => res.end('ok'));
    server.listen(file);
    await once(server, 'listening');
    try {
      const s = net.connect(file);
      await once(s, 'connect');
      const seen = ending(s);
      await rawRequest(s, 'GET / HTTP/1.1\r\nHost: x\r\n\r\n');
      const report = await closeServer(server, { drainWindow: 20 });
      expect(await seen).toBe('end');
      expect(report.connections).toHaveLength(1);
      expect(report.connections[0]).toMatchObject({ outcome: 'graceful', reason: 'peer-fin', kernelView: false, protocol: 'http/1.1' });
      expect(server.listening).toBe(false);
      s.destroy();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('closeServer (net)', () => {
  it('closes tracked connections gracefully: every peer gets all data and FIN', async () => {
    const server = net.createServer((socket) => socket.write(Buffer.alloc(100_000, 1)));
    trackConnections(server);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const clients = await Promise.all(
      Array.from({ length: 20 }, async () => {
        const c = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
        let bytes = 0;
        c.on('data', (d: Buffer) => (bytes += d.length));
        await once(c, 'connect');
        return { c, ended: ending(c), bytes: () => bytes };
      }),
    );
    await waitFor('20 connections', () => ((server as unknown as { _connections: number })._connections === 20 ? true : undefined));
    const report = await closeServer(server);
    expect(report.totals).toEqual({ graceful: 20, interrupted: 0, handedOff: 0, resetSent: 0, resetReceived: 0, destroyed: 0, total: 20 });
    expect(await Promise.all(clients.map((x) => x.ended))).toEqual(Array(20).fill('end'));
    expect(clients.map((x) => x.bytes())).toEqual(Array(20).fill(100_000));
    for (const x of clients) x.c.destroy();
  });

  it('counts connections it could not know about: accepted before finwait was loaded', async () => {
    // A process whose net.Server accepted a connection before it loaded finwait (the built one).
    const script = `
      const net = require('node:net');
      const server = net.createServer({ allowHalfOpen: true });
      server.listen(0, '127.0.0.1', () => {
        const client = net.connect(server.address().port, '127.0.0.1');
        client.on('error', () => {});
        server.once('connection', async () => {
          const { closeServer } = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.js'))});
          const report = await closeServer(server, { timeout: 100 });
          console.log(JSON.stringify({ untracked: report.untracked, total: report.totals.total }));
          process.exit(0);
        });
      });`;
    const { stdout } = await promisify(execFile)(process.execPath, ['-e', script], { timeout: 10_000 });
    expect(JSON.parse(stdout)).toEqual({ untracked: 1, total: 0 });
  });

  it("counts only this process's untracked connections on a port it shares with another process (SO_REUSEPORT)", async () => {
    // This process: the other instance on the port, holding three connections it greets.
    const other = net.createServer((socket) => socket.write('other\n'));
    const held: net.Socket[] = [];
    other.on('connection', (socket) => held.push(socket));
    const { port } = await listenReusePort(other, { port: 0, host: '127.0.0.1' });
    const clients = Array.from({ length: 3 }, () => net.connect(port, '127.0.0.1').on('error', () => {}));
    // A child process joins the port and accepts one connection before it loads finwait (clients
    // of its own land on either listener, by the kernel's hash: it connects until one is its own).
    const script = `
      const net = require('node:net');
      const [port, dist] = [Number(process.argv[1]), process.argv[2]];
      const { native } = require(dist + '/binding.js');
      const { sockaddr } = require(dist + '/sockaddr.js');
      const fd = native().reusePortSocket(native().constants.AF_INET);
      native().bind(fd, sockaddr('127.0.0.1', port));
      const server = net.createServer({ allowHalfOpen: true });
      const mine = new Set();
      const clients = [];
      let onOther = 0;
      server.on('connection', (socket) => mine.add(socket.remotePort));
      server.listen({ fd }, function next() {
        if (clients.length === 200) throw new Error('200 connections, none on this listener');
        const client = net.connect(port, '127.0.0.1');
        client.on('error', () => {});
        clients.push(client);
        const look = () => {
          if (mine.has(client.localPort)) return done();
          setImmediate(look);
        };
        client.once('data', () => { onOther++; next(); }); // greeted: the other instance's
        client.once('connect', look);
        async function done() {
          client.removeAllListeners('data');
          const { closeServer } = require(dist + '/index.js');
          const report = await closeServer(server, { timeout: 100 });
          console.log(JSON.stringify({ untracked: report.untracked, total: report.totals.total, onOther }));
          process.exit(0);
        }
      });`;
    try {
      await waitFor('three connections on this process', () => (held.length === 3 ? true : undefined));
      const dist = path.join(__dirname, '..', 'dist');
      const { stdout } = await promisify(execFile)(process.execPath, ['-e', script, String(port), dist], { timeout: 10_000 });
      const out = JSON.parse(stdout) as { untracked: number; total: number; onOther: number };
      // The child's one connection, not the 3 (+ onOther) this process holds on the same port.
      expect(out).toEqual({ untracked: 1, total: 0, onOther: out.onOther });
      expect(held.length).toBe(3 + out.onOther);
    } finally {
      for (const c of clients) c.destroy();
      for (const s of held) s.destroy();
      await new Promise((resolve) => other.close(resolve));
    }
  });

  it('stops accepting without resetting the connections waiting in the accept queue', async () => {
    const server = net.createServer();
    trackConnections(server);
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as net.AddressInfo;
    // Clients in another process connect while this event loop is blocked, so they wait in the
    // kernel's accept queue; each reports whether it saw FIN ('end') or RST.
    const script = `
      const net = require('node:net');
      const results = [];
      for (let i = 0; i < 5; i++) {
        const s = net.connect(${port}, '127.0.0.1');
        s.on('end', () => { results.push('end'); done(); });
        s.on('error', (e) => { results.push(e.code); done(); });
        s.resume();
      }
      function done() { if (results.length === 5) { console.log(JSON.stringify(results.sort())); process.exit(0); } }
      setTimeout(() => { console.log(JSON.stringify(results)); process.exit(1); }, 10000);`;
    const child = promisify(execFile)(process.execPath, ['-e', script]);
    const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
    void fd;
    const until = Date.now() + 5000;
    let queued = 0;
    while (Date.now() < until) {
      queued = sockets({ states: ['LISTEN'], localPort: port })[0]?.recvQ ?? 0;
      if (queued === 5) break; // blocking on purpose: nothing is accepted while we wait
    }
    expect(queued).toBe(5);
    const report = await closeServer(server);
    expect(report.acceptedFromQueue).toBe(5);
    expect(report).toMatchObject({ acceptQueue: 'drained', queuedAtClose: 0 });
    expect(report.totals.graceful).toBe(5);
    const { stdout } = await child;
    expect(JSON.parse(stdout)).toEqual(['end', 'end', 'end', 'end', 'end']);
  });

  it('rejects bad arguments with codes', async () => {
    await expect(closeServer({} as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    const server = net.createServer();
    await expect(closeServer(server, { timeout: -5 })).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
    await expect(closeServer(server, { drainWindow: 'x' as never })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    expect(() => trackConnections(3 as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
  });
});
