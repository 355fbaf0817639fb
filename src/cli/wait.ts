/**
 * Bounded waits for the scenarios of `finwait demo`: every wait is on something the kernel, Node
 * or the lab's wire showed, with a deadline; nothing sleeps.
 */
import { performance } from 'node:perf_hooks';

/** How long any one wait may take before the scenario fails (ms). */
export const DEADLINE = 10_000;

/** Rejects if `promise` has not settled within `ms`. */
export function within<T>(promise: Promise<T>, what: string, ms = DEADLINE): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Resolves when `probe` returns true, checking on every turn of the event loop; bounded. */
export async function until(what: string, probe: () => boolean, ms = DEADLINE): Promise<void> {
  const deadline = performance.now() + ms;
  while (!probe()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** Resolves when `probe` returns true, checking every millisecond (for probes that make syscalls); bounded. */
export async function poll(what: string, probe: () => boolean, ms = DEADLINE): Promise<void> {
  const deadline = performance.now() + ms;
  while (!probe()) {
    if (performance.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}
