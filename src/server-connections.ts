/**
 * Finding every connection of a server without the application's help. Node publishes each
 * accepted socket on the diagnostics channel `net.server.socket`, and each server that starts
 * listening on `tracing:net.server.listen:asyncStart`; from the moment finwait is loaded it keeps,
 * per server, the sockets it accepted (until they close), the TLS sockets whose handshake completed
 * (a raw socket without one is still in its handshake), and the HTTP/2 sessions. Nothing is added
 * to a server but a `'secureConnection'` listener (TLS servers) and a `'session'` listener (HTTP/2
 * servers), attached when it starts listening.
 *
 * What stays unknown: connections accepted before finwait was loaded (an http(s) server's are still
 * found in Node's own list; the others are counted as untracked by `closeServer()`), and, on Node
 * 20 and 22, an HTTP/2 session accepted before finwait first saw its server.
 */
import dc from 'node:diagnostics_channel';
import net from 'node:net';
import type http2 from 'node:http2';
import tls from 'node:tls';
import { invalidArgType } from './errors';
import { missingInternal } from './node-internals';

/** What finwait knows of one server's connections. */
export interface ServerConnections {
  /** Every socket the server accepted and that is not closed: the raw TCP socket for TLS servers. */
  readonly sockets: Set<net.Socket>;
  /** TLS sockets whose handshake completed and that are not closed (`tlsSocket._parent` is the raw socket). */
  readonly secure: Set<tls.TLSSocket>;
  /** HTTP/2 sessions not closed yet. */
  readonly sessions: Set<http2.ServerHttp2Session>;
}

const registry = new WeakMap<net.Server, ServerConnections>();

/** An HTTP/2 server (`http2.createServer()`, `createSecureServer()`): Node exports neither class. */
export function isHttp2Server(server: net.Server): boolean {
  return typeof (server as { updateSettings?: unknown }).updateSettings === 'function';
}

/** Told when a socket or TLS socket finwait follows closes (before the server's own 'close' listeners). */
let closedHook: ((socket: net.Socket, hadError: boolean) => void) | undefined;

/** @internal Sets the one function told when a followed socket closes (closeServer() needs no listener of its own then). */
export function onFollowedClose(hook: (socket: net.Socket, hadError: boolean) => void): void {
  closedHook = hook;
}

function forgetSocket(this: net.Socket, hadError: boolean): void {
  const server = (this as net.Socket & { server?: net.Server }).server;
  if (server) registry.get(server)?.sockets.delete(this);
  closedHook?.(this, hadError);
}

function forgetSecure(this: tls.TLSSocket, hadError: boolean): void {
  const server = (this as tls.TLSSocket & { server?: net.Server }).server;
  if (server) registry.get(server)?.secure.delete(this);
  closedHook?.(this, hadError);
}

/** The connections of `server`, watched from now on (idempotent). */
export function watchServer(server: net.Server): ServerConnections {
  let known = registry.get(server);
  if (known) return known;
  known = { sockets: new Set(), secure: new Set(), sessions: new Set() };
  registry.set(server, known);
  const { secure, sessions } = known;
  if (server instanceof tls.Server) {
    server.on('secureConnection', (socket: tls.TLSSocket) => {
      secure.add(socket);
      socket.on('close', forgetSecure);
    });
  }
  if (isHttp2Server(server)) {
    server.on('session', (session: http2.ServerHttp2Session) => {
      sessions.add(session);
      session.once('close', () => sessions.delete(session));
    });
  }
  // Node >= 24 keeps its own set of sessions: those accepted before this point are found there.
  for (const session of nodeSessions(server)) {
    if (!session.closed && !session.destroyed) {
      sessions.add(session);
      session.once('close', () => sessions.delete(session));
    }
  }
  return known;
}

/** Node's own set of an HTTP/2 server's sessions (Node >= 24), or nothing. */
function nodeSessions(server: net.Server): Iterable<http2.ServerHttp2Session> {
  const symbol = Object.getOwnPropertySymbols(server).find((s) => s.description === 'sessions');
  const set = symbol ? (server as unknown as Record<symbol, { values?: unknown }>)[symbol] : undefined;
  // Node's SafeSet: a Set by behaviour, not by instanceof.
  return typeof set?.values === 'function' ? [...(set as Set<http2.ServerHttp2Session>).values()] : [];
}

/** The connections finwait knows of `server`, or `undefined` if it never saw one. */
export function connectionsOf(server: net.Server): ServerConnections | undefined {
  return registry.get(server);
}

dc.subscribe('tracing:net.server.listen:asyncStart', (message) => {
  const server = (message as { server?: unknown }).server;
  if (server instanceof net.Server) watchServer(server);
});

dc.subscribe('net.server.socket', (message) => {
  const socket = (message as { socket?: unknown }).socket;
  if (!(socket instanceof net.Socket)) return;
  const server = (socket as net.Socket & { server?: unknown }).server;
  if (!(server instanceof net.Server)) return;
  watchServer(server).sockets.add(socket);
  socket.on('close', forgetSocket);
});

/**
 * Makes sure finwait watches a server's connections. Every connection a server accepts after
 * finwait was loaded is found without it; call it right after creating a server that started
 * listening before finwait was loaded (its later connections, TLS handshakes and HTTP/2 sessions
 * are then seen too). Harmless otherwise.
 */
export function trackConnections(server: net.Server): void {
  if (!(server instanceof net.Server)) throw invalidArgType('server', 'an instance of net.Server', server);
  watchServer(server);
}

/**
 * Sockets of an http(s) server, from Node's own connection list (Node >= 18.14; made when the
 * server starts listening).
 */
export function httpSockets(server: net.Server): net.Socket[] {
  const { symbol, list } = connectionList(server);
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
 * The parsers of an http(s) server's connections with a request begun (Node's own list of active
 * connections, the complement of the idle ones `closeIdleConnections()` closes: a request whose
 * first bytes came is in it), or undefined where this Node has no such list. Node keeps the active
 * ones apart: reading them costs what is in flight, not what is open.
 */
export function busyParsers(server: net.Server): Set<unknown> | undefined {
  const { list } = connectionList(server);
  if (typeof list?.active !== 'function') return undefined;
  return new Set(list.active());
}

/** Node's connection list of an http(s) server (`http.server.connections`), and its symbol. */
function connectionList(server: net.Server): {
  symbol: symbol | undefined;
  list: { all?: () => { socket?: net.Socket }[]; active?: () => unknown[] } | undefined;
} {
  kConnections ??= Object.getOwnPropertySymbols(server).find((s) => s.description === 'http.server.connections');
  const symbol = kConnections !== undefined && kConnections in server ? kConnections : undefined;
  const list = symbol ? (server as unknown as Record<symbol, ReturnType<typeof connectionList>['list']>)[symbol] : undefined;
  return { symbol, list };
}
let kConnections: symbol | undefined;

/** The open streams of an HTTP/2 session, from Node's own map (every Node 20–26 has it). */
export function openStreams(session: http2.ServerHttp2Session): http2.ServerHttp2Stream[] {
  const symbol = Object.getOwnPropertySymbols(session).find((s) => s.description === 'state');
  const state = symbol ? (session as unknown as Record<symbol, { streams?: { values?: unknown } }>)[symbol] : undefined;
  // Node's SafeMap: a Map by behaviour, not by instanceof.
  if (typeof state?.streams?.values !== 'function') {
    missingInternal(
      "Http2Session's stream map (the state symbol's streams)",
      'closeServer() counts only the streams that begin after the shutdown began; streams in flight still complete',
    );
    return [];
  }
  return [...(state.streams as Map<number, http2.ServerHttp2Stream>).values()];
}
