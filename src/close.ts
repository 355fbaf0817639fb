/**
 * `gracefulClose()`: the lingering close of nginx and Apache, decided by what the kernel shows
 * instead of a blind timer. Send everything, send FIN, keep reading (and discarding) what the peer
 * still sends, and close only when closing cannot make the kernel send an RST that destroys data
 * the peer has not received: after the peer's FIN, or once every byte we sent is acknowledged and
 * nothing is left unread. RST only at the deadline.
 *
 * The close runs in four steps, named as the documentation names them: flush (Node's queue, then
 * our FIN, handed to the kernel), linger (read and discard, look at the kernel on each event and on
 * a backoff timer), decide (close, or reset at the deadline), report.
 */
import fs from 'node:fs';
import type net from 'node:net';
import { performance } from 'node:perf_hooks';
import { constants, native, nativeUnavailable } from './binding';
import { CloseDeadline } from './close-deadline';
import { closeWithoutKernel } from './close-node-only';
import { abortError, checkTimerMs, errnoError, invalidArgType, outOfRange, type CodedError } from './errors';
import { assertSocket, fdOf, handleFd } from './fd';
import { findSocket, socketTuple, type SocketTuple } from './diag';
import { reset, shutdown, socketErrorOf, tcpState } from './ops';
import { stateOrThrow } from './tcp-info';
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
  /**
   * Node closed the socket before the close was decided: the application destroyed it, or Node did
   * after an error of its own (a write after the close began: `error` is
   * `ERR_STREAM_WRITE_AFTER_END`). `outcome` says what the kernel showed afterwards.
   */
  | 'closed-elsewhere'
  /**
   * `closeServer()` only: an idle HTTP/1.1 keep-alive connection given to the next instance of the
   * server on the same port, which adopted it (see `listenReusePort()`'s `adoptConnections`); this
   * process closed its fd, the connection itself stays open there.
   */
  | 'handed-off';

/** What `gracefulClose()` did, and why. */
export interface CloseReport {
  /**
   * `'graceful'`: no RST was sent or received, and everything Node accepted for sending was
   * handed to the kernel before the FIN. `'destroyed'`: no RST either, but Node dropped what it
   * still queued: at the deadline where the kernel's view is not available (`kernelView: false`)
   * and Node could not reset the socket (a TLS socket, or a shutdown in progress), or when Node
   * closed the socket under the close (`'closed-elsewhere'`) before its queue was written; the
   * kernel sends what it holds, then FIN.
   */
  outcome: 'graceful' | 'reset-sent' | 'reset-received' | 'destroyed';
  reason: CloseReason;
  /** Bytes read from the peer after the close began (given to any 'data' listeners, otherwise discarded). */
  bytesDiscarded: number;
  /** Bytes the kernel held unacknowledged (sent or not) when the fd was closed or reset; -1 if unknown. */
  unackedAtClose: number;
  /** Bytes still queued in Node (never handed to the kernel) when the connection was reset or destroyed. */
  unsentInNode: number;
  /** ms spent in each phase: flushing Node's queue until the FIN went out, lingering until the decision, and in all. */
  durations: { flush: number; linger: number; total: number };
  /**
   * States the kernel showed during the close, in order, with ms since the call: read on the fd,
   * or looked up in sock_diag after the fd was closed (`'CLOSED'`: the kernel no longer had the
   * socket, or we reset it).
   */
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

/** @internal A close under way (or done): what a second call on the same socket joins. */
export interface RunningClose {
  readonly done: Promise<CloseReport>;
  /** Applies a later caller's deadline (if earlier) and signal to this close. */
  join(timeout: number, signal?: AbortSignal): void;
}

/** Every socket's close, so that a second call joins the first instead of starting another. */
const running = new WeakMap<net.Socket, RunningClose>();

const DEFAULT_TIMEOUT_MS = 30_000;
const DEFAULT_MAX_DISCARD = 16 * 1024 * 1024;
/**
 * ms the peer must have sent nothing (counted from the start of the close too) before we close
 * on 'all-acknowledged': a peer still sending would meet our closed socket and get RST, so we
 * linger (reading) while it talks, like nginx. It is also the first look after the FIN went out:
 * nothing can be decided earlier except by an event.
 */
const QUIET_MS = 20;
const MAX_POLL_MS = 50;
/** States of a socket whose fd is closed and whose FIN went out: no RST was sent. */
const FIN_ORPHANS: ReadonlySet<string> = new Set(['FIN_WAIT1', 'FIN_WAIT2', 'CLOSING', 'LAST_ACK', 'TIME_WAIT']);
/** States in which the peer's FIN had arrived. */
const PEER_FIN_SEEN: ReadonlySet<string> = new Set(['CLOSE_WAIT', 'LAST_ACK', 'CLOSING', 'TIME_WAIT']);

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
export function ensureReading(socket: net.Socket): void {
  const handle = (socket as unknown as { _handle?: { reading?: boolean; readStart?: () => number } | null })._handle;
  if (handle && handle.reading === false && typeof handle.readStart === 'function') {
    handle.reading = true;
    const err = handle.readStart();
    if (err < 0) socket.destroy(errnoError(err, 'read'));
  }
}

/** Whether an error is the kernel's word that the peer reset the connection. */
function isPeerReset(error: NodeJS.ErrnoException): boolean {
  return error.code === 'ECONNRESET' || error.code === 'EPIPE';
}

/**
 * Closes the connection without losing a byte: flushes what Node still queues, sends FIN, keeps
 * reading and discarding (bounded by `maxDiscard` and `timeout`) until the peer's FIN arrives or
 * until the kernel shows everything we sent acknowledged, nothing unread and the peer quiet for
 * 20 ms, then closes, so the kernel sends no RST. At the deadline, and only then, `reset()`. Never blocks the event loop.
 * Resolves with a report of the path taken; rejects only for bad arguments or a socket that is
 * already closed (`ERR_SOCKET_CLOSED`). A second call on a socket whose close is under way (or
 * done) joins it: it resolves with the same report, and its `timeout` and `signal` also apply
 * (the earlier deadline wins). Where finwait's kernel calls are not available, closes with what
 * Node alone can do and says so (`kernelView: false`).
 */
export function gracefulClose(socket: net.Socket, options: GracefulCloseOptions = {}): Promise<CloseReport> {
  return new Promise<CloseReport>((resolve) => {
    assertSocket(socket);
    const { timeout, maxDiscard, signal } = validate(options);
    const current = running.get(socket);
    if (current) {
      if (signal?.aborted) throw abortError(signal);
      current.join(timeout, signal);
      return resolve(current.done);
    }
    const unavailable = nativeUnavailable();
    if (unavailable) {
      const close = closeWithoutKernel(socket, { timeout, maxDiscard, signal }, unavailable);
      running.set(socket, close);
      return resolve(close.done);
    }
    fdOf(socket);
    // Before anything is armed or sent: anything but a TCP socket (a Unix one) throws here.
    const firstState = tcpState(socket);
    if (signal?.aborted) throw abortError(signal);
    const close = new LingeringClose(socket, firstState, maxDiscard, resolve);
    running.set(socket, close);
    close.begin(timeout, signal);
  });
}

/**
 * @internal closeServer()'s way in: a lingering close of a connection it knows to be TCP and
 * open, reported to `onDone` (no promise), with no deadline timer of its own: closeServer() has
 * one for all its connections and calls `resetNow()` at it. A close already under way is joined.
 */
export function closeForServer(socket: net.Socket, onDone: (report: CloseReport) => void, tuple?: SocketTuple): ServerClose {
  const current = running.get(socket);
  if (current) {
    void current.done.then(onDone);
    return { resetNow: (reason) => (current instanceof LingeringClose ? current.resetNow(reason) : current.join(0)) };
  }
  fdOf(socket);
  const close = new LingeringClose(socket, undefined, DEFAULT_MAX_DISCARD, onDone, tuple);
  running.set(socket, close);
  close.begin(Infinity);
  return close;
}

/** @internal What closeServer() keeps of a close: the way to reset it at its deadline or on abort. */
export interface ServerClose {
  resetNow(reason: 'deadline' | 'aborted'): void;
}

// One set of listeners for every close: each finds its close through the socket (`this`), so a
// close allocates no closures per event.
function onData(this: net.Socket, chunk: Buffer | string): void {
  (running.get(this) as LingeringClose).data(chunk);
}
function onEnd(this: net.Socket): void {
  (running.get(this) as LingeringClose).peerEnded();
}
function onFinish(this: net.Socket): void {
  (running.get(this) as LingeringClose).finSent();
}
function onError(this: net.Socket, error: NodeJS.ErrnoException): void {
  (running.get(this) as LingeringClose).failed(error);
}
function onClose(this: net.Socket): void {
  (running.get(this) as LingeringClose).nodeClosed();
}
/**
 * Closes due for a look, by due time rounded up to LOOK_GRANULARITY_MS: one timer per due time,
 * not one per close (10,000 closes begun in the same instant look in the same few timers). Each
 * close keeps its due time (`lookAt`) while a look is scheduled.
 */
class DueLooks<T extends { lookAt: number | undefined }> {
  readonly #due = new Map<number, Set<T>>();
  readonly #fire: (key: number) => void;

  constructor(run: (due: Set<T>) => void) {
    this.#fire = (key) => {
      const due = this.#due.get(key);
      this.#due.delete(key);
      if (due !== undefined && due.size > 0) run(due);
    };
  }

  schedule(close: T, at: number): void {
    const key = Math.ceil(at / LOOK_GRANULARITY_MS) * LOOK_GRANULARITY_MS;
    let due = this.#due.get(key);
    if (!due) {
      due = new Set();
      this.#due.set(key, due);
      setTimeout(this.#fire, Math.max(0, key - performance.now()), key);
    }
    due.add(close);
    close.lookAt = key;
  }

  cancel(close: T): void {
    if (close.lookAt === undefined) return;
    this.#due.get(close.lookAt)?.delete(close);
    close.lookAt = undefined;
  }
}
const LOOK_GRANULARITY_MS = 2;

/** The lingering closes' looks: each looks at its own socket. */
const looks = new DueLooks<LingeringClose>((due) => {
  for (const close of due) close.look();
});

/** A close that shut its fd on 'all-acknowledged' and waits for the kernel's word that no RST went. */
interface Verifying {
  verified(clean: boolean, unackedAtClose: number): void;
}

/** The 'all-acknowledged' closes of this turn of the loop, and the kernel's count before the first. */
let pendingVerify: { closes: { close: Verifying; unackedAtClose: number }[]; abortsBefore: number } | undefined;

/** Queues a close that is about to close its fd on 'all-acknowledged' for the batch's verdict. */
function verifyLater(close: Verifying, unackedAtClose: number): void {
  if (!pendingVerify) {
    pendingVerify = { closes: [], abortsBefore: abortsAtClose() };
    setImmediate(verifyCloses);
  }
  pendingVerify.closes.push({ close, unackedAtClose });
}

function verifyCloses(): void {
  const batch = pendingVerify!;
  pendingVerify = undefined;
  const after = abortsAtClose();
  const clean = batch.abortsBefore >= 0 && after === batch.abortsBefore;
  for (const { close, unackedAtClose } of batch.closes) close.verified(clean, unackedAtClose);
}

const ABORT_COUNTERS = ['TCPAbortOnClose', 'TCPAbortOnMemory', 'TCPAbortOnLinger'];
let abortColumns: number[] | undefined;

/**
 * How many closes sent an RST in this network namespace so far (TcpExt of /proc/net/netstat:
 * unread data at close, out of orphan memory, a negative TCP_LINGER2), or -1 if unreadable.
 */
function abortsAtClose(): number {
  let text: string;
  try {
    text = fs.readFileSync('/proc/net/netstat', 'latin1');
  } catch {
    return -1;
  }
  const head = text.indexOf('TcpExt: ');
  const values = text.indexOf('TcpExt: ', head + 1);
  if (head < 0 || values < 0) return -1;
  if (!abortColumns) {
    const names = text.slice(head + 8, text.indexOf('\n', head)).split(' ');
    abortColumns = ABORT_COUNTERS.map((name) => names.indexOf(name));
    if (abortColumns.some((i) => i < 0)) abortColumns = [];
  }
  if (abortColumns.length === 0) return -1;
  const numbers = text.slice(values + 8, text.indexOf('\n', values)).split(' ');
  let sum = 0;
  for (const i of abortColumns) sum += Number(numbers[i]);
  return Number.isFinite(sum) ? sum : -1;
}

/** One lingering close; see the module comment for its steps. */
class LingeringClose implements RunningClose, ServerClose, Verifying {
  private report: CloseReport | undefined;
  private waiting: ((report: CloseReport) => void)[] | undefined;
  private readonly started = performance.now();
  private readonly states: CloseReport['states'] = [];
  /** Its lookups come in the same turn as the close, when no later connection can have taken the 4-tuple: no cookie needed. */
  private readonly tuple: SocketTuple | undefined;
  private finSentAt: number | undefined;
  private bytesDiscarded = 0;
  /** ms since the start when data last arrived; the quiet period also counts from the start. */
  private lastDataAt = 0;
  private settled = false;
  /** The due time of the next look (see DueLooks), if one is scheduled. */
  lookAt: number | undefined;
  private pollDelay = QUIET_MS;
  private readonly deadline = new CloseDeadline((reason) => this.abortive(reason));
  /** What Node still queued at the last event: what a destroy under us drops. */
  private unsentInNode = 0;
  private fd = -1;
  /** Closed on 'all-acknowledged', waiting for the verdict of the batch. */
  private verifying = false;

  constructor(
    private readonly socket: net.Socket,
    firstState: TcpState | undefined,
    private readonly maxDiscard: number,
    private readonly onDone: (report: CloseReport) => void,
    tuple?: SocketTuple,
  ) {
    this.tuple = tuple ?? socketTuple(socket);
    if (firstState) this.see(firstState);
  }

  /** The report, for a second caller (made only when one asks). */
  get done(): Promise<CloseReport> {
    if (this.report) return Promise.resolve(this.report);
    return new Promise((resolve) => (this.waiting ??= []).push(resolve));
  }

  /**
   * The socket's fd while Node holds it open, else -1. Read once (a native accessor): it does not
   * change while the handle lives, and Node drops the handle when it closes the fd.
   */
  private currentFd(): number {
    if (!(this.socket as unknown as { _handle?: unknown })._handle) return -1;
    if (this.fd < 0) this.fd = handleFd(this.socket);
    return this.fd;
  }

  private since(): number {
    return performance.now() - this.started;
  }

  private see(state: TcpState | 'CLOSED'): void {
    if (this.states.at(-1)?.state !== state) this.states.push({ state, at: this.since() });
  }

  /** Arms the deadline (none for `Infinity`: the caller resets at its own) and the signal, then flushes. */
  begin(timeout: number, signal?: AbortSignal): void {
    // No time at all (closeServer past its deadline): reset now, without a FIN first.
    if (timeout === 0) return this.abortive('deadline');
    this.deadline.join(timeout, signal);
    this.flush();
  }

  /** The caller's deadline (or abort) came: reset now. */
  resetNow(reason: 'deadline' | 'aborted'): void {
    this.abortive(reason);
  }

  join(timeout: number, signal?: AbortSignal): void {
    if (this.settled) return;
    this.deadline.join(timeout, signal);
  }

  // 1. Flush: Node's queue, then our FIN, handed to the kernel ('finish'). Reading starts at once.
  private flush(): void {
    const socket = this.socket;
    socket.on('data', onData).on('end', onEnd).on('finish', onFinish).on('close', onClose).on('error', onError);
    if (socket.writableFinished) this.finSentAt = 0;
    socket.resume();
    ensureReading(socket);
    this.unsentInNode = socket.writableLength;
    if (!socket.writableEnded) socket.end();
    if (this.settled) return; // end() can fail at once
    if (socket.readableEnded && this.finSentAt !== undefined) this.peerEnded();
    else this.lookLater();
  }

  finSent(): void {
    this.finSentAt = this.since();
    this.unsentInNode = 0;
    // Nothing can be decided before the peer was quiet QUIET_MS (or its FIN, an event): the first
    // look comes then, not now.
    if (this.lookAt === undefined) this.lookLater();
  }

  // 2. Linger: read and discard; the kernel is looked at on every event and on a backoff timer.
  data(chunk: Buffer | string): void {
    this.lastDataAt = this.since();
    this.bytesDiscarded += typeof chunk === 'string' ? Buffer.byteLength(chunk) : chunk.length;
    if (this.bytesDiscarded > this.maxDiscard) this.abortive('discard-limit');
  }

  /** Looks at the kernel now, then again later unless decided. */
  look(): void {
    this.lookAt = undefined;
    if (this.settled) return;
    try {
      this.check();
    } catch (error) {
      // A kernel read failing mid-close (the fd went away under us) is decided by 'close'.
      if (this.currentFd() >= 0) this.finish('reset-sent', 'closed-elsewhere', { error: error as Error });
    }
    this.lookLater();
  }

  /** The next look: once the peer may have been quiet QUIET_MS, then backing off to MAX_POLL_MS. */
  private lookLater(): void {
    if (this.settled) return;
    looks.cancel(this);
    const wait = Math.max(this.pollDelay, QUIET_MS - (this.since() - this.lastDataAt));
    looks.schedule(this, performance.now() + Math.min(wait, MAX_POLL_MS));
    this.pollDelay = Math.min(this.pollDelay * 2, MAX_POLL_MS);
  }

  // 3. Decide.
  private check(): void {
    const fd = this.currentFd();
    if (fd < 0) return; // 'close' decides
    this.unsentInNode = this.socket.writableLength;
    const state = tcpState(fd);
    this.see(state);
    if (this.finSentAt === undefined) return; // still flushing Node's queue: nothing to decide yet
    const quiet = this.since() - this.lastDataAt >= QUIET_MS;
    if (state === 'FIN_WAIT2' && quiet && native().ioctlInt(fd, constants().SIOCINQ) === 0) return this.closeNow('all-acknowledged', fd);
    if (state === 'CLOSE' && this.socket.readableEnded) return this.closeNow('peer-fin', fd);
  }

  peerEnded(): void {
    // The peer's FIN: once ours is out too, the close is complete in both directions. Or an RST
    // that followed data not yet read, which Node 20 and 22 also report as 'end': the fd then
    // reads CLOSE with ECONNRESET pending (Node 24 and later emit that 'error' instead).
    const fd = this.currentFd();
    if (fd >= 0) {
      try {
        const state = tcpState(fd);
        this.see(state);
        const pending = state === 'CLOSE' ? socketErrorOf(this.socket, fd) : 0;
        if (pending) return this.failed(errnoError(-pending, 'read'));
      } catch {
        /* decided below */
      }
    }
    if (this.finSentAt !== undefined && fd >= 0) this.closeNow('peer-fin', fd);
    else this.lookLater();
  }

  /** Closes the fd now that no RST can follow, and checks that none did. */
  private closeNow(reason: CloseReason, fd: number): void {
    // FIN_WAIT2, or CLOSE once TIME_WAIT began: our FIN, and so every byte, was acknowledged.
    const last = this.states.at(-1)?.state;
    const unackedAtClose = last === 'CLOSE' || last === 'FIN_WAIT2' ? 0 : this.kernelQueued(fd);
    if (reason === 'all-acknowledged') return this.closeAndVerify(unackedAtClose);
    this.socket.destroy();
    this.finish('graceful', reason, { unackedAtClose });
  }

  /**
   * From FIN_WAIT2 with nothing unread, close() leaves an orphan; if data arrived in the instant
   * between our look and close(), the kernel answered it with RST instead. Whether it did is seen
   * once for every such close in this turn of the loop: the kernel counts closes that sent an RST
   * (abortsAtClose); unchanged, none did; changed (by us or by another socket of the namespace),
   * each connection is looked up (an orphan is there, a socket the RST ended is not). (After the
   * peer's FIN nothing can arrive, so that path needs no look.)
   */
  private closeAndVerify(unackedAtClose: number): void {
    this.verifying = true;
    verifyLater(this, unackedAtClose);
    this.socket.destroy();
  }

  /** The verdict of closeAndVerify(): `clean` when the kernel counted no RST at close meanwhile. */
  verified(clean: boolean, unackedAtClose: number): void {
    this.verifying = false;
    if (!clean) {
      const orphan = orphanOf(this.tuple);
      if (orphan !== null) this.see(orphan?.state ?? 'CLOSED');
      if (orphan === undefined) return this.finish('reset-sent', 'data-at-close', { unackedAtClose });
    }
    this.finish('graceful', 'all-acknowledged', { unackedAtClose });
  }

  /** Resets now (deadline, discard limit, abort): what was still queued is reported. */
  private abortive(reason: CloseReason): void {
    if (this.settled) return;
    const fd = this.currentFd();
    const unackedAtClose = fd >= 0 ? this.kernelQueued(fd) : -1;
    const unsentInNode = this.socket.writableLength;
    if (fd >= 0) {
      try {
        reset(this.socket);
      } catch {
        this.socket.destroy();
      }
    }
    this.see('CLOSED');
    this.finish('reset-sent', reason, { unackedAtClose, unsentInNode });
  }

  failed(error: NodeJS.ErrnoException): void {
    if (this.settled || this.verifying) return;
    if (isPeerReset(error)) {
      this.see('CLOSED');
      return this.finish('reset-received', 'peer-reset', { error });
    }
    // An error of Node's own (a write after end(): ERR_STREAM_WRITE_AFTER_END) destroys the socket
    // without any RST: what happened is read from the kernel once Node closed the fd.
    if (this.currentFd() < 0) this.nodeClosed(error);
  }

  /**
   * Node closed the fd before we decided (the application destroyed the socket, Node did after an
   * error of its own, or after both FINs): what happened is what the kernel shows now. A closed
   * socket whose FIN went out is an orphan (FIN_WAIT1/2, CLOSING, LAST_ACK) or in TIME_WAIT: no
   * RST. One the kernel no longer has ended by an RST, unless the peer's FIN had come (LAST_ACK,
   * acknowledged at once on loopback).
   */
  nodeClosed(error: Error | undefined = this.socket.errored ?? undefined): void {
    if (this.settled || this.verifying) return;
    if (error && isPeerReset(error as NodeJS.ErrnoException)) return this.failed(error as NodeJS.ErrnoException);
    const extra: Partial<CloseReport> = error ? { error } : {};
    const lost = this.finSentAt === undefined ? Math.max(this.unsentInNode, this.socket.writableLength) : 0;
    const orphan = this.tuple ? orphanOf(this.tuple) : undefined; // no 4-tuple: it never connected
    if (orphan === null) return this.finish('reset-sent', 'closed-elsewhere', extra); // the lookup failed: assume the worst
    this.see(orphan?.state ?? 'CLOSED');
    const peerFin = this.socket.readableEnded || this.states.some((s) => PEER_FIN_SEEN.has(s.state));
    const noRst = orphan ? FIN_ORPHANS.has(orphan.state) : peerFin;
    if (!noRst) return this.finish('reset-sent', 'closed-elsewhere', extra);
    if (lost > 0) return this.finish('destroyed', 'closed-elsewhere', { ...extra, unsentInNode: lost });
    this.finish('graceful', peerFin && !error ? 'peer-fin' : 'closed-elsewhere', extra);
  }

  /** Bytes the kernel holds unacknowledged, sent or not (SIOCOUTQ); -1 if unreadable. */
  private kernelQueued(fd: number): number {
    try {
      return native().ioctlInt(fd, constants().SIOCOUTQ);
    } catch {
      return -1;
    }
  }

  // 4. Report.
  private finish(outcome: CloseReport['outcome'], reason: CloseReason, extra: Partial<CloseReport> = {}): void {
    if (this.settled) return;
    this.settled = true;
    looks.cancel(this);
    this.deadline.clear();
    // A destroyed socket's listeners go with it (and find this close settled meanwhile).
    if (!this.socket.destroyed) this.socket.off('data', onData).off('end', onEnd).off('finish', onFinish).off('close', onClose).off('error', onError);
    this.report = kernelReport(outcome, reason, this.bytesDiscarded, this.since(), this.finSentAt, this.states, extra);
    this.onDone(this.report);
    for (const resolve of this.waiting ?? []) resolve(this.report);
  }
}

/**
 * The report of a close made with the kernel's view (a lingering or an idle close): `total` ms
 * since it began, the FIN asked for at `finSentAt` (the flush until then, the linger after).
 */
function kernelReport(
  outcome: CloseReport['outcome'],
  reason: CloseReason,
  bytesDiscarded: number,
  total: number,
  finSentAt: number | undefined,
  states: CloseReport['states'],
  extra: Partial<CloseReport>,
): CloseReport {
  const flushEnd = finSentAt ?? total;
  const report: CloseReport = {
    outcome,
    reason,
    bytesDiscarded,
    unackedAtClose: extra.unackedAtClose ?? -1,
    unsentInNode: extra.unsentInNode ?? 0,
    durations: { flush: flushEnd, linger: total - flushEnd, total },
    states,
    kernelView: true,
  };
  if (extra.error) report.error = extra.error;
  return report;
}

/**
 * A connection in sock_diag after Node closed its fd: its orphan, `undefined` once gone, or `null`
 * without a 4-tuple or when the lookup failed (closes run it in event handlers, where a throw
 * would crash).
 */
function orphanOf(tuple: SocketTuple | undefined): ReturnType<typeof findSocket> | null {
  if (!tuple) return null;
  try {
    return findSocket(tuple);
  } catch {
    return null;
  }
}

// closeServer()'s close of idle connections -------------------------------------------------------

/**
 * The idle closes under way, by the due time of their next look: one look reads the states of all
 * the closes due then in one native call (tcpStates), instead of a timer, listeners and a look per
 * connection.
 */
const idleLooks = new DueLooks<IdleClose>(lookAtIdle);

function lookAtIdle(set: Set<IdleClose>): void {
  const due = [...set];
  const fds = new Int32Array(due.length);
  for (let i = 0; i < due.length; i++) fds[i] = due[i]!.openFd();
  const states = new Int32Array(due.length);
  native().tcpStates(fds, states);
  const now = performance.now();
  for (let i = 0; i < due.length; i++) due[i]!.look(states[i]!, now);
}

/**
 * @internal closeServer()'s close of an idle HTTP/1.1 keep-alive connection: no request in flight,
 * nothing queued in Node, nothing unread in the kernel, the HTTP parser already detached. The same
 * close and the same decisions as a lingering close (FIN, read and discard, close after the peer's
 * FIN or once everything is acknowledged and the peer was quiet, reset only at the deadline), made
 * for all such connections together: the FIN is one shutdown(2) (Node has nothing to flush);
 * nothing is read until bytes come (the peer's FIN costs no read: the kernel's state shows it); no
 * listener is added unless bytes come (then one 'data' function shared by all; what is read is
 * counted from `socket.bytesRead`); the HTTP server's 'error' listener and closeServer()'s 'close'
 * hook stay in charge of errors and closes; no timer of its own is armed; and the kernel's state
 * of every connection due for a look is read in one native call. Returns `undefined` when a close already
 * runs on the socket (then join it with `closeForServer()`). closeServer() calls `nodeClosed()`
 * when the socket closes under it.
 */
export function closeIdleForServer(socket: net.Socket, fd: number, tuple: SocketTuple | undefined, onDone: (report: CloseReport) => void): IdleClose | undefined {
  if (running.has(socket)) return undefined;
  const close = new IdleClose(socket, fd, tuple, onDone);
  running.set(socket, close);
  close.begin();
  return close;
}

/** Bytes after the FIN of an idle close: counted from `socket.bytesRead`, dropped here. */
function discard(): void {}

/** @internal One idle connection's close; see closeIdleForServer(). */
export class IdleClose implements RunningClose, ServerClose, Verifying {
  private readonly started = performance.now();
  /** `socket.bytesRead` when the FIN was asked for, and at the last look. */
  private readonly readAtFin: number;
  private lastRead: number;
  /** When data last arrived (as seen at a look), ms since the start; the quiet period counts from the start too. */
  private lastDataAt = 0;
  /** 0 once shutdown(2) sent the FIN; undefined if it failed (the peer's RST had come). */
  private finSentAt: number | undefined;
  private pollDelay = QUIET_MS;
  /** The due time of its next look (see DueLooks). */
  lookAt: number | undefined;
  private readonly states: CloseReport['states'] = [];
  private settled = false;
  private verifying = false;
  /** Whether Node reads the socket (else bytes that come wait in the kernel until a look sees them). */
  private reading = false;
  private report: CloseReport | undefined;
  private waiting: ((report: CloseReport) => void)[] | undefined;
  /** A later gracefulClose() on the same socket: its deadline and signals (made only then). */
  private deadline: CloseDeadline | undefined;

  constructor(
    private readonly socket: net.Socket,
    private readonly fd: number,
    private readonly tuple: SocketTuple | undefined,
    private readonly onDone: (report: CloseReport) => void,
  ) {
    this.readAtFin = socket.bytesRead;
    this.lastRead = this.readAtFin;
  }

  /**
   * FIN now (shutdown(2): Node has nothing queued). Nothing is read while nothing comes: the
   * socket is paused (Node's HTTP server, whose parser still holds the handle, stops its reads),
   * so the peer's FIN costs no read, and a look sees in the kernel (SIOCINQ) whether bytes came.
   * Where the pause does not stop the reads, or once bytes come, it reads and discards them.
   */
  begin(): void {
    const socket = this.socket;
    socket.pause();
    if ((socket as unknown as { _handle?: { reading?: boolean } | null })._handle?.reading !== false) this.readOn();
    try {
      shutdown(this.fd, 'write');
      this.finSentAt = 0;
    } catch {
      // ENOTCONN: the peer's RST came just now. The look (or Node's read of the error) says so.
    }
    idleLooks.schedule(this, this.started + QUIET_MS);
  }

  /**
   * Reads and discards from now on. The listener, one function shared by all, makes Node's HTTP
   * server hand the handle's reads back to JS (its wrapper of `socket.on` unconsumes it for a
   * 'data' listener); what is read is counted from `socket.bytesRead`.
   */
  private readOn(): void {
    this.reading = true;
    const socket = this.socket;
    socket.on('data', discard);
    socket.resume();
    ensureReading(socket);
  }

  get done(): Promise<CloseReport> {
    if (this.report) return Promise.resolve(this.report);
    return new Promise((resolve) => (this.waiting ??= []).push(resolve));
  }

  join(timeout: number, signal?: AbortSignal): void {
    if (this.settled) return;
    (this.deadline ??= new CloseDeadline((reason) => this.abortive(reason))).join(timeout, signal);
  }

  resetNow(reason: 'deadline' | 'aborted'): void {
    this.abortive(reason);
  }

  /** The fd while Node holds it open, else -1 (its close decides). */
  openFd(): number {
    return (this.socket as unknown as { _handle?: unknown })._handle ? this.fd : -1;
  }

  private see(state: TcpState | 'CLOSED', at: number): void {
    if (this.states.at(-1)?.state !== state) this.states.push({ state, at });
  }

  /** A look, with the state read for all due closes (or the kernel's error for it, negative). */
  look(value: number, now: number): void {
    this.lookAt = undefined;
    if (this.settled || this.verifying) return;
    const socket = this.socket;
    if (!(socket as unknown as { _handle?: unknown })._handle) return; // closed under us: 'close' decides
    const since = now - this.started;
    const read = socket.bytesRead;
    if (read !== this.lastRead) {
      this.lastRead = read;
      this.lastDataAt = since;
    }
    if (read - this.readAtFin > DEFAULT_MAX_DISCARD) return this.abortive('discard-limit');
    if (value < 0) return this.finish('reset-sent', 'closed-elsewhere', { error: errnoError(value, 'getsockopt') });
    const state = stateOrThrow(value);
    this.see(state, since);
    if (state === 'CLOSE') {
      // The peer's RST (its error), or its FIN after ours (TIME_WAIT began).
      const pending = socketErrorOf(socket, this.fd);
      if (pending) {
        socket.destroy();
        this.see('CLOSED', since);
        return this.finish('reset-received', 'peer-reset', { error: errnoError(-pending, 'read') });
      }
      if (socket.readableEnded || this.unread() === 0) {
        socket.destroy();
        return this.finish('graceful', 'peer-fin', { unackedAtClose: 0 });
      }
    } else if (state === 'FIN_WAIT2' && since - this.lastDataAt >= QUIET_MS && this.unread() === 0) {
      // Every byte and our FIN acknowledged, nothing unread, the peer quiet: closing leaves an orphan, no RST.
      this.verifying = true;
      verifyLater(this, 0);
      socket.destroy();
      return;
    }
    // Bytes waiting in the kernel (a request racing the FIN, or sent before the peer's FIN): read them.
    if (!this.reading && this.unread() !== 0) {
      this.readOn();
      this.lastDataAt = since;
    }
    const wait = Math.max(this.pollDelay, QUIET_MS - (since - this.lastDataAt));
    idleLooks.schedule(this, now + Math.min(wait, MAX_POLL_MS));
    this.pollDelay = Math.min(this.pollDelay * 2, MAX_POLL_MS);
  }

  private unread(): number {
    try {
      return native().ioctlInt(this.fd, constants().SIOCINQ);
    } catch {
      return -1;
    }
  }

  verified(clean: boolean, unackedAtClose: number): void {
    this.verifying = false;
    if (!clean) {
      const orphan = orphanOf(this.tuple);
      if (orphan !== null) this.see(orphan?.state ?? 'CLOSED', performance.now() - this.started);
      if (orphan === undefined) return this.finish('reset-sent', 'data-at-close', { unackedAtClose });
    }
    this.finish('graceful', 'all-acknowledged', { unackedAtClose });
  }

  /**
   * The socket closed before a look decided: the peer's FIN after ours (Node closes a socket whose
   * both directions ended), the peer's RST (the HTTP server's 'error' listener destroys it), or
   * the application or Node destroyed it. What happened is what the socket and, failing that,
   * the kernel say.
   */
  nodeClosed(): void {
    if (this.settled || this.verifying) return;
    const socket = this.socket;
    const since = performance.now() - this.started;
    const error = (socket.errored ?? undefined) as NodeJS.ErrnoException | undefined;
    if (error && isPeerReset(error)) {
      this.see('CLOSED', since);
      return this.finish('reset-received', 'peer-reset', { error });
    }
    if (socket.readableEnded && !error) return this.finish('graceful', 'peer-fin');
    const extra: Partial<CloseReport> = error ? { error } : {};
    const orphan = orphanOf(this.tuple);
    if (orphan === null) return this.finish('reset-sent', 'closed-elsewhere', extra);
    this.see(orphan?.state ?? 'CLOSED', since);
    const peerFin = socket.readableEnded || this.states.some((s) => PEER_FIN_SEEN.has(s.state));
    const noRst = orphan ? FIN_ORPHANS.has(orphan.state) : peerFin;
    if (!noRst) return this.finish('reset-sent', 'closed-elsewhere', extra);
    this.finish('graceful', peerFin && !error ? 'peer-fin' : 'closed-elsewhere', extra);
  }

  private abortive(reason: CloseReason): void {
    if (this.settled || this.verifying) return;
    const fd = this.openFd();
    let unackedAtClose = -1;
    if (fd >= 0) {
      try {
        unackedAtClose = native().ioctlInt(fd, constants().SIOCOUTQ);
      } catch {
        unackedAtClose = -1;
      }
      try {
        reset(this.socket);
      } catch {
        this.socket.destroy();
      }
    }
    this.see('CLOSED', performance.now() - this.started);
    this.finish('reset-sent', reason, { unackedAtClose, unsentInNode: this.socket.writableLength });
  }

  private finish(outcome: CloseReport['outcome'], reason: CloseReason, extra: Partial<CloseReport> = {}): void {
    if (this.settled) return;
    this.settled = true;
    idleLooks.cancel(this);
    this.deadline?.clear();
    const total = performance.now() - this.started;
    this.report = kernelReport(outcome, reason, this.socket.bytesRead - this.readAtFin, total, this.finSentAt, this.states, extra);
    this.onDone(this.report);
    for (const resolve of this.waiting ?? []) resolve(this.report);
  }
}
