/**
 * A same-port handoff between two processes: the new one listens on the port with SO_REUSEPORT
 * before the old one stops, so that a connection made at any moment of the restart finds a
 * listener. Then the old one's `closeServer()` stops accepting; what still waits in its accept
 * queue is moved by the kernel to the new listener where `net.ipv4.tcp_migrate_req` is 1 (Linux
 * 5.14+, per network namespace), and is drained into the old process before the close otherwise.
 * @see socket(7) SO_REUSEPORT, ip-sysctl tcp_migrate_req
 */
import { promises as dns } from 'node:dns';
import fs from 'node:fs';
import type http from 'node:http';
import net from 'node:net';
import { native, nativeUnavailable } from './binding';
import { sockets } from './diag';
import { codedError, invalidArgType, notSupported, outOfRange } from './errors';
import { handleFd } from './fd';
import { canHandOff, offerToAdopt } from './handoff-connections';
import { sockaddr } from './sockaddr';

/** Options of `listenReusePort()`. */
export interface ListenReusePortOptions {
  /** The port to share (0: an ephemeral port). */
  port: number;
  /**
   * The address to listen on, as in `server.listen()` (a name is looked up first); default `'::'`
   * where IPv6 is available, else `'0.0.0.0'`, as Node. Every process sharing the port must use
   * the same address and family: an IPv4 listener and a dual-stack one are separate groups.
   */
  host?: string;
  /** listen(2) backlog; default 511, as Node. */
  backlog?: number;
  /**
   * Adopt the idle keep-alive connections of an older instance on the same address and port:
   * when its `closeServer()` runs, each of its HTTP/1.1 connections that is idle (or becomes idle
   * after the response it was sending) is given to this server instead of closed, so that a
   * request the client sends on it as the shutdown runs is never lost; the connection becomes
   * one of this server's (its `'connection'` event). Only between processes of the same user in
   * the same network namespace (a Unix domain socket in the abstract namespace, checked with
   * SO_PEERCRED), Linux only, and for a plain `http.Server` (TLS and HTTP/2 connections carry
   * state no other process can take over: they are closed as before). Default false.
   */
  adoptConnections?: boolean;
}

/** How `listenReusePort()` made the socket: Node's own `reusePort` option, or finwait's addon. */
export type ReusePortMethod = 'node' | 'addon';

/** What the handoff looked like when a server's listener was about to close. */
export interface HandoffState {
  /**
   * Other listening sockets on the server's address and port in this network namespace, from
   * sock_diag: the rest of its SO_REUSEPORT group, which takes the new connections once this
   * listener is closed. 0: none, so connections made after the close are refused. -1: unknown
   * (no kernel view, or the server was not listening).
   */
  otherListeners: number;
  /**
   * `net.ipv4.tcp_migrate_req` of this network namespace: true when the kernel moves what waits
   * in a closing listener's accept queue (and its handshakes in progress) to another listener of
   * its group; `undefined` on kernels without the setting (before Linux 5.14) and off Linux.
   */
  migrateReq: boolean | undefined;
}

/** The kernel's count of migrations (TcpExt of /proc/net/netstat, this network namespace). */
export interface MigrationCounters {
  /** `TCPMigrateReqSuccess`: connections or handshakes moved to another listener of their group. */
  migrated: number;
  /** `TCPMigrateReqFailure`: those the kernel tried to move and could not (each reset). */
  failed: number;
}

const DEFAULT_BACKLOG = 511;
/** Whether this Node's listen() takes `reusePort` (22.12 and 23.1 on). @internal */
export const NODE_HAS_REUSE_PORT = ((): boolean => {
  const [major = 0, minor = 0] = process.versions.node.split('.').map(Number);
  return major > 23 || (major === 23 && minor >= 1) || (major === 22 && minor >= 12);
})();

/**
 * Listens on `options.port` with SO_REUSEPORT, so that another process (the next version of this
 * one) can listen on the same port while this one still serves, and this one can later do the
 * same for its successor. Uses Node's `reusePort` listen option where Node has it (22.12+),
 * else a socket finwait's addon makes with the option set, handed to `server.listen({ fd })`.
 * Resolves with the server's address once it listens; rejects with the `EADDRINUSE` of bind(2)
 * or listen(2) when a listener on the port lacks SO_REUSEPORT or belongs to another user.
 * Not for `cluster` workers, whose listening sockets the primary process owns.
 * @see socket(7) SO_REUSEPORT
 */
export async function listenReusePort(server: net.Server, options: ListenReusePortOptions): Promise<net.AddressInfo> {
  const { port, host, backlog, adoptConnections } = validate(server, options);
  if (adoptConnections) {
    if (process.platform !== 'linux') throw notSupported('Adopting connections from another process (adoptConnections) off Linux');
    const unavailable = nativeUnavailable();
    if (unavailable) throw unavailable;
    // An addon built from an older checkout (a stale build/) lacks the fd-passing calls.
    if (typeof native().seqpacketSocket !== 'function') throw notSupported('Adopting connections (adoptConnections) with this build of the native part, which predates it: rebuild it (npm run build:addon)');
  }
  const address = await listenThrough(server, NODE_HAS_REUSE_PORT ? 'node' : 'addon', port, host, backlog);
  if (adoptConnections) {
    try {
      offerToAdopt(server as http.Server);
    } catch (error) {
      server.close();
      throw error;
    }
  }
  return address;
}

function validate(server: unknown, options: unknown): { port: number; host: string | undefined; backlog: number; adoptConnections: boolean } {
  if (!(server instanceof net.Server)) throw invalidArgType('server', 'an instance of net.Server', server);
  if (server.listening) throw codedError('ERR_SERVER_ALREADY_LISTEN', 'Listen method has been called more than once without closing.');
  if (options === null || typeof options !== 'object') throw invalidArgType('options', 'of type object', options);
  const { port, host, backlog = DEFAULT_BACKLOG, adoptConnections = false } = options as ListenReusePortOptions;
  if (typeof port !== 'number') throw invalidArgType('options.port', 'of type number', port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw outOfRange('options.port', 'an integer >= 0 and <= 65535', port);
  if (host !== undefined && (typeof host !== 'string' || host === '')) throw invalidArgType('options.host', 'a non-empty string', host);
  if (typeof backlog !== 'number') throw invalidArgType('options.backlog', 'of type number', backlog);
  if (!Number.isInteger(backlog) || backlog < 0 || backlog > 2 ** 31 - 1) throw outOfRange('options.backlog', `an integer >= 0 and <= ${2 ** 31 - 1}`, backlog);
  if (typeof adoptConnections !== 'boolean') throw invalidArgType('options.adoptConnections', 'of type boolean', adoptConnections);
  if (adoptConnections && !canHandOff(server as net.Server)) {
    throw codedError('ERR_INVALID_ARG_VALUE', "The option 'adoptConnections' needs a plain http.Server (not https, http2 or net): other connections cannot move between processes");
  }
  return { port, host, backlog, adoptConnections };
}

/**
 * `listenReusePort()` by the given method (`'node'` needs Node 22.12+); exported for the tests,
 * which prove both on every Node that has them.
 * @internal
 */
export async function listenThrough(server: net.Server, method: ReusePortMethod, port: number, host: string | undefined, backlog: number): Promise<net.AddressInfo> {
  if (method === 'node') {
    if (!NODE_HAS_REUSE_PORT) throw notSupported(`Node's reusePort listen option (Node.js ${process.version} lacks it)`);
    // Not a ListenOptions field in @types/node 20.
    server.listen({ port, host, backlog, reusePort: true } as net.ListenOptions);
  } else {
    if (process.platform !== 'linux') throw notSupported(`A SO_REUSEPORT listening socket before Node.js 22.12 (this is ${process.version})`);
    const unavailable = nativeUnavailable();
    if (unavailable) throw unavailable;
    server.listen({ fd: await boundSocket(host, port), backlog });
  }
  await listening(server);
  return server.address() as net.AddressInfo;
}

/** A socket with SO_REUSEPORT (and SO_REUSEADDR, as Node sets it) bound to host:port; its fd. */
async function boundSocket(host: string | undefined, port: number): Promise<number> {
  const { AF_INET, AF_INET6, SOL_SOCKET, SO_REUSEADDR } = native().constants;
  const candidates = host === undefined ? ['::', '0.0.0.0'] : [net.isIP(host) ? host : (await dns.lookup(host)).address];
  let lastError: unknown;
  for (const address of candidates) {
    let fd: number;
    try {
      fd = native().reusePortSocket(net.isIPv4(address) ? AF_INET : AF_INET6);
    } catch (error) {
      // No IPv6 on this host: Node falls back to IPv4 for the default address too.
      lastError = error;
      if ((error as NodeJS.ErrnoException).code === 'EAFNOSUPPORT' && host === undefined) continue;
      throw error;
    }
    try {
      native().setIntOption(fd, SOL_SOCKET, SO_REUSEADDR, 1);
      native().bind(fd, sockaddr(address, port));
      return fd;
    } catch (error) {
      native().closeFd(fd);
      throw error;
    }
  }
  throw lastError;
}

/** Resolves on 'listening', rejects with the 'error' that comes instead (EADDRINUSE). */
function listening(server: net.Server): Promise<void> {
  return new Promise((resolve, reject) => {
    const onListening = (): void => {
      server.off('error', onError);
      resolve();
    };
    const onError = (error: Error): void => {
      server.off('listening', onListening);
      reject(error);
    };
    server.once('listening', onListening).once('error', onError);
  });
}

/**
 * Whether `net.ipv4.tcp_migrate_req` is on in this process's network namespace: the kernel then
 * moves the connections waiting in a closing listener's accept queue to another listener of its
 * SO_REUSEPORT group, instead of resetting them. `undefined` where the kernel has no such
 * setting (before Linux 5.14) and off Linux.
 * @see ip-sysctl tcp_migrate_req
 */
export function tcpMigrateReq(): boolean | undefined {
  if (process.platform !== 'linux') return undefined;
  try {
    return fs.readFileSync('/proc/sys/net/ipv4/tcp_migrate_req', 'utf8').trim() !== '0';
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
}

/** The server's listener and the others on its address and port (see `HandoffState`). */
export function handoffState(server: net.Server): HandoffState {
  return { otherListeners: otherListeners(server), migrateReq: tcpMigrateReq() };
}

function otherListeners(server: net.Server): number {
  const fd = handleFd(server);
  const address = server.address();
  if (nativeUnavailable() || fd < 0 || !address || typeof address === 'string') return -1;
  const inode = fs.fstatSync(fd).ino;
  return sockets({ states: ['LISTEN'], localPort: address.port }).filter((s) => s.inode !== inode && s.local.address === address.address).length;
}

/**
 * `TCPMigrateReqSuccess` and `TCPMigrateReqFailure` of this network namespace (or from the text of
 * another namespace's /proc/net/netstat); zeros where the kernel has no such counters (before
 * Linux 5.14, or no /proc/net/netstat off Linux). Throws when the file cannot be read (EMFILE).
 */
export function migrationCounters(netstat?: string): MigrationCounters {
  let text = netstat;
  if (text === undefined) {
    try {
      text = fs.readFileSync('/proc/net/netstat', 'utf8');
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return { migrated: 0, failed: 0 };
      throw error;
    }
  }
  // Two lines per group: the names, then the values.
  const lines = text.split('\n').filter((l) => l.startsWith('TcpExt:'));
  const names = lines[0]?.split(/\s+/) ?? [];
  const values = lines[1]?.split(/\s+/) ?? [];
  const value = (name: string): number => {
    const i = names.indexOf(name);
    return i > 0 ? Number(values[i]) : 0;
  };
  return { migrated: value('TCPMigrateReqSuccess'), failed: value('TCPMigrateReqFailure') };
}
