/**
 * `closeServer()`: graceful shutdown of a `net`, `http`, `https` or `http2` server, in the steps
 * the documentation names:
 *
 * 1. find every connection (without `trackConnections()`: see server-connections.ts) and what it
 *    carries: HTTP/1.1, an HTTP/2 session, an upgraded connection (a WebSocket), a plain `net`
 *    connection, a TLS handshake not yet complete;
 * 2. tell the application (`shutdownSignal()`), so that what only it can close (a WebSocket, an
 *    SSE stream, a long poll, its own protocol on a `net.Server`) ends the way its protocol says;
 * 3. stop accepting without resetting what already waits in the kernel's accept queue;
 * 4. close each connection its protocol's way: HTTP/1.1 responses in flight finish with
 *    `Connection: close`, idle keep-alive connections (and those whose last response promised
 *    keep-alive) get a window for one last request; HTTP/2 sessions get GOAWAY first; upgraded
 *    connections and those the application closes are left to it; a `net` connection whose
 *    application took no signal gets our FIN once it has been quiet for the drain window; every
 *    connection then gets the lingering close of `gracefulClose()`;
 * 5. reset only what is left at the one deadline;
 * 6. report what happened to each connection, the application's part included.
 */
import dc from 'node:diagnostics_channel';
import { setMaxListeners } from 'node:events';
import type http from 'node:http';
import type http2 from 'node:http2';
import fs from 'node:fs';
import net from 'node:net';
import tls from 'node:tls';
import { performance } from 'node:perf_hooks';
import { constants, native, nativeUnavailable } from './binding';
import { closeForServer, closeIdleForServer, ensureReading, gracefulClose, type CloseReport, type IdleClose, type ServerClose } from './close';
import { closeWithoutKernel } from './close-node-only';
import { timerAt, type TimerAt } from './timer-at';
import { findSocket, socketTuple, sockets, socketsIn, type SocketEntry, type SocketTuple } from './diag';
import { abortError, checkTimerMs, codedError, invalidArgType } from './errors';
import { handleFd } from './fd';
import { handoffState } from './handoff';
import { canHandOff, findAdopter, MAX_FDS_PER_MESSAGE, stopAdopting, type Successor } from './handoff-connections';
import { SessionClose, type StreamCounts } from './http2';
import { missingInternal } from './node-internals';
import { tcpInfo, tcpState } from './ops';
import { busyParsers, connectionsOf, httpSockets, isHttp2Server, onFollowedClose, openStreams, watchServer } from './server-connections';
import { announceShutdown, asked, shutdownOver } from './shutdown-signal';

export { trackConnections } from './server-connections';

/** Options of `closeServer()`. */
export interface CloseServerOptions {
  /** ms from the call until every connection still open is reset; default 10 000. */
  timeout?: number;
  /**
   * ms an HTTP/1.1 keep-alive connection may stay idle during the shutdown, for a last request
   * (served with `Connection: close`): counted from its last byte either way, so one idle that long
   * already is closed at once, and one whose response in flight had promised keep-alive gets it
   * from the end of that response. Also how long a TLS handshake in progress may take to complete,
   * and the longest wait for an HTTP/2 client's PING answer; default 500.
   */
  drainWindow?: number;
  /** Aborting brings the deadline forward: everything still open is reset at once. */
  signal?: AbortSignal;
}

/**
 * What a connection carried when the shutdown reached it: HTTP/1.1, an HTTP/2 session, an HTTP/1.1
 * connection taken over after an Upgrade or CONNECT (a WebSocket), a plain `net.Server`
 * connection, or a TLS connection whose handshake had not completed.
 */
export type ConnectionProtocol = 'http/1.1' | 'h2' | 'upgraded' | 'net' | 'tls-handshake';

/** What happened to one connection. */
export interface ConnectionReport extends Omit<CloseReport, 'outcome'> {
  /**
   * `'graceful'` only when the close sent and met no RST and the application's work on the
   * connection completed (`applicationDone`). `'interrupted'`: no RST, but the application's work
   * did not complete (see `applicationDone`). `'handed-off'`: an idle HTTP/1.1 keep-alive
   * connection given to the next instance of the server on the same port (see `listenReusePort()`'s
   * `adoptConnections`), which serves its next request: it did not close. The others as in
   * `CloseReport`.
   */
  outcome: CloseReport['outcome'] | 'interrupted' | 'handed-off';
  /** The peer's address and port. */
  peer: { address: string; port: number };
  /** HTTP requests (HTTP/2 streams) the application received on this connection after the shutdown started. */
  requestsDuringShutdown: number;
  protocol: ConnectionProtocol;
  /**
   * HTTP requests the application received whose response never finished (HTTP/2: streams reset
   * or cut), counting those in flight when the shutdown began. For a `'net'` connection that
   * `closeServer()` closed (the application took no `shutdownSignal()`), whose protocol it cannot
   * read: 1 when data had come after the application's last write when our FIN went out (an answer
   * it may still have owed), or came after our FIN (read and discarded, never seen by it); else 0.
   */
  requestsUnanswered: number;
  /**
   * HTTP/1.1: bytes of a new request arrived after our FIN (a request that raced the close of an
   * idle connection). They were read and discarded, never given to the application; the client saw
   * the connection close before any response and may retry the request (RFC 9112 §9.3.1).
   */
  requestAfterFin: boolean;
  /** A response was streaming when the shutdown began: headers sent, not ended (SSE, a long poll that had answered its headers, a download). */
  streaming: boolean;
  /** The application asked for a `shutdownSignal()` of this connection (or of one of its requests or streams) or of the server. */
  told: boolean;
  /**
   * For a connection the application closes (`'upgraded'`, a `'net'` one whose `shutdownSignal()`
   * it took): whether it ended the connection itself (a WebSocket after its close handshake)
   * before the peer closed and before the deadline. Absent for connections `closeServer()` closes.
   */
  closedByApplication?: boolean;
  /**
   * Whether the application's work on this connection completed: no request left unanswered, no
   * request raced our FIN, no write refused after the close began (`ERR_STREAM_WRITE_AFTER_END`),
   * no HTTP/2 stream reset, and a connection the application closes closed by it.
   */
  applicationDone: boolean;
  /** HTTP/2: what became of the session's streams from the start of the shutdown. */
  streams?: StreamCounts;
}

/** What `closeServer()` did. */
export interface ServerCloseReport {
  /**
   * Connections per outcome, and in all (`destroyed` only where Node destroyed a socket with data
   * still queued; `interrupted`: closed without RST, the application's work not complete;
   * `handedOff`: idle connections given to the next instance of the server, see `ConnectionReport`).
   */
  totals: { graceful: number; interrupted: number; handedOff: number; resetSent: number; resetReceived: number; destroyed: number; total: number };
  /** ms from the call until the last connection was closed. */
  duration: number;
  /** Connections accepted from the kernel's accept queue while the listener was being closed, then closed gracefully. */
  acceptedFromQueue: number;
  /**
   * What became of the listener's accept queue: `'drained'`, taken in before the listener closed
   * (closing a listener resets what waits in its queue); `'migrated'`, left to the kernel, which
   * moves it to another listener of the port's SO_REUSEPORT group (another listener on the same
   * address and port, and `net.ipv4.tcp_migrate_req` 1 in this network namespace: see
   * `listenReusePort()`); `'not-listening'`, the server was not listening when the call came.
   */
  acceptQueue: 'drained' | 'migrated' | 'not-listening';
  /**
   * Connections waiting in the accept queue in the instant the listener closed (`tcpi_unacked` of
   * the listening socket). With `acceptQueue` `'migrated'`, those the kernel moves to the other
   * listener; with `'drained'`, those the drain could not save (the kernel resets them): more than
   * 0 only when the drain window ended first (the event loop too busy to take them in; or, where the
   * listener could not stop answering SYNs, connections coming faster than they were taken in).
   * -1 when unknown (no kernel view, a Unix domain socket).
   */
  queuedAtClose: number;
  /**
   * With `acceptQueue` `'drained'`: handshakes still under way in the instant the listener closed
   * (request sockets in SYN_RECV that were there when it stopped answering SYNs, their client's
   * last ACK not come within the drain window). The kernel drops them; a client that is still there
   * gets an RST when its ACK comes. -1 when unknown: no kernel view, no drain, or a listener that
   * could not stop answering SYNs (on Linux 6.18 the socket filter needs CAP_BPF, CAP_SYS_ADMIN or
   * CAP_NET_ADMIN; an addon built before it).
   */
  handshakesAtClose: number;
  /**
   * Connections this process holds on this server's port that finwait could not close because
   * they were accepted before it knew of them (before finwait was loaded, for a server that is not
   * http(s)); another process's connections on a shared port (SO_REUSEPORT) are not counted. -1
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
/** An HTTP/2 client's PING answer is awaited for this many round-trip times, and at least PING_WAIT_MIN_MS. */
const PING_WAIT_RTTS = 4;
const PING_WAIT_MIN_MS = 50;
/** Bytes a peer may send after our FIN (discarded) before it is reset, as gracefulClose()'s default. */
const DEFAULT_MAX_DISCARD = 16 * 1024 * 1024;
/** Why a connection of a server on a Unix domain socket is closed with what Node alone can do. */
const NO_TCP = codedError('ENOTSUP', 'A Unix domain socket has no TCP state: closed with what Node alone can do');
/** Idle connections whose windows end within this many ms share a timer. */
const IDLE_GROUP_MS = 5;
/** Idle connections closed per turn of the event loop. */
const IDLE_CHUNK = 256;
/** Turns of the event loop the accept queue is given where the kernel cannot show it. */
const BLIND_DRAIN_TURNS = 3;

/**
 * How long a seal outlasts the drain it was set for, where it can lift by itself (ms): only a
 * process killed while draining needs it to, and one that is alive releases it at once after the
 * drain. Past it, a SYN is answered again, as it is by a listener with no filter.
 */
const SEAL_MARGIN_MS = 2000;

/** Servers whose listener a shutdown has sealed (see stopAccepting): a second closeServer() on one does not seal it again. */
const sealedServers = new WeakSet<net.Server>();

/** Detaches the SYN filter a connection accepted from a sealed listener inherited (see stopAccepting). */
function detachInherited(socket: net.Socket): void {
  const fd = handleFd(socket);
  if (fd < 0) return;
  try {
    native().detachFilter?.(fd);
  } catch {
    // Closed meanwhile: nothing to give back.
  }
}

type HttpSocket = net.Socket & {
  _httpMessage?: http.ServerResponse | null;
  parser?: unknown;
  destroySoon: () => void;
};

/** One connection during the shutdown. */
interface Connection {
  /** The socket to close: the TLS socket once its handshake completed, else the TCP one. */
  readonly socket: HttpSocket;
  protocol: ConnectionProtocol;
  readonly peer: { address: string; port: number };
  /** Read while the socket is open, for lookups after it closed. */
  readonly tuple: SocketTuple | undefined;
  /** `'open'` until its close begins (`'closing'`) or it ended; `'done'` once reported. */
  phase: 'open' | 'closing' | 'done';
  result?: ConnectionReport;
  /** Sent to the adopting process, its acknowledgement awaited (reading stopped meanwhile). */
  handingOff?: boolean;
  /** The adopting process took it: this process only closed its fd. */
  handedOff?: boolean;
  /** Its lingering close, while one runs (with the kernel's view). */
  close?: ServerClose;
  /** Its close as an idle connection (the same close, made with the others): told when the socket closes. */
  idleClose?: IdleClose;
  /** Handed to another Connection (a TLS handshake that completed). */
  retired: boolean;
  requestsDuringShutdown: number;
  /** HTTP/1.1 responses followed (in flight at the start or begun since) that have not finished. */
  responses?: Set<http.ServerResponse>;
  lastRequest?: http.IncomingMessage;
  /** Whether the last request had been read in full when our FIN went out. */
  requestCompleteAtFin: boolean;
  streaming: boolean;
  /** The application closes this connection itself. */
  appCloses: boolean;
  /** The peer's FIN came before the application's end(). */
  peerEndedFirst: boolean;
  /** A net connection closed by us: data had come after the application's last write when our FIN went. */
  owesAnswer?: boolean;
  /** `socket.bytesRead` when the connection became idle: more means a request began. */
  readAtIdle: number;
  h2?: SessionClose;
  timer?: TimerAt;
}

/** The Connection of a socket under a running closeServer(), found from the socket (`this` of the listeners below). */
function connectionOf(socket: net.Socket): { shutdown: ServerShutdown; c: Connection } | undefined {
  const server = (socket as net.Socket & { server?: net.Server }).server;
  const shutdown = server ? running.get(server) : undefined;
  const c = shutdown?.connection(socket);
  return shutdown && c ? { shutdown, c } : undefined;
}
function onConnectionClose(this: net.Socket, hadError: boolean): void {
  const found = connectionOf(this);
  found?.shutdown.endedAlone(found.c, hadError);
}
// The sockets finwait follows from their accept (nearly all) tell closeServer() of their close
// without a listener per connection.
onFollowedClose((socket, hadError) => onConnectionClose.call(socket, hadError));
/** Node ends a `Connection: close` response's socket with destroySoon(): made graceful. */
function destroySoon(this: net.Socket): void {
  const found = connectionOf(this);
  if (found) found.shutdown.closeOne(found.c);
  else net.Socket.prototype.destroySoon.call(this);
}

/** Every running closeServer(), by server: HTTP requests that begin during it are seen on a channel. */
const running = new WeakMap<net.Server, ServerShutdown>();
let runningCount = 0;
const REQUEST_START = 'http.server.request.start';
function onRequestStart(message: unknown): void {
  const { request, response, socket, server } = message as { request: http.IncomingMessage; response: http.ServerResponse; socket: net.Socket; server: net.Server };
  running.get(server)?.requestArrived(request, response, socket);
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
 * comment. Works on `net.Server`, `http.Server`, `https.Server` and the servers of
 * `http2.createServer()` / `createSecureServer()`, and on servers of frameworks built on them.
 * Resolves once every connection is closed (gracefully, or reset at the deadline) and the
 * listener is closed. Rejects with `ERR_INVALID_ARG_TYPE` for what is not a `net.Server` (naming
 * what it got), `ERR_OUT_OF_RANGE` for a timeout out of range, and an `AbortError` if `signal` is
 * already aborted.
 */
export async function closeServer(server: net.Server, options: CloseServerOptions = {}): Promise<ServerCloseReport> {
  if (!(server instanceof net.Server)) throw invalidArgType('server', 'an instance of net.Server (net, http, https or http2)', server);
  const { timeout, drainWindow, signal } = validate(options);
  if (signal?.aborted) throw abortError(signal);
  const shutdown = new ServerShutdown(server, timeout, drainWindow, signal);
  running.set(server, shutdown);
  if (runningCount++ === 0) dc.subscribe(REQUEST_START, onRequestStart);
  try {
    return await shutdown.run();
  } finally {
    if (running.get(server) === shutdown) running.delete(server);
    if (--runningCount === 0) dc.unsubscribe(REQUEST_START, onRequestStart);
    shutdownOver(server);
  }
}

class ServerShutdown {
  private readonly started = performance.now();
  private readonly deadlineAt: number;
  /** When the window of idle HTTP/1.1 connections and TLS handshakes ends. */
  private readonly windowEndsAt: number;
  private readonly kernelView = nativeUnavailable() === undefined;
  /** A TCP server (not one listening on a Unix domain socket or a pipe). */
  private readonly tcp: boolean;
  private readonly listenAddress: { address: string; port: number } | undefined;
  private readonly http: boolean;
  private readonly conns = new Map<net.Socket, Connection>();
  /** Reports not settled yet, and the wake-up of run() when the last one settles. */
  private pending = 0;
  private allSettled: (() => void) | undefined;
  private pastDeadline = false;
  /** The caller's abort reaches every close through one signal of ours (one listener on the caller's). */
  private readonly stop: AbortController | undefined;
  private acceptedFromQueue = 0;
  private readonly streamingAtStart = new Set<net.Socket>();
  /** Whether the application was told (connections adopted before are told with the others). */
  private told = false;
  private draining = false;
  private listenFd = -1;
  private acceptQueue: ServerCloseReport['acceptQueue'] = 'not-listening';
  private queuedAtClose = 0;
  private handshakesAtClose = -1;
  /** While the listener drops SYNs (see stopAccepting): the seal, released once the listener closed. */
  private sealed: { release(): void } | undefined;
  /** The cookies of the handshakes under way at the seal that are still under way. */
  private handshakes: Set<string> | undefined;
  /** An fd of the sealed listener's network namespace (null: this process's), closed with the listener. */
  private listenNetns: number | null = null;
  /** The windows of idle HTTP/1.1 connections: those idle since the call share one timer. */
  private readonly idleTimers = new IdleTimers((c) => this.idleOver(c, 1));
  /** Another instance of this server on the same port that adopts idle connections (see handoff-connections). */
  private successor: Successor | undefined;
  /** Its lookup, in the background (the accept queue is not left waiting for it); done when settled. */
  private successorLookup: Promise<void> | undefined;
  private lookupDone = false;
  private finished = false;
  /** Idle connections to hand to it at the end of this turn. */
  private toHandOff: Connection[] = [];

  constructor(
    private readonly server: net.Server,
    timeout: number,
    private readonly drainWindow: number,
    private readonly signal: AbortSignal | undefined,
  ) {
    this.deadlineAt = this.started + timeout;
    this.windowEndsAt = Math.min(this.started + drainWindow, this.deadlineAt);
    this.http = typeof (server as http.Server).closeIdleConnections === 'function';
    const address = server.address();
    this.tcp = typeof address !== 'string';
    // A listener on one address: every connection's local end (no getsockname per connection).
    if (address && typeof address !== 'string' && address.address !== '0.0.0.0' && address.address !== '::') {
      this.listenAddress = { address: address.address, port: address.port };
    }
    this.stop = signal ? new AbortController() : undefined;
    if (this.stop) setMaxListeners(0, this.stop.signal);
  }

  async run(): Promise<ServerCloseReport> {
    const server = this.server;
    // 1. Find every connection known now. This server adopts no more from an older instance (what
    //    was on its way is adopted first, and found); a newer one may adopt its idle connections.
    stopAdopting(server);
    const found = this.find();
    if (this.kernelView && this.tcp && canHandOff(server)) {
      this.successorLookup = findAdopter(server, Math.max(this.drainWindow, 50)).then(
        (successor) => {
          this.lookupDone = true;
          if (this.finished || this.pastDeadline) successor?.close();
          else this.successor = successor;
        },
        () => void (this.lookupDone = true),
      );
    }
    const untracked = this.kernelView ? await this.countUntracked(found) : -1;
    // What was streaming, seen before the application is told (it may end its streams at once).
    for (const [socket, protocol] of found) if (this.isStreaming(socket, protocol)) this.streamingAtStart.add(socket);
    // 4. Each connection's close begins now, before the application is told: a response it ends
    //    when told already says Connection: close. (Those accepted while draining join as they come.)
    for (const [socket, protocol] of found) this.adopt(socket, protocol);
    // 2. Tell the application; what it asks for in its handlers is aborted at once. Then a plain
    //    net connection is closed by us, or left to the application if it took its signal.
    announceShutdown(server, this.keysOf(found));
    this.told = true;
    for (const c of this.conns.values()) if (c.protocol === 'net') this.netConnection(c);
    const onConnection = (socket: net.Socket): void => {
      if (this.draining) this.acceptedFromQueue++;
      this.adopt(socket, this.protocolOf(socket));
      // Accepted while draining: the listener closes as soon as nothing is left to take in.
      if (this.draining && this.listenFd >= 0) {
        // A connection accepted from the sealed listener inherited its filter: give it back as the kernel made it.
        if (this.sealed !== undefined) detachInherited(socket);
        if (this.drained(this.listenFd)) this.closeListener();
      }
    };
    const onSecure = (socket: tls.TLSSocket): void => this.handshakeDone(socket);
    server.on('connection', onConnection);
    if (server instanceof tls.Server) server.on('secureConnection', onSecure);
    // 5. One deadline for everything, counted from the call (never early: timerAt()).
    const onAbort = (): void => {
      this.stop?.abort(this.signal?.reason);
      this.atDeadline();
    };
    const deadline = timerAt(this.deadlineAt, () => this.atDeadline());
    this.signal?.addEventListener('abort', onAbort, { once: true });
    try {
      // 3. Stop accepting.
      await this.stopAccepting();
      if (this.signal?.aborted) onAbort(); // aborted during the drain
      if (this.pending > 0) await new Promise<void>((resolve) => (this.allSettled = resolve));
    } finally {
      this.finished = true;
      this.idleTimers.clear();
      this.successor?.close();
      deadline.clear();
      this.signal?.removeEventListener('abort', onAbort);
      server.off('connection', onConnection);
      server.off('secureConnection', onSecure);
    }
    // 6. Report.
    const reports: ConnectionReport[] = [];
    for (const c of this.conns.values()) if (!c.retired && c.result) reports.push(c.result);
    return this.report(reports, untracked);
  }

  /**
   * A connection's 4-tuple, read while it is open (lookups come after its fd closed). The local
   * end is the listener's own address unless it listens on every address (then one getsockname).
   */
  private tupleOf(socket: net.Socket, peer: { address: string; port: number }): SocketTuple | undefined {
    const address = this.listenAddress;
    if (!address || !peer.address || !peer.port) return socketTuple(socket);
    return { local: address, remote: peer };
  }

  connection(socket: net.Socket): Connection | undefined {
    return this.conns.get(socket);
  }

  // 1. Find -------------------------------------------------------------------------------------

  /** Every connection known now, with what it carries. */
  private find(): Map<net.Socket, ConnectionProtocol> {
    const server = this.server;
    const known = connectionsOf(server) ?? watchServer(server);
    const found = new Map<net.Socket, ConnectionProtocol>();
    for (const socket of known.secure) {
      if (!socket.destroyed) found.set(socket, this.protocolOf(socket));
    }
    for (const socket of this.http ? httpSockets(server) : []) {
      if (!socket.destroyed) found.set(socket, 'http/1.1');
    }
    // A TLS server's TCP sockets: those without a TLS socket are still in their handshake.
    const secured = new Set<unknown>();
    for (const socket of found.keys()) secured.add((socket as { _parent?: unknown })._parent);
    for (const socket of known.sockets) {
      if (socket.destroyed || found.has(socket)) continue;
      if (server instanceof tls.Server) {
        if (!secured.has(socket)) found.set(socket, 'tls-handshake');
      } else {
        found.set(socket, this.protocolOf(socket));
      }
    }
    return found;
  }

  private clock: { perf: number; loop: number } | undefined;
  /** performance.now() and the loop's time (see idleFor), read once per synchronous run of work. */
  private now(): { perf: number; loop: number } {
    if (!this.clock) {
      this.clock = { perf: performance.now(), loop: loopNow() };
      queueMicrotask(() => (this.clock = undefined));
    }
    return this.clock;
  }

  /** Whether a response on the connection is streaming now: headers sent, not ended. */
  private isStreaming(socket: net.Socket, protocol: ConnectionProtocol): boolean {
    if (protocol === 'http/1.1') {
      const res = (socket as HttpSocket)._httpMessage;
      return Boolean(res?.headersSent && !res.writableEnded);
    }
    if (protocol !== 'h2') return false;
    const session = this.sessionOf(socket);
    return session ? openStreams(session).some((stream) => stream.headersSent && !stream.writableEnded) : false;
  }

  /** What an open socket of this server carries now. */
  private protocolOf(socket: net.Socket): ConnectionProtocol {
    if (this.server instanceof tls.Server && !(socket instanceof tls.TLSSocket)) return 'tls-handshake';
    if (isHttp2Server(this.server)) {
      if (this.sessionOf(socket)) return 'h2';
      return (socket as HttpSocket).parser ? 'http/1.1' : 'upgraded'; // allowHTTP1, or a session finwait never saw
    }
    if (this.http) return (socket as HttpSocket).parser ? 'http/1.1' : 'upgraded';
    return 'net';
  }

  private sessionOf(socket: net.Socket): http2.ServerHttp2Session | undefined {
    for (const session of connectionsOf(this.server)?.sessions ?? []) {
      try {
        const s = session.socket as net.Socket | undefined;
        if (s && s.remotePort === socket.remotePort && s.remoteAddress === socket.remoteAddress) return session;
      } catch {
        // unbound: closing
      }
    }
    return undefined;
  }

  /** The keys shutdown signals are kept under: each socket, and each HTTP/2 session. */
  private *keysOf(found: Map<net.Socket, ConnectionProtocol>): Iterable<object> {
    for (const [socket, protocol] of found) {
      yield socket;
      if (protocol === 'h2') {
        const session = this.sessionOf(socket);
        if (session) yield session;
      }
    }
  }

  /**
   * Connections to the server's port that finwait does not know. Node counts the connections a
   * server has open: when finwait knows as many, there is none (no dump of the socket table).
   * Else the kernel's list of connections on the port, less those finwait knows, less those this
   * process holds no fd of: on a port shared with another process (SO_REUSEPORT, a handoff in
   * progress), the other one's connections are its own.
   */
  private async countUntracked(found: Map<net.Socket, ConnectionProtocol>): Promise<number> {
    const address = this.server.address();
    if (!address || typeof address === 'string') return 0;
    const open = await new Promise<number>((resolve) => this.server.getConnections((error, count) => resolve(error ? Infinity : count)));
    const raw = new Set<net.Socket>();
    for (const socket of found.keys()) raw.add((socket as { _parent?: net.Socket | null })._parent ?? socket);
    if (open <= raw.size) return 0;
    const ours = new Set([...found.keys()].map((s) => `${s.remoteAddress}|${s.remotePort}`));
    const local = this.listenAddress?.address;
    const listed = sockets({ states: ['ESTABLISHED', 'CLOSE_WAIT', 'SYN_RECV'], localPort: address.port }).filter(
      (e) => e.inode !== 0 && (local === undefined || e.local.address === local) && !ours.has(`${e.remote.address}|${e.remote.port}`),
    );
    if (listed.length === 0) return 0;
    const held = await socketInodes();
    return listed.filter((e) => held.has(e.inode)).length;
  }

  // 3. Stop accepting ---------------------------------------------------------------------------

  /**
   * Stops taking new connections without resetting one that connected: the listener first stops
   * answering SYNs (a socket filter, `SealedListener`; a client whose SYN it drops sends it again
   * after a second, to the next listener on the port or to a closed port that refuses it), then
   * takes in what waits in the kernel's accept queue and what completes the handshakes under way
   * (request sockets in SYN_RECV, seen by sock_diag), and closes the moment neither is left.
   * Nothing else can then reach the queue, so the close resets no one even if this process is
   * descheduled between the last look and close(2). libuv accepts everything queued in one go when
   * the listener is readable, calling back once per connection; the queue's length is read on the
   * listening socket (`tcpi_unacked` of a listener) in that callback. A handshake whose client went
   * silent keeps the drain going until the drain window ends; one answered with a SYN cookie (under
   * a SYN flood) leaves no request socket to wait for.
   *
   * The filter belongs to the socket, which another process may hold too (a cluster worker's
   * shared handle, a server sent to a child, systemd's socket): the seal keeps a copy of the fd,
   * and once Node closed its own, one native call detaches the filter and closes the copy, so such
   * a socket lives on unsealed; for one nobody else holds, only a SYN arriving between those two
   * system calls could be answered, then reset. Where this process may load BPF the filter also
   * lifts by itself shortly after the drain window, so a process killed while draining does not
   * leave such a socket sealed. Without a filter (Linux 6.18 attaches one to a TCP socket only
   * with CAP_BPF or CAP_SYS_ADMIN, eBPF, or CAP_NET_ADMIN, classic; an addon predating it) the
   * listener closes at the first empty queue, and a handshake completing in that instant is reset.
   * Where the kernel migrates the queue to another listener of the port, there is no drain: the
   * listener closes at once and the other listener gets what waited.
   */
  private async stopAccepting(): Promise<void> {
    const server = this.server;
    if (!server.listening) return;
    const fd = this.kernelView && this.tcp ? handleFd(server) : -1;
    this.listenFd = fd;
    this.queuedAtClose = -1;
    if (fd >= 0 && this.kernelMigrates()) {
      this.acceptQueue = 'migrated';
      this.closeListener();
      return;
    }
    this.acceptQueue = 'drained';
    this.draining = true;
    try {
      if (fd < 0) {
        for (let i = 0; i < BLIND_DRAIN_TURNS; i++) await new Promise((resolve) => setImmediate(resolve));
      } else {
        const until = Math.max(this.windowEndsAt, performance.now());
        this.seal(fd, until - performance.now());
        while (server.listening && !this.pastDeadline && performance.now() < until && !this.drained(fd)) {
          await new Promise((resolve) => setImmediate(resolve));
        }
      }
    } finally {
      this.closeListener();
    }
  }

  /**
   * Whether the kernel moves this listener's accept queue to another listener when it closes:
   * `net.ipv4.tcp_migrate_req` is 1 in this namespace and another listener shares the address
   * and port (the rest of its SO_REUSEPORT group). Any doubt (a failed read) means no: then drain.
   */
  private kernelMigrates(): boolean {
    try {
      const { otherListeners, migrateReq } = handoffState(this.server);
      return migrateReq === true && otherListeners > 0;
    } catch {
      return false;
    }
  }

  /** Closes the listening socket: net.Server's close, not http's (Node >= 19's destroys idle keep-alive sockets). */
  private closeListener(): void {
    this.draining = false;
    if (this.server.listening) {
      // Read in the same synchronous run as close(2): what waits now is what the close hands over or loses.
      if (this.listenFd >= 0) {
        try {
          this.queuedAtClose = tcpInfo(this.listenFd).unacked;
        } catch {
          this.queuedAtClose = -1;
        }
      }
      if (this.handshakes !== undefined) {
        if (this.handshakes.size > 0) this.drained(this.listenFd); // a last look at those still under way
        this.handshakesAtClose = this.handshakes.size;
      }
      // The listening fd closes at once; close()'s callback would also wait for untracked connections.
      net.Server.prototype.close.call(this.server);
    }
    // Node's fd is closed: the seal's copy goes with the filter (a socket another process holds lives on unsealed).
    if (this.sealed !== undefined) {
      this.sealed.release();
      this.sealed = undefined;
      sealedServers.delete(this.server);
    }
    if (this.listenNetns !== null) {
      native().closeFd(this.listenNetns); // the addon's fd: fs.closeSync() would warn in a Worker
      this.listenNetns = null;
    }
  }

  /**
   * Makes the listener answer no new SYN for the `drainMs` the drain may take; remembers the
   * handshakes under way, which may still complete. Where this process may load BPF, the filter
   * lifts by itself `SEAL_MARGIN_MS` after that, released or not: a process killed while draining
   * leaves no listener another process holds sealed.
   */
  private seal(fd: number, drainMs: number): void {
    const Sealed = native().SealedListener;
    if (typeof Sealed !== 'function') return; // an addon predating it: close at the first empty queue
    if (sealedServers.has(this.server)) return; // another closeServer() on it sealed it, and releases it
    try {
      this.sealed = new Sealed(fd, Math.ceil(drainMs) + SEAL_MARGIN_MS); // capped by the addon at 2^31 - 1
    } catch {
      return; // EPERM without CAP_BPF and CAP_NET_ADMIN (Linux 6.18): close at the first empty queue
    }
    sealedServers.add(this.server);
    try {
      this.listenNetns = native().socketNetns(fd); // sock_diag answers for the listener's namespace
    } catch {
      this.listenNetns = null; // not privileged (SIOCGSKNS needs CAP_NET_ADMIN): this thread's namespace
    }
    this.handshakes = new Set(this.handshakesUnderWay().map((e) => e.cookie));
  }

  /**
   * Whether nothing is left to take in: the accept queue is empty and, on a sealed listener, none
   * of the handshakes under way at the seal is still under way (they leave SYN_RECV into the queue,
   * so the queue is read after them). Those begun since are another listener's on the port. Never,
   * while another closeServer() on the same server holds the seal (until the drain window ends).
   */
  private drained(fd: number): boolean {
    // Another closeServer() on this server sealed it: the listener is its to close.
    if (this.sealed === undefined && sealedServers.has(this.server)) return false;
    if (this.handshakes !== undefined && this.handshakes.size > 0) {
      const now = new Set(this.handshakesUnderWay().map((e) => e.cookie));
      for (const cookie of this.handshakes) if (!now.has(cookie)) this.handshakes.delete(cookie);
    }
    return (this.handshakes === undefined || this.handshakes.size === 0) && this.queued(fd) === 0;
  }

  /** Request sockets (SYN_RECV) on the listener's address and port; none where sock_diag cannot answer. */
  private handshakesUnderWay(): SocketEntry[] {
    const address = this.server.address();
    if (address === null || typeof address === 'string') return [];
    const local = this.listenAddress?.address; // undefined: every address
    try {
      const filter = { states: ['SYN_RECV'] as const, localPort: address.port, family: net.isIPv4(address.address) ? (4 as const) : undefined };
      const entries = socketsIn(this.listenNetns, filter);
      return local === undefined ? entries : entries.filter((e) => e.local.address === local);
    } catch {
      return [];
    }
  }

  private queued(fd: number): number {
    try {
      return tcpInfo(fd).unacked;
    } catch {
      return 0;
    }
  }

  // 4. Close each connection its protocol's way --------------------------------------------------

  private adopt(socket: net.Socket, protocol: ConnectionProtocol): Connection | undefined {
    if (this.conns.has(socket)) return this.conns.get(socket);
    const peer = { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 };
    const c: Connection = {
      socket: socket as HttpSocket,
      protocol,
      peer,
      tuple: this.kernelView && this.tcp ? this.tupleOf(socket, peer) : undefined,
      phase: 'open',
      retired: false,
      requestsDuringShutdown: 0,
      requestCompleteAtFin: true,
      streaming: this.streamingAtStart.has(socket),
      appCloses: false,
      peerEndedFirst: false,
      readAtIdle: 0,
    };
    this.conns.set(socket, c);
    this.pending++;
    if (socket.destroyed) {
      this.endedAlone(c, Boolean(socket.errored));
      return c;
    }
    const known = connectionsOf(this.server);
    if (!known?.sockets.has(socket) && !known?.secure.has(socket as tls.TLSSocket)) socket.once('close', onConnectionClose);
    switch (protocol) {
      case 'http/1.1':
        this.http1(c);
        break;
      case 'h2':
        this.h2(c);
        break;
      case 'upgraded':
        this.leftToApplication(c);
        break;
      case 'tls-handshake':
        this.handshake(c);
        break;
      case 'net':
        if (this.told) this.netConnection(c);
        break;
    }
    return c;
  }

  /** HTTP/1.1: the response in flight finishes, then the connection gets its window, then closes. */
  private http1(c: Connection): void {
    // Node ends a `Connection: close` response's socket with destroySoon(): make that graceful.
    c.socket.destroySoon = destroySoon;
    // Idle: the window counts from its last byte in either direction (like a keep-alive timeout),
    // so a connection idle for the whole window already is closed at once.
    if (!this.followResponse(c)) {
      const { perf, loop } = this.now();
      this.idle(c, perf + this.drainWindow - idleFor(c.socket, loop));
    }
  }

  /**
   * The response on the connection now, if any: made the last (`Connection: close`, whose end
   * calls destroySoon) if its headers are still to come, else followed to its end, after which
   * Node starts the next pipelined response, if any, which is followed in turn. A response that
   * had promised keep-alive leaves the connection idle: it gets the same window as an idle one,
   * from the end of the response. Returns whether there was one.
   */
  private followResponse(c: Connection): boolean {
    const res = c.socket._httpMessage;
    if (!res) return false;
    this.follow(c, res);
    if (!res.headersSent) res.shouldKeepAlive = false;
    else {
      res.once('finish', () =>
        setImmediate(() => {
          if (c.phase !== 'open' || c.socket.destroyed) return;
          if (!this.followResponse(c)) this.idle(c, performance.now() + this.drainWindow);
        }),
      );
    }
    return true;
  }

  private follow(c: Connection, res: http.ServerResponse): void {
    const responses = (c.responses ??= new Set());
    if (responses.has(res) || res.writableFinished) return;
    responses.add(res);
    c.lastRequest = (res as http.ServerResponse & { req?: http.IncomingMessage }).req ?? c.lastRequest;
    res.once('finish', () => responses.delete(res));
  }

  /** An HTTP request that began during the shutdown (diagnostics channel `http.server.request.start`). */
  requestArrived(req: http.IncomingMessage, res: http.ServerResponse, socket: net.Socket): void {
    res.shouldKeepAlive = false;
    const c = this.conns.get(socket) ?? this.adopt(socket, 'http/1.1');
    if (!c) return;
    c.requestsDuringShutdown++;
    c.lastRequest = req;
    c.timer?.clear();
    this.follow(c, res);
  }

  /**
   * An idle HTTP/1.1 connection: handed to the successor if there is one (at the end of this
   * turn, with the others), else a window for one last request, then close.
   */
  private idle(c: Connection, until: number): void {
    c.readAtIdle = c.socket.bytesRead;
    c.timer?.clear();
    const lookup = this.successorLookup;
    if (lookup && !this.pastDeadline && (this.lookupDone ? this.successor?.open : true)) {
      if (this.toHandOff.push(c) === 1) void lookup.then(() => setImmediate(() => this.handOff()));
      return;
    }
    this.idleTimers.add(c, Math.min(until, this.deadlineAt));
  }

  /**
   * Hands the idle connections gathered this turn to the successor: each one still idle (no
   * request begun, per Node's own list of active connections; nothing buffered either way) stops
   * being read, and its fd goes to the successor, 253 per message. Adopted (acknowledged), it is
   * reported handed off and its fd here closed; refused, or the channel lost, it is read again and
   * closed as without a successor.
   */
  private handOff(): void {
    const batch = this.toHandOff;
    this.toHandOff = [];
    if (!this.successor?.open || this.pastDeadline) {
      for (const c of batch) this.notHandedOff(c);
      return;
    }
    const busy = busyParsers(this.server);
    const ready: Connection[] = [];
    for (const c of batch) {
      const socket = c.socket;
      if (c.phase !== 'open' || socket.destroyed) continue;
      const handle = (socket as unknown as { _handle?: { readStop?: () => number; reading?: boolean } | null })._handle;
      const idle =
        Boolean(socket.parser) && // still HTTP/1.1 (not taken over by an Upgrade or CONNECT)
        busy?.has(socket.parser) === false &&
        !socket._httpMessage &&
        !(socket as { _paused?: boolean })._paused &&
        socket.readableLength === 0 &&
        socket.writableLength === 0 &&
        !socket.writableEnded &&
        typeof handle?.readStop === 'function' &&
        handleFd(socket) >= 0;
      if (!idle || !this.successor?.open || this.pastDeadline || handle!.readStop!() !== 0) {
        this.notHandedOff(c);
        continue;
      }
      handle!.reading = false; // as Node's own pause: ensureReading() starts it again if it comes back
      c.handingOff = true;
      c.phase = 'closing';
      ready.push(c);
    }
    for (let i = 0; i < ready.length; i += MAX_FDS_PER_MESSAGE) {
      const part = ready.slice(i, i + MAX_FDS_PER_MESSAGE);
      const sent = this.successor?.send(
        part.map((c) => c.socket),
        (adopted) => part.forEach((c, j) => this.handedOff(c, adopted?.[j] === true)),
      );
      if (!sent) for (const c of part) this.handedOff(c, false);
    }
  }

  /** The successor's answer for one connection sent to it. */
  private handedOff(c: Connection, adopted: boolean): void {
    if (!c.handingOff) return;
    c.handingOff = false;
    const socket = c.socket;
    if (adopted) {
      c.handedOff = true;
      this.closed(c, closedWithout('graceful', 'handed-off', performance.now() - this.started, true));
      // Closes this process's fd only: the kernel's socket stays open in the successor.
      socket.destroy();
      return;
    }
    c.phase = 'open';
    ensureReading(socket); // a read that cannot start again destroys the socket with its error
    this.notHandedOff(c);
  }

  /** An idle connection kept here: its window, as without a successor (or reset at once past the deadline). */
  private notHandedOff(c: Connection): void {
    if (c.phase !== 'open' || c.socket.destroyed) return;
    if (this.pastDeadline) return this.closeOne(c);
    this.idleTimers.add(c, Math.min(performance.now() + this.drainWindow - idleFor(c.socket, this.now().loop), this.deadlineAt));
  }

  private idleOver(c: Connection, retry: number): void {
    const readAtStart = c.readAtIdle;
    const socket = c.socket;
    if (c.phase !== 'open' || socket.destroyed) return;
    if (socket._httpMessage) {
      this.followResponse(c); // a request came: its response says Connection: close
      return;
    }
    if (!socket.parser) {
      c.protocol = 'upgraded'; // taken over during the shutdown (Upgrade, CONNECT)
      this.leftToApplication(c);
      return;
    }
    // A request begun (bytes read, or waiting in the kernel) is let in, not raced by our FIN.
    if (socket.bytesRead !== readAtStart || this.unread(socket) > 0) {
      c.timer = timerAt(performance.now() + Math.min(retry, 50), () => this.idleOver(c, retry * 2));
      return;
    }
    this.closeOne(c, true);
  }

  /**
   * How long an HTTP/2 client's PING answer is awaited: a few of the connection's round-trip times
   * (the kernel's smoothed RTT), at least 50 ms, at most the drain window. A client that does not
   * answer (Node's, once it read the GOAWAY while a request of its own was pending) is not waited
   * for longer than that; its queued streams are refused by the final GOAWAY.
   */
  private pingWait(socket: net.Socket): number {
    const fd = this.kernelView ? handleFd(socket) : -1;
    if (fd < 0) return this.drainWindow;
    try {
      return Math.min(this.drainWindow, Math.max(PING_WAIT_MIN_MS, (PING_WAIT_RTTS * tcpInfo(fd).rtt) / 1000));
    } catch {
      return this.drainWindow;
    }
  }

  /** Whether the peer's FIN came (the kernel's state: Node may not read it while HTTP/2 holds the socket). */
  private peerClosed(socket: net.Socket): boolean {
    if (socket.readableEnded || socket.destroyed) return true;
    const fd = this.kernelView ? handleFd(socket) : -1;
    if (fd < 0) return false;
    try {
      const state = tcpState(fd);
      return state !== 'ESTABLISHED' && state !== 'FIN_WAIT1' && state !== 'FIN_WAIT2';
    } catch {
      return true;
    }
  }

  /** Bytes waiting in the kernel unread (SIOCINQ): a request Node has not read yet. */
  private unread(socket: net.Socket): number {
    const fd = this.kernelView ? handleFd(socket) : -1;
    if (fd < 0) return 0;
    try {
      return native().ioctlInt(fd, constants().SIOCINQ);
    } catch {
      return 0;
    }
  }

  /** An HTTP/2 session: GOAWAY first, its streams complete, then the connection closes. */
  private h2(c: Connection): void {
    const session = this.sessionOf(c.socket);
    if (!session) return this.leftToApplication(c);
    c.h2 = new SessionClose(session, () => this.peerClosed(c.socket));
    // Node ends the connection once the session is done: from there it is an ordinary close.
    c.socket.once('finish', () => this.closeOne(c));
    c.h2.begin(Math.min(this.pingWait(c.socket), Math.max(0, this.deadlineAt - performance.now())));
  }

  /**
   * A connection only the application can close (upgraded, or one whose signal it took): never
   * half-closed under it. Once it ends the connection (or the peer's FIN makes Node end it), the
   * lingering close; at the deadline, reset.
   */
  private leftToApplication(c: Connection): void {
    c.appCloses = true;
    const socket = c.socket;
    socket.once('end', () => {
      if (!socket.writableEnded) c.peerEndedFirst = true;
    });
    if (socket.writableEnded) this.closeOne(c);
    else socket.once('finish', () => this.closeOne(c));
  }

  /**
   * A plain net connection, once the application was told: its own to close if it took its
   * signal; else ours, once it has been quiet for the drain window (with the kernel's view; at once
   * without it).
   */
  private netConnection(c: Connection): void {
    if (c.phase !== 'open' || c.appCloses) return;
    if (asked(c.socket)) this.leftToApplication(c);
    else if (this.kernelView && this.tcp) this.netQuiet(c);
    else this.closeOne(c);
  }

  /**
   * A net connection whose application took no shutdown signal: closeServer() cannot read its
   * protocol, so the FIN waits until no data has gone either way for the drain window (the
   * kernel's `tcpi_last_data_recv` / `tcpi_last_data_sent`, ms ago, and nothing left in Node's
   * write queue), so that a reply the application is preparing goes out first. Whether data had
   * come after the application's last write when the FIN goes is kept: an answer it may still owe.
   */
  private netQuiet(c: Connection): void {
    const socket = c.socket;
    if (c.phase !== 'open') return;
    if (socket.destroyed) return this.endedAlone(c, Boolean(socket.errored));
    let info: ReturnType<typeof tcpInfo> | undefined;
    try {
      const fd = handleFd(socket);
      info = fd >= 0 ? tcpInfo(fd) : undefined;
    } catch {
      info = undefined;
    }
    if (!info) return this.closeOne(c);
    const quiet = socket.writableLength > 0 ? 0 : Math.min(info.lastDataRecv, info.lastDataSent);
    if (quiet < this.drainWindow) {
      c.timer = timerAt(performance.now() + Math.max(1, this.drainWindow - quiet), () => this.netQuiet(c));
      return;
    }
    c.owesAnswer = socket.bytesRead > 0 && (socket.bytesWritten === 0 || info.lastDataRecv < info.lastDataSent);
    this.closeOne(c);
  }

  /** A TLS connection still in its handshake: the window to complete it, then close. */
  private handshake(c: Connection): void {
    c.timer = timerAt(this.windowEndsAt, () => {
      if (!c.retired) this.closeOne(c);
    });
  }

  /** A handshake completed during the shutdown: the TLS socket takes the place of the TCP one. */
  private handshakeDone(socket: tls.TLSSocket): void {
    const raw = (socket as tls.TLSSocket & { _parent?: net.Socket | null })._parent;
    const before = raw ? this.conns.get(raw) : undefined;
    if (before && before.phase !== 'open') return; // closed already: the handshake raced our FIN
    const c = this.adopt(socket, this.protocolOf(socket));
    if (before) {
      before.retired = true;
      before.timer?.clear();
      this.settle();
    }
    // A connection that just completed its handshake gets its own window for its first request.
    if (c?.protocol === 'http/1.1' && !c.socket._httpMessage) this.idle(c, performance.now() + this.drainWindow);
  }

  /**
   * The lingering close of one connection. With the kernel's view it has no timer of its own: the
   * one deadline resets what is still closing. At the deadline or after an abort, no time is left:
   * reset at once, with no FIN first.
   */
  closeOne(c: Connection, idle = false): void {
    if (c.phase !== 'open') return;
    const socket = c.socket;
    if (socket.destroyed) return this.endedAlone(c, Boolean(socket.errored));
    c.phase = 'closing';
    c.timer?.clear();
    this.idleTimers.remove(c);
    if (c.protocol === 'http/1.1') {
      detachHttpParser(socket);
      c.requestCompleteAtFin = c.lastRequest === undefined || c.lastRequest.complete;
    }
    const aborted = this.signal?.aborted === true;
    const noTime = this.pastDeadline || aborted;
    if (!this.kernelView || !this.tcp) {
      const remaining = noTime ? 0 : Math.max(0, this.deadlineAt - performance.now());
      const options = { timeout: remaining, maxDiscard: DEFAULT_MAX_DISCARD, ...(this.stop && !noTime ? { signal: this.stop.signal } : {}) };
      // A Unix domain socket has no TCP state to decide by: what Node alone can do, as without the kernel's view.
      const closing = this.tcp ? gracefulClose(socket, options) : Promise.resolve().then(() => closeWithoutKernel(socket, options, NO_TCP).done);
      void closing
        .catch((error: Error) => closedWithout('reset-sent', 'closed-elsewhere', 0, false, error))
        .then((result) => {
          // Reset at once because of the abort: say so, as gracefulClose() does for its own signal.
          if (aborted && result.reason === 'deadline') result.reason = 'aborted';
          this.closed(c, result);
        });
      return;
    }
    try {
      // Idle (no request, nothing queued or unread, read just now): closed with the other idle ones.
      if (idle && !noTime && this.http && !(socket instanceof tls.TLSSocket) && socket.writableLength === 0 && !socket.writableEnded) {
        const fd = handleFd(socket);
        c.idleClose = fd >= 0 ? closeIdleForServer(socket, fd, c.tuple, (result) => this.closed(c, result)) : undefined;
        if (c.idleClose) {
          c.close = c.idleClose;
          return;
        }
      }
      c.close = closeForServer(socket, (result) => this.closed(c, result), c.tuple);
    } catch (error) {
      return this.closed(c, closedWithout('reset-sent', 'closed-elsewhere', 0, true, error as Error));
    }
    if (noTime) c.close.resetNow(aborted ? 'aborted' : 'deadline');
  }

  /** A connection that ended without our close (the peer closed it, or the application or Node did). */
  endedAlone(c: Connection, hadError: boolean): void {
    if (c.phase === 'closing') return c.idleClose?.nodeClosed();
    if (c.phase !== 'open' || c.retired) return;
    c.timer?.clear();
    this.idleTimers.remove(c);
    const socket = c.socket;
    const error = (socket.errored ?? undefined) as NodeJS.ErrnoException | undefined;
    const total = performance.now() - this.started;
    let result: CloseReport;
    if (hadError && (!error || error.code === 'ECONNRESET' || error.code === 'EPIPE')) {
      result = closedWithout('reset-received', 'peer-reset', total, this.kernelView, error);
    } else if (socket.readableEnded && !error) {
      result = closedWithout('graceful', 'peer-fin', total, this.kernelView);
    } else {
      // Closed by someone else before the peer's FIN: what the kernel shows says whether an RST went.
      const orphan = c.tuple ? lookUp(c.tuple) : null;
      const noRst = orphan !== null && orphan !== undefined && ['FIN_WAIT1', 'FIN_WAIT2', 'CLOSING', 'LAST_ACK', 'TIME_WAIT'].includes(orphan.state);
      result = closedWithout(noRst || !this.kernelView ? 'graceful' : 'reset-sent', 'closed-elsewhere', total, this.kernelView, error);
      if (orphan) result.states = [{ state: orphan.state, at: total }];
      else if (orphan === undefined) result.states = [{ state: 'CLOSED', at: total }];
      if (!this.kernelView) result.outcome = 'destroyed';
    }
    this.closed(c, result);
  }

  /** One connection's close is over: its report, and run() wakes once the last one is. */
  private closed(c: Connection, result: CloseReport): void {
    if (c.phase === 'done') return;
    c.phase = 'done';
    c.result = this.connectionReport(c, result);
    this.settle();
  }

  private settle(): void {
    if (--this.pending === 0) this.allSettled?.();
  }

  // 5. The deadline -----------------------------------------------------------------------------

  /** At the deadline (or on abort), everything still open is reset, with no FIN first. */
  private atDeadline(): void {
    this.pastDeadline = true;
    const reason = this.signal?.aborted ? 'aborted' : 'deadline';
    for (const c of this.conns.values()) {
      if (c.retired || c.phase === 'done') continue;
      c.h2?.atDeadline();
      if (c.phase === 'open') this.closeOne(c);
      else c.close?.resetNow(reason);
    }
    // Sent and never acknowledged: kept, and reset with the rest.
    this.successor?.close();
  }

  // 6. Report -----------------------------------------------------------------------------------

  /** The transport's report, with the application's part. */
  private connectionReport(c: Connection, result: CloseReport): ConnectionReport {
    let requestsUnanswered = 0;
    if (c.h2) requestsUnanswered = c.h2.unanswered;
    else if (c.protocol === 'net' && !c.appCloses) requestsUnanswered = c.owesAnswer || result.bytesDiscarded > 0 ? 1 : 0;
    else for (const res of c.responses ?? []) if (!res.writableFinished) requestsUnanswered++;
    const requestAfterFin = c.protocol === 'http/1.1' && result.bytesDiscarded > 0 && c.requestCompleteAtFin;
    const writeRefused = (result.error as NodeJS.ErrnoException | undefined)?.code === 'ERR_STREAM_WRITE_AFTER_END';
    const closedByApplication = c.appCloses ? !c.peerEndedFirst && result.outcome !== 'reset-sent' : undefined;
    const applicationDone = requestsUnanswered === 0 && !requestAfterFin && !writeRefused && closedByApplication !== false;
    const report: ConnectionReport = {
      outcome: c.handedOff ? 'handed-off' : result.outcome === 'graceful' && !applicationDone ? 'interrupted' : result.outcome,
      reason: result.reason,
      bytesDiscarded: result.bytesDiscarded,
      unackedAtClose: result.unackedAtClose,
      unsentInNode: result.unsentInNode,
      durations: result.durations,
      states: result.states,
      kernelView: result.kernelView,
      peer: c.peer,
      requestsDuringShutdown: c.h2 ? c.h2.requestsDuringShutdown : c.requestsDuringShutdown,
      protocol: c.protocol,
      requestsUnanswered,
      requestAfterFin,
      streaming: c.streaming,
      told: asked(c.socket) || asked(this.server) || (c.h2 !== undefined && asked(c.h2.session)),
      applicationDone,
    };
    if (result.error) report.error = result.error;
    if (result.kernelError) report.kernelError = result.kernelError;
    if (closedByApplication !== undefined) report.closedByApplication = closedByApplication;
    if (c.h2) report.streams = { ...c.h2.streams };
    return report;
  }

  private report(connections: ConnectionReport[], untracked: number): ServerCloseReport {
    const totals = { graceful: 0, interrupted: 0, handedOff: 0, resetSent: 0, resetReceived: 0, destroyed: 0, total: connections.length };
    for (const c of connections) {
      if (c.outcome === 'graceful') totals.graceful++;
      else if (c.outcome === 'handed-off') totals.handedOff++;
      else if (c.outcome === 'interrupted') totals.interrupted++;
      else if (c.outcome === 'reset-sent') totals.resetSent++;
      else if (c.outcome === 'reset-received') totals.resetReceived++;
      else totals.destroyed++;
    }
    return {
      totals,
      duration: performance.now() - this.started,
      acceptedFromQueue: this.acceptedFromQueue,
      acceptQueue: this.acceptQueue,
      queuedAtClose: this.queuedAtClose,
      handshakesAtClose: this.handshakesAtClose,
      untracked,
      kernelView: this.kernelView,
      connections,
    };
  }
}

let kTimeout: symbol | undefined;
/** A fresh timer's start: the loop's time, on the clock of every Timeout's `_idleStart`. */
function loopNow(): number {
  const probe = setTimeout(() => {}, 0);
  clearTimeout(probe);
  return (probe as unknown as { _idleStart: number })._idleStart;
}

/**
 * ms since the last byte either way on the socket, read from the timer Node keeps on it
 * (`socket.setTimeout()`, refreshed on every read and write; Node's HTTP server arms its
 * keep-alive timeout with it when a response ends). 0 when there is none (then the full window).
 */
function idleFor(socket: net.Socket, now: number): number {
  kTimeout ??= Object.getOwnPropertySymbols(socket).find((s) => s.description === 'timeout');
  const timer = kTimeout ? (socket as unknown as Record<symbol, { _idleStart?: unknown; _idleTimeout?: unknown } | null>)[kTimeout] : undefined;
  if (!timer || typeof timer._idleStart !== 'number' || typeof timer._idleTimeout !== 'number' || timer._idleTimeout < 0) return 0;
  return Math.max(0, now - timer._idleStart);
}

/** Timers of idle connections grouped by due time (within 5 ms): 10,000 connections idle since the call share one. */
class IdleTimers {
  private readonly groups = new Map<number, { timer: TimerAt; members: Set<Connection> }>();
  private readonly due = new Map<Connection, number>();

  constructor(private readonly fire: (c: Connection) => void) {}

  /** Fires `members` a chunk per turn of the loop, so that I/O (the peers' answers) runs in between. */
  private fireAll(members: Iterable<Connection>): void {
    const list = [...members];
    const next = (from: number): void => {
      const to = Math.min(list.length, from + IDLE_CHUNK);
      for (let i = from; i < to; i++) {
        if (this.due.has(list[i]!)) continue; // added again meanwhile
        this.fire(list[i]!);
      }
      if (to < list.length) setImmediate(next, to);
    };
    next(0);
  }

  add(c: Connection, at: number): void {
    this.remove(c);
    const key = Math.ceil(at / IDLE_GROUP_MS) * IDLE_GROUP_MS;
    let group = this.groups.get(key);
    if (!group) {
      const members = new Set<Connection>();
      // Never early (timerAt()): a connection is closed once it has been idle the whole window.
      const timer = timerAt(key, () => {
        this.groups.delete(key);
        for (const member of members) this.due.delete(member);
        this.fireAll(members);
      });
      group = { timer, members };
      this.groups.set(key, group);
    }
    group.members.add(c);
    this.due.set(c, key);
  }

  remove(c: Connection): void {
    const key = this.due.get(c);
    if (key === undefined) return;
    this.due.delete(c);
    const group = this.groups.get(key);
    group?.members.delete(c);
    if (group && group.members.size === 0) {
      group.timer.clear();
      this.groups.delete(key);
    }
  }

  clear(): void {
    for (const group of this.groups.values()) group.timer.clear();
    this.groups.clear();
    this.due.clear();
  }
}

/**
 * Takes the socket from Node's HTTP parser before the lingering close: bytes that arrive after our
 * FIN (a request racing with it) must be read and discarded, never parsed and handed to the app
 * (RFC 9112 §9.6). Node's server reads through listeners named `socketOnData` and `socketOnEnd`
 * (Node 18–26), and its parser reads the handle directly until a 'data' listener is added: the
 * close that follows adds one (its socket listener wrapper then unconsumes the handle).
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

/**
 * The inodes of the sockets this process holds an fd of (`/proc/self/fd`, links `socket:[inode]`),
 * read without blocking the event loop; fds that close meanwhile are left out.
 */
async function socketInodes(): Promise<Set<number>> {
  const dir = '/proc/self/fd';
  const held = new Set<number>();
  const names = await fs.promises.readdir(dir).catch(() => [] as string[]);
  await Promise.all(
    names.map(async (name) => {
      const link = await fs.promises.readlink(`${dir}/${name}`).catch(() => '');
      const inode = /^socket:\[(\d+)\]$/.exec(link)?.[1];
      if (inode !== undefined) held.add(Number(inode));
    }),
  );
  return held;
}

/** The connection in sock_diag after its fd closed, `undefined` once gone, `null` if the lookup failed. */
function lookUp(tuple: SocketTuple): ReturnType<typeof findSocket> | null {
  try {
    return findSocket(tuple);
  } catch {
    return null;
  }
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
