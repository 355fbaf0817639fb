/**
 * `closeServer()`: graceful shutdown of a `net`, `http` or `https` server. Stop accepting without
 * resetting what already waits in the accept queue; let HTTP responses in flight finish with
 * `Connection: close`; give idle keep-alive connections a short window for one last request;
 * close every connection with `gracefulClose()`; reset only what is left at the one deadline;
 * report what happened to each connection.
 */
import fs from 'node:fs';
import { setMaxListeners } from 'node:events';
import net from 'node:net';
import type http from 'node:http';
import tls from 'node:tls';
import { performance } from 'node:perf_hooks';
import { nativeUnavailable } from './binding';
import { gracefulClose, type CloseReport } from './close';
import { sockets } from './diag';
import { abortError, checkTimerMs, invalidArgType } from './errors';
import { handleFd } from './fd';
import { missingInternal } from './node-internals';

/** Options of `closeServer()`. */
export interface CloseServerOptions {
  /** ms from the call until every connection still open is reset; default 10 000. */
  timeout?: number;
  /** ms an idle HTTP keep-alive connection stays open for a last request (served with `Connection: close`); default 500. */
  drainWindow?: number;
  /** Aborting brings the deadline forward: everything still open is reset at once. */
  signal?: AbortSignal;
}

/** What happened to one connection. */
export interface ConnectionReport extends CloseReport {
  /** The peer's address and port. */
  peer: { address: string; port: number };
  /** HTTP requests that began on this connection after the shutdown started. */
  requestsDuringShutdown: number;
}

/** What `closeServer()` did. */
export interface ServerCloseReport {
  /** Connections per outcome, and in all (`destroyed` only without the kernel's view). */
  totals: { graceful: number; resetSent: number; resetReceived: number; destroyed: number; total: number };
  /** ms from the call until the last connection was closed. */
  duration: number;
  /** Connections that were waiting in the accept queue when the shutdown began, accepted and closed gracefully. */
  acceptedFromQueue: number;
  /**
   * Connections to this server's port that finwait could not close because they were accepted
   * before it knew of them (a plain `net.Server` not passed to `trackConnections()` first); -1
   * when unknown (no kernel view).
   */
  untracked: number;
  /**
   * Whether the kernel's view was available (see `capabilities()`). Without it the accept queue
   * cannot be seen (it is drained for a few turns of the event loop instead), untracked
   * connections are not counted, and each connection closes as `CloseReport.kernelView` says.
   */
  kernelView: boolean;
  connections: ConnectionReport[];
}

const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_DRAIN_MS = 500;
const tracked = new WeakMap<net.Server, Set<net.Socket>>();

/**
 * Starts tracking a server's connections, so that `closeServer()` can close connections accepted
 * before it was called. Needed for a plain `net.Server` (Node keeps no list); `http` and `https`
 * servers are also found without it. Call it once, right after creating the server.
 */
export function trackConnections(server: net.Server): void {
  if (!(server instanceof net.Server)) throw invalidArgType('server', 'an instance of net.Server', server);
  if (tracked.has(server)) return;
  const set = new Set<net.Socket>();
  tracked.set(server, set);
  const add = (socket: net.Socket): void => {
    set.add(socket);
    socket.once('close', () => set.delete(socket));
  };
  // A TLS server's 'secureConnection' socket is the one to close (close_notify, then FIN).
  server.on(connectionEvent(server), add);
}

/** The event that hands over the socket to close: the TLS socket for a TLS (https) server. */
function connectionEvent(server: net.Server): 'connection' | 'secureConnection' {
  return server instanceof tls.Server ? 'secureConnection' : 'connection';
}

/**
 * Sockets of an http(s) server, from Node's own connection list (Node >= 18.14; made when the
 * server starts listening).
 */
function httpSockets(server: net.Server): net.Socket[] {
  const symbol = Object.getOwnPropertySymbols(server).find((s) => s.description === 'http.server.connections');
  const list = symbol ? (server as unknown as Record<symbol, { all?: () => { socket?: net.Socket }[] }>)[symbol] : undefined;
  if (!list || typeof list.all !== 'function') {
    if (server.listening || symbol) {
      missingInternal(
        "http.Server's connection list (the http.server.connections symbol)",
        'closeServer() closes only the connections trackConnections() saw and those whose next request starts after the call; the others are counted in the report as untracked',
      );
    }
    return [];
  }
  return list.all().flatMap((parser) => (parser.socket ? [parser.socket] : []));
}

/**
 * Takes the socket from Node's HTTP parser before the lingering close: bytes that arrive after our
 * FIN (a request racing with it) must be read and discarded, never parsed and handed to the app
 * (RFC 9112 §9.6). Node's server reads through listeners named `socketOnData` and `socketOnEnd`
 * (Node 18–22); removing them makes its socket listener wrapper unconsume the handle too.
 */
function detachHttpParser(socket: net.Socket): void {
  let detached = 0;
  for (const event of ['data', 'end'] as const) {
    for (const listener of socket.listeners(event)) {
      const name = (listener as { name?: string }).name;
      if (name === 'bound socketOnData' || name === 'bound socketOnEnd') {
        socket.removeListener(event, listener as () => void);
        detached++;
      }
    }
  }
  // A connection Node's HTTP server still parses (it has a parser) must have had them.
  if (detached === 0 && (socket as { parser?: unknown }).parser) {
    missingInternal(
      "the HTTP server's socket listeners (bound socketOnData, bound socketOnEnd)",
      'closeServer() cannot take a connection from the HTTP parser: a request racing the FIN may still be parsed and handed to the application',
    );
  }
}

function isHttp(server: net.Server): server is http.Server {
  return typeof (server as http.Server).closeIdleConnections === 'function';
}

/** Turns of the event loop the accept queue is given where the kernel cannot show it. */
const BLIND_DRAIN_TURNS = 3;

/** Waits (bounded) until the kernel's accept queue of the listening socket is empty. */
async function drainAcceptQueue(server: net.Server, until: number): Promise<void> {
  if (nativeUnavailable()) {
    // libuv accepts everything queued when the listener becomes readable, on the next turns.
    for (let i = 0; i < BLIND_DRAIN_TURNS; i++) await new Promise((resolve) => setImmediate(resolve));
    return;
  }
  const fd = handleFd(server);
  const address = server.address();
  if (fd < 0 || !address || typeof address === 'string') return;
  const inode = fs.fstatSync(fd).ino;
  for (;;) {
    const listener = sockets({ states: ['LISTEN'], localPort: address.port }).find((s) => s.inode === inode);
    if ((listener?.recvQ ?? 0) === 0 || performance.now() > until) return;
    // libuv accepts on the next turn of the loop.
    await new Promise((resolve) => setImmediate(resolve));
  }
}

function validate(options: CloseServerOptions): { timeout: number; drainWindow: number; signal?: AbortSignal } {
  if (options === null || typeof options !== 'object') throw invalidArgType('options', 'of type object', options);
  const { timeout = DEFAULT_TIMEOUT_MS, drainWindow = DEFAULT_DRAIN_MS, signal } = options;
  checkTimerMs(timeout, 'options.timeout');
  checkTimerMs(drainWindow, 'options.drainWindow');
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw invalidArgType('options.signal', 'an instance of AbortSignal', signal);
  return { timeout, drainWindow, signal };
}

/**
 * Shuts a server down gracefully and reports what happened to every connection; see the module
 * comment. Resolves once every connection is closed (gracefully, or reset at the deadline) and
 * the listener is closed.
 */
export async function closeServer(server: net.Server, options: CloseServerOptions = {}): Promise<ServerCloseReport> {
  if (!(server instanceof net.Server)) throw invalidArgType('server', 'an instance of net.Server', server);
  const { timeout, drainWindow, signal } = validate(options);
  const kernelView = nativeUnavailable() === undefined;
  if (signal?.aborted) throw abortError(signal);
  const started = performance.now();
  const deadlineAt = started + timeout;
  const http = isHttp(server);
  const known = new Set<net.Socket>([...(tracked.get(server) ?? []), ...(http ? httpSockets(server) : [])]);
  const reports = new Map<net.Socket, Promise<ConnectionReport>>();
  const requests = new WeakMap<net.Socket, number>();
  const waiting = new Set<() => void>(); // called at the deadline: close (reset) what is still open
  // The caller's abort reaches every connection closing through one signal of ours: one listener
  // on the caller's signal, however many connections (more than 10 would warn there).
  const stop = signal ? new AbortController() : undefined;
  if (stop) setMaxListeners(0, stop.signal);
  let pastDeadline = false;

  const closeOne = (socket: net.Socket): Promise<ConnectionReport> => {
    const existing = reports.get(socket);
    if (existing) return existing;
    if (socket.destroyed) {
      endedAlone(socket, Boolean(socket.errored));
      return reports.get(socket)!;
    }
    const peer = { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 };
    const remaining = Math.max(0, deadlineAt - performance.now());
    if (http) detachHttpParser(socket);
    // At the deadline or after an abort, no time is left: reset at once, with no FIN first (a timer
    // may fire a little before performance.now() says the deadline came; and gracefulClose()
    // would refuse an aborted signal and reset nothing).
    const aborted = signal?.aborted === true;
    const noTime = pastDeadline || aborted;
    const report = (async (): Promise<ConnectionReport> => {
      const result: CloseReport = await gracefulClose(socket, { timeout: noTime ? 0 : remaining, ...(stop && !noTime ? { signal: stop.signal } : {}) }).catch(
        (error: Error) => closedWithout('reset-sent', 'closed-elsewhere', 0, kernelView, error),
      );
      // Reset at once because of the abort: say so, as gracefulClose() does for its own signal.
      if (aborted && result.reason === 'deadline') result.reason = 'aborted';
      return { ...result, peer, requestsDuringShutdown: requests.get(socket) ?? 0 };
    })();
    reports.set(socket, report);
    return report;
  };

  /**
   * The response on `socket` now, if any: made the last (`Connection: close`, whose end calls
   * destroySoon) if its headers are still to come, else followed to its end, after which Node
   * starts the next pipelined response, if any, which is followed in turn; then close. Returns
   * whether there was one.
   */
  const lastResponse = (socket: net.Socket): boolean => {
    const res = (socket as unknown as { _httpMessage?: http.ServerResponse | null })._httpMessage;
    if (!res) return false;
    if (!res.headersSent) res.shouldKeepAlive = false;
    else {
      res.once('finish', () =>
        setImmediate(() => {
          if (!lastResponse(socket)) void closeOne(socket);
        }),
      );
    }
    return true;
  };

  /** An HTTP connection: let the response in flight finish, then close it our way. */
  const handleHttp = (socket: net.Socket): void => {
    // Node ends a `Connection: close` response's socket with destroySoon(): make that graceful.
    (socket as net.Socket & { destroySoon: () => void }).destroySoon = () => void closeOne(socket);
    if (lastResponse(socket)) return;
    // Idle keep-alive: a short window for one last request (served with Connection: close, whose
    // end calls destroySoon), then close.
    const timer = setTimeout(() => {
      const current = (socket as unknown as { _httpMessage?: unknown })._httpMessage;
      if (!current) void closeOne(socket);
    }, Math.min(drainWindow, Math.max(0, deadlineAt - performance.now())));
    socket.once('close', () => clearTimeout(timer));
  };

  const adopted = new WeakSet<net.Socket>();
  const adopt = (socket: net.Socket): void => {
    if (adopted.has(socket)) return;
    adopted.add(socket);
    known.add(socket);
    if (socket.destroyed) return endedAlone(socket, false);
    socket.once('close', (hadError: boolean) => endedAlone(socket, hadError));
    // At the deadline (or on abort), whatever has not begun to close does so with what time is
    // left, which is none: gracefulClose() resets it.
    waiting.add(() => void closeOne(socket));
    if (http) handleHttp(socket);
    else void closeOne(socket);
  };

  /** A connection that ended without our close (the peer closed it, or Node did). */
  const endedAlone = (socket: net.Socket, hadError: boolean): void => {
    if (reports.has(socket)) return;
    const error = (socket.errored ?? undefined) as Error | undefined;
    const report: ConnectionReport = {
      ...(hadError
        ? closedWithout('reset-received', 'peer-reset', performance.now() - started, kernelView, error)
        : closedWithout('graceful', 'peer-fin', performance.now() - started, kernelView, error)),
      peer: { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 },
      requestsDuringShutdown: requests.get(socket) ?? 0,
    };
    reports.set(socket, Promise.resolve(report));
  };

  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    requests.set(req.socket, (requests.get(req.socket) ?? 0) + 1);
    res.shouldKeepAlive = false;
    if (!known.has(req.socket)) adopt(req.socket);
  };
  const onConnection = (socket: net.Socket): void => {
    if (!http) adopt(socket);
  };
  if (http) server.prependListener('request', onRequest);
  server.on(connectionEvent(server), onConnection);
  const untracked = kernelView ? countUntracked(server, known) : -1;

  // 1. Stop accepting: take in what already waits in the kernel's accept queue, then close the
  //    listener (closing it first would reset those connections). What the drain accepts comes
  //    as 'connection' events, counted.
  let acceptedFromQueue = 0;
  const countAccepted = (): void => void acceptedFromQueue++;
  server.on('connection', countAccepted);
  try {
    if (server.listening) await drainAcceptQueue(server, Math.min(deadlineAt, started + 1000));
  } finally {
    server.off('connection', countAccepted);
  }
  // net.Server's close, not http's: Node >= 19's http close() destroys idle keep-alive sockets.
  // The listening fd closes at once; close()'s callback would also wait for untracked connections.
  if (server.listening) net.Server.prototype.close.call(server);

  // 2. Every connection known now; more may join while they drain (accepted from the queue).
  for (const socket of [...known, ...(http ? httpSockets(server) : [])]) adopt(socket);

  // 3. One deadline for everything, counted from the call (the drain took some of it).
  const onDeadline = (): void => {
    pastDeadline = true;
    for (const close of waiting) close();
  };
  const onAbort = (): void => {
    stop?.abort(signal?.reason);
    onDeadline();
  };
  const deadline = setTimeout(onDeadline, Math.max(0, deadlineAt - performance.now()));
  signal?.addEventListener('abort', onAbort, { once: true });
  if (signal?.aborted) onAbort(); // aborted during the drain

  // Every known connection ends with exactly one report: from gracefulClose(), or from its own
  // 'close' when it ended without us (the peer closed it during the drain window).
  while (![...known].every((socket) => reports.has(socket))) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  const connections = await Promise.all([...reports.values()]);
  clearTimeout(deadline);
  signal?.removeEventListener('abort', onAbort);
  if (http) server.off('request', onRequest);
  server.off(connectionEvent(server), onConnection);

  const totals = { graceful: 0, resetSent: 0, resetReceived: 0, destroyed: 0, total: connections.length };
  for (const c of connections) {
    if (c.outcome === 'graceful') totals.graceful++;
    else if (c.outcome === 'reset-sent') totals.resetSent++;
    else if (c.outcome === 'reset-received') totals.resetReceived++;
    else totals.destroyed++;
  }
  return { totals, duration: performance.now() - started, acceptedFromQueue, untracked, kernelView, connections };
}

/** The report of a connection that ended without a gracefulClose() of ours running it. */
function closedWithout(
  outcome: CloseReport['outcome'],
  reason: CloseReport['reason'],
  total: number,
  kernelView: boolean,
  error?: Error,
): CloseReport {
  return {
    outcome,
    reason,
    bytesDiscarded: 0,
    unackedAtClose: -1,
    unsentInNode: 0,
    durations: { flush: 0, linger: 0, total },
    states: [],
    kernelView,
    ...(error ? { error } : {}),
  };
}

/** Connections to the server's port in this namespace that no known socket accounts for. */
function countUntracked(server: net.Server, known: Set<net.Socket>): number {
  const address = server.address();
  if (!address || typeof address === 'string') return 0;
  const ours = new Set([...known].map((s) => `${s.remoteAddress}|${s.remotePort}`));
  const open = sockets({ states: ['ESTABLISHED', 'CLOSE_WAIT', 'SYN_RECV'], localPort: address.port });
  return open.filter((e) => e.inode !== 0 && !ours.has(`${e.remote.address}|${e.remote.port}`)).length;
}
