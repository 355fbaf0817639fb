/**
 * One host of the lab: a network namespace seen from this process. Its sockets are ordinary
 * Node sockets whose fds were made inside the namespace (a socket keeps the namespace it was
 * created in), so the same event loop drives both ends of a connection between two kernels.
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { native } from '../binding';
import { abortError, codedError, invalidArgType, outOfRange, socketClosed } from '../errors';
import { findSocketIn, namedTuple, socketsIn, socketTuple, type SocketEntry, type SocketFilter, type SocketTuple } from '../diag';
import { handleFd } from '../fd';
import { isTcpState, type TcpState } from '../states';
import { sockaddr } from '../sockaddr';
import { nftIn } from './netns';
import { waitUntil, type WaitOptions } from './waiters';
import type { Side } from './wire';

/** Buffer sizes set on a lab socket before it listens or connects. */
export interface LabBufferOptions {
  /**
   * SO_RCVBUF, bytes, set before listen(2) or connect(2), so the window scale and the first
   * window advertised follow it (accepted sockets inherit the listener's); the kernel doubles the
   * value for its bookkeeping and reads back twice it (default: the namespace's `tcp_rmem`).
   * @see socket(7) SO_RCVBUF
   */
  recvBufferSize?: number;
  /**
   * SO_SNDBUF, bytes, set before listen(2) or connect(2); doubled by the kernel like
   * `recvBufferSize` (default: the namespace's `tcp_wmem`).
   * @see socket(7) SO_SNDBUF
   */
  sendBufferSize?: number;
}

/** Options of `host.listen()`. */
export interface LabListenOptions extends LabBufferOptions {
  /** Local address to bind (default `'0.0.0.0'`: the wire's address and loopback). */
  host?: string;
  /** listen(2) backlog (default 511, as Node). */
  backlog?: number;
  /** Node's `allowHalfOpen` for accepted sockets (default `false`). */
  allowHalfOpen?: boolean;
  /** Node's `pauseOnConnect`: accepted sockets do not read until `resume()` (default `false`). */
  pauseOnConnect?: boolean;
}

/** Options of `host.connect()` and `host.connectSocket()`. */
export interface LabConnectOptions extends LabBufferOptions {
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
  /**
   * `host.connect()` only: stop waiting for the connection; the socket is destroyed (no segment
   * is sent for it in SYN_SENT) and the promise rejects with an `AbortError`.
   */
  signal?: AbortSignal;
}

/** Options of `host.waitForState()`: the waiters' `timeout` (ms, default 5000) and `signal`. */
export type LabWaitOptions = WaitOptions;

/**
 * A TCP socket in a host's namespace: the same `SocketEntry` as finwait's `sockets()` (4-tuple,
 * state, timer and expiry, queues, inode, uid), read through sock_diag inside the namespace.
 */
export type LabSocket = SocketEntry;

/** Which sockets `host.sockets()` lists: the same filter as finwait's `sockets()`. */
export type LabSocketFilter = SocketFilter;


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

function checkBufferSize(value: unknown, name: string): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number') throw invalidArgType(name, 'of type number', value);
  // The kernel doubles the value in an int: more than half of INT_MAX would overflow.
  const max = Math.floor(MAX_INT32 / 2);
  if (!Number.isInteger(value) || value < 1 || value > max) throw outOfRange(name, `an integer >= 1 and <= ${max}`, value);
  return value;
}

/** Sets SO_RCVBUF / SO_SNDBUF on a fresh fd, before bind, listen or connect. */
function setBufferSizes(fd: number, receive: number | undefined, send: number | undefined): void {
  const { SOL_SOCKET, SO_RCVBUF, SO_SNDBUF } = native().constants;
  if (receive !== undefined) native().setIntOption(fd, SOL_SOCKET, SO_RCVBUF, receive);
  if (send !== undefined) native().setIntOption(fd, SOL_SOCKET, SO_SNDBUF, send);
}

/**
 * The address a socket is bound to now, read from its handle (getsockname(2)), or `undefined`.
 * Not `socket.localPort`: Node caches the first answer, and one read before the connect stays
 * `0.0.0.0:0` for ever.
 */
function boundName(socket: net.Socket): { address: string; port: number } | undefined {
  const handle = (socket as unknown as { _handle?: { getsockname?(out: { address?: string; port?: number }): number } | null })._handle;
  const out: { address?: string; port?: number } = {};
  if (!handle?.getsockname || handle.getsockname(out) !== 0) return undefined;
  return out.address && out.port ? { address: out.address, port: out.port } : undefined;
}

function checkStates(state: unknown): readonly TcpState[] {
  const wanted: readonly unknown[] = Array.isArray(state) ? state : [state];
  if (wanted.length === 0 || !wanted.every(isTcpState)) throw invalidArgType('state', 'a TCP state name or an array of them', state);
  return wanted as readonly TcpState[];
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
  /** Where each socket of `connectSocket()` connects to: its peer before Node can read it. */
  readonly #destinations = new WeakMap<net.Socket, { address: string; port: number }>();
  /** Each connected socket's 4-tuple and cookie, read while its fd was open. */
  readonly #tuples = new WeakMap<net.Socket, SocketTuple>();

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
    const { host = '0.0.0.0', backlog = 511, allowHalfOpen = false, pauseOnConnect = false, recvBufferSize, sendBufferSize } = checkObject(options, 'options');
    checkBufferSize(recvBufferSize, 'options.recvBufferSize');
    checkBufferSize(sendBufferSize, 'options.sendBufferSize');
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
      setBufferSizes(fd, recvBufferSize, sendBufferSize);
      native().bind(fd, address);
    } catch (error) {
      native().closeFd(fd);
      throw error;
    }
    const server = net.createServer({ allowHalfOpen, pauseOnConnect });
    this.#servers.add(server);
    server.on('connection', (socket: net.Socket) => {
      this.#track(socket);
      this.#name(socket);
    });
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
   * connect error (`ECONNREFUSED`, ...), or with an `AbortError` when `options.signal` fires
   * first (the socket is destroyed). Destroyed when the lab closes.
   */
  async connect(port: number, options: LabConnectOptions = {}): Promise<net.Socket> {
    const { signal, ...connectOptions } = checkObject(options, 'options');
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw invalidArgType('options.signal', 'an instance of AbortSignal', signal);
    if (signal?.aborted) throw abortError(signal);
    const socket = this.connectSocket(port, connectOptions);
    const onAbort = (): void => {
      socket.destroy(abortError(signal!));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      await this.#until(socket, 'connect');
    } catch (error) {
      socket.destroy();
      throw error;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
    return socket;
  }

  /**
   * Like `connect()`, but returns the `net.Socket` at once, before it is connected: its fd is open
   * (`fdOf(socket)` works) and `localPort` is bound if asked. Node makes the connect(2) on its next
   * tick (the SYN leaves then; from the first `await` on, the socket is in SYN_SENT or further:
   * `waitForState(socket, 'SYN_SENT')`). Bind errors throw here; the connect's outcome comes as
   * Node's `'connect'` or `'error'` event. Do not read `socket.localPort` / `localAddress` before
   * the connect: Node caches the first answer (`0`, `'0.0.0.0'` then) for the socket's lifetime. `options.signal` is refused: destroy the socket instead. Destroyed when
   * the lab closes.
   */
  connectSocket(port: number, options: LabConnectOptions = {}): net.Socket {
    checkPort(port, 'port', false);
    const {
      host = this.peer?.address ?? this.address,
      localPort,
      reuseAddress = false,
      allowHalfOpen = false,
      pauseOnConnect = false,
      recvBufferSize,
      sendBufferSize,
      signal,
    } = checkObject(options, 'options');
    if (signal !== undefined) throw invalidArgType('options.signal', 'undefined (connectSocket() returns at once: destroy the socket to abort)', signal);
    if (typeof host !== 'string' || net.isIP(host) === 0) throw invalidArgType('options.host', 'an IP address', host);
    if (localPort !== undefined) checkPort(localPort, 'options.localPort', false);
    checkBoolean(reuseAddress, 'options.reuseAddress');
    checkBoolean(allowHalfOpen, 'options.allowHalfOpen');
    checkBoolean(pauseOnConnect, 'options.pauseOnConnect');
    checkBufferSize(recvBufferSize, 'options.recvBufferSize');
    checkBufferSize(sendBufferSize, 'options.sendBufferSize');
    const { AF_INET, AF_INET6, SOCK_STREAM, SOL_SOCKET, SO_REUSEADDR } = native().constants;
    const v4 = net.isIPv4(host);
    const fd = native().netnsSocket(this.#ns(), v4 ? AF_INET : AF_INET6, SOCK_STREAM);
    let socket: net.Socket;
    try {
      if (reuseAddress) native().setIntOption(fd, SOL_SOCKET, SO_REUSEADDR, 1);
      setBufferSizes(fd, recvBufferSize, sendBufferSize);
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
      native().closeFd(fd);
      throw error;
    }
    this.#track(socket);
    this.#destinations.set(socket, { address: host, port });
    // Named once connected (with its cookie), so that findSocket(socket) and waitForState(socket)
    // still find its orphan or TIME_WAIT after Node closed the fd.
    socket.once('connect', () => this.#name(socket));
    socket.connect(port, host);
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
      native().closeFd(writer);
    }
    const reader = native().netnsOpen(this.#ns(), file, fs.constants.O_RDONLY);
    try {
      const buffer = Buffer.alloc(4096);
      return buffer.toString('utf8', 0, fs.readSync(reader, buffer)).trim();
    } finally {
      native().closeFd(reader);
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
  findSocket(tuple: SocketTuple | net.Socket): LabSocket | undefined {
    return findSocketIn(this.#ns(), tuple instanceof net.Socket ? this.#tupleOf(tuple) : tuple);
  }

  /**
   * Resolves with the state of a connection of this host's namespace, read through sock_diag
   * (`findSocket()`, polled like finwait/testing's `waitForState`), once it is `state` or one of
   * `states`: unlike the fd, sock_diag shows TIME_WAIT and orphans, so this works after Node
   * closed the socket. `target` is a socket this host made or accepted (found by its 4-tuple and
   * cookie, as it was when connected) or a 4-tuple. Rejects with `ERR_FINWAIT_TIMEOUT` naming the
   * last state seen (`'gone'` when the namespace had no such connection), or `AbortError`.
   * @see sock_diag(7)
   */
  waitForState(target: SocketTuple | net.Socket, state: TcpState | readonly TcpState[], options: LabWaitOptions = {}): Promise<TcpState> {
    try {
      const tuple = target instanceof net.Socket ? this.#tupleOf(target) : target;
      const wanted = checkStates(state);
      this.findSocket(tuple); // checks the tuple (and the lab) now, not at the first poll
      let last: TcpState | 'gone' | undefined;
      return waitUntil(
        `${wanted.join(' or ')} on host ${this.name}`,
        () => {
          const entry = this.findSocket(tuple);
          last = entry?.state ?? 'gone';
          return entry !== undefined && wanted.includes(entry.state) ? entry.state : undefined;
        },
        options,
        () => last,
      );
    } catch (error) {
      return Promise.reject(error);
    }
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

  /** Reads and keeps a connected socket's 4-tuple with its cookie (nothing if it has none now). */
  #name(socket: net.Socket): SocketTuple | undefined {
    const fd = handleFd(socket);
    const tuple = fd >= 0 ? namedTuple(socket, fd) : undefined;
    if (tuple) this.#tuples.set(socket, tuple);
    return tuple;
  }

  /**
   * The 4-tuple to look a socket up by: read now if it is connected, else the one kept when it
   * connected, else (in SYN_SENT) its local address and the destination of `connectSocket()`.
   */
  #tupleOf(socket: net.Socket): SocketTuple {
    const named = this.#tuples.get(socket) ?? this.#name(socket);
    if (named) return named;
    const destination = this.#destinations.get(socket);
    const local = destination && boundName(socket);
    if (destination && local) return { local, remote: destination };
    const tuple = socketTuple(socket);
    if (tuple) return tuple;
    throw socketClosed(
      socket.destroyed
        ? `it was destroyed before host ${this.name} saw it connected: look it up by its 4-tuple instead`
        : `it has no 4-tuple (it is not a socket of host ${this.name}, or not connected)`,
    );
  }
}
