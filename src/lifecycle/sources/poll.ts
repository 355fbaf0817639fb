/**
 * The poller: what a look at the watched sockets that are due does. An fd Node holds is read (one
 * batch read for all of them: `tcpStates`), a socket whose fd Node closed is looked up in sock_diag
 * (`diag-follow.ts`, one batch per network namespace), and each is scheduled again: fast while it
 * is closing, slowly as a safety net otherwise, at its timer's expiry in TIME_WAIT.
 */
import { debuglog } from 'node:util';
import { native } from '../../binding';
import { handleFd } from '../../fd';
import { stateName } from '../../states';
import { AWAIT_MS, EARLY_MS, SLOW_MS, first, scheduleAt, scheduleOpen, unqueue } from '../schedule';
import { BEFORE_TIME_WAIT, observeFd, type Watched } from '../watched';
import { identify, lookUp } from './diag-follow';
import { noteFd, toGone } from './node-hooks';

const debug = debuglog('finwait');

let fdBuffer = new Int32Array(64);
let stateBuffer = new Int32Array(64);

/** Looks at every socket due by `at` (the timer's handler, see `schedule.ts`). */
export function pollDue(at: number): void {
  const live: Watched[] = [];
  const gone: Watched[] = [];
  for (let w = first(); w !== undefined && w.due <= at + EARLY_MS; w = first()) {
    unqueue(w);
    try {
      const socket = w.socket;
      const fd = socket === undefined || w.phase === 'gone' ? -1 : handleFd(socket);
      if (fd >= 0) {
        if (noteFd(w, fd, at) || w.fdClose) scheduleOpen(w, at, true);
        else live.push(w);
      } else if (w.fd >= 0 || socket === undefined || socket.destroyed || w.phase === 'gone') {
        toGone(w);
        // Destroyed before it ever had a connection: nothing reached the kernel, or nothing to ask.
        if (w.id === undefined) w.lifecycle.end();
        // An event back-end reports its socket's end: only the safety net until then.
        else if (w.awaiting) scheduleAt(w, at + AWAIT_MS);
        else gone.push(w);
      } else {
        // Not connected yet: 'connect' and 'error' will say what happens; look now and then.
        w.step = Math.min(w.step * 2, SLOW_MS);
        scheduleAt(w, at + w.step);
      }
    } catch (error) {
      debug('poll: %s', (error as Error).message);
      if (!w.ended) scheduleAt(w, at + SLOW_MS);
    }
  }
  if (gone.length > 0) lookUp(gone, at);
  if (live.length > 0) readFds(live, at);
}

/** One batch read of the states of fds Node holds. */
function readFds(live: Watched[], at: number): void {
  if (fdBuffer.length < live.length) {
    fdBuffer = new Int32Array(2 * live.length);
    stateBuffer = new Int32Array(2 * live.length);
  }
  for (let i = 0; i < live.length; i++) fdBuffer[i] = live[i]!.fd;
  native().tcpStates(fdBuffer.subarray(0, live.length), stateBuffer);
  for (let i = 0; i < live.length; i++) {
    const w = live[i]!;
    const state = stateBuffer[i]! > 0 ? stateName(stateBuffer[i]!) : undefined;
    let changed = state !== undefined && observeFd(w, state, at);
    // A FIN that went out by a way no hook saw (another library's shutdown(2)): named now, before
    // TIME_WAIT can begin, if it has not begun yet.
    if (w.id === undefined && state !== undefined && BEFORE_TIME_WAIT.has(state) && !w.ended) {
      try {
        changed = identify(w, w.fd, at) !== state || changed;
      } catch (error) {
        debug('poll: %s', (error as Error).message);
      }
    }
    if (!w.ended) scheduleOpen(w, at, changed);
  }
}
