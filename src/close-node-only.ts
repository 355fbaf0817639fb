/**
 * The close `gracefulClose()` makes where finwait's kernel calls are not available (no prebuilt
 * binary and no compiler, or a platform with no back-end yet): what Node alone can do. Send
 * everything and FIN (`end()`), keep reading and discarding, close once the peer's FIN came; at
 * the deadline, reset with Node's `resetAndDestroy()` where Node allows it, else destroy.
 *
 * Without the kernel's view there is no 'all-acknowledged' path (nothing shows that the peer
 * got every byte), so a peer that never sends its FIN waits for the deadline; states are not known.
 */
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import type { CloseReason, CloseReport, RunningClose } from './close';
import { CloseDeadline } from './close-deadline';
import { abortError, socketClosed, type CodedError } from './errors';

interface Options {
  timeout: number;
  maxDiscard: number;
  signal?: AbortSignal;
}

/** Whether Node can reset this socket: `resetAndDestroy()` works on a plain TCP handle only. */
function canReset(socket: net.Socket): boolean {
  const handle = (socket as unknown as { _handle?: { constructor?: { name?: string } } | null })._handle;
  return typeof socket.resetAndDestroy === 'function' && handle?.constructor?.name === 'TCP';
}

/**
 * `gracefulClose()` with no kernel calls; `why` is the error kernel calls throw here. Throws for a
 * closed socket or an aborted signal; otherwise the close is under way, and a later caller can
 * join it (its deadline, if earlier, and its signal apply too).
 */
export function closeWithoutKernel(socket: net.Socket, options: Options, why: CodedError): RunningClose {
  const { timeout, maxDiscard, signal } = options;
  if (socket.destroyed || !(socket as unknown as { _handle?: unknown })._handle) {
    throw socketClosed(socket.destroyed ? 'it was destroyed' : 'it is not connected');
  }
  if (signal?.aborted) throw abortError(signal);
  let join: RunningClose['join'] = () => {};
  const done = new Promise<CloseReport>((resolve) => {
    const started = performance.now();
    let finSentAt: number | undefined;
    let bytesDiscarded = 0;
    let settled = false;
    const since = (): number => performance.now() - started;

    const finish = (outcome: CloseReport['outcome'], reason: CloseReason, extra: Partial<CloseReport> = {}): void => {
      if (settled) return;
      settled = true;
      deadline.clear();
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
        states: [],
        kernelView: false,
        kernelError: why,
        ...extra,
      });
    };

    /** Set while Node resets the socket: why, and what Node still held. */
    let resetting: { reason: CloseReason; unsentInNode: number } | undefined;

    /** Deadline, discard limit or abort: RST where Node can send one, else destroy. */
    const abortive = (reason: CloseReason): void => {
      if (settled || resetting) return;
      const unsentInNode = socket.writableLength;
      if (!canReset(socket)) {
        finish('destroyed', reason, { unsentInNode });
        socket.destroy();
        return;
      }
      resetting = { reason, unsentInNode };
      handle = (socket as unknown as { _handle: { close(): void } })._handle;
      socket.resetAndDestroy(); // 'close' once reset, or 'error' (syscall 'reset') if refused
    };
    /** The TCP handle being reset: Node drops it without closing it when it refuses the reset. */
    let handle: { close(): void } | undefined;

    function onData(chunk: Buffer | string): void {
      bytesDiscarded += typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length;
      if (bytesDiscarded > maxDiscard) abortive('discard-limit');
    }

    function onEnd(): void {
      if (finSentAt !== undefined) closeGracefully();
    }

    function onFinish(): void {
      finSentAt = since();
      if (socket.readableEnded) closeGracefully();
    }

    function closeGracefully(): void {
      finish('graceful', 'peer-fin');
      socket.destroy();
    }

    function onError(error: NodeJS.ErrnoException): void {
      if (resetting && error.syscall === 'reset') {
        // Refused (libuv's EINVAL while a shutdown is in progress): close the fd Node let go of.
        handle?.close();
        return finish('destroyed', resetting.reason, { unsentInNode: resetting.unsentInNode, error });
      }
      if (error.code === 'ECONNRESET' || error.code === 'EPIPE') return finish('reset-received', 'peer-reset', { error });
      // An error of Node's own (a write after end(): ERR_STREAM_WRITE_AFTER_END) destroys the socket
      // without an RST of ours; without the kernel's view all that is known is that Node did.
      finish('destroyed', 'closed-elsewhere', { error, unsentInNode: socket.writableLength });
    }

    function onClose(): void {
      if (settled) return;
      if (resetting) return finish('reset-sent', resetting.reason, { unsentInNode: resetting.unsentInNode });
      if (socket.errored) return onError(socket.errored as NodeJS.ErrnoException);
      if (socket.readableEnded && finSentAt !== undefined) return finish('graceful', 'peer-fin');
      // Destroyed by someone else: no RST of ours, and no kernel to ask whether one followed.
      finish('destroyed', 'closed-elsewhere');
    }

    const deadline = new CloseDeadline(abortive);
    join = (later, laterSignal) => {
      if (!settled) deadline.join(later, laterSignal);
    };
    // Listening first: a reset at once (timeout 0) settles through 'close' or 'error'.
    socket.on('data', onData).on('end', onEnd).on('finish', onFinish).on('close', onClose).on('error', onError);
    deadline.join(timeout, signal);
    if (settled || resetting) return;
    if (socket.writableFinished) finSentAt = 0;
    socket.resume();
    if (!socket.writableEnded) socket.end();
    if (socket.readableEnded && finSentAt !== undefined) closeGracefully();
  });
  return { done, join: (later, laterSignal) => join(later, laterSignal) };
}
