/**
 * closeServer() on HTTP/2 servers (h2c and TLS), without trackConnections(): every session is
 * found, told with GOAWAY before anything is closed, its streams in flight complete, new streams
 * are refused the way HTTP/2 clients expect, then the connection gets the lingering close; the
 * report has one entry per session, with its streams.
 */
import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import http2 from 'node:http2';
import https from 'node:https';
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
    it('GOAWAY first: the stream in flight completes, a request after the GOAWAY is refused by the client itself, the session closes gracefully, one report entry with its streams', async () => {
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
        // Once the client has read the GOAWAY (not after a fixed time: under load 100 ms was not
        // always enough, and a request sent before it gets the server's REFUSED_STREAM instead).
        await waitFor("the client's GOAWAY", () => (goaways.length > 0 ? true : undefined));
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
          streams: { completed: 1, reset: 0 },
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
          // Refused by the client itself from the final GOAWAY's last stream id, without ever
          // reaching the application (opened after the notice went out: nghttp2 ignores it).
          expect(busy.streams).toEqual({ completed: 0, reset: 0 });
          expect(busy.requestsDuringShutdown).toBe(0);
        } else {
          expect(outcome).toMatchObject({ status: 200, body: 'ok', rstCode: 0 });
          expect(busy.streams).toEqual({ completed: 1, reset: 0 });
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
      let arrived = 0;
      const server = secure ? http2.createSecureServer(tlsOptions) : http2.createServer();
      server.on('stream', (stream, headers) => {
        arrived++;
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
        // Both streams at the server (the polite one's listener is on its signal), not only both
        // connections: under load a TLS session's first stream can come well after its accept.
        await waitFor('both streams open', () => (arrived === 2 && (server as unknown as { _connections: number })._connections === 2 ? true : undefined));
        await new Promise((resolve) => setTimeout(resolve, 20));
        const report = await closeServer(server, { timeout: 400 });
        expect(told).toBe(1);
        expect(await a).toMatchObject({ status: 200, body: 'data: hello\n\ndata: bye\n\n', rstCode: 0 });
        expect((await b).body).toBe('data: hello\n\n');
        const byOutcome = Object.fromEntries(report.connections.map((c) => [c.outcome, c]));
        expect(byOutcome.graceful).toMatchObject({ protocol: 'h2', told: true, streaming: true, streams: { completed: 1, reset: 0 } });
        expect(byOutcome['reset-sent']).toMatchObject({ protocol: 'h2', reason: 'deadline', requestsUnanswered: 1, applicationDone: false, streams: { completed: 0, reset: 1 } });
      } finally {
        polite.destroy();
        stubborn.destroy();
        server.close();
      }
    });
  });
}

describe('closeServer, HTTP/2 over TLS with allowHTTP1: HTTP/1.1 connections on the same server', () => {
  it('HTTP/1.1: a response in flight finishes, a request on an idle keep-alive connection is served with Connection: close, both close gracefully; an h2 session beside them gets its GOAWAY; one report entry each', async () => {
    let slowArrived = false;
    const server = http2.createSecureServer({ ...tlsOptions, allowHTTP1: true }, (req, res) => {
      if (req.url === '/slow') {
        slowArrived = true;
        res.write('slow-');
        setTimeout(() => res.end('done'), 200);
      } else res.end(`fast ${req.httpVersion}`);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as net.AddressInfo;
    const agent = new https.Agent({ keepAlive: true, maxSockets: 2, rejectUnauthorized: false });
    const get = (p: string): Promise<{ body: string; connection?: string; error?: string }> =>
      new Promise((resolve) => {
        https
          .get({ port, host: '127.0.0.1', path: p, agent }, (res) => {
            let body = '';
            res.setEncoding('utf8').on('data', (d: string) => (body += d));
            res.on('end', () => resolve({ body, connection: res.headers.connection }));
          })
          .on('error', (e: NodeJS.ErrnoException) => resolve({ body: '', error: e.code }));
      });
    const h2 = http2.connect(`https://127.0.0.1:${port}`, { rejectUnauthorized: false });
    h2.on('error', () => {});
    try {
      // Two HTTP/1.1 connections (the agent's two sockets), one left idle, one with a response in flight.
      expect(await Promise.all([get('/a'), get('/b')])).toEqual([
        { body: 'fast 1.1', connection: 'keep-alive' },
        { body: 'fast 1.1', connection: 'keep-alive' },
      ]);
      expect(await request(h2, '/h2')).toMatchObject({ status: 200, body: 'fast 2.0', rstCode: 0 });
      const sockets = await waitFor('both HTTP/1.1 connections back in the pool', () => {
        const free = Object.values(agent.freeSockets).flat() as net.Socket[];
        return free.length === 2 ? free : undefined;
      });
      const closedWithoutError = sockets.map((s) => new Promise<boolean>((resolve) => s.once('close', (hadError: boolean) => resolve(!hadError))));
      const slow = get('/slow');
      await waitFor('the slow response in flight', () => (slowArrived ? true : undefined));
      const closing = closeServer(server, { timeout: 5000, drainWindow: 1000 });
      expect(await get('/late')).toEqual({ body: 'fast 1.1', connection: 'close' }); // on the idle connection
      const report = await closing;
      // Its headers (keep-alive) went out before the call: the connection gets the window after it, then closes.
      expect(await slow).toEqual({ body: 'slow-done', connection: 'keep-alive' });
      expect(await Promise.all(closedWithoutError)).toEqual([true, true]);
      expect(report.untracked).toBe(0);
      const byProtocol = report.connections.map((c) => `${c.protocol} ${c.outcome}`).sort();
      expect(byProtocol).toEqual(['h2 graceful', 'http/1.1 graceful', 'http/1.1 graceful']);
      const inFlight = report.connections.find((c) => c.protocol === 'http/1.1' && c.streaming)!;
      expect(inFlight).toMatchObject({ requestsUnanswered: 0, requestsDuringShutdown: 0, applicationDone: true, reason: 'peer-fin' });
      const late = report.connections.find((c) => c.protocol === 'http/1.1' && !c.streaming)!;
      expect(late).toMatchObject({ requestsUnanswered: 0, requestsDuringShutdown: 1, applicationDone: true });
      expect(report.connections.every((c) => c.states.length > 0)).toBe(true); // each closed by finwait, with the kernel's states
      expect(report.totals).toMatchObject({ graceful: 3, total: 3, resetSent: 0 });
      expect(server.listening).toBe(false);
    } finally {
      agent.destroy();
      h2.destroy();
      server.close();
    }
  });
});

/** One HTTP/2 frame (RFC 9113 §4.1). */
function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head[3] = type;
  head[4] = flags;
  head.writeUInt32BE(streamId, 5);
  return Buffer.concat([head, payload]);
}
const FRAME = { DATA: 0, HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6, GOAWAY: 7 } as const;
const END_STREAM = 0x1;
const END_HEADERS = 0x4;
const ACK = 0x1;
/** A GET of `path` in HPACK without the dynamic table: :method GET, :scheme http, :authority a, :path (literals, not indexed). */
function getHeaders(path: string): Buffer {
  return Buffer.concat([Buffer.from([0x82, 0x86, 0x01, 1, 0x61, 0x04, path.length]), Buffer.from(path, 'latin1')]);
}

/**
 * A raw HTTP/2 client over h2c: it does only what a test tells it, answers SETTINGS and PING,
 * and records every frame it receives (type, flags, stream; GOAWAY's last stream id, RST_STREAM's code).
 */
async function rawClient(port: number): Promise<{ socket: net.Socket; frames: { type: number; flags: number; stream: number; lastStreamId?: number; code?: number }[]; ended: Promise<string> }> {
  const socket = net.connect(port, '127.0.0.1');
  await once(socket, 'connect');
  const frames: { type: number; flags: number; stream: number; lastStreamId?: number; code?: number }[] = [];
  let buffered = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    buffered = Buffer.concat([buffered, chunk]);
    while (buffered.length >= 9) {
      const length = buffered.readUIntBE(0, 3);
      if (buffered.length < 9 + length) break;
      const type = buffered[3]!;
      const flags = buffered[4]!;
      const stream = buffered.readUInt32BE(5) & 0x7fffffff;
      const payload = buffered.subarray(9, 9 + length);
      buffered = buffered.subarray(9 + length);
      const f: (typeof frames)[number] = { type, flags, stream };
      if (type === FRAME.GOAWAY) f.lastStreamId = payload.readUInt32BE(0) & 0x7fffffff;
      if (type === FRAME.RST_STREAM) f.code = payload.readUInt32BE(0);
      frames.push(f);
      if (type === FRAME.SETTINGS && !(flags & ACK)) socket.write(frame(FRAME.SETTINGS, ACK, 0));
      if (type === FRAME.PING && !(flags & ACK)) socket.write(frame(FRAME.PING, ACK, 0, Buffer.from(payload)));
    }
  });
  const ended = new Promise<string>((resolve) => {
    socket.on('end', () => resolve('end'));
    socket.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
  });
  socket.write(Buffer.concat([Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'), frame(FRAME.SETTINGS, 0, 0)]));
  return { socket, frames, ended };
}

describe('closeServer, HTTP/2: streams a client opens after the notice and after the final GOAWAY', () => {
  it('a raw client: streams opened after the notice or after the final GOAWAY never reach the application and get no answer; the final GOAWAY says they were not processed; the report counts only what was served', async () => {
    const paths: string[] = [];
    const server = http2.createServer();
    server.on('stream', (stream, headers) => {
      paths.push(String(headers[':path']));
      stream.respond({ ':status': 200 });
      if (headers[':path'] === '/slow') setTimeout(() => stream.end('slow'), 200);
      else stream.end('fast');
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as net.AddressInfo;
    const client = await rawClient(port);
    const MAX_ID = 2 ** 31 - 1;
    const goaways = (): (number | undefined)[] => client.frames.filter((f) => f.type === FRAME.GOAWAY).map((f) => f.lastStreamId);
    try {
      client.socket.write(frame(FRAME.HEADERS, END_STREAM | END_HEADERS, 1, getHeaders('/slow')));
      await waitFor('stream 1 served', () => (paths.length === 1 ? true : undefined));
      const closing = closeServer(server, { timeout: 5000 });
      // A stream opened once the notice (GOAWAY, last stream id 2^31-1) came, stream 1 still in flight.
      await waitFor('the notice', () => (goaways().includes(MAX_ID) ? true : undefined));
      client.socket.write(frame(FRAME.HEADERS, END_STREAM | END_HEADERS, 3, getHeaders('/after-notice')));
      // The final GOAWAY comes once stream 1 is done; a stream opened after it (a client that
      // ignores it, or whose request crossed it).
      const final = await waitFor('the final GOAWAY', () => client.frames.find((f) => f.type === FRAME.GOAWAY && f.lastStreamId !== MAX_ID));
      expect(final.lastStreamId).toBe(1);
      client.socket.write(frame(FRAME.HEADERS, END_STREAM | END_HEADERS, 5, getHeaders('/after-final')));
      const report = await closing;
      expect(await client.ended).toBe('end');
      // What the client saw: stream 1 answered, nothing at all on 3 and 5 (no RST_STREAM either);
      // the final GOAWAY's last stream id (1) tells it they were not processed (RFC 9113 §6.8).
      expect(client.frames.filter((f) => f.stream === 1).map((f) => f.type)).toEqual([FRAME.HEADERS, FRAME.DATA]);
      expect(client.frames.filter((f) => f.stream === 3 || f.stream === 5)).toEqual([]);
      expect(new Set(goaways())).toEqual(new Set([MAX_ID, 1]));
      expect(paths).toEqual(['/slow']); // the application saw neither
      // The report: the one stream served, completed; nothing counted for streams never seen.
      expect(report.connections).toHaveLength(1);
      expect(report.connections[0]).toMatchObject({
        protocol: 'h2',
        outcome: 'graceful',
        requestsDuringShutdown: 0,
        requestsUnanswered: 0,
        applicationDone: true,
        streams: { completed: 1, reset: 0 },
      });
    } finally {
      client.socket.destroy();
      server.close();
    }
  });
});
