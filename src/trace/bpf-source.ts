/**
 * The privileged source of `traceConnections()`: the BPF program on the `inet_sock_set_state`
 * tracepoint (src/bpf.ts), whose records become observations: every transition of every TCP
 * socket on the host, with its namespace, `sk_err`, the process current at the transition, and
 * the socket's counters.
 */
import os from 'node:os';
import { AT, openKeptStateChanges, stateChangesUnavailable, type RecordFilter, type StateChange } from '../bpf';
import { cookieHex } from '../diag';
import { cookieKeyOf, type CookieKey, type Observation } from './ends';

/** Why the BPF source cannot run here, or `undefined` when it can. */
export function bpfUnavailable(): string | undefined {
  return stateChangesUnavailable();
}

/** The last namespace cookie written as hex: a host's changes come from a few namespaces, mostly one. */
let lastNetns = -1n;
let lastNetnsHex = '';

const LE = os.endianness() === 'LE';
const TWO_32 = 2 ** 32;

/** @internal The `CookieKey` of a record's socket cookie (a u64 in host order), read without a bigint while it is under 2^53. */
export function recordCookieKey(view: DataView, at: number): CookieKey {
  const cookie = at + AT.COOKIE;
  const high = view.getUint32(cookie + (LE ? 4 : 0), LE);
  if (high < 0x200000) return high * TWO_32 + view.getUint32(cookie + (LE ? 0 : 4), LE);
  return cookieKeyOf(view.getBigUint64(cookie, LE));
}

function observationOf(c: StateChange): Observation {
  if (c.netnsCookie !== lastNetns) {
    lastNetns = c.netnsCookie;
    lastNetnsHex = cookieHex(c.netnsCookie);
  }
  return {
    cookie: cookieHex(c.cookie),
    netns: lastNetnsHex,
    family: c.family,
    local: { address: c.localAddress, port: c.localPort },
    remote: { address: c.remoteAddress, port: c.remotePort },
    state: c.to,
    from: c.from,
    time: Number(c.time) / 1e6,
    error: c.error,
    pid: c.pid,
    comm: c.comm,
    counters: {
      retransmits: c.retransmits,
      unackedBytes: c.unackedBytes,
      bytesReceived: Number(c.bytesReceived),
      bytesAcked: Number(c.bytesAcked),
    },
  };
}

/**
 * Opens the BPF stream (coded errors: `EPERM` without the privilege, `ENOTSUP` where it cannot
 * load). `only(key)` drops other sockets' records before any work; `closeOnly` has the program
 * write only the ends; `byCookie` has it write only those of the sockets given to `follow()`
 * (a kernel-side filter: the host's other sockets cost no record); `byPort` has it write those
 * of the sockets on the ports given to `followPort()` too; `maxDelay` lets records wait in the
 * ring up to that many ms (no wake-up per record).
 */
export function openBpf(
  observe: (o: Observation) => void,
  only?: (key: CookieKey) => boolean,
  closeOnly = false,
  byCookie = false,
  byPort = false,
  maxDelay = 0,
): {
  readonly lost: number;
  readonly samples: number;
  close(): void;
  /** Reads the records waiting in the ring now (their observations are made before it returns). */
  drain(): void;
  follow(cookie: bigint): boolean;
  unfollow(cookie: bigint): void;
  followPort(netnsCookie: bigint, port: number): boolean;
  unfollowPort(netnsCookie: bigint, port: number): void;
} {
  // Asked of each record before anything is made of it: most are other sockets' (with a port
  // filter, the other processes' on the same port).
  const keep: RecordFilter | undefined = only === undefined ? undefined : (view, at) => only(recordCookieKey(view, at));
  const stream = openKeptStateChanges(
    (changes) => {
      for (const c of changes) observe(observationOf(c));
    },
    { closeOnly, byCookie, byPort, maxDelay },
    keep,
  );
  // Whether the process stays alive is the trace's to say (ConnectionTrace.ref()/unref()).
  stream.unref();
  let closed = false;
  return {
    get lost() {
      return stream.lost;
    },
    samples: 0,
    close: () => {
      closed = true;
      stream.close();
    },
    drain: () => {
      if (!closed) stream.drainNow();
    },
    follow(cookie) {
      if (!byCookie) return true;
      if (closed) return false;
      try {
        stream.addCookie(cookie);
        return true;
      } catch (error) {
        // The filter is full (E2BIG): this socket's end will not be seen.
        if ((error as { code?: unknown }).code === 'E2BIG') return false;
        throw error;
      }
    },
    unfollow(cookie) {
      if (byCookie && !closed) stream.removeCookie(cookie);
    },
    followPort(netnsCookie, port) {
      if (!byPort || closed) return false;
      try {
        stream.addPort(netnsCookie, port);
        return true;
      } catch (error) {
        // The filter is full (E2BIG), or the addon predates it (ENOTSUP): the caller follows that
        // port's sockets one by one.
        const code = (error as { code?: unknown }).code;
        if (code === 'E2BIG' || code === 'ENOTSUP') return false;
        throw error;
      }
    },
    unfollowPort(netnsCookie, port) {
      if (byPort && !closed) stream.removePort(netnsCookie, port);
    },
  };
}
