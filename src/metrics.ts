/**
 * Always-on close metrics for a server: the outcome of every connection it accepts (graceful,
 * reset sent, reset received, timed out, …), counted per label (the listener by default, or what
 * the application names, e.g. a route), from the kernel's own account of each end
 * (`traceConnections()`), and published on `diagnostics_channel` for a metrics library to export.
 *
 * Per connection it costs one getsockopt when the connection is accepted (its cookie) and a Map
 * lookup when it ends; an end freed on its way to TIME_WAIT is told from what Node saw where that
 * suffices, and looked up (a batched sock_diag request) only where it does not. On BPF the program
 * writes the ends of the sockets on each counted server's listening port (its port filter: no
 * call per connection), read every `METRICS_DELAY_MS` or when the ring fills (no wake-up per end).
 * One trace serves every server of the process.
 */
import dc from 'node:diagnostics_channel';
import type net from 'node:net';
import { native } from './binding';
import { cookieKeyOf } from './diag';
import { invalidArgType } from './errors';
import { handleFd } from './fd';
import { cookieOfKey, hexCookieKey, TRACE_OUTCOMES, type ConnectionEnd, type CookieKey, type TraceOutcome, type TraceSourceName } from './trace/ends';
import { checkOptions, DRAIN, FOLLOW, FOLLOW_PORT, LOOK_UP, startTrace, UNFOLLOW, UNFOLLOW_PORT, type InternalTrace, type TraceOptions } from './trace/trace';

/** The `diagnostics_channel` on which every end of a connection a `serverMetrics()` counts is published. */
export const END_CHANNEL = 'finwait:connection:end';

/** What is published on `END_CHANNEL`. */
export interface ConnectionEndMessage {
  server: net.Server;
  /** The connection's label (`ServerMetricsOptions.label`; the listener's `address:port` by default). */
  label: string;
  /** The end's outcome, told with what Node saw where the kernel's account could not (see `because`). */
  outcome: TraceOutcome;
  because: string;
  end: ConnectionEnd;
}

/** What `serverMetrics()` counts under, and the trace it uses. */
export interface ServerMetricsOptions {
  /**
   * The label a connection is counted under, asked once when Node closes the socket (so that
   * what the application learnt of it, e.g. its last route, can name it). Default: the
   * listener's `address:port`.
   */
  label?: (socket: net.Socket) => string;
  /** The trace's source (see `traceConnections()`); the first `serverMetrics()` of the process chooses it. */
  source?: TraceSourceName;
  /** Sampling interval of the `'destroy-multicast'` source, in ms. */
  interval?: number;
}

/** A count per outcome. */
export type OutcomeCounts = Record<TraceOutcome, number>;

/** The counts of one server's connections by how they ended (see `serverMetrics()`). */
export interface ServerMetrics {
  /** The source the counts come from (`'bpf'` tells every outcome; `'destroy-multicast'` counts some as `'unknown'`). */
  readonly source: TraceSourceName;
  /** Why not `'bpf'`, when it was chosen. */
  readonly reason?: string;
  /** Ends counted so far, by outcome. */
  readonly counts: Readonly<OutcomeCounts>;
  /** The same by label. */
  readonly byLabel: ReadonlyMap<string, Readonly<OutcomeCounts>>;
  /** Connections accepted and not ended yet (in the kernel: a TIME_WAIT or an orphan ends later than Node's 'close'). */
  readonly pending: number;
  /** Stops counting this server (its pending connections are not counted). */
  close(): void;
}

/** A connection of a counted server, from its accept to its count. */
class Tracked implements NodeFacts {
  readonly metrics: Metrics;
  /** Its cookie, as the Map of tracked connections keys it. */
  readonly key: CookieKey;
  /** Until Node's 'close': the socket, to be labelled then. */
  socket: net.Socket | undefined;
  /** The listener's `address:port`, read when the connection was accepted (Node forgets it at 'close'). */
  readonly listener: string;
  label: string | undefined = undefined;
  /** What Node saw (NodeFacts), read at its 'close'. */
  peerEnded = false;
  errorCode: string | undefined = undefined;
  /** When Node's 'close' came (ms, performance.now()). */
  closedAt: number | undefined = undefined;
  /** Its cookie is in the BPF program's cookie filter (its server's port is not in the port filter). */
  byCookie = false;
  /** The kernel's account, when it came before Node's 'close' and left the outcome unknown. */
  early: ConnectionEnd | undefined = undefined;
  /** The kernel's account when it hangs on a TIME_WAIT after it, until Node's 'close' says whether that needs a look. */
  pending: ConnectionEnd | undefined = undefined;

  constructor(metrics: Metrics, key: CookieKey, socket: net.Socket, listener: string) {
    this.metrics = metrics;
    this.key = key;
    this.socket = socket;
    this.listener = listener;
  }

  /** What Node saw, once its 'close' came. */
  get node(): NodeFacts | undefined {
    return this.closedAt === undefined ? undefined : this;
  }
}

/**
 * How long after Node's 'close' the kernel's account of an end may take: an orphan retransmitting
 * its FIN (tcp_orphan_retries) or waiting in FIN_WAIT2 ends within minutes. Past this, its events
 * were lost (a full ring buffer, a netlink overrun): the connection is counted unknown and
 * forgotten, so that nothing accumulates.
 */
export const END_WAIT_MS = 10 * 60_000;
const SWEEP_MS = 60_000;
/** On BPF, how long an end may wait in the kernel's ring before it is counted (ms). */
const METRICS_DELAY_MS = 100;

/** What Node's socket saw of the end. */
export interface NodeFacts {
  /** 'end' was emitted: the peer's FIN came after every byte it sent was read. */
  peerEnded: boolean;
  /** The code of the error the socket was destroyed with, if any. */
  errorCode: string | undefined;
}

/** The code of the error `socket` was destroyed with, if any. */
function errorCodeOf(socket: net.Socket): string | undefined {
  const errored = (socket as net.Socket & { errored?: { code?: unknown } | null }).errored;
  return typeof errored?.code === 'string' ? errored.code : undefined;
}

/**
 * @internal Whether what Node saw tells a graceful end where the kernel's account alone waits on a TIME_WAIT
 * look-up (freed from FIN_WAIT2 or CLOSING, or, sampled, from an unseen state, with no error):
 * the peer's FIN was read ('end', after every byte it sent), no error, and nothing unacknowledged
 * when the socket was freed, so our FIN was acknowledged too. A full socket that read the peer's
 * FIN in FIN_WAIT2 is freed by that FIN itself, into a TIME_WAIT (tcp_fin()); no RST follows.
 */
export function gracefulByNode(end: ConnectionEnd, node: NodeFacts): boolean {
  const unacked = end.counters?.unackedBytes ?? end.counters?.unackedSegments;
  return node.peerEnded && node.errorCode === undefined && unacked === 0;
}

/**
 * The outcome of an end the kernel's account left `'unknown'` (sampled states see no error),
 * told by what Node saw: an error Node reported names the RST or timeout; a connection whose peer
 * closed first, all of it read ('end'), and freed with nothing unacknowledged was closed with a
 * FIN that was acknowledged (unread data, the one cause of an RST at close, cannot follow 'end').
 */
export function refineOutcome(end: ConnectionEnd, node: NodeFacts | undefined): { outcome: TraceOutcome; because: string } {
  if (end.outcome !== 'unknown' || node === undefined) return { outcome: end.outcome, because: end.because };
  if (node.errorCode === 'ECONNRESET' || node.errorCode === 'EPIPE') return { outcome: 'reset-received', because: `Node's socket failed with ${node.errorCode}` };
  if (node.errorCode === 'ETIMEDOUT') return { outcome: 'timed-out', because: "Node's socket failed with ETIMEDOUT" };
  if (gracefulByNode(end, node)) {
    return { outcome: 'graceful', because: "the peer closed first ('end': all it sent was read), and the kernel freed the socket with our FIN acknowledged" };
  }
  return { outcome: end.outcome, because: end.because };
}

function zero(): OutcomeCounts {
  return Object.fromEntries(TRACE_OUTCOMES.map((o) => [o, 0])) as OutcomeCounts;
}

const channel = dc.channel(END_CHANNEL);
/** Connections of every counted server, by cookie (`CookieKey`). */
const tracked = new Map<CookieKey, Tracked>();
let shared: InternalTrace | undefined;
let sweeper: NodeJS.Timeout | undefined;
let users = 0;
/** The listening ports in the trace's port filter ("netns cookie:port"), with how many servers follow each. */
const followedPorts = new Map<string, number>();

/** A listening port in the port filter: the namespace cookie of the listener and its port. */
interface FollowedPort {
  netns: bigint;
  port: number;
}

/**
 * The network namespace cookie of the socket `fd` (SO_NETNS_COOKIE, read from the socket itself:
 * no privilege), 0n if unknown. An addon built before that call has it through the namespace's fd
 * (SIOCGSKNS, which needs CAP_NET_ADMIN).
 */
function netnsCookieOf(fd: number): bigint {
  if (fd < 0) return 0n;
  const n = native();
  let ns = -1;
  try {
    if (n.socketNetnsCookie !== undefined) return n.socketNetnsCookie(fd);
    ns = n.socketNetns(fd);
    return n.netnsCookie(ns);
  } catch {
    return 0n;
  } finally {
    if (ns >= 0) n.closeFd(ns);
  }
}

/** Adds the listener's port to the shared trace's port filter (one more server following it); false when it cannot. */
function followPort(at: FollowedPort): boolean {
  const key = `${at.netns}:${at.port}`;
  const n = followedPorts.get(key);
  if (n !== undefined) {
    followedPorts.set(key, n + 1);
    return true;
  }
  if (shared === undefined || !shared[FOLLOW_PORT](at.netns, at.port)) return false;
  followedPorts.set(key, 1);
  return true;
}

/** One server fewer follows the port: out of the filter with the last. */
function unfollowPort(at: FollowedPort): void {
  const key = `${at.netns}:${at.port}`;
  const n = followedPorts.get(key) ?? 0;
  if (n > 1) {
    followedPorts.set(key, n - 1);
    return;
  }
  followedPorts.delete(key);
  shared?.[UNFOLLOW_PORT](at.netns, at.port);
}

/** @internal Counts unknown, and forgets, the connections Node closed more than END_WAIT_MS before `now` with no end seen. */
export function sweepMetrics(now = performance.now()): void {
  const before = now - END_WAIT_MS;
  for (const [key, t] of tracked) {
    if (t.closedAt === undefined || t.closedAt > before) continue;
    tracked.delete(key);
    // It may have ended before it was followed: its cookie would stay in the BPF filter.
    if (t.byCookie) shared?.[UNFOLLOW](cookieOfKey(key));
    t.metrics.unseen(t);
  }
}

function onEnd(end: ConnectionEnd): void {
  const key = hexCookieKey(end.cookie);
  const t = tracked.get(key);
  if (t === undefined) return;
  tracked.delete(key);
  t.metrics.ended(t, end);
}

/** An end that hangs on a TIME_WAIT after it: told by what Node saw, or looked up, once Node's 'close' came. */
function onPending(end: ConnectionEnd): void {
  const t = tracked.get(hexCookieKey(end.cookie));
  if (t === undefined) return;
  if (t.closedAt === undefined) t.pending = end;
  else settlePending(t, end);
}

function settlePending(t: Tracked, end: ConnectionEnd): void {
  if (!gracefulByNode(end, t)) {
    // Looked up; the settled end comes back through onEnd().
    shared?.[LOOK_UP](end);
    return;
  }
  tracked.delete(t.key);
  end.outcome = 'graceful';
  end.because = `freed ${end.path.length > 1 ? `from ${end.path[end.path.length - 2]} ` : ''}with nothing unacknowledged after the peer's FIN was read ('end'): both FINs were exchanged (what took over its 4-tuple was not looked up)`;
  t.metrics.ended(t, end);
}

class Metrics implements ServerMetrics {
  readonly source: TraceSourceName;
  readonly reason?: string;
  readonly counts = zero();
  readonly byLabel = new Map<string, OutcomeCounts>();
  #pending = 0;
  #closed = false;
  readonly #server: net.Server;
  readonly #label: ((socket: net.Socket) => string) | undefined;
  readonly #onConnection: (socket: net.Socket) => void;
  #listenerKey: string | undefined;
  /** The server listens on a Unix socket (its address is a path). */
  #pipe = false;
  /** Its listening port in the trace's port filter (BPF): its connections' ends come without a call each. */
  #port: FollowedPort | undefined;
  readonly #onListening = (): void => {
    this.#listenerKey = undefined;
    if (this.#port !== undefined) unfollowPort(this.#port);
    this.#port = undefined;
  };

  constructor(server: net.Server, trace: InternalTrace, label: ((socket: net.Socket) => string) | undefined) {
    this.#server = server;
    this.#label = label;
    this.source = trace.source;
    if (trace.reason !== undefined) this.reason = trace.reason;
    this.#onConnection = (socket) => this.#accept(socket);
    // TLS servers emit 'secureConnection' for the TLS socket; the TCP socket comes with 'connection'.
    server.on('connection', this.#onConnection);
    server.on('listening', this.#onListening);
  }

  get pending(): number {
    return this.#pending;
  }

  /**
   * The listener's `address:port`: getsockname(2) once per listen, not per connection. Then, on
   * BPF, its port joins the trace's port filter (the program writes the ends of every socket on
   * it, whatever process holds it; they are matched to this server's connections by cookie).
   */
  #listener(): string {
    if (this.#listenerKey !== undefined) return this.#listenerKey;
    const address = this.#server.address();
    this.#pipe = typeof address === 'string';
    this.#listenerKey = typeof address === 'string' ? address : address === null ? '?' : `${address.address}:${address.port}`;
    if (typeof address === 'object' && address !== null && this.source === 'bpf') {
      const netns = netnsCookieOf(handleFd(this.#server));
      // 0n: a kernel before 5.14 (no SO_NETNS_COOKIE): each connection is followed by its cookie.
      const at = { netns, port: address.port };
      if (netns !== 0n && followPort(at)) this.#port = at;
    }
    return this.#listenerKey;
  }

  #accept(socket: net.Socket): void {
    const listener = this.#listener();
    // A Unix socket's connections are no TCP connections: the trace never names them.
    if (this.#pipe) return;
    let cookie: bigint;
    try {
      // The socket's cookie, as the kernel's events name it (one getsockopt).
      cookie = native().socketCookie(handleFd(socket));
    } catch {
      // Closed before it could be read: nothing of it can be matched.
      return;
    }
    const key = cookieKeyOf(cookie);
    // On BPF, the program writes this socket's end from now on: it is on the followed port, or
    // it joins the cookie filter; if that is full, no end comes and the sweep counts it unknown.
    const t = new Tracked(this, key, socket, listener);
    if (this.#port === undefined && shared !== undefined) {
      shared[FOLLOW](cookie);
      t.byCookie = true;
    }
    tracked.set(key, t);
    this.#pending++;
    // 'close' comes once: no once() wrapper.
    socket.on('close', () => this.#closedByNode(t, socket));
  }

  #closedByNode(t: Tracked, socket: net.Socket): void {
    t.label = this.#labelOf(t);
    t.peerEnded = socket.readableEnded;
    t.errorCode = errorCodeOf(socket);
    t.socket = undefined;
    t.closedAt = performance.now();
    if (this.#closed) return;
    if (t.early !== undefined) this.#count(t, t.early);
    else if (t.pending !== undefined) settlePending(t, t.pending);
  }

  #labelOf(t: Tracked): string {
    if (this.#label !== undefined && t.socket !== undefined) {
      try {
        const label = this.#label(t.socket);
        if (typeof label === 'string') return label;
      } catch {
        // A label function that throws must not cost the count.
      }
    }
    return t.listener;
  }

  /** The kernel's account of `t`'s end came. */
  ended(t: Tracked, end: ConnectionEnd): void {
    // Before Node's 'close' (an RST frees the socket at once): what Node saw may not be known
    // yet (it reads the error later), and it is what tells an end the kernel leaves unknown.
    if (t.socket !== undefined && end.outcome === 'unknown') t.early = end;
    else this.#count(t, end);
  }

  /** No end came for `t` long after Node closed it: counted unknown. */
  unseen(t: Tracked): void {
    if (t.early !== undefined) return this.#count(t, t.early);
    this.#tally(t, 'unknown');
  }

  #count(t: Tracked, end: ConnectionEnd): void {
    const { outcome, because } = refineOutcome(end, t.node);
    const label = this.#tally(t, outcome);
    if (channel.hasSubscribers) channel.publish({ server: this.#server, label, outcome, because, end } satisfies ConnectionEndMessage);
  }

  /** `t` is no longer pending: one more `outcome`, in all and under its label (returned). */
  #tally(t: Tracked, outcome: TraceOutcome): string {
    this.#pending--;
    const label = t.label ?? this.#labelOf(t);
    this.counts[outcome]++;
    let by = this.byLabel.get(label);
    if (by === undefined) this.byLabel.set(label, (by = zero()));
    by[outcome]++;
    return label;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#server.off('connection', this.#onConnection);
    this.#server.off('listening', this.#onListening);
    if (this.#port !== undefined) unfollowPort(this.#port);
    this.#port = undefined;
    for (const [key, t] of tracked) {
      if (t.metrics !== this) continue;
      tracked.delete(key);
      if (t.byCookie) shared?.[UNFOLLOW](cookieOfKey(key));
    }
    this.#pending = 0;
    if (--users === 0) {
      shared?.close();
      shared = undefined;
      followedPorts.clear();
      clearInterval(sweeper);
      sweeper = undefined;
    }
  }
}

/**
 * @internal For benchmarks: reads the ends waiting in the trace's source now (on BPF they wait in
 * the ring up to METRICS_DELAY_MS), so that their counting falls in the span measured.
 */
export function drainMetricEnds(): void {
  shared?.[DRAIN]();
}

/**
 * Counts the outcome of every connection `server` accepts from now on, as the kernel saw it end
 * (see `traceConnections()`), and publishes each on `END_CHANNEL`. The trace is shared by every
 * server of the process and does not keep the process alive.
 */
export function serverMetrics(server: net.Server, options: ServerMetricsOptions = {}): ServerMetrics {
  if (typeof server !== 'object' || server === null || typeof (server as net.Server).on !== 'function' || typeof (server as net.Server).listen !== 'function') {
    throw invalidArgType('server', 'a net.Server (http, https, http2 or net)', server);
  }
  if (typeof options !== 'object' || options === null) throw invalidArgType('options', 'an object', options);
  if (options.label !== undefined && typeof options.label !== 'function') throw invalidArgType('options.label', 'a function', options.label);
  if (shared === undefined) {
    const traceOptions: TraceOptions = {};
    if (options.source !== undefined) traceOptions.source = options.source;
    if (options.interval !== undefined) traceOptions.interval = options.interval;
    // The server's own sockets are matched by cookie: no process lookup is needed.
    traceOptions.owners = false;
    // Only the servers' connections are followed; every other socket's events are dropped at once.
    // Counting needs each end's last state and error, not the path: the BPF program writes only the ends.
    // An end on its way to TIME_WAIT is looked up only where what Node saw does not tell it.
    // On BPF the program's cookie filter drops the other sockets' records in the kernel.
    // It also writes those on the servers' listening ports (no call per connection), and lets ends
    // wait in its ring up to METRICS_DELAY_MS (no wake-up per end).
    shared = startTrace(onEnd, checkOptions(traceOptions), {
      only: (key) => tracked.has(key),
      endsOnly: true,
      onPending,
      byCookie: true,
      byPort: true,
      maxDelay: METRICS_DELAY_MS,
    }).unref();
    sweeper = setInterval(sweepMetrics, SWEEP_MS).unref();
  }
  users++;
  return new Metrics(server, shared, options.label);
}
