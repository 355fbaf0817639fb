/**
 * `watch(socket)`: follows one connection through its close, from the kernel's point of view,
 * until the kernel has forgotten it. Node's events and hooks on the socket's handle (its shutdown
 * and close) report most transitions; the fd is polled while the connection is closing (from this
 * end's FIN or the peer's 'end' to the close), and slowly otherwise as a safety net; once Node
 * closes it, sock_diag is asked by the 4-tuple and the socket's cookie, so TIME_WAIT, orphans and
 * the final disappearance are in the history, and a later connection on the same 4-tuple is not
 * mistaken for this one. The cookie and 4-tuple are read only for an end that can outlive its fd,
 * just before its FIN goes out. What polling missed is filled in by the pure model (`fsm.ts`) and
 * marked `'inferred'`.
 *
 * One timer serves every watched socket: each socket has its own due time in a heap, and a poll
 * touches only the sockets that are due (one batch read for their fds, one batch of sock_diag
 * lookups for the closed ones, in each one's network namespace). A TIME_WAIT is looked at again
 * only when its timer runs out.
 *
 * Where each part lives: `lifecycle.ts` (the `Lifecycle` object), `watched.ts` (what is kept per
 * socket), `schedule.ts` (the heap and its timer), and one file per source of observations in
 * `sources/`: `node-hooks.ts` (Node's events and the handle's hooks), `poll.ts` (the poller),
 * `diag-follow.ts` (naming a connection and following it through sock_diag). This file wires
 * them together.
 */
import type net from 'node:net';
import { constants } from '../binding';
import { recordCookie } from '../diag';
import { codedError } from '../errors';
import { assertSocket, handleFd } from '../fd';
import { Lifecycle } from './lifecycle';
import { FAST_MS, arm, now, onDue, poll, queued, scheduleAt, scheduleOpen, scheduled, unqueue } from './schedule';
import { closeHomeNl, nameUnhooked, releaseNetns, start } from './sources/diag-follow';
import { listen, socketHandleKind, unlisten } from './sources/node-hooks';
import { bpf, closeIdle as closeBpfIdle, unavailable as bpfUnavailable } from './sources/bpf';
import { closeIdle, destroyMulticast, unavailable as destroyMulticastUnavailable } from './sources/destroy-multicast';
import { pollDue } from './sources/poll';
import { byFd, kWatched, type EventBackend, type Watched, type WatchBackend, type WatchBackendName, type WithWatcher } from './watched';

export {
  checkLifecycleState,
  Lifecycle,
  STATE_CHANNEL,
  type Transition,
  type UntilOptions,
  type WatchResult,
} from './lifecycle';
export { orphanTimedOut, type DiagSighting } from './sources/diag-follow';
export type { WatchBackend, WatchBackendName } from './watched';

/** How many sockets are followed. */
let watchedCount = 0;

onDue(pollDue);

/** The back-ends in the order they are preferred; the poller is always there. */
const BACKENDS: readonly WatchBackendName[] = ['bpf', 'destroy-multicast', 'poll'];
/** The environment variable that forces a back-end (for tests and benchmarks). */
const BACKEND_VARIABLE = 'FINWAIT_WATCH_BACKEND';
/** The back-end set by `setWatchBackend()`, which wins over the environment. */
let forced: WatchBackendName | undefined;

/** @internal For tests and benchmarks: forces a back-end for sockets watched from now on (`undefined`: choose). */
export function setWatchBackend(name: WatchBackendName | undefined): void {
  forced = name;
}

/** The back-end asked for: `setWatchBackend()`, else FINWAIT_WATCH_BACKEND, else `undefined`. */
function askedFor(): WatchBackendName | undefined {
  if (forced !== undefined) return forced;
  const value = process.env[BACKEND_VARIABLE];
  if (value === undefined || value === '') return undefined;
  if (!BACKENDS.includes(value as WatchBackendName)) {
    throw codedError('ERR_INVALID_ARG_VALUE', `${BACKEND_VARIABLE} must be one of ${BACKENDS.join(', ')}; got '${value}'`);
  }
  return value as WatchBackendName;
}

interface Chosen {
  readonly events: EventBackend | undefined;
  readonly backend: WatchBackend;
}

// The choices without a reason of their own, made once (one is made per watched socket).
const BPF: Chosen = Object.freeze({ events: bpf, backend: Object.freeze({ name: 'bpf' }) });
const DESTROY_MULTICAST: Chosen = Object.freeze({ events: destroyMulticast, backend: Object.freeze({ name: 'destroy-multicast' }) });
const POLL_ASKED: Chosen = Object.freeze({
  events: undefined,
  backend: Object.freeze({ name: 'poll', reason: `${BACKEND_VARIABLE} or setWatchBackend() asked for it` }),
});

/**
 * The back-end for a socket watched now: the one asked for, else the first that works here; one
 * that does not work falls back to the next, with the reason.
 */
function chooseBackend(): Chosen {
  const asked = askedFor();
  if (asked === 'poll') return POLL_ASKED;
  let bpfWhy: string | undefined;
  if (asked !== 'destroy-multicast') {
    bpfWhy = bpfUnavailable();
    if (bpfWhy === undefined) return BPF;
    bpfWhy = `bpf: ${bpfWhy}`;
  }
  const why = destroyMulticastUnavailable();
  if (why === undefined) return bpfWhy === undefined ? DESTROY_MULTICAST : { events: destroyMulticast, backend: { name: 'destroy-multicast', reason: bpfWhy } };
  const reason = `destroy-multicast: ${why}`;
  return { events: undefined, backend: { name: 'poll', reason: bpfWhy === undefined ? reason : `${bpfWhy}; ${reason}` } };
}

/** Nothing is watched: the event back-ends' shared sockets and streams go. */
function closeIdleBackends(): void {
  closeIdle();
  closeBpfIdle();
}

/** Stops following `w`, once its lifecycle ended. */
function forget(w: Watched): void {
  w.ended = true;
  unlisten(w);
  w.socket = undefined;
  w.events?.release(w);
  releaseNetns(w);
  if (--watchedCount === 0) {
    closeHomeNl();
    closeIdleBackends();
  }
  unqueue(w);
  if (byFd[w.fd] === w) byFd[w.fd] = undefined;
  if (queued() === 0) arm();
}

/** @internal For tests: whether the shared poller has a timer scheduled, and how many sockets it follows. */
export function pollerStatus(): { scheduled: boolean; watched: number } {
  return { scheduled: scheduled(), watched: watchedCount };
}

/**
 * @internal For tests: what the watcher of `lifecycle` knows of its socket (the cookie its
 * lookups ask for), and a way to look at it now instead of when it is due.
 */
export function watcherOf(
  lifecycle: Lifecycle,
): { cookie: string | undefined; namespaced: boolean; due: number; lookNow(): void } | undefined {
  const w = lifecycle.watcher() as Watched | undefined;
  if (!w) return undefined;
  return {
    cookie: w.id && recordCookie(w.id),
    namespaced: w.ns !== undefined,
    due: w.due,
    lookNow() {
      if (w.ended) return;
      scheduleAt(w, now());
      poll();
    },
  };
}

/**
 * Follows `socket` through its close until the kernel has forgotten it: `state`, `history`
 * (state, time, source), a `'transition'` event per step (also on diagnostics_channel
 * `finwait:socket:state`), `until(state)`, and `done` with the outcome and who closed first.
 * Works from before the socket connects; keeps following after Node closes the fd (TIME_WAIT and
 * orphans through sock_diag, by 4-tuple and cookie). One shared poller serves every watched
 * socket; it never keeps the process alive on its own and stops when nothing is watched.
 * An orphan Node's close leaves behind (FIN_WAIT1, CLOSING, LAST_ACK) is not polled where a
 * kernel event reports its end: the BPF state-change stream where it can run (CAP_BPF +
 * CAP_PERFMON, or root; its `sk_err` says how it ended), else the sock_diag destroy multicast (no
 * privilege needed); otherwise sock_diag is polled. `Lifecycle.backend` says which, and why where
 * it fell back; the environment variable
 * `FINWAIT_WATCH_BACKEND=bpf|destroy-multicast|poll` forces one. Watching a socket twice returns the
 * same `Lifecycle`.
 */
export function watch(socket: net.Socket): Lifecycle {
  assertSocket(socket);
  const existing = (socket as WithWatcher)[kWatched];
  if (existing) return existing.lifecycle;
  if (socket.destroyed) {
    throw codedError(
      'ERR_SOCKET_CLOSED',
      'Socket is closed: it was destroyed. Call watch() before the close to follow it (watching again returns the same Lifecycle)',
    );
  }
  constants(); // loads the addon now: a missing one or an unsupported platform throws here, not in the poller
  const fd = handleFd(socket);
  // A connecting socket's fd is read first when it connects: what is not TCP is refused now.
  if (fd < 0 && socketHandleKind(socket) === 'Pipe') {
    throw codedError('ENOTSUP', 'watch() follows TCP sockets; this one is a Unix domain socket or a pipe');
  }
  const w: Watched = {
    lifecycle: undefined as unknown as Lifecycle, // made next: it needs w
    socket,
    fd: -1,
    id: undefined,
    ns: undefined,
    fdClose: false,
    phase: 'pending',
    due: Infinity,
    slot: -1,
    step: FAST_MS,
    hooked: false,
    rawFin: false,
    ended: false,
    events: undefined,
    awaiting: false,
    // Every field set from the start, so that every watched socket's record has one shape (a
    // field added later gives it another, and the code that reads records gets slower).
    closedWith: undefined,
    lastDiag: undefined,
    rstsBefore: undefined,
    segsInAtClose: undefined,
  };
  const { events, backend } = chooseBackend();
  w.events = events;
  const lifecycle = (w.lifecycle = new Lifecycle(w, forget as (watcher: unknown) => void));
  lifecycle.setBackend(backend);
  const at = now();
  if (fd >= 0) {
    // Validates the fd (a Unix socket or UDP throws the kernel's error here) and records the start.
    w.phase = 'open';
    try {
      start(w, fd, at);
    } catch (error) {
      if (watchedCount === 0) closeIdleBackends();
      throw error;
    }
    w.fd = fd;
    byFd[fd] = w;
  }
  watchedCount++;
  (socket as WithWatcher)[kWatched] = w;
  listen(w, fd >= 0);
  if (fd >= 0) nameUnhooked(w, fd, at);
  if (fd >= 0) scheduleOpen(w, at, true);
  else scheduleAt(w, at + FAST_MS);
  arm();
  return lifecycle;
}
