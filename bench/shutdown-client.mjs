// The client process of the shutdown benchmark, on raw sockets so that it sees exactly what
// happened to each request: how many bytes went out, how many came back, FIN or RST.
//
// First message from the parent: { mode: 'load' | 'idle', host, port, secure?, ... } (secure: TLS).
// load: `connections` keep-alive loops send requests one after another (no pipelining; every
//   `thinkEvery`th loop pauses 0-800 ms between requests, like a pooled client) until the
//   parent says { type: 'stop' } or `maxMs` passes; each request is classified; a loop ends when
//   a connect is refused (the server is gone). Sends { type: 'ready' } once every loop has had one
//   answer, then { type: 'results', requests: [[id, kind, class, status, wall ms when classified], ...] }.
// idle: opens `connections` connections, one GET each, then leaves them idle; sends
//   { type: 'ready', ok, failed }, then { type: 'results', endings } once all are closed (or on
//   'stop' / after `maxMs`): how each connection ended ('fin' or the error code).
import net from 'node:net';
import tls from 'node:tls';
import { performance } from 'node:perf_hooks';
import { WORKLOAD } from './shutdown-app.mjs';

/** The request mix: every loop walks it from its own offset. */
export const KINDS = ['get', 'post', 'get', 'slow', 'post', 'get', 'upload', 'get'];
const RETRY_MS = 10; // a loop waits this long after a failed request before the next one
/**
 * Every `THINK_EVERY`th loop is a pooled client that thinks between requests (0..THINK_MS ms,
 * the same pseudo-random sequence in every run), so some keep-alive connections are idle when
 * the shutdown begins, as in a real pool; the others send back to back.
 */
const THINK_EVERY = 5;
const THINK_MS = 800;
const think = (loop, seq) => ((Math.imul(loop * 7919 + seq + 1, 2654435761) >>> 0) % THINK_MS);
const CLOSE_WAIT_MS = 1000; // bounded wait for the server's FIN after our own

/** Wall-clock ms with sub-ms precision, comparable across processes. */
const wall = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

class Conn {
  constructor(socket) {
    this.socket = socket;
    this.buf = Buffer.alloc(0);
    this.received = 0;
    this.eof = false;
    this.error = undefined;
    this.closed = false;
    this.waiters = [];
    socket.on('data', (d) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
      this.received += d.length;
      this.wake();
    });
    socket.on('end', () => ((this.eof = true), this.wake()));
    socket.on('error', (e) => ((this.error = e), this.wake()));
    socket.on('close', () => ((this.closed = true), this.wake()));
  }
  wake() {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
  /** Resolves on the next event on this connection, or after `ms`. */
  next(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.waiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
  get usable() {
    return !this.eof && !this.error && !this.closed && !this.socket.destroyed && !this.socket.writableEnded;
  }
  /** Our FIN, then a bounded wait for the server's end; destroy only if it never comes. */
  async retire() {
    if (!this.closed && !this.socket.destroyed) {
      this.socket.end();
      const until = Date.now() + CLOSE_WAIT_MS;
      while (!this.closed && Date.now() < until) await this.next(until - Date.now());
      if (!this.closed) this.socket.destroy();
    }
  }
}

/** `secure`: TLS (an https server; its certificate is not checked). */
function connect(host, port, secure = false) {
  return new Promise((resolve) => {
    const socket = secure ? tls.connect({ host, port, rejectUnauthorized: false }) : net.connect({ host, port });
    socket.setNoDelay(true);
    const onError = (error) => resolve({ error });
    socket.once('error', onError);
    socket.once(secure ? 'secureConnect' : 'connect', () => {
      socket.off('error', onError);
      resolve({ conn: new Conn(socket) });
    });
  });
}

/** A complete response at the start of `buf`, or undefined. */
function parseResponse(buf) {
  const headEnd = buf.indexOf('\r\n\r\n');
  if (headEnd < 0) return undefined;
  const head = buf.subarray(0, headEnd).toString('latin1');
  const status = Number(head.slice(9, 12));
  const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
  if (buf.length < headEnd + 4 + length) return undefined;
  return { status, close: /\r\nconnection:\s*close/i.test(head), size: headEnd + 4 + length };
}

/**
 * One request on `conn`; resolves with { cls, status, keepAlive }. Classes: 'ok', 'reset-after-send'
 * (ECONNRESET/EPIPE once the request head was handed to the kernel), 'reset-before-send',
 * 'closed-before-response' (EOF, no response byte), 'truncated' (a response began, did not end),
 * 'timeout', 'error:<code>'.
 */
async function request(conn, kind, id, { timeoutMs }) {
  const method = kind === 'post' || kind === 'upload' ? 'POST' : 'GET';
  const bodyBytes = kind === 'post' ? WORKLOAD.postBytes : kind === 'upload' ? WORKLOAD.uploadBytes : 0;
  const startReceived = conn.received;
  let headOut = false;
  let response;
  const head =
    `${method} /${kind}?id=${id} HTTP/1.1\r\nhost: bench\r\nx-request-id: ${id}\r\n` +
    (bodyBytes ? `content-type: application/octet-stream\r\ncontent-length: ${bodyBytes}\r\n` : '') +
    '\r\n';
  conn.socket.write(head, (error) => {
    if (!error) headOut = true;
  });
  if (kind === 'post') conn.socket.write(Buffer.alloc(bodyBytes, 0x70));
  let uploadDone = Promise.resolve();
  let uploaded = 0;
  if (kind === 'upload') {
    // Paced, so that the 413 arrives while the body is still going out.
    uploadDone = (async () => {
      const chunk = Buffer.alloc(WORKLOAD.uploadChunk, 0x75);
      while (uploaded < bodyBytes && conn.usable && !(response && response.close)) {
        const n = Math.min(chunk.length, bodyBytes - uploaded);
        conn.socket.write(n === chunk.length ? chunk : chunk.subarray(0, n));
        uploaded += n;
        await sleep(WORKLOAD.uploadChunkMs);
      }
    })();
  }
  const until = Date.now() + timeoutMs;
  for (;;) {
    response = parseResponse(conn.buf);
    if (response) {
      conn.buf = conn.buf.subarray(response.size);
      break;
    }
    if (conn.error || conn.eof || conn.closed || Date.now() >= until) break;
    await conn.next(until - Date.now());
  }
  if (response) {
    await uploadDone; // keep-alive after an early answer: the rest of the body goes first
    const complete = kind !== 'upload' || uploaded === bodyBytes;
    return { cls: 'ok', status: response.status, keepAlive: !response.close && complete && conn.usable };
  }
  const responseBytes = conn.received - startReceived;
  let cls;
  if (responseBytes > 0) cls = 'truncated';
  else if (conn.error && ['ECONNRESET', 'EPIPE'].includes(conn.error.code)) cls = headOut ? 'reset-after-send' : 'reset-before-send';
  else if (conn.error) cls = `error:${conn.error.code ?? conn.error.message}`;
  else if (conn.eof || conn.closed) cls = headOut ? 'closed-before-response' : 'closed-before-send';
  else cls = 'timeout';
  return { cls, status: 0, keepAlive: false };
}

async function runLoad(config, control) {
  const { host, port, connections, timeoutMs = 5000, maxRequestsPerLoop = 100_000, thinkEvery = THINK_EVERY, secure = false } = config;
  const requests = [];
  let answered = 0;
  const firstAnswer = new Set();
  const loop = async (i) => {
    let conn;
    for (let seq = 0; !control.stopping && seq < maxRequestsPerLoop; seq++) {
      const kind = KINDS[(i + seq) % KINDS.length];
      const id = `${kind}.${i}.${seq}`;
      if (!conn || !conn.usable) {
        if (conn) await conn.retire();
        const c = await connect(host, port, secure);
        if (c.error) {
          const refused = c.error.code === 'ECONNREFUSED';
          requests.push([id, kind, refused ? 'refused' : `connect:${c.error.code}`, 0, wall()]);
          if (refused) break; // the listener is gone
          await sleep(RETRY_MS);
          conn = undefined;
          continue;
        }
        conn = c.conn;
      }
      const r = await request(conn, kind, id, { timeoutMs });
      requests.push([id, kind, r.cls, r.status, wall()]);
      if (r.cls === 'ok' && !firstAnswer.has(i)) {
        firstAnswer.add(i);
        if (++answered === connections) process.send({ type: 'ready' });
      }
      if (!r.keepAlive) {
        await conn.retire();
        conn = undefined;
        if (r.cls !== 'ok') await sleep(RETRY_MS);
      }
      if (thinkEvery > 0 && i % thinkEvery === thinkEvery - 1 && !control.stopping) await sleep(think(i, seq));
    }
    if (conn) await conn.retire();
  };
  await Promise.all(Array.from({ length: connections }, (_, i) => loop(i)));
  return { type: 'results', requests };
}

async function runIdle(config, control) {
  const { host, port, connections, batch = 500 } = config;
  const conns = [];
  let failed = 0;
  for (let i = 0; i < connections; i += batch) {
    const opened = await Promise.all(
      Array.from({ length: Math.min(batch, connections - i) }, async (_, j) => {
        const c = await connect(host, port);
        if (c.error) return undefined;
        const r = await request(c.conn, 'get', `idle.${i + j}`, { timeoutMs: 10_000 });
        return r.cls === 'ok' && r.keepAlive ? c.conn : (c.conn.socket.destroy(), undefined);
      }),
    );
    for (const c of opened) c ? conns.push(c) : failed++;
  }
  process.send({ type: 'ready', ok: conns.length, failed });
  await new Promise((resolve) => {
    const check = () => (control.stopping || conns.every((c) => c.closed) ? resolve() : setTimeout(check, 5));
    check();
  });
  const endings = {};
  for (const c of conns) {
    const how = !c.closed ? 'still-open' : c.error ? c.error.code ?? 'error' : c.eof ? 'fin' : 'closed';
    endings[how] = (endings[how] ?? 0) + 1;
    if (c.buf.length) endings['unexpected-data'] = (endings['unexpected-data'] ?? 0) + 1;
  }
  for (const c of conns) if (!c.closed) c.socket.destroy();
  return { type: 'results', endings };
}

process.once('message', async (config) => {
  const control = { stopping: false };
  process.on('message', (m) => {
    if (m.type === 'stop') control.stopping = true;
  });
  const limit = setTimeout(() => (control.stopping = true), config.maxMs ?? 30_000);
  const result = config.mode === 'idle' ? await runIdle(config, control) : await runLoad(config, control);
  clearTimeout(limit);
  process.send(result, () => process.exit(0));
});
process.on('disconnect', () => process.exit(0));
