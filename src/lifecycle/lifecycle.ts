/**
 * The `Lifecycle` object `watch(socket)` returns: it owns one connection's model (`fsm.ts`), folds
 * what the watcher's sources observe into it, and gives it to the application as `state`,
 * `history`, `'transition'` events (also on diagnostics_channel `finwait:socket:state`),
 * `until(state)` and `done`. It does no I/O: where observations come from is `watch.ts` and
 * `sources/`.
 */
import { EventEmitter } from 'node:events';
import diagnosticsChannel from 'node:diagnostics_channel';
import { debuglog } from 'node:util';
import { checkTimerMs, codedError, invalidArgType, outOfRange } from '../errors';
import {
  changesOf,
  createModel,
  LIFECYCLE_STATES,
  observe,
  outcomeOf,
  roleOf,
  type Anomaly,
  type CloseModel,
  type CloseOutcome,
  type CloseRole,
  type HistoryEntry,
  type LifecycleState,
  type Observation,
  type Source,
} from './fsm';
import type { WatchBackend } from './watched';

const debug = debuglog('finwait');

/** The back-end of a lifecycle until `watch()` sets its own. */
const POLL: WatchBackend = Object.freeze({ name: 'poll' });

/** diagnostics_channel on which every transition of every watched socket is published. */
export const STATE_CHANNEL = 'finwait:socket:state';
const stateChannel = diagnosticsChannel.channel(STATE_CHANNEL);

/**
 * One transition, as emitted by a `Lifecycle` and published on `finwait:socket:state`. `from` is
 * the state before `to` in the history: a state inferred after the fact (the FIN_WAIT1 polling
 * missed before an fd read CLOSE) is emitted when inferred, after the later state it explains.
 * The first state observed, the one the connection was in when watching began (`history[0]`), is
 * no transition: the first transition leaves it.
 */
export interface Transition {
  /** The state before `to` in the history. */
  from: LifecycleState;
  /** The state entered. */
  to: LifecycleState;
  /** ms on `performance.now()`'s clock. */
  at: number;
  /** How `to` became known. */
  source: Source;
}

/** What `Lifecycle.done` resolves with once the kernel has forgotten the connection. */
export interface WatchResult {
  /** How it ended; `undefined` for a connection that never completed (e.g. refused). */
  outcome: CloseOutcome | undefined;
  /** Which side closed first; `undefined` if it never began to close (e.g. refused). */
  role: CloseRole | undefined;
  /** Every state the connection passed through, in order. */
  history: readonly HistoryEntry[];
  /** Observations the RFC machine forbids. */
  anomalies: readonly Anomaly[];
}

/** Options of `Lifecycle.until()`. */
export interface UntilOptions {
  /** ms to wait before rejecting with `ERR_FINWAIT_TIMEOUT`; default: no limit. */
  timeout?: number;
}

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
  #backend: WatchBackend = POLL;
  /**
   * The pending `until()` calls, told of every new history entry: the first one (where watching
   * began) is no `'transition'`, and can be the state waited for. Made by the first `until()`.
   */
  #waiters: Set<() => void> | undefined;
  /** Called once with the watcher when the lifecycle ends: it stops following the socket. */
  #forget: ((watcher: unknown) => void) | undefined;

  /** @internal use `watch(socket)`. */
  constructor(watcher?: unknown, forget?: (watcher: unknown) => void) {
    super();
    this.#watcher = watcher;
    this.#forget = forget;
  }

  /** @internal */
  watcher(): unknown {
    return this.#watcher;
  }

  /**
   * Which back-end follows the connection after Node closes its fd: `'destroy-multicast'` (the
   * kernel reports the end of the orphan the close leaves behind) or `'poll'` (sock_diag asked on
   * a cadence), and, where it fell back, why not the other. Chosen by `watch()`; `FINWAIT_WATCH_BACKEND` forces one.
   */
  get backend(): WatchBackend {
    return this.#backend;
  }

  /** @internal */
  setBackend(backend: WatchBackend): void {
    this.#backend = backend;
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
        this.#waiters?.delete(onEntries);
        this.off('end', onEnd);
      };
      const onEntries = (): void => {
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
      (this.#waiters ??= new Set()).add(onEntries);
      this.on('end', onEnd);
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
      for (const { from, entry } of changesOf(model.history, entries)) {
        const transition: Transition = { from, to: entry.state, at: entry.at, source: entry.source };
        this.emit('transition', transition);
        if (stateChannel.hasSubscribers) stateChannel.publish({ lifecycle: this, ...transition });
      }
    }
    if (entries.length > 0 && this.#waiters !== undefined) for (const waiter of this.#waiters) waiter();
    if (model.state === 'CLOSED') this.end();
    return entries.length > 0 || anomaly !== undefined;
  }

  /** @internal */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    if (this.#watcher !== undefined) this.#forget?.(this.#watcher);
    this.#resolveDone?.(this.#result());
    this.emit('end');
  }
}
