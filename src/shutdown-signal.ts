/**
 * `shutdownSignal()`: how an application learns that `closeServer()` began, per server, per
 * connection and per request, as an `AbortSignal` (Go's `Server.RegisterOnShutdown`, the Node way).
 * A WebSocket sends its close frame (1001, going away), a Server-Sent Events stream or a long poll
 * ends its response, a protocol on a plain `net.Server` says goodbye and ends its connection.
 */
import net from 'node:net';
import { invalidArgType } from './errors';

/** What `shutdownSignal()` accepts, and what each one means. */
export type ShutdownTarget =
  | net.Server
  | net.Socket
  | { socket: net.Socket | null } // http.IncomingMessage, http.ServerResponse
  | {
      /** An HTTP/2 session's `goaway()`. */
      goaway: (...args: never[]) => void;
      socket: unknown;
    } // an HTTP/2 session
  | {
      session: unknown;
      /** An HTTP/2 stream's `respond()`. */
      respond: (...args: never[]) => void;
    } // an HTTP/2 stream
  | { stream: unknown }; // an HTTP/2 compatibility request or response

/** The key a signal is kept under: a server, a connection's socket, or an HTTP/2 session. */
type Key = object;

const controllers = new WeakMap<Key, AbortController>();
/** Servers whose `closeServer()` is running: a signal asked for now is aborted at once. */
const shuttingDown = new WeakSet<net.Server>();

/** The reason a shutdown signal carries: an `AbortError`, as Node's own aborted operations throw. */
function shutdownReason(): Error {
  const error = Object.assign(new Error('The server is shutting down: closeServer() began'), { code: 'ABORT_ERR' });
  error.name = 'AbortError';
  return error;
}

function invalidTarget(target: unknown): TypeError {
  return invalidArgType(
    'target',
    'an instance of net.Server or net.Socket, an http.IncomingMessage or http.ServerResponse, or an HTTP/2 session, stream, request or response',
    target,
  );
}

function notAccepted(what: string): TypeError & { code: string } {
  return Object.assign(new TypeError(`The argument 'target' must belong to a server: ${what}`), { code: 'ERR_INVALID_ARG_VALUE' });
}

/** The server of an accepted socket (TLS sockets too), if it is one. */
function serverOf(socket: net.Socket): net.Server | undefined {
  const server = (socket as net.Socket & { server?: unknown; _server?: unknown }).server ?? (socket as { _server?: unknown })._server;
  return server instanceof net.Server ? server : undefined;
}

/** An HTTP/2 session's socket (a proxy of it: enough to read `server`). */
function isSession(value: object): value is { socket: net.Socket | undefined; goaway: () => void } {
  return typeof (value as { goaway?: unknown }).goaway === 'function' && 'socket' in value;
}

/** Which signal `target` gets, and the server it belongs to. */
function resolve(target: unknown): { key: Key; server: net.Server } {
  if (target instanceof net.Server) return { key: target, server: target };
  if (target === null || typeof target !== 'object') throw invalidTarget(target);
  if (target instanceof net.Socket) {
    const server = serverOf(target);
    if (!server) throw notAccepted('this socket was not accepted by a net.Server (a client socket?)');
    return { key: target, server };
  }
  // An HTTP/2 compat request/response, a stream, a session: the session is the connection.
  let value: object = target;
  if ('stream' in value && typeof (value as { stream?: unknown }).stream === 'object' && (value as { stream?: unknown }).stream !== null) {
    value = (value as { stream: object }).stream;
  }
  if ('session' in value && typeof (value as { respond?: unknown }).respond === 'function') {
    const session = (value as { session?: unknown }).session;
    if (session === null || typeof session !== 'object') throw notAccepted('this HTTP/2 stream has no session any more (it was closed)');
    value = session;
  }
  if (isSession(value)) {
    let socket: net.Socket | undefined;
    try {
      socket = value.socket;
    } catch {
      // ERR_HTTP2_SOCKET_UNBOUND: the session is closed
    }
    const server = socket ? serverOf(socket) : undefined;
    if (!server) throw notAccepted('this HTTP/2 session has no server-side socket (a client session, or a closed one)');
    return { key: value, server };
  }
  // An http.IncomingMessage or http.ServerResponse: its connection.
  if ('socket' in value) {
    const socket = (value as { socket?: unknown }).socket ?? (value as { req?: { socket?: unknown } }).req?.socket;
    if (socket instanceof net.Socket) return resolve(socket);
    if (socket === null || socket === undefined) throw notAccepted('this request or response has no socket any more (it ended)');
  }
  throw invalidTarget(target);
}

/**
 * An `AbortSignal` that aborts when `closeServer()` begins on the server `target` belongs to:
 * the server itself, one of its connections (`net.Socket`, `tls.TLSSocket`, an upgraded socket
 * such as a WebSocket's), an HTTP/1.1 request or response (its connection's signal), or an HTTP/2
 * session, stream, or compatibility request or response (its session's signal). Asked for while
 * the shutdown runs, it is already aborted. `signal.reason` is an `AbortError` (code `ABORT_ERR`).
 *
 * Asking for a connection's signal (directly, or through one of its requests or streams) also
 * tells `closeServer()` that the application closes that connection itself: a plain `net.Server`
 * connection or an upgraded one is then never half-closed under the application; `closeServer()`
 * waits for the application's `end()` (or the peer's close), lingers as `gracefulClose()` does,
 * and resets it only at the deadline. A connection whose signal nobody asked for is closed by
 * `closeServer()` itself (a plain `net` one at once; an upgraded one is never closed by it: it
 * waits for the application or the peer, then the deadline).
 *
 * Throws `ERR_INVALID_ARG_TYPE` for anything else, `ERR_INVALID_ARG_VALUE` for a socket or
 * session that belongs to no server (a client's) or a request whose connection is gone.
 */
export function shutdownSignal(target: ShutdownTarget): AbortSignal {
  const { key, server } = resolve(target);
  let controller = controllers.get(key);
  if (!controller) {
    controller = new AbortController();
    controllers.set(key, controller);
    if (shuttingDown.has(server)) controller.abort(shutdownReason());
  }
  return controller.signal;
}

/** @internal Whether the application asked for the signal of `key` (a server, socket or session). */
export function asked(key: Key): boolean {
  return controllers.has(key);
}

/**
 * @internal `closeServer()` began on `server`: its signal and those of `connections` (sockets and
 * HTTP/2 sessions) abort now; signals asked for from now on are aborted at once.
 */
export function announceShutdown(server: net.Server, connections: Iterable<Key>): void {
  shuttingDown.add(server);
  const reason = shutdownReason();
  controllers.get(server)?.abort(reason);
  for (const key of connections) controllers.get(key)?.abort(reason);
}

/** @internal `closeServer()` on `server` is over: a later listen() starts with fresh signals. */
export function shutdownOver(server: net.Server): void {
  shuttingDown.delete(server);
  if (controllers.get(server)?.signal.aborted) controllers.delete(server);
}
