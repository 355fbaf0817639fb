/**
 * The same-port handoff on real kernel sockets: listenReusePort() through Node's own option (Node
 * 22.12+) and through the addon's socket (every Node), two servers sharing a port, the old one
 * closed by closeServer() while clients keep connecting; and in the lab, with
 * net.ipv4.tcp_migrate_req=1 in the listeners' namespace, the same close under a connect loop.
 */
import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { once } from 'node:events';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { closeServer, listenReusePort, tcpMigrateReq } from '../src/index';
import { native } from '../src/binding';
import { handoffState, listenThrough, NODE_HAS_REUSE_PORT, type ReusePortMethod } from '../src/handoff';
import { sockaddr } from '../src/sockaddr';
import { waitFor } from './helpers';
import { itLab, itNeedsLab } from './testing/helpers';

const methods: ReusePortMethod[] = NODE_HAS_REUSE_PORT ? ['node', 'addon'] : ['addon'];

/** An http.Server answering every request with its own name. */
function named(name: string): http.Server {
  return http.createServer((_req, res) => res.end(name));
}

async function closed(...servers: net.Server[]): Promise<void> {
  await Promise.all(servers.filter((s) => s.listening).map((s) => new Promise((resolve) => s.close(resolve))));
}

/** One GET on a new connection (`Connection: close`): the body, or the error's code. */
function get(port: number, host = '127.0.0.1'): Promise<string> {
  return new Promise((resolve) => {
    const req = http.get({ port, host, agent: false, headers: { connection: 'close' } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve(body));
      res.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    });
    req.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
}

/** `count` loops of get() until stopped; every outcome in order. */
function connectLoops(count: number, port: number, host?: string): { outcomes: string[]; stop(): Promise<void> } {
  const outcomes: string[] = [];
  let running = true;
  const loops = Array.from({ length: count }, async () => {
    while (running) outcomes.push(await get(port, host));
  });
  return {
    outcomes,
    async stop() {
      running = false;
      await Promise.all(loops);
    },
  };
}

describe('listenReusePort(): arguments', () => {
  it('refuses what is not a server, bad options, and a server already listening, with Node-style codes', async () => {
    const server = named('a');
    await expect(listenReusePort({} as net.Server, { port: 0 })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    await expect(listenReusePort(server, undefined as unknown as { port: number })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    await expect(listenReusePort(server, {} as { port: number })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE', message: expect.stringContaining('options.port') });
    await expect(listenReusePort(server, { port: 65536 })).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
    await expect(listenReusePort(server, { port: 1.5 })).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
    await expect(listenReusePort(server, { port: 0, host: '' })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    await expect(listenReusePort(server, { port: 0, backlog: -1 })).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
    await expect(listenReusePort(server, { port: 0, backlog: '5' as unknown as number })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    expect(server.listening).toBe(false);
    await listenReusePort(server, { port: 0, host: '127.0.0.1' });
    try {
      await expect(listenReusePort(server, { port: 0 })).rejects.toMatchObject({ code: 'ERR_SERVER_ALREADY_LISTEN' });
    } finally {
      await closed(server);
    }
  });
});

describe.each(methods)('listenReusePort() through %s', (method) => {
  it('two servers share the port and both get connections; a listener without SO_REUSEPORT is refused', async () => {
    const a = named('a');
    const b = named('b');
    const plain = http.createServer();
    try {
      const { port } = await listenThrough(a, method, 0, '127.0.0.1', 511);
      expect(await listenThrough(b, method, port, '127.0.0.1', 511)).toEqual({ address: '127.0.0.1', family: 'IPv4', port });
      // The kernel spreads new connections over the group by a hash of their addresses: in 200
      // connections, each server gets one unless the group is broken (or with odds of 2^-199).
      const outcomes = new Set<string>();
      for (let i = 0; i < 200 && outcomes.size < 2; i++) outcomes.add(await get(port));
      expect([...outcomes].sort()).toEqual(['a', 'b']);
      plain.listen(port, '127.0.0.1');
      const [error] = (await once(plain, 'error')) as [NodeJS.ErrnoException];
      expect(error.code).toBe('EADDRINUSE');
    } finally {
      await closed(a, b, plain);
    }
  });

  it('refuses to join a port held by a listener without SO_REUSEPORT: EADDRINUSE', async () => {
    const plain = http.createServer();
    const late = named('late');
    try {
      plain.listen(0, '127.0.0.1');
      await once(plain, 'listening');
      const { port } = plain.address() as net.AddressInfo;
      await expect(listenThrough(late, method, port, '127.0.0.1', 511)).rejects.toMatchObject({ code: 'EADDRINUSE', syscall: method === 'addon' ? 'bind' : 'listen' });
      expect(late.listening).toBe(false);
    } finally {
      await closed(plain, late);
    }
  });
});

describe('the handoff on loopback: the old server closes while the new one listens', () => {
  it('no connection is refused; after the close every new one reaches the new server; the old one reports the other listener', async () => {
    const a = named('a');
    const b = named('b');
    const { port } = await listenReusePort(a, { port: 0, host: '127.0.0.1' });
    await listenReusePort(b, { port, host: '127.0.0.1' });
    const clients = connectLoops(4, port);
    try {
      await waitFor('both servers serving', () => (clients.outcomes.includes('a') && clients.outcomes.includes('b') ? true : undefined), 10_000);
      expect(handoffState(a)).toEqual({ otherListeners: 1, migrateReq: tcpMigrateReq() });
      const report = await closeServer(a, { timeout: 5000 });
      expect(report.acceptQueue).toBe(tcpMigrateReq() === true ? 'migrated' : 'drained');
      const atClose = clients.outcomes.length;
      await waitFor('100 requests after the close', () => (clients.outcomes.length >= atClose + 100 ? true : undefined), 10_000);
      await clients.stop();
      // Where tcp_migrate_req is 0, a connection that completes its handshake on the old listener
      // between the end of closeServer()'s drain and close(2) is reset by the kernel (the lab test
      // below and test/kernel/reuseport-migrate.test.ts prove both cases); it is never refused.
      const failures = clients.outcomes.filter((o) => o !== 'a' && o !== 'b');
      expect(failures.filter((f) => f !== 'ECONNRESET' || tcpMigrateReq() === true)).toEqual([]);
      // At most one request per loop was still in flight to the old server at the close.
      expect(clients.outcomes.slice(atClose + 4).filter((o) => o === 'a')).toEqual([]);
      expect(report.totals.resetSent).toBe(0);
      expect(a.listening).toBe(false);
      expect(b.listening).toBe(true);
      expect(handoffState(a).otherListeners).toBe(-1); // not listening any more
      expect(handoffState(b).otherListeners).toBe(0);
    } finally {
      await clients.stop();
      await closed(a, b);
    }
  });

  it('tcpMigrateReq() reads this namespace\'s net.ipv4.tcp_migrate_req', () => {
    const file = '/proc/sys/net/ipv4/tcp_migrate_req';
    expect(tcpMigrateReq()).toBe(fs.existsSync(file) ? fs.readFileSync(file, 'utf8').trim() !== '0' : undefined);
  });
});

describe('the handoff in the lab, tcp_migrate_req=1 in the listeners\' namespace', () => {
  itLab('closeServer() on one of two listeners under a connect loop: every request is answered, none reset or refused', async (lab) => {
    expect(lab.b.sysctl('net.ipv4.tcp_migrate_req', 1)).toBe('1');
    const nsFd = fs.openSync(path.join('/run/netns', lab.b.netns), 'r');
    const a = named('a');
    const b = named('b');
    let clients: ReturnType<typeof connectLoops> | undefined;
    try {
      // The listeners in b's namespace (sockets made there), the clients in a's: their connects
      // are made from lab.a through its own sockets, so a plain loop over the wire is used here.
      for (const server of [a, b]) {
        const fd = native().reusePortSocket(native().constants.AF_INET, nsFd);
        native().bind(fd, sockaddr('0.0.0.0', 80));
        server.listen({ fd });
        await once(server, 'listening');
      }
      clients = labConnectLoops(lab, 4);
      await waitFor('both servers serving', () => (clients!.outcomes.includes('a') && clients!.outcomes.includes('b') ? true : undefined), 10_000);
      // This process lives in another namespace than these listeners (tcp_migrate_req 0 here, and
      // sock_diag shows it no other listener), so closeServer() drains; the kernel of b's namespace
      // still migrates what arrives between the drain and close(2). The decision itself is tested
      // below, in a process inside the namespace.
      const report = await closeServer(a, { timeout: 5000 });
      expect(report.acceptQueue).toBe('drained');
      const atClose = clients.outcomes.length;
      await waitFor('60 requests after the close', () => (clients!.outcomes.length >= atClose + 60 ? true : undefined), 10_000);
      await clients.stop();
      expect(clients.outcomes.filter((o) => o !== 'a' && o !== 'b')).toEqual([]);
      expect(report.totals.resetSent).toBe(0);
    } finally {
      await clients?.stop();
      await closed(a, b);
      fs.closeSync(nsFd);
    }
  });
});

/** connectLoops() from host a of the lab to b:80: each request on a socket lab.a makes. */
function labConnectLoops(lab: import('../src/testing/index').Lab, count: number): { outcomes: string[]; stop(): Promise<void> } {
  const outcomes: string[] = [];
  let running = true;
  const one = async (): Promise<string> => {
    let socket: net.Socket;
    try {
      socket = await lab.a.connect(80);
    } catch (error) {
      return (error as NodeJS.ErrnoException).code ?? String(error);
    }
    return new Promise((resolve) => {
      let text = '';
      socket.setEncoding('latin1');
      socket.on('data', (d: string) => (text += d));
      socket.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      socket.on('end', () => {
        socket.end();
        resolve(/\r\n\r\n(.*)$/s.exec(text)?.[1] ?? `no response (${JSON.stringify(text.slice(0, 40))})`);
      });
      socket.write('GET / HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n');
    });
  };
  const loops = Array.from({ length: count }, async () => {
    while (running) outcomes.push(await one());
  });
  return {
    outcomes,
    async stop() {
      running = false;
      await Promise.all(loops);
    },
  };
}

/**
 * A process in a network namespace of its own (`unshare -n`, loopback up, `tcp_migrate_req` set
 * there only): an http server whose listener already has three connections (each with its
 * request) waiting in its accept queue, a second server joining the port, then closeServer() on
 * the first. Prints what the clients got and the report.
 */
const queueScript = `
  const http = require('node:http');
  const dist = process.argv[1];
  const { closeServer, listenReusePort, tcpInfo, tcpMigrateReq } = require(dist + '/index.js');
  const { migrationCounters } = require(dist + '/handoff.js');
  const { native } = require(dist + '/binding.js');
  const { sockaddr } = require(dist + '/sockaddr.js');
  const PORT = 8080;
  const get = () => new Promise((resolve) => {
    http.get({ port: PORT, host: '127.0.0.1', agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d) => (body += d)).on('end', () => resolve(body));
    }).on('error', (e) => resolve(e.code));
  });
  (async () => {
    const old = http.createServer((req, res) => res.end('old'));
    const next = http.createServer((req, res) => res.end('new'));
    // The old server's listening socket, listening before Node takes it: nobody accepts yet.
    const fd = native().reusePortSocket(native().constants.AF_INET);
    native().bind(fd, sockaddr('127.0.0.1', PORT));
    native().listen(fd, 511);
    const answers = Promise.all([get(), get(), get()]);
    const deadline = Date.now() + 5000;
    while (tcpInfo(fd).unacked < 3 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 1));
    const queued = tcpInfo(fd).unacked;
    // The next version joins the port: new connections may go to it, the queued ones are the old one's.
    await listenReusePort(next, { port: PORT, host: '127.0.0.1' });
    const before = migrationCounters();
    old.listen({ fd }); // Node takes the listener; closeServer() runs before its first accept
    const report = await closeServer(old, { timeout: 5000 });
    const after = migrationCounters();
    const bodies = (await answers).sort();
    await new Promise((r) => next.close(r));
    console.log(JSON.stringify({
      migrateReq: tcpMigrateReq(), queued, bodies, migrated: after.migrated - before.migrated,
      acceptQueue: report.acceptQueue, queuedAtClose: report.queuedAtClose,
      acceptedFromQueue: report.acceptedFromQueue, totals: report.totals,
    }));
  })().catch((e) => { console.error(e); process.exit(1); });`;

describe("closeServer() and the accept queue on a shared port, in a namespace of its own", () => {
  for (const migrate of [1, 0] as const) {
    itNeedsLab(
      migrate
        ? 'tcp_migrate_req=1: no drain, the listener closes at once and the kernel moves the three queued connections to the other listener; reported as migrated with queuedAtClose 3'
        : 'tcp_migrate_req=0: the three queued connections are drained and served before the listener closes; queuedAtClose 0',
      async () => {
        const dist = path.join(__dirname, '..', 'dist');
        const { stdout } = await promisify(execFile)(
          'unshare',
          ['-n', 'sh', '-c', 'ip link set lo up && echo "$1" > /proc/sys/net/ipv4/tcp_migrate_req && shift && exec "$@"', 'sh', String(migrate), process.execPath, '-e', queueScript, dist],
          { timeout: 20_000 },
        );
        const out = JSON.parse(stdout);
        expect(out.migrateReq).toBe(migrate === 1);
        expect(out.queued).toBe(3);
        if (migrate) {
          // Every queued client was answered by the other server: the kernel moved them (its counter says 3).
          expect(out).toMatchObject({ bodies: ['new', 'new', 'new'], migrated: 3, acceptQueue: 'migrated', queuedAtClose: 3, acceptedFromQueue: 0 });
          expect(out.totals.total).toBe(0);
        } else {
          expect(out).toMatchObject({ bodies: ['old', 'old', 'old'], migrated: 0, acceptQueue: 'drained', queuedAtClose: 0, acceptedFromQueue: 3 });
          expect(out.totals).toMatchObject({ graceful: 3, total: 3, resetSent: 0 });
        }
      },
      30_000,
    );
  }
});
