/**
 * Following a connection through sock_diag once Node has closed its fd: its name for lookups (the
 * 4-tuple and the `SO_COOKIE` a TIME_WAIT of it keeps, read just before its FIN goes out), the
 * netlink socket of each network namespace a watched socket lives in, and the batched lookups of
 * the sockets that are due, which find its orphan (FIN_WAIT1, FIN_WAIT2, CLOSING, LAST_ACK), its
 * TIME_WAIT, or nothing: the kernel has forgotten it.
 */
import fs from 'node:fs';
import { debuglog } from 'node:util';
import { native } from '../../binding';
import {
  DIAG_MSG_LEN,
  ID_RECORD,
  isLost,
  isMiss,
  recordInNetns,
  recordNetns,
  recordOf,
  replyAt,
  sameTuple,
  socketTuple,
  type SocketTimer,
} from '../../diag';
import type { TcpState } from '../../states';
import { stateOrThrow } from '../../tcp-info';
import { completePath, type LifecycleState } from '../fsm';
import { AWAIT_MS, FAST_MS, LATE_MS, SAFETY_MS, SLOW_MS, TIMER_MARGIN_MS, now, scheduleAt } from '../schedule';
import { BEFORE_TIME_WAIT, observeFd, readState, type Netns, type Watched } from '../watched';
import { openCounters, rstsSent } from '../../tcp-counters';

const debug = debuglog('finwait');

/** The network namespaces of watched sockets that are not this thread's, by their cookie. */
const namespaces = new Map<string, Netns>();
/** The netlink socket for lookups in this thread's namespace, -1 when none is open. */
let homeNl = -1;
/** This thread's network namespace's cookie (SO_NETNS_COOKIE) as `sockDiagId` writes it, read on first use. */
let homeNetns: Uint8Array | undefined;
/** This thread's namespace's /proc/net/snmp (see tcp-counters.ts): `null` until first needed. */
let homeCounters: number | undefined | null = null;

/**
 * The count of RSTs sent read at a close in this turn of the event loop, by namespace (`undefined`:
 * this thread's); emptied when the turn ends (setImmediate).
 */
const turnRsts = new Map<Netns | undefined, number>();
const endTurn = (): void => turnRsts.clear();

/**
 * Notes the count of RSTs sent in `w`'s namespace as its fd closes in a state whose orphan
 * answers data with an RST: data can come before the orphan is first looked up. The count read
 * at the first such close of the namespace in a turn of the event loop serves the others of that
 * turn (a read of /proc/net/snmp per close was the largest part of a close's cost): it can only
 * be lower, which widens the window in which another socket's RST is taken for the orphan's by
 * the rest of that turn.
 */
export function noteRstsAtClose(w: Watched): void {
  let count = turnRsts.get(w.ns);
  if (count === undefined) {
    count = rstsSent(countersOf(w.ns)) ?? NaN;
    if (turnRsts.size === 0) setImmediate(endTurn).unref();
    turnRsts.set(w.ns, count);
  }
  w.rstsBefore = count;
}

/** The /proc/net/snmp of the namespace `ns` (`undefined`: this thread's), `undefined` if unreadable. */
function countersOf(ns: Netns | undefined): number | undefined {
  if (ns !== undefined) return ns.counters;
  if (homeCounters === null) homeCounters = openCounters(null);
  return homeCounters;
}

/**
 * The first look at an fd: its state (which also says it is a TCP socket: anything else throws),
 * and its name for sock_diag at once if its FIN went out already.
 */
export function start(w: Watched, fd: number, at: number): void {
  const state = readState(fd);
  observeFd(w, state, at);
  if (state === 'CLOSE' || BEFORE_TIME_WAIT.has(state)) identify(w, fd, at);
}

/** Records handed out per slab: a slab's memory is freed once none of its records is in use. */
const SLAB_RECORDS = 256;
let slab = new Uint8Array(0);
let slabNext = 0;

/**
 * A fresh (zeroed) `sockDiagId` record: a view of a shared slab. A small typed array of its own
 * lives in the V8 heap until the addon asks for its memory, which then gets a buffer of its own
 * (an allocation and a finalizer per watched socket): views of one buffer skip both.
 */
function idRecord(): Uint8Array {
  if (slabNext === slab.length) {
    slab = new Uint8Array(SLAB_RECORDS * ID_RECORD);
    slabNext = 0;
  }
  const id = slab.subarray(slabNext, slabNext + ID_RECORD);
  slabNext += ID_RECORD;
  return id;
}

/**
 * Names the connection behind `fd` for sock_diag (its 4-tuple and the cookie a TIME_WAIT of it
 * will have) and reads its state, in one native call; returns the state. An fd that already
 * reads CLOSE has no peer to name: Node's cached 4-tuple then, if it has one, without a cookie.
 */
export function identify(w: Watched, fd: number, at: number): TcpState {
  const id = idRecord();
  const connected = native().sockDiagId(fd, id);
  const state = stateOrThrow(id[1]!);
  if (connected) {
    w.id = id;
    w.ns = netnsOf(id, fd);
  }
  observeFd(w, state, at);
  if (!connected && state === 'CLOSE' && w.id === undefined && !w.ended) {
    const tuple = w.socket && socketTuple(w.socket);
    w.id = tuple && recordOf(tuple);
  }
  return state;
}

/**
 * Names at once a connection whose handle could not be hooked (another library hooked it first):
 * its FIN would go out unseen, and only 'close' would say that the fd is gone.
 */
export function nameUnhooked(w: Watched, fd: number, at: number): void {
  if (!w.hooked && w.id === undefined && !w.ended) identify(w, fd, at);
}

/**
 * Names `w`'s connection unless it is named already or its peer closed first (then this end
 * cannot reach TIME_WAIT, and the fd's last read says what lookups it needs): just before this
 * end sends its FIN.
 */
export function identifyBeforeFin(w: Watched, fd: number): void {
  if (w.id !== undefined || w.ended || fd < 0) return;
  const settled = w.lifecycle.model().settled;
  if (settled === 'CLOSE_WAIT' || settled === 'LAST_ACK') return;
  identify(w, fd, now());
}

/** The namespace of a socket whose `sockDiagId` record is `id`: `undefined` if it is this thread's. */
function netnsOf(id: Uint8Array, fd: number): Netns | undefined {
  homeNetns ??= new Uint8Array(new BigUint64Array([native().netnsCookie()]).buffer);
  if (recordInNetns(id, homeNetns)) return undefined;
  const key = recordNetns(id)!;
  let ns = namespaces.get(key);
  if (ns === undefined) {
    const nsFd = native().socketNetns(fd);
    try {
      ns = { nl: native().sockDiagSocket(nsFd), key, users: 0, counters: undefined };
      ns.counters = openCounters(nsFd);
    } finally {
      native().closeFd(nsFd);
    }
    namespaces.set(key, ns);
  }
  ns.users++;
  return ns;
}

export function releaseNetns(w: Watched): void {
  const ns = w.ns;
  w.ns = undefined;
  if (ns === undefined || --ns.users > 0) return;
  turnRsts.delete(ns);
  namespaces.delete(ns.key);
  // Both made by the addon inside the namespace: closed by it (see Native.closeFd).
  native().closeFd(ns.nl);
  if (ns.counters !== undefined) native().closeFd(ns.counters);
}

export function closeHomeNl(): void {
  if (typeof homeCounters === 'number') fs.closeSync(homeCounters);
  homeCounters = null;
  if (homeNl < 0) return;
  const nl = homeNl;
  homeNl = -1;
  native().closeFd(nl);
}

let requests = new Uint8Array(64 * ID_RECORD);
let replies = new Uint8Array(64 * DIAG_MSG_LEN);
let statuses = new Int32Array(64);

/** sock_diag lookups of sockets whose fd Node closed: one batch per network namespace. */
export function lookUp(gone: Watched[], at: number): void {
  if (statuses.length < gone.length) {
    requests = new Uint8Array(2 * gone.length * ID_RECORD);
    replies = new Uint8Array(2 * gone.length * DIAG_MSG_LEN);
    statuses = new Int32Array(2 * gone.length);
  }
  // Nearly always one namespace, this one: sort only when there are more.
  if (gone.some((w) => w.ns !== gone[0]!.ns)) gone.sort((a, b) => (a.ns?.nl ?? -1) - (b.ns?.nl ?? -1));
  const view = new DataView(replies.buffer);
  for (let first = 0; first < gone.length; ) {
    const ns = gone[first]!.ns;
    let end = first;
    while (end < gone.length && gone[end]!.ns === ns) {
      requests.set(gone[end]!.id!, (end - first) * ID_RECORD);
      end++;
    }
    const count = end - first;
    // RSTs sent in the namespace (see tcp-counters.ts), read only if the lookups show an orphan
    // that can be reset (a baseline for those: read just after the lookup, which found them still
    // there, so before any RST of theirs), or one gone that had a baseline (the count after).
    let before: number | undefined;
    let after: number | undefined | null = null;
    try {
      if (ns === undefined && homeNl < 0) homeNl = native().sockDiagSocket();
      native().sockDiagFind(ns?.nl ?? homeNl, requests, replies, statuses.subarray(0, count));
    } catch (error) {
      // The netlink socket failed (EMFILE, ENOMEM): every one of them is asked again soon, the
      // home one through a new socket.
      debug('sock_diag: %s', (error as Error).message);
      if (ns === undefined) closeHomeNl();
      for (let i = first; i < end; i++) scheduleAt(gone[i]!, at + SLOW_MS);
      first = end;
      continue;
    }
    for (let i = 0; i < count; i++) {
      const w = gone[first + i]!;
      const status = statuses[i]!;
      try {
        if (status === 1 && sameTuple(requests, i, replies, i)) {
          const seen = replyAt(view, i);
          if (BEFORE_TIME_WAIT.has(seen.state)) w.rstsBefore = before ??= rstsSent(countersOf(ns)) ?? NaN;
          followGone(w, seen, at);
        } else if (status === 1 || isMiss(status)) {
          if (w.rstsBefore !== undefined) after ??= rstsSent(countersOf(ns));
          followGone(w, undefined, at, after ?? undefined);
        } else {
          if (!isLost(status)) debug('sock_diag lookup: errno %d', -status);
          w.step = Math.min(w.step * 2, SLOW_MS);
          scheduleAt(w, at + w.step);
        }
      } catch (error) {
        debug('sock_diag lookup: %s', (error as Error).message);
        if (!w.ended) scheduleAt(w, at + SLOW_MS);
      }
    }
    first = end;
  }
}

/** The state `w` was last known in: as sock_diag last showed it, else the model's. */
function lastState(w: Watched): LifecycleState {
  return w.lastDiag?.state ?? (w.lifecycle.model().settled as LifecycleState);
}

/**
 * After Node closed the fd: the connection as sock_diag showed it, or gone (`undefined`; then
 * `rsts` is the namespace's count of RSTs sent, read after the lookup, if it was asked for).
 */
function followGone(w: Watched, seen: { state: TcpState; timer: SocketTimer } | undefined, at: number, rsts?: number): void {
  const { lifecycle } = w;
  if (!seen) {
    if (orphanTimedOut(w.lastDiag, at)) lifecycle.observe({ event: 'fin-wait2-timeout', source: 'diag', at });
    // FIN_WAIT1, CLOSING and FIN_WAIT2 end in a TIME_WAIT that sock_diag shows for 60 s, or by
    // FIN_WAIT2's timer: an orphan gone from them otherwise was reset. sock_diag cannot say by
    // whom: the count of RSTs sent in its namespace can. It rose since the orphan was last seen:
    // the orphan answered data with an RST; it did not: the peer's RST. Without the count, the
    // peer's, which an orphan that is not sent data meets.
    else if (BEFORE_TIME_WAIT.has(lastState(w))) {
      const sent = w.rstsBefore !== undefined && rsts !== undefined && rsts > w.rstsBefore;
      lifecycle.observe({ event: sent ? 'rst-sent' : 'rst-received', source: 'diag', at });
    }
    if (!lifecycle.observe({ state: 'CLOSED', source: 'diag', at })) lifecycle.end();
    return;
  }
  w.lastDiag = { state: seen.state, timer: seen.timer, at };
  const changed = lifecycle.observe({ state: seen.state, source: 'diag', at });
  if (w.ended) return;
  const { kind, expiresMs } = seen.timer;
  if (seen.state === 'TIME_WAIT' || (seen.state === 'FIN_WAIT2' && kind !== 'off')) {
    // Nothing more happens before the timer runs out, but for a TIME_WAIT an RST (RFC 1337) or
    // a new SYN on its 4-tuple, seen when it is next looked at. A FIN_WAIT2 orphan goes on to
    // TIME_WAIT when the peer's FIN comes: looked at at least every second.
    const wait = expiresMs > 0 ? expiresMs + TIMER_MARGIN_MS : LATE_MS;
    scheduleAt(w, at + (seen.state === 'FIN_WAIT2' ? Math.min(wait, SAFETY_MS) : wait));
  } else if (w.awaiting) {
    // A full socket still: the event back-end reports its end.
    scheduleAt(w, at + AWAIT_MS);
  } else {
    // FIN_WAIT1, CLOSING, LAST_ACK: short, unless segments are lost.
    w.step = changed ? FAST_MS : Math.min(w.step * 2, SLOW_MS);
    scheduleAt(w, at + w.step);
  }
}

/**
 * An event back-end reports that `w`'s full socket was freed (`answeredData`: after receiving
 * new data as an orphan, which it answered with an RST), or, with `resync`, that its report may
 * have been lost. Where a timewait socket can have taken over (TIME_WAIT, or FIN_WAIT2 with a timer
 * of at most 60 s), it is looked up now; otherwise the connection is over.
 */
export function socketEnded(w: Watched, at: number, answeredData: boolean, resync: boolean): void {
  if (w.ended) return;
  if (answeredData) w.lifecycle.observe({ event: 'rst-sent', source: 'diag', at });
  if (w.ended) return;
  // The model's settled state can lag (a FIN sent by shutdown(2) is known only once a read shows
  // it): only a state from which no TIME_WAIT can follow (CLOSE_WAIT, LAST_ACK) spares the look.
  const last = w.lastDiag?.state ?? w.lifecycle.model().settled;
  if (resync || last === undefined || completePath(last, 'TIME_WAIT') !== undefined) {
    w.step = FAST_MS;
    scheduleAt(w, at);
  } else {
    followGone(w, undefined, at);
  }
}

/** TIME_WAIT's length on Linux (TCP_TIMEWAIT_LEN), ms. */
const TIME_WAIT_MS = 60_000;

/**
 * An event back-end saw `w`'s full socket handed over to a TIME_WAIT (its CLOSE came after the
 * peer's FIN, with no error): TIME_WAIT is recorded now, and the timewait socket is looked up
 * when its 60 s have run out (found still there, it is followed by its timer as any other).
 */
export function timeWaitBegan(w: Watched, at: number): void {
  if (w.ended) return;
  w.lifecycle.observe({ state: 'TIME_WAIT', source: 'event', at });
  if (w.ended) return;
  w.step = FAST_MS;
  scheduleAt(w, at + TIME_WAIT_MS + TIMER_MARGIN_MS);
}

/** @internal What sock_diag showed of a connection after its fd closed, and when (ms). */
export interface DiagSighting {
  state: TcpState;
  timer: SocketTimer;
  at: number;
}

/**
 * @internal True if a connection that just vanished from sock_diag was last seen there as an
 * orphaned FIN_WAIT2 whose timer (TCP_LINGER2, tcp_fin_timeout) had run out by now: the kernel
 * dropped it without the peer's FIN. Had the FIN come, TIME_WAIT would still be listed for 60 s.
 */
export function orphanTimedOut(last: DiagSighting | undefined, at: number): boolean {
  if (!last || last.state !== 'FIN_WAIT2' || last.timer.kind === 'off') return false;
  return at >= last.at + last.timer.expiresMs;
}
