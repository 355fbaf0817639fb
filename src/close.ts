/**
 * `gracefulClose()`: the lingering close of nginx and Apache, decided by what the kernel shows
 * instead of a blind timer. Send everything, send FIN, keep reading (and discarding) what the peer
 * still sends, and close only when closing cannot make the kernel send an RST that destroys data
 * the peer has not received: after the peer's FIN, or once every byte we sent is acknowledged and
 * nothing is left unread. RST only at the deadline.
 */
import type net from 'node:net';
import { performance } from 'node:perf_hooks';
import { nativeUnavailable } from './binding';
import { closeWithoutKernel } from './close-node-only';
import { abortError, checkTimerMs, errnoError, invalidArgType, outOfRange, type CodedError } from './errors';
import { assertSocket, fdOf, handleFd } from './fd';
import { findSocket, socketTuple } from './diag';
import { queuesOfTcpFd, reset, socketErrorOf, tcpState } from './ops';
import type { TcpState } from './states';

/** Options of `gracefulClose()`. */
export interface GracefulCloseOptions {
  /** ms from the call until the connection is reset if it has not closed gracefully; default 30 000; 0 resets at once. */
  timeout?: number;
  /** Bytes the peer may still send (read and discarded) before we stop waiting and reset; default 16 MiB. */
  maxDiscard?: number;
  /** Aborting resets the connection at once (the deadline, brought forward). */
  signal?: AbortSignal;
}

/** Why `gracefulClose()` ended the way it did. */
export type CloseReason =
  /** The peer's FIN arrived: both directions are closed, nothing can be lost. */
  | 'peer-fin'
  /** The kernel showed every byte we sent acknowledged, nothing unread, and the peer was quiet: we closed, no RST. */
  | 'all-acknowledged'
  /** The deadline (`timeout`) passed: the connection was reset. */
  | 'deadline'
  /** The peer sent more than `maxDiscard` bytes after we began to close: reset. */
  | 'discard-limit'
  /** Aborted through `signal`: reset. */
  | 'aborted'
  /** The peer reset the connection. */
  | 'peer-reset'
  /** Data arrived in the instant between our last check and close(), so the kernel sent RST. */
  | 'data-at-close'
  /** The socket was destroyed by someone else, or failed with another error (see `error`). */
  | 'closed-elsewhere';

/** What `gracefulClose()` did, and why. */
export interface CloseReport {
  /**
   * `'destroyed'` only where the kernel's view is not available (`kernelView: false`): at the
   * deadline Node could not reset the socket (a TLS socket, or a shutdown in progress), so it was
   * destroyed: what Node still queued is lost, the kernel sends what it holds, then FIN.
   */
  outcome: 'graceful' | 'reset-sent' | 'reset-received' | 'destroyed';
  reason: CloseReason;
  /** Bytes read from the peer after the close began (given to any 'data' listeners, otherwise discarded). */
  bytesDiscarded: number;
  /** Bytes the kernel held unacknowledged (sent or not) when the fd was closed or reset; -1 if unknown. */
  unackedAtClose: number;
  /** Bytes still queued in Node (never handed to the kernel) when the connection was reset. */
  unsentInNode: number;
  /** ms spent in each phase: flushing Node's queue until the FIN went out, lingering until the decision, and in all. */
  durations: { flush: number; linger: number; total: number };
  /** States the kernel showed during the close, in order, with ms since the call. */
  states: { state: TcpState | 'CLOSED'; at: number }[];
  /** The socket's error, for `peer-reset` and `closed-elsewhere`. */
  error?: Error;
  /**
   * Whether the close was decided by what the kernel showed. `false` where finwait's kernel calls
   * are not available (see `capabilities()`): the close used what Node alone can do (end, read
   * and discard, the peer's FIN, the deadline), `states` is empty and byte counts the kernel
   * holds are -1.
   */
  kernelView: boolean;
  /** Why the kernel's view was not available: the `ENOTSUP` error kernel calls throw here. */
  kernelError?: CodedError;
}

const FIRST_POLL_MS = 1;
const MAX_POLL_MS = 50;
/**
 * ms the peer must have sent nothing (counted from the start of the close too) before we close
 * on 'all-acknowledged': a peer still sending would meet our closed socket and get RST, so we
 * linger (reading) while it talks, like nginx.
 */
const QUIET_MS = 20;
const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_DISCARD = 16 * 1024 * 1024;

function validate(options: GracefulCloseOptions): Required<Omit<GracefulCloseOptions, 'signal'>> & { signal?: AbortSignal } {
  if (options === null || typeof options !== 'object') throw invalidArgType('options', 'of type object', options);
  const { timeout = DEFAULT_TIMEOUT_MS, maxDiscard = DEFAULT_MAX_DISCARD, signal } = options;
  checkTimerMs(timeout, 'options.timeout');
  if (typeof maxDiscard !== 'number' || Number.isNaN(maxDiscard)) throw invalidArgType('options.maxDiscard', 'a number', maxDiscard);
  if (maxDiscard < 0) throw outOfRange('options.maxDiscard', '>= 0', maxDiscard);
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw invalidArgType('options.signal', 'an instance of AbortSignal', signal);
  return { timeout, maxDiscard, signal };
}


/**
 * Makes libuv read again. `resume()` is not always enough: a consumer that paused the handle
 * itself (Node's HTTP parser stops reading a body the app never reads) leaves `reading` false, and
 * the 'resume' that would restart it can come too late. Node's own `tryReadStart()` does this.
 */
function ensureReading(socket: net.Socket): void {
  const handle = (socket as unknown as { _handle?: { reading?: boolean; readStart?: () => number } | null })._handle;
  if (handle && handle.reading === false && typeof handle.readStart === 'function') {
    handle.reading = true;
    const err = handle.readStart();
    if (err < 0) socket.destroy(errnoError(err, 'read'));
  }
}

/**
 * Closes the connection without losing a byte: flushes what Node still queues, sends FIN, keeps
 * reading and discarding (bounded by `maxDiscard` and `timeout`) until the peer's FIN arrives or
 * until the kernel shows everything we sent acknowledged, nothing unread and the peer quiet for
 * 20 ms, then closes, so the kernel sends no RST. At the deadline, and only then, `reset()`. Never blocks the event loop.
 * Resolves with a report of the path taken; rejects only for bad arguments or a socket that is
 * already closed (`ERR_SOCKET_CLOSED`). Where finwait's kernel calls are not available, closes
 * with what Node alone can do and says so (`kernelView: false`).
 */
export function gracefulClose(socket: net.Socket, options: GracefulCloseOptions = {}): Promise<CloseReport> {
  return new Promise<CloseReport>((resolve) => {
    assertSocket(socket);
    const { timeout, maxDiscard, signal } = validate(options);
    const unavailable = nativeUnavailable();
    if (unavailable) return resolve(closeWithoutKernel(socket, { timeout, maxDiscard, signal }, unavailable));
    fdOf(socket);
    // Before anything is armed or sent: anything but a TCP socket (a Unix one) throws here.
    const firstState = tcpState(socket);
    const started = performance.now();
    // Its lookups come in the same turn as the close, when no later connection can have taken
    // the 4-tuple: no cookie needed (reading it would cost every close five syscalls).
    const tuple = socketTuple(socket);
    const states: CloseReport['states'] = [];
    let finSentAt: number | undefined;
    let bytesDiscarded = 0;
    let lastDataAt = 0; // the quiet period also counts from the start of the close
    let settled = false;
    let pollTimer: NodeJS.Timeout | undefined;
    let delay = FIRST_POLL_MS;

    const since = (): number => performance.now() - started;
    const see = (state: TcpState | 'CLOSED'): void => {
      if (states.at(-1)?.state !== state) states.push({ state, at: since() });
    };
    const currentFd = (): number => handleFd(socket);
    /**
     * The connection in sock_diag after Node closed its fd: its orphan, `undefined` once gone, or
     * `null` when the lookup failed (it runs in event handlers, where a throw would crash).
     */
    const lookUp = (): ReturnType<typeof findSocket> | null => {
      if (!tuple) return null;
      try {
        return findSocket(tuple);
      } catch {
        return null;
      }
    };
    const kernelQueued = (fd: number): number => {
      try {
        const q = queuesOfTcpFd(fd);
        return q.unsent + q.unacked;
      } catch {
        return -1;
      }
    };

    const finish = (outcome: CloseReport['outcome'], reason: CloseReason, extra: Partial<CloseReport> = {}): void => {
      if (settled) return;
      settled = true;
      clearTimeout(pollTimer);
      clearTimeout(deadline);
      signal?.removeEventListener('abort', onAbort);
      socket.off('data', onData).off('end', onEnd).off('finish', onFinish).off('close', onClose).off('error', onError);
      const total = since();
      const flushEnd = finSentAt ?? total;
      resolve({
        outcome,
        reason,
        bytesDiscarded,
        unackedAtClose: -1,
        unsentInNode: 0,
        durations: { flush: flushEnd, linger: total - flushEnd, total },
        states,
        kernelView: true,
        ...extra,
      });
    };

    /** Resets now (deadline, discard limit, abort): what was still queued is reported. */
    const abortive = (reason: CloseReason): void => {
      if (settled) return;
      const fd = currentFd();
      const unackedAtClose = fd >= 0 ? kernelQueued(fd) : -1;
      const unsentInNode = socket.writableLength;
      if (fd >= 0) {
        try {
          reset(socket);
        } catch {
          socket.destroy();
        }
      }
      see('CLOSED');
      finish('reset-sent', reason, { unackedAtClose, unsentInNode });
    };

    /** Closes the fd now that no RST can follow, and checks that none did. */
    const closeNow = (reason: CloseReason, fd: number): void => {
      const unackedAtClose = kernelQueued(fd);
      socket.destroy();
      if (reason === 'all-acknowledged') {
        // From FIN_WAIT2 with nothing unread, close() leaves an orphan; a socket gone at once
        // means data arrived in between and the kernel answered with RST. (After the peer's FIN
        // nothing can arrive, so that path needs no look.)
        const orphan = lookUp();
        if (orphan !== null) see(orphan?.state ?? 'CLOSED');
        if (orphan === undefined) return finish('reset-sent', 'data-at-close', { unackedAtClose });
      }
      finish('graceful', reason, { unackedAtClose });
    };

    function check(): void {
      if (settled) return;
      const fd = currentFd();
      if (fd < 0) return; // 'close' decides
      const state = tcpState(fd);
      see(state);
      if (finSentAt === undefined) return; // still flushing Node's queue: nothing to decide yet
      const quiet = since() - lastDataAt >= QUIET_MS;
      if (state === 'FIN_WAIT2' && quiet && queuesOfTcpFd(fd).unread === 0) return closeNow('all-acknowledged', fd);
      if (state === 'CLOSE' && socket.readableEnded) return closeNow('peer-fin', fd);
    }

    function poll(): void {
      try {
        check();
      } catch (error) {
        debugFail(error as Error);
      }
      if (settled) return;
      // While the peer talks, look again once it may have gone quiet.
      const wait = Math.max(delay, QUIET_MS - (since() - lastDataAt));
      pollTimer = setTimeout(poll, Math.min(wait, MAX_POLL_MS));
      delay = Math.min(delay * 2, MAX_POLL_MS);
    }

    function debugFail(error: Error): void {
      // A kernel read failing mid-close (the fd went away under us) is decided by 'close'.
      if (currentFd() >= 0) finish('reset-sent', 'closed-elsewhere', { error });
    }

    function onData(chunk: Buffer | string): void {
      lastDataAt = since();
      bytesDiscarded += typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length;
      if (bytesDiscarded > maxDiscard) abortive('discard-limit');
    }

    function onEnd(): void {
      // The peer's FIN: once ours is out too, the close is complete in both directions. Or an RST
      // that followed data not yet read, which Node 20 and 22 also report as 'end': the fd then
      // reads CLOSE with ECONNRESET pending (Node 24 and later emit that 'error' instead).
      const fd = currentFd();
      if (fd >= 0) {
        try {
          const state = tcpState(fd);
          see(state);
          const pending = state === 'CLOSE' ? socketErrorOf(socket, fd) : 0;
          if (pending) return onError(errnoError(-pending, 'read'));
        } catch {
          /* decided below */
        }
      }
      if (finSentAt !== undefined && fd >= 0) closeNow('peer-fin', fd);
      else wake();
    }

    function onFinish(): void {
      finSentAt = since();
      wake();
    }

    function onError(error: NodeJS.ErrnoException): void {
      if (settled) return;
      see('CLOSED');
      if (error.code === 'ECONNRESET' || error.code === 'EPIPE') finish('reset-received', 'peer-reset', { error });
      else finish('reset-sent', 'closed-elsewhere', { error });
    }

    function onClose(): void {
      if (settled) return;
      // Node closed the fd itself: after both FINs (allowHalfOpen: false), or destroyed by someone.
      const orphan = tuple ? lookUp() : undefined; // no 4-tuple: it never connected
      if (orphan !== null) see(orphan?.state ?? 'CLOSED');
      if (socket.errored) return onError(socket.errored as NodeJS.ErrnoException);
      if (socket.readableEnded && finSentAt !== undefined) return finish('graceful', 'peer-fin');
      finish('reset-sent', 'closed-elsewhere');
    }

    function onAbort(): void {
      abortive('aborted');
    }

    function wake(): void {
      if (settled) return;
      clearTimeout(pollTimer);
      delay = FIRST_POLL_MS;
      poll();
    }

    if (signal?.aborted) throw abortError(signal);
    see(firstState);
    const deadline = setTimeout(() => abortive('deadline'), timeout);
    if (timeout === 0) {
      // No time at all (closeServer past its deadline): reset now, without a FIN first.
      return abortive('deadline');
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    socket.on('data', onData).on('end', onEnd).on('finish', onFinish).on('close', onClose).on('error', onError);
    if (socket.writableFinished) finSentAt = 0;
    socket.resume();
    ensureReading(socket);
    if (!socket.writableEnded) socket.end();
    if (socket.readableEnded && finSentAt !== undefined) onEnd();
    else wake();
  });
}
