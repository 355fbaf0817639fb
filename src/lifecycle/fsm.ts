/**
 * The close lifecycle of one TCP connection as a pure state machine.
 *
 * The machine is the close half of RFC 793 §3.5 (figures 13 and 14; the state diagram of §3.2),
 * with RFC 1122 §4.2.2.13's half-close and what Linux actually does (the kernel rows that
 * test/kernel/ proves on two real kernels): FIN_WAIT1 goes straight to TIME_WAIT on one FIN+ACK
 * segment, an orphaned FIN_WAIT2 is dropped by a timer, a passive open waits in a request socket
 * (NEW_SYN_RECV), and an fd reads CLOSE while the connection's TIME_WAIT goes on in a socket only
 * sock_diag shows.
 *
 * Two layers:
 * - the graph: {@link TRANSITIONS}, {@link next}, {@link isLegal} and {@link completePath} say
 *   what the machine allows;
 * - the reducer: {@link observe} folds what a watcher saw (states polled on the fd, sock_diag
 *   dumps, Node's events) into a {@link CloseModel}. It fills in the states polling missed
 *   (marked `'inferred'`), keeps an fd's ambiguous CLOSE open until something resolves it, and
 *   flags what the machine forbids without ever dropping it.
 *
 * Nothing here does I/O, keeps a timer or mutates its inputs: every model is a new object,
 * readonly and never mutated.
 * @see RFC 793 §3.5, RFC 1122 §4.2.2.13, tcp(7)
 */
import { TCP_STATES } from '../states';
import type { TcpState } from '../states';

// ---------------------------------------------------------------------------------------------
// States and events

/**
 * A state of the model: a kernel state name, or `'CLOSED'`, RFC 793's CLOSED: no connection is
 * left and the kernel has forgotten it (sock_diag no longer lists the 4-tuple).
 *
 * `'CLOSED'` is not Linux's `'CLOSE'` (7). An fd still open reads `'CLOSE'` once the connection
 * has left it, by two quite different roads: TIME_WAIT began (the kernel moved the connection to
 * a timewait socket that only sock_diag shows, for 60 s), or the connection ended (an RST, the
 * last ACK in LAST_ACK, a timeout). So `'CLOSE'` has no transitions of its own: it is an
 * observation meaning "TIME_WAIT or CLOSED" that the model keeps
 * unresolved until sock_diag or an event says which; read where TIME_WAIT can no longer follow
 * (CLOSE_WAIT, LAST_ACK), it means CLOSED at once. `'BOUND_INACTIVE'` (a bound socket that is
 * no connection) and `'CLOSED'` have no transitions either.
 */
export type LifecycleState = TcpState | 'CLOSED';

/** Every model state: the kernel's states in their numeric order, then `'CLOSED'`. */
export const LIFECYCLE_STATES: readonly LifecycleState[] = Object.freeze([
  ...TCP_STATES,
  'CLOSED' as const,
]);

/** What an fd reading `'CLOSE'` can mean for its connection, TIME_WAIT first. */
export const FD_CLOSE_MEANS: readonly LifecycleState[] = Object.freeze([
  'TIME_WAIT' as const,
  'CLOSED' as const,
]);

/**
 * What moves the machine: a segment received or sent, a call of the application, or a timer.
 * The close events are RFC 793's; the opening ones let the model follow a connection from
 * SYN_SENT.
 *
 * - `'close'`: the application closed or shut down writing (close(2), shutdown(SHUT_WR), Node's
 *   `end()`), so a FIN is sent; in SYN_SENT nothing is sent, the attempt is dropped.
 * - `'fin'`: the peer's FIN arrived, not acknowledging a FIN of ours.
 * - `'ack-of-fin'`: the ACK of our FIN arrived.
 * - `'fin-ack'`: the peer's FIN and the ACK of ours in one segment (the 3-segment close).
 * - `'2msl'`: the TIME_WAIT timer expired (2MSL, 60 s on Linux).
 * - `'fin-wait2-timeout'`: an orphaned FIN_WAIT2 stopped waiting for the peer's FIN
 *   (TCP_LINGER2, net.ipv4.tcp_fin_timeout); an fd still open waits forever.
 * - `'rst-sent'`: we sent an RST: SO_LINGER {1, 0}, close(2) with unread data, TCP_LINGER2 = -1,
 *   an orphan answering data.
 * - `'rst-received'`: an RST arrived (ECONNRESET; ECONNREFUSED in SYN_SENT; EPIPE afterwards).
 * - `'timeout'`: the kernel gave up: retransmissions, keepalive probes or TCP_USER_TIMEOUT
 *   exhausted (ETIMEDOUT, RFC 793's user timeout); nothing is sent.
 * - `'syn'`: in SYN_SENT, the peer's SYN without an ACK (simultaneous open).
 * - `'syn-ack'`: in SYN_SENT, the peer's SYN+ACK.
 * - `'ack-of-syn'`: in SYN_RECV or NEW_SYN_RECV, the ACK of our SYN+ACK.
 */
export type CloseEvent =
  | 'close'
  | 'fin'
  | 'ack-of-fin'
  | 'fin-ack'
  | '2msl'
  | 'fin-wait2-timeout'
  | 'rst-sent'
  | 'rst-received'
  | 'timeout'
  | 'syn'
  | 'syn-ack'
  | 'ack-of-syn';

/** Every event, close events first. */
export const CLOSE_EVENTS: readonly CloseEvent[] = Object.freeze([
  'close',
  'fin',
  'ack-of-fin',
  'fin-ack',
  '2msl',
  'fin-wait2-timeout',
  'rst-sent',
  'rst-received',
  'timeout',
  'syn',
  'syn-ack',
  'ack-of-syn',
] as const);

const ABORTIVE: readonly CloseEvent[] = [
  'rst-sent',
  'rst-received',
  'timeout',
  'fin-wait2-timeout',
];

/**
 * True for the events that end a connection without the close handshake: RSTs and timeouts. They
 * all lead to CLOSED and are never inferred (see {@link completePath}), only observed.
 */
export function isAbortive(event: CloseEvent): boolean {
  return ABORTIVE.includes(event);
}

// ---------------------------------------------------------------------------------------------
// The graph

/** One legal step: `event` in state `from` leads to `to`. */
export interface Transition {
  readonly from: LifecycleState;
  readonly event: CloseEvent;
  readonly to: LifecycleState;
}

const step = (from: LifecycleState, event: CloseEvent, to: LifecycleState): Transition =>
  Object.freeze({ from, event, to });

/** The abortive exits of `from`, all to CLOSED (RFC 793 §3.9, "If the RST bit is set"). */
const aborts = (
  from: LifecycleState,
  events: readonly CloseEvent[] = ['rst-received', 'rst-sent', 'timeout'],
): Transition[] => events.map((event) => step(from, event, 'CLOSED'));

/**
 * The legal transitions, grouped by state. The order is data: {@link completePath} breaks ties by
 * it, so each state lists its most likely way out first.
 */
export const TRANSITIONS: readonly Transition[] = Object.freeze([
  // Opening (RFC 793 §3.4). Linux answers a SYN with a request socket (NEW_SYN_RECV) and gives
  // the application a socket already ESTABLISHED; SYN_RECV is left to simultaneous open and TFO.
  step('SYN_SENT', 'syn-ack', 'ESTABLISHED'),
  step('SYN_SENT', 'syn', 'SYN_RECV'),
  step('SYN_SENT', 'close', 'CLOSED'), // nothing is sent
  ...aborts('SYN_SENT', ['rst-received', 'timeout']), // ECONNREFUSED; SYN retries exhausted
  step('SYN_RECV', 'ack-of-syn', 'ESTABLISHED'),
  step('SYN_RECV', 'fin', 'CLOSE_WAIT'),
  step('SYN_RECV', 'close', 'FIN_WAIT1'),
  ...aborts('SYN_RECV'),
  step('NEW_SYN_RECV', 'ack-of-syn', 'ESTABLISHED'),
  ...aborts('NEW_SYN_RECV', ['rst-received', 'timeout']),
  step('LISTEN', 'close', 'CLOSED'),
  // ESTABLISHED lists the passive close first: a connection that vanished unseen most likely
  // went through CLOSE_WAIT and LAST_ACK (short in Node), not a 60 s TIME_WAIT sock_diag shows.
  step('ESTABLISHED', 'fin', 'CLOSE_WAIT'),
  step('ESTABLISHED', 'close', 'FIN_WAIT1'),
  ...aborts('ESTABLISHED'),
  // Active close (figure 13, left). The 3-segment close is listed before the simultaneous one.
  step('FIN_WAIT1', 'ack-of-fin', 'FIN_WAIT2'),
  step('FIN_WAIT1', 'fin-ack', 'TIME_WAIT'),
  step('FIN_WAIT1', 'fin', 'CLOSING'), // figure 14
  ...aborts('FIN_WAIT1'),
  step('FIN_WAIT2', 'fin', 'TIME_WAIT'),
  step('FIN_WAIT2', 'fin-wait2-timeout', 'CLOSED'), // orphans only
  ...aborts('FIN_WAIT2'), // rst-sent includes TCP_LINGER2 = -1
  step('CLOSING', 'ack-of-fin', 'TIME_WAIT'),
  ...aborts('CLOSING'),
  step('TIME_WAIT', '2msl', 'CLOSED'),
  // TIME_WAIT assassination (RFC 1337): Linux accepts it unless net.ipv4.tcp_rfc1337 = 1.
  step('TIME_WAIT', 'rst-received', 'CLOSED'),
  // Passive close (figure 13, right).
  step('CLOSE_WAIT', 'close', 'LAST_ACK'),
  ...aborts('CLOSE_WAIT'),
  step('LAST_ACK', 'ack-of-fin', 'CLOSED'),
  ...aborts('LAST_ACK'),
]);

const OUTGOING: ReadonlyMap<LifecycleState, readonly Transition[]> = TRANSITIONS.reduce(
  (map, t) => map.set(t.from, [...(map.get(t.from) ?? []), t]),
  new Map<LifecycleState, Transition[]>(),
);

function outgoing(state: LifecycleState): readonly Transition[] {
  return OUTGOING.get(state) ?? [];
}

/** The state after `event` in `state`, or `undefined` if the machine forbids that event there. */
export function next(state: LifecycleState, event: CloseEvent): LifecycleState | undefined {
  return outgoing(state).find((t) => t.event === event)?.to;
}

/**
 * True if `to` can follow `from` in at most one transition (staying put is legal). It judges the
 * graph only: an fd's `'CLOSE'` is an observation, judged by {@link observe}.
 */
export function isLegal(from: LifecycleState, to: LifecycleState): boolean {
  return from === to || outgoing(from).some((t) => t.to === to);
}

/** A walk through the graph: `events[i]` leads from `path[i]` to `path[i + 1]`. */
export interface Path {
  readonly path: readonly LifecycleState[];
  readonly events: readonly CloseEvent[];
}

const extend = (p: Path, t: Transition): Path => ({
  path: [...p.path, t.to],
  events: [...p.events, t.event],
});

/**
 * The shortest graceful path from `from` to every state it reaches, in breadth-first order. Edges
 * are tried in table order and the first path found to a state is kept, so each path is the first
 * in table order among the shortest (compared step by step by the table position of each step).
 */
function gracefulTree(from: LifecycleState): ReadonlyMap<LifecycleState, Path> {
  const cached = TREES.get(from);
  if (cached !== undefined) return cached;
  const tree = new Map<LifecycleState, Path>([[from, { path: [from], events: [] }]]);
  // A Map's iterator visits entries added while iterating: this loop is the BFS queue.
  for (const [state, p] of tree) {
    for (const t of outgoing(state)) {
      if (!isAbortive(t.event) && !tree.has(t.to)) tree.set(t.to, extend(p, t));
    }
  }
  if (KNOWN.has(from)) TREES.set(from, tree);
  return tree;
}

// Memos of the two searches, for the model's own states only (any string may be asked about).
// The graph is constant and the results frozen, so a memo changes nothing but the time taken.
const KNOWN: ReadonlySet<LifecycleState> = new Set(LIFECYCLE_STATES);
const TREES = new Map<LifecycleState, ReadonlyMap<LifecycleState, Path>>();
const PATHS = new Map<LifecycleState, Map<LifecycleState, Path | null>>();

/**
 * The shortest path from `from` made of graceful steps and then one step `accept`s, first in table
 * order among the shortest. Breadth-first order makes the first acceptable step the best one.
 */
function pathEndingIn(from: LifecycleState, accept: (t: Transition) => boolean): Path | undefined {
  for (const p of gracefulTree(from).values()) {
    const t = outgoing(p.path[p.path.length - 1]!).find(accept);
    if (t !== undefined) return extend(p, t);
  }
  return undefined;
}

/**
 * The path the connection most likely took from one observed state to the next, or `undefined`
 * when the machine cannot get from `from` to `to` (an anomaly).
 *
 * Of all paths it picks the one with the fewest abortive steps (RSTs, timeouts), then the fewest
 * steps, then the first in {@link TRANSITIONS} order. Abortive steps are never guessed: they leave
 * evidence the watcher observes itself (ECONNRESET, ETIMEDOUT, its own reset), while a state
 * missed by polling is almost always a short graceful one. Since every state that can reach
 * CLOSED can do so gracefully, an abortive step never appears in a result (abortive steps all end
 * in CLOSED). Examples: ESTABLISHED → FIN_WAIT2 is [ESTABLISHED, FIN_WAIT1, FIN_WAIT2];
 * ESTABLISHED → CLOSED is the passive close [ESTABLISHED, CLOSE_WAIT, LAST_ACK, CLOSED];
 * FIN_WAIT1 → TIME_WAIT is one `'fin-ack'`. `from === to` gives the one-state path.
 */
export function completePath(from: LifecycleState, to: LifecycleState): Path | undefined {
  const memo = PATHS.get(from)?.get(to);
  if (memo !== undefined) return memo ?? undefined;
  const p = gracefulTree(from).get(to) ?? pathEndingIn(from, (t) => t.to === to);
  const path = p && Object.freeze({ path: Object.freeze([...p.path]), events: Object.freeze([...p.events]) });
  if (KNOWN.has(from) && KNOWN.has(to)) {
    let row = PATHS.get(from);
    if (row === undefined) PATHS.set(from, (row = new Map()));
    row.set(to, path ?? null);
  }
  return path;
}

// ---------------------------------------------------------------------------------------------
// Role and outcome

/** Which side of the close a connection was on (RFC 793 figures 13 and 14). */
export type CloseRole = 'active' | 'passive' | 'simultaneous';

/**
 * The role a sequence of states shows: `'simultaneous'` if it contains CLOSING; otherwise the
 * first close state decides, `'active'` for FIN_WAIT1, FIN_WAIT2 or TIME_WAIT, `'passive'` for
 * CLOSE_WAIT or LAST_ACK; `undefined` if the connection never began a graceful close (reset in
 * ESTABLISHED, for one). A simultaneous close whose CLOSING nobody saw reads as active.
 */
export function roleOf(states: readonly LifecycleState[]): CloseRole | undefined {
  if (states.includes('CLOSING')) return 'simultaneous';
  for (const state of states) {
    if (state === 'FIN_WAIT1' || state === 'FIN_WAIT2' || state === 'TIME_WAIT') return 'active';
    if (state === 'CLOSE_WAIT' || state === 'LAST_ACK') return 'passive';
  }
  return undefined;
}

/**
 * How a connection ended: the close handshake completed (`'graceful'`), an RST went out or came
 * in, or the kernel gave up (`'timed-out'`: a timeout, or an orphaned FIN_WAIT2 expiring).
 */
export type CloseOutcome = 'graceful' | 'reset-sent' | 'reset-received' | 'timed-out';

/**
 * The outcome of a sequence of steps (a model's `history`, or a {@link Path} zipped into steps),
 * decided by the first decisive step: an abortive event, or the end of the handshake (TIME_WAIT
 * reached, or CLOSED by the ACK of our FIN in LAST_ACK). An RST after that (TIME_WAIT
 * assassination) does not change a graceful close. `undefined` while undecided, and for a
 * connection that ended with neither (a connect dropped in SYN_SENT).
 */
export function outcomeOf(
  steps: readonly { readonly state: LifecycleState; readonly event?: CloseEvent }[],
): CloseOutcome | undefined {
  for (const { state, event } of steps) {
    if (event === 'rst-sent') return 'reset-sent';
    if (event === 'rst-received') return 'reset-received';
    if (event === 'timeout' || event === 'fin-wait2-timeout') return 'timed-out';
    if (state === 'TIME_WAIT' || (state === 'CLOSED' && event === 'ack-of-fin')) return 'graceful';
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// The reducer

/**
 * How a state became known: polled on the fd (`'kernel'`, tcp_info), seen in a sock_diag dump
 * (`'diag'`), learned from an event (`'event'`: Node's errors, our own calls), or filled in by the
 * machine (`'inferred'`).
 */
export type Source = 'kernel' | 'diag' | 'event' | 'inferred';

/** One step of a model's history. */
export interface HistoryEntry {
  /** The state, as observed (an fd's `'CLOSE'` stays `'CLOSE'`) or inferred. */
  readonly state: LifecycleState;
  /**
   * Milliseconds, on the watcher's clock. For an observation, when it was made; for an inferred
   * entry, the time of the observation that implied it: the state began at or before `at`, and
   * after the previous entry's `at`.
   */
  readonly at: number;
  /** How the state became known. */
  readonly source: Source;
  /**
   * The event that led into this state, when known: observed for an event, the machine's
   * inference otherwise (polling shows states, not segments). Absent on the first entry, on an
   * fd's CLOSE, and on an anomaly.
   */
  readonly event?: CloseEvent;
  /** Present when the machine forbids this state after the one before it. */
  readonly anomaly?: true;
}

/**
 * One thing a watcher learned: a state it saw, or an event (Node's ECONNRESET → `'rst-received'`,
 * ETIMEDOUT → `'timeout'`, its own reset → `'rst-sent'`). Feed them in the order learned.
 *
 * Events are matched loosely, because Node cannot tell `'fin'` from `'fin-ack'`: an observed
 * `'fin'` (Node's `'end'`) is satisfied by a `'fin'` or `'fin-ack'` step, an observed
 * `'ack-of-fin'` by an `'ack-of-fin'` or `'fin-ack'` step. Each event happens at most once in a
 * connection, so an event already on the path is a confirmation and changes nothing.
 */
export type Observation =
  | { readonly state: LifecycleState; readonly source: Source; readonly at: number }
  | { readonly event: CloseEvent; readonly source: Source; readonly at: number };

/** An observation the machine forbids. A forbidden state is also kept in the history. */
export interface Anomaly {
  /** When the observation was made, ms on the watcher's clock. */
  readonly at: number;
  /** Where the observation came from. */
  readonly source: Source;
  /** The model's state when the observation came (`'CLOSE'` while an fd's CLOSE is unresolved). */
  readonly from: LifecycleState | undefined;
  /** The state observed, for a state observation. */
  readonly state?: LifecycleState;
  /** The event observed, for an event observation. */
  readonly event?: CloseEvent;
  /** Why the machine forbids it, in words. */
  readonly reason: string;
}

/**
 * What the model knows about one connection. Never mutated: {@link observe} returns a new model
 * (readonly in its type; not frozen at run time, which would double the cost of an observation).
 *
 * While an fd's CLOSE is unresolved, `state` is `'CLOSE'`, the last history entry is that CLOSE,
 * and `settled` is the state before it. A later TIME_WAIT (sock_diag), CLOSED (gone) or event
 * resolves it: the states in between are inserted before the CLOSE entry, since they came before
 * the fd read CLOSE, and the resolving state is appended after it.
 */
export interface CloseModel {
  /** The latest state; `undefined` before the first observation. */
  readonly state: LifecycleState | undefined;
  /**
   * The last state the model is sure of, from which observations are judged: `state`, except
   * while an fd's CLOSE is unresolved (then `undefined` if nothing came before that CLOSE).
   */
  readonly settled: LifecycleState | undefined;
  readonly history: readonly HistoryEntry[];
  readonly anomalies: readonly Anomaly[];
}

/** The result of one {@link observe}. */
export interface Observed {
  readonly model: CloseModel;
  /** Entries this observation added, in path order (none for a repeat or a confirmation). */
  readonly entries: readonly HistoryEntry[];
  /** Set when the machine forbids the observation. */
  readonly anomaly: Anomaly | undefined;
}

const EMPTY: CloseModel = Object.freeze({
  state: undefined,
  settled: undefined,
  history: Object.freeze([]),
  anomalies: Object.freeze([]),
});

/** The model of a connection nothing is known about yet. */
export function createModel(): CloseModel {
  return EMPTY;
}

/** Folds observations into a model, in order. */
export function replay(observations: Iterable<Observation>, model = createModel()): CloseModel {
  for (const o of observations) model = observe(model, o).model;
  return model;
}

/**
 * One change of state in a history: an entry and the state of the entry before it. The first
 * entry of a history is where watching began, the state the connection was in when first
 * observed, not a change: it has none.
 */
export interface StateChange {
  /** The state before `entry` in the history. */
  readonly from: LifecycleState;
  readonly entry: HistoryEntry;
}

/**
 * The changes of state that `entries` (those one {@link observe} added) make in `history` (the
 * model's history after it), in the order of `entries`, each from the state before it in the
 * history. An entry inserted before an fd's CLOSE follows the state before that CLOSE. The first
 * entry of the history has no state before it and makes no change.
 */
export function changesOf(history: readonly HistoryEntry[], entries: readonly HistoryEntry[]): StateChange[] {
  const changes: StateChange[] = [];
  for (const entry of entries) {
    // Added entries sit at or near the end: searched from there.
    const index = history.lastIndexOf(entry);
    if (index > 0) changes.push({ from: history[index - 1]!.state, entry });
  }
  return changes;
}

/**
 * Folds one observation into the model. A state reachable from the settled state is appended,
 * with the states in between inferred; an fd's `'CLOSE'` stays unresolved until sock_diag or an
 * event says TIME_WAIT or CLOSED, unless no TIME_WAIT can follow (then CLOSED is inferred at once); an event moves the model along the shortest path that ends with
 * it. A repeat, a CLOSE read in TIME_WAIT or CLOSED, and an event already on the path change
 * nothing and return the same model. What the machine forbids is recorded as an {@link Anomaly}
 * and, for a state, appended flagged: the model then trusts the kernel and goes on from there.
 */
export function observe(model: CloseModel, observation: Observation): Observed {
  return 'event' in observation
    ? observeEvent(model, observation.event, observation)
    : observeState(model, observation.state, observation);
}

interface When {
  readonly at: number;
  readonly source: Source;
}

function observeState(model: CloseModel, seen: LifecycleState, when: When): Observed {
  const { state, settled } = model;
  const at = when.at;
  if (state === undefined) return appended(model, [entry(seen, when)]);
  if (seen === state) return unchanged(model);
  if (state !== 'CLOSE') {
    if (seen === 'CLOSE') {
      if (FD_CLOSE_MEANS.includes(state)) return unchanged(model); // an fd cannot show either
      if (!mayReadClose(state)) {
        return forbidden(model, when, { state: seen }, 'neither TIME_WAIT nor CLOSED can follow');
      }
      const close = appended(model, [entry('CLOSE', when)]);
      if (completePath(state, 'TIME_WAIT') !== undefined) return close;
      // From here (CLOSE_WAIT, LAST_ACK) no TIME_WAIT can follow: the fd's CLOSE is CLOSED.
      const done = resolved(close.model, completePath(state, 'CLOSED')!, { at, source: 'inferred' });
      // The fd's CLOSE goes before the inferred CLOSED among the entries, as in the history.
      return { model: done.model, entries: beforeClose(done.entries, close.entries), anomaly: undefined };
    }
    const p = completePath(state, seen);
    if (p === undefined) return forbidden(model, when, { state: seen }, 'no legal path');
    return appended(model, pathEntries(p, at, when));
  }
  if (!FD_CLOSE_MEANS.includes(seen)) {
    const reason = "only TIME_WAIT or CLOSED can follow an fd's CLOSE";
    return forbidden(model, when, { state: seen }, reason);
  }
  if (settled === undefined) return appended(model, [entry(seen, when)]);
  const p = completePath(settled, seen);
  if (p === undefined) {
    const reason = `the fd read CLOSE after ${settled}, which cannot reach ${seen}`;
    return forbidden(model, when, { state: seen }, reason);
  }
  return resolved(model, p, when);
}

function observeEvent(model: CloseModel, event: CloseEvent, when: When): Observed {
  const { state, settled, history } = model;
  if (settled === undefined) {
    return forbidden(model, when, { event }, 'no state is known to place it after');
  }
  if (happened(history, event)) return unchanged(model);
  const pending = state === 'CLOSE';
  const p = eventPath(settled, event, pending);
  if (p === undefined) return forbidden(model, when, { event }, 'no legal path ends with it');
  if (!pending) return appended(model, pathEntries(p, when.at, when));
  const to = p.path[p.path.length - 1]!;
  if (FD_CLOSE_MEANS.includes(to)) return resolved(model, p, when);
  // Not yet the end: the whole path came before the fd read CLOSE, which stays unresolved.
  const close = history[history.length - 1]!;
  const before = pathEntries(p, close.at);
  return changed(model, beforeClose(history, before), before, to, 'CLOSE');
}

/**
 * The path an observed `event` takes the model along from `settled`: the shortest made of graceful
 * steps and then a step the event satisfies, which, while an fd's CLOSE is `pending`, must reach a
 * state that CLOSE can follow. Memoized, as `completePath()` is: asked for every event of every
 * watched socket.
 */
function eventPath(settled: LifecycleState, event: CloseEvent, pending: boolean): Path | undefined {
  const known = KNOWN.has(settled) && CLOSE_EVENTS.includes(event);
  const key = `${settled} ${event} ${pending}`;
  const memo = known ? EVENT_PATHS.get(key) : undefined;
  if (memo !== undefined) return memo ?? undefined;
  const fits = (t: Transition) => matches(event, t.event) && (!pending || mayReadClose(t.to));
  const p = pathEndingIn(settled, fits);
  const path = p && Object.freeze({ path: Object.freeze([...p.path]), events: Object.freeze([...p.events]) });
  if (known) EVENT_PATHS.set(key, path ?? null);
  return path;
}

/** {@link eventPath}'s answers, by settled state, event and whether an fd's CLOSE is pending. */
const EVENT_PATHS = new Map<string, Path | null>();

/** True if an fd's CLOSE can follow `state`: TIME_WAIT or CLOSED is, or can be, reached. */
function mayReadClose(state: LifecycleState): boolean {
  let may = MAY_READ_CLOSE.get(state);
  if (may === undefined) {
    may = FD_CLOSE_MEANS.some((m) => m === state || completePath(state, m) !== undefined);
    if (KNOWN.has(state)) MAY_READ_CLOSE.set(state, may);
  }
  return may;
}

/** {@link mayReadClose}'s answers, per state: asked for every fd CLOSE of every watched socket. */
const MAY_READ_CLOSE = new Map<LifecycleState, boolean>();

/** True if an observed event is satisfied by a step taken on `taken` (see {@link Observation}). */
function matches(observed: CloseEvent, taken: CloseEvent): boolean {
  return observed === taken || (taken === 'fin-ack' && ['fin', 'ack-of-fin'].includes(observed));
}

/** True if `event` is already on the path since the last anomaly. */
function happened(history: readonly HistoryEntry[], event: CloseEvent): boolean {
  for (let i = history.length - 1; i >= 0; i--) {
    const h = history[i]!;
    if (h.event !== undefined && matches(event, h.event)) return true;
    if (h.anomaly) return false;
  }
  return false;
}

function entry(state: LifecycleState, when: When, event?: CloseEvent, anomaly = false): HistoryEntry {
  // Literals of fixed shapes, not spreads: this runs for every observation of every watched socket.
  const { at, source } = when;
  if (anomaly) return { state, at, source, anomaly: true as const };
  return event === undefined ? { state, at, source } : { state, at, source, event };
}

/**
 * Entries for the steps of `p` after its first state: inferred at `inferredAt`, except the last,
 * which is the observation `last` when given.
 */
function pathEntries(p: Path, inferredAt: number, last?: When, length = p.path.length): HistoryEntry[] {
  const { path, events } = p;
  // The usual one step: an array of exactly one entry (a growing one reserves 17 slots).
  if (length === 2 && last !== undefined && events.length === 1) return [entry(path[1]!, last, events[0])];
  let inferred: When | undefined;
  const out: HistoryEntry[] = [];
  for (let i = 1; i < length; i++) {
    const when = i === events.length && last ? last : (inferred ??= { at: inferredAt, source: 'inferred' });
    out.push(entry(path[i]!, when, events[i - 1]));
  }
  return out;
}

/** Resolves an unresolved CLOSE by `p`: the steps before its end go before the CLOSE entry. */
function resolved(model: CloseModel, p: Path, when: When): Observed {
  const history = model.history;
  const close = history[history.length - 1]!;
  const to = p.path[p.path.length - 1]!;
  // Every step but the last, inferred at the CLOSE; the last one is this observation.
  const added = pathEntries(p, close.at, undefined, p.path.length - 1);
  const last = entry(to, when, p.events[p.events.length - 1]);
  const all = beforeClose(history, added, last);
  added.push(last);
  return changed(model, all, added, to, to);
}

/** Appends `entries`; the last one's state becomes the model's state. */
function appended(model: CloseModel, entries: readonly HistoryEntry[]): Observed {
  const state = entries[entries.length - 1]!.state;
  const settled = state !== 'CLOSE' ? state : model.state === undefined ? undefined : model.settled;
  return changed(model, joined(model.history, entries), entries, settled, state);
}

/**
 * A new array: `history` with `added` inserted before its last entry (an fd's unresolved CLOSE),
 * and then `last` if given; made at its final size, as {@link joined}.
 */
function beforeClose(history: readonly HistoryEntry[], added: readonly HistoryEntry[], last?: HistoryEntry): HistoryEntry[] {
  const n = history.length - 1;
  const out = new Array<HistoryEntry>(n + added.length + (last === undefined ? 1 : 2));
  for (let i = 0; i < n; i++) out[i] = history[i]!;
  for (let i = 0; i < added.length; i++) out[n + i] = added[i]!;
  out[n + added.length] = history[n]!;
  if (last !== undefined) out[n + added.length + 1] = last;
  return out;
}

/**
 * A new array of `a`'s items and then `b`'s. The model makes its arrays at their final size, with
 * loops: spreads and `concat()` cost several times as much per observation of every watched
 * socket, and an array grown by `push()` reserves room it never uses (a copy per observation).
 */
function joined<T>(a: readonly T[], b: readonly T[]): T[] {
  const out = new Array<T>(a.length + b.length);
  for (let i = 0; i < a.length; i++) out[i] = a[i]!;
  for (let i = 0; i < b.length; i++) out[a.length + i] = b[i]!;
  return out;
}

function changed(
  model: CloseModel,
  history: readonly HistoryEntry[],
  entries: readonly HistoryEntry[],
  settled: LifecycleState | undefined,
  state: LifecycleState,
): Observed {
  const next: CloseModel = { state, settled, history, anomalies: model.anomalies };
  return { model: next, entries, anomaly: undefined };
}

const NO_ENTRIES: readonly HistoryEntry[] = Object.freeze([]);

function unchanged(model: CloseModel): Observed {
  return { model, entries: NO_ENTRIES, anomaly: undefined };
}

/**
 * Records an anomaly. A forbidden state is appended flagged and becomes the state the model goes
 * on from (a forbidden CLOSE goes on unresolved, with nothing settled); a forbidden event changes
 * no state.
 */
function forbidden(
  model: CloseModel,
  when: When,
  what: { readonly state: LifecycleState } | { readonly event: CloseEvent },
  detail: string,
): Observed {
  const from = model.state;
  const seen = 'state' in what ? what.state : `'${what.event}'`;
  const anomaly: Anomaly = {
    at: when.at,
    source: when.source,
    from,
    ...what,
    reason: `${seen} after ${from ?? 'nothing'}: ${detail}`,
  };
  let history = model.history;
  let entries: readonly HistoryEntry[] = [];
  let state = model.state;
  let settled = model.settled;
  if ('state' in what) {
    entries = [entry(what.state, when, undefined, true)];
    history = [...history, ...entries];
    state = what.state;
    settled = state === 'CLOSE' ? undefined : state;
  }
  const next: CloseModel = { state, settled, history, anomalies: [...model.anomalies, anomaly] };
  return { model: next, entries, anomaly };
}
