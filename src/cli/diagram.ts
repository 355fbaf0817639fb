/**
 * The data a close ladder is drawn from, and the layout both renderers share (the text ladder in
 * `ladder.ts`, the SVG in `svg.ts`): pure, no I/O, tested without sockets.
 *
 * A diagram has two ends in the manner of RFC 793 figures 13 and 14: TCP A (drawn on the left,
 * the end that acts first) and TCP B (on the right). Each end brings the history `watch()`
 * recorded; the scenario adds what the application did (actions) and what could not be shown
 * (notes). Segments are optional: loopback gives none, the lab's wire log gives every one.
 * `path` says which of the two the run took.
 */
import { outcomeOf, roleOf, type HistoryEntry } from '../lifecycle/fsm';
import type { SocketAddress, SocketTimer } from '../diag';

/** Which end: `'a'` draws on the left, `'b'` on the right. */
export type Side = 'a' | 'b';

/**
 * One segment on the wire, as the lab's segment log records it: `from` the end that sent it,
 * `flags` in tcpdump's letters (`'F.'`, `'S'`, `'R.'`, `'.'` for a pure ACK) or as names
 * (`'FIN,ACK'`), sequence numbers absolute and relative to each end's ISN, `len` payload bytes,
 * and what the wire did with it (`'pass'`, `'drop'`, `'hold'`, `'release'`, `'delay'`). A held
 * segment is logged twice: `'hold'` when the wire read it, `'release'` when it delivered it.
 */
export interface Segment {
  /** ms, on the same clock as the histories (`performance.now()`). */
  at: number;
  from: Side;
  flags: string;
  seq: number;
  ack: number;
  /** `seq` minus the sender's ISN; `undefined` when the wire never saw that ISN. */
  relSeq: number | undefined;
  /** `ack` minus the receiver's ISN; `undefined` without ACK or when that ISN is unknown. */
  relAck: number | undefined;
  len: number;
  verdict: string;
}

/**
 * How a run reached the kernels: `'lab'`, two network namespaces joined by the lab's userspace
 * wire (segments logged), or `'loopback'`, one namespace's loopback (states only).
 */
export type RunPath = 'lab' | 'loopback';

/** The words the ladder prints after `path: `. */
export const PATH_TEXT: Readonly<Record<RunPath, string>> = {
  lab: 'lab (two network namespaces, userspace wire)',
  loopback: 'loopback',
};

/** Something an application did, drawn in parentheses like RFC 793's "(Close)". */
export interface Action {
  at: number;
  side: Side;
  text: string;
}

/** A socket as sock_diag last showed it (TIME_WAIT, orphans): what no fd can show. */
export interface DiagView {
  state: string;
  timer: SocketTimer;
  inode: number;
  /** ms on the histories' clock when it was read. */
  at: number;
}

/** One end of the connection. */
export interface DiagramEnd {
  /** Who this end is in the connection, e.g. `'client'`, `'server (accepted)'`. */
  label: string;
  local?: SocketAddress;
  remote?: SocketAddress;
  history: readonly HistoryEntry[];
  /** True once the kernel has forgotten the connection (the watcher's `done` resolved). */
  finished: boolean;
  /** The socket in sock_diag when the scenario ended, if it was still there. */
  diag?: DiagView;
}

/** Everything a ladder is drawn from. */
export interface Diagram {
  scenario: string;
  /** One line: what the scenario shows, e.g. `'normal close (RFC 793 figure 13)'`. */
  title: string;
  /** Where it ran: the lab (with segments) or loopback (states only). */
  path: RunPath;
  /** The time 0 of the drawing, on the histories' clock (ms). */
  t0: number;
  a: DiagramEnd;
  b: DiagramEnd;
  actions: readonly Action[];
  /** The segments on the wire, when known (the lab); `undefined` draws states only. */
  segments?: readonly Segment[];
  /** What the drawing could not show and why, and what the run showed beyond the states. */
  notes: readonly string[];
}

/** A cell of a row: a state an end was in, or something an application did. */
export type Cell = { kind: 'state'; entry: HistoryEntry } | { kind: 'action'; text: string };

/** One line of the ladder, top to bottom: cells for A and B, or a segment between them. */
export interface Row {
  at: number;
  a?: Cell;
  b?: Cell;
  segment?: Segment;
}

/**
 * The rows of the ladder in time order. Things that happened at the same instant share a row when
 * they are on different sides (both ends seen in one poll); a segment has a row of its own. On a
 * tie, actions come before states and segments before the states they caused. An inferred state
 * is drawn at the earliest time it can have begun (see {@link rowTime} for the time it shows).
 */
export function layout(diagram: Diagram): Row[] {
  type Item = { at: number; order: number; seq: number; side?: Side; cell?: Cell; segment?: Segment };
  const items: Item[] = [];
  let seq = 0;
  for (const action of diagram.actions) items.push({ at: action.at, order: 0, seq: seq++, side: action.side, cell: { kind: 'action', text: action.text } });
  for (const side of ['a', 'b'] as const) {
    let previous = -Infinity;
    for (const entry of diagram[side].history) {
      // An inferred state began after the entry before it and at or before its own `at` (the
      // observation that implied it): draw it at the earliest point, after what this side did
      // in between (its close call), so the ladder reads in causal order.
      const at = entry.source === 'inferred' ? earliest(diagram.actions, side, previous, entry.at) : entry.at;
      items.push({ at, order: 2, seq: seq++, side, cell: { kind: 'state', entry } });
      previous = at;
    }
  }
  for (const segment of diagram.segments ?? []) items.push({ at: segment.at, order: 1, seq: seq++, segment });
  for (const side of ['a', 'b'] as const) {
    const { diag, finished } = diagram[side];
    if (diag && !finished) items.push({ at: diag.at, order: 3, seq: seq++, side, cell: { kind: 'action', text: timerText(diag) } });
  }
  items.sort((x, y) => x.at - y.at || x.order - y.order || x.seq - y.seq);

  const rows: Row[] = [];
  for (const item of items) {
    const last = rows[rows.length - 1];
    if (item.segment) {
      rows.push({ at: item.at, segment: item.segment });
      continue;
    }
    const side = item.side!;
    const joinable =
      last !== undefined &&
      last.at === item.at &&
      last.segment === undefined &&
      last[side] === undefined &&
      (last.a ?? last.b)?.kind === item.cell!.kind;
    if (joinable) last[side] = item.cell;
    else rows.push({ at: item.at, [side]: item.cell });
  }
  return rows;
}

/** The latest of `after` and the times of `side`'s actions in (`after`, `upTo`]. */
function earliest(actions: readonly Action[], side: Side, after: number, upTo: number): number {
  let at = after;
  for (const action of actions) if (action.side === side && action.at > at && action.at <= upTo) at = action.at;
  return at === -Infinity ? upTo : at;
}

/**
 * The time a row shows, in ms from the start: `'≤12.345'` when every state in it was inferred
 * (it began at or before then), else the time it was seen.
 */
export function rowTime(row: Row, t0: number): string {
  const states = [row.a, row.b].filter((c): c is Extract<Cell, { kind: 'state' }> => c?.kind === 'state');
  if (states.length > 0 && states.every((c) => c.entry.source === 'inferred')) {
    return `≤${(Math.max(...states.map((c) => c.entry.at)) - t0).toFixed(3)}`;
  }
  return (row.at - t0).toFixed(3);
}

const TCPDUMP_FLAGS: Record<string, string> = { S: 'SYN', F: 'FIN', R: 'RST', P: 'PSH', U: 'URG', E: 'ECE', W: 'CWR', '.': 'ACK' };
const CTL_ORDER = ['SYN', 'FIN', 'RST', 'PSH', 'URG', 'ECE', 'CWR', 'ACK'];

/** The control bits of a segment as RFC 793 writes them: `'F.'` or `'fin ack'` → `'FIN,ACK'`. */
export function ctlOf(flags: string): string {
  const names = /[a-z]{3}/i.test(flags)
    ? flags.toUpperCase().split(/[^A-Z]+/).filter(Boolean)
    : [...flags].map((c) => TCPDUMP_FLAGS[c.toUpperCase()] ?? c);
  const known = CTL_ORDER.filter((n) => names.includes(n));
  const other = names.filter((n) => !CTL_ORDER.includes(n));
  return [...known, ...other].join(',');
}

/**
 * A segment's label as in RFC 793's figures, with relative numbers: `<SEQ=1><ACK=1><CTL=FIN,ACK>`;
 * no `<ACK=…>` on a segment without ACK (a SYN), absolute numbers where the ISN is unknown.
 */
export function segmentLabel(segment: Segment): string {
  const ctl = ctlOf(segment.flags);
  const seq = segment.relSeq ?? segment.seq;
  const hasAck = ctl.split(',').includes('ACK');
  const ack = hasAck ? `<ACK=${segment.relAck ?? segment.ack}>` : '';
  const data = segment.len > 0 ? `<DATA=${segment.len}>` : '';
  return `<SEQ=${seq}>${ack}<CTL=${ctl}>${data}`;
}

/** True if the wire did not deliver the segment (dropped); held segments are delivered later. */
export function isLost(segment: Segment): boolean {
  return /^(drop|dropped|lost)$/i.test(segment.verdict);
}

/** Where a segment is drawn: sent and delivered, held in the network, delivered after a hold, or lost. */
export function segmentLeg(segment: Segment): 'whole' | 'held' | 'released' | 'lost' {
  if (isLost(segment)) return 'lost';
  if (/^(hold|held)$/i.test(segment.verdict)) return 'held';
  if (/^release/i.test(segment.verdict)) return 'released';
  return 'whole';
}

/** How a history entry became known, as the ladder prints it. */
export function sourceLabel(entry: HistoryEntry): string {
  switch (entry.source) {
    case 'kernel':
      return 'fd';
    case 'diag':
      return 'sock_diag';
    case 'event':
      return 'event';
    case 'inferred':
      return 'inferred';
  }
}

/** The legend for the source labels that occur in `diagram`. */
export function legend(diagram: Diagram): string[] {
  const used = new Set([...diagram.a.history, ...diagram.b.history].map((h) => h.source));
  const anomaly = [...diagram.a.history, ...diagram.b.history].some((h) => h.anomaly);
  const lines: string[] = [];
  if (used.has('kernel')) lines.push("fd: polled on the socket's fd (TCP_INFO); an fd reads CLOSE once the connection has left it");
  if (used.has('diag')) lines.push('sock_diag: seen in the kernel\'s socket table after the fd closed (TIME_WAIT, orphans, gone)');
  if (used.has('event')) lines.push("event: implied by a Node event or our own call ('connect', ECONNRESET, reset())");
  if (used.has('inferred')) lines.push('inferred: too brief to see; filled in by the RFC 793 machine from the states around it (≤t: it began at or before t)');
  if (anomaly) lines.push('!: a step the RFC machine forbids, kept as the kernel showed it');
  if (diagram.segments && diagram.segments.length > 0) {
    lines.push("segments: the lab wire's log, timed when the wire read each one; SEQ/ACK relative to each end's initial sequence number");
    const legs = new Set(diagram.segments.map(segmentLeg));
    if (legs.has('held') || legs.has('released')) lines.push('[hold] ...: held on the wire (in the network); [release] ...: delivered later, when the wire let it go');
    if (legs.has('lost')) lines.push('[drop] X: lost on the wire, never delivered');
  }
  return lines;
}

/** What an end's close came to: outcome and role from the history (so far, if not finished). */
export function summaryOf(end: DiagramEnd): { outcome: string | undefined; role: string | undefined } {
  return { outcome: outcomeOf(end.history), role: roleOf(end.history.map((h) => h.state)) };
}

/** What a sock_diag view's timer says, as a ladder action: `'2MSL timer: 59.9 s left'`. */
export function timerText(diag: DiagView): string {
  if (diag.timer.kind === 'off') return `${diag.state} in sock_diag, no timer`;
  const name = diag.state === 'TIME_WAIT' ? '2MSL timer' : `${diag.state} ${diag.timer.kind} timer`;
  return `${name}: ${seconds(diag.timer.expiresMs)} left (sock_diag)`;
}

/** `ms` as seconds with one decimal: `59.9 s`. */
export function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

/** One line about where an end stands when the scenario ended. */
export function endLine(end: DiagramEnd): string {
  const { outcome, role } = summaryOf(end);
  const how = [outcome ?? 'not closed', role ? `${role} close` : undefined].filter(Boolean).join(', ');
  const last = end.history[end.history.length - 1]?.state;
  let where: string;
  if (end.finished) where = 'the kernel has forgotten the connection';
  else if (end.diag) {
    const timer = end.diag.timer.kind === 'off' ? 'no timer' : `${end.diag.timer.kind} timer, ${seconds(end.diag.timer.expiresMs)} left`;
    const holder = end.diag.inode === 0 ? 'no fd (only sock_diag shows it)' : `fd open (inode ${end.diag.inode})`;
    where = `still ${end.diag.state} in sock_diag: ${timer}; ${holder}`;
  } else where = `still ${last ?? 'unknown'} when the scenario ended`;
  return `${how}; ${where}`;
}

/** The address of an end as `127.0.0.1:40697`, or `''`. */
export function addressOf(address: SocketAddress | undefined): string {
  if (!address) return '';
  return address.address.includes(':') ? `[${address.address}]:${address.port}` : `${address.address}:${address.port}`;
}

/** The note every drawing without segments carries. */
export const NO_SEGMENTS_NOTE = 'segments: not shown — needs the lab (root or a user namespace); states only';

/** The line that says where the run took place: `'path: lab (two network namespaces, userspace wire)'`. */
export function pathLine(diagram: Diagram): string {
  return `path: ${PATH_TEXT[diagram.path]}`;
}

/** ms relative to `t0`, to the µs. */
function rel(at: number, t0: number): number {
  return Math.round((at - t0) * 1000) / 1000;
}

/**
 * The diagram as plain data for `--json`: where it ran (`path`), times in ms relative to the
 * start, both histories, outcome and role per end, the segments (`null` without the lab) and
 * every note, including what could not be shown.
 */
export function diagramJson(diagram: Diagram): unknown {
  const { t0 } = diagram;
  const end = (name: string, e: DiagramEnd) => ({
    name,
    label: e.label,
    local: e.local ?? null,
    remote: e.remote ?? null,
    outcome: summaryOf(e).outcome ?? null,
    role: summaryOf(e).role ?? null,
    finished: e.finished,
    history: e.history.map((h) => ({ ...h, at: rel(h.at, t0) })),
    sockDiag: e.diag ? { state: e.diag.state, timer: e.diag.timer, inode: e.diag.inode, at: rel(e.diag.at, t0) } : null,
  });
  return {
    scenario: diagram.scenario,
    title: diagram.title,
    path: diagram.path,
    ends: { a: end('TCP A', diagram.a), b: end('TCP B', diagram.b) },
    actions: diagram.actions.map((a) => ({ ...a, at: rel(a.at, t0) })),
    segments: diagram.segments ? diagram.segments.map((s) => ({ ...s, relSeq: s.relSeq ?? null, relAck: s.relAck ?? null, at: rel(s.at, t0) })) : null,
    shown: { states: true, segments: diagram.segments !== undefined },
    notes: diagram.segments ? [...diagram.notes] : [...diagram.notes, NO_SEGMENTS_NOTE],
  };
}
