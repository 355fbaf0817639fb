/**
 * One connection between the lab's two hosts for `finwait demo`: TCP A is a socket in host `a`'s
 * network namespace, TCP B one in host `b`'s, and every segment between them crosses the lab's
 * userspace wire, which logs it (and holds or drops it when a scenario says so).
 *
 * States. Both ends are followed with `watch()` on their fds. Once an fd is closed or reads CLOSE,
 * each end is looked up through its host's `findSocket()` (an exact sock_diag lookup inside the
 * host's namespace) whenever a segment went by or a timer ran out, only while the wire is quiet
 * (see `QUIET_MS`), and `watch()`'s own sock_diag looks (which it makes in the socket's namespace
 * too, on its own schedule, up to 100 ms apart) are left out. The history drawn is
 * the RFC machine (`replay()`) run over both: what `watch()` saw on the fd and its events, and
 * what the host's sock_diag showed, in time order.
 *
 * Segments. The wire's log times each segment in ms since the wire started, on the monotonic
 * clock the histories use (`performance.now()`), but the start is private to the wire. The wire
 * emits `'segment'` synchronously right after timing an entry, so `performance.now() - entry.at`
 * read in that event is the wire's start on the histories' clock plus the few µs the emit takes;
 * the smallest over the run is used as the offset for every entry.
 */
import net from 'node:net';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import { tcpState, watch, type Lifecycle, type SocketEntry, type SocketTuple, type TcpState } from '../index';
import { replay, type HistoryEntry, type LifecycleState, type Observation } from '../lifecycle/fsm';
import { orphanTimedOut, type DiagSighting } from '../lifecycle/watch';
import { createLab, type Host, type Lab, type LogEntry } from '../testing/index';
import { connectedTuple } from '../diag';
import type { Action, Diagram, DiagramEnd, Segment, Side } from './diagram';
import { DEADLINE, poll, within } from './wait';

/** The port the listening host listens on, in its own namespace. */
export const LAB_PORT = 80;

/** Node options of one end. */
export interface LabEndOptions {
  allowHalfOpen?: boolean;
  /** Do not read: data and the peer's FIN stay queued, and Node never closes the fd by itself. */
  pauseOnConnect?: boolean;
}

/** How the connection is made. */
export interface LabRunOptions {
  /** The host that listens (its accepted socket is that end): `'b'` (default: TCP A is the client) or `'a'`. */
  listener?: Side;
  client?: LabEndOptions;
  server?: LabEndOptions;
  /** sysctls written in both hosts' namespaces before any socket is made. */
  sysctl?: Readonly<Record<string, string | number>>;
}

/** The note every lab drawing carries: where its states come from, and what `watch()` cannot do there. */
export const LAB_STATES_NOTE =
  "states: watch() on each end's fd and its events; the sock_diag rows come from each lab host's findSocket() (sock_diag inside its namespace), asked after each segment once the wire is quiet, so that no look delays a segment";

/** The states drawn as a sock_diag row of a connection (a request socket's NEW_SYN_RECV is not). */
const CONNECTION_STATES: TcpState[] = ['ESTABLISHED', 'SYN_SENT', 'SYN_RECV', 'FIN_WAIT1', 'FIN_WAIT2', 'TIME_WAIT', 'CLOSE_WAIT', 'LAST_ACK', 'CLOSING'];

/**
 * When the host's sock_diag is asked. The wire runs on the same event loop, and a segment it
 * relays late changes what the kernels do (a tail-loss probe, an RST). A lookup is exact (~30
 * µs; a dump, `host.sockets()`, walks the kernel's whole connection table: ~2.5 ms here, 10-20 ms
 * with 80,000 TIME_WAIT sockets), and still an end is looked up only when something may have changed it (its
 * fd closed or read CLOSE, a segment went by, its timer ran out) and the wire has been quiet for
 * `QUIET_MS`, so that what the kernels sent has been relayed first.
 */
const QUIET_MS = 2;
/** Looked up again this long after a timer sock_diag showed should have run out (ms; a jiffy is 4 ms at HZ=250). */
const EXPIRY_SLACK_MS = 5;

/** Events `watch()` observed itself (its own calls, Node's errors), replayed as events. */
const OBSERVED_EVENTS = new Set(['close', 'rst-sent', 'rst-received', 'timeout']);

/** What the host's sock_diag showed of one end. */
interface Follow {
  /** Observations in the order made. `last`: replayed after everything `watch()` saw (see `tick()`). */
  made: { observation: Observation; last: boolean }[];
  seen?: DiagSighting;
  /** Something may have changed (a segment on the wire, the fd closed): look when the wire is quiet. */
  dirty: boolean;
  /** When the timer sock_diag last showed runs out (ms, `performance.now()`): look then. */
  due: number;
  /** Node closed the fd ('close' was emitted, after `watch()`'s own handler). */
  fdClosed: boolean;
  /** The host's sock_diag no longer has the connection. */
  finished: boolean;
}

/** `watch()`'s history as observations, without its sock_diag looks and without what it inferred. */
function watchObservations(history: readonly HistoryEntry[]): Observation[] {
  const observations: Observation[] = [];
  for (const h of history) {
    if (h.source === 'inferred' || h.source === 'diag') continue;
    if (h.source === 'event' && h.event !== undefined && OBSERVED_EVENTS.has(h.event)) {
      observations.push({ event: h.event, source: 'event', at: h.at });
    } else observations.push({ state: h.state, source: h.source, at: h.at });
  }
  return observations;
}


/** A connection between the lab's hosts, both ends watched, every segment logged. */
export class LabRun {
  readonly actions: Action[] = [];
  t0 = 0;
  lab!: Lab;
  listener!: net.Server;
  client!: net.Socket;
  server!: net.Socket;
  /** TCP A's socket (host a) and TCP B's (host b). */
  readonly sockets = {} as Record<Side, net.Socket>;
  readonly #watch = {} as Record<Side, Lifecycle>;
  readonly #tuples = {} as Record<Side, SocketTuple>;
  readonly #follow: Record<Side, Follow> = {
    a: { made: [], dirty: true, due: Infinity, fdClosed: false, finished: false },
    b: { made: [], dirty: true, due: Infinity, fdClosed: false, finished: false },
  };
  #labels: Record<Side, string> = { a: 'client', b: 'server (accepted)' };
  #offset = Infinity;
  /** When the wire last logged a segment (ms, `performance.now()`). */
  #lastSegment = -Infinity;
  #timer: NodeJS.Timeout | undefined;
  /** The first failure of the wire or of a look: the next wait() rejects with it. */
  #failure: Error | undefined;

  /** Creates a lab and connects its hosts; rejects with `ERR_FINWAIT_LAB_UNAVAILABLE` if the lab cannot run here. */
  static async open(options: LabRunOptions = {}): Promise<LabRun> {
    const run = new LabRun();
    run.lab = await createLab();
    try {
      await run.#connect(options);
    } catch (error) {
      await run.close();
      throw error;
    }
    return run;
  }

  async #connect(options: LabRunOptions): Promise<void> {
    const { lab } = this;
    for (const [name, value] of Object.entries(options.sysctl ?? {})) {
      lab.a.sysctl(name, value);
      lab.b.sysctl(name, value);
    }
    lab.wire.on('segment', (entry: LogEntry) => {
      const now = performance.now();
      this.#offset = Math.min(this.#offset, now - entry.at);
      this.#lastSegment = now;
      // Sent by one end, about to reach the other: either may change state. A TIME_WAIT only
      // ends by its timer or an RST (RFC 1337's assassination).
      for (const follow of Object.values(this.#follow)) {
        if (follow.seen?.state !== 'TIME_WAIT' || entry.flags.includes('RST')) follow.dirty = true;
      }
    });
    lab.wire.on('error', (error: Error) => {
      this.#failure ??= error;
    });
    const serverSide: Side = options.listener ?? 'b';
    const clientSide: Side = serverSide === 'a' ? 'b' : 'a';
    const host = (side: Side): Host => (side === 'a' ? lab.a : lab.b);
    this.listener = await host(serverSide).listen(LAB_PORT, { ...options.server });
    const accepted = once(this.listener, 'connection') as Promise<[net.Socket]>;
    this.t0 = performance.now();
    this.act(clientSide, 'connect()');
    this.client = await within(host(clientSide).connect(LAB_PORT, { ...options.client }), 'the connection');
    [this.server] = await within(accepted, 'the accepted connection');
    this.sockets[clientSide] = this.client;
    this.sockets[serverSide] = this.server;
    this.#labels = { [clientSide]: 'client', [serverSide]: 'server (accepted)' } as Record<Side, string>;
    for (const side of ['a', 'b'] as const) {
      const socket = this.sockets[side];
      this.#watch[side] = watch(socket);
      // After watch()'s own 'close' handler, so what it learns from the close comes first.
      socket.once('close', () => {
        this.#follow[side].fdClosed = true;
        this.#follow[side].dirty = true;
      });
      this.#tuples[side] = connectedTuple(socket);
    }
    this.#timer = setInterval(() => {
      // A failed look (sock_diag, say EMFILE) must not escape the timer: the process would die
      // with the lab's namespaces left behind. It fails the run's next wait instead, and
      // withLab() closes the lab.
      try {
        this.tick();
      } catch (error) {
        this.#failure ??= error as Error;
        clearInterval(this.#timer);
      }
    }, 1);
  }

  act(side: Side, text: string): void {
    this.actions.push({ at: performance.now(), side, text });
  }

  host(side: Side): Host {
    return side === 'a' ? this.lab.a : this.lab.b;
  }

  /** The 4-tuple of an end, as its own socket named it once connected. */
  tuple(side: Side): SocketTuple {
    return this.#tuples[side];
  }

  /** The end in its host's sock_diag (a connection state), or `undefined`. */
  lookup(side: Side): SocketEntry | undefined {
    const entry = this.host(side).findSocket(this.#tuples[side]);
    return entry && CONNECTION_STATES.includes(entry.state) ? entry : undefined;
  }

  /**
   * One look at both ends: their fds (an observation `watch()` records too), and the host's
   * sock_diag for an end whose fd is closed or reads CLOSE, when something may have changed it
   * and the wire is quiet (see `QUIET_MS`).
   */
  tick(): void {
    const quiet = performance.now() - this.#lastSegment >= QUIET_MS;
    for (const side of ['a', 'b'] as const) {
      const follow = this.#follow[side];
      if (follow.finished) continue;
      const socket = this.sockets[side];
      if (!socket.destroyed) {
        try {
          tcpState(socket);
        } catch {
          // Closed in between: the next look goes through sock_diag.
        }
      }
      if (!this.#diagOnly(side) || !quiet) continue;
      if (follow.dirty || performance.now() >= follow.due) this.#look(side);
    }
  }

  /** True once only sock_diag can say more about `side`: its fd is closed, or reads CLOSE. */
  #diagOnly(side: Side): boolean {
    if (this.#follow[side].fdClosed) return true;
    return this.#watch[side].history.filter((h) => h.source === 'kernel').at(-1)?.state === 'CLOSE';
  }

  /**
   * Looks `side` up in its host's sock_diag; records what it shows when only sock_diag can show
   * it. A connection that vanished while Node still held its fd is recorded CLOSED after
   * everything `watch()` learns, since Node reports the RST that may have ended it (ECONNRESET)
   * only on its next read.
   */
  #look(side: Side): SocketEntry | undefined {
    const follow = this.#follow[side];
    follow.dirty = false;
    // When the question was asked: the kernel answers for that moment (a dump can take ms).
    const at = performance.now();
    const entry = this.lookup(side);
    if (follow.finished || !this.#diagOnly(side)) return entry;
    if (entry) {
      if (entry.state !== follow.seen?.state) follow.made.push({ observation: { state: entry.state, source: 'diag', at }, last: false });
      follow.seen = { state: entry.state, timer: entry.timer, at };
      follow.due = entry.timer.kind === 'off' ? Infinity : at + entry.timer.expiresMs + EXPIRY_SLACK_MS;
      return entry;
    }
    const last = !follow.fdClosed;
    if (orphanTimedOut(follow.seen, at)) follow.made.push({ observation: { event: 'fin-wait2-timeout', source: 'diag', at }, last });
    follow.made.push({ observation: { state: 'CLOSED', source: 'diag', at }, last });
    follow.finished = true;
    return undefined;
  }

  /** An end's history: `watch()`'s fd observations and events, and the host's sock_diag, through the RFC machine. */
  history(side: Side): readonly HistoryEntry[] {
    const made = this.#follow[side].made;
    const inTime = [...watchObservations(this.#watch[side].history), ...made.filter((m) => !m.last).map((m) => m.observation)];
    // A stable sort: on a tie, what watch() saw goes first.
    inTime.sort((x, y) => x.at - y.at);
    return replay([...inTime, ...made.filter((m) => m.last).map((m) => m.observation)]).history;
  }

  /** True once the history of `side` has `state` (seen or inferred). */
  reached(side: Side, state: LifecycleState): boolean {
    return this.history(side).some((h) => h.state === state);
  }

  /** True once `side` was seen in `state` (not inferred). */
  seen(side: Side, state: LifecycleState): boolean {
    return this.history(side).some((h) => h.state === state && h.source !== 'inferred');
  }

  /** Resolves when `probe` holds, looking every ms; rejects if the wire or a look failed, or after the deadline. */
  async wait(what: string, probe: () => boolean, ms = DEADLINE): Promise<void> {
    await poll(what, () => {
      if (this.#failure) throw this.#failure;
      return probe();
    }, ms);
  }

  /** Resolves when TCP `side` has reached `state`. */
  until(side: Side, state: LifecycleState, ms = DEADLINE): Promise<void> {
    return this.wait(`TCP ${side.toUpperCase()} to reach ${state}`, () => this.reached(side, state), ms);
  }

  /** Resolves when the host's kernel has forgotten TCP `side`. */
  done(side: Side, ms = DEADLINE): Promise<void> {
    return this.wait(`TCP ${side.toUpperCase()} to be forgotten by its host's kernel`, () => this.#follow[side].finished, ms);
  }

  /** Whether the host's kernel has forgotten TCP `side`. */
  finished(side: Side): boolean {
    return this.#follow[side].finished;
  }

  /** The wire's log of this connection, timed on the histories' clock. */
  segments(): Segment[] {
    const ports = new Set([this.#tuples.a.local.port, this.#tuples.b.local.port]);
    const offset = Number.isFinite(this.#offset) ? this.#offset : 0;
    return this.lab.wire.log
      .filter((e) => ports.has(e.src.port) && ports.has(e.dst.port))
      .map((e) => ({
        at: e.at + offset,
        from: e.from,
        flags: e.flags.join(','),
        seq: e.seq,
        ack: e.ack,
        relSeq: e.relSeq,
        relAck: e.relAck,
        len: e.len,
        verdict: e.verdict,
      }));
  }

  /** Snapshots both ends (histories so far, each host's sock_diag for the ends it still has) and the wire's log. */
  diagram(scenario: string, title: string, notes: string[]): Diagram {
    const end = (side: Side): DiagramEnd => {
      const tuple = this.#tuples[side];
      const entry = this.#follow[side].finished ? undefined : this.#look(side);
      const finished = this.#follow[side].finished;
      return {
        label: this.#labels[side],
        local: tuple.local,
        remote: tuple.remote,
        history: this.history(side),
        finished,
        ...(entry ? { diag: { state: entry.state, timer: entry.timer, inode: entry.inode, at: performance.now() } } : {}),
      };
    };
    const a = end('a');
    const b = end('b');
    return {
      scenario,
      title,
      path: 'lab',
      t0: this.t0,
      a,
      b,
      actions: [...this.actions],
      segments: this.segments(),
      notes: [...notes, LAB_STATES_NOTE],
    };
  }

  /** Stops following, destroys every socket, deletes both namespaces (TIME_WAIT goes with them). */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    this.#timer = undefined;
    await this.lab.close();
  }
}

/** Runs `body` on a fresh lab connection and always closes the lab. */
export async function withLab(options: LabRunOptions, body: (run: LabRun) => Promise<Diagram>): Promise<Diagram> {
  const run = await LabRun.open(options);
  try {
    return await body(run);
  } finally {
    await run.close();
  }
}
