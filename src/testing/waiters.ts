/**
 * Waiting on what the kernel shows, never on a clock: poll a fact with an adaptive cadence
 * (immediately, then after every turn of the event loop for a few turns, then 1 ms doubling to
 * 32 ms) and settle as soon as it holds, or reject at the deadline saying what was last seen.
 */
import { abortError, codedError, invalidArgType, outOfRange, type CodedError } from '../errors';
import { fdOf, type SocketLike } from '../fd';
import { tcpState } from '../ops';
import { isTcpState, type TcpState } from '../states';

/** Options of the waiters. */
export interface WaitOptions {
  /** Give up after this many milliseconds (default 5000). */
  timeout?: number;
  /** Stop waiting; rejects with an `AbortError`. */
  signal?: AbortSignal;
}

/** The rejection of a waiter at its deadline: `code` `'ERR_FINWAIT_TIMEOUT'`. */
export interface WaitTimeoutError extends CodedError {
  /** The last value the probe returned (for `waitForState`, the last state seen). */
  lastSeen?: unknown;
}

const DEFAULT_TIMEOUT_MS = 5000;
/** Polls on successive turns of the event loop (setImmediate) before the timer phase. */
const IMMEDIATE_POLLS = 8;
const FIRST_TIMER_MS = 1;
const MAX_TIMER_MS = 32;

function checkOptions(options: WaitOptions): { timeout: number; signal?: AbortSignal } {
  if (options === null || typeof options !== 'object') throw invalidArgType('options', 'of type object', options);
  const { timeout = DEFAULT_TIMEOUT_MS, signal } = options;
  if (typeof timeout !== 'number') throw invalidArgType('options.timeout', 'of type number', timeout);
  if (!(timeout >= 0) || !Number.isFinite(timeout)) throw outOfRange('options.timeout', '>= 0 and finite', timeout);
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw invalidArgType('options.signal', 'an instance of AbortSignal', signal);
  }
  return { timeout, signal };
}

/**
 * Resolves with the first value of `probe()` that is neither `undefined` nor `false`, polling
 * it with the adaptive cadence above. `describe` names what is awaited in the timeout error;
 * `lastSeen` (optional) describes the last miss. A throwing probe rejects with its error.
 */
export function waitUntil<T>(
  describe: string,
  probe: () => T | undefined | false,
  options: WaitOptions = {},
  lastSeen?: () => unknown,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    if (typeof describe !== 'string') throw invalidArgType('describe', 'of type string', describe);
    if (typeof probe !== 'function') throw invalidArgType('probe', 'of type function', probe);
    if (lastSeen !== undefined && typeof lastSeen !== 'function') throw invalidArgType('lastSeen', 'of type function', lastSeen);
    const { timeout, signal } = checkOptions(options);
    if (signal?.aborted) throw abortError(signal);
    const deadline = performance.now() + timeout;
    let polls = 0;
    let delay = FIRST_TIMER_MS;
    let timer: NodeJS.Timeout | undefined;
    let immediate: NodeJS.Immediate | undefined;

    const settle = (error: Error | undefined, value?: T): void => {
      clearTimeout(timer);
      if (immediate) clearImmediate(immediate);
      signal?.removeEventListener('abort', onAbort);
      if (error) reject(error);
      else resolve(value as T);
    };
    function onAbort(): void {
      settle(abortError(signal as AbortSignal));
    }
    function poll(): void {
      let value: T | undefined | false;
      try {
        value = probe();
      } catch (error) {
        return settle(error as Error);
      }
      if (value !== undefined && value !== false) return settle(undefined, value);
      const now = performance.now();
      if (now >= deadline) {
        let seen: unknown;
        let tail = '';
        if (lastSeen) {
          // It runs in a timer: what it throws goes into the message, not out of the process.
          try {
            seen = lastSeen();
            tail = `; last seen: ${String(seen)}`;
          } catch (error) {
            tail = `; lastSeen() threw: ${error instanceof Error ? error.message : String(error)}`;
          }
        }
        const error: WaitTimeoutError = codedError('ERR_FINWAIT_TIMEOUT', `Timed out after ${timeout} ms waiting for ${describe}${tail}`);
        if (lastSeen) error.lastSeen = seen;
        return settle(error);
      }
      if (polls++ < IMMEDIATE_POLLS) {
        immediate = setImmediate(poll);
      } else {
        timer = setTimeout(poll, Math.min(delay, Math.max(0, deadline - now)));
        delay = Math.min(delay * 2, MAX_TIMER_MS);
      }
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    poll();
  });
}

/**
 * Resolves with the socket's TCP state (`tcpState`, one getsockopt per poll) once it is
 * `state`, or one of `states`; rejects with `ERR_FINWAIT_TIMEOUT` naming the last state seen,
 * or with the error of a socket that closed meanwhile (`ERR_SOCKET_CLOSED`, `EBADF`). The fd
 * never shows `'TIME_WAIT'`: wait for `'CLOSE'`, which it reads once TIME_WAIT began.
 * @see tcp(7) TCP_INFO
 */
export function waitForState(
  socket: SocketLike,
  state: TcpState | readonly TcpState[],
  options: WaitOptions = {},
): Promise<TcpState> {
  try {
    fdOf(socket);
    const wanted: readonly unknown[] = Array.isArray(state) ? state : [state];
    if (wanted.length === 0 || !wanted.every(isTcpState)) {
      throw invalidArgType('state', 'a TCP state name or an array of them', state);
    }
    let last: TcpState | undefined;
    return waitUntil(
      wanted.join(' or '),
      () => {
        last = tcpState(socket);
        return wanted.includes(last) ? last : undefined;
      },
      options,
      () => last,
    );
  } catch (error) {
    return Promise.reject(error);
  }
}
