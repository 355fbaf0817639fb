/**
 * A lab or pair socket's file descriptor, for the syscalls a test makes itself.
 */
import type net from 'node:net';
import { assertSocket, fdOf as borrowFd } from '../fd';

/**
 * The file descriptor libuv holds for `socket` now, **borrowed**: use it only while the socket is
 * open, never close it (Node closes it with the socket, and a closed number may already name
 * another file). Works from the moment a socket has an fd: a lab socket from `connectSocket()` in
 * SYN_SENT has one. Throws `ERR_INVALID_ARG_TYPE` for anything but a `net.Socket` (a
 * `tls.TLSSocket` is one), `ERR_SOCKET_CLOSED` once it is destroyed (or before it has an fd), and
 * `ENOTSUP` where Node does not expose the fd.
 */
export function fdOf(socket: net.Socket): number {
  assertSocket(socket);
  return borrowFd(socket);
}
