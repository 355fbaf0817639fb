/**
 * The BPF state-change stream as an event back-end (`openStateChanges()` with `closeOnly`): the
 * kernel's tracepoint `sock:inet_sock_set_state` writes one record for every full TCP socket of
 * the host that enters CLOSE, with the socket's cookie, the state it left and `sk_err`. Where it
 * can run (CAP_BPF + CAP_PERFMON, or root; BTF), it reports the end of an orphan Node's close
 * leaves behind as the destroy multicast does, with what the destroy multicast cannot say: why it
 * ended. `sk_err` 104 (ECONNRESET) or 32 (EPIPE, an RST in CLOSE_WAIT) is an RST received, 110
 * (ETIMEDOUT) or a soft error left by an ICMP a timeout, 103 (ECONNABORTED) a kill (`ss -K`,
 * SOCK_DESTROY), 111 a refused connect; 0 an end the socket's own state explains (LAST_ACK's last
 * ACK, the hand-over to a TIME_WAIT, an RST this end sent).
 *
 * One stream serves every network namespace (cookies are unique host-wide); it is opened when the
 * first socket is followed and closed when nothing is watched (`closeIdle()`), and never keeps the
 * process alive. It is filtered in the kernel by cookie (`byCookie`): a socket's cookie goes into
 * the program's map just before Node closes its fd, so its CLOSE record always comes after and
 * nothing needs to be buffered; the program takes the cookie out with that record, and no other
 * socket of the host costs a record. The records are read raw (`openStateRecords()`): four fields
 * of each, no object per record.
 *
 * A CLOSE from FIN_WAIT2 or CLOSING with no error after the peer's FIN (the record's SOCK_DONE) is
 * the hand-over to a TIME_WAIT, which sends no record of its own: it is looked up only when its
 * 60 s run out. What the record does not settle is looked up, as the destroy multicast's message
 * is: a CLOSE from FIN_WAIT1 or FIN_WAIT2 with no error and no FIN from the peer can be the
 * hand-over to a FIN_WAIT2 timewait socket, or the end of the orphan's FIN_WAIT2 timer. An orphan
 * with our FIN sent that receives new data answers it with an RST through the same kernel call
 * that takes a received one (`tcp_reset()`, sk_err ECONNRESET): for such an orphan the
 * namespace's count of RSTs sent decides, as the poller's lookups do (src/tcp-counters.ts), since
 * the orphan is often a FIN_WAIT2 timewait socket by then, which answers data with an RST that no
 * record shows.
 */
import { debuglog } from 'node:util';
import os from 'node:os';
import { AT, openStateRecords, RECORD, recordCookieKey, stateChangesUnavailable, type StateRecordStream } from '../../bpf';
import { stateName } from '../../states';
import type { CloseEvent } from '../fsm';
import { arm, now } from '../schedule';
import { BEFORE_TIME_WAIT, RESET_FROM, hasCookie, idCookieKey, type EventBackend, type Watched } from '../watched';
import { destroyMulticast, unavailable as destroyMulticastUnavailable } from './destroy-multicast';
import { socketEnded, timeWaitBegan } from './diag-follow';
import { toGone } from './node-hooks';

const debug = debuglog('finwait');

const EPIPE = 32;
const ECONNABORTED = 103;
const ECONNRESET = 104;
const ECONNREFUSED = 111;
const TCP_CLOSE = 7;
/** `sk_flags` bit SOCK_DONE (enum sock_flags: SOCK_DEAD, SOCK_DONE, ...): set by tcp_fin(). */
const SOCK_DONE = 1 << 1;
/** The cookie's place in a `sockDiagId` record. */
const ID_COOKIE = 44;
const LE = os.endianness() === 'LE';

let stream: StateRecordStream | undefined;
/** Followed sockets whose CLOSE has not come yet, by cookie (`cookieKey()`). */
const following = new Map<number | string, Watched>();
/** @internal For tests: records read, those that ended a followed socket, and losses. */
const counts = { records: 0, matched: 0, lost: 0 };

/** Why this back-end cannot run here (no privilege, no BTF, a program refused), or `undefined`. */
export function unavailable(): string | undefined {
  return stateChangesUnavailable();
}

function idKey(w: Watched): number | string {
  return idCookieKey(w.id!);
}

function opened(): StateRecordStream {
  if (stream === undefined) {
    stream = openStateRecords(onRecords, lost, { closeOnly: true, byCookie: true }).unref();
  }
  return stream;
}

function close(): void {
  const s = stream;
  stream = undefined;
  s?.close();
}

/** Stops following `w`: its CLOSE record came (and took its cookie out of the filter), or, with `filtered`, not yet. */
function unfollow(w: Watched, filtered = true): void {
  if (!w.awaiting) return;
  w.awaiting = false;
  following.delete(idKey(w));
  if (!filtered || stream === undefined) return;
  try {
    stream.removeCookieAt(w.id!, ID_COOKIE);
  } catch (error) {
    debug('bpf: %s', (error as Error).message);
  }
}

/** What a CLOSE record says of its socket (decoded from the raw record). */
interface Ended {
  from: string | undefined;
  error: number;
  /** SOCK_DONE was set: the peer's FIN had been received. */
  peerFin: boolean;
}

function onRecords(bytes: Uint8Array, view: DataView, count: number): void {
  counts.records += count;
  const at = now();
  for (let i = 0, off = 0; i < count; i++, off += RECORD) {
    if (bytes[off + AT.TO] !== TCP_CLOSE || following.size === 0) continue;
    const w = following.get(recordCookieKey(view, off));
    if (w === undefined) continue;
    const change: Ended = {
      from: stateName(bytes[off + AT.FROM]!),
      error: view.getInt32(off + AT.ERROR, LE),
      peerFin: (view.getUint32(off + AT.SK_FLAGS, LE) & SOCK_DONE) !== 0,
    };
    try {
      ended(w, change, at);
    } catch (error) {
      // Never thrown into the stream's callback: the socket is looked up instead.
      debug('bpf: %s', (error as Error).message);
      if (!w.ended) socketEnded(w, at, false, true);
    }
  }
  arm();
}

/**
 * Records were dropped (the ring buffer was full): any followed socket may have ended unseen, so
 * each is looked up now, and followed on by the poller.
 */
function lost(): void {
  counts.lost++;
  debug('bpf: state changes lost');
  const at = now();
  for (const w of [...following.values()]) {
    unfollow(w, true);
    w.events = undefined;
    w.lifecycle.setBackend({ name: 'poll', reason: 'bpf: state changes were lost (the ring buffer was full), so it is polled' });
    socketEnded(w, at, false, true);
  }
  arm();
}

/**
 * The event `sk_err` says ended a socket that left state `from`: `undefined` for none (its state
 * explains the end), `null` where the record cannot say and a lookup must (an orphan with our FIN
 * sent that may have answered data with an RST: `tcp_reset()` gives ECONNRESET then).
 */
function eventOf(w: Watched, { from, error }: Ended): CloseEvent | undefined | null {
  if (error === 0) return undefined;
  if (error === ECONNRESET || error === EPIPE || error === ECONNREFUSED) {
    return BEFORE_TIME_WAIT.has(from as never) && w.rstsBefore !== undefined ? null : 'rst-received';
  }
  // Killed (tcp_abort()): the kernel sends an RST from the states where a close would
  // (tcp_need_reset()), and nothing from LAST_ACK or CLOSING, where the connection is dropped
  // without a segment, as when the kernel gives up on it.
  if (error === ECONNABORTED) return RESET_FROM.has(from as never) ? 'rst-sent' : 'timeout';
  // ETIMEDOUT, or the soft error (an ICMP's) the kernel gave up with.
  return 'timeout';
}

/** The CLOSE record `change` of the followed socket `w`. */
function ended(w: Watched, change: Ended, at: number): void {
  counts.matched++;
  unfollow(w, false);
  if (w.ended) return;
  // Its full socket is gone, so its fd is closed, even if Node's 'close' has not come yet.
  if (w.phase !== 'gone') toGone(w);
  const event = eventOf(w, change);
  if (event === null) {
    socketEnded(w, at, false, true);
    return;
  }
  if (event === undefined) {
    // From FIN_WAIT2 or CLOSING with the peer's FIN received, the end is the hand-over to a
    // TIME_WAIT (tcp_time_wait()): nothing to look up before its timer runs out. Without it, a
    // FIN_WAIT2 timewait socket may have taken over, or the orphan's timer dropped it: looked up.
    if (change.peerFin && (change.from === 'FIN_WAIT2' || change.from === 'CLOSING')) timeWaitBegan(w, at);
    else socketEnded(w, at, false, false);
    return;
  }
  const { lifecycle } = w;
  lifecycle.observe({ event, source: 'event', at });
  if (!w.ended && !lifecycle.observe({ state: 'CLOSED', source: 'event', at })) lifecycle.end();
}

/** The BPF stream, as the watcher uses it. */
export const bpf: EventBackend = {
  name: 'bpf',
  finalTcpInfo: false,
  follow(w: Watched, fd: number): void {
    if (w.awaiting || w.ended || w.id === undefined || !hasCookie(w.id)) return;
    try {
      opened().addCookieAt(w.id, ID_COOKIE);
    } catch (error) {
      // The program could be loaded when the back-end was chosen, not now, or its cookie filter is
      // full: the destroy multicast (or the poller) takes the socket, with the reason.
      const reason = `bpf: ${(error as Error).message}`;
      const why = destroyMulticastUnavailable();
      if (why === undefined) {
        w.events = destroyMulticast;
        w.lifecycle.setBackend({ name: 'destroy-multicast', reason });
        destroyMulticast.follow(w, fd);
      } else {
        w.events = undefined;
        w.lifecycle.setBackend({ name: 'poll', reason: `${reason}; destroy-multicast: ${why}` });
      }
      return;
    }
    w.awaiting = true;
    following.set(idKey(w), w);
  },
  release: (w) => unfollow(w),
};

/** Nothing is watched any more: the stream is closed (its program detached). */
export function closeIdle(): void {
  if (following.size === 0) close();
}

/** @internal For tests: what the back-end has done, and whether its stream is open. */
export function bpfStatus(): { records: number; matched: number; lost: number; following: number; open: boolean } {
  return { ...counts, following: following.size, open: stream !== undefined };
}
