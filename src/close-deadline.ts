/**
 * The deadline and abort signals of one close: its own, and those of every later call that joined
 * it (a second gracefulClose() on the same socket, closeServer()'s deadline). The earliest
 * deadline and the first signal to abort end the close; shared by the lingering close, the idle
 * close and the close without the kernel's view. Deadlines are never early (`timerAt()`).
 */
import { performance } from 'node:perf_hooks';
import { timerAt, type TimerAt } from './timer-at';

export class CloseDeadline {
  #at = Infinity;
  #timer: TimerAt | undefined;
  #signals: AbortSignal[] | undefined;
  readonly #expire: (reason: 'deadline' | 'aborted') => void;
  readonly #onAbort = (): void => this.#expire('aborted');

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
      this.#timer?.clear();
      if (timeout === 0) return this.#expire('deadline');
      this.#timer = timerAt(at, () => this.#expire('deadline'));
    }
    if (!signal) return;
    (this.#signals ??= []).push(signal);
    signal.addEventListener('abort', this.#onAbort, { once: true });
  }

  /** Stops the timer and the listening (the close ended). */
  clear(): void {
    this.#timer?.clear();
    for (const signal of this.#signals ?? []) signal.removeEventListener('abort', this.#onAbort);
  }
}
