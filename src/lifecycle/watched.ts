/**
 * What `watch()` keeps for each watched socket, shared by the sources that observe it: the record
 * (`Watched`), the registry that finds it from the socket or from its fd, the state sets the
 * sources decide with, and the one way an fd's state enters the model.
 */
import type net from 'node:net';
import os from 'node:os';
import { native } from '../binding';
import { cookieKey } from '../diag';
import type { TcpState } from '../states';
import { stateOrThrow } from '../tcp-info';
import type { LifecycleState } from './fsm';
import type { Lifecycle } from './lifecycle';
import type { DiagSighting } from './sources/diag-follow';

/** Where a watched socket is in its life, which decides how often it is looked at. */
export type Phase =
  /** No fd yet (watched before connecting). */
  | 'pending'
  /** An fd Node holds, not closing: Node's events report what happens; a slow safety net. */
  | 'open'
  /** From this end's FIN or the peer's 'end' (or a close state read) to the close: polled fast. */
  | 'closing'
  /** Node closed the fd: sock_diag, when the kernel's timer says something can have changed. */
  | 'gone';

/**
 * A network namespace other than this thread's, while a socket of it is watched: a netlink socket
 * made inside it (for the lookups there; it also keeps the namespace alive).
 */
export interface Netns {
  nl: number;
  key: string;
  users: number;
  /** Its /proc/net/snmp, opened inside it (`undefined` where it could not be). */
  counters: number | undefined;
}

export interface Watched {
  lifecycle: Lifecycle;
  /** The socket, until it is destroyed and its fd closed (then nothing is asked of it). */
  socket: net.Socket | undefined;
  /** The fd the socket had when last seen, -1 before it has one. */
  fd: number;
  /**
   * The connection's name for sock_diag lookups (a `sockDiagFind` record): its 4-tuple, and its
   * `SO_COOKIE`, read while the fd was open and before TIME_WAIT could begin (a TIME_WAIT socket
   * copies the cookie its connection had by then), so that a later connection on the same 4-tuple
   * is not taken for it. Read only when the connection can outlive its fd: just before this end
   * sends its FIN (Node's shutdown or close, `shutdown()`), or when a read shows the FIN went out
   * by another way; an end whose peer closed first, and that reads CLOSE when Node closes it, is
   * never looked up. `undefined` until then.
   */
  id: Uint8Array | undefined;
  /** Its network namespace, if not this thread's (a lab host's): lookups are made there. */
  ns: Netns | undefined;
  /** The fd read CLOSE: it can show nothing more, so it is not read again. */
  fdClose: boolean;
  /** The state, unread bytes and SO_LINGER when Node closed the fd (from the close hook). */
  closedWith?: { state: LifecycleState | undefined; unread: number; linger0: boolean; linger2: number };
  phase: Phase;
  /** When the socket is next looked at (ms, `performance.now()`); its key in the heap. */
  due: number;
  /** Its index in the heap, -1 when not queued. */
  slot: number;
  /** The fast cadence's current step (ms): 1 after a change, doubling to 100 while nothing changes. */
  step: number;
  /** Its handle's shutdown and close are hooked. */
  hooked: boolean;
  /** finwait's `shutdown()` sent this end's FIN (at once: no Node event says so). */
  rawFin: boolean;
  /** What sock_diag last showed after Node closed the fd, and when (ms). */
  lastDiag?: DiagSighting;
  /** The lifecycle ended: nothing more is looked at. */
  ended: boolean;
  /** The event back-end that reports the end of this socket, if any (else the poller alone). */
  events: EventBackend | undefined;
  /**
   * The event back-end follows the socket (it was named, with its cookie) and has not reported
   * its end yet: while the fd is gone, nothing is looked up but a slow safety net.
   */
  awaiting: boolean;
  /**
   * RSTs sent in its namespace (`Tcp: OutRsts`) just before sock_diag last showed it as an orphan
   * that answers data with an RST; `NaN` when the count could not be read.
   */
  rstsBefore?: number;
  /**
   * `tcpi_data_segs_in` when Node closed the fd, in a state whose orphan answers new data with an
   * RST, read for an event back-end whose report of the socket's end carries the count then.
   */
  segsInAtClose?: number;
}

/** The back-ends that follow a watched socket: one kind of kernel event, and the poller as their net. */
export type WatchBackendName = 'bpf' | 'destroy-multicast' | 'poll';

/**
 * Which back-end follows a connection: `'bpf'` (the BPF state-change stream reports the end of an
 * orphan Node's close leaves behind, with `sk_err` saying how it ended; needs CAP_BPF + CAP_PERFMON
 * or root), `'destroy-multicast'` (the sock_diag destroy multicast reports that end; sock_diag is
 * asked only when a TIME_WAIT can have followed and when its timer runs out), or `'poll'`
 * (sock_diag is asked on a cadence). `reason` says why a back-end earlier in that order is not the one.
 */
export interface WatchBackend {
  readonly name: WatchBackendName;
  readonly reason?: string;
}

/** An event back-end, as the watcher uses it (`sources/bpf.ts`, `sources/destroy-multicast.ts`). */
export interface EventBackend {
  readonly name: WatchBackendName;
  /** Its report of a socket's end carries the final tcp_info (so `segsInAtClose` is read at the close). */
  readonly finalTcpInfo: boolean;
  /**
   * Follows `w`, named (its cookie known), whose `fd` Node is about to close in a state that leaves
   * a full socket behind (an orphan): from now on that socket's end is reported. Where it cannot
   * (its namespace refuses), `w` is left to the poller, and its lifecycle's back-end says why.
   */
  follow(w: Watched, fd: number): void;
  /** Stops following `w` (its lifecycle ended). */
  release(w: Watched): void;
}

const LE = os.endianness() === 'LE';

/**
 * The key `cookieKey()` gives the cookie in the `sockDiagId` record `id` (a number below 2^53,
 * else its hex digits), read from the bytes: the key the event back-ends follow a socket by.
 */
export function idCookieKey(id: Uint8Array): number | string {
  if (LE) {
    const high = (id[48]! | (id[49]! << 8) | (id[50]! << 16) | (id[51]! << 24)) >>> 0;
    if (high < 0x200000) return high * 0x100000000 + ((id[44]! | (id[45]! << 8) | (id[46]! << 16) | (id[47]! << 24)) >>> 0);
  }
  return cookieKey(new DataView(id.buffer, id.byteOffset, id.byteLength), 44);
}

/** True if the `sockDiagId` record `id` holds a cookie (not all ones: none could be read). */
export function hasCookie(id: Uint8Array): boolean {
  for (let i = 44; i < 52; i++) if (id[i] !== 0xff) return true;
  return false;
}

/** States in which the connection is not closing (yet). */
export const NOT_CLOSING: ReadonlySet<LifecycleState> = new Set(['SYN_SENT', 'SYN_RECV', 'NEW_SYN_RECV', 'ESTABLISHED', 'LISTEN']);
/** States in which our FIN has gone out. */
export const FIN_SENT: ReadonlySet<LifecycleState> = new Set(['FIN_WAIT1', 'FIN_WAIT2', 'CLOSING', 'LAST_ACK']);
/** States with this end's FIN sent from which TIME_WAIT can follow: the connection must be named by now. */
export const BEFORE_TIME_WAIT: ReadonlySet<LifecycleState> = new Set(['FIN_WAIT1', 'FIN_WAIT2', 'CLOSING']);
/** States from which a close with SO_LINGER {1, 0} always sends an RST (tcp_need_reset()). */
export const RESET_FROM: ReadonlySet<LifecycleState> = new Set(['ESTABLISHED', 'CLOSE_WAIT', 'FIN_WAIT1', 'FIN_WAIT2', 'SYN_RECV']);
/** States in which closing the fd can send an RST (unread data, SO_LINGER {1, 0}). */
export const UNSYNCHRONIZED: ReadonlySet<LifecycleState> = new Set(['CLOSE', 'LISTEN', 'SYN_SENT', 'TIME_WAIT']);

/** A watched socket's watcher, on the socket itself (cheaper than a WeakMap, whose entries cost every GC). */
export const kWatched = Symbol('finwait.watched');
export type WithWatcher = { [kWatched]?: Watched };
/** Watched sockets by the fd Node holds for them (an fd is not reused while it is open). */
export const byFd: (Watched | undefined)[] = [];

/** Folds a state read on the fd into the model; a close state starts the closing phase. */
export function observeFd(w: Watched, state: TcpState, at: number): boolean {
  if (state === 'CLOSE') w.fdClose = true;
  if (w.phase === 'open' && !NOT_CLOSING.has(state)) w.phase = 'closing';
  return w.lifecycle.observe({ state, source: 'kernel', at });
}

/** One state read, not published on `finwait:socket:observed` (watch() would hear itself). */
export function readState(fd: number): TcpState {
  return stateOrThrow(native().tcpState(fd));
}

