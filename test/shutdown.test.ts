/**
 * gracefulShutdown() in this process, on real loopback sockets: options refused with coded errors,
 * readiness and liveness, serving through the pre-stop delay, the report, the summary line, forcing
 * in each phase, signals (SIGUSR2 here, so that the test runner's own handlers are not involved),
 * dispose(); Express, Fastify, https and HTTP/2 servers; the handoff seen from the report. The process is
 * never exited here (`exit: false`); test/shutdown-signals.test.ts runs the examples as processes.
 */
import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import { once } from 'node:events';
import express from 'express';
import Fastify from 'fastify';
import { gracefulShutdown, listenReusePort, sockets, tcpInfo, tcpMigrateReq, type GracefulShutdownOptions, type ShutdownReport } from '../src/index';
import { summaryLine } from '../src/shutdown';
import { native } from '../src/binding';
import { sockaddr } from '../src/sockaddr';
import { waitFor } from './helpers';

interface Reply {
  status: number;
  body: string;
  connection: string | undefined;
}

/** One request; resolves with the reply, rejects with the error (ECONNRESET...). */
function request(port: number, path: string, agent: http.Agent | false = false): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.get({ port, host: '127.0.0.1', path, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode!, body, connection: res.headers.connection }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

async function listen(server: net.Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as net.AddressInfo).port;
}

/** An http.Server whose application logs the paths it sees; /hold is never answered. */
function app(): { server: http.Server; seen: string[] } {
  const seen: string[] = [];
  const server = http.createServer((req, res) => {
    seen.push(req.url ?? '');
    if (req.url !== '/hold') res.end('app\n');
  });
  return { server, seen };
}

/** Options for a shutdown that never exits this process and logs into `lines`. */
function quiet(lines: string[], more: GracefulShutdownOptions = {}): GracefulShutdownOptions {
  return { signals: [], exit: false, log: (line) => lines.push(line), ...more };
}

describe('gracefulShutdown(): arguments', () => {
  it('refuses a non-server and each bad option with a coded error, installing nothing', () => {
    const server = http.createServer();
    const before = process.listenerCount('SIGTERM');
    const refused = (options: unknown, code: string): void => {
      expect(() => gracefulShutdown(server, options as GracefulShutdownOptions), JSON.stringify(options)).toThrow(expect.objectContaining({ code }));
    };
    expect(() => gracefulShutdown({} as net.Server)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    refused(null, 'ERR_INVALID_ARG_TYPE');
    refused({ signals: 'SIGTERM' }, 'ERR_INVALID_ARG_TYPE');
    refused({ signals: [15] }, 'ERR_INVALID_ARG_TYPE');
    refused({ signals: ['SIGFOO'] }, 'ERR_UNKNOWN_SIGNAL');
    refused({ signals: ['SIGKILL'] }, 'ERR_INVALID_ARG_VALUE');
    refused({ preStopDelay: -1 }, 'ERR_OUT_OF_RANGE');
    refused({ preStopDelay: '5' }, 'ERR_INVALID_ARG_TYPE');
    refused({ timeout: Number.NaN }, 'ERR_INVALID_ARG_TYPE');
    refused({ drainWindow: 2 ** 31 }, 'ERR_OUT_OF_RANGE');
    refused({ readinessPath: 'readyz' }, 'ERR_INVALID_ARG_VALUE');
    refused({ readinessPath: '/readyz?x' }, 'ERR_INVALID_ARG_VALUE');
    refused({ livenessPath: 5 }, 'ERR_INVALID_ARG_TYPE');
    refused({ readinessPath: '/health', livenessPath: '/health' }, 'ERR_INVALID_ARG_VALUE');
    refused({ onShutdown: 'x' }, 'ERR_INVALID_ARG_TYPE');
    refused({ log: true }, 'ERR_INVALID_ARG_TYPE');
    refused({ logReport: 'yes' }, 'ERR_INVALID_ARG_TYPE');
    refused({ exit: 1 }, 'ERR_INVALID_ARG_TYPE');
    expect(process.listenerCount('SIGTERM')).toBe(before);
    expect(Object.prototype.hasOwnProperty.call(server, 'emit')).toBe(false);

    const shutdown = gracefulShutdown(server, { signals: [], exit: false, log: false });
    expect(() => shutdown.begin(5 as unknown as string)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => shutdown.force({} as unknown as string)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(shutdown.phase).toBe('serving');
  });
});

describe('gracefulShutdown(): readiness, the pre-stop delay, the report', () => {
  it('readiness turns false and /readyz 503 at the trigger, /livez stays 200, the server keeps serving through the delay, then every connection closes gracefully', async () => {
    const { server, seen } = app();
    const lines: string[] = [];
    const reports: ShutdownReport[] = [];
    const shutdown = gracefulShutdown(server, quiet(lines, { preStopDelay: 1500, readinessPath: '/readyz', livenessPath: '/livez', onShutdown: (r) => void reports.push(r) }));
    expect(shutdown.ready).toBe(false); // not listening yet
    const port = await listen(server);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      expect(shutdown.ready).toBe(true);
      expect(await request(port, '/readyz')).toMatchObject({ status: 200, body: 'ready\n' });
      expect(await request(port, '/readyz?verbose=1')).toMatchObject({ status: 200 });
      expect(await request(port, '/livez')).toMatchObject({ status: 200, body: 'alive\n' });
      expect(await request(port, '/', agent)).toMatchObject({ status: 200, body: 'app\n' }); // a keep-alive connection, idle from now on

      const done = shutdown.begin('test');
      expect(shutdown.phase).toBe('pre-stop');
      expect(shutdown.ready).toBe(false);
      expect(await request(port, '/readyz')).toEqual({ status: 503, body: 'shutting down\n', connection: 'close' });
      expect(await request(port, '/livez')).toMatchObject({ status: 200 });
      // Still serving, on new connections and on the kept-alive one.
      expect(await request(port, '/new')).toMatchObject({ status: 200, body: 'app\n' });
      expect(await request(port, '/again', agent)).toMatchObject({ status: 200, body: 'app\n' });
      expect(shutdown.phase).toBe('pre-stop');
      expect(shutdown.begin('ignored')).toBe(done);

      const report = await done;
      expect(report).toMatchObject({ trigger: 'test', clean: true, exitCode: 0 });
      expect(report.forcedBy).toBeUndefined();
      expect(report.preStop).toBeGreaterThanOrEqual(1500); // never early (timerAt())
      expect(report.duration).toBeGreaterThanOrEqual(report.preStop);
      expect(report.server!.totals).toMatchObject({ graceful: 1, resetSent: 0, total: 1 });
      expect(report.handoff).toEqual({ otherListeners: 0, migrateReq: tcpMigrateReq(), migrated: 0, migrationFailed: 0 });
      expect(reports).toEqual([report]);
      expect(shutdown.phase).toBe('closed');
      expect(server.listening).toBe(false);
      expect(seen).toEqual(['/', '/new', '/again']); // never the health paths
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/^finwait: shutdown on test: served \d+ ms more, then closed 1 connection in \d+ ms \(1 graceful, 0 reset sent, 0 reset by the peer\); clean, exit code 0$/);
    } finally {
      agent.destroy();
      server.close();
    }
  });

  it('logReport adds the whole report as JSON; an onShutdown that throws makes the exit code 1 and is logged', async () => {
    const { server } = app();
    const lines: string[] = [];
    await listen(server);
    const shutdown = gracefulShutdown(
      server,
      quiet(lines, {
        logReport: true,
        onShutdown: () => {
          throw new Error('database still busy');
        },
      }),
    );
    const report = await shutdown.begin();
    expect(report).toMatchObject({ trigger: 'begin()', clean: false, exitCode: 1, error: expect.objectContaining({ message: 'database still busy' }) });
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/clean, exit code 0$/); // the close itself was clean
    expect(JSON.parse(lines[1]!)).toMatchObject({ trigger: 'begin()', clean: true, exitCode: 0, server: { totals: { total: 0 } } });
    expect(lines[2]).toMatch(/^finwait: onShutdown threw: Error: database still busy/);
  });
});

describe('gracefulShutdown(): forcing', () => {
  it('during the pre-stop delay: the delay ends, what is open is reset at once; not clean, exit code 1', async () => {
    const { server, seen } = app();
    const lines: string[] = [];
    const port = await listen(server);
    const shutdown = gracefulShutdown(server, quiet(lines, { preStopDelay: 60_000 }));
    const held = request(port, '/hold').then(
      () => 'answered',
      (e: NodeJS.ErrnoException) => e.code,
    );
    await waitFor('the request held by the application', () => (seen.includes('/hold') ? true : undefined));
    const done = shutdown.begin('SIGTERM');
    expect(shutdown.phase).toBe('pre-stop');
    shutdown.force('a second SIGTERM');
    const report = await done;
    expect(report).toMatchObject({ trigger: 'SIGTERM', forcedBy: 'a second SIGTERM', clean: false, exitCode: 1 });
    expect(report.preStop).toBeLessThan(60_000);
    expect(report.server!.totals).toMatchObject({ resetSent: 1, total: 1 });
    expect(report.server!.connections[0]!.reason).toBe('aborted');
    expect(await held).toBe('ECONNRESET');
    expect(lines[0]).toMatch(/^finwait: shutdown on SIGTERM, forced by a second SIGTERM: .*1 reset sent.*; not clean, exit code 1$/);
    shutdown.force('again'); // nothing left to force
  });

  it('while closeServer() runs: resets at once instead of at its deadline', async () => {
    const { server, seen } = app();
    const port = await listen(server);
    const shutdown = gracefulShutdown(server, quiet([], { timeout: 60_000 }));
    const held = request(port, '/hold').then(
      () => 'answered',
      (e: NodeJS.ErrnoException) => e.code,
    );
    await waitFor('the request held by the application', () => (seen.includes('/hold') ? true : undefined));
    const done = shutdown.begin('test');
    await waitFor('closeServer() running', () => (shutdown.phase === 'closing' && !server.listening ? true : undefined));
    shutdown.force();
    const report = await done;
    expect(report).toMatchObject({ forcedBy: 'force()', exitCode: 1 });
    expect(report.server!.totals.resetSent).toBe(1);
    expect(report.server!.duration).toBeLessThan(60_000);
    expect(await held).toBe('ECONNRESET');
  });

  it('force() before any begin(): begins and forces, no pre-stop delay', async () => {
    const { server } = app();
    await listen(server);
    const shutdown = gracefulShutdown(server, quiet([], { preStopDelay: 60_000 }));
    shutdown.force('now');
    const report = await shutdown.begin('later');
    expect(report).toMatchObject({ trigger: 'now', forcedBy: 'now', exitCode: 1 });
    expect(report.preStop).toBeLessThan(60_000);
  });
});

describe('gracefulShutdown(): signals and dispose()', () => {
  it('the first signal begins, the second forces; dispose() removes the handlers and the health paths', async () => {
    const { server, seen } = app();
    const port = await listen(server);
    const before = process.listenerCount('SIGUSR2');
    const shutdown = gracefulShutdown(server, { signals: ['SIGUSR2'], exit: false, log: false, preStopDelay: 60_000, readinessPath: '/readyz' });
    expect(process.listenerCount('SIGUSR2')).toBe(before + 1);
    const held = request(port, '/hold').catch((e: NodeJS.ErrnoException) => e.code);
    await waitFor('the request held by the application', () => (seen.includes('/hold') ? true : undefined));
    process.kill(process.pid, 'SIGUSR2');
    await waitFor('the pre-stop phase', () => (shutdown.phase === 'pre-stop' ? true : undefined));
    expect(await request(port, '/readyz')).toMatchObject({ status: 503 });
    process.kill(process.pid, 'SIGUSR2');
    const report = await shutdown.begin();
    expect(report).toMatchObject({ trigger: 'SIGUSR2', forcedBy: 'SIGUSR2', exitCode: 1 });
    expect(await held).toBe('ECONNRESET');
    shutdown.dispose();
    shutdown.dispose(); // idempotent
    expect(process.listenerCount('SIGUSR2')).toBe(before);
    expect(Object.prototype.hasOwnProperty.call(server, 'emit')).toBe(false);
  });

  it('dispose() before a shutdown: the application sees /readyz again', async () => {
    const { server, seen } = app();
    const port = await listen(server);
    try {
      const shutdown = gracefulShutdown(server, quiet([], { readinessPath: '/readyz' }));
      expect(await request(port, '/readyz')).toMatchObject({ body: 'ready\n' });
      shutdown.dispose();
      expect(await request(port, '/readyz')).toMatchObject({ body: 'app\n' });
      expect(seen).toEqual(['/readyz']);
    } finally {
      server.close();
    }
  });
});

describe('gracefulShutdown() with frameworks and HTTP/2', () => {
  it('Express: the server app.listen() returns; health paths before Express; a kept-alive connection closed gracefully', async () => {
    const application = express();
    application.get('/', (_req, res) => void res.send('express\n'));
    const server = application.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as net.AddressInfo).port;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const shutdown = gracefulShutdown(server, quiet([], { readinessPath: '/readyz', livenessPath: '/livez', preStopDelay: 1500 }));
      expect(await request(port, '/', agent)).toMatchObject({ status: 200, body: 'express\n' });
      expect(await request(port, '/readyz')).toMatchObject({ status: 200 });
      const done = shutdown.begin('test');
      expect(await request(port, '/readyz')).toMatchObject({ status: 503 });
      const report = await done;
      expect(report).toMatchObject({ clean: true, exitCode: 0, server: { totals: { graceful: 1, total: 1 } } });
    } finally {
      agent.destroy();
      server.close();
    }
  });

  it("Fastify: fastify.server's connections closed, then fastify.close() runs its onClose hooks", async () => {
    const fastify = Fastify();
    fastify.get('/', async () => 'fastify\n');
    const order: string[] = [];
    fastify.addHook('onClose', async () => void order.push('onClose'));
    await fastify.listen({ port: 0, host: '127.0.0.1' });
    const port = (fastify.server.address() as net.AddressInfo).port;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    try {
      const shutdown = gracefulShutdown(
        fastify.server,
        quiet([], {
          readinessPath: '/readyz',
          onShutdown: async (report) => {
            order.push(`report ${report.server!.totals.graceful}/${report.server!.totals.total}`);
            await fastify.close();
          },
        }),
      );
      expect(await request(port, '/', agent)).toMatchObject({ status: 200, body: 'fastify\n' });
      expect(await request(port, '/readyz')).toMatchObject({ status: 200, body: 'ready\n' });
      const report = await shutdown.begin('test');
      expect(report).toMatchObject({ clean: true, exitCode: 0 });
      expect(order).toEqual(['report 1/1', 'onClose']);
    } finally {
      agent.destroy();
      await fastify.close();
    }
  });

  it('https: the health paths over TLS; a kept-alive TLS connection closed gracefully', async () => {
    const fixtures = path.join(__dirname, 'fixtures');
    const cert = fs.readFileSync(path.join(fixtures, 'cert.pem'));
    const server = https.createServer({ key: fs.readFileSync(path.join(fixtures, 'key.pem')), cert }, (_req, res) => res.end('tls\n'));
    const port = await listen(server);
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ca: cert, servername: 'localhost' });
    const get = (p: string, through: https.Agent): Promise<[number, string]> =>
      new Promise((resolve, reject) => {
        https
          .get({ port, host: '127.0.0.1', path: p, agent: through }, (res) => {
            let body = '';
            res.setEncoding('utf8');
            res.on('data', (d: string) => (body += d));
            res.on('end', () => resolve([res.statusCode!, body]));
          })
          .on('error', reject);
      });
    const probes = new https.Agent({ keepAlive: false, ca: cert, servername: 'localhost' });
    try {
      const shutdown = gracefulShutdown(server, quiet([], { readinessPath: '/readyz', preStopDelay: 1500 }));
      expect(await get('/', agent)).toEqual([200, 'tls\n']);
      const done = shutdown.begin('test');
      expect(await get('/readyz', probes)).toEqual([503, 'shutting down\n']);
      expect(await get('/', agent)).toEqual([200, 'tls\n']); // the kept-alive connection, still served
      const report = await done;
      expect(report).toMatchObject({ clean: true, exitCode: 0, server: { totals: { graceful: 1, total: 1 } } });
    } finally {
      agent.destroy();
      probes.destroy();
      server.close();
    }
  });

  it('HTTP/2 (h2c): the health paths through the compatibility API', async () => {
    const server = http2.createServer((_req, res) => res.end('h2\n'));
    const port = await listen(server);
    const shutdown = gracefulShutdown(server, quiet([], { readinessPath: '/readyz', livenessPath: '/livez', preStopDelay: 60_000 }));
    const get = async (path: string): Promise<[number, string]> => {
      const session = http2.connect(`http://127.0.0.1:${port}`);
      try {
        const stream = session.request({ ':path': path });
        const [headers] = (await once(stream, 'response')) as [http2.IncomingHttpHeaders];
        let body = '';
        stream.setEncoding('utf8');
        for await (const chunk of stream) body += chunk;
        return [Number(headers[':status']), body];
      } finally {
        session.close();
        await once(session, 'close');
      }
    };
    expect(await get('/readyz')).toEqual([200, 'ready\n']);
    expect(await get('/')).toEqual([200, 'h2\n']);
    const done = shutdown.begin('test');
    expect(await get('/readyz')).toEqual([503, 'shutting down\n']);
    expect(await get('/livez')).toEqual([200, 'alive\n']);
    shutdown.force('end of test');
    expect((await done).server?.totals.total).toBe(0);
  });
});

describe('gracefulShutdown() and the same-port handoff', () => {
  it('the report counts the other listener on the port, and the summary line says so', async () => {
    const old = http.createServer((_req, res) => res.end('old\n'));
    const next = http.createServer((_req, res) => res.end('new\n'));
    const { port } = await listenReusePort(old, { port: 0, host: '127.0.0.1' });
    await listenReusePort(next, { port, host: '127.0.0.1' });
    const lines: string[] = [];
    try {
      const report = await gracefulShutdown(old, quiet(lines)).begin('test');
      expect(report.handoff).toMatchObject({ otherListeners: 1, migrateReq: tcpMigrateReq() });
      expect(report.clean).toBe(true);
      expect(lines[0]).toMatch(/; 1 other listener on the port \(tcp_migrate_req (0|1|absent): \d+ migrated, \d+ not\); clean, exit code 0$/);
      // Where the kernel migrates, closeServer() left the accept queue to it, and the line says so.
      expect(report.server?.acceptQueue).toBe(tcpMigrateReq() === true ? 'migrated' : 'drained');
      expect(lines[0]!.includes('; accept queue left to the kernel to migrate (')).toBe(tcpMigrateReq() === true);
      expect(await request(port, '/')).toMatchObject({ body: 'new\n' });
    } finally {
      next.close();
    }
  });
});

describe('gracefulShutdown(): the summary line and the accept queue', () => {
  /** A report of a shutdown that closed no connection, with the accept queue as given. */
  function withQueue(acceptQueue: 'drained' | 'migrated', queuedAtClose: number, handshakesAtClose = acceptQueue === 'drained' ? 0 : -1): ShutdownReport {
    const totals = { graceful: 0, interrupted: 0, handedOff: 0, resetSent: 0, resetReceived: 0, destroyed: 0, total: 0 };
    const server = { totals, duration: 3, acceptedFromQueue: 0, acceptQueue, queuedAtClose, handshakesAtClose, untracked: 0, kernelView: true, connections: [] };
    return { trigger: 'SIGTERM', preStop: 0, handoff: { otherListeners: 1, migrateReq: acceptQueue === 'migrated', migrated: 0, migrationFailed: 0 }, server, duration: 3, clean: true, exitCode: 0 };
  }

  it('counts the idle connections handed open to the next instance', () => {
    const report = withQueue('migrated', 0);
    Object.assign(report.server!.totals, { graceful: 1, handedOff: 2, total: 3 });
    expect(summaryLine(report)).toContain(', then closed or handed off 3 connections in 3 ms (1 graceful, 0 reset sent, 0 reset by the peer, 2 handed off open to the next instance);');
    expect(summaryLine(withQueue('migrated', 0))).toContain(', then closed 0 connections in 3 ms (0 graceful, 0 reset sent, 0 reset by the peer);');
  });

  it('says when the queue was left to the kernel, and how many connections a drain could not save', () => {
    expect(summaryLine(withQueue('migrated', 2))).toContain('; accept queue left to the kernel to migrate (2 connections in it at the close); 1 other listener');
    expect(summaryLine(withQueue('migrated', -1))).toContain('(length unknown at the close)');
    expect(summaryLine(withQueue('drained', 1))).toContain('; 1 connection still in the accept queue at the close (reset by the kernel)');
    expect(summaryLine(withQueue('drained', 0))).not.toContain('accept queue');
    expect(summaryLine(withQueue('drained', 0, 2))).toContain('; 2 handshakes still under way at the close (the client reset when its last ACK comes)');
    expect(summaryLine(withQueue('drained', 0, 0))).not.toContain('handshake');
  });

  it('connections the drain could not take in before the listener closed: reset by the kernel, counted in queuedAtClose, and the shutdown is not clean', async () => {
    // A listener nobody accepts from yet (listen(2) on a raw fd): three clients wait in its queue.
    const fd = native().reusePortSocket(native().constants.AF_INET);
    native().bind(fd, sockaddr('127.0.0.1', 0));
    native().listen(fd, 16);
    const inode = fs.fstatSync(fd).ino;
    const port = sockets({ states: ['LISTEN'] }).find((s) => s.inode === inode)!.local.port;
    const clients = Array.from({ length: 3 }, () => net.connect(port, '127.0.0.1'));
    const ended = clients.map((c) => new Promise<string>((resolve) => c.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message)).on('end', () => resolve('end'))));
    const server = http.createServer((_req, res) => res.end('ok'));
    const lines: string[] = [];
    try {
      await waitFor('three connections in the accept queue', () => (tcpInfo(fd).unacked === 3 ? true : undefined));
      // Node takes the listener, and the shutdown begins before its first accept; a drain window
      // of 0 leaves no time to take the queue in.
      server.listen({ fd });
      const report = await gracefulShutdown(server, quiet(lines, { drainWindow: 0 })).begin('test');
      expect(report.server).toMatchObject({ acceptQueue: 'drained', queuedAtClose: 3, acceptedFromQueue: 0 });
      expect(report.server!.totals.resetSent).toBe(0); // not ours: the kernel's
      expect(await Promise.all(ended)).toEqual(['ECONNRESET', 'ECONNRESET', 'ECONNRESET']);
      expect(report).toMatchObject({ clean: false, exitCode: 1 });
      expect(lines[0]).toMatch(/; 3 connections still in the accept queue at the close \(reset by the kernel\); not clean, exit code 1$/);
    } finally {
      for (const c of clients) c.destroy();
      server.close();
    }
  });
});
