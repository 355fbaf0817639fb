/**
 * A timer for a moment on `performance.now()`'s clock that never fires before it: the deadlines of
 * gracefulClose() and closeServer(), closeServer()'s idle window and gracefulShutdown()'s pre-stop
 * delay.
 */
import { performance } from 'node:perf_hooks';

/** A timer for a moment on `performance.now()`'s clock; `clear()` stops it. */
export interface TimerAt {
  clear(): void;
}

/**
 * Calls `fn` once `performance.now()` reaches `at`, never before. A Node timer counts whole
 * milliseconds of the event loop's clock and fires up to ~2 ms before the time asked by
 * performance.now() (three in four times with a fractional delay, measured): it then waits the rest.
 */
export function timerAt(at: number, fn: () => void): TimerAt {
  let timer: NodeJS.Timeout;
  const fire = (): void => {
    const left = at - performance.now();
    if (left > 0) timer = setTimeout(fire, Math.ceil(left));
    else fn();
  };
  timer = setTimeout(fire, Math.max(0, at - performance.now()));
  return { clear: () => clearTimeout(timer) };
}
