/**
 * `watch(socket)`: follows one connection through its close, from the kernel's point of view,
 * until the kernel has forgotten it. The fd is polled while Node holds it (one batch call for
 * every watched socket); once Node closes it, sock_diag is asked by the 4-tuple, so TIME_WAIT,
 * orphans and the final disappearance are in the history. What polling missed is filled in by
 * the pure model (`fsm.ts`) and marked `'inferred'`.
 */
import { EventEmitter } from 'node:events';
import diagnosticsChannel from 'node:diagnostics_channel';
import net from 'node:net';
import { performance } from 'node:perf_hooks';
import { debuglog } from 'node:util';
import { constants, native } from '../binding';
import { findSocket, socketTuple, type SocketEntry, type SocketTuple } from '../diag';
import { codedError, invalidArgType } from '../errors';
import { assertSocket, handleFd } from '../fd';
import { OBSERVED_CHANNEL, queues, RESET_CHANNEL, tcpState } from '../ops';
import { stateName } from '../states';
import {
  createModel,
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

interface Watched {
  lifecycle: Lifecycle;
  socket: net.Socket;
  /** The fd the socket had when last seen, -1 before it has one. */
  fd: number;
  tuple: SocketTuple | undefined;
  /** Unread bytes and SO_LINGER when Node last closed the fd (from the close hook). */
  closedWith?: { state: LifecycleState | undefined; unread: number; linger0: boolean };
  /** When the next look through sock_diag is due (ms), while TIME_WAIT counts down. */
  diagDue: number;
  /** The last sock_diag entry seen after Node closed the fd, and when (ms). */
  lastDiag?: { entry: SocketEntry; at: number };
}

/** The poll cadence: 1 ms after a change, doubling to 100 ms while nothing changes. */
const FAST_MS = 1;
const SLOW_MS = 100;
/** Looks through sock_diag at a socket whose state has a long timer (TIME_WAIT's 60 s). */
const DIAG_SLOW_MS = 1000;

const watched = new Set<Watched>();
const bySocket = new WeakMap<net.Socket, Watched>();
/** Watched sockets by the fd Node holds for them (an fd is not reused while it is open). */
const byFd = new Map<number, Watched>();
let timer: NodeJS.Timeout | undefined;
let delay = FAST_MS;

/** Follows a connection through its close lifecycle. */
export class Lifecycle extends EventEmitter {
  #model: CloseModel = createModel();
  #done: Promise<WatchResult>;
  #resolveDone!: (result: WatchResult) => void;
  #ended = false;

  /** @internal use `watch(socket)` */
  constructor() {
    super();
    this.#done = new Promise((resolve) => (this.#resolveDone = resolve));
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
    return this.#done;
  }

  /**
   * Resolves with the history entry once `state` is reached, or at once if it was already passed;
   * rejects with `ERR_FINWAIT_TIMEOUT` after `timeout` ms, and with `ERR_FINWAIT_STATE_NOT_REACHED`
   * if the connection ends without passing through it.
   */
  until(state: LifecycleState, options: UntilOptions = {}): Promise<HistoryEntry> {
    const { timeout } = options;
    if (timeout !== undefined && (typeof timeout !== 'number' || !(timeout >= 0))) {
      return Promise.reject(invalidArgType('options.timeout', 'a non-negative number', timeout));
    }
    const seen = (): HistoryEntry | undefined => this.history.find((h) => h.state === state);
    const already = seen();
    if (already) return Promise.resolve(already);
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
        reject(codedError('ERR_FINWAIT_STATE_NOT_REACHED', `The connection ended without passing through ${state}`));
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
    const { model, entries, anomaly } = observe(before, observation);
    this.#model = model;
    if (anomaly) debug('anomaly: %s', anomaly.reason);
    for (const entry of entries) {
      const index = model.history.indexOf(entry);
      const from = index > 0 ? model.history[index - 1]?.state : undefined;
      const transition: Transition = { from, to: entry.state, at: entry.at, source: entry.source };
      this.emit('transition', transition);
      if (stateChannel.hasSubscribers) stateChannel.publish({ lifecycle: this, ...transition });
    }
    if (model.state === 'CLOSED') this.end();
    return entries.length > 0 || anomaly !== undefined;
  }

  /** @internal */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    const { history, anomalies } = this.#model;
    const states = history.map((h) => h.state);
    this.#resolveDone({ outcome: outcomeOf(history), role: roleOf(states), history, anomalies });
    this.emit('end');
  }
}

function now(): number {
  return performance.now();
}



/**
 * Takes a last look just before Node closes the fd (its handle's `close`): the kernel decides
 * between FIN and RST at that moment, on unread bytes and SO_LINGER {1, 0}.
 */
function hookClose(w: Watched): void {
  const handle = (w.socket as unknown as { _handle?: { close?: (...args: unknown[]) => unknown } | null })._handle;
  if (!handle || typeof handle.close !== 'function' || Object.hasOwn(handle, 'close')) return;
  const close = handle.close;
  handle.close = function (this: unknown, ...args: unknown[]) {
    try {
      const fd = handleFd(w.socket);
      if (fd >= 0) {
        const state = tcpState(fd);
        w.lifecycle.observe({ state, source: 'kernel', at: now() });
        const { onoff, linger } = native().getLinger(fd);
        const unread = state === 'LISTEN' ? 0 : queues(fd).unread;
        w.closedWith = { state, unread, linger0: onoff !== 0 && linger === 0 };
      }
    } catch (error) {
      debug('close hook: %s', (error as Error).message);
    }
    return close.apply(this, args);
  };
}

/** What closing the fd in `state` did, given what the close hook saw. */
function closeEvent(w: Watched): CloseEvent | undefined {
  const seen = w.closedWith;
  if (!seen || seen.state === undefined) return undefined;
  const synchronized = !['CLOSE', 'LISTEN', 'SYN_SENT', 'TIME_WAIT'].includes(seen.state);
  if (synchronized && (seen.linger0 || seen.unread > 0)) return 'rst-sent';
  if (seen.state === 'ESTABLISHED' || seen.state === 'CLOSE_WAIT') return 'close';
  return undefined;
}

function start(w: Watched): void {
  const { socket, lifecycle } = w;
  const onEnd = (): void => {
    // Node says 'end' for a FIN, and also for an RST that came while bytes were queued (libuv
    // treats the hang-up after a partial read as end-of-file): the kernel tells them apart.
    const fd = handleFd(socket);
    if (fd < 0) return;
    try {
      const state = tcpState(fd);
      // CLOSE after our FIN went out is TIME_WAIT; before it, only an RST ends a connection here.
      const finSent =
        socket.writableFinished ||
        ['FIN_WAIT1', 'FIN_WAIT2', 'CLOSING', 'LAST_ACK'].includes(lifecycle.model().settled ?? '');
      if (state === 'CLOSE' && !finSent) lifecycle.observe({ event: 'rst-received', source: 'event', at: now() });
      lifecycle.observe({ state, source: 'kernel', at: now() });
    } catch (error) {
      debug('end: %s', (error as Error).message);
    }
    wake();
  };
  const onError = (error: NodeJS.ErrnoException): void => {
    const event: CloseEvent | undefined =
      error.code === 'ECONNRESET' || error.code === 'EPIPE' || error.code === 'ECONNREFUSED'
        ? 'rst-received'
        : error.code === 'ETIMEDOUT'
          ? 'timeout'
          : undefined;
    if (event) lifecycle.observe({ event, source: 'event', at: now() });
    wake();
  };
  const onClose = (): void => {
    const event = closeEvent(w);
    if (event) lifecycle.observe({ event, source: 'event', at: now() });
    wake();
  };
  const onConnect = (): void => {
    // 'connect' means the handshake completed, a state polling may have missed.
    lifecycle.observe({ state: 'ESTABLISHED', source: 'event', at: now() });
    w.tuple ??= socketTuple(socket);
    hookClose(w);
    wake();
  };
  socket.on('end', onEnd).on('error', onError).on('close', onClose).on('connect', onConnect);
  lifecycle.once('end', () => {
    socket.off('end', onEnd).off('error', onError).off('close', onClose).off('connect', onConnect);
    watched.delete(w);
    if (byFd.get(w.fd) === w) byFd.delete(w.fd);
  });
}

function wake(): void {
  delay = FAST_MS;
  schedule();
}

function schedule(): void {
  clearTimeout(timer);
  timer = undefined;
  if (watched.size === 0) return;
  timer = setTimeout(poll, delay).unref();
}

/** One poll of every watched socket: a batch read of the fds Node still holds, sock_diag for the rest. */
function poll(): void {
  timer = undefined;
  let changed = false;
  try {
    changed = pollOnce();
  } catch (error) {
    // A timer callback must not throw into the process; the next poll tries again.
    debug('poll: %s', (error as Error).message);
  }
  delay = changed ? FAST_MS : Math.min(delay * 2, SLOW_MS);
  schedule();
}

function pollOnce(): boolean {
  let changed = false;
  const live: Watched[] = [];
  for (const w of watched) {
    const fd = handleFd(w.socket);
    if (fd >= 0) {
      if (w.fd < 0) hookClose(w);
      if (w.fd !== fd) byFd.delete(w.fd);
      w.fd = fd;
      byFd.set(fd, w);
      w.tuple ??= w.socket.remotePort ? socketTuple(w.socket) : undefined;
      live.push(w);
    } else if (w.fd >= 0 || w.socket.destroyed) {
      if (byFd.get(w.fd) === w) byFd.delete(w.fd);
      changed = followGone(w) || changed;
    }
  }
  if (live.length > 0) {
    const fds = Int32Array.from(live, (w) => w.fd);
    const out = new Int32Array(fds.length);
    native().tcpStates(fds, out);
    const at = now();
    for (let i = 0; i < live.length; i++) {
      const state = out[i]! > 0 ? stateName(out[i]!) : undefined;
      if (state) changed = live[i]!.lifecycle.observe({ state, source: 'kernel', at }) || changed;
    }
  }
  return changed;
}

/** After Node closed the fd: the connection as sock_diag shows it, or gone. */
function followGone(w: Watched): boolean {
  const { lifecycle } = w;
  if (w.fd < 0 && !w.tuple) {
    // Destroyed before it ever had an fd: nothing reached the kernel.
    lifecycle.end();
    return true;
  }
  const at = now();
  if (at < w.diagDue) return false;
  if (!w.tuple) {
    lifecycle.end();
    return true;
  }
  const entry = findSocket(w.tuple);
  if (!entry) {
    if (orphanTimedOut(w.lastDiag, at)) lifecycle.observe({ event: 'fin-wait2-timeout', source: 'diag', at });
    return lifecycle.observe({ state: 'CLOSED', source: 'diag', at }) || (lifecycle.end(), true);
  }
  w.lastDiag = { entry, at };
  const changed = lifecycle.observe({ state: entry.state, source: 'diag', at });
  // A long timer (TIME_WAIT's 60 s, an orphan's FIN_WAIT2) need not be asked about every ms.
  const long = entry.timer.kind === 'timewait' ? Math.min(DIAG_SLOW_MS, Math.max(entry.timer.expiresMs, 1)) : 0;
  w.diagDue = at + long;
  return changed;
}

/**
 * True if a connection that just vanished from sock_diag was last seen there as an orphaned
 * FIN_WAIT2 whose timer (TCP_LINGER2, tcp_fin_timeout) had run out by now: the kernel dropped it
 * without the peer's FIN. Had the FIN come, TIME_WAIT would still be listed for 60 s.
 */
function orphanTimedOut(last: Watched['lastDiag'], at: number): boolean {
  if (!last || last.entry.state !== 'FIN_WAIT2' || last.entry.timer.kind === 'off') return false;
  return at >= last.at + last.entry.timer.expiresMs;
}

/** @internal For tests: whether the shared poller has a timer scheduled, and how many sockets it follows. */
export function pollerStatus(): { scheduled: boolean; watched: number } {
  return { scheduled: timer !== undefined, watched: watched.size };
}

/** States other finwait calls read on a watched socket's fd are observations too. */
diagnosticsChannel.subscribe(OBSERVED_CHANNEL, (message) => {
  const { fd, state } = message as { fd: number; state: LifecycleState };
  const w = byFd.get(fd);
  if (w && handleFd(w.socket) === fd && w.lifecycle.observe({ state, source: 'kernel', at: now() })) wake();
});

/** Follows the socket's resets done through `reset()`. */
diagnosticsChannel.subscribe(RESET_CHANNEL, (message) => {
  const w = bySocket.get((message as { socket: net.Socket }).socket);
  w?.lifecycle.observe({ event: 'rst-sent', source: 'event', at: now() });
});

/**
 * Follows `socket` through its close until the kernel has forgotten it: `state`, `history`
 * (state, time, source), a `'transition'` event per step (also on diagnostics_channel
 * `finwait:socket:state`), `until(state)`, and `done` with the outcome and who closed first.
 * Works from before the socket connects; keeps following after Node closes the fd (TIME_WAIT and
 * orphans through sock_diag). One shared poller serves every watched socket; it never keeps the
 * process alive on its own and stops when nothing is watched. Watching a socket twice returns the
 * same `Lifecycle`.
 */
export function watch(socket: net.Socket): Lifecycle {
  assertSocket(socket);
  const existing = bySocket.get(socket);
  if (existing) return existing.lifecycle;
  if (socket.destroyed) throw codedError('ERR_SOCKET_CLOSED', 'Socket is closed: it was destroyed');
  constants(); // loads the addon now: a missing one or an unsupported platform throws here, not in the poller
  const fd = handleFd(socket);
  const lifecycle = new Lifecycle();
  const w: Watched = { lifecycle, socket, fd: -1, tuple: undefined, diagDue: 0 };
  if (fd >= 0) {
    // Validates the fd (a Unix socket or UDP throws the kernel's error here) and records the start.
    lifecycle.observe({ state: tcpState(fd), source: 'kernel', at: now() });
    w.fd = fd;
    byFd.set(fd, w);
    w.tuple = socketTuple(socket);
    hookClose(w);
  }
  watched.add(w);
  bySocket.set(socket, w);
  start(w);
  wake();
  return lifecycle;
}
