/**
 * How connections end, from what a kernel event source saw of them: the pure part of
 * `traceConnections()` (no I/O). A source feeds one `Observation` per state change it saw (every
 * transition, from the BPF tracepoint; or states sampled by sock_diag and the final one from the
 * destroy multicast); the tracker keeps each connection's path of states and, when its full
 * socket is freed (state CLOSE), makes a `ConnectionEnd`: who closed first, the outcome, and the
 * final counters. What the observations cannot tell is left `undefined` or `'unknown'`, never
 * guessed.
 */
import type { SocketAddress } from '../diag';
import type { CloseOutcome } from '../lifecycle/fsm';
import type { TcpState } from '../states';

/**
 * How a connection ended. Beside `watch()`'s outcomes: `'refused'` (an RST answered our SYN),
 * `'killed'` (destroyed from outside: `ss -K`, `SOCK_DESTROY`) and `'unknown'` (what was
 * observed does not tell; e.g. states only sampled, or a TIME_WAIT that could not be looked up).
 */
export type TraceOutcome = CloseOutcome | 'refused' | 'killed' | 'unknown';

export const TRACE_OUTCOMES: readonly TraceOutcome[] = Object.freeze([
  'graceful',
  'reset-sent',
  'reset-received',
  'timed-out',
  'refused',
  'killed',
  'unknown',
]);

/**
 * @internal A socket's cookie as a Map key: a number while it is under 2^53 (the kernel counts
 * cookies up from 1, so always in practice), its 16 hex digits beyond; the key `cookieKey()`
 * (diag.ts) reads from a sock_diag message.
 */
export type CookieKey = number | string;

/** @internal The cookie a `CookieKey` stands for, as a u64. */
export function cookieOfKey(key: CookieKey): bigint {
  return typeof key === 'number' ? BigInt(key) : BigInt(`0x${key}`);
}

/** @internal The key of a cookie written as hex (`ConnectionEnd.cookie`, `SocketEntry.cookie`). */
export function hexCookieKey(hex: string): CookieKey {
  const n = parseInt(hex, 16);
  return Number.isSafeInteger(n) ? n : hex.toLowerCase().padStart(16, '0');
}

/** Which end sent its FIN (or RST) first. */
export type ClosedFirst = 'local' | 'remote' | 'simultaneous';

/** Where the events came from: every transition (`'bpf'`), or sampled states and the final free (`'destroy-multicast'`). */
export type TraceSourceName = 'bpf' | 'destroy-multicast';

/** Counters of the connection as its full socket was freed. */
export interface EndCounters {
  /** Segments retransmitted over the connection's life (`total_retrans`). */
  retransmits: number;
  /** Bytes sent and not acknowledged (`snd_nxt - snd_una`; `tcpi_unacked` is in segments, this is bytes where the source gives bytes). */
  unackedBytes?: number;
  /** Segments sent and not acknowledged (`tcpi_unacked`), where the source gives segments. */
  unackedSegments?: number;
  /** Payload bytes received (`bytes_received`). */
  bytesReceived: number;
  /** Payload bytes sent and acknowledged (`bytes_acked`). */
  bytesAcked: number;
}

/** One state a source saw a socket in. */
export interface Observation {
  /** The socket's cookie (`SO_COOKIE`, 16 hex digits). */
  cookie: string;
  /** The cookie of its network namespace (16 hex digits), when the source says. */
  netns?: string;
  family?: 4 | 6;
  local?: SocketAddress;
  remote?: SocketAddress;
  /** The state seen; `'CLOSE'` means its full socket was freed (a TIME_WAIT may take over). */
  state: TcpState;
  /** The state it left, when the source saw the transition itself. */
  from?: TcpState;
  /** Milliseconds on one clock per source. */
  time: number;
  /** `sk_err` at the transition (0: none), `undefined` when the source cannot see it. */
  error?: number;
  /** The process current at the transition: its owner only when the process made it (connect, close, shutdown). */
  pid?: number;
  comm?: string;
  /** A process holding the socket's fd, found in /proc. */
  holder?: { pid: number; comm?: string };
  counters?: EndCounters;
}

/** How one connection ended. */
export interface ConnectionEnd {
  /** The socket's cookie (`SO_COOKIE`, 16 hex digits; `SocketEntry.cookie`). */
  cookie: string;
  /** Its network namespace's cookie (16 hex digits), when known; `netnsName` when a name was found for it. */
  netns?: string;
  netnsName?: string;
  family: 4 | 6;
  /** `0.0.0.0:0` (or `:::0`) where the kernel had already cleared the address and no earlier observation had it. */
  local: SocketAddress;
  remote: SocketAddress;
  /** The process that owned the socket, where a transition it made was seen (connect, close, shutdown). */
  pid?: number;
  comm?: string;
  closedFirst?: ClosedFirst;
  /**
   * The states seen, in order, ending in `'CLOSE'` (or `'TIME_WAIT'` when a TIME_WAIT took over,
   * found by the connection's 4-tuple). With `pathSeen: 'sampled'` states between two samples
   * may be missing.
   */
  path: TcpState[];
  pathSeen: 'every-transition' | 'sampled';
  outcome: TraceOutcome;
  /** `sk_err` as an errno name (`'ECONNRESET'`), when the source saw a non-zero one. */
  error?: string;
  /**
   * From the first state seen to the end, in ms (`startSeen` says whether that was the
   * connection's start); absent when nothing but its end was seen.
   */
  durationMs?: number;
  startSeen: boolean;
  counters?: EndCounters;
  source: TraceSourceName;
  /** What the end was inferred from, in words (one line). */
  because: string;
}

/** An end whose outcome depends on whether a TIME_WAIT took over: the caller looks it up, then `settle()`s. */
export interface PendingEnd {
  end: ConnectionEnd;
  /** Look up a TIME_WAIT with the connection's cookie, then call `settle(end, found)`. */
  checkTimeWait: true;
}

interface Connection {
  cookie: string;
  netns?: string;
  family?: 4 | 6;
  local?: SocketAddress;
  remote?: SocketAddress;
  path: TcpState[];
  firstTime: number;
  startSeen: boolean;
  pid?: number;
  comm?: string;
}

const STARTS: ReadonlySet<TcpState> = new Set(['SYN_SENT', 'SYN_RECV', 'NEW_SYN_RECV']);
/** Transitions a process makes itself (connect, close, shutdown): the one current then owns the socket. */
const BY_PROCESS: ReadonlySet<TcpState> = new Set(['SYN_SENT', 'FIN_WAIT1', 'LAST_ACK']);
/** States from which a TIME_WAIT can take over when the full socket is freed. */
const BEFORE_TIME_WAIT: ReadonlySet<TcpState> = new Set(['FIN_WAIT1', 'FIN_WAIT2', 'CLOSING']);
/** The same when states are only sampled: an open connection may have closed between two samples. */
const SAMPLED_BEFORE_TIME_WAIT: ReadonlySet<TcpState> = new Set([...BEFORE_TIME_WAIT, 'ESTABLISHED', 'SYN_RECV']);
/** States whose close with no error means this end sent an RST (SO_LINGER {1, 0}, unread data, a full accept queue). */
const RESET_IF_CLOSED: ReadonlySet<TcpState> = new Set(['ESTABLISHED', 'CLOSE_WAIT', 'SYN_RECV']);

const ECONNRESET = 104;
const EPIPE = 32;
const ECONNREFUSED = 111;
const ETIMEDOUT = 110;
const ECONNABORTED = 103;

/** The errno name of `n` (`'ECONNRESET'`), or `errno N` for one this platform does not name. */
export function errnoName(n: number): string {
  return ERRNO_NAMES.get(n) ?? `errno ${n}`;
}

const ERRNO_NAMES = new Map<number, string>(
  Object.entries(
    // os.constants.errno is the platform's; these are Linux's, which is where the sources run.
    { EPIPE, ECONNABORTED, ECONNRESET, ETIMEDOUT, ECONNREFUSED, EHOSTUNREACH: 113, ENETUNREACH: 101, EHOSTDOWN: 112, EPROTO: 71 },
  ).map(([name, n]) => [n, name]),
);

/** How many forgotten connections `EndTracker` keeps, so that an end that comes after all has its path. */
const FORGOTTEN_KEPT = 4096;

/**
 * Keeps the path of every connection a source reports on, and makes its `ConnectionEnd` when its
 * full socket is freed. Memory: one entry per connection that changed state since the trace
 * began and has not ended, and the last `FORGOTTEN_KEPT` forgotten; listening sockets are not followed.
 */
export class EndTracker {
  readonly #source: TraceSourceName;
  readonly #connections = new Map<string, Connection>();
  /** The connections `prune()` forgot last, oldest first: one seen again (a late end) goes on from its path. */
  readonly #forgotten = new Map<string, Connection>();

  constructor(source: TraceSourceName) {
    this.#source = source;
  }

  /** Connections followed now. */
  get size(): number {
    return this.#connections.size;
  }

  /** Forgets every connection (the trace ended). */
  clear(): void {
    this.#connections.clear();
    this.#forgotten.clear();
  }

  /** The connections followed now: each one's cookie and namespace (`home` where none was seen). */
  followed(home: string): Map<string, string> {
    const out = new Map<string, string>();
    for (const [cookie, c] of this.#connections) out.set(cookie, c.netns ?? home);
    return out;
  }

  /**
   * Forgets the connections `alive` says are gone: those whose end was among the events the kernel
   * dropped, which would otherwise be followed for ever. Returns how many. The last
   * `FORGOTTEN_KEPT` are kept aside: if one is seen after all (a source can report an end long
   * after the socket left the kernel's tables), it goes on from the path it had.
   */
  prune(alive: (cookie: string, netns: string | undefined) => boolean): number {
    let gone = 0;
    for (const [cookie, c] of this.#connections) {
      if (alive(cookie, c.netns)) continue;
      this.#connections.delete(cookie);
      this.#forgotten.delete(cookie);
      this.#forgotten.set(cookie, c);
      if (this.#forgotten.size > FORGOTTEN_KEPT) this.#forgotten.delete(this.#forgotten.keys().next().value!);
      gone++;
    }
    return gone;
  }

  /** Takes one observation; returns the connection's end when this was its last state. */
  observe(o: Observation): ConnectionEnd | PendingEnd | undefined {
    let c = this.#connections.get(o.cookie);
    if (c === undefined && this.#forgotten.size > 0) {
      c = this.#forgotten.get(o.cookie);
      if (c !== undefined) {
        this.#forgotten.delete(o.cookie);
        this.#connections.set(o.cookie, c);
      }
    }
    if (o.state === 'LISTEN' || (o.from === 'LISTEN' && o.state === 'CLOSE')) {
      // A listener's own life is not a connection's.
      if (c !== undefined) this.#connections.delete(o.cookie);
      return undefined;
    }
    const known = c !== undefined;
    if (c === undefined) {
      if (o.state === 'CLOSE' && o.from === undefined && o.error === undefined && o.counters === undefined) return undefined;
      // A client begins CLOSE -> SYN_SENT; an accepted connection, cloned from its listener, LISTEN -> SYN_RECV.
      const begins = (o.from === 'CLOSE' || o.from === 'LISTEN') && STARTS.has(o.state);
      const first = o.from !== undefined && !begins ? o.from : o.state;
      c = { cookie: o.cookie, path: first === 'CLOSE' ? [] : [first], firstTime: o.time, startSeen: begins || STARTS.has(first) };
      // An end seen alone (a source that reports only the ends) is never kept.
      if (o.state !== 'CLOSE') this.#connections.set(o.cookie, c);
    }
    // A client's first event has no port yet; a reset socket's address is already cleared: keep the best seen.
    if (o.netns !== undefined) c.netns = o.netns;
    if (o.family !== undefined) c.family = o.family;
    if (o.local !== undefined && (o.local.port !== 0 || c.local === undefined)) c.local = o.local;
    if (o.remote !== undefined && (o.remote.port !== 0 || c.remote === undefined)) c.remote = o.remote;
    if (o.pid !== undefined && o.pid > 0 && BY_PROCESS.has(o.state)) {
      c.pid = o.pid;
      if (o.comm !== undefined) c.comm = o.comm;
    } else if (o.holder !== undefined && c.pid === undefined) {
      c.pid = o.holder.pid;
      if (o.holder.comm !== undefined) c.comm = o.holder.comm;
    }
    const last = c.path[c.path.length - 1];
    if (o.from !== undefined && last !== o.from && o.from !== 'CLOSE' && o.from !== 'LISTEN') c.path.push(o.from);
    if (c.path[c.path.length - 1] !== o.state) c.path.push(o.state);
    if (o.state !== 'CLOSE') return undefined;
    if (known) this.#connections.delete(o.cookie);
    // A reset socket's close comes without a process; one that closed it itself was the owner.
    if (c.pid === undefined && o.pid !== undefined && o.pid > 0 && o.error === 0 && RESET_IF_CLOSED.has(c.path[c.path.length - 2] ?? 'CLOSE')) {
      c.pid = o.pid;
      if (o.comm !== undefined) c.comm = o.comm;
    }
    return this.#end(c, o);
  }

  #end(c: Connection, o: Observation): ConnectionEnd | PendingEnd {
    const before = c.path.length >= 2 ? c.path[c.path.length - 2] : undefined;
    const family = c.family ?? 4;
    const any = family === 6 ? '::' : '0.0.0.0';
    // Optional fields are set only when known (no key with an undefined value), without spreads:
    // every end of a busy host is made here.
    const end: ConnectionEnd = {
      cookie: c.cookie,
      family,
      local: c.local ?? { address: any, port: 0 },
      remote: c.remote ?? { address: any, port: 0 },
      path: c.path,
      pathSeen: this.#source === 'bpf' ? 'every-transition' : 'sampled',
      outcome: 'unknown',
      startSeen: c.startSeen,
      source: this.#source,
      because: '',
    };
    if (c.netns !== undefined) end.netns = c.netns;
    if (c.pid !== undefined) end.pid = c.pid;
    if (c.comm !== undefined) end.comm = c.comm;
    if (c.path.length > 1) end.durationMs = Math.max(0, o.time - c.firstTime);
    if (o.counters !== undefined) end.counters = o.counters;
    const first = closedFirst(c.path, o.error);
    if (first !== undefined) end.closedFirst = first;
    if (o.error !== undefined && o.error !== 0) end.error = errnoName(o.error);
    const decided = outcomeOf(before, o.error, o.counters);
    end.outcome = decided.outcome;
    end.because = decided.because;
    if (decided.checkTimeWait) return { end, checkTimeWait: true };
    return end;
  }
}

/** Which end closed first, from the path (and a reset's error). */
export function closedFirst(path: readonly TcpState[], error: number | undefined): ClosedFirst | undefined {
  for (let i = 0; i < path.length; i++) {
    const s = path[i];
    if (s === 'FIN_WAIT1') return path[i + 1] === 'CLOSING' ? 'simultaneous' : 'local';
    if (s === 'CLOSE_WAIT') return 'remote';
    if (s === 'CLOSING') return 'simultaneous';
    if (s === 'FIN_WAIT2' || s === 'LAST_ACK' || s === 'TIME_WAIT') return s === 'LAST_ACK' ? 'remote' : 'local';
    if (s === 'CLOSE' && i > 0) {
      // Straight from an open state to CLOSE: whoever sent the RST.
      if (error === undefined) return undefined;
      if (error === 0) return 'local';
      if (error === ECONNRESET || error === EPIPE || error === ECONNREFUSED) return 'remote';
      return undefined;
    }
  }
  return undefined;
}

/** The outcome of a full socket freed from state `before` with `sk_err` `error` (`undefined`: not seen). */
export function outcomeOf(
  before: TcpState | undefined,
  error: number | undefined,
  counters?: EndCounters,
): { outcome: TraceOutcome; because: string; checkTimeWait?: true } {
  if (error !== undefined && error !== 0) {
    if (error === ECONNREFUSED) return { outcome: 'refused', because: 'sk_err ECONNREFUSED: an RST answered the SYN' };
    if (error === ECONNRESET && (before === 'FIN_WAIT1' || before === 'FIN_WAIT2')) {
      // tcp_rcv_state_process(): an orphan with our FIN sent that receives new data sets the same
      // error as an RST received, and answers the data with an RST (RFC 1122) — two opposite ends.
      return { outcome: 'unknown', because: `sk_err ECONNRESET in ${before}: an RST received, or, for a closed socket that received data, one this end sent` };
    }
    if (error === ECONNRESET || error === EPIPE) return { outcome: 'reset-received', because: `sk_err ${errnoName(error)}: an RST was received` };
    if (error === ECONNABORTED) return { outcome: 'killed', because: 'sk_err ECONNABORTED: destroyed from outside (ss -K, SOCK_DESTROY)' };
    // A retransmission or keepalive timeout sets sk_err to ETIMEDOUT, or to the soft error last seen (an ICMP's).
    return { outcome: 'timed-out', because: `sk_err ${errnoName(error)}: given up after retransmissions or probes` };
  }
  if (error === undefined) {
    // Sampled: the last state seen may be long gone. Our FIN acknowledged in LAST_ACK, or a
    // TIME_WAIT after it, tell a graceful end; nothing else seen here does.
    if (before === 'LAST_ACK' && (counters?.unackedBytes ?? counters?.unackedSegments) === 0) {
      return { outcome: 'graceful', because: 'freed from LAST_ACK with nothing unacknowledged: our FIN was acknowledged' };
    }
    if (before === undefined || SAMPLED_BEFORE_TIME_WAIT.has(before)) {
      return { outcome: 'unknown', because: `freed${before ? ` after ${before} was sampled` : ''}: graceful if a TIME_WAIT took over`, checkTimeWait: true };
    }
    return { outcome: 'unknown', because: `freed after ${before} was sampled; the error is not visible to this source` };
  }
  if (before === undefined) return { outcome: 'unknown', because: 'no state was seen before the socket was freed' };
  if (before === 'LAST_ACK') return { outcome: 'graceful', because: 'LAST_ACK -> CLOSE with no error: our FIN was acknowledged' };
  if (BEFORE_TIME_WAIT.has(before)) {
    return { outcome: 'unknown', because: `freed from ${before}: graceful if a TIME_WAIT took over`, checkTimeWait: true };
  }
  if (error === 0 && RESET_IF_CLOSED.has(before)) {
    return { outcome: 'reset-sent', because: `${before} -> CLOSE with no error: this end sent an RST (SO_LINGER {1, 0}, unread data, or a full accept queue)` };
  }
  if (before === 'SYN_SENT' && error === 0) return { outcome: 'unknown', because: 'closed in SYN_SENT: nothing was sent (a late SYN-ACK gets an RST)' };
  return { outcome: 'unknown', because: `freed from ${before}; the error is not visible to this source` };
}

/**
 * What took over a connection's 4-tuple when its full socket was freed: a timewait socket in
 * TIME_WAIT, or in FIN_WAIT2 (an orphan whose FIN_WAIT2 timer is at most 60 s is handed over at
 * once and still waits for the peer's FIN), or nothing; `undefined` when it could not be looked up.
 */
export type Successor = 'TIME_WAIT' | 'FIN_WAIT2' | 'none' | undefined;

/**
 * Settles a pending end once its successor was looked up. `overflowed`: whether the namespace's
 * TIME_WAIT table ever overflowed (`TcpExtTCPTimeWaitOverflow` > 0; `undefined`: unknown).
 */
export function settle(end: ConnectionEnd, successor: Successor, errorSeen: boolean, overflowed?: boolean): ConnectionEnd {
  const before = end.path[end.path.length - 2] ?? 'an unseen state';
  if (successor === 'TIME_WAIT') {
    // The full socket's CLOSE is its hand-over to the TIME_WAIT.
    end.path[end.path.length - 1] = 'TIME_WAIT';
    // Only the end that sent the first FIN (or both, simultaneously) goes through TIME_WAIT.
    end.closedFirst ??= 'local';
    end.outcome = 'graceful';
    end.because = `${before} -> TIME_WAIT (found by its 4-tuple): both FINs were exchanged`;
  } else if (successor === 'FIN_WAIT2') {
    // The path ends in the FIN_WAIT2 that goes on in the timewait socket.
    if (before === 'FIN_WAIT2') end.path.pop();
    else end.path[end.path.length - 1] = 'FIN_WAIT2';
    end.closedFirst ??= 'local';
    end.because = `handed over to a FIN_WAIT2 timewait socket (found by its 4-tuple): the peer's FIN had not come; it ends in TIME_WAIT or by its timer, unseen`;
  } else if (successor === 'none') {
    if (errorSeen && overflowed === false) {
      // Freed with no error, no timewait socket after it, and never a full TIME_WAIT table: the
      // kernel sent an RST (TCP_LINGER2 < 0, new data for an orphan, an orphan's FIN_WAIT2 timer
      // longer than 60 s running out, too many orphans).
      end.outcome = 'reset-sent';
      end.closedFirst ??= 'local';
      end.because = `${before} -> CLOSE with no error and no TIME_WAIT after it (the namespace's TIME_WAIT table never overflowed): this end sent an RST`;
    } else {
      end.because = errorSeen
        ? `freed from ${before} with no error and no TIME_WAIT after it: an RST from this end, or no TIME_WAIT bucket left (the table has overflowed in this namespace)`
        : `freed from ${before} and no TIME_WAIT after it; the error is not visible to this source`;
    }
  } else {
    end.because = `freed from ${before}; its namespace could not be searched for a TIME_WAIT`;
  }
  return end;
}
