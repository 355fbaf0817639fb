/**
 * Idle keep-alive connections handed to the next instance on the same port, on real kernel
 * sockets: the next instance is a child process listening with `listenReusePort(..., {
 * adoptConnections: true })`; this process's server shuts down with closeServer(). The clients'
 * connections never close: their next requests are served by the child on the same sockets.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { Worker } from 'node:worker_threads';
import { once } from 'node:events';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { closeServer, listenReusePort, sockets } from '../src/index';
import { waitFor } from './helpers';

const dist = path.join(__dirname, '..', 'dist', 'index.js');

/** Answers `<name> <pid> <bytes of the body>`. */
function app(name: string): http.Server {
  return http.createServer((req, res) => {
    let bytes = 0;
    req.on('data', (d: Buffer) => (bytes += d.length));
    req.on('end', () => res.end(`${name} ${process.pid} ${bytes}`));
  });
}

const children: ChildProcess[] = [];
afterEach(() => {
  for (const child of children.splice(0)) child.kill('SIGKILL');
});

/** The next instance: a child process serving app('new') on the port, adopting connections. */
async function nextInstance(
  port: number,
  maxConnections = 0,
): Promise<{ child: ChildProcess; block(): Promise<() => void>; stop(): Promise<{ handedOff: number; total: number }> }> {
  const script = `
    const http = require('node:http');
    const finwait = require(${JSON.stringify(dist)});
    const server = http.createServer((req, res) => {
      let bytes = 0;
      req.on('data', (d) => (bytes += d.length));
      req.on('end', () => res.end('new ' + process.pid + ' ' + bytes));
    });
    if (${maxConnections} > 0) server.maxConnections = ${maxConnections};
    finwait.listenReusePort(server, { port: ${port}, host: '127.0.0.1', adoptConnections: true })
      .then(() => process.send({ ready: true }), (e) => process.send({ error: e.message }));
    process.on('message', async (m) => {
      if (m && m.blockUntil) {
        // Stuck: the loop does not turn until the test makes the file m.blockUntil.
        process.send('blocked', () => {
          while (!require('node:fs').existsSync(m.blockUntil));
        });
        return;
      }
      const report = await finwait.closeServer(server, { timeout: 2000 });
      process.send({ totals: report.totals }, () => process.exit(0));
    });
    process.on('disconnect', () => process.exit(3));`;
  const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  children.push(child);
  const [message] = (await once(child, 'message')) as [{ ready?: boolean; error?: string }];
  if (!message.ready) throw new Error(`the next instance did not start: ${message.error}`);
  let blockDir: string | undefined;
  return {
    child,
    /** Sticks the child's loop; resolves once it is stuck, with the call that unsticks it. */
    async block() {
      blockDir = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-block-'));
      const flag = path.join(blockDir, 'go');
      child.send({ blockUntil: flag });
      await once(child, 'message'); // 'blocked'
      return () => fs.writeFileSync(flag, '');
    },
    async stop() {
      child.send('stop');
      const [reply] = (await once(child, 'message')) as [{ totals: { handedOff: number; total: number } }];
      if (blockDir !== undefined) fs.rmSync(blockDir, { recursive: true, force: true }); // read by now
      return reply.totals;
    },
  };
}

/** One request on a keep-alive agent: the body and the client's local port (which connection). */
function request(port: number, agent: http.Agent, method = 'GET', body = ''): Promise<{ body: string; localPort: number }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ port, host: '127.0.0.1', method, agent, path: '/' }, (res) => {
      const localPort = res.socket.localPort ?? 0;
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (text += d));
      res.on('end', () => resolve({ body: text, localPort }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/**
 * The old instance: app('old') listening with SO_REUSEPORT, and a keep-alive agent holding `count`
 * idle connections to it, each after one request; the answers.
 */
async function oldWithIdle(count: number): Promise<{ old: http.Server; port: number; agent: http.Agent; first: { body: string; localPort: number }[] }> {
  const old = app('old');
  const { port } = await listenReusePort(old, { port: 0, host: '127.0.0.1' });
  const agent = new http.Agent({ keepAlive: true, maxSockets: count });
  const first = await Promise.all(Array.from({ length: count }, () => request(port, agent)));
  return { old, port, agent, first };
}

describe('closeServer() hands idle keep-alive connections to the next instance (adoptConnections)', () => {
  it('the connections stay open and the next instance serves their next requests on the same sockets', async () => {
    const { old, port, agent, first } = await oldWithIdle(3);
    expect(first.every((r) => r.body.startsWith(`old ${process.pid}`))).toBe(true);
    const clientPorts = new Set(first.map((r) => r.localPort));
    expect(clientPorts.size).toBe(3);
    const ended: number[] = [];
    for (const list of Object.values(agent.freeSockets)) for (const s of list ?? []) s.on('end', () => ended.push(s.localPort ?? 0));

    const next = await nextInstance(port);
    const report = await closeServer(old);
    expect(report.totals).toMatchObject({ handedOff: 3, graceful: 0, resetSent: 0, total: 3 });
    expect(report.connections.map((c) => [c.outcome, c.reason])).toEqual(Array(3).fill(['handed-off', 'handed-off']));
    // Nothing went on the wire: the client's connections are still established, none saw a FIN.
    const established = sockets({ states: ['ESTABLISHED'], localPort: port });
    for (const p of clientPorts) expect(established.some((s) => s.remote.port === p)).toBe(true);

    const after = await Promise.all([request(port, agent, 'POST', 'x'.repeat(1000)), request(port, agent), request(port, agent)]);
    expect(after.map((r) => r.body.split(' ')[0])).toEqual(['new', 'new', 'new']);
    expect(after.every((r) => r.body.split(' ')[1] === String(next.child.pid))).toBe(true);
    expect(after[0]!.body.endsWith(' 1000')).toBe(true);
    expect(new Set(after.map((r) => r.localPort))).toEqual(clientPorts);
    expect(ended).toEqual([]);
    // The next instance's own shutdown finds the connections it adopted, and closes them.
    const totals = await next.stop();
    expect(totals.total).toBe(3);
    agent.destroy();
  });

  it('requests sent while the shutdown hands connections over are never lost: shutdowns with a POST on every idle connection, sent at moments spread over the handoff', async () => {
    const servedBy = { old: 0, new: 0 };
    let handedOff = 0;
    let rounds = 0;
    // Round r sends its requests 0.25 × (1.15^r − 1) ms after the call (0, 0.04, 0.08, ... 3.3 ms
    // by round 19, growing on to 200 ms for a slow machine), the event loop turning meanwhile: the
    // first ones are read by the old instance before it hands anything over, later ones go while
    // it hands over or after (in the kernel's buffer as the fd moves, or sent once it moved). At
    // least 20 rounds, and on until both instances answered.
    for (; rounds < 20 || ((servedBy.new === 0 || servedBy.old === 0) && rounds < 80); rounds++) {
      const { old, port, agent } = await oldWithIdle(4);
      const next = await nextInstance(port);
      const start = performance.now();
      const closing = closeServer(old);
      const delay = Math.min(0.25 * (1.15 ** rounds - 1), 200);
      while (performance.now() - start < delay) await new Promise(setImmediate);
      const racing = Array.from({ length: 4 }, () => request(port, agent, 'POST', 'y'.repeat(4096)));
      const report = await closing;
      const answers = await Promise.all(racing);
      for (const a of answers) {
        expect(a.body).toMatch(/^(old|new) \d+ 4096$/);
        servedBy[a.body.startsWith('new') ? 'new' : 'old']++;
      }
      expect(report.totals.resetSent + report.totals.interrupted).toBe(0);
      handedOff += report.totals.handedOff;
      agent.destroy();
      await next.stop();
    }
    // Requests sent while closeServer() was under way were answered by both instances, none lost.
    expect({ old: servedBy.old > 0, new: servedBy.new > 0, handedOff: handedOff > 0 }).toEqual({ old: true, new: true, handedOff: true });
  }, 60_000);

  it('a request begun (headers half sent) is not handed over: the old instance serves it with Connection: close', async () => {
    const old = app('old');
    const { port } = await listenReusePort(old, { port: 0, host: '127.0.0.1' });
    const client = net.connect(port, '127.0.0.1');
    await once(client, 'connect');
    let reply = '';
    client.setEncoding('utf8').on('data', (d: string) => (reply += d));
    client.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    await waitFor('the first answer', () => (reply.includes(`old ${process.pid} 0`) ? true : undefined));
    const next = await nextInstance(port);
    reply = '';
    client.write('POST / HTTP/1.1\r\nHost: x\r\nContent-Le');
    // The half request is read by the old instance (Node's parser has begun a message).
    await waitFor('the half request read', () => (sockets({ states: ['ESTABLISHED'], localPort: port }).some((s) => s.remote.port === client.localPort && s.recvQ === 0) ? true : undefined));
    const closing = closeServer(old);
    // The rest goes once the shutdown is under way: the old instance's listener is gone (the
    // next instance's alone listens on the port).
    await waitFor('the old listener closed', () => (sockets({ states: ['LISTEN'], localPort: port }).length === 1 ? true : undefined));
    client.write('ngth: 3\r\n\r\nabc');
    const report = await closing;
    expect(reply).toMatch(/^HTTP\/1\.1 200/);
    expect(reply.toLowerCase()).toContain('connection: close');
    expect(reply).toContain(`old ${process.pid} 3`);
    expect(report.totals).toMatchObject({ graceful: 1, handedOff: 0, total: 1 });
    client.destroy();
    await next.stop();
  });

  it("an adopter takes no more than its server's maxConnections: the rest stay with the old instance, which closes them itself", async () => {
    const { old, port, agent } = await oldWithIdle(3);
    const next = await nextInstance(port, 1);
    const report = await closeServer(old, { drainWindow: 50 });
    expect(report.totals).toMatchObject({ handedOff: 1, graceful: 2, resetSent: 0, total: 3 });
    agent.destroy();
    await next.stop();
  });

  it('an instance whose own closeServer() began adopts nothing more: the old one closes its connections itself', async () => {
    const { old, port, agent } = await oldWithIdle(2);
    const next = await nextInstance(port);
    await next.stop();
    const report = await closeServer(old, { drainWindow: 50 });
    expect(report.totals).toMatchObject({ handedOff: 0, graceful: 2, total: 2 });
    agent.destroy();
  });

  it('an adopter that does not acknowledge in time (its loop stuck) gets nothing: the old one keeps and closes its connections, the adopter closes its copies unread', async () => {
    const { old, port, agent } = await oldWithIdle(2);
    const ends: Promise<unknown>[] = [];
    for (const list of Object.values(agent.freeSockets)) for (const socket of list ?? []) ends.push(once(socket, 'close'));
    const next = await nextInstance(port);
    const unblock = await next.block();
    const report = await closeServer(old, { drainWindow: 100 });
    unblock();
    expect(report.totals).toMatchObject({ handedOff: 0, graceful: 2, resetSent: 0, total: 2 });
    // The clients' connections end (no process keeps them half open), and the adopter, awake
    // again, owns none of them.
    await Promise.all(ends);
    const totals = await next.stop();
    expect(totals.total).toBe(0);
    agent.destroy();
  });

  it('an adopter in a Worker that ended is gone with it: nothing is sent to it', async () => {
    const { old, port, agent } = await oldWithIdle(2);
    const worker = new Worker(
      `const http = require('node:http');
       const { parentPort } = require('node:worker_threads');
       const finwait = require(${JSON.stringify(dist)});
       const server = http.createServer((req, res) => res.end('worker'));
       finwait.listenReusePort(server, { port: ${port}, host: '127.0.0.1', adoptConnections: true }).then(() => parentPort.postMessage('ready'));`,
      { eval: true },
    );
    await once(worker, 'message');
    // It offers (its name is in the table of Unix sockets), then is gone with the Worker.
    const offered = (): boolean => fs.readFileSync('/proc/net/unix', 'utf8').includes(`/127.0.0.1/${port}/${process.pid}.`);
    expect(offered()).toBe(true);
    await worker.terminate();
    await waitFor('the offer gone', () => (offered() ? undefined : true));
    const report = await closeServer(old, { drainWindow: 50 });
    expect(report.totals).toMatchObject({ handedOff: 0, graceful: 2, total: 2 });
    agent.destroy();
  });

  it('bad options get coded errors, and only a plain http.Server adopts', async () => {
    const server = http.createServer();
    await expect(listenReusePort(server, { port: 0, adoptConnections: 'yes' as unknown as boolean })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    await expect(listenReusePort(https.createServer(), { port: 0, adoptConnections: true })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    await expect(listenReusePort(net.createServer(), { port: 0, adoptConnections: true })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_VALUE' });
    expect(server.listening).toBe(false);
  });

  it("the table of Unix sockets is read only for a listener that shares its port (SO_REUSEPORT): no other process can listen on another's port", async () => {
    const read = vi.spyOn(fs.promises, 'readFile');
    const unixTableReads = (): number => read.mock.calls.filter(([file]) => file === '/proc/net/unix').length;
    const agents: http.Agent[] = [];
    try {
      const plain = app('plain');
      plain.listen(0, '127.0.0.1');
      await once(plain, 'listening');
      const agent = new http.Agent({ keepAlive: true });
      agents.push(agent);
      await request((plain.address() as net.AddressInfo).port, agent);
      expect((await closeServer(plain)).totals).toMatchObject({ graceful: 1, total: 1 });
      expect(unixTableReads()).toBe(0);
      // The same with SO_REUSEPORT: the table is read, looking for a next instance.
      const { old, agent: shared } = await oldWithIdle(1);
      agents.push(shared);
      expect((await closeServer(old)).totals).toMatchObject({ graceful: 1, total: 1 });
      expect(unixTableReads()).toBe(1);
    } finally {
      for (const agent of agents) agent.destroy();
      read.mockRestore();
    }
  });
});
