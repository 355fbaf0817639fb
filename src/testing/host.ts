/**
 * One host of the lab: a network namespace seen from this process. Its sockets are ordinary
 * Node sockets whose fds were made inside the namespace (a socket keeps the namespace it was
 * created in), so the same event loop drives both ends of a connection between two kernels.
 */
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { native } from '../binding';
import { codedError, invalidArgType, outOfRange } from '../errors';
import { findSocketIn, socketsIn, type SocketEntry, type SocketFilter, type SocketTuple } from '../diag';
import { nftIn } from './netns';
import type { Side } from './wire';

/** Options of `host.listen()`. */
export interface LabListenOptions {
  /** Local address to bind (default `'0.0.0.0'`: the wire's address and loopback). */
  host?: string;
  /** listen(2) backlog (default 511, as Node). */
  backlog?: number;
  /** Node's `allowHalfOpen` for accepted sockets (default `false`). */
  allowHalfOpen?: boolean;
  /** Node's `pauseOnConnect`: accepted sockets do not read until `resume()` (default `false`). */
  pauseOnConnect?: boolean;
}

/** Options of `host.connect()`. */
export interface LabConnectOptions {
  /** Address to connect to (default: the other host's address, across the wire). */
  host?: string;
  /** Local port to bind before connecting (default: an ephemeral port). */
  localPort?: number;
  /**
   * Set SO_REUSEADDR before binding and connecting (default `false`, as for any client socket):
   * a bind to `localPort` succeeds over a TIME_WAIT socket of that port only when that socket
   * had SO_REUSEADDR too, and two unconnected sockets may share the port only if both set it.
   * @see socket(7) SO_REUSEADDR
   */
  reuseAddress?: boolean;
  /** Node's `allowHalfOpen` (default `false`). */
  allowHalfOpen?: boolean;
  /**
   * Do not read until `resume()`: data and the peer's FIN stay in the kernel's receive queue,
   * and Node neither reads EOF nor closes the fd on its own (default `false`).
   */
  pauseOnConnect?: boolean;
}

/**
 * A TCP socket in a host's namespace: the same `SocketEntry` as finwait's `sockets()` (4-tuple,
 * state, timer and expiry, queues, inode, uid), read through sock_diag inside the namespace.
 */
export type LabSocket = SocketEntry;

/** Which sockets `host.sockets()` lists: the same filter as finwait's `sockets()`. */
export type LabSocketFilter = SocketFilter;

/** The 16 bytes of an IPv6 address in any RFC 4291 text form without an embedded IPv4 part. */
function ipv6Bytes(address: string): Uint8Array {
  const [head, tail] = address.includes('::') ? address.split('::') : [address, undefined];
  const groups = (s: string | undefined): number[] => (s ? s.split(':').map((g) => parseInt(g, 16)) : []);
  const first = groups(head);
  const last = groups(tail);
  const all = tail === undefined ? first : [...first, ...new Array<number>(8 - first.length - last.length).fill(0), ...last];
  const bytes = new Uint8Array(16);
  all.forEach((g, i) => {
    bytes[2 * i] = g >> 8;
    bytes[2 * i + 1] = g & 0xff;
  });
  return bytes;
}

/** The bytes of a `struct sockaddr_in` / `sockaddr_in6` for bind(2). */
export function sockaddr(address: string, port: number): Uint8Array {
  const { AF_INET, AF_INET6 } = native().constants;
  const le = os.endianness() === 'LE';
  if (net.isIPv4(address)) {
    const bytes = new Uint8Array(16);
    const view = new DataView(bytes.buffer);
    view.setUint16(0, AF_INET, le); // sa_family_t is in host order, the port in network order
    view.setUint16(2, port);
    bytes.set(address.split('.').map(Number), 4);
    return bytes;
  }
  if (net.isIPv6(address) && !address.includes('.') && !address.includes('%')) {
    const bytes = new Uint8Array(28);
    const view = new DataView(bytes.buffer);
    view.setUint16(0, AF_INET6, le);
    view.setUint16(2, port);
    bytes.set(ipv6Bytes(address), 8);
    return bytes;
  }
  throw invalidArgType('host', 'an IPv4 or IPv6 address (no zone, no embedded IPv4)', address);
}

const MAX_INT32 = 2 ** 31 - 1;

function checkPort(port: unknown, name: string, allowZero: boolean): number {
  if (typeof port !== 'number') throw invalidArgType(name, 'of type number', port);
  if (!Number.isInteger(port) || port < (allowZero ? 0 : 1) || port > 65535) {
    throw outOfRange(name, `an integer >= ${allowZero ? 0 : 1} and <= 65535`, port);
  }
  return port;
}

function checkObject<T>(value: T, name: string): T {
  if (value === null || typeof value !== 'object') throw invalidArgType(name, 'of type object', value);
  return value;
}

function checkBoolean(value: unknown, name: string): boolean {
  if (typeof value !== 'boolean') throw invalidArgType(name, 'of type boolean', value);
  return value;
}

/** A host of the lab. Made by `createLab()`; closed with the lab. */
export class Host {
  /** `'a'` or `'b'`. */
  readonly name: Side;
  /** This host's address on the wire (IPv4). */
  readonly address: string;
  /** The network namespace's name, for `ip netns exec NAME ...` and `ss -N NAME` while the lab runs. */
  readonly netns: string;
  /** @internal */
  peer: Host | undefined;
  readonly #nsFd: number;
  #closed = false;
  readonly #sockets = new Set<net.Socket>();
  readonly #servers = new Set<net.Server>();

  /** @internal */
  constructor(name: Side, address: string, netns: string, nsFd: number) {
    this.name = name;
    this.address = address;
    this.netns = netns;
    this.#nsFd = nsFd;
  }

  /**
   * A listening `net.Server` in this host's namespace, bound to `options.host` (default all
   * addresses) and `port` (0: an ephemeral port; see `server.address()`), with SO_REUSEADDR as
   * Node sets it. Its connections are destroyed when the lab closes.
   */
  async listen(port: number, options: LabListenOptions = {}): Promise<net.Server> {
    checkPort(port, 'port', true);
    const { host = '0.0.0.0', backlog = 511, allowHalfOpen = false, pauseOnConnect = false } = checkObject(options, 'options');
    if (typeof backlog !== 'number') throw invalidArgType('options.backlog', 'of type number', backlog);
    if (!Number.isInteger(backlog) || backlog < 0 || backlog > MAX_INT32) throw outOfRange('options.backlog', `an integer >= 0 and <= ${MAX_INT32}`, backlog);
    checkBoolean(allowHalfOpen, 'options.allowHalfOpen');
    checkBoolean(pauseOnConnect, 'options.pauseOnConnect');
    if (typeof host !== 'string' || net.isIP(host) === 0) throw invalidArgType('options.host', 'an IP address', host);
    const address = sockaddr(host, port);
    const { AF_INET, AF_INET6, SOCK_STREAM, SOL_SOCKET, SO_REUSEADDR } = native().constants;
    const fd = native().netnsSocket(this.#ns(), net.isIPv4(host) ? AF_INET : AF_INET6, SOCK_STREAM);
    try {
      native().setIntOption(fd, SOL_SOCKET, SO_REUSEADDR, 1);
      native().bind(fd, address);
    } catch (error) {
      fs.closeSync(fd);
      throw error;
    }
    const server = net.createServer({ allowHalfOpen, pauseOnConnect });
    this.#servers.add(server);
    server.on('connection', (socket: net.Socket) => this.#track(socket));
    server.on('close', () => this.#servers.delete(server));
    // Node takes a bound socket's fd as is: createHandle(fd) opens it as a TCP handle, then listen(2).
    server.listen({ fd, backlog });
    try {
      await this.#until(server, 'listening');
    } catch (error) {
      server.close();
      throw error;
    }
    return server;
  }

  /**
   * A `net.Socket` connected from this host's namespace to `port` on the other host (or
   * `options.host`); rejects with the bind error (`EADDRINUSE`, `syscall` `'bind'`) or the
   * connect error (`ECONNREFUSED`, ...). Destroyed when the lab closes.
   */
  async connect(port: number, options: LabConnectOptions = {}): Promise<net.Socket> {
    checkPort(port, 'port', false);
    const {
      host = this.peer?.address ?? this.address,
      localPort,
      reuseAddress = false,
      allowHalfOpen = false,
      pauseOnConnect = false,
    } = checkObject(options, 'options');
    if (typeof host !== 'string' || net.isIP(host) === 0) throw invalidArgType('options.host', 'an IP address', host);
    if (localPort !== undefined) checkPort(localPort, 'options.localPort', false);
    checkBoolean(reuseAddress, 'options.reuseAddress');
    checkBoolean(allowHalfOpen, 'options.allowHalfOpen');
    checkBoolean(pauseOnConnect, 'options.pauseOnConnect');
    const { AF_INET, AF_INET6, SOCK_STREAM, SOL_SOCKET, SO_REUSEADDR } = native().constants;
    const v4 = net.isIPv4(host);
    const fd = native().netnsSocket(this.#ns(), v4 ? AF_INET : AF_INET6, SOCK_STREAM);
    let socket: net.Socket;
    try {
      if (reuseAddress) native().setIntOption(fd, SOL_SOCKET, SO_REUSEADDR, 1);
      if (localPort !== undefined) native().bind(fd, sockaddr(v4 ? '0.0.0.0' : '::', localPort));
      // `pauseOnCreate` (the option Node's child_process uses for stdio) keeps Node from starting
      // to read the fd it was given; paused, it does not start after the connect either.
      const socketOptions: net.SocketConstructorOpts & { pauseOnCreate?: boolean } = {
        fd,
        allowHalfOpen,
        pauseOnCreate: pauseOnConnect,
      };
      socket = new net.Socket(socketOptions);
    } catch (error) {
      fs.closeSync(fd);
      throw error;
    }
    this.#track(socket);
    socket.connect(port, host);
    try {
      await this.#until(socket, 'connect');
    } catch (error) {
      socket.destroy();
      throw error;
    }
    return socket;
  }

  /**
   * Writes a sysctl of this host's namespace (`'net.ipv4.tcp_fin_timeout'`, written to
   * /proc/sys/net/ipv4/tcp_fin_timeout as opened from inside the namespace) and returns the
   * value read back. Only `net.*` names: the others are not per namespace.
   * @see proc(5) /proc/sys/net
   */
  sysctl(name: string, value: string | number): string {
    if (typeof name !== 'string' || !/^net\.[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)+$/.test(name)) {
      throw invalidArgType('name', "a sysctl name under 'net.' such as 'net.ipv4.tcp_fin_timeout'", name);
    }
    if (typeof value !== 'string' && typeof value !== 'number') throw invalidArgType('value', 'a string or a number', value);
    if (typeof value === 'number' && !Number.isFinite(value)) throw outOfRange('value', 'a finite number', value);
    const file = path.join('/proc/sys', ...name.split('.'));
    let writer: number;
    try {
      writer = native().netnsOpen(this.#ns(), file, fs.constants.O_WRONLY);
    } catch (error) {
      // Say which: a sysctl newer than this kernel (tcp_rto_min_us is 6.11+) is the usual cause.
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') (error as Error).message = `open ENOENT: this kernel has no sysctl ${name} (${file})`;
      throw error;
    }
    try {
      fs.writeSync(writer, `${value}\n`);
    } finally {
      fs.closeSync(writer);
    }
    const reader = native().netnsOpen(this.#ns(), file, fs.constants.O_RDONLY);
    try {
      const buffer = Buffer.alloc(4096);
      return buffer.toString('utf8', 0, fs.readSync(reader, buffer)).trim();
    } finally {
      fs.closeSync(reader);
    }
  }

  /**
   * Applies nftables rules in this host's namespace, atomically (one `nft -f -`: every rule or
   * none). Rejects with nft's message on a syntax error; `ERR_FINWAIT_LAB_UNAVAILABLE` without nft.
   * @see nft(8)
   */
  async nft(rules: string): Promise<void> {
    if (typeof rules !== 'string') throw invalidArgType('rules', 'of type string', rules);
    this.#ns(); // ERR_FINWAIT_LAB_CLOSED once the lab is closed, like every other method
    await nftIn(this.netns, rules);
  }

  /**
   * The TCP sockets of this host's namespace, every state including TIME_WAIT and orphans, like
   * finwait's `sockets(filter)` (same entries, same filter, same errors) but read through a
   * sock_diag socket made inside this namespace. Synchronous: one netlink request per family.
   * @see sock_diag(7)
   */
  sockets(filter: LabSocketFilter = {}): LabSocket[] {
    return socketsIn(this.#ns(), filter);
  }

  /**
   * The one connection of this host's namespace with that 4-tuple, in any state (TIME_WAIT and
   * orphans included), or `undefined`, like finwait's `findSocket(tuple)` (same tuple, same
   * errors): one exact lookup through a sock_diag socket made inside this namespace, ~30 µs,
   * where `sockets()` walks the kernel's whole connection table (~2.5 ms here, even nearly empty).
   * @see sock_diag(7)
   */
  findSocket(tuple: SocketTuple): LabSocket | undefined {
    return findSocketIn(this.#ns(), tuple);
  }

  /** @internal Destroys every socket and closes every server this host made; the host is closed from now on. */
  closeAll(): void {
    this.#closed = true;
    for (const socket of this.#sockets) socket.destroy();
    for (const server of this.#servers) server.close();
    this.#sockets.clear();
    this.#servers.clear();
  }

  /**
   * The namespace's fd, while the lab runs. After `lab.close()` it is closed and its number may
   * already name another file (another lab's namespace): never use it then.
   */
  #ns(): number {
    if (this.#closed) throw codedError('ERR_FINWAIT_LAB_CLOSED', `The lab is closed: host ${this.name} can no longer be used`);
    return this.#nsFd;
  }

  /**
   * Resolves on `event`; rejects with the `'error'`, or with `ERR_FINWAIT_LAB_CLOSED` if the lab
   * closed it first (`lab.close()` destroys sockets and closes servers without an error, and a
   * server closed before it listens never says 'listening').
   */
  #until(emitter: net.Socket | net.Server, event: 'connect' | 'listening'): Promise<void> {
    return new Promise((resolve, reject) => {
      const settle = (): void => {
        emitter.off(event, onEvent).off('error', onError).off('close', onClose);
      };
      const onEvent = (): void => {
        settle();
        resolve();
      };
      const onError = (error: Error): void => {
        settle();
        reject(error);
      };
      const onClose = (): void => {
        settle();
        reject(codedError('ERR_FINWAIT_LAB_CLOSED', `The lab closed before host ${this.name} was done (${event === 'connect' ? 'connecting' : 'listening'})`));
      };
      emitter.once(event, onEvent).once('error', onError).once('close', onClose);
    });
  }

  #track(socket: net.Socket): void {
    this.#sockets.add(socket);
    socket.once('close', () => this.#sockets.delete(socket));
  }
}
