/**
 * `watch(socket)`: follows one connection through its close, from the kernel's point of view,
 * until the kernel has forgotten it. Node's events and hooks on the socket's handle (its shutdown
 * and close) report most transitions; the fd is polled while the connection is closing (from this
 * end's FIN or the peer's 'end' to the close), and slowly otherwise as a safety net; once Node
 * closes it, sock_diag is asked by the 4-tuple and the socket's cookie, so TIME_WAIT, orphans and
 * the final disappearance are in the history, and a later connection on the same 4-tuple is not
 * mistaken for this one. The cookie and 4-tuple are read only for an end that can outlive its fd,
 * just before its FIN goes out. What polling missed is filled in by the pure model (`fsm.ts`) and
 * marked `'inferred'`.
 *
 * One timer serves every watched socket: each socket has its own due time in a heap, and a poll
 * touches only the sockets that are due (one batch read for their fds, one batch of sock_diag
 * lookups for the closed ones, in each one's network namespace). A TIME_WAIT is looked at again
 * only when its timer runs out.
 */
import { EventEmitter } from 'node:events';
import diagnosticsChannel from 'node:diagnostics_channel';
import fs from 'node:fs';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { debuglog } from 'node:util';
import { constants, native } from '../binding';
import {
  DIAG_MSG_LEN,
  ID_RECORD,
  isLost,
  isMiss,
  recordCookie,
  recordInNetns,
  recordNetns,
  recordOf,
  replyAt,
  sameTuple,
  socketTuple,
  type SocketTimer,
} from '../diag';
import { checkTimerMs, codedError, invalidArgType, outOfRange } from '../errors';
import { assertSocket, handleFd } from '../fd';
import { FIN_CHANNEL, OBSERVED_CHANNEL, RESET_CHANNEL, socketErrorOf } from '../ops';
import { stateName, type TcpState } from '../states';
import { stateOrThrow } from '../tcp-info';
import {
  createModel,
  LIFECYCLE_STATES,
  observe,
  outcomeOf,
  roleOf,
  type Anomaly,
  type CloseEvent,
  type CloseModel,
  type CloseOutcome,
  type CloseRole,
  type HistoryEntry,
  type LifecycleState,
  type Observation,
  type Source,
} from './fsm';

const debug = debuglog('finwait');

/** diagnostics_channel on which every transition of every watched socket is published. */
export const STATE_CHANNEL = 'finwait:socket:state';
const stateChannel = diagnosticsChannel.channel(STATE_CHANNEL);

/**
 * One transition, as emitted by a `Lifecycle` and published on `finwait:socket:state`. `from` is
 * the state before `to` in the history: a state inferred after the fact (the FIN_WAIT1 polling
 * missed before an fd read CLOSE) is emitted when inferred, after the later state it explains.
 */
export interface Transition {
  from: LifecycleState | undefined;
  to: LifecycleState;
  /** ms on `performance.now()`'s clock. */
  at: number;
  source: Source;
}

/** What `Lifecycle.done` resolves with once the kernel has forgotten the connection. */
export interface WatchResult {
  /** How it ended; `undefined` for a connection that never completed (e.g. refused). */
  outcome: CloseOutcome | undefined;
  /** Which side closed first; `undefined` if it never began to close (e.g. refused). */
  role: CloseRole | undefined;
  history: readonly HistoryEntry[];
  anomalies: readonly Anomaly[];
}

/** Options of `Lifecycle.until()`. */
export interface UntilOptions {
  /** ms to wait before rejecting with `ERR_FINWAIT_TIMEOUT`; default: no limit. */
  timeout?: number;
}

/** Where a watched socket is in its life, which decides how often it is looked at. */
type Phase =
  /** No fd yet (watched before connecting). */
  | 'pending'
  /** An fd Node holds, not closing: Node's events report what happens; a slow safety net. */
  | 'open'
  /** From this end's FIN or the peer's 'end' (or a close state read) to the close: polled fast. */
  | 'closing'
  /** Node closed the fd: sock_diag, when the kernel's timer says something can have changed. */
  | 'gone';

/**
 * A network namespace other than this thread's, while a socket of it is watched: a netlink socket
 * made inside it (for the lookups there; it also keeps the namespace alive).
 */
interface Netns {
  nl: number;
  key: string;
  users: number;
}

interface Watched {
  lifecycle: Lifecycle;
  /** The socket, until it is destroyed and its fd closed (then nothing is asked of it). */
  socket: net.Socket | undefined;
  /** The fd the socket had when last seen, -1 before it has one. */
  fd: number;
  /**
   * The connection's name for sock_diag lookups (a `sockDiagFind` record): its 4-tuple, and its
   * `SO_COOKIE`, read while the fd was open and before TIME_WAIT could begin (a TIME_WAIT socket
   * copies the cookie its connection had by then), so that a later connection on the same 4-tuple
   * is not taken for it. Read only when the connection can outlive its fd: just before this end
   * sends its FIN (Node's shutdown or close, `shutdown()`), or when a read shows the FIN went out
   * by another way; an end whose peer closed first, and that reads CLOSE when Node closes it, is
   * never looked up. `undefined` until then.
   */
  id: Uint8Array | undefined;
  /** Its network namespace, if not this thread's (a lab host's): lookups are made there. */
  ns: Netns | undefined;
  /** The fd read CLOSE: it can show nothing more, so it is not read again. */
  fdClose: boolean;
  /** The state, unread bytes and SO_LINGER when Node closed the fd (from the close hook). */
  closedWith?: { state: LifecycleState | undefined; unread: number; linger0: boolean };
  phase: Phase;
  /** When the socket is next looked at (ms, `performance.now()`); its key in the heap. */
  due: number;
  /** Its index in the heap, -1 when not queued. */
  slot: number;
  /** The fast cadence's current step (ms): 1 after a change, doubling to 100 while nothing changes. */
  step: number;
  /** Its handle's shutdown and close are hooked. */
  hooked: boolean;
  /** finwait's `shutdown()` sent this end's FIN (at once: no Node event says so). */
  rawFin: boolean;
  /** What sock_diag last showed after Node closed the fd, and when (ms). */
  lastDiag?: DiagSighting;
  /** The lifecycle ended: nothing more is looked at. */
  ended: boolean;
}

/** The fast cadence (closing fds, transient orphans): 1 ms after a change, doubling to 100 ms. */
const FAST_MS = 1;
const SLOW_MS = 100;
/** The safety net for an open fd Node reads: its FIN and RST come as 'end' and 'error'. */
const SAFETY_MS = 1000;
/** The safety net for an open fd Node is not reading (paused): a FIN or RST makes no event. */
const PAUSED_MS = 100;
/** Looked at this long after a sock_diag timer's expiry, so that the kernel has acted on it. */
const TIMER_MARGIN_MS = 20;
/** Looked at again this often while an expired timer has not fired yet (long timers fire late). */
const LATE_MS = 250;
/** A poll also takes the sockets due within this much: a timer can fire a little early. */
const EARLY_MS = 1;
/** States in which the connection is not closing (yet). */
const NOT_CLOSING: ReadonlySet<LifecycleState> = new Set(['SYN_SENT', 'SYN_RECV', 'NEW_SYN_RECV', 'ESTABLISHED', 'LISTEN']);
/** States in which our FIN has gone out. */
const FIN_SENT: ReadonlySet<LifecycleState> = new Set(['FIN_WAIT1', 'FIN_WAIT2', 'CLOSING', 'LAST_ACK']);
/** States with this end's FIN sent from which TIME_WAIT can follow: the connection must be named by now. */
const BEFORE_TIME_WAIT: ReadonlySet<LifecycleState> = new Set(['FIN_WAIT1', 'FIN_WAIT2', 'CLOSING']);
/** States from which a close with SO_LINGER {1, 0} always sends an RST (tcp_need_reset()). */
const RESET_FROM: ReadonlySet<LifecycleState> = new Set(['ESTABLISHED', 'CLOSE_WAIT', 'FIN_WAIT1', 'FIN_WAIT2', 'SYN_RECV']);
/** States in which closing the fd can send an RST (unread data, SO_LINGER {1, 0}). */
const UNSYNCHRONIZED: ReadonlySet<LifecycleState> = new Set(['CLOSE', 'LISTEN', 'SYN_SENT', 'TIME_WAIT']);

/** A watched socket's watcher, on the socket itself (cheaper than a WeakMap, whose entries cost every GC). */
const kWatched = Symbol('finwait.watched');
type WithWatcher = { [kWatched]?: Watched };
/** How many sockets are followed. */
let watchedCount = 0;
/** Watched sockets by the fd Node holds for them (an fd is not reused while it is open). */
const byFd: (Watched | undefined)[] = [];
/** Every watched socket, a binary min-heap on `due`. */
const heap: Watched[] = [];
let timer: NodeJS.Timeout | undefined;
/** When the armed timer fires (ms), Infinity when none is. */
let timerAt = Infinity;
let fdBuffer = new Int32Array(64);
let stateBuffer = new Int32Array(64);
/** The network namespaces of watched sockets that are not this thread's, by their cookie. */
const namespaces = new Map<string, Netns>();
/** The netlink socket for lookups in this thread's namespace, -1 when none is open. */
let homeNl = -1;
/** This thread's network namespace's cookie (SO_NETNS_COOKIE) as `sockDiagId` writes it, read on first use. */
let homeNetns: Uint8Array | undefined;

/**
 * Throws unless `state` is a state a lifecycle can be in (a kernel state name or `'CLOSED'`): a
 * misspelt one would be waited for, or asserted absent, forever.
 */
export function checkLifecycleState(state: unknown, name: string): asserts state is LifecycleState {
  if (typeof state !== 'string') throw invalidArgType(name, 'a TCP state name or CLOSED', state);
  if (!LIFECYCLE_STATES.includes(state as LifecycleState)) throw outOfRange(name, `one of ${LIFECYCLE_STATES.join(', ')}`, state);
}

function notReached(state: LifecycleState): Error {
  return codedError('ERR_FINWAIT_STATE_NOT_REACHED', `The connection ended without passing through ${state}`);
}

/** Follows a connection through its close lifecycle. */
export class Lifecycle extends EventEmitter {
  #model: CloseModel = createModel();
  #done: Promise<WatchResult> | undefined;
  #resolveDone: ((result: WatchResult) => void) | undefined;
  #ended = false;
  /** The watcher's record of the socket (`Watched`), forgotten when the lifecycle ends. */
  #watcher: unknown;

  /** @internal use `watch(socket)`. */
  constructor(watcher?: unknown) {
    super();
    this.#watcher = watcher;
  }

  /** @internal */
  watcher(): unknown {
    return this.#watcher;
  }

  /** The latest state (`'CLOSE'` while the fd read CLOSE and sock_diag has not said what followed). */
  get state(): LifecycleState | undefined {
    return this.#model.state;
  }

  /** Every state the connection passed through, with when and how it became known. */
  get history(): readonly HistoryEntry[] {
    return this.#model.history;
  }

  /** Observations the RFC machine forbids, kept, never dropped. */
  get anomalies(): readonly Anomaly[] {
    return this.#model.anomalies;
  }

  /** Resolves when the kernel has forgotten the connection. */
  get done(): Promise<WatchResult> {
    // Made on first use: most watchers never ask.
    this.#done ??= this.#ended
      ? Promise.resolve(this.#result())
      : new Promise((resolve) => (this.#resolveDone = resolve));
    return this.#done;
  }

  #result(): WatchResult {
    const { history, anomalies } = this.#model;
    const states = history.map((h) => h.state);
    return { outcome: outcomeOf(history), role: roleOf(states), history, anomalies };
  }

  /**
   * Resolves with the history entry once `state` is reached, or at once if it was already passed;
   * rejects with `ERR_FINWAIT_TIMEOUT` after `timeout` ms, and with `ERR_FINWAIT_STATE_NOT_REACHED`
   * if the connection ends without passing through it.
   */
  until(state: LifecycleState, options: UntilOptions = {}): Promise<HistoryEntry> {
    let timeout: number | undefined;
    try {
      checkLifecycleState(state, 'state');
      if (options === null || typeof options !== 'object') throw invalidArgType('options', 'of type object', options);
      if (options.timeout !== undefined) timeout = checkTimerMs(options.timeout, 'options.timeout');
    } catch (error) {
      return Promise.reject(error);
    }
    const seen = (): HistoryEntry | undefined => this.history.find((h) => h.state === state);
    const already = seen();
    if (already) return Promise.resolve(already);
    // The lifecycle ended without it: no transition can come any more.
    if (this.#ended) return Promise.reject(notReached(state));
    return new Promise((resolve, reject) => {
      let deadline: NodeJS.Timeout | undefined;
      const cleanup = (): void => {
        clearTimeout(deadline);
        this.off('transition', onTransition);
        this.off('end', onEnd);
      };
      const onTransition = (): void => {
        const entry = seen();
        if (entry) {
          cleanup();
          resolve(entry);
        }
      };
      const onEnd = (): void => {
        cleanup();
        reject(notReached(state));
      };
      this.on('transition', onTransition).on('end', onEnd);
      if (timeout !== undefined) {
        deadline = setTimeout(() => {
          cleanup();
          reject(codedError('ERR_FINWAIT_TIMEOUT', `${state} not reached within ${timeout} ms (state: ${this.state})`));
        }, timeout);
      }
    });
  }

  /** @internal */
  model(): CloseModel {
    return this.#model;
  }

  /** @internal */
  observe(observation: Observation): boolean {
    if (this.#ended) return false;
    const before = this.#model;
    // A state seen again changes nothing (the model's own rule, taken without a call).
    if ('state' in observation && observation.state === before.state) return false;
    const { model, entries, anomaly } = observe(before, observation);
    this.#model = model;
    if (anomaly) debug('anomaly: %s', anomaly.reason);
    if (entries.length > 0 && (stateChannel.hasSubscribers || this.listenerCount('transition') > 0)) {
      for (const entry of entries) {
        const index = model.history.indexOf(entry);
        const from = index > 0 ? model.history[index - 1]?.state : undefined;
        const transition: Transition = { from, to: entry.state, at: entry.at, source: entry.source };
        this.emit('transition', transition);
        if (stateChannel.hasSubscribers) stateChannel.publish({ lifecycle: this, ...transition });
      }
    }
    if (model.state === 'CLOSED') this.end();
    return entries.length > 0 || anomaly !== undefined;
  }

  /** @internal */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    if (this.#watcher !== undefined) forget(this.#watcher as Watched);
    this.#resolveDone?.(this.#result());
    this.emit('end');
  }
}

function now(): number {
  return performance.now();
}

// ---------------------------------------------------------------------------------------------
// The schedule: a binary min-heap of the watched sockets on `due`, and one timer for its head.

function swap(i: number, j: number): void {
  const a = heap[i]!;
  const b = heap[j]!;
  heap[i] = b;
  heap[j] = a;
  a.slot = j;
  b.slot = i;
}

function siftUp(i: number): void {
  while (i > 0) {
    const parent = (i - 1) >> 1;
    if (heap[parent]!.due <= heap[i]!.due) return;
    swap(i, parent);
    i = parent;
  }
}

function siftDown(i: number): void {
  for (;;) {
    const left = 2 * i + 1;
    if (left >= heap.length) return;
    const right = left + 1;
    const least = right < heap.length && heap[right]!.due < heap[left]!.due ? right : left;
    if (heap[i]!.due <= heap[least]!.due) return;
    swap(i, least);
    i = least;
  }
}

/** Queues `w` to be looked at at `due` (ms), replacing its previous due time. */
function scheduleAt(w: Watched, due: number): void {
  const before = w.due;
  w.due = due;
  if (w.slot < 0) {
    w.slot = heap.length;
    heap.push(w);
    siftUp(w.slot);
  } else if (due < before) {
    siftUp(w.slot);
  } else {
    siftDown(w.slot);
  }
}

function unqueue(w: Watched): void {
  const i = w.slot;
  if (i < 0) return;
  const last = heap.pop()!;
  w.slot = -1;
  if (last !== w) {
    heap[i] = last;
    last.slot = i;
    siftUp(i);
    siftDown(last.slot);
  }
}

/** Arms the timer for the head of the heap; a timer already due sooner is never postponed. */
function arm(): void {
  const first = heap[0];
  if (first === undefined) {
    clearTimeout(timer);
    timer = undefined;
    timerAt = Infinity;
    return;
  }
  const at = now();
  // A head already due (the loop was busy, so the timer is late) is served by the pending timer.
  const want = Math.max(first.due, at + 1);
  if (timer !== undefined && timerAt <= want) return;
  clearTimeout(timer);
  const delay = Math.ceil(want - at);
  timerAt = at + delay;
  timer = setTimeout(poll, delay).unref();
}

/** Something happened to `w`: look at it soon, and keep looking fast while it changes. */
function wake(w: Watched): void {
  if (w.ended) return;
  w.step = FAST_MS;
  const due = now() + FAST_MS;
  if (w.slot < 0 || due < w.due) scheduleAt(w, due);
  arm();
}

/** After a look at an fd Node holds: when to look again. */
function scheduleOpen(w: Watched, at: number, changed: boolean): void {
  if (w.phase === 'closing' && !w.fdClose) {
    w.step = changed ? FAST_MS : Math.min(w.step * 2, SLOW_MS);
    scheduleAt(w, at + w.step);
  } else {
    // A paused socket's FIN or RST makes no event; nor does anything on an fd that read CLOSE,
    // whose 'close' will come (the net stays in case Node's close escaped the hook).
    scheduleAt(w, at + (w.socket?.readableFlowing === true || w.fdClose ? SAFETY_MS : PAUSED_MS));
  }
}

/** Folds a state read on the fd into the model; a close state starts the closing phase. */
function observeFd(w: Watched, state: TcpState, at: number): boolean {
  if (state === 'CLOSE') w.fdClose = true;
  if (w.phase === 'open' && !NOT_CLOSING.has(state)) w.phase = 'closing';
  return w.lifecycle.observe({ state, source: 'kernel', at });
}

/** One state read, not published on `finwait:socket:observed` (watch() would hear itself). */
function readState(fd: number): TcpState {
  return stateOrThrow(native().tcpState(fd));
}

/**
 * The first look at an fd: its state (which also says it is a TCP socket: anything else throws),
 * and its name for sock_diag at once if its FIN went out already.
 */
function start(w: Watched, fd: number, at: number): void {
  const state = readState(fd);
  observeFd(w, state, at);
  if (state === 'CLOSE' || BEFORE_TIME_WAIT.has(state)) identify(w, fd, at);
}

/**
 * Names the connection behind `fd` for sock_diag (its 4-tuple and the cookie a TIME_WAIT of it
 * will have) and reads its state, in one native call; returns the state. An fd that already
 * reads CLOSE has no peer to name: Node's cached 4-tuple then, if it has one, without a cookie.
 */
function identify(w: Watched, fd: number, at: number): TcpState {
  const id = new Uint8Array(ID_RECORD);
  const connected = native().sockDiagId(fd, id);
  const state = stateOrThrow(id[1]!);
  if (connected) {
    w.id = id;
    w.ns = netnsOf(id, fd);
  }
  observeFd(w, state, at);
  if (!connected && state === 'CLOSE' && w.id === undefined && !w.ended) {
    const tuple = w.socket && socketTuple(w.socket);
    w.id = tuple && recordOf(tuple);
  }
  return state;
}

/**
 * Names at once a connection whose handle could not be hooked (another library hooked it first):
 * its FIN would go out unseen, and only 'close' would say that the fd is gone.
 */
function nameUnhooked(w: Watched, fd: number, at: number): void {
  if (!w.hooked && w.id === undefined && !w.ended) identify(w, fd, at);
}

/**
 * Names `w`'s connection unless it is named already or its peer closed first (then this end
 * cannot reach TIME_WAIT, and the fd's last read says what lookups it needs): just before this
 * end sends its FIN.
 */
function identifyBeforeFin(w: Watched, fd: number): void {
  if (w.id !== undefined || w.ended || fd < 0) return;
  const settled = w.lifecycle.model().settled;
  if (settled === 'CLOSE_WAIT' || settled === 'LAST_ACK') return;
  identify(w, fd, now());
}

/** The namespace of a socket whose `sockDiagId` record is `id`: `undefined` if it is this thread's. */
function netnsOf(id: Uint8Array, fd: number): Netns | undefined {
  homeNetns ??= new Uint8Array(new BigUint64Array([native().netnsCookie()]).buffer);
  if (recordInNetns(id, homeNetns)) return undefined;
  const key = recordNetns(id)!;
  let ns = namespaces.get(key);
  if (ns === undefined) {
    const nsFd = native().socketNetns(fd);
    try {
      ns = { nl: native().sockDiagSocket(nsFd), key, users: 0 };
    } finally {
      fs.closeSync(nsFd);
    }
    namespaces.set(key, ns);
  }
  ns.users++;
  return ns;
}

function releaseNetns(w: Watched): void {
  const ns = w.ns;
  w.ns = undefined;
  if (ns === undefined || --ns.users > 0) return;
  namespaces.delete(ns.key);
  fs.closeSync(ns.nl);
}

function closeHomeNl(): void {
  if (homeNl < 0) return;
  const nl = homeNl;
  homeNl = -1;
  fs.closeSync(nl);
}

/**
 * The fd Node holds for `w` now; notes a new one (the hooks, and the first look unless `look` is
 * false: 'connect' said ESTABLISHED).
 */
function noteFd(w: Watched, fd: number, at: number, look = true): boolean {
  if (w.fd === fd) return false;
  if (w.fd >= 0 && byFd[w.fd] === w) byFd[w.fd] = undefined;
  const first = w.fd < 0;
  w.fd = fd;
  byFd[fd] = w;
  if (first) {
    hookHandle(w);
    if (w.phase === 'pending') w.phase = 'open';
    if (look) start(w, fd, at);
    nameUnhooked(w, fd, at);
    return true;
  }
  return false;
}

/** The fd is gone: from now on, sock_diag. */
function toGone(w: Watched): void {
  if (w.phase === 'gone') return;
  w.phase = 'gone';
  w.step = FAST_MS;
  if (w.fd >= 0 && byFd[w.fd] === w) byFd[w.fd] = undefined;
  // Its fd is closed: the socket can be collected while the connection is followed (60 s of
  // TIME_WAIT); its listeners stay, and ignore an ended watcher.
  if (w.socket?.destroyed) w.socket = undefined;
}

/** The timer: looks at every socket that is due, then arms the timer for the next one. */
function poll(): void {
  timer = undefined;
  timerAt = Infinity;
  try {
    pollDue(now());
  } catch (error) {
    // A timer callback must not throw into the process; the next poll tries again.
    debug('poll: %s', (error as Error).message);
  }
  arm();
}

function pollDue(at: number): void {
  const live: Watched[] = [];
  const gone: Watched[] = [];
  while (heap.length > 0 && heap[0]!.due <= at + EARLY_MS) {
    const w = heap[0]!;
    unqueue(w);
    try {
      const socket = w.socket;
      const fd = socket === undefined || w.phase === 'gone' ? -1 : handleFd(socket);
      if (fd >= 0) {
        if (noteFd(w, fd, at) || w.fdClose) scheduleOpen(w, at, true);
        else live.push(w);
      } else if (w.fd >= 0 || socket === undefined || socket.destroyed || w.phase === 'gone') {
        toGone(w);
        // Destroyed before it ever had a connection: nothing reached the kernel, or nothing to ask.
        if (w.id === undefined) w.lifecycle.end();
        else gone.push(w);
      } else {
        // Not connected yet: 'connect' and 'error' will say what happens; look now and then.
        w.step = Math.min(w.step * 2, SLOW_MS);
        scheduleAt(w, at + w.step);
      }
    } catch (error) {
      debug('poll: %s', (error as Error).message);
      if (!w.ended) scheduleAt(w, at + SLOW_MS);
    }
  }
  if (gone.length > 0) lookUp(gone, at);
  if (live.length > 0) readFds(live, at);
}

/** One batch read of the states of fds Node holds. */
function readFds(live: Watched[], at: number): void {
  if (fdBuffer.length < live.length) {
    fdBuffer = new Int32Array(2 * live.length);
    stateBuffer = new Int32Array(2 * live.length);
  }
  for (let i = 0; i < live.length; i++) fdBuffer[i] = live[i]!.fd;
  native().tcpStates(fdBuffer.subarray(0, live.length), stateBuffer);
  for (let i = 0; i < live.length; i++) {
    const w = live[i]!;
    const state = stateBuffer[i]! > 0 ? stateName(stateBuffer[i]!) : undefined;
    let changed = state !== undefined && observeFd(w, state, at);
    // A FIN that went out by a way no hook saw (another library's shutdown(2)): named now, before
    // TIME_WAIT can begin, if it has not begun yet.
    if (w.id === undefined && state !== undefined && BEFORE_TIME_WAIT.has(state) && !w.ended) {
      try {
        changed = identify(w, w.fd, at) !== state || changed;
      } catch (error) {
        debug('poll: %s', (error as Error).message);
      }
    }
    if (!w.ended) scheduleOpen(w, at, changed);
  }
}

let requests = new Uint8Array(64 * ID_RECORD);
let replies = new Uint8Array(64 * DIAG_MSG_LEN);
let statuses = new Int32Array(64);

/** sock_diag lookups of sockets whose fd Node closed: one batch per network namespace. */
function lookUp(gone: Watched[], at: number): void {
  if (statuses.length < gone.length) {
    requests = new Uint8Array(2 * gone.length * ID_RECORD);
    replies = new Uint8Array(2 * gone.length * DIAG_MSG_LEN);
    statuses = new Int32Array(2 * gone.length);
  }
  // Nearly always one namespace, this one: sort only when there are more.
  if (gone.some((w) => w.ns !== gone[0]!.ns)) gone.sort((a, b) => (a.ns?.nl ?? -1) - (b.ns?.nl ?? -1));
  const view = new DataView(replies.buffer);
  for (let first = 0; first < gone.length; ) {
    const ns = gone[first]!.ns;
    let end = first;
    while (end < gone.length && gone[end]!.ns === ns) {
      requests.set(gone[end]!.id!, (end - first) * ID_RECORD);
      end++;
    }
    const count = end - first;
    try {
      if (ns === undefined && homeNl < 0) homeNl = native().sockDiagSocket();
      native().sockDiagFind(ns?.nl ?? homeNl, requests, replies, statuses.subarray(0, count));
    } catch (error) {
      // The netlink socket failed (EMFILE, ENOMEM): every one of them is asked again soon, the
      // home one through a new socket.
      debug('sock_diag: %s', (error as Error).message);
      if (ns === undefined) closeHomeNl();
      for (let i = first; i < end; i++) scheduleAt(gone[i]!, at + SLOW_MS);
      first = end;
      continue;
    }
    for (let i = 0; i < count; i++) {
      const w = gone[first + i]!;
      const status = statuses[i]!;
      try {
        if (status === 1 && sameTuple(requests, i, replies, i)) followGone(w, replyAt(view, i), at);
        else if (status === 1 || isMiss(status)) followGone(w, undefined, at);
        else {
          if (!isLost(status)) debug('sock_diag lookup: errno %d', -status);
          w.step = Math.min(w.step * 2, SLOW_MS);
          scheduleAt(w, at + w.step);
        }
      } catch (error) {
        debug('sock_diag lookup: %s', (error as Error).message);
        if (!w.ended) scheduleAt(w, at + SLOW_MS);
      }
    }
    first = end;
  }
}

/** After Node closed the fd: the connection as sock_diag showed it, or gone (`undefined`). */
function followGone(w: Watched, seen: { state: TcpState; timer: SocketTimer } | undefined, at: number): void {
  const { lifecycle } = w;
  if (!seen) {
    if (orphanTimedOut(w.lastDiag, at)) lifecycle.observe({ event: 'fin-wait2-timeout', source: 'diag', at });
    // FIN_WAIT1, CLOSING and FIN_WAIT2 end in a TIME_WAIT that sock_diag shows for 60 s, or by
    // FIN_WAIT2's timer: an orphan gone from them otherwise was reset (sock_diag cannot tell the
    // peer's RST from the kernel's own abort of an orphan; the peer's is by far the commoner).
    else if (BEFORE_TIME_WAIT.has(w.lastDiag?.state ?? (lifecycle.model().settled as LifecycleState))) {
      lifecycle.observe({ event: 'rst-received', source: 'diag', at });
    }
    if (!lifecycle.observe({ state: 'CLOSED', source: 'diag', at })) lifecycle.end();
    return;
  }
  w.lastDiag = { state: seen.state, timer: seen.timer, at };
  const changed = lifecycle.observe({ state: seen.state, source: 'diag', at });
  if (w.ended) return;
  const { kind, expiresMs } = seen.timer;
  if (seen.state === 'TIME_WAIT' || (seen.state === 'FIN_WAIT2' && kind !== 'off')) {
    // Nothing more happens before the timer runs out, but for a TIME_WAIT an RST (RFC 1337) or
    // a new SYN on its 4-tuple, seen when it is next looked at. A FIN_WAIT2 orphan goes on to
    // TIME_WAIT when the peer's FIN comes: looked at at least every second.
    const wait = expiresMs > 0 ? expiresMs + TIMER_MARGIN_MS : LATE_MS;
    scheduleAt(w, at + (seen.state === 'FIN_WAIT2' ? Math.min(wait, SAFETY_MS) : wait));
  } else {
    // FIN_WAIT1, CLOSING, LAST_ACK: short, unless segments are lost.
    w.step = changed ? FAST_MS : Math.min(w.step * 2, SLOW_MS);
    scheduleAt(w, at + w.step);
  }
}

/** @internal What sock_diag showed of a connection after its fd closed, and when (ms). */
export interface DiagSighting {
  state: TcpState;
  timer: SocketTimer;
  at: number;
}

/**
 * @internal True if a connection that just vanished from sock_diag was last seen there as an
 * orphaned FIN_WAIT2 whose timer (TCP_LINGER2, tcp_fin_timeout) had run out by now: the kernel
 * dropped it without the peer's FIN. Had the FIN come, TIME_WAIT would still be listed for 60 s.
 */
export function orphanTimedOut(last: DiagSighting | undefined, at: number): boolean {
  if (!last || last.state !== 'FIN_WAIT2' || last.timer.kind === 'off') return false;
  return at >= last.at + last.timer.expiresMs;
}

// ---------------------------------------------------------------------------------------------
// Node's side: the close hook and the socket's events.

/**
 * Hooks the socket's handle (false where it cannot: no handle yet, or hooked by someone else).
 * Its `shutdown` (Node's end()) names the connection before the FIN goes out and starts the fast
 * cadence. Its `close` takes a last look just before Node closes the fd: the kernel decides
 * between FIN and RST at that moment, on unread bytes and SO_LINGER {1, 0}. One state read (none
 * once the fd read CLOSE, which it reads for good), and SO_LINGER and SIOCINQ only in a state
 * where they decide.
 */
function hookHandle(w: Watched): boolean {
  if (w.hooked) return true;
  const socket = w.socket!;
  type Method = (...args: unknown[]) => unknown;
  const handle = (socket as unknown as { _handle?: { close?: Method; shutdown?: Method } | null })._handle;
  if (!handle || typeof handle.close !== 'function' || typeof handle.shutdown !== 'function') return false;
  if (Object.hasOwn(handle, 'close') || Object.hasOwn(handle, 'shutdown')) return false;
  w.hooked = true;
  const { close, shutdown } = handle;
  // Node's end() (its _final) calls shutdown just before libuv sends the FIN.
  handle.shutdown = function (this: unknown, ...args: unknown[]) {
    try {
      identifyBeforeFin(w, handleFd(socket));
    } catch (error) {
      debug('shutdown hook: %s', (error as Error).message);
    }
    closing(w);
    return shutdown.apply(this, args);
  };
  handle.close = function (this: unknown, ...args: unknown[]) {
    try {
      const fd = handleFd(socket);
      if (fd >= 0 && !w.ended) {
        let state: TcpState = 'CLOSE';
        // One read (none once the fd read CLOSE); a socket not named yet is named by the same call
        // if it still has a peer: closing the fd sends its FIN or RST. A CLOSE after LAST_ACK ends it here.
        if (w.id === undefined && !w.fdClose) state = identify(w, fd, now());
        else if (!w.fdClose) observeFd(w, (state = readState(fd)), now());
        if (w.ended) return close.apply(this, args);
        let unread = 0;
        let linger0 = false;
        if (!UNSYNCHRONIZED.has(state)) {
          const { onoff, linger } = native().getLinger(fd);
          linger0 = onoff !== 0 && linger === 0;
          if (!linger0) unread = native().ioctlInt(fd, constants().SIOCINQ);
        }
        w.closedWith = { state, unread, linger0 };
      }
    } catch (error) {
      debug('close hook: %s', (error as Error).message);
    }
    const result = close.apply(this, args);
    // The fd is closed now (libuv closes it at once; 'close' comes on a later turn, possibly after
    // a poll): what closing it did is known already.
    if (!w.ended) {
      closed(w);
      toGone(w);
      wake(w);
    }
    return result;
  };
  return true;
}

/** What closing the fd in `state` did, given what the close hook saw. */
function closeEvent(w: Watched): CloseEvent | undefined {
  const seen = w.closedWith;
  if (!seen || seen.state === undefined) return undefined;
  const synchronized = !UNSYNCHRONIZED.has(seen.state);
  if (synchronized && (seen.linger0 || seen.unread > 0)) return 'rst-sent';
  if (seen.state === 'ESTABLISHED' || seen.state === 'CLOSE_WAIT') return 'close';
  return undefined;
}

function onEnd(this: net.Socket): void {
  // Node says 'end' for a FIN, and also for an RST that came while bytes were queued (libuv
  // treats the hang-up after a partial read as end-of-file): the kernel tells them apart.
  const w = (this as WithWatcher)[kWatched];
  if (!w || w.ended) return;
  const fd = handleFd(this);
  if (fd < 0) return;
  const { lifecycle } = w;
  try {
    const at = now();
    noteFd(w, fd, at);
    if (w.phase === 'open') w.phase = 'closing';
    const state = w.fdClose ? 'CLOSE' : readState(fd);
    // CLOSE after our FIN went out is TIME_WAIT; before it, only an RST ends a connection here.
    const finSent =
      this.writableFinished ||
      w.rawFin ||
      FIN_SENT.has(lifecycle.model().settled as LifecycleState);
    // After our FIN, CLOSE is TIME_WAIT unless an RST came: then ECONNRESET is pending (the
    // socket's error, taken once for every finwait caller). Node 24 and later emit it as 'error'.
    if (state === 'CLOSE' && (!finSent || socketErrorOf(this, fd) !== 0)) {
      lifecycle.observe({ event: 'rst-received', source: 'event', at });
    }
    observeFd(w, state, at);
  } catch (error) {
    debug('end: %s', (error as Error).message);
  }
  wake(w);
}

function onFinish(this: net.Socket): void {
  // Our FIN went out (Node's end() called shutdown(2)), where the handle could not be hooked.
  const w = (this as WithWatcher)[kWatched];
  if (w && !w.ended) closing(w);
}

/** This end's FIN is going out: FIN_WAIT1 or LAST_ACK, then whatever the peer does. Polled fast. */
function closing(w: Watched): void {
  if (w.ended) return;
  if (w.phase === 'open' || w.phase === 'pending') w.phase = 'closing';
  wake(w);
}

function onError(this: net.Socket, error: NodeJS.ErrnoException): void {
  const w = (this as WithWatcher)[kWatched];
  if (!w || w.ended) return;
  const event: CloseEvent | undefined =
    error.code === 'ECONNRESET' || error.code === 'EPIPE' || error.code === 'ECONNREFUSED'
      ? 'rst-received'
      : error.code === 'ETIMEDOUT'
        ? 'timeout'
        : undefined;
  if (event) w.lifecycle.observe({ event, source: 'event', at: now() });
  wake(w);
}

/** Records what closing the fd did (once), from what the close hook saw. */
function closed(w: Watched): void {
  const event = closeEvent(w);
  w.closedWith = undefined;
  if (event) w.lifecycle.observe({ event, source: 'event', at: now() });
}

function onClose(this: net.Socket): void {
  const w = (this as WithWatcher)[kWatched];
  if (!w || w.ended) return;
  closed(w);
  toGone(w);
  wake(w);
}

function onConnect(this: net.Socket): void {
  const w = (this as WithWatcher)[kWatched];
  if (!w || w.ended) return;
  // 'connect' means the handshake completed, a state polling may have missed.
  const at = now();
  w.lifecycle.observe({ state: 'ESTABLISHED', source: 'event', at });
  const fd = handleFd(this);
  try {
    // Watched while connecting: its fd, unless a poll noted it already.
    if (fd >= 0) noteFd(w, fd, at, false);
  } catch (error) {
    debug('connect: %s', (error as Error).message);
  }
  if (w.ended) return;
  scheduleOpen(w, at, true);
  arm();
}

/** The class of the socket's libuv handle (`'TCP'`, `'Pipe'`), `undefined` without one. */
function socketHandleKind(socket: net.Socket): string | undefined {
  const handle = (socket as unknown as { _handle?: object | null })._handle;
  return handle ? handle.constructor.name : undefined;
}

/** Stops following `w`, once its lifecycle ended. */
function forget(w: Watched): void {
  w.ended = true;
  // A destroyed socket emits nothing more that matters (the handlers ignore an ended watcher).
  if (w.socket && !w.socket.destroyed) {
    w.socket.off('end', onEnd).off('finish', onFinish).off('error', onError).off('close', onClose).off('connect', onConnect);
  }
  w.socket = undefined;
  releaseNetns(w);
  if (--watchedCount === 0) closeHomeNl();
  unqueue(w);
  if (byFd[w.fd] === w) byFd[w.fd] = undefined;
  if (heap.length === 0) arm();
}

/** @internal For tests: whether the shared poller has a timer scheduled, and how many sockets it follows. */
export function pollerStatus(): { scheduled: boolean; watched: number } {
  return { scheduled: timer !== undefined, watched: watchedCount };
}

/**
 * @internal For tests: what the watcher of `lifecycle` knows of its socket (the cookie its
 * lookups ask for), and a way to look at it now instead of when it is due.
 */
export function watcherOf(
  lifecycle: Lifecycle,
): { cookie: string | undefined; namespaced: boolean; due: number; lookNow(): void } | undefined {
  const w = lifecycle.watcher() as Watched | undefined;
  if (!w) return undefined;
  return {
    cookie: w.id && recordCookie(w.id),
    namespaced: w.ns !== undefined,
    due: w.due,
    lookNow() {
      if (w.ended) return;
      scheduleAt(w, now());
      poll();
    },
  };
}

/** States other finwait calls read on a watched socket's fd are observations too. */
diagnosticsChannel.subscribe(OBSERVED_CHANNEL, (message) => {
  const { fd, state } = message as { fd: number; state: TcpState };
  const w = byFd[fd];
  if (w?.socket && handleFd(w.socket) === fd && observeFd(w, state, now())) wake(w);
});

/** A FIN about to go out through `shutdown()`: the connection is named first. */
diagnosticsChannel.subscribe(FIN_CHANNEL, (message) => {
  const { fd } = message as { fd: number };
  const w = byFd[fd];
  if (!w?.socket || handleFd(w.socket) !== fd) return;
  try {
    identifyBeforeFin(w, fd);
  } catch (error) {
    debug('shutdown: %s', (error as Error).message);
  }
  // shutdown(2) follows at once: a CLOSE read at the peer's 'end' is then TIME_WAIT, not an RST.
  w.rawFin = true;
  closing(w);
});

/**
 * Follows the socket's resets done through `reset()` (SO_LINGER {1, 0}, then close): the kernel
 * sends an RST only from ESTABLISHED, CLOSE_WAIT, FIN_WAIT1, FIN_WAIT2 and SYN_RECV, or from
 * LAST_ACK and CLOSING with bytes still unsent (tcp_disconnect()); an fd that reads CLOSE (TIME_WAIT
 * began, which goes on) or SYN_SENT sends none.
 */
diagnosticsChannel.subscribe(RESET_CHANNEL, (message) => {
  const socket = (message as { socket: net.Socket }).socket;
  const w = (socket as WithWatcher)[kWatched];
  if (!w || w.ended) return;
  const at = now();
  const fd = handleFd(socket);
  let sendsRst = true;
  if (fd >= 0) {
    try {
      const state = readState(fd);
      observeFd(w, state, at);
      sendsRst = RESET_FROM.has(state) || ((state === 'LAST_ACK' || state === 'CLOSING') && native().ioctlInt(fd, constants().SIOCOUTQNSD) > 0);
    } catch (error) {
      debug('reset: %s', (error as Error).message);
    }
  }
  if (sendsRst) w.lifecycle.observe({ event: 'rst-sent', source: 'event', at });
});

/**
 * Follows `socket` through its close until the kernel has forgotten it: `state`, `history`
 * (state, time, source), a `'transition'` event per step (also on diagnostics_channel
 * `finwait:socket:state`), `until(state)`, and `done` with the outcome and who closed first.
 * Works from before the socket connects; keeps following after Node closes the fd (TIME_WAIT and
 * orphans through sock_diag, by 4-tuple and cookie). One shared poller serves every watched
 * socket; it never keeps the process alive on its own and stops when nothing is watched.
 * Watching a socket twice returns the same `Lifecycle`.
 */
export function watch(socket: net.Socket): Lifecycle {
  assertSocket(socket);
  const existing = (socket as WithWatcher)[kWatched];
  if (existing) return existing.lifecycle;
  if (socket.destroyed) throw codedError('ERR_SOCKET_CLOSED', 'Socket is closed: it was destroyed');
  constants(); // loads the addon now: a missing one or an unsupported platform throws here, not in the poller
  const fd = handleFd(socket);
  // A connecting socket's fd is read first when it connects: what is not TCP is refused now.
  if (fd < 0 && socketHandleKind(socket) === 'Pipe') {
    throw codedError('ENOTSUP', 'watch() follows TCP sockets; this one is a Unix domain socket or a pipe');
  }
  const w: Watched = {
    lifecycle: undefined as unknown as Lifecycle, // made next: it needs w
    socket,
    fd: -1,
    id: undefined,
    ns: undefined,
    fdClose: false,
    phase: 'pending',
    due: Infinity,
    slot: -1,
    step: FAST_MS,
    hooked: false,
    rawFin: false,
    ended: false,
  };
  const lifecycle = (w.lifecycle = new Lifecycle(w));
  const at = now();
  if (fd >= 0) {
    // Validates the fd (a Unix socket or UDP throws the kernel's error here) and records the start.
    w.phase = 'open';
    start(w, fd, at);
    w.fd = fd;
    byFd[fd] = w;
  }
  watchedCount++;
  (socket as WithWatcher)[kWatched] = w;
  socket.on('end', onEnd).on('error', onError);
  // This end's FIN and the fd's close are seen by the hooks on the handle (a connecting socket
  // has its handle already); 'finish' and 'close' only where they could not be set.
  if (!hookHandle(w)) socket.on('finish', onFinish).on('close', onClose);
  if (fd >= 0) nameUnhooked(w, fd, at);
  else socket.on('connect', onConnect);
  if (fd >= 0) scheduleOpen(w, at, true);
  else scheduleAt(w, at + FAST_MS);
  arm();
  return lifecycle;
}
