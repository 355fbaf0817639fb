/**
 * The low-level operations: each reads or sets one thing on a live TCP socket, through the addon.
 * Every function takes a connected `net.Socket` (TLS included) or a raw fd unless it says
 * otherwise, and throws Node-style errors: `ERR_INVALID_ARG_TYPE`, `ERR_OUT_OF_RANGE`,
 * `ERR_SOCKET_CLOSED`, or the kernel's own code (`EBADF`, `ENOTSOCK`, ...).
 */
import type net from 'node:net';
import diagnosticsChannel from 'node:diagnostics_channel';
import { constants, native } from './binding';
import { invalidArgType, outOfRange, errnoError, type ErrnoError } from './errors';
import { assertSocket, fdOf, type SocketLike } from './fd';
import { decodeTcpInfo, stateOrThrow, TCP_INFO_BUFFER_SIZE, type TcpInfo } from './tcp-info';
import type { TcpState } from './states';

const infoBuffer = new Uint8Array(TCP_INFO_BUFFER_SIZE);

/**
 * diagnostics_channel on which every state finwait reads from an fd is published as
 * `{ fd, state }`, so that `watch()` learns what other calls saw (closeWrite's polls, a user's
 * `tcpState()`): transient states are caught more often.
 */
export const OBSERVED_CHANNEL = 'finwait:socket:observed';
const observedChannel = diagnosticsChannel.channel(OBSERVED_CHANNEL);

function observed(fd: number, state: TcpState): TcpState {
  if (observedChannel.hasSubscribers) observedChannel.publish({ fd, state });
  return state;
}

/**
 * The kernel's `struct tcp_info` for the connection, every field the running kernel filled.
 * @see tcp(7) TCP_INFO
 */
export function tcpInfo(socket: SocketLike): TcpInfo {
  const fd = fdOf(socket);
  const length = native().tcpInfo(fd, infoBuffer);
  const info = decodeTcpInfo(infoBuffer, length);
  observed(fd, info.state);
  return info;
}

/**
 * The connection's TCP state as the kernel names it; one `getsockopt` copying one byte. An open
 * fd never shows `'TIME_WAIT'`: it reads `'CLOSE'` once TIME_WAIT began (see `sockets()`).
 */
export function tcpState(socket: SocketLike): TcpState {
  const fd = fdOf(socket);
  return observed(fd, stateOrThrow(native().tcpState(fd)));
}

/**
 * The states of many sockets in one native call: entry `i` is the state of `sockets[i]`, or the
 * kernel's error for it (an `ErrnoError` such as `EBADF`), so one closed fd does not hide the rest.
 * Pass an `Int32Array` of fds to skip the per-socket lookup.
 */
export function tcpStates(sockets: Int32Array | ReadonlyArray<SocketLike>): Array<TcpState | ErrnoError> {
  let fds: Int32Array;
  if (sockets instanceof Int32Array) {
    fds = sockets;
  } else if (Array.isArray(sockets)) {
    fds = new Int32Array(sockets.length);
    for (let i = 0; i < sockets.length; i++) fds[i] = fdOf(sockets[i], `sockets[${i}]`);
  } else {
    throw invalidArgType('sockets', 'an Int32Array or an array of sockets or fds', sockets);
  }
  const out = new Int32Array(fds.length);
  native().tcpStates(fds, out);
  const states = new Array<TcpState | ErrnoError>(fds.length);
  for (let i = 0; i < out.length; i++) {
    const value = out[i];
    states[i] = value < 0 ? errnoError(value, 'getsockopt') : stateOrThrow(value);
  }
  return states;
}

/** Bytes in the connection's queues. */
export interface Queues {
  /** Bytes written to the kernel and not yet sent (SIOCOUTQNSD). */
  unsent: number;
  /** Bytes sent and not yet acknowledged by the peer (SIOCOUTQ minus SIOCOUTQNSD). */
  unacked: number;
  /** Bytes received and not yet read by the application (SIOCINQ). */
  unread: number;
}

/**
 * The bytes waiting in the kernel in each direction; Node's own write queue (`writableLength`)
 * is not included. Throws `EINVAL` on a listening socket.
 * @see tcp(7) SIOCINQ, SIOCOUTQ, SIOCOUTQNSD
 */
export function queues(socket: SocketLike): Queues {
  return queuesOfTcpFd(tcpFdOf(socket));
}

/** `queues()` of an fd already known to be a TCP socket's (no check). */
export function queuesOfTcpFd(fd: number): Queues {
  const { SIOCINQ, SIOCOUTQ, SIOCOUTQNSD } = constants();
  // Only ACKs change the send queue between the two reads (Node writes on this thread), and
  // they only shrink it: reading the total first keeps unsent <= total, so unacked >= 0.
  const total = native().ioctlInt(fd, SIOCOUTQ);
  const unsent = native().ioctlInt(fd, SIOCOUTQNSD);
  const unread = native().ioctlInt(fd, SIOCINQ);
  return { unsent, unacked: total - unsent, unread };
}

/**
 * diagnostics_channel on which `shutdown()` announces `{ fd }` just before it sends a FIN
 * (`'write'` or `'both'`): `watch()` names the connection while TIME_WAIT cannot have begun.
 */
export const FIN_CHANNEL = 'finwait:socket:fin';
const finChannel = diagnosticsChannel.channel(FIN_CHANNEL);

/** Which directions `shutdown()` closes. */
export type ShutdownHow = 'read' | 'write' | 'both';

/**
 * Raw shutdown(2). Pitfalls: it bypasses Node's write queue, so bytes still queued in Node
 * (`writableLength`) are lost and later writes fail with `EPIPE`; use `closeWrite()` to half-close
 * after the queue drained. `'read'` makes Node's next read see end-of-file (Linux still accepts
 * and queues incoming data).
 * @see shutdown(2)
 */
export function shutdown(socket: SocketLike, how: ShutdownHow): void {
  const fd = fdOf(socket);
  const { SHUT_RD, SHUT_WR, SHUT_RDWR } = constants();
  const value = how === 'read' ? SHUT_RD : how === 'write' ? SHUT_WR : how === 'both' ? SHUT_RDWR : undefined;
  if (value === undefined) throw invalidArgType('how', "one of 'read', 'write' or 'both'", how);
  if (value !== SHUT_RD && finChannel.hasSubscribers) finChannel.publish({ fd });
  native().shutdown(fd, value);
}


/**
 * `SO_LINGER`: `null` when off (close() returns at once and the kernel sends what is queued),
 * else the linger time in seconds (0: close() sends RST).
 * @see socket(7) SO_LINGER
 */
export function getLinger(socket: SocketLike): number | null {
  const { onoff, linger } = native().getLinger(tcpFdOf(socket));
  return onoff ? linger : null;
}

/**
 * Sets `SO_LINGER` and returns the value read back: `0` makes close() send RST (see `reset()`),
 * `null` restores the default. A positive linger is refused (`ERR_OUT_OF_RANGE`): it makes
 * close() block for up to that many seconds, and Node closes on its event loop.
 * @see socket(7) SO_LINGER
 */
export function setLinger(socket: SocketLike, seconds: 0 | null): number | null {
  const fd = tcpFdOf(socket);
  if (seconds === null) {
    native().setLinger(fd, 0, 0);
  } else if (typeof seconds !== 'number') {
    throw invalidArgType('seconds', '0 or null', seconds);
  } else if (seconds !== 0) {
    throw outOfRange(
      'seconds',
      '0 or null',
      seconds,
      'A positive SO_LINGER blocks close(), and so the Node.js event loop, until the peer acknowledges or the time runs out; use gracefulClose() to wait for the peer without blocking',
    );
  } else {
    native().setLinger(fd, 1, 0);
  }
  return getLinger(fd);
}

/** diagnostics_channel on which `reset()` announces `{ socket }` just before it resets it. */
export const RESET_CHANNEL = 'finwait:socket:reset';
const resetChannel = diagnosticsChannel.channel(RESET_CHANNEL);

/**
 * Abortive close: the peer gets RST instead of FIN and no TIME_WAIT is left on either side
 * (`SO_LINGER {1, 0}`, then `socket.destroy()`). Data still queued in Node or the kernel is
 * discarded. Unlike Node's `resetAndDestroy()`, it works while an `end()` is still pending.
 */
export function reset(socket: net.Socket): void {
  assertSocket(socket);
  native().setLinger(tcpFdOf(socket), 1, 0);
  if (resetChannel.hasSubscribers) resetChannel.publish({ socket });
  socket.destroy();
}

/**
 * The fd of a TCP socket, checked with one TCP_INFO read: a Unix or UDP socket throws the
 * kernel's EOPNOTSUPP (`ENOTSUP`), a file `ENOTSOCK`, before calls whose own syscall would accept
 * it (SO_LINGER, SO_KEEPALIVE) or answer `ENOTTY` (the queue ioctls).
 */
export function tcpFdOf(socket: SocketLike): number {
  const fd = fdOf(socket);
  native().tcpState(fd);
  return fd;
}

/** The pending error of the socket (`SO_ERROR`), which reading clears; 0 if none. */
export function takeSocketError(fd: number): number {
  const { SOL_SOCKET, SO_ERROR } = constants();
  return native().getIntOption(fd, SOL_SOCKET, SO_ERROR);
}

const kTakenError = Symbol('finwait.takenSocketError');

/**
 * The socket's pending error (`SO_ERROR`) as the first finwait caller took it: reading clears it
 * in the kernel, so the error taken is kept on the socket and every later caller (watch(),
 * gracefulClose(), closeWrite() on the same socket) gets the same answer. 0 if none.
 *
 * Why it is needed: when an RST follows data not yet read, Node 20 and 22 emit the data and then
 * 'end' (libuv takes the hang-up after a short read for end-of-file), while Node 24 and later emit
 * 'error' ECONNRESET. An fd that reads CLOSE at 'end' with ECONNRESET pending was reset.
 */
export function socketErrorOf(socket: net.Socket, fd: number): number {
  const holder = socket as net.Socket & { [kTakenError]?: number };
  const taken = holder[kTakenError];
  if (taken) return taken;
  const error = takeSocketError(fd);
  if (error) holder[kTakenError] = error;
  return error;
}
