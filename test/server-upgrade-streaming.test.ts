/**
 * Upgraded connections (WebSocket with ws) and long responses (Server-Sent Events, long polls):
 * found without trackConnections(), never half-closed under the application; the application
 * learns through shutdownSignal() that the shutdown began and closes its protocol (close 1001, the
 * last event, an answer now); what it leaves open is reset at the deadline; the report says which
 * connections were upgraded or streaming and whether the application's close completed.
 */
import { describe, expect, it } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { WebSocket, WebSocketServer } from 'ws';
import { closeServer, shutdownSignal, sockets } from '../src/index';
import { waitFor } from './helpers';

async function listening(server: net.Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as net.AddressInfo).port;
}

/** A WebSocket client; resolves with the close code and reason it saw. */
async function wsClient(port: number): Promise<{ ws: WebSocket; closed: Promise<{ code: number; reason: string }>; localPort: number }> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  ws.on('error', () => {});
  await once(ws, 'open');
  return { ws, closed, localPort: (ws as unknown as { _socket: net.Socket })._socket.localPort! };
}

describe('closeServer with WebSocket connections (ws)', () => {
  it('the application closes each WebSocket with 1001 when told; both ends see 1001, the report says upgraded and closed by the application', async () => {
    const server = http.createServer((_req, res) => res.end('ok'));
    const wss = new WebSocketServer({ server });
    const serverSide: number[] = [];
    wss.on('connection', (ws, req) => {
      ws.on('close', (code) => serverSide.push(code));
      shutdownSignal(req).addEventListener('abort', () => ws.close(1001, 'server shutting down'));
    });
    const port = await listening(server);
    const clients = await Promise.all([wsClient(port), wsClient(port)]);
    const report = await closeServer(server, { timeout: 5000 });
    for (const c of clients) expect(await c.closed).toEqual({ code: 1001, reason: 'server shutting down' });
    await waitFor("ws's own 'close' on the server", () => (serverSide.length === 2 ? true : undefined));
    expect(serverSide).toEqual([1001, 1001]);
    expect(report.untracked).toBe(0);
    expect(report.connections).toHaveLength(2);
    for (const c of report.connections) {
      expect(c).toMatchObject({ protocol: 'upgraded', outcome: 'graceful', told: true, closedByApplication: true, applicationDone: true });
    }
    expect(report.totals).toMatchObject({ graceful: 2, total: 2 });
    expect(report.duration).toBeLessThan(2000); // not the deadline
  });

  it('a WebSocket the application does not close stays open (no FIN under it, no 1006 before the deadline), then is reset at the deadline and reported', async () => {
    const server = http.createServer();
    const wss = new WebSocketServer({ server });
    wss.on('connection', (ws) => ws.on('error', () => {}));
    const port = await listening(server);
    const client = await wsClient(port);
    const closing = closeServer(server, { timeout: 400 });
    // Until the deadline the connection is still open, and still works both ways.
    const echo = once(client.ws, 'message');
    for (const ws of wss.clients) ws.send('still here');
    expect(String((await echo)[0])).toBe('still here');
    const established = sockets({ states: ['ESTABLISHED'], localPort: port });
    expect(established.map((s) => s.remote.port)).toContain(client.localPort);
    const report = await closing;
    expect((await client.closed).code).toBe(1006); // an RST at the deadline: nothing else was possible
    expect(report.connections[0]).toMatchObject({
      protocol: 'upgraded',
      outcome: 'reset-sent',
      reason: 'deadline',
      told: false,
      closedByApplication: false,
      applicationDone: false,
    });
    expect(report.duration).toBeGreaterThanOrEqual(400); // the deadline is never early
  });
});

describe('closeServer with long responses', () => {
  it("a Server-Sent Events stream ends with its last event when told; the connection then closes gracefully and is reported as streaming", async () => {
    const server = http.createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
      res.write('data: 1\n\n');
      const timer = setInterval(() => res.write('data: tick\n\n'), 20);
      shutdownSignal(req).addEventListener('abort', () => {
        clearInterval(timer);
        res.end('event: bye\ndata: server shutting down\n\n');
      });
    });
    const port = await listening(server);
    let text = '';
    const ended = new Promise<void>((resolve, reject) => {
      http
        .get({ port, host: '127.0.0.1', path: '/events', agent: false }, (res) => {
          res.setEncoding('utf8');
          res.on('data', (chunk: string) => (text += chunk));
          res.on('end', resolve);
        })
        .on('error', reject);
    });
    await waitFor('the stream flowing', () => (text.includes('tick') ? true : undefined));
    const report = await closeServer(server, { timeout: 5000 });
    await ended;
    expect(text.startsWith('data: 1\n\n')).toBe(true);
    expect(text.endsWith('event: bye\ndata: server shutting down\n\n')).toBe(true);
    expect(report.connections).toHaveLength(1);
    expect(report.connections[0]).toMatchObject({ protocol: 'http/1.1', outcome: 'graceful', streaming: true, told: true, requestsUnanswered: 0, applicationDone: true });
    expect(report.duration).toBeLessThan(1000);
  });

  it('a long poll answers at once when told (Connection: close); one that ignores the shutdown is reset at the deadline, reported unanswered', async () => {
    const server = http.createServer((req, res) => {
      if (req.url === '/polite') {
        const timer = setTimeout(() => res.end('late'), 60_000);
        shutdownSignal(req).addEventListener('abort', () => {
          clearTimeout(timer);
          res.statusCode = 204;
          res.end();
        });
      } else {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write('data: 1\n\n'); // a stream that never ends
      }
    });
    const port = await listening(server);
    const get = (p: string) =>
      new Promise<{ status?: number; connection?: string; error?: string }>((resolve) => {
        http
          .get({ port, host: '127.0.0.1', path: p, agent: new http.Agent({ keepAlive: true }) }, (res) => {
            res.resume();
            res.on('end', () => resolve({ status: res.statusCode, connection: res.headers.connection }));
            res.on('error', (e: NodeJS.ErrnoException) => resolve({ status: res.statusCode, error: e.code }));
          })
          .on('error', (e: NodeJS.ErrnoException) => resolve({ error: e.code }));
      });
    const polite = get('/polite');
    const stubborn = get('/stream');
    await waitFor('both requests in', () => ((server as unknown as { _connections: number })._connections === 2 ? true : undefined));
    await new Promise((resolve) => setTimeout(resolve, 20));
    const report = await closeServer(server, { timeout: 400 });
    expect(await polite).toEqual({ status: 204, connection: 'close' });
    expect((await stubborn).error).toBe('ECONNRESET'); // the stream it left open, reset at the deadline
    const byOutcome = Object.fromEntries(report.connections.map((c) => [c.outcome, c]));
    expect(byOutcome.graceful).toMatchObject({ protocol: 'http/1.1', streaming: false, told: true, requestsUnanswered: 0 });
    expect(byOutcome['reset-sent']).toMatchObject({ protocol: 'http/1.1', reason: 'deadline', streaming: true, told: false, requestsUnanswered: 1, applicationDone: false });
  });
});
