/**
 * `closeWrite()`: half-close through Node, resolved by what the kernel shows, not by a timer.
 */
import type net from 'node:net';
import os from 'node:os';
import { constants } from './binding';
import { abortError, errnoError, invalidArgType, socketClosed } from './errors';
import { assertSocket, fdOf, handleFd } from './fd';
import { socketErrorOf, tcpState } from './ops';
import { findSocket, namedTuple } from './diag';
import type { TcpState } from './states';

/** Options of `closeWrite()`. */
export interface CloseWriteOptions {
  /** Stops waiting (rejects with an `AbortError`); the FIN already sent is not taken back. */
  signal?: AbortSignal;
}

/** Poll cadence while the FIN is in flight: 1 ms doubling to 50 ms (a delayed ACK takes up to ~40 ms). */
const FIRST_POLL_MS = 1;
const MAX_POLL_MS = 50;


/**
 * What a state says about our FIN: `'acked'`, `'pending'` (still in flight), or `'reset'`-free
 * `'closed'` (the fd reads CLOSE: after FIN_WAIT1/FIN_WAIT2/CLOSING it is TIME_WAIT, after
 * LAST_ACK the ACK arrived, unless the kernel holds an error, which the caller checks).
 */
function finProgress(state: TcpState): 'acked' | 'pending' | 'closed' {
  switch (state) {
    case 'FIN_WAIT2':
    case 'TIME_WAIT':
      return 'acked';
    case 'CLOSE':
      return 'closed';
    default:
      return 'pending';
  }
}

/**
 * Half-closes the connection through Node (`socket.end()`, so queued writes are sent first) and
 * resolves once the kernel shows our FIN acknowledged: FIN_WAIT2, TIME_WAIT, or, after the peer
 * closed first, LAST_ACK ended. Reading continues as before: the peer can still send.
 *
 * Rejects with the connection's error if it is reset (`ECONNRESET`; when Node was not reading,
 * the error is taken from the kernel's `SO_ERROR`, so Node does not report it again), with
 * `ERR_SOCKET_CLOSED` if the socket is destroyed first, and with an `AbortError` on `signal`.
 * When Node closes the fd meanwhile (it does once both directions ended), the connection is
 * followed through sock_diag by its 4-tuple; its disappearance from the kernel counts as acknowledged
 * after LAST_ACK, and as a reset (`ECONNRESET`) from FIN_WAIT1 or CLOSING, which would have gone on
 * to FIN_WAIT2 or TIME_WAIT.
 * @see shutdown(2)
 */
export function closeWrite(socket: net.Socket, options: CloseWriteOptions = {}): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    assertSocket(socket);
    if (options === null || typeof options !== 'object') throw invalidArgType('options', 'of type object', options);
    const { signal } = options;
    if (signal !== undefined && !(signal instanceof AbortSignal)) {
      throw invalidArgType('options.signal', 'an instance of AbortSignal', signal);
    }
    const fd = fdOf(socket);
    constants(); // an unsupported platform throws ENOTSUP before anything is sent
    tcpState(fd); // and anything but a TCP socket (a Unix one) before its end() is called
    if (signal?.aborted) throw abortError(signal);
    const tuple = namedTuple(socket, fd); // with its cookie: a later connection on the 4-tuple is not this one

    let timer: NodeJS.Timeout | undefined;
    let delay = FIRST_POLL_MS;
    let settled = false;
    /** The state last read on the fd or in sock_diag. */
    let last: TcpState | undefined;

    /**
     * A destroy() before the FIN went out: Node 22 and later fail the queued write with
     * ECANCELED ('error', and `socket.errored`), Node 20 says nothing; both are the same event.
     */
    const failure = (error: Error): Error =>
      !socket.writableFinished && (error as NodeJS.ErrnoException).code === 'ECANCELED'
        ? socketClosed('it was destroyed before its FIN was sent', error)
        : error;

    const settle = (error?: Error): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.off('finish', onFinish).off('end', onEnd).off('error', onError).off('close', onClose);
      signal?.removeEventListener('abort', onAbort);
      if (error) reject(error);
      else resolve();
    };

    // Once the fd is closed, the orphan (LAST_ACK, FIN_WAIT1, CLOSING) is only in sock_diag.
    const checkOrphan = (): void => {
      if (!tuple) return settle(socketClosed('it was closed before its FIN was seen acknowledged'));
      const entry = findSocket(tuple);
      if (entry === undefined && (last === 'FIN_WAIT1' || last === 'CLOSING')) {
        // Gone without FIN_WAIT2 or TIME_WAIT (which sock_diag would show for 60 s): reset, by
        // the peer or by reset() here, before our FIN was acknowledged.
        return settle(Object.assign(errnoError(-os.constants.errno.ECONNRESET, 'read'), {
          message: `read ECONNRESET: the connection was reset in ${last}, before our FIN was acknowledged`,
        }));
      }
      if (entry !== undefined) last = entry.state;
      if (entry === undefined || finProgress(entry.state) !== 'pending') settle();
    };

    function check(): void {
      if (settled) return;
      if (socket.errored) return settle(failure(socket.errored));
      if (!socket.writableFinished) return; // 'finish' comes once shutdown(2) was called.
      if (handleFd(socket) !== fd) return checkOrphan();
      last = tcpState(fd);
      const progress = finProgress(last);
      if (progress === 'acked') return settle();
      if (progress === 'closed') {
        const err = socketErrorOf(socket, fd);
        return settle(err ? errnoError(-err, 'read') : undefined);
      }
    }

    function poll(): void {
      try {
        check();
      } catch (error) {
        settle(error as Error);
      }
      if (settled) return;
      timer = setTimeout(poll, delay).unref();
      delay = Math.min(delay * 2, MAX_POLL_MS);
    }

    function onFinish(): void {
      delay = FIRST_POLL_MS;
      poll();
    }

    // After 'end' Node may close the fd in the same tick: this is the last look at it.
    function onEnd(): void {
      try {
        check();
      } catch (error) {
        settle(error as Error);
      }
    }

    function onClose(): void {
      // Destroyed: an error wins; otherwise follow the connection in the kernel.
      if (socket.errored) return settle(failure(socket.errored));
      if (!socket.writableFinished) return settle(socketClosed('it was destroyed before its FIN was sent'));
      poll();
    }

    function onAbort(): void {
      settle(abortError(signal as AbortSignal));
    }

    function onError(error: Error): void {
      settle(failure(error));
    }

    socket.on('finish', onFinish).on('end', onEnd).on('error', onError).on('close', onClose);
    signal?.addEventListener('abort', onAbort, { once: true });
    if (!socket.writableEnded) socket.end();
    if (socket.writableFinished) poll();
  });
}
