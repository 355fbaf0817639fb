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
 * process alive. A socket is followed from just before Node closes its fd, so its CLOSE record
 * always comes after: nothing needs to be buffered, and every other record is dropped by cookie.
 *
 * What the record does not settle is looked up, as the destroy multicast's message is: a CLOSE
 * from FIN_WAIT1, FIN_WAIT2 or CLOSING with no error can be the hand-over to a TIME_WAIT (or to a
 * FIN_WAIT2 timewait socket), which sends no record of its own; and an orphan with our FIN sent
 * that receives new data answers it with an RST through the same kernel call that takes a
 * received one (`tcp_reset()`, sk_err ECONNRESET), so for such an orphan the namespace's count of
 * RSTs sent decides, as the poller's lookups do (src/tcp-counters.ts).
 */
import { debuglog } from 'node:util';
import { openStateChanges, stateChangesUnavailable, type StateChange, type StateChangeStream } from '../../bpf';
import { cookieHex, cookieKey, recordCookie } from '../../diag';
import type { CloseEvent } from '../fsm';
import { arm, now } from '../schedule';
import { BEFORE_TIME_WAIT, RESET_FROM, type EventBackend, type Watched } from '../watched';
import { destroyMulticast, unavailable as destroyMulticastUnavailable } from './destroy-multicast';
import { socketEnded } from './diag-follow';
import { toGone } from './node-hooks';

const debug = debuglog('finwait');

const EPIPE = 32;
const ECONNABORTED = 103;
const ECONNRESET = 104;
const ECONNREFUSED = 111;
/** Cookies below 2^53 are keyed as numbers, as `cookieKey()` keys them. */
const SAFE_COOKIE = 1n << 53n;

let stream: StateChangeStream | undefined;
/** `stream.lost` when it was last read: a rise means records were dropped. */
let lostSeen = 0;
/** Followed sockets whose CLOSE has not come yet, by cookie (`cookieKey()`). */
const following = new Map<number | string, Watched>();
/** @internal For tests: records read, those that ended a followed socket, and losses. */
const counts = { records: 0, matched: 0, lost: 0 };

/** Why this back-end cannot run here (no privilege, no BTF, a program refused), or `undefined`. */
export function unavailable(): string | undefined {
  return stateChangesUnavailable();
}

/** The key `cookieKey()` gives the cookie `cookie`. */
function keyOf(cookie: bigint): number | string {
  return cookie < SAFE_COOKIE ? Number(cookie) : cookieHex(cookie);
}

function idKey(w: Watched): number | string {
  return cookieKey(new DataView(w.id!.buffer, w.id!.byteOffset), 44);
}

function opened(): StateChangeStream {
  if (stream === undefined) {
    stream = openStateChanges(onChanges, { closeOnly: true }).unref();
    lostSeen = stream.lost;
  }
  return stream;
}

function close(): void {
  const s = stream;
  stream = undefined;
  s?.close();
}

/** Stops following `w`. */
function unfollow(w: Watched): void {
  if (!w.awaiting) return;
  w.awaiting = false;
  following.delete(idKey(w));
}

function onChanges(changes: StateChange[]): void {
  counts.records += changes.length;
  const at = now();
  for (const change of changes) {
    if (change.to !== 'CLOSE' || following.size === 0) continue;
    const w = following.get(keyOf(change.cookie));
    if (w === undefined) continue;
    try {
      ended(w, change, at);
    } catch (error) {
      // Never thrown into the stream's callback: the socket is looked up instead.
      debug('bpf: %s', (error as Error).message);
      if (!w.ended) socketEnded(w, at, false, true);
    }
  }
  const s = stream;
  if (s !== undefined && s.lost > lostSeen) {
    lostSeen = s.lost;
    lost();
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
    unfollow(w);
    w.events = undefined;
    w.lifecycle.setBackend({ name: 'poll', reason: 'bpf: state changes were lost (the ring buffer was full), so it is polled' });
    socketEnded(w, at, false, true);
  }
}

/**
 * The event `sk_err` `error` says ended a socket that left state `from`: `undefined` for none
 * (its state explains the end), `null` where the record cannot say and a lookup must (an orphan
 * with our FIN sent that may have answered data with an RST: `tcp_reset()` gives ECONNRESET then).
 */
function eventOf(w: Watched, from: string, error: number): CloseEvent | undefined | null {
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
function ended(w: Watched, change: StateChange, at: number): void {
  counts.matched++;
  unfollow(w);
  if (w.ended) return;
  // Its full socket is gone, so its fd is closed, even if Node's 'close' has not come yet.
  if (w.phase !== 'gone') toGone(w);
  const event = eventOf(w, change.from, change.error);
  if (event === null) {
    socketEnded(w, at, false, true);
    return;
  }
  if (event === undefined) {
    socketEnded(w, at, false, false);
    return;
  }
  const { lifecycle } = w;
  lifecycle.observe({ event, source: 'event', at });
  if (!w.ended && !lifecycle.observe({ state: 'CLOSED', source: 'event', at })) lifecycle.end();
}

/** The BPF stream, as the watcher uses it. */
export const bpf: EventBackend = {
  name: 'bpf',
  follow(w: Watched, fd: number): void {
    if (w.awaiting || w.ended || w.id === undefined || recordCookie(w.id) === undefined) return;
    try {
      opened();
    } catch (error) {
      // The program could be loaded when the back-end was chosen, not now: the destroy multicast
      // (or the poller) takes the socket, with the reason.
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
  release: unfollow,
};

/** Nothing is watched any more: the stream is closed (its program detached). */
export function closeIdle(): void {
  if (following.size === 0) close();
}

/** @internal For tests: what the back-end has done, and whether its stream is open. */
export function bpfStatus(): { records: number; matched: number; lost: number; following: number; open: boolean } {
  return { ...counts, following: following.size, open: stream !== undefined };
}
