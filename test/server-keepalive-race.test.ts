/**
 * The keep-alive race: a response whose headers (promising keep-alive) went out before
 * closeServer() was called; the client sends its next request on that connection as soon as the
 * response ends. That request must be served (with `Connection: close`), never met by our FIN, on
 * http and https; and a request that does race our FIN must not be reported as graceful.
 */
import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { once } from 'node:events';
import { closeServer, tcpState, type ServerCloseReport } from '../src/index';
import { waitFor } from './helpers';

const fixtures = path.join(__dirname, 'fixtures');
const tlsOptions = { key: fs.readFileSync(path.join(fixtures, 'key.pem')), cert: fs.readFileSync(path.join(fixtures, 'cert.pem')) };

type Result = { status: number; body: string; connection?: string } | { error: string };

for (const scheme of ['http', 'https'] as const) {
  describe(`closeServer, the keep-alive race (${scheme})`, () => {
    it('the next request sent the moment a keep-alive response ends is served with Connection: close (3 rounds)', async () => {
      for (let round = 0; round < 3; round++) {
        let inFlight: http.ServerResponse | undefined;
        const handler = (req: http.IncomingMessage, res: http.ServerResponse): void => {
          if (req.url === '/slow') {
            res.writeHead(200, { 'content-type': 'text/plain' }); // keep-alive promised
            res.write('a');
            inFlight = res;
          } else res.end('second');
        };
        const server = scheme === 'http' ? http.createServer(handler) : https.createServer(tlsOptions, handler);
        server.listen(0, '127.0.0.1');
        await once(server, 'listening');
        const { port } = server.address() as net.AddressInfo;
        const agent = scheme === 'http' ? new http.Agent({ keepAlive: true, maxSockets: 1 }) : new https.Agent({ keepAlive: true, maxSockets: 1, rejectUnauthorized: false });
        const get = (p: string): Promise<Result> =>
          new Promise((resolve) => {
            const request = scheme === 'http' ? http.get : https.get;
            request({ port, host: '127.0.0.1', path: p, agent }, (res) => {
              let body = '';
              res.setEncoding('utf8');
              res.on('data', (chunk: string) => (body += chunk));
              res.on('end', () => resolve({ status: res.statusCode!, body, connection: res.headers.connection }));
            }).on('error', (e: NodeJS.ErrnoException) => resolve({ error: e.code ?? e.message }));
          });
        try {
          const first = get('/slow');
          await waitFor('the response in flight', () => inFlight);
          const closing = closeServer(server, { timeout: 5000 });
          // The client sends its next request on the same connection as soon as the first ends.
          const second = first.then(() => get('/next'));
          setTimeout(() => inFlight!.end('b'), 50);
          expect(await first).toEqual({ status: 200, body: 'ab', connection: 'keep-alive' });
          expect(await second).toEqual({ status: 200, body: 'second', connection: 'close' });
          const report: ServerCloseReport = await closing;
          expect(report.totals).toEqual({ graceful: 1, interrupted: 0, handedOff: 0, resetSent: 0, resetReceived: 0, destroyed: 0, total: 1 });
          expect(report.connections[0]).toMatchObject({
            outcome: 'graceful',
            protocol: 'http/1.1',
            requestsDuringShutdown: 1,
            requestsUnanswered: 0,
            requestAfterFin: false,
            streaming: true,
            applicationDone: true,
          });
        } finally {
          agent.destroy();
          server.close();
        }
      }
    });
  });
}

describe('closeServer, a request that does race the FIN', () => {
  it('is read and discarded, never given to the application, and the report says so: interrupted, requestAfterFin', async () => {
    const received: string[] = [];
    const server = http.createServer((req, res) => {
      received.push(req.url!);
      res.end('ok');
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as net.AddressInfo;
    // allowHalfOpen: the client does not answer the FIN by itself, like a client whose request was
    // already on the wire when the FIN left (on a network with any round-trip time).
    const c = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    await once(c, 'connect');
    let text = '';
    c.on('data', (d: Buffer) => (text += d.toString('latin1')));
    c.write('GET /first HTTP/1.1\r\nhost: x\r\n\r\n');
    await waitFor('the first response', () => (text.endsWith('ok') ? true : undefined));
    const closing = closeServer(server, { timeout: 3000, drainWindow: 50 });
    await waitFor('the FIN at the client', () => (tcpState(c) === 'CLOSE_WAIT' ? true : undefined));
    c.end('GET /late HTTP/1.1\r\nhost: x\r\n\r\n');
    const report = await closing;
    c.destroy();
    expect(received).toEqual(['/first']);
    expect(report.connections[0]).toMatchObject({ outcome: 'interrupted', reason: 'peer-fin', requestAfterFin: true, applicationDone: false });
    expect(report.connections[0]!.bytesDiscarded).toBeGreaterThan(0);
    expect(report.totals).toMatchObject({ graceful: 0, interrupted: 1, total: 1 });
  });
});

describe('closeServer, HTTPS over TLS sockets', () => {
  it('an idle keep-alive TLS connection gets close_notify and FIN after the window, graceful', async () => {
    const server = https.createServer(tlsOptions, (_req, res) => res.end('ok'));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as net.AddressInfo;
    const client = tls.connect({ port, host: '127.0.0.1', rejectUnauthorized: false });
    await once(client, 'secureConnect');
    let text = '';
    client.on('data', (d: Buffer) => (text += d.toString('latin1')));
    const ended = once(client, 'end');
    client.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n');
    await waitFor('the response', () => (text.endsWith('ok') ? true : undefined));
    const report = await closeServer(server, { drainWindow: 50 });
    await ended;
    client.destroy();
    expect(report.connections).toHaveLength(1);
    expect(report.connections[0]).toMatchObject({ outcome: 'graceful', protocol: 'http/1.1' });
    expect(report.untracked).toBe(0);
  });
});
