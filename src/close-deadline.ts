/**
 * The deadline and abort signals of one close: its own, and those of every later call that joined
 * it (a second gracefulClose() on the same socket, closeServer()'s deadline). The earliest
 * deadline and the first signal to abort end the close; shared by the lingering close, the idle
 * close and the close without the kernel's view.
 */
import { performance } from 'node:perf_hooks';

export class CloseDeadline {
  #at = Infinity;
  #timer: NodeJS.Timeout | undefined;
  #signals: AbortSignal[] | undefined;
  readonly #expire: (reason: 'deadline' | 'aborted') => void;
  readonly #onAbort = (): void => this.#expire('aborted');
  /**
   * A timer counts whole milliseconds of the event loop's clock and can fire up to ~2 ms before
   * the deadline by performance.now(): then it waits the rest, so a deadline is never early.
   */
  readonly #onTimer = (): void => {
    const left = this.#at - performance.now();
    if (left > 0) this.#timer = setTimeout(this.#onTimer, Math.ceil(left));
    else this.#expire('deadline');
  };

  /** `expire` is told once the deadline passes (`'deadline'`) or a signal aborts (`'aborted'`), maybe more than once. */
  constructor(expire: (reason: 'deadline' | 'aborted') => void) {
    this.#expire = expire;
  }

  /**
   * Brings the deadline to `timeout` ms from now if that is earlier (0: expires at once, and the
   * signal is not listened to; `Infinity`: no deadline), and listens to `signal`.
   */
  join(timeout: number, signal?: AbortSignal): void {
    const at = performance.now() + timeout;
    if (at < this.#at) {
      this.#at = at;
      clearTimeout(this.#timer);
      if (timeout === 0) return this.#expire('deadline');
      this.#timer = setTimeout(this.#onTimer, timeout);
    }
    if (!signal) return;
    (this.#signals ??= []).push(signal);
    signal.addEventListener('abort', this.#onAbort, { once: true });
  }

  /** Stops the timer and the listening (the close ended). */
  clear(): void {
    clearTimeout(this.#timer);
    for (const signal of this.#signals ?? []) signal.removeEventListener('abort', this.#onAbort);
  }
}
