/**
 * The deadline of a close (gracefulClose(), and closeServer()'s joined to it): never early. Node's
 * timers count whole milliseconds of the event loop's clock, and fire up to ~2 ms before the time
 * asked by performance.now() (three in four times with a fractional delay, measured); the
 * deadline waits the rest.
 */
import { describe, expect, it } from 'vitest';
import { performance } from 'node:perf_hooks';
import { CloseDeadline } from '../src/close-deadline';

describe('CloseDeadline', () => {
  it('expires at or after the deadline by performance.now(), never before (40 deadlines of 10-11 ms)', async () => {
    const early: number[] = [];
    for (let i = 0; i < 40; i++) {
      const timeout = 10 + i / 40;
      const start = performance.now();
      const reason = await new Promise<string>((resolve) => new CloseDeadline(resolve).join(timeout));
      expect(reason).toBe('deadline');
      const waited = performance.now() - start;
      if (waited < timeout) early.push(timeout - waited);
    }
    expect(early).toEqual([]);
  });

  it('the earliest deadline wins; 0 expires at once; an aborted signal ends it with "aborted"', async () => {
    const reasons: string[] = [];
    const deadline = new CloseDeadline((reason) => reasons.push(reason));
    deadline.join(Infinity);
    deadline.join(0);
    expect(reasons).toEqual(['deadline']);
    const controller = new AbortController();
    const other = new CloseDeadline((reason) => reasons.push(reason));
    other.join(60_000, controller.signal);
    controller.abort();
    other.clear();
    expect(reasons).toEqual(['deadline', 'aborted']);
  });
});
