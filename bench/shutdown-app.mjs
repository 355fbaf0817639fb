// The application of the shutdown benchmark: one http.Server with the same handlers in every
// variant, a log of each request the app received and each response it finished (res 'finish':
// Node handed the last byte to the kernel), and the four shutdown strategies compared.
import http from 'node:http';
import https from 'node:https';
import { performance } from 'node:perf_hooks';

/** Sizes and delays shared by the server and the clients. */
export const WORKLOAD = {
  /** Bytes of a GET response body. */
  getBytes: 1024,
  /** Bytes of a POST request body (read in full by the app, answered 201). */
  postBytes: 16 * 1024,
  /** Bytes an upload declares and sends; the app answers 413 at once without reading them. */
  uploadBytes: 1024 * 1024,
  /** The upload is sent in chunks of this size, one every `uploadChunkMs` (so it is still going when 413 comes). */
  uploadChunk: 64 * 1024,
  uploadChunkMs: 10,
  /** ms before a /slow response is sent. */
  slowMs: 300,
};

function send(res, status, body) {
  res.writeHead(status, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

/**
 * The server and its log. `log.received` and `log.finished` hold request ids (the client's
 * `x-request-id`); `sockets` is every connection the server accepted, open or not, with when it
 * closed (performance.now()). `keepAliveTimeout`: the server's (Node's default 5000 ms when omitted).
 * `tls`: `{ key, cert }` for an https server with the same handlers.
 */
export function createApp({ slowMs = WORKLOAD.slowMs, getBytes = WORKLOAD.getBytes, keepAliveTimeout, tls } = {}) {
  const log = { received: [], finished: [] };
  const getBody = 'g'.repeat(getBytes);
  const server = (tls ? https.createServer.bind(null, tls) : http.createServer)((req, res) => {
    const id = String(req.headers['x-request-id'] ?? '');
    log.received.push(id);
    res.once('finish', () => log.finished.push(id));
    const path = req.url ?? '';
    if (path.startsWith('/get')) send(res, 200, getBody);
    else if (path.startsWith('/post')) {
      let bytes = 0;
      req.on('data', (chunk) => (bytes += chunk.length));
      req.on('end', () => send(res, 201, `stored ${bytes}`));
    } else if (path.startsWith('/upload')) send(res, 413, 'too large'); // the body is not read
    else if (path.startsWith('/slow')) setTimeout(() => send(res, 200, 'slow'), slowMs);
    else send(res, 404, 'no');
  });
  // Node destroys a keep-alive connection idle this long (default 5 s): the idle part, whose 10,000
  // connections take seconds to open on a loaded machine, sets it longer than that.
  if (keepAliveTimeout !== undefined) server.keepAliveTimeout = keepAliveTimeout;
  const connections = { accepted: 0, open: new Set(), lastClosedAt: 0 };
  server.on('connection', (socket) => {
    connections.accepted++;
    connections.open.add(socket);
    socket.once('close', () => {
      connections.open.delete(socket);
      connections.lastClosedAt = performance.now();
    });
  });
  return { server, log, connections };
}

/**
 * The four strategies. Each has `setup(server)` (at creation, before listen: what the library
 * needs to see every connection) and `shutdown(server, deadlineMs)`, which resolves when the
 * strategy says it is done (with finwait's report for closeServer).
 * `deps`: `{ finwait, createHttpTerminator, stoppable }`.
 */
export function strategies({ finwait, createHttpTerminator, stoppable }) {
  return {
    node: {
      label: 'Node close()+closeAll',
      setup() {},
      shutdown(server, deadline) {
        return new Promise((resolve) => {
          const timer = setTimeout(() => server.closeAllConnections(), deadline);
          server.close(() => {
            clearTimeout(timer);
            resolve(undefined);
          });
        });
      },
    },
    'http-terminator': {
      label: 'http-terminator',
      setup(server, deadline) {
        this.terminator = createHttpTerminator({ server, gracefulTerminationTimeout: deadline });
      },
      async shutdown() {
        await this.terminator.terminate();
      },
    },
    stoppable: {
      label: 'stoppable',
      setup(server, deadline) {
        stoppable(server, deadline);
      },
      shutdown(server) {
        return new Promise((resolve) => server.stop(() => resolve(undefined)));
      },
    },
    finwait: {
      label: 'finwait closeServer',
      // Nothing to set up: closeServer() finds every connection accepted after finwait was loaded.
      setup() {},
      shutdown(server, deadline) {
        return finwait.closeServer(server, { timeout: deadline });
      },
    },
    // Node's own close of idle keep-alive connections, for the idle part: stop listening, destroy
    // every idle connection at once (no FIN exchange, no window for a last request).
    'node-idle': {
      label: 'Node close()+closeIdleConnections()',
      setup() {},
      shutdown(server) {
        return new Promise((resolve) => {
          server.close(() => resolve(undefined));
          server.closeIdleConnections();
        });
      },
    },
  };
}

/** Resolves with performance.now() (±1 ms) once the listener and every accepted connection are closed. */
export function whenAllClosed(server, connections) {
  return new Promise((resolve) => {
    let timer;
    const check = () => {
      if (server.listening || connections.open.size > 0) return false;
      clearInterval(timer);
      resolve(performance.now());
      return true;
    };
    if (!check()) timer = setInterval(check, 1);
  });
}
