import { describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import type http from 'node:http';
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import { closeServer, tcpState } from '../src/index';
import { createApp } from '../bench/shutdown-app.mjs';
import { waitFor } from './helpers';

// The small version of bench/shutdown.mjs: the same handlers (bench/shutdown-app.mjs) and the same
// client (bench/shutdown-client.mjs, in its own process, classifying every request itself) on
// real loopback sockets, against closeServer only.

const clientScript = path.join(__dirname, '..', 'bench', 'shutdown-client.mjs');

type Row = [id: string, kind: string, cls: string, status: number, at: number];

/** The load client in its own process; resolves its messages by type. */
function loadClient(config: Record<string, unknown>): { proc: ChildProcess; message: (type: string) => Promise<Record<string, unknown>> } {
  const proc = spawn(process.execPath, [clientScript], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const inbox: Record<string, unknown>[] = [];
  const waiting: { type: string; resolve: (m: Record<string, unknown>) => void }[] = [];
  proc.on('message', (m: Record<string, unknown>) => {
    const i = waiting.findIndex((w) => w.type === m.type);
    if (i >= 0) waiting.splice(i, 1)[0]!.resolve(m);
    else inbox.push(m);
  });
  proc.send(config);
  return {
    proc,
    message: (type) => {
      const i = inbox.findIndex((m) => m.type === type);
      if (i >= 0) return Promise.resolve(inbox.splice(i, 1)[0]!);
      return new Promise((resolve) => waiting.push({ type, resolve }));
    },
  };
}

const fixtures = path.join(__dirname, 'fixtures');
const tlsOptions = { key: fs.readFileSync(path.join(fixtures, 'key.pem')), cert: fs.readFileSync(path.join(fixtures, 'cert.pem')) };

for (const secure of [false, true]) {
  describe(`closeServer under load (keep-alive clients in another process, ${secure ? 'https' : 'http'})`, () => {
    it('loses no finished response, resets no POST, fails no request, reports every connection and says graceful only for those', async () => {
      const { server, log, connections } = createApp(secure ? { tls: tlsOptions } : {});
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      const { port } = server.address() as net.AddressInfo;
      // Every connection the server had open at the trigger or accepted after it, by peer port.
      const seen = new Set<number>();
      server.on('connection', (s: net.Socket) => seen.add(s.remotePort!));

      const client = loadClient({ mode: 'load', host: '127.0.0.1', port, secure, connections: 10, maxRequestsPerLoop: 60, thinkEvery: 0, maxMs: 15_000 });
      try {
        await client.message('ready');
        await waitFor('100 responses finished', () => (log.finished.length >= 100 ? true : undefined), 10_000);
        for (const s of connections.open) seen.add(s.remotePort!);
        const openAtTrigger = [...connections.open].map((s) => s.remotePort!);
        const finishedAtTrigger = log.finished.length;

        const report = await closeServer(server, { timeout: 5000 });
        const { requests } = (await client.message('results')) as unknown as { requests: Row[] };

        // The shutdown happened mid-load: responses in flight at the trigger finished after it.
        expect(openAtTrigger.length).toBe(10);
        expect(log.finished.length).toBeGreaterThan(finishedAtTrigger);
        expect(requests.length).toBeGreaterThanOrEqual(100);

        const ok = new Set(requests.filter((r) => r[2] === 'ok').map((r) => r[0]));
        const lost = log.finished.filter((id) => !ok.has(id));
        expect(lost).toEqual([]);
        const postResets = requests.filter((r) => (r[1] === 'post' || r[1] === 'upload') && r[2] === 'reset-after-send');
        expect(postResets).toEqual([]);
        // No request failed (the keep-alive race: a request sent as its connection's response ended).
        const classes = new Set(requests.map((r) => r[2]));
        expect([...classes].filter((c) => c !== 'ok' && c !== 'refused')).toEqual([]);

        // Every connection reported, exactly once, nothing left that finwait did not know, and
        // graceful only where nothing failed (here: everywhere).
        const reported = report.connections.map((c) => c.peer.port);
        expect(new Set(reported).size).toBe(reported.length);
        expect(report.totals.total).toBe(reported.length);
        for (const p of openAtTrigger) expect(reported).toContain(p);
        expect(reported.every((p) => seen.has(p))).toBe(true);
        expect(report.untracked).toBe(0);
        expect(report.totals).toMatchObject({ interrupted: 0, handedOff: 0, resetSent: 0, resetReceived: 0, graceful: reported.length });
        expect(server.listening).toBe(false);
      } finally {
        client.proc.kill();
      }
    });
  });
}

/** Two problems the shutdown benchmark found in closeServer, fixed; these keep them fixed. */
describe('closeServer: races the shutdown benchmark found', () => {
  async function idleKeepAlive(server: http.Server, options: net.NetConnectOpts = { port: 0 }): Promise<net.Socket> {
    const { port } = server.address() as net.AddressInfo;
    const c = net.connect({ ...options, port, host: '127.0.0.1' } as net.NetConnectOpts);
    await once(c, 'connect');
    let got = '';
    const onData = (d: Buffer): void => void (got += d.toString('latin1'));
    c.on('data', onData);
    c.write('GET /get HTTP/1.1\r\nhost: x\r\nx-request-id: first\r\n\r\n');
    await waitFor('the first response', () => (got.endsWith('g') ? true : undefined));
    c.off('data', onData);
    return c;
  }

  it('does not hand the app a request that arrives after its FIN on an idle keep-alive connection', async () => {
    const { server, log } = createApp();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    // allowHalfOpen: the client does not answer the FIN by itself, like a client whose request
    // was already on the wire when the FIN left (on a network with any RTT).
    const c = await idleKeepAlive(server, { port: 0, allowHalfOpen: true });
    const shutdown = closeServer(server, { timeout: 3000, drainWindow: 50 });
    await waitFor('the FIN at the client', () => (tcpState(c) === 'CLOSE_WAIT' ? true : undefined));
    c.write('POST /post HTTP/1.1\r\nhost: x\r\nx-request-id: late\r\ncontent-length: 5\r\n\r\nhello');
    c.resume();
    c.end();
    await shutdown;
    c.destroy();
    // The client can only see EOF without a response, so the app must not have executed it.
    expect(log.received).not.toContain('late');
  });

  it('closes an upload answered 413 during the drain window gracefully, without waiting for the deadline', async () => {
    const { server } = createApp();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const c = await idleKeepAlive(server);
    const shutdown = closeServer(server, { timeout: 3000, drainWindow: 500 });
    let got = '';
    c.on('data', (d: Buffer) => (got += d.toString('latin1')));
    c.write('POST /upload HTTP/1.1\r\nhost: x\r\nx-request-id: upload\r\ncontent-length: 1048576\r\n\r\n');
    // The body goes out in chunks until the 413 arrives; then the client stops and ends.
    for (let sent = 0; sent < 1_048_576 && !got.includes('\r\n\r\n'); sent += 65_536) {
      c.write(Buffer.alloc(65_536, 0x75));
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    expect(got).toMatch(/^HTTP\/1\.1 413/);
    expect(got.toLowerCase()).toContain('connection: close');
    c.end();
    c.resume();
    const report = await shutdown;
    c.destroy();
    // Both FINs were exchanged at once: gracefulClose must see the peer's FIN (it once missed it,
    // with Node's HTTP parser holding the handle paused, and waited for the deadline).
    expect(report.connections[0]).toMatchObject({ outcome: 'graceful', reason: 'peer-fin' });
    expect(report.duration).toBeLessThan(1500);
  });
});
