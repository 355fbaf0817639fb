/**
 * Shared by the kernel-behaviour suite. Its tests are named by the "kernel rows", finwait's own
 * numbering of the close behaviours it proves between two real kernels (A closes first, B is the
 * peer), one file per group of rows:
 *
 *   1  normal close, four segments (RFC 793 figure 13)       fin-close.test.ts
 *   2  three segments: FIN, FIN+ACK, ACK                      fin-close.test.ts
 *   3  simultaneous close, both through CLOSING (figure 14)   simultaneous-close.test.ts
 *   4  half-close (RFC 1122 4.2.2.13)                         half-close.test.ts
 *   5  close with unread data sends RST                       reset.test.ts
 *   6  data sent to a closed socket gets RST                  reset.test.ts
 *   7  a SYN to a port nobody listens on gets RST             reset.test.ts
 *   8  an orphaned FIN_WAIT2 times out (TCP_LINGER2)          fin-wait2.test.ts
 *   9  TCP_LINGER2 = -1: RST at close in FIN_WAIT2            fin-wait2.test.ts
 *  10  the final ACK lost: FIN retransmitted from LAST_ACK    retransmission.test.ts
 *  11  TIME_WAIT lasts 2MSL, 60 s on Linux                    time-wait.test.ts
 *  12  TIME_WAIT blocks bind() of its address                 time-wait.test.ts
 *  13  SO_LINGER {1, 0}: an abortive close, RST               linger.test.ts
 *  14  SO_LINGER {1, N > 0}: close() blocks up to N s         linger.test.ts
 *  17  a FIN copy into TIME_WAIT: re-ACKed, 60 s restarted    time-wait-segments.test.ts
 *  18  RFC 1337: an in-window RST kills TIME_WAIT unless      time-wait-segments.test.ts
 *      net.ipv4.tcp_rfc1337=1
 *  19  a SYN to a TIME_WAIT 4-tuple: accepted, ISN + 65537    time-wait-segments.test.ts
 *  20  close() in SYN_SENT sends nothing; late SYN-ACK: RST   syn-sent.test.ts
 *  21  behind a zero window the FIN waits for the window      zero-window.test.ts
 *  22  after an RST: queued data readable, writes fail        after-reset.test.ts
 *  23  an fd passed (SCM_RIGHTS), closed: nothing on the     fd-passing.test.ts
 *      wire; the copy serves; the last close sends the FIN
 *  24  a listener dropping SYNs (socket filter): a new SYN   syn-filter.test.ts
 *      unanswered, a handshake under way still accepted
 *
 * Here: a connection across the lab's wire, and segment matching in the notation of RFC 793's
 * figures, `a <SEQ=1><ACK=1><CTL=FIN,ACK>`, with each side's numbers relative to its
 * ISN. PSH is left out everywhere: the kernel sets it as it likes, and a retransmitted FIN can
 * carry PSH and data (`FP.`), so no assertion here depends on it.
 */
import { expect } from 'vitest';
import { once } from 'node:events';
import type net from 'node:net';
import { formatSegment, waitUntil, type Lab, type LogEntry, type Verdict, type Wire, type WireSegment } from '../../src/testing/index';

export { itLab } from '../testing/helpers';

/** Both ends of a connection a → b:port across the wire, and b's listener. */
export interface Connection {
  /** a's end (the one that connected); the active closer unless a row says otherwise. */
  sa: net.Socket;
  /** b's end (accepted). */
  sb: net.Socket;
  server: net.Server;
}

/**
 * Connects a to b:`port` (default 80) with the same Node options on both ends. With
 * `pauseOnConnect`, Node reads nothing on either end: data and FINs stay in the kernels' receive
 * queues and Node never closes an fd on its own, so the fds keep showing the kernel's states.
 */
export async function connect(
  lab: Lab,
  options: { allowHalfOpen?: boolean; pauseOnConnect?: boolean } = {},
  port = 80,
): Promise<Connection> {
  const server = await lab.b.listen(port, options);
  const accepted = once(server, 'connection') as Promise<[net.Socket]>;
  const sa = await lab.a.connect(port, options);
  const [sb] = await accepted;
  return { sa, sb, server };
}

/** One segment with its sender, PSH left out: `'b <SEQ=1><ACK=2><CTL=FIN,ACK>'`, `'a <SEQ=1><ACK=2><CTL=ACK><DATA=1>'`. */
export function segmentText(entry: LogEntry): string {
  return `${entry.from} ${formatSegment({ ...entry, flags: entry.flags.filter((f) => f !== 'PSH') })}`;
}

export interface SegmentOptions {
  /** Only entries with these verdicts (default `['pass', 'release', 'delay']`: what reached the other host). */
  verdicts?: readonly Verdict[];
  /** Append the verdict: `'a <SEQ=1><ACK=1><CTL=FIN,ACK> hold'`. */
  withVerdict?: boolean;
}

/** The wire log's entries as `segmentText`, in order. */
export function segments(log: readonly LogEntry[], options: SegmentOptions = {}): string[] {
  const { verdicts = ['pass', 'release', 'delay'], withVerdict = false } = options;
  return log
    .filter((e) => verdicts.includes(e.verdict))
    .map((e) => (withVerdict ? `${segmentText(e)} ${e.verdict}` : segmentText(e)));
}

/** Asserts that the log's segments (as `segments(log, options)`) are exactly `expected`, in order. */
export function expectSegments(log: readonly LogEntry[], expected: readonly string[], options: SegmentOptions = {}): void {
  expect(segments(log, options)).toEqual(expected);
}

/**
 * Resolves with the first log entry `predicate` accepts, once the wire has logged it: a kernel may
 * already show the state a segment caused at its sender before the wire has read that segment.
 */
export function waitForSegment(wire: Wire, describe: string, predicate: (entry: LogEntry) => boolean, timeout = 5000): Promise<LogEntry> {
  return waitUntil(describe, () => wire.log.find(predicate), { timeout });
}

/** A predicate for a FIN from `from`: for the wire's rules and for its log. */
export const finFrom =
  (from: 'a' | 'b') =>
  (segment: WireSegment): boolean =>
    segment.from === from && segment.flags.includes('FIN');

/**
 * What a Node write does: `'ok'` once the kernel took the bytes, or the error's code (`'EPIPE'`,
 * `'ECONNRESET'`). A failed write also destroys the socket with that error; it is caught here.
 */
export function writeResult(socket: net.Socket, data: string | Uint8Array): Promise<string> {
  return new Promise((resolve) => {
    const onError = (error: NodeJS.ErrnoException): void => resolve(error.code ?? String(error));
    socket.once('error', onError);
    socket.write(data, (error) => {
      // On failure Node calls back first and emits 'error' after: leave the listener to catch it.
      if (error) resolve((error as NodeJS.ErrnoException).code ?? String(error));
      else {
        socket.off('error', onError);
        resolve('ok');
      }
    });
  });
}

/** The fd Node holds for `socket`, for a raw read(2) where Node would hide what the kernel says. */
export function fdOf(socket: net.Socket): number {
  const fd = (socket as unknown as { _handle?: { fd?: number } | null })._handle?.fd;
  if (typeof fd !== 'number' || fd < 0) throw new Error('the socket has no fd');
  return fd;
}
