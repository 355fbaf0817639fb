/**
 * `traceConnections()`: how every TCP connection on the host ends, as it ends, from the best
 * kernel event source this process may use. With CAP_BPF and CAP_PERFMON (or root) that is a BPF
 * program on the `inet_sock_set_state` tracepoint: every transition of every connection in every
 * network namespace, with `sk_err`; without, the sock_diag destroy multicast of this network
 * namespace, with states sampled in between.
 */
import { socketCookieKeys } from '../diag';
import { invalidArgType, outOfRange } from '../errors';
import { TCP_STATES } from '../states';
import { EndTracker, hexCookieKey, settle, type ConnectionEnd, type CookieKey, type Observation, type TraceSourceName } from './ends';
import { SuccessorLookup } from './successors';
import { NamespaceIndex, homeNetns } from './netns';
import { openSampled } from './sampled';
import { bpfUnavailable, openBpf } from './bpf-source';

/** How `traceConnections()` listens. */
export interface TraceOptions {
  /**
   * `'bpf'` (needs CAP_BPF and CAP_PERFMON, or root) or `'destroy-multicast'` (no privilege; this
   * network namespace only). Default: `'bpf'` where it can run, else `'destroy-multicast'`
   * (`ConnectionTrace.reason` says why).
   */
  source?: TraceSourceName;
  /** Milliseconds between two sock_diag samples of the states, for `'destroy-multicast'`. Default 1000, at least 10. */
  interval?: number;
  /** Look up the process holding each socket in /proc (`'destroy-multicast'` only; BPF sees the process that closed it). Default true. */
  owners?: boolean;
}

/** A running trace. */
export interface ConnectionTrace {
  readonly source: TraceSourceName;
  /** Why the source is not `'bpf'`, when it was chosen (not asked for). */
  readonly reason?: string;
  /** Events the kernel dropped because the reader fell behind: connections whose end is not reported. */
  readonly lost: number;
  /**
   * Connections followed now (seen changing state, not ended yet). After events were lost, those
   * no longer in the kernel (their end was among the lost) are forgotten within a few seconds.
   */
  readonly following: number;
  /** sock_diag samples of the states taken so far (`'destroy-multicast'`; 0 for `'bpf'`, which samples nothing). */
  readonly samples: number;
  /** Stops tracing; idempotent. */
  close(): void;
  /** The trace keeps the process alive while open (as a server does); `unref()` lets it exit. */
  unref(): this;
  /** Keeps the process alive while the trace is open again (the default). */
  ref(): this;
}

const SOURCES: readonly TraceSourceName[] = ['bpf', 'destroy-multicast'];
/** How often a trace checks whether events were lost (a comparison), and the least time between two reconciliations. */
const LOSS_CHECK_MS = 1000;
const RECONCILE_MIN_MS = 5000;

type CheckedOptions = Required<TraceOptions> & { sourceGiven: boolean };

/** @internal */
export function checkOptions(options: unknown): CheckedOptions {
  if (options === undefined) options = {};
  if (typeof options !== 'object' || options === null) throw invalidArgType('options', 'an object', options);
  const { source, interval = 1000, owners = true } = options as TraceOptions;
  if (source !== undefined && !SOURCES.includes(source)) throw outOfRange('options.source', `one of ${SOURCES.join(', ')}`, source);
  if (typeof interval !== 'number' || !Number.isFinite(interval)) throw invalidArgType('options.interval', 'a number of milliseconds', interval);
  if (interval < 10 || interval > 2 ** 31 - 1) throw outOfRange('options.interval', '>= 10 and <= 2147483647', interval);
  if (typeof owners !== 'boolean') throw invalidArgType('options.owners', 'a boolean', owners);
  return { source: source ?? 'bpf', interval, owners, sourceGiven: source !== undefined };
}

/**
 * Calls `onEnd` once for each TCP connection whose full socket is freed while the trace runs
 * (and, where a TIME_WAIT took over, with it on the path). Throws a coded error when the source
 * asked for cannot run (`EPERM` without the privilege BPF needs, `ENOTSUP` off Linux or without
 * the native part).
 */
export function traceConnections(onEnd: (end: ConnectionEnd) => void, options?: TraceOptions): ConnectionTrace {
  if (typeof onEnd !== 'function') throw invalidArgType('onEnd', 'a function', onEnd);
  return startTrace(onEnd, checkOptions(options));
}

/** @internal What a caller inside the package may ask of `startTrace()` beyond `TraceOptions`. */
export interface TraceInternals {
  /** Keeps the sockets followed (a caller that wants a few connections of its own spares the rest their bookkeeping). */
  only?: (key: CookieKey) => boolean;
  /** The BPF program reports only the ends (paths are then the last state and CLOSE), and the destroy multicast samples nothing. */
  endsOnly?: boolean;
  /**
   * Takes the ends whose outcome hangs on a TIME_WAIT after them (`PendingEnd`), instead of their
   * being looked up at once: the caller settles them from what else it knows, or hands them back
   * with the trace's `[LOOK_UP]()`.
   */
  onPending?: (end: ConnectionEnd) => void;
  /**
   * The BPF program writes records only of the sockets given to the trace's `[FOLLOW]()` (its
   * cookie filter); the destroy multicast has no such filter and relies on `only`.
   */
  byCookie?: boolean;
  /** Told how many connections were forgotten after a loss (their ends lost, the kernel has them no more). */
  onForgotten?: (count: number) => void;
  /** On BPF, records are also written of the sockets on the ports given to `[FOLLOW_PORT]()` (its port filter). */
  byPort?: boolean;
  /** On BPF, records may wait in the ring up to this many ms (`StateChangeOptions.maxDelay`). */
  maxDelay?: number;
}

/** @internal The key of `InternalTrace`'s look-up: a symbol, so a trace handed to users shows no such method. */
export const LOOK_UP: unique symbol = Symbol('finwait.traceLookUp');

/** @internal The key of `InternalTrace`'s reconciliation, which a loss of events starts. */
export const RECONCILE: unique symbol = Symbol('finwait.traceReconcile');

/** @internal The keys of `InternalTrace`'s cookie filter (`TraceInternals.byCookie`). */
export const FOLLOW: unique symbol = Symbol('finwait.traceFollow');
export const UNFOLLOW: unique symbol = Symbol('finwait.traceUnfollow');
/** @internal The keys of `InternalTrace`'s port filter (`TraceInternals.byPort`). */
export const FOLLOW_PORT: unique symbol = Symbol('finwait.traceFollowPort');
export const UNFOLLOW_PORT: unique symbol = Symbol('finwait.traceUnfollowPort');
/** @internal Reads the events waiting in the source now (the ring's, or the multicast socket's). */
export const DRAIN: unique symbol = Symbol('finwait.traceDrain');

/** @internal A trace started with `startTrace()`. */
export interface InternalTrace extends ConnectionTrace {
  /** Looks up what took over a pending end's 4-tuple (batched), then calls `onEnd` with it settled. */
  [LOOK_UP](end: ConnectionEnd): void;
  /**
   * What the loss check does after a loss: forgets the connections followed now that the kernel
   * no longer has and whose end was not read (lost); on the destroy multicast, those missing at
   * this look and the one before. The loss check's next look is then a few seconds away. Returns
   * how many.
   */
  [RECONCILE](): number;
  /**
   * With `byCookie`, on BPF: the socket with this cookie is reported from now on, until its end.
   * False when the filter is full (its end will not be seen) or the trace is closed.
   */
  [FOLLOW](cookie: bigint): boolean;
  /** Forgets a followed socket whose end will not come through the trace (it ended before it was followed). */
  [UNFOLLOW](cookie: bigint): void;
  /**
   * With `byPort`, on BPF: the sockets on this local port of this network namespace are reported
   * from now on. False when there is no port filter (not BPF, or not asked for), it is full, or
   * the trace is closed: then follow the sockets by cookie.
   */
  [FOLLOW_PORT](netnsCookie: bigint, port: number): boolean;
  [UNFOLLOW_PORT](netnsCookie: bigint, port: number): void;
  [DRAIN](): void;
}

/** @internal `traceConnections()` with checked options and the package's own `TraceInternals`. */
export function startTrace(onEnd: (end: ConnectionEnd) => void, o: CheckedOptions, internals: TraceInternals = {}): InternalTrace {
  const { only, endsOnly = false, onPending, byCookie = false, onForgotten, byPort = false, maxDelay = 0 } = internals;
  let source: TraceSourceName = o.source;
  let reason: string | undefined;
  if (source === 'bpf' && !o.sourceGiven) {
    // Asked for by name, opening it below throws its coded error instead.
    reason = bpfUnavailable();
    if (reason !== undefined) source = 'destroy-multicast';
  }
  const tracker = new EndTracker(source);
  const home = homeNetns();
  const namespaces = new NamespaceIndex();
  let closed = false;
  /** Namespaces seen: each is named when first seen, while it exists (a lab's may be gone by the end). */
  const seenNetns = new Set<string>([home]);
  const deliver = (end: ConnectionEnd): void => {
    if (end.netns !== undefined && end.netns !== home) {
      const name = namespaces.nameOf(end.netns);
      if (name !== undefined) end.netnsName = name;
    }
    onEnd(end);
  };
  const errorSeen = source === 'bpf';
  const successors = new SuccessorLookup(home, namespaces, (end, successor, overflowed) => {
    if (!closed) deliver(settle(end, successor, errorSeen, overflowed));
  });
  /**
   * The destroy multicast's suspects: connections missing from the kernel at the last look after a
   * loss (see `reconcile()`), by cookie; one whose end comes is none any more.
   */
  let suspects = new Set<string>();
  const observe = (obs: Observation): void => {
    if (closed) return;
    if (obs.netns !== undefined && !seenNetns.has(obs.netns)) {
      if (seenNetns.size > 4096) seenNetns.clear();
      seenNetns.add(obs.netns);
      namespaces.find(obs.netns);
    }
    const result = tracker.observe(obs);
    if (result === undefined) return;
    suspects.delete(obs.cookie);
    if (!('checkTimeWait' in result)) deliver(result);
    else if (onPending !== undefined) onPending(result.end);
    else successors.add(result.end);
  };
  const now = (): number => performance.now();
  // Ends only: nothing to sample either.
  const interval = endsOnly ? undefined : o.interval;
  const bpf = source === 'bpf' ? openBpf(observe, only, endsOnly, byCookie, byPort, maxDelay) : undefined;
  const running = bpf ?? openSampled(observe, { interval, owners: o.owners, now, only });
  // Kernel events arrive on an unref'd poll: this timer is what keeps a process that traces alive.
  const keepAlive = setInterval(() => {}, 2 ** 31 - 1);
  // After a loss, the connections whose end was lost are found by what the kernel still has: one
  // dump of each namespace they live in (at most every few seconds), and forgotten. On BPF a
  // connection's CLOSE record is written as it leaves the kernel's tables, so one missing from the
  // dump whose end is not in the ring was lost. The destroy multicast's message is sent when the
  // socket is freed, from a kernel work queue, which can be long after it left the tables (a reset
  // socket whose fd is still open): one missing after a loss is forgotten only if still missing at
  // one more look, a few seconds later (which forgets nothing else); if it was held past that,
  // its end goes on from the path the tracker kept aside (`EndTracker.prune()`).
  let lostSeen = 0;
  let reconciledAt = -Infinity;
  const reconcile = (): number => {
    // Only a connection followed before the dumps can be judged by them.
    const before = tracker.followed(home);
    const afterLoss = running.lost !== lostSeen || suspects.size === 0;
    lostSeen = running.lost;
    reconciledAt = performance.now();
    const alive = new Map<string, Set<CookieKey> | null>();
    for (const netns of new Set(before.values())) alive.set(netns, cookiesIn(netns, home, namespaces));
    // An end that came before a dump and is still unread (in the ring, or in the socket's queue)
    // ends its connection now, with its whole path, rather than being taken for a lost one.
    running.drain();
    const missing = new Set<string>();
    for (const [cookie, netns] of before) {
      const keys = alive.get(netns);
      if (keys !== null && keys !== undefined && !keys.has(hexCookieKey(cookie))) missing.add(cookie);
    }
    let forget = missing;
    if (source !== 'bpf') {
      const earlier = suspects;
      forget = new Set([...missing].filter((cookie) => earlier.has(cookie)));
      suspects = afterLoss ? new Set([...missing].filter((cookie) => !forget.has(cookie))) : new Set();
    }
    const gone = forget.size === 0 ? 0 : tracker.prune((cookie) => !forget.has(cookie));
    if (gone > 0) onForgotten?.(gone);
    return gone;
  };
  const lossCheck = setInterval(() => {
    if (closed || (running.lost === lostSeen && suspects.size === 0) || performance.now() - reconciledAt < RECONCILE_MIN_MS) return;
    reconcile();
  }, LOSS_CHECK_MS).unref();
  const trace: InternalTrace = {
    source,
    ...(reason !== undefined ? { reason } : {}),
    get lost() {
      return running.lost;
    },
    get following() {
      return tracker.size;
    },
    get samples() {
      return running.samples;
    },
    close() {
      if (closed) return;
      closed = true;
      clearInterval(keepAlive);
      clearInterval(lossCheck);
      running.close();
      successors.close();
      tracker.clear();
    },
    [LOOK_UP](end) {
      successors.add(end);
    },
    [RECONCILE]() {
      return closed ? 0 : reconcile();
    },
    [FOLLOW](cookie) {
      return bpf === undefined ? !closed : bpf.follow(cookie);
    },
    [UNFOLLOW](cookie) {
      bpf?.unfollow(cookie);
    },
    [FOLLOW_PORT](netnsCookie, port) {
      return bpf !== undefined && bpf.followPort(netnsCookie, port);
    },
    [UNFOLLOW_PORT](netnsCookie, port) {
      bpf?.unfollowPort(netnsCookie, port);
    },
    [DRAIN]() {
      if (!closed) running.drain();
    },
    unref() {
      keepAlive.unref();
      return trace;
    },
    ref() {
      keepAlive.ref();
      return trace;
    },
  };
  return trace;
}

/** Every state but TIME_WAIT: a connection whose full socket is gone has ended, though its TIME_WAIT keeps the cookie. */
const FULL_SOCKET_STATES = TCP_STATES.filter((s) => s !== 'TIME_WAIT');

/**
 * The cookies of the full TCP sockets in the network namespace with this cookie, or null when it
 * cannot be looked at (not found, or not entered): then nothing of it is forgotten.
 */
function cookiesIn(netns: string, home: string, namespaces: NamespaceIndex): Set<CookieKey> | null {
  try {
    return namespaces.withFd(netns, home, (nsFd) => socketCookieKeys(nsFd, FULL_SOCKET_STATES));
  } catch {
    return null;
  }
}
