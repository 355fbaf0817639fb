/**
 * timerAt(): the timer of the deadlines (gracefulClose(), closeServer(), gracefulShutdown()'s
 * pre-stop delay), never early. Node's timers count whole milliseconds of the event loop's clock,
 * and fire up to ~2 ms before the time asked by performance.now().
 */
import { describe, expect, it } from 'vitest';
import { performance } from 'node:perf_hooks';
import { timerAt } from '../src/timer-at';

describe('timerAt()', () => {
  it('timerAt(): at or after the moment asked, never before; a cleared one never fires', async () => {
    const cleared = timerAt(performance.now() + 5, () => expect.unreachable('a cleared timer fired'));
    cleared.clear();
    for (let i = 0; i < 20; i++) {
      const at = performance.now() + 5 + i / 20;
      const firedAt = await new Promise<number>((resolve) => timerAt(at, () => resolve(performance.now())));
      expect(firedAt).toBeGreaterThanOrEqual(at);
    }
  });
});
