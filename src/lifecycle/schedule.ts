/**
 * When each watched socket is looked at next: a binary min-heap of the watched sockets on their
 * due time, and one timer, for the head, that serves them all. Every source reschedules through
 * here (the poller's cadence, a TIME_WAIT's deadline, a wake-up after an event); what a look does
 * is the due handler `watch.ts` installs (`sources/poll.ts`).
 */
import { performance } from 'node:perf_hooks';
import { debuglog } from 'node:util';
import type { Watched } from './watched';

const debug = debuglog('finwait');

/** The fast cadence (closing fds, transient orphans): 1 ms after a change, doubling to 100 ms. */
export const FAST_MS = 1;
export const SLOW_MS = 100;
/** The safety net for an open fd Node reads: its FIN and RST come as 'end' and 'error'. */
export const SAFETY_MS = 1000;
/** The safety net for an open fd Node is not reading (paused): a FIN or RST makes no event. */
export const PAUSED_MS = 100;
/** Looked at this long after a sock_diag timer's expiry, so that the kernel has acted on it. */
export const TIMER_MARGIN_MS = 20;
/** Looked at again this often while an expired timer has not fired yet (long timers fire late). */
export const LATE_MS = 250;
/**
 * The safety net of a closed socket an event back-end follows: its end is reported, and it is
 * looked up only this often until then (a message that never came would otherwise go unnoticed).
 */
export const AWAIT_MS = 5000;
/** A poll also takes the sockets due within this much: a timer can fire a little early. */
export const EARLY_MS = 1;

/** Every watched socket, a binary min-heap on `due`. */
const heap: Watched[] = [];
let timer: NodeJS.Timeout | undefined;
/** When the armed timer fires (ms), Infinity when none is. */
let timerAt = Infinity;
/** What a look at the sockets due by `at` does (installed by `watch.ts`). */
let lookAtDue: (at: number) => void = () => {};

/** @internal Installs what the timer does with the sockets that are due. */
export function onDue(handler: (at: number) => void): void {
  lookAtDue = handler;
}

/** The head of the heap: the socket due first, `undefined` when none is queued. */
export function first(): Watched | undefined {
  return heap[0];
}

/** How many sockets are queued. */
export function queued(): number {
  return heap.length;
}

/** Whether the timer is armed. */
export function scheduled(): boolean {
  return timer !== undefined;
}

export function now(): number {
  return performance.now();
}

// ---------------------------------------------------------------------------------------------
// The schedule: a binary min-heap of the watched sockets on `due`, and one timer for its head.

function swap(i: number, j: number): void {
  const a = heap[i]!;
  const b = heap[j]!;
  heap[i] = b;
  heap[j] = a;
  a.slot = j;
  b.slot = i;
}

function siftUp(i: number): void {
  while (i > 0) {
    const parent = (i - 1) >> 1;
    if (heap[parent]!.due <= heap[i]!.due) return;
    swap(i, parent);
    i = parent;
  }
}

function siftDown(i: number): void {
  for (;;) {
    const left = 2 * i + 1;
    if (left >= heap.length) return;
    const right = left + 1;
    const least = right < heap.length && heap[right]!.due < heap[left]!.due ? right : left;
    if (heap[i]!.due <= heap[least]!.due) return;
    swap(i, least);
    i = least;
  }
}

/** Queues `w` to be looked at at `due` (ms), replacing its previous due time. */
export function scheduleAt(w: Watched, due: number): void {
  const before = w.due;
  w.due = due;
  if (w.slot < 0) {
    w.slot = heap.length;
    heap.push(w);
    siftUp(w.slot);
  } else if (due < before) {
    siftUp(w.slot);
  } else {
    siftDown(w.slot);
  }
}

export function unqueue(w: Watched): void {
  const i = w.slot;
  if (i < 0) return;
  const last = heap.pop()!;
  w.slot = -1;
  if (last !== w) {
    heap[i] = last;
    last.slot = i;
    siftUp(i);
    siftDown(last.slot);
  }
}

/** Arms the timer for the head of the heap; a timer already due sooner is never postponed. */
export function arm(): void {
  const first = heap[0];
  if (first === undefined) {
    clearTimeout(timer);
    timer = undefined;
    timerAt = Infinity;
    return;
  }
  // A timer that fires by the head's due time stays (asked after every event: no clock read then).
  if (timer !== undefined && timerAt <= first.due) return;
  const at = now();
  // A head already due (the loop was busy, so the timer is late) is served by the pending timer.
  const want = Math.max(first.due, at + 1);
  if (timer !== undefined && timerAt <= want) return;
  clearTimeout(timer);
  const delay = Math.ceil(want - at);
  timerAt = at + delay;
  timer = setTimeout(poll, delay).unref();
}

/** Something happened to `w`: look at it soon, and keep looking fast while it changes. */
export function wake(w: Watched): void {
  if (w.ended) return;
  w.step = FAST_MS;
  const due = now() + FAST_MS;
  if (w.slot < 0 || due < w.due) scheduleAt(w, due);
  arm();
}

/** After a look at an fd Node holds: when to look again. */
export function scheduleOpen(w: Watched, at: number, changed: boolean): void {
  if (w.phase === 'closing' && !w.fdClose) {
    w.step = changed ? FAST_MS : Math.min(w.step * 2, SLOW_MS);
    scheduleAt(w, at + w.step);
  } else {
    // A paused socket's FIN or RST makes no event; nor does anything on an fd that read CLOSE,
    // whose 'close' will come (the net stays in case Node's close escaped the hook).
    scheduleAt(w, at + (w.socket?.readableFlowing === true || w.fdClose ? SAFETY_MS : PAUSED_MS));
  }
}

/** The timer: looks at every socket that is due, then arms the timer for the next one. */
export function poll(): void {
  timer = undefined;
  timerAt = Infinity;
  try {
    lookAtDue(now());
  } catch (error) {
    // A timer callback must not throw into the process; the next poll tries again.
    debug('poll: %s', (error as Error).message);
  }
  arm();
}
