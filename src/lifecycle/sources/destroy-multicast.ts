/**
 * The sock_diag destroy multicast as an event back-end (what `ss -E` listens to). The kernel sends
 * one message to the TCP destroy groups of a network namespace for every full TCP socket freed
 * there: a `struct inet_diag_msg` with the socket's cookie and 4-tuple, in state CLOSE, and its
 * final `struct tcp_info` (INET_DIAG_INFO). No privilege is needed, also inside a user namespace.
 *
 * A socket Node has closed lives on in the kernel as an orphan (FIN_WAIT1, CLOSING, LAST_ACK,
 * FIN_WAIT2 with a long TCP_LINGER2) until its message comes, so nothing needs to be looked up
 * while it lasts: one look follows the message where a timewait socket can have taken over (a
 * TIME_WAIT, or a FIN_WAIT2 with a timer of at most 60 s, which the kernel hands to a timewait
 * socket at once), and a timewait socket is not a full socket and sends no message of its own:
 * its end is still found by a look when its timer runs out.
 *
 * One bound netlink socket per network namespace a followed socket lives in, joined to the
 * destroy group of each address family only while an orphan of that family there is followed;
 * libuv says when it is readable (FdPoll), and each turn reads what is queued in batches into one
 * reused buffer, until a read finds nothing. While joined, every TCP socket freed in the
 * namespace costs a message, built by a kernel worker that wakes when the socket is freed (on a
 * busy machine, often in the middle of the close(2) that frees it: ~2 context switches per
 * socket), read here and dropped unless it is one of ours. So a socket is followed only when
 * Node closes its fd in a state that leaves a full socket behind: an fd that read CLOSE
 * (TIME_WAIT began, or it was reset) needs no message, and short connections closed that way
 * cost nothing here.
 */
import { debuglog } from 'node:util';
import { native, type NativeEventsSocket, type NativeFdPoll } from '../../binding';
import {
  AF_INET6,
  DESTROY_GROUP_V4,
  DESTROY_GROUP_V6,
  DESTROY_LOST,
  DESTROY_READS_PER_TURN,
  DESTROY_SLOT,
  DESTROY_SLOTS,
  INET_DIAG_INFO,
  messageAttribute,
  messageCookie,
} from '../../diag';
import { arm, now } from '../schedule';
import { hasCookie, idCookieKey, type EventBackend, type Watched } from '../watched';
import { socketEnded } from './diag-follow';
import { toGone } from './node-hooks';
import { TCPI_DATA_SEGS_IN } from '../../tcp-info';

const debug = debuglog('finwait');

/** Asked of SO_RCVBUF (the kernel caps it at net.core.rmem_max): room for a burst of messages. */
const RCVBUF = 4 << 20;

/** A namespace's bound netlink socket and how many followed sockets of each family need it. */
interface Listener {
  /** `''` for this thread's namespace, else its cookie (as `Netns.key`). */
  key: string;
  socket: NativeEventsSocket;
  fd: number;
  poll: NativeFdPoll;
  v4: number;
  v6: number;
}

const listeners = new Map<string, Listener>();
/** Followed sockets not destroyed yet, by cookie (`cookieKey()`; cookies are unique host-wide). */
const following = new Map<number | string, Watched>();
const buffer = new Uint8Array(DESTROY_SLOTS * DESTROY_SLOT);
const view = new DataView(buffer.buffer);
const lengths = new Int32Array(DESTROY_SLOTS);
/** @internal For tests: messages read, and those that ended a followed socket. */
const counts = { messages: 0, matched: 0, lost: 0 };

/** Why this back-end cannot run here, or `undefined` when it can (makes this thread's listener). */
export function unavailable(): string | undefined {
  try {
    listener('', -1);
    return undefined;
  } catch (error) {
    return (error as Error).message;
  }
}

/** The listener of namespace `key`, made if needed (in the namespace of the socket `fd` when not this thread's). */
function listener(key: string, fd: number): Listener {
  let l = listeners.get(key);
  if (l !== undefined) return l;
  const n = native();
  if (n.SockDiagEventsSocket === undefined) throw new Error('this build of the addon has no sock_diag events');
  let socket: NativeEventsSocket;
  if (key === '') {
    socket = new n.SockDiagEventsSocket(null, RCVBUF);
  } else {
    const nsFd = n.socketNetns(fd);
    try {
      socket = new n.SockDiagEventsSocket(nsFd, RCVBUF);
    } finally {
      n.closeFd(nsFd);
    }
  }
  try {
    const made: Listener = { key, socket, fd: socket.fd, poll: undefined as unknown as NativeFdPoll, v4: 0, v6: 0 };
    made.poll = new n.FdPoll(made.fd, (status) => (status < 0 ? failed(made, `poll ${status}`) : onReadable(made)));
    l = made;
  } catch (error) {
    socket.close();
    throw error;
  }
  listeners.set(key, l);
  return l;
}

function close(l: Listener): void {
  if (listeners.get(l.key) !== l) return;
  listeners.delete(l.key);
  l.poll.close();
  l.socket.close();
}

function keyOf(w: Watched): string {
  return w.ns?.key ?? '';
}

function groupOf(w: Watched): number {
  return w.id![0] === AF_INET6 ? DESTROY_GROUP_V6 : DESTROY_GROUP_V4;
}

/** Joins the socket's group in its namespace if it is the first there, and counts it. */
function join(l: Listener, group: number): void {
  const users = group === DESTROY_GROUP_V6 ? l.v6 : l.v4;
  if (users === 0) native().sockDiagJoin!(l.fd, group);
  if (group === DESTROY_GROUP_V6) l.v6++;
  else l.v4++;
}

/** Uncounts a socket; the last one of its family leaves the group. */
function leave(l: Listener, group: number): void {
  const users = group === DESTROY_GROUP_V6 ? --l.v6 : --l.v4;
  if (users > 0) return;
  try {
    native().sockDiagLeave!(l.fd, group);
  } catch (error) {
    debug('destroy multicast: %s', (error as Error).message);
  }
  // This thread's listener stays while anything is watched (see closeIdle()); another namespace's
  // goes with its last follower.
  if (l.key !== '' && l.v4 === 0 && l.v6 === 0) close(l);
}

/** Stops following `w`; its namespace leaves the group if `w` was the last one there. */
function unfollow(w: Watched): void {
  if (!w.awaiting) return;
  w.awaiting = false;
  following.delete(idCookieKey(w.id!));
  const l = listeners.get(keyOf(w));
  if (l !== undefined) leave(l, groupOf(w));
}

function onReadable(l: Listener): void {
  try {
    // A message can end the last watched socket, which closes the listener: read no further then.
    for (let reads = 0; reads < DESTROY_READS_PER_TURN && listeners.get(l.key) === l; reads++) {
      const count = native().sockDiagReadEvents!(l.fd, buffer, lengths);
      if (count === 0) return;
      if (count === DESTROY_LOST) {
        lost(l);
        continue;
      }
      counts.messages += count;
      const at = now();
      for (let i = 0; i < count && listeners.get(l.key) === l; i++) {
        const length = Math.abs(lengths[i]!);
        const key = messageCookie(view, i * DESTROY_SLOT, length);
        const w = key === undefined ? undefined : following.get(key);
        if (w !== undefined) ended(w, i * DESTROY_SLOT, length, at);
      }
      // A short batch is no sign that the queue is empty: messages lost during it (ENOBUFS) are
      // reported by the next read, which must come now (left pending, the error would reach
      // libuv's poll as POLLERR, which stops the poll).
    }
  } catch (error) {
    // A callback must not throw into the process, nor be called again and again for a socket that
    // cannot be read: the listener goes, and what it followed is polled.
    failed(l, (error as Error).message);
  }
}

/** The listener cannot be read (an error, which would repeat): closed, its followers left to the poller. */
function failed(l: Listener, why: string): void {
  debug('destroy multicast: %s', why);
  lost(l, `destroy-multicast: reading its socket failed (${why}), so it is polled`);
  close(l);
}

/**
 * Messages were lost (the receive buffer was full): any socket followed in that namespace may have
 * ended unseen, so each is looked up now, and followed on by the poller.
 */
function lost(l: Listener, reason = 'destroy-multicast: messages were lost (ENOBUFS), so it is polled'): void {
  counts.lost++;
  debug('destroy multicast: messages lost in namespace %s', l.key || 'home');
  const at = now();
  for (const w of [...following.values()]) {
    if (keyOf(w) !== l.key) continue;
    unfollow(w);
    w.events = undefined;
    w.lifecycle.setBackend({ name: 'poll', reason });
    socketEnded(w, at, false, true);
  }
  arm();
}

/** The message at `off` says `w`'s full socket was freed. */
function ended(w: Watched, off: number, length: number, at: number): void {
  counts.matched++;
  unfollow(w);
  if (w.ended) return;
  // Freed, so its fd is closed, even if Node's 'close' has not come yet (a handle not hooked).
  if (w.phase !== 'gone') toGone(w);
  // An orphan that receives new data answers with an RST (tcp_rcv_state_process(): RFC 1122 says
  // it MUST): a data segment counted after the close means the RST was this end's.
  let answeredData = false;
  if (w.segsInAtClose !== undefined) {
    const info = messageAttribute(view, off, length, INET_DIAG_INFO);
    if (info !== undefined && info[1] >= TCPI_DATA_SEGS_IN + 4) answeredData = view.getUint32(info[0] + TCPI_DATA_SEGS_IN, true) > w.segsInAtClose;
  }
  socketEnded(w, at, answeredData, false);
  arm();
}

/** The destroy multicast, as the watcher uses it. */
export const destroyMulticast: EventBackend = {
  name: 'destroy-multicast',
  finalTcpInfo: true,
  follow(w: Watched, fd: number): void {
    if (w.awaiting || w.ended || w.id === undefined || !hasCookie(w.id)) return;
    try {
      join(listener(keyOf(w), fd), groupOf(w));
    } catch (error) {
      w.events = undefined;
      w.lifecycle.setBackend({ name: 'poll', reason: `destroy-multicast: ${(error as Error).message}` });
      return;
    }
    w.awaiting = true;
    following.set(idCookieKey(w.id), w);
  },
  release: unfollow,
};

/** Nothing is watched any more: this thread's listener goes too. */
export function closeIdle(): void {
  for (const l of [...listeners.values()]) if (l.v4 === 0 && l.v6 === 0) close(l);
}

/** @internal For tests: what the back-end has done, and its open listeners (fd, followers per family). */
export function destroyMulticastStatus(): {
  messages: number;
  matched: number;
  lost: number;
  following: number;
  listeners: { key: string; fd: number; v4: number; v6: number }[];
} {
  const open = [...listeners.values()].map(({ key, fd, v4, v6 }) => ({ key, fd, v4, v6 }));
  return { ...counts, following: following.size, listeners: open };
}
