/**
 * The privileged source of `traceConnections()`: the BPF program on the `inet_sock_set_state`
 * tracepoint (src/bpf.ts), whose records become observations: every transition of every TCP
 * socket on the host, with its namespace, `sk_err`, the process current at the transition, and
 * the socket's counters.
 */
import os from 'node:os';
import { AT, commAt, openStateRecords, RECORD, recordCookieKey, stateChangesUnavailable } from '../bpf';
import { AF_INET6, cookieHex, formatAddress, u64Hex } from '../diag';
import { stateName } from '../states';
import { u64At } from '../tcp-info';
import type { CookieKey, Observation } from './ends';

/** Why the BPF source cannot run here, or `undefined` when it can. */
export function bpfUnavailable(): string | undefined {
  return stateChangesUnavailable();
}

/** The last namespace cookie (its two u32) and its hex: a host's changes come from a few namespaces, mostly one. */
let lastNetnsLow = 0;
let lastNetnsHigh = 0;
let lastNetnsHex = '';

const LE = os.endianness() === 'LE';

/**
 * A record's host-order u64 at `at` as 16 hex digits (`cookieHex()` of it): on a little-endian
 * host its bytes are those of two u32 low first, which `u64Hex()` reads without a bigint.
 */
const u64HexAt: (view: DataView, at: number) => string = LE ? u64Hex : (view, at) => cookieHex(view.getBigUint64(at, false));

/**
 * The observations of the `count` records in `bytes`, read from the bytes as they are (no
 * intermediate object, no bigint): those `keep` refuses, same-state records (a close() after
 * shutdown() stores FIN_WAIT1 again) and states this table does not know are left out, as
 * `openStateChanges()` does.
 */
function observeRecords(bytes: Uint8Array, view: DataView, count: number, keep: ((key: CookieKey) => boolean) | undefined, observe: (o: Observation) => void): void {
  for (let i = 0, at = 0; i < count; i++, at += RECORD) {
    if (keep !== undefined && !keep(recordCookieKey(view, at))) continue;
    const from = stateName(bytes[at + AT.FROM]);
    const state = stateName(bytes[at + AT.TO]);
    if (from === undefined || state === undefined || from === state) continue;
    const netns = at + AT.NETNS_COOKIE;
    if (view.getUint32(netns, true) !== lastNetnsLow || view.getUint32(netns + 4, true) !== lastNetnsHigh || lastNetnsHex === '') {
      lastNetnsLow = view.getUint32(netns, true);
      lastNetnsHigh = view.getUint32(netns + 4, true);
      lastNetnsHex = u64HexAt(view, netns);
    }
    const v6 = view.getUint16(at + AT.FAMILY, LE) === AF_INET6;
    observe({
      cookie: u64HexAt(view, at + AT.COOKIE),
      netns: lastNetnsHex,
      family: v6 ? 6 : 4,
      local: { address: formatAddress(view, at + (v6 ? AT.LOCAL_V6 : AT.LOCAL_V4), v6), port: view.getUint16(at + AT.LOCAL_PORT) },
      remote: { address: formatAddress(view, at + (v6 ? AT.REMOTE_V6 : AT.REMOTE_V4), v6), port: view.getUint16(at + AT.REMOTE_PORT) },
      state,
      from,
      time: u64At(view, at + AT.TIME) / 1e6,
      error: view.getInt32(at + AT.ERROR, LE),
      pid: view.getUint32(at + AT.PID_TGID + (LE ? 4 : 0), LE),
      comm: commAt(bytes, at + AT.COMM),
      counters: {
        retransmits: view.getUint32(at + AT.TOTAL_RETRANS, LE),
        unackedBytes: (view.getUint32(at + AT.SND_NXT, LE) - view.getUint32(at + AT.SND_UNA, LE)) >>> 0,
        bytesReceived: u64At(view, at + AT.BYTES_RECEIVED),
        bytesAcked: u64At(view, at + AT.BYTES_ACKED),
      },
    });
  }
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
  // `only` is asked of each record before anything is made of it: most are other sockets' (with
  // a port filter, the other processes' on the same port). A loss is read from `lost`.
  const stream = openStateRecords(
    (bytes, view, count) => observeRecords(bytes, view, count, only, observe),
    () => {},
    { closeOnly, byCookie, byPort, maxDelay },
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
