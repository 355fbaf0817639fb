/**
 * The unprivileged source of `traceConnections()`: the sock_diag destroy multicast of this
 * network namespace (one message for every full TCP socket freed here, with its cookie, its
 * 4-tuple unless already cleared, and its final `tcp_info`) and a sock_diag dump every
 * `interval` ms, which samples the states in between and finds who holds each socket.
 * It sees no error (`sk_err`) and no state a socket passes through between two samples.
 */
import os from 'node:os';
import { debuglog } from 'node:util';
import { native, type NativeEventsSocket, type NativeFdPoll } from '../binding';
import {
  cookieHex,
  DESTROY_GROUP_V4,
  DESTROY_GROUP_V6,
  DESTROY_LOST,
  DESTROY_READS_PER_TURN,
  DESTROY_SLOT,
  DESTROY_SLOTS,
  INET_DIAG_INFO,
  messageAttribute,
  messageCookie,
  messageEntry,
  sockets,
  type SocketEntry,
} from '../diag';
import type { TcpState } from '../states';
import { socketOwners } from '../processes';
import { u64At } from '../tcp-info';
import { hexCookieKey, type CookieKey, type EndCounters, type Observation } from './ends';

const debug = debuglog('finwait');
const LE = os.endianness() === 'LE';

/** Asked of SO_RCVBUF (capped at net.core.rmem_max): a host closing many connections at once sends a burst. */
const RCVBUF = 8 << 20;
/**
 * States sampled: not TIME_WAIT (looked up when a connection ends). Listeners only to know their
 * cookies: a listener's destroy message (its address kept, the remote cleared) is no connection's end.
 */
const SAMPLED: readonly TcpState[] = ['LISTEN', 'SYN_SENT', 'SYN_RECV', 'ESTABLISHED', 'FIN_WAIT1', 'FIN_WAIT2', 'CLOSE_WAIT', 'LAST_ACK', 'CLOSING'];

export interface SampledSource {
  /** Samples taken so far. */
  readonly samples: number;
  /** Messages the kernel dropped because the receive buffer was full (their connections' ends are not reported). */
  readonly lost: number;
  close(): void;
  /** Reads the destroy messages waiting in the socket now (their observations are made before it returns). */
  drain(): void;
}

export function openSampled(
  observe: (o: Observation) => void,
  options: { interval: number | undefined; owners: boolean; now: () => number; only?: ((key: CookieKey) => boolean) | undefined },
): SampledSource {
  const only = options.only;
  const n = native();
  if (n.SockDiagEventsSocket === undefined || n.sockDiagJoin === undefined || n.sockDiagReadEvents === undefined) {
    throw Object.assign(new Error('this build of the addon has no sock_diag events'), { code: 'ENOTSUP' });
  }
  const socket: NativeEventsSocket = new n.SockDiagEventsSocket(null, RCVBUF);
  const buffer = new Uint8Array(DESTROY_SLOTS * DESTROY_SLOT);
  const view = new DataView(buffer.buffer);
  const lengths = new Int32Array(DESTROY_SLOTS);
  /** The state each socket had in the last sample, by cookie: a sample observes only what changed. */
  let seen = new Map<string, TcpState>();
  /** Owners found, by cookie (a socket is looked up once, when first sampled with an inode), and the sample that last saw it. */
  const owners = new Map<string, { pid: number; comm?: string; sample: number }>();
  let samples = 0;
  let lost = 0;
  let closed = false;
  let poll: NativeFdPoll | undefined;

  const onReadable = (): void => {
    try {
      for (let reads = 0; reads < DESTROY_READS_PER_TURN && !closed; reads++) {
        const count = n.sockDiagReadEvents!(socket.fd, buffer, lengths);
        if (count === 0) return;
        if (count === DESTROY_LOST) {
          lost++;
          continue;
        }
        const time = options.now();
        for (let i = 0; i < count && !closed; i++) {
          const off = i * DESTROY_SLOT;
          const length = Math.abs(lengths[i]!);
          const key = messageCookie(view, off, length);
          if (key === undefined) continue;
          // Another socket's end, for a caller that wants a few: nothing is decoded.
          if (only !== undefined && !only(key)) continue;
          // messageCookie()'s key is a number, or already the hex text beyond 53 bits.
          const cookie = typeof key === 'string' ? key : cookieHex(key);
          const entry = messageEntry(view, off);
          const before = seen.get(cookie);
          const info = messageAttribute(view, off, length, INET_DIAG_INFO);
          // A listener no sample saw: its remote address is cleared, as a reset connection's is, but
          // no receive MSS was ever set (tcpi_rcv_mss 0), which connect() and accept set.
          if (before === 'LISTEN' || (before === undefined && entry.remote.port === 0 && info !== undefined && infoU32(view, info, TCPI_RCV_MSS) === 0)) {
            seen.delete(cookie);
            continue;
          }
          seen.delete(cookie);
          const found = owners.get(cookie);
          owners.delete(cookie);
          const o: Observation = { cookie, family: entry.family, state: 'CLOSE', time };
          if (entry.local.port !== 0) {
            o.local = entry.local;
            o.remote = entry.remote;
          }
          if (before !== undefined) o.from = before;
          if (found !== undefined) o.holder = found.comm !== undefined ? { pid: found.pid, comm: found.comm } : { pid: found.pid };
          if (info !== undefined) o.counters = countersAt(view, info);
          observe(o);
        }
      }
    } catch (error) {
      debug('trace: reading the destroy multicast failed: %s', (error as Error).message);
      lost++;
    }
  };

  const sample = (): void => {
    let entries: SocketEntry[];
    try {
      entries = sockets({ states: SAMPLED });
    } catch (error) {
      debug('trace: sample failed: %s', (error as Error).message);
      return;
    }
    const time = options.now();
    samples++;
    const next = new Map<string, TcpState>();
    const wanted = new Map<number, string>();
    for (const e of entries) {
      if (only !== undefined && e.state !== 'LISTEN' && !only(hexCookieKey(e.cookie))) continue;
      next.set(e.cookie, e.state);
      if (e.state === 'LISTEN') continue;
      const owner = owners.get(e.cookie);
      if (owner !== undefined) owner.sample = samples;
      if (seen.get(e.cookie) === e.state) continue;
      if (options.owners && e.inode !== 0 && !owners.has(e.cookie)) wanted.set(e.inode, e.cookie);
      observe({ cookie: e.cookie, family: e.family, local: e.local, remote: e.remote, state: e.state, time });
    }
    seen = next;
    if (wanted.size > 0) {
      const found = socketOwners(new Set(wanted.keys()));
      for (const [inode, list] of found.byInode) {
        const cookie = wanted.get(inode);
        const owner = list[0];
        if (cookie !== undefined && owner !== undefined) owners.set(cookie, { pid: owner.pid, ...(owner.comm !== undefined ? { comm: owner.comm } : {}), sample: samples });
      }
    }
    // An owner is kept while its socket is sampled, and a little after: a socket handed over to a
    // TIME_WAIT is no longer sampled, and its destroy message can come after the next sample.
    for (const [cookie, owner] of owners) if (samples - owner.sample > 2) owners.delete(cookie);
  };

  try {
    n.sockDiagJoin(socket.fd, DESTROY_GROUP_V4);
    n.sockDiagJoin(socket.fd, DESTROY_GROUP_V6);
    poll = new n.FdPoll(socket.fd, (status) => (status < 0 ? debug('trace: poll %d', status) : onReadable()));
  } catch (error) {
    socket.close();
    throw error;
  }
  // Without an interval, nothing is sampled (a caller that needs only the ends: a dump walks the
  // whole socket table of the namespace, TIME_WAIT included, however few it lists).
  let timer: NodeJS.Timeout | undefined;
  if (options.interval !== undefined) {
    sample();
    timer = setInterval(sample, options.interval);
    timer.unref();
  }
  return {
    get lost() {
      return lost;
    },
    get samples() {
      return samples;
    },
    drain: onReadable,
    close() {
      if (closed) return;
      closed = true;
      if (timer !== undefined) clearInterval(timer);
      poll?.close();
      socket.close();
    },
  };
}

// Byte offsets in `struct tcp_info` (include/uapi/linux/tcp.h; src/tcp-info.ts decodes all of it).
const TCPI_RCV_MSS = 20;
const TCPI_UNACKED = 24;
const TCPI_TOTAL_RETRANS = 100;
const TCPI_BYTES_ACKED = 120;
const TCPI_BYTES_RECEIVED = 128;

/** A u32 field of the final `tcp_info` at `info` (`[offset, bytes]`), 0 beyond what the kernel wrote. */
function infoU32(view: DataView, info: [number, number], field: number): number {
  return field + 4 <= info[1] ? view.getUint32(info[0] + field, LE) : 0;
}

/** A u64 field of the same, 0 beyond what the kernel wrote (older kernels). */
function infoU64(view: DataView, info: [number, number], field: number): number {
  return field + 8 <= info[1] ? u64At(view, info[0] + field) : 0;
}

/** The counters of the final `tcp_info` a destroy message carries: the four fields read where they are, nothing else decoded. */
function countersAt(view: DataView, info: [number, number]): EndCounters {
  return {
    retransmits: infoU32(view, info, TCPI_TOTAL_RETRANS),
    unackedSegments: infoU32(view, info, TCPI_UNACKED),
    bytesReceived: infoU64(view, info, TCPI_BYTES_RECEIVED),
    bytesAcked: infoU64(view, info, TCPI_BYTES_ACKED),
  };
}
