/**
 * closeServer() on HTTP/2 servers (h2c and TLS), without trackConnections(): every session is
 * found, told with GOAWAY before anything is closed, its streams in flight complete, new streams
 * are refused the way HTTP/2 clients expect, then the connection gets the lingering close; the
 * report has one entry per session, with its streams.
 */
import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import http2 from 'node:http2';
import net from 'node:net';
import path from 'node:path';
import { once } from 'node:events';
import { closeServer, shutdownSignal } from '../src/index';
import { waitFor } from './helpers';

const fixtures = path.join(__dirname, 'fixtures');
const tlsOptions = { key: fs.readFileSync(path.join(fixtures, 'key.pem')), cert: fs.readFileSync(path.join(fixtures, 'cert.pem')) };

type Outcome = { status?: number; body: string; rstCode?: number; error?: string };

function request(client: http2.ClientHttp2Session, p: string): Promise<Outcome> {
  return new Promise((resolve) => {
    let stream: http2.ClientHttp2Stream;
    try {
      stream = client.request({ ':path': p });
    } catch (error) {
      resolve({ body: '', error: (error as NodeJS.ErrnoException).code });
      return;
    }
    let status: number | undefined;
    let body = '';
    let error: string | undefined;
    stream.on('response', (headers) => (status = headers[':status'] as number));
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => (body += chunk));
    stream.on('error', (e: NodeJS.ErrnoException) => (error = e.code));
    stream.on('close', () => resolve({ status, body, rstCode: stream.rstCode, ...(error ? { error } : {}) }));
  });
}

for (const secure of [false, true]) {
  describe(`closeServer, HTTP/2 ${secure ? 'over TLS (createSecureServer)' : 'h2c (createServer)'}`, () => {
    it('GOAWAY first: the stream in flight completes, a request 100 ms in is refused by the client itself, the session closes gracefully, one report entry with its streams', async () => {
      let slowArrived = false;
      const onStream = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders): void => {
        stream.respond({ ':status': 200 });
        if (headers[':path'] === '/slow') {
          slowArrived = true;
          stream.write('slow-');
          setTimeout(() => stream.end('done'), 300);
        } else stream.end('fast');
      };
      const server = secure ? http2.createSecureServer(tlsOptions) : http2.createServer();
      server.on('stream', onStream);
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      const { port } = server.address() as net.AddressInfo;
      const client = http2.connect(`${secure ? 'https' : 'http'}://127.0.0.1:${port}`, secure ? { rejectUnauthorized: false } : {});
      const goaways: number[] = [];
      client.on('goaway', (code: number) => goaways.push(code));
      client.on('error', () => {});
      try {
        expect(await request(client, '/warm-up')).toMatchObject({ status: 200, body: 'fast', rstCode: 0 });
        const slow = request(client, '/slow');
        await waitFor('the slow stream in flight', () => (slowArrived ? true : undefined));
        const closing = closeServer(server, { timeout: 5000 });
        await new Promise((resolve) => setTimeout(resolve, 100));
        const late = await request(client, '/late');
        expect(await slow).toEqual({ status: 200, body: 'slow-done', rstCode: 0 });
        // The client knows to go elsewhere: request() throws (Node 20, 22) or its stream errors (24, 26).
        expect(late).toMatchObject({ body: '', error: 'ERR_HTTP2_GOAWAY_SESSION' });
        expect(late.status).toBeUndefined();
        expect(goaways[0]).toBe(http2.constants.NGHTTP2_NO_ERROR);
        const report = await closing;
        expect(report.untracked).toBe(0);
        expect(report.connections).toHaveLength(1);
        const session = report.connections[0]!;
        expect(session).toMatchObject({
          protocol: 'h2',
          outcome: 'graceful',
          requestsUnanswered: 0,
          streaming: true,
          applicationDone: true,
          streams: { completed: 1, refused: 0, reset: 0 },
        });
        expect(session.states.length).toBeGreaterThan(0); // a real close, with the kernel's states
        expect(report.totals).toMatchObject({ graceful: 1, total: 1 });
        expect(server.listening).toBe(false);
      } finally {
        client.destroy();
        server.close();
      }
    });

    it('an idle session and a stream racing the shutdown: the race is served or refused with REFUSED_STREAM, never cancelled', async () => {
      const server = secure ? http2.createSecureServer(tlsOptions) : http2.createServer();
      server.on('stream', (stream) => {
        stream.respond({ ':status': 200 });
        stream.end('ok');
      });
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      const { port } = server.address() as net.AddressInfo;
      const url = `${secure ? 'https' : 'http'}://127.0.0.1:${port}`;
      const clients = [http2.connect(url, secure ? { rejectUnauthorized: false } : {}), http2.connect(url, secure ? { rejectUnauthorized: false } : {})];
      for (const c of clients) c.on('error', () => {});
      try {
        for (const c of clients) expect(await request(c, '/')).toMatchObject({ status: 200, rstCode: 0 });
        const busyPort = clients[0]!.socket.localPort;
        const raced = request(clients[0]!, '/raced'); // sent in the same turn as the shutdown begins
        const report = await closeServer(server, { timeout: 5000 });
        const outcome = await raced;
        expect(report.connections).toHaveLength(2);
        const busy = report.connections.find((c) => c.peer.port === busyPort)!;
        if (outcome.rstCode === http2.constants.NGHTTP2_REFUSED_STREAM) {
          // Refused by us (counted), or by the client itself from the final GOAWAY's last stream
          // id, without ever reaching the server (Node's client holds a request it queued when it
          // reads the notice): the server cannot count that one.
          expect(busy.streams).toMatchObject({ completed: 0, reset: 0 });
          expect(busy.streams!.refused).toBeLessThanOrEqual(1);
        } else {
          expect(outcome).toMatchObject({ status: 200, body: 'ok', rstCode: 0 });
          expect(busy.streams).toEqual({ completed: 1, refused: 0, reset: 0 });
        }
        expect(report.totals).toMatchObject({ graceful: 2, total: 2 });
        expect(report.connections.every((c) => c.protocol === 'h2' && c.outcome === 'graceful')).toBe(true);
      } finally {
        for (const c of clients) c.destroy();
        server.close();
      }
    });

    it('a stream the application never ends: told through shutdownSignal(stream), or cut at the deadline and counted as reset', async () => {
      let told = 0;
      const server = secure ? http2.createSecureServer(tlsOptions) : http2.createServer();
      server.on('stream', (stream, headers) => {
        stream.respond({ ':status': 200, 'content-type': 'text/event-stream' });
        stream.write('data: hello\n\n');
        if (headers[':path'] === '/polite') {
          shutdownSignal(stream).addEventListener('abort', () => {
            told++;
            stream.end('data: bye\n\n');
          });
        }
      });
      server.listen(0, '127.0.0.1');
      await once(server, 'listening');
      const { port } = server.address() as net.AddressInfo;
      const url = `${secure ? 'https' : 'http'}://127.0.0.1:${port}`;
      const polite = http2.connect(url, secure ? { rejectUnauthorized: false } : {});
      const stubborn = http2.connect(url, secure ? { rejectUnauthorized: false } : {});
      for (const c of [polite, stubborn]) c.on('error', () => {});
      try {
        const a = request(polite, '/polite');
        const b = request(stubborn, '/stubborn');
        await waitFor('both streams open', () => ((server as unknown as { _connections: number })._connections === 2 ? true : undefined));
        await new Promise((resolve) => setTimeout(resolve, 20));
        const report = await closeServer(server, { timeout: 400 });
        expect(told).toBe(1);
        expect(await a).toMatchObject({ status: 200, body: 'data: hello\n\ndata: bye\n\n', rstCode: 0 });
        expect((await b).body).toBe('data: hello\n\n');
        const byOutcome = Object.fromEntries(report.connections.map((c) => [c.outcome, c]));
        expect(byOutcome.graceful).toMatchObject({ protocol: 'h2', told: true, streaming: true, streams: { completed: 1, refused: 0, reset: 0 } });
        expect(byOutcome['reset-sent']).toMatchObject({ protocol: 'h2', reason: 'deadline', requestsUnanswered: 1, applicationDone: false, streams: { completed: 0, refused: 0, reset: 1 } });
      } finally {
        polite.destroy();
        stubborn.destroy();
        server.close();
      }
    });
  });
}
