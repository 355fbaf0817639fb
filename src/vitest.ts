/**
 * vitest matchers for TCP states (sub-path `finwait/vitest`):
 *
 * ```ts
 * import { expect } from 'vitest';
 * import { matchers } from 'finwait/vitest';
 * expect.extend(matchers); // and the types: see FinwaitMatchers
 *
 * const lifecycle = watch(socket); // while the socket is open: watch() refuses a closed one
 * // ... the close ...
 * expect(socket).toBeInTcpState('FIN_WAIT2');
 * expect(lifecycle).toHaveSeenStates(['FIN_WAIT1', 'FIN_WAIT2', 'TIME_WAIT']);
 * ```
 *
 * Both read the kernel (or a watcher's history) at the moment of the assertion; to wait for a
 * state, use `waitForState()` from `finwait/testing` or `Lifecycle.until()` first.
 * @packageDocumentation
 * @module finwait/vitest
 */
import net from 'node:net';
import { socketTuple } from './diag';
import { checkLifecycleState, Lifecycle } from './lifecycle/watch';
import { kWatched, type WithWatcher } from './lifecycle/watched';
import type { HistoryEntry, LifecycleState } from './lifecycle/fsm';
import { invalidArgType, outOfRange } from './errors';
import { tcpState } from './ops';

/**
 * The states a matcher was given, checked: a misspelt name would otherwise make every `.not`
 * assertion pass. Throws (the assertion fails, with or without `.not`).
 */
function checkStates(expected: unknown, single: boolean): readonly LifecycleState[] {
  const list: unknown[] = Array.isArray(expected) ? expected : single ? [expected] : [];
  if (!Array.isArray(expected) && !single) throw invalidArgType('states', 'an array of TCP state names', expected);
  if (list.length === 0) throw outOfRange('states', 'at least one state', expected);
  for (const state of list) checkLifecycleState(state, 'state');
  return list as LifecycleState[];
}

/** What vitest passes a matcher as `this` (the part these matchers use). */
interface MatcherContext {
  isNot: boolean;
}

interface MatcherResult {
  pass: boolean;
  message: () => string;
  actual?: unknown;
  expected?: unknown;
}

function describeTarget(target: unknown): string {
  if (target instanceof Lifecycle) return 'the watched connection';
  if (target instanceof net.Socket) {
    const t = socketTuple(target);
    return t ? `socket ${t.local.address}:${t.local.port} -> ${t.remote.address}:${t.remote.port}` : 'socket';
  }
  return `fd ${String(target)}`;
}

function formatHistory(history: readonly HistoryEntry[]): string {
  return history.length === 0 ? '(nothing seen yet)' : history.map((h) => `${h.state} (${h.source})`).join(' -> ');
}

/**
 * `expect(target).toBeInTcpState(state | states)`: the kernel shows `state` now. `target` is a
 * socket or fd (read with `tcpState()`), or a `Lifecycle` (its current `state`, which can also be
 * `'CLOSED'` or a TIME_WAIT seen through sock_diag).
 */
function toBeInTcpState(this: MatcherContext, received: unknown, expected: LifecycleState | readonly LifecycleState[]): MatcherResult {
  const wanted = checkStates(expected, true);
  let actual: LifecycleState | undefined;
  let failure: string | undefined;
  try {
    actual = received instanceof Lifecycle ? received.state : tcpState(received as net.Socket | number);
  } catch (error) {
    // A socket Node closed is in no state; anything else (not a socket, not a TCP socket, a bad
    // fd) is a mistake in the test, which fails it with or without .not.
    if ((error as { code?: string }).code !== 'ERR_SOCKET_CLOSED') throw error;
    failure = `${(error as Error).message} (ERR_SOCKET_CLOSED)`;
  }
  const pass = actual !== undefined && wanted.includes(actual);
  const what = wanted.length === 1 ? wanted[0] : `one of ${wanted.join(', ')}`;
  return {
    pass,
    actual,
    expected: wanted.length === 1 ? wanted[0] : wanted,
    message: () =>
      failure !== undefined
        ? `expected ${describeTarget(received)} to be in ${what}, but its state could not be read: ${failure}`
        : this.isNot
          ? `expected ${describeTarget(received)} not to be in ${what}, but the kernel shows ${actual}`
          : `expected ${describeTarget(received)} to be in ${what}, but the kernel shows ${actual ?? 'no state yet'}` +
            (received instanceof Lifecycle ? `\nhistory: ${formatHistory(received.history)}` : ''),
  };
}

/**
 * The Lifecycle to read a history from: the one given, or the one `watch()` made earlier for a
 * socket. Anything else is a mistake in the test: it throws, so the assertion fails with or
 * without `.not` (a socket never watched has no history to pass or fail on).
 */
function lifecycleOf(received: unknown): Lifecycle {
  if (received instanceof Lifecycle) return received;
  if (received instanceof net.Socket) {
    const watched = (received as WithWatcher)[kWatched];
    if (watched) return watched.lifecycle;
    throw invalidArgType(
      'received',
      'the Lifecycle of watch(socket) made while the socket was open (`const lifecycle = watch(socket)` before the close, ' +
        `then expect(lifecycle)); ${describeTarget(received)} was never watched, so it has no history` +
        (received.destroyed ? ', and it is closed now, so watch() can no longer start on it' : ''),
      received,
    );
  }
  throw invalidArgType('received', 'the Lifecycle that watch(socket) returned (or a socket watched earlier)', received);
}

/**
 * `expect(lifecycle).toHaveSeenStates([...])`: the watched connection passed through these states
 * in this order (other states may come between; inferred states count, marked in the message).
 * `received` may also be a socket `watch()` followed earlier, even once it is closed.
 */
function toHaveSeenStates(this: MatcherContext, received: unknown, states: readonly LifecycleState[]): MatcherResult {
  const expected = checkStates(states, false);
  const lifecycle = lifecycleOf(received);
  const history = lifecycle.history;
  let next = 0;
  for (const entry of history) if (next < expected.length && entry.state === expected[next]) next++;
  const pass = next === expected.length;
  return {
    pass,
    actual: history.map((h) => h.state),
    expected,
    message: () =>
      this.isNot
        ? `expected the watched connection not to have passed through ${expected.join(' -> ')}, but it did:\n${formatHistory(history)}`
        : `expected the watched connection to have passed through ${expected.join(' -> ')}, ` +
          `but ${expected[next]} was not seen${next > 0 ? ` after ${expected[next - 1]}` : ''}:\n${formatHistory(history)}`,
  };
}

/** The matchers, for `expect.extend(matchers)`. */
export const matchers = {
  /** `expect(target).toBeInTcpState(state | states)`: the kernel shows `state` now. */
  toBeInTcpState,
  /** `expect(lifecycle).toHaveSeenStates([...])`: the connection passed through these states, in order. */
  toHaveSeenStates,
};

/**
 * The matchers' types. Add them to vitest's `Assertion` in a setup or `.d.ts` file of yours
 * (vitest's documented pattern for custom matchers):
 *
 * ```ts
 * import type { FinwaitMatchers } from 'finwait/vitest';
 * declare module 'vitest' {
 *   interface Assertion<T = any> extends FinwaitMatchers<T> {}
 * }
 * ```
 */
export interface FinwaitMatchers<R = unknown> {
  /** The kernel shows this state (or one of these) now. */
  toBeInTcpState(state: LifecycleState | readonly LifecycleState[]): R;
  /** The watched connection passed through these states, in this order. */
  toHaveSeenStates(states: readonly LifecycleState[]): R;
}
