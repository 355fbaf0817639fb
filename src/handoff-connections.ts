/**
 * Idle HTTP/1.1 keep-alive connections handed from a server shutting down to the next instance of
 * it on the same port (see `listenReusePort()`), instead of closed.
 *
 * Closing an idle keep-alive connection races the client's next request on it: a request sent as
 * our FIN travels is lost (RFC 9112 §9.6), and a proxy does not retry a POST. Handed over, the
 * connection never closes: the next instance serves its next request, whenever it comes.
 *
 * The next instance offers to adopt connections on a Unix domain socket in the abstract
 * namespace of its network namespace, named after its user id, address, port and pid (and a
 * number, for two servers of one process: the old and the new version of an app that reloads
 * itself in place, or a test); the one
 * shutting down finds it in /proc/net/unix, checks that the peer runs as the same user (the rule
 * SO_REUSEPORT itself applies to a port's group), stops reading each idle connection, and sends
 * its fd (SCM_RIGHTS). The adopter checks every fd (a TCP socket on its own address and port),
 * gives it to its server as a new connection (the `'connection'` event, as Node's own accept), and
 * acknowledges the batch; only then does the sender close its own fd, which ends nothing (the
 * kernel's socket now belongs to the adopter too). Without the acknowledgement (the adopter died,
 * or stopped adopting) the sender still holds every socket it sent, reads from it again and closes
 * it as it would have without a successor.
 * @see unix(7) SCM_RIGHTS, SO_PEERCRED, abstract sockets
 */
import fs from 'node:fs';
import type http from 'node:http';
import net from 'node:net';
import tls from 'node:tls';
import { constants, native, type NativeFdPoll } from './binding';
import { unmapped } from './diag';
import { handleFd } from './fd';
import { isHttp2Server } from './server-connections';
import { abstractSockaddr } from './sockaddr';
import { stateName } from './states';

/** The abstract names' common start; the version changes with the messages' format. */
const PREFIX = 'finwait-handoff/1';
/** SCM_MAX_FD: the most fds one message carries. */
export const MAX_FDS_PER_MESSAGE = 253;
/** Where an acknowledgement's fds go: none are expected, and recvFds closes those beyond the array. */
const NO_FDS = new Int32Array(0);
/** `__SO_ACCEPTCON` in /proc/net/unix's flags: a listening socket. */
const ACCEPTCON = 0x10000;
/** The type of a SOCK_SEQPACKET socket in /proc/net/unix. */
const SEQPACKET = 5;

function euid(): number {
  return typeof process.geteuid === 'function' ? process.geteuid() : -1;
}

/** The abstract name's start for a server's address and port, this user (the pid follows). */
function namePrefix(address: string, port: number): string {
  return `${PREFIX}/${euid()}/${address}/${port}/`;
}

/** Whether connections of `server` can move to another process: a plain http.Server (not https, http2 or net). */
export function canHandOff(server: net.Server): boolean {
  return typeof (server as http.Server).closeIdleConnections === 'function' && !(server instanceof tls.Server) && !isHttp2Server(server);
}

// The adopting side ------------------------------------------------------------------------------

const offers = new WeakMap<net.Server, Adopter>();
/** Numbers the adopters of this process, which may have several servers on one port in turn. */
let adopters = 0;

/**
 * Starts adopting the idle connections another process hands over for `server`'s address and
 * port (the server listens already). Stops with the server's 'close', or when `closeServer()`
 * begins for it (`stopAdopting()`).
 */
export function offerToAdopt(server: http.Server): void {
  if (offers.has(server)) return;
  const address = server.address();
  if (!address || typeof address === 'string') return;
  const adopter = new Adopter(server, address);
  offers.set(server, adopter);
  server.once('close', () => stopAdopting(server));
}

/** Stops adopting for `server`: what already came is adopted first. */
export function stopAdopting(server: net.Server): void {
  const adopter = offers.get(server);
  if (!adopter) return;
  offers.delete(server);
  adopter.close();
}

class Adopter {
  readonly #server: http.Server;
  readonly #port: number;
  readonly #address: string;
  #fd: number;
  #poll: NativeFdPoll | undefined;
  readonly #channels = new Map<number, NativeFdPoll>();
  readonly #payload = new Uint8Array(8);
  readonly #fds = new Int32Array(MAX_FDS_PER_MESSAGE);
  /** Sockets of the message being read, taken and not yet counted by the server. */
  #taking = 0;

  constructor(server: http.Server, address: net.AddressInfo) {
    this.#server = server;
    this.#port = address.port;
    this.#address = address.address;
    const n = native();
    const fd = n.seqpacketSocket!();
    try {
      // Abstract names belong to nobody: a name taken (by another user, who cannot pass the
      // credentials check anyway) is skipped for the next number.
      for (let tries = 1; ; tries++) {
        try {
          n.bind(fd, abstractSockaddr(`${namePrefix(address.address, address.port)}${process.pid}.${++adopters}`));
          break;
        } catch (error) {
          if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE' || tries === 16) throw error;
        }
      }
      n.listen(fd, 64);
      // The poll owns the fd: it closes with it, also when a Worker ends without close().
      this.#poll = new n.FdPoll(fd, () => this.#accept(), true);
    } catch (error) {
      n.closeFd(fd);
      throw error;
    }
    this.#fd = fd;
  }

  #accept(): void {
    const n = native();
    for (;;) {
      let fd: number;
      try {
        fd = n.acceptUnix!(this.#fd);
      } catch {
        return; // ECONNABORTED and the like: the next readiness tries again
      }
      if (fd < 0) return;
      let sameUser = false;
      try {
        sameUser = n.peerCredentials!(fd).uid === euid();
      } catch {
        // no credentials: refused below
      }
      if (!sameUser) {
        n.closeFd(fd);
        continue;
      }
      try {
        this.#channels.set(fd, new n.FdPoll(fd, () => this.#receive(fd), true));
      } catch {
        n.closeFd(fd);
      }
    }
  }

  /** Adopts every message waiting on a channel, acknowledging each; closes it at its end. */
  #receive(fd: number): void {
    const n = native();
    for (;;) {
      let bytes: number;
      try {
        bytes = n.recvFds!(fd, this.#payload, this.#fds);
      } catch {
        this.#closeChannel(fd);
        return;
      }
      if (bytes < 0) return;
      if (bytes === 0) {
        this.#closeChannel(fd);
        return;
      }
      // Each fd is checked and made a socket first, the batch acknowledged (a byte per fd: 1
      // taken, 0 refused and closed here), and only then are the sockets given to the server:
      // if the acknowledgement cannot go, the sender keeps every one (it reads them again), and
      // these copies are closed unread.
      let count = 0;
      while (count < this.#fds.length && this.#fds[count]! >= 0) count++;
      const ack = new Uint8Array(1 + count);
      ack[0] = 1;
      const taken: net.Socket[] = [];
      for (let i = 0; i < count; i++) {
        const socket = this.#take(this.#fds[i]!);
        if (socket) taken.push(socket);
        ack[1 + i] = socket ? 1 : 0;
      }
      this.#taking = 0;
      try {
        n.sendFds!(fd, this.#fds, 0, ack);
      } catch {
        for (const socket of taken) socket.destroy();
        this.#closeChannel(fd);
        return;
      }
      for (const socket of taken) this.#welcome(socket);
    }
  }

  /**
   * A received fd as a socket, if it is a TCP connection to the server's address and port and the
   * server takes connections (listening, under its `maxConnections`); else closed.
   */
  #take(fd: number): net.Socket | undefined {
    const n = native();
    const c = n.constants;
    const server = this.#server as http.Server & { _connections: number };
    let ok = server.listening && !(server.maxConnections > 0 && server._connections + this.#taking >= server.maxConnections);
    try {
      const state = stateName(n.tcpState(fd));
      ok &&=
        n.getIntOption(fd, c.SOL_SOCKET, c.SO_TYPE) === c.SOCK_STREAM &&
        n.getIntOption(fd, c.SOL_SOCKET, c.SO_PROTOCOL) === c.IPPROTO_TCP &&
        (state === 'ESTABLISHED' || state === 'CLOSE_WAIT');
    } catch {
      ok = false; // not a TCP socket
    }
    let socket: net.Socket;
    try {
      if (!ok) throw new Error('not a connection');
      socket = new net.Socket({ fd, readable: true, writable: true });
    } catch {
      n.closeFd(fd);
      return undefined;
    }
    const local = socket.localPort === this.#port && (this.#address === '::' || this.#address === '0.0.0.0' || socket.localAddress !== undefined && unmapped(socket.localAddress) === unmapped(this.#address));
    if (local) {
      this.#taking++;
      return socket;
    }
    socket.destroy();
    return undefined;
  }

  /** Makes a taken socket one of the server's connections, as net.Server's own accept does. */
  #welcome(socket: net.Socket): void {
    const server = this.#server as http.Server & { _connections: number };
    server._connections++; // the server counts it, and its close waits for it
    Object.assign(socket, { server, _server: server });
    server.emit('connection', socket);
  }

  #closeChannel(fd: number): void {
    const poll = this.#channels.get(fd);
    if (!poll) return;
    this.#channels.delete(fd);
    poll.close(); // and the fd
  }

  close(): void {
    if (this.#fd < 0) return;
    this.#poll?.close(); // and the fd
    this.#poll = undefined;
    this.#fd = -1;
    // What was sent before is adopted (and acknowledged), then each channel closes: a sender
    // still waiting for an acknowledgement gets the end of its channel and keeps its connections.
    for (const fd of [...this.#channels.keys()]) {
      this.#receive(fd);
      this.#closeChannel(fd);
    }
  }
}

// The handing side -------------------------------------------------------------------------------

/**
 * One batch sent and not yet acknowledged: told which of its sockets the adopter took (by
 * position), or `undefined` if it never will (the channel closed first).
 */
type BatchDone = (adopted: boolean[] | undefined) => void;

/**
 * A channel to another process offering to adopt the connections of `server`'s address and port,
 * or undefined when none offers (or none is reachable, or runs as another user).
 */
export async function findAdopter(server: net.Server, ackTimeout: number): Promise<Successor | undefined> {
  const n = native();
  const address = server.address();
  if (!address || typeof address === 'string' || !n.seqpacketSocket || !sharesPort(server)) return undefined;
  let table: string;
  try {
    table = await fs.promises.readFile('/proc/net/unix', 'utf8');
  } catch {
    return undefined;
  }
  const prefix = '@' + namePrefix(address.address, address.port);
  const offered: { pid: number; n: number }[] = [];
  for (const line of table.split('\n')) {
    const at = line.indexOf(prefix);
    if (at < 0) continue;
    const fields = line.slice(0, at).trim().split(/\s+/);
    // Num RefCount Protocol Flags Type St Inode Path: the listening SOCK_SEQPACKET ones.
    if ((parseInt(fields[3] ?? '', 16) & ACCEPTCON) === 0 || parseInt(fields[4] ?? '', 16) !== SEQPACKET) continue;
    const match = /^(\d+)\.(\d+)$/.exec(line.slice(at + prefix.length).trim());
    if (match) offered.push({ pid: Number(match[1]), n: Number(match[2]) });
  }
  // The newest first (pids grow, wrapping aside): the most likely to stay.
  offered.sort((a, b) => b.pid - a.pid || b.n - a.n);
  for (const { pid, n: number } of offered) {
    const fd = n.seqpacketSocket();
    try {
      n.connectUnix!(fd, abstractSockaddr(`${prefix.slice(1)}${pid}.${number}`));
      const cred = n.peerCredentials!(fd);
      if (cred.uid === euid() && cred.pid === pid) return new Successor(fd, pid, ackTimeout);
    } catch {
      // gone, or its backlog full: the next one
    }
    n.closeFd(fd);
  }
  return undefined;
}

/**
 * Whether another process can listen on `server`'s port while it does: only if its listening
 * socket has SO_REUSEPORT (the kernel lets a second socket bind the port only if both have it).
 * Where that cannot be read (no fd: a cluster worker's round-robin handle; an older addon), yes.
 */
function sharesPort(server: net.Server): boolean {
  const { SOL_SOCKET, SO_REUSEPORT } = constants();
  const fd = handleFd(server);
  if (SO_REUSEPORT === undefined || fd < 0) return true;
  try {
    return native().getIntOption(fd, SOL_SOCKET, SO_REUSEPORT) !== 0;
  } catch {
    return true;
  }
}

/** The channel to the adopting process. */
export class Successor {
  readonly pid: number;
  #fd: number;
  #poll: NativeFdPoll | undefined;
  readonly #waiting: BatchDone[] = [];
  readonly #ack = new Uint8Array(1 + MAX_FDS_PER_MESSAGE);
  readonly #batch = new Int32Array(MAX_FDS_PER_MESSAGE);
  /** The message's one byte (a message carries at least one). */
  readonly #header = new Uint8Array([1]);
  /** ms the oldest batch may wait for its acknowledgement before the channel is given up. */
  readonly #ackTimeout: number;
  #timer: NodeJS.Timeout | undefined;

  constructor(fd: number, pid: number, ackTimeout: number) {
    this.#fd = fd;
    this.pid = pid;
    this.#ackTimeout = ackTimeout;
    this.#poll = new (native().FdPoll)(fd, () => this.#acknowledged(), true);
  }

  /** Whether the channel is still open. */
  get open(): boolean {
    return this.#fd >= 0;
  }

  /**
   * Sends the fds of `sockets` (at most 253, each one's reading stopped by the caller) as one
   * message; `done` is told which were adopted. Returns false, with nothing sent, when the channel
   * is closed or the send failed (then it closes: `done` of earlier batches is told `undefined`).
   */
  send(sockets: net.Socket[], done: BatchDone): boolean {
    if (this.#fd < 0 || sockets.length === 0 || sockets.length > MAX_FDS_PER_MESSAGE) return false;
    for (let i = 0; i < sockets.length; i++) this.#batch[i] = handleFd(sockets[i]!);
    try {
      native().sendFds!(this.#fd, this.#batch, sockets.length, this.#header);
    } catch {
      this.close();
      return false;
    }
    this.#waiting.push(done);
    this.#timer ??= setTimeout(() => this.#overdue(), this.#ackTimeout).unref();
    return true;
  }

  /**
   * No acknowledgement in time: the adopter is stuck or gone. What came meanwhile is read, then
   * the channel closes and the rest is kept here. An adopter that wakes up later finds the
   * channel closed before it acknowledges, and closes its copies unread.
   */
  #overdue(): void {
    this.#timer = undefined;
    this.#acknowledged();
    if (this.#waiting.length > 0) this.close();
  }

  #acknowledged(): void {
    for (;;) {
      let bytes: number;
      try {
        bytes = native().recvFds!(this.#fd, this.#ack, NO_FDS); // an fd in an acknowledgement is closed by it
      } catch {
        this.close();
        return;
      }
      if (bytes < 0) return;
      if (bytes < 1 || this.#ack[0] !== 1) {
        this.close();
        return;
      }
      // Each message acknowledges the oldest batch, a byte per socket: those the adopter refused
      // it closed, which closes nothing while this process holds them too.
      const adopted: boolean[] = [];
      for (let i = 1; i < bytes; i++) adopted.push(this.#ack[i] === 1);
      clearTimeout(this.#timer);
      this.#timer = this.#waiting.length > 1 ? setTimeout(() => this.#overdue(), this.#ackTimeout).unref() : undefined;
      this.#waiting.shift()?.(adopted);
    }
  }

  /** Closes the channel: batches not acknowledged are told they were not adopted. */
  close(): void {
    if (this.#fd < 0) return;
    clearTimeout(this.#timer);
    this.#poll?.close(); // and the fd
    this.#poll = undefined;
    this.#fd = -1;
    for (const done of this.#waiting.splice(0)) done(undefined);
  }
}
