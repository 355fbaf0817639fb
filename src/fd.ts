/**
 * Borrowing a socket's file descriptor. finwait never owns an fd: it reads the one libuv holds
 * (`socket._handle.fd`, also on TLS sockets) for the duration of one call and never closes it.
 */
import net from 'node:net';
import { invalidArgType, notSupported, outOfRange, socketClosed } from './errors';

/** A connected `net.Socket` (or `tls.TLSSocket`), or a raw file descriptor of a TCP socket. */
export type SocketLike = net.Socket | number;

interface SocketInternals {
  _handle?: { fd?: number } | null;
}

const FD_MAX = 0x7fffffff;

/** The fd libuv holds for a socket or server right now, or -1 when it has none (no throw). */
export function handleFd(target: net.Socket | net.Server): number {
  const fd = (target as unknown as SocketInternals)._handle?.fd;
  return typeof fd === 'number' ? fd : -1;
}

/** Throws unless `value` is a `net.Socket` (a `tls.TLSSocket` is one). */
export function assertSocket(value: unknown, name = 'socket'): asserts value is net.Socket {
  if (!(value instanceof net.Socket)) throw invalidArgType(name, 'an instance of net.Socket', value);
}

/** The fd of a socket, or a validated raw fd. */
export function fdOf(target: unknown, name = 'socket'): number {
  if (typeof target === 'number') {
    if (!Number.isInteger(target)) {
      throw invalidArgType(name, 'an instance of net.Socket or an integer file descriptor', target);
    }
    if (target < 0 || target > FD_MAX) throw outOfRange(name, `>= 0 and <= ${FD_MAX}`, target);
    return target;
  }
  return handleFdOf(target, name);
}

/** The fd a socket's handle holds, checked as a raw fd is: an integer from 0 to 2^31-1. */
function handleFdOf(target: unknown, name: string): number {
  assertSocket(target, name);
  const handle = (target as SocketInternals)._handle;
  if (!handle) {
    throw socketClosed(target.destroyed ? 'it was destroyed' : 'it is not connected');
  }
  const fd = handle.fd;
  if (typeof fd !== 'number' || fd < 0) {
    if (process.platform === 'win32') throw notSupported('Reading a socket file descriptor');
    // A handle with no fd property at all: this Node does not expose it (libuv gives -1 while
    // connecting, and `fd` is there from the start).
    if (!('fd' in handle)) throw notSupported(`Reading a socket's file descriptor (net.Socket#_handle.fd is missing in Node.js ${process.version})`);
    throw socketClosed('it has no file descriptor yet (still connecting)');
  }
  // A handle replaced or patched by someone else: 2^32 + 5 or 5.5 must not become fd 5.
  if (!Number.isInteger(fd) || fd > FD_MAX) throw outOfRange(`${name}._handle.fd`, `an integer >= 0 and <= ${FD_MAX}`, fd);
  return fd;
}
