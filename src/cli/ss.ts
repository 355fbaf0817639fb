/**
 * `finwait ss`: this host's TCP sockets by close state, through sock_diag (`sockets()`), with the
 * owning process found through `/proc`, and flags on the ones that point at a bug: CLOSE_WAIT
 * (an application that never closed), FIN_WAIT2 with no timer (a half-close waiting on a peer
 * that never closes) and TIME_WAIT piling up towards one remote endpoint.
 *
 * `analyse()`, `renderSs()` and `ssJson()` are pure; `collect()` reads the kernel and /proc.
 * Everything here is linear in the number of sockets: a busy host has 100,000s of them
 * (`tcp_max_tw_buckets` is 131,072 by default).
 */
import { sockets, type SocketEntry, type SocketFilter } from '../diag';
import { TCP_STATES, type TcpState } from '../states';
import { addressOf } from './diagram';
import { jsonText, visible } from './escape';
import { COMMAND_MAX_BYTES, socketOwners, TRUNCATED_MARK, type Owner, type Owners } from '../processes';
import { plain, type Style } from './style';

/** TIME_WAIT sockets to one remote endpoint above which `finwait ss` flags a pile (default). */
export const DEFAULT_TIME_WAIT_PILE = 1000;

/** Why a socket or a group of sockets is flagged. */
export type FlagKind = 'close-wait' | 'fin-wait2-no-timer' | 'time-wait-pile';

/**
 * One flag: a CLOSE_WAIT or FIN_WAIT2 socket, or all of them held by one process (or by none),
 * or a TIME_WAIT pile towards one remote endpoint.
 */
export interface Flag {
  kind: FlagKind;
  /** What is wrong; the command lines in it come from other processes (escape before printing). */
  message: string;
  /** The flagged sockets' indexes in `SsReport.sockets`. */
  sockets: number[];
}

/** One socket with its owners and the flags on it. */
export interface SsSocket extends SocketEntry {
  /** Processes holding it; empty when none (inode 0) or none could be read. */
  owners: readonly Owner[];
  flags: readonly FlagKind[];
}

export interface SsReport {
  /** The states and port asked for. */
  filter: SocketFilter;
  counts: Partial<Record<TcpState, number>>;
  /** In the table's order (close states first); made on first read (rendering does not need them). */
  sockets: SsSocket[];
  /** Each process's CLOSE_WAIT and FIN_WAIT2 sockets, then the TIME_WAIT piles; the biggest first. */
  flags: Flag[];
  /** What the owner lookup could and could not read. */
  processes: { scanned: number; unreadable: number; error?: string };
  timeWaitPile: number;
}

/** How to render: `summary` leaves the rows out; `height` fits the text into that many lines (`--watch`). */
export interface RenderOptions {
  summary?: boolean;
  height?: number;
}

const ORDER: readonly TcpState[] = [
  'CLOSE_WAIT',
  'FIN_WAIT2',
  'FIN_WAIT1',
  'LAST_ACK',
  'CLOSING',
  'TIME_WAIT',
  'ESTABLISHED',
  'SYN_SENT',
  'SYN_RECV',
  'NEW_SYN_RECV',
  'LISTEN',
  'CLOSE',
  'BOUND_INACTIVE',
];
const RANK = new Map(ORDER.map((state, i) => [state, i]));

const NO_OWNERS: readonly Owner[] = Object.freeze([]);
const NO_FLAGS: readonly FlagKind[] = Object.freeze([]);
/** A socket has at most one kind of flag (the kinds are by state), so each list is shared. */
const ONE_FLAG: Readonly<Record<FlagKind, readonly FlagKind[]>> = {
  'close-wait': Object.freeze(['close-wait']),
  'fin-wait2-no-timer': Object.freeze(['fin-wait2-no-timer']),
  'time-wait-pile': Object.freeze(['time-wait-pile']),
};

/** `pid 42 node (node server.js)`: the command name as `ss -p` shows it, then the bounded command line. */
function ownerText(owner: Owner): string {
  const comm = owner.comm !== undefined && owner.comm !== owner.command ? `${owner.comm} ` : '';
  return `pid ${owner.pid} ${comm}(${owner.command})`;
}

function ownersText(owners: readonly Owner[]): string {
  if (owners.length === 0) return '';
  return `${ownerText(owners[0]!)}${owners.length > 1 ? ` and ${owners.length - 1} more` : ''}`;
}

/**
 * Reorders `order` stably by `digit(entry index)`, a whole number below `range`: one pass of a
 * counting sort (LSD radix sort by one key).
 */
function countingPass(order: Uint32Array, digit: (i: number) => number, range: number): Uint32Array {
  const n = order.length;
  const starts = new Uint32Array(range + 1);
  for (let k = 0; k < n; k++) starts[digit(order[k]!) + 1]!++;
  for (let d = 0; d < range; d++) starts[d + 1]! += starts[d]!;
  const sorted = new Uint32Array(n);
  for (let k = 0; k < n; k++) {
    const i = order[k]!;
    sorted[starts[digit(i)]!++] = i;
  }
  return sorted;
}

/** Whether every `values[i]` is the same: that key of the sort can be skipped. */
function allSame(values: ArrayLike<number>): boolean {
  for (let i = 1; i < values.length; i++) if (values[i] !== values[0]) return false;
  return true;
}

/** Numbers for the distinct strings given to `id()`, then each one's rank in code-unit order. */
class Names {
  #ids = new Map<string, number>();
  #names: string[] = [];

  id(name: string): number {
    let id = this.#ids.get(name);
    if (id === undefined) {
      id = this.#names.length;
      this.#ids.set(name, id);
      this.#names.push(name);
    }
    return id;
  }

  /** `ranks[id]`: where the name numbered `id` comes in sorted order. */
  ranks(): Uint32Array {
    const byName = Array.from(this.#names.keys()).sort((a, b) => (this.#names[a]! < this.#names[b]! ? -1 : 1));
    const ranks = new Uint32Array(byName.length);
    byName.forEach((id, rank) => (ranks[id] = rank));
    return ranks;
  }

  get size(): number {
    return this.#names.length;
  }
}

/**
 * The sorted table behind a report, which `renderSs()` reads without an object per socket:
 * `entries[order[p]]` is the socket at position `p`, `flagged[p]` its flag's number in `KINDS`
 * (0: none).
 */
interface Table {
  entries: readonly SocketEntry[];
  order: Uint32Array;
  flagged: Uint8Array;
  ownersOf(e: SocketEntry): readonly Owner[];
  /** Some socket with an fd (inode) has no owner this /proc shows. */
  unseen: boolean;
}

const KINDS: readonly (FlagKind | undefined)[] = [undefined, 'close-wait', 'fin-wait2-no-timer', 'time-wait-pile'];
const KIND_NUMBER: Readonly<Record<FlagKind, number>> = { 'close-wait': 1, 'fin-wait2-no-timer': 2, 'time-wait-pile': 3 };
const TABLES = new WeakMap<SsReport, Table>();

/** The table of `report`: the one `analyse()` made, or one read from `report.sockets`. */
function tableOf(report: SsReport): Table {
  const table = TABLES.get(report);
  if (table) return table;
  const list = report.sockets;
  const order = Uint32Array.from(list, (_, i) => i);
  const flagged = Uint8Array.from(list, (s) => (s.flags.length > 0 ? KIND_NUMBER[s.flags[0]!] : 0));
  return { entries: list, order, flagged, ownersOf: (e) => (e as SsSocket).owners, unseen: list.some((s) => s.inode !== 0 && s.owners.length === 0) };
}

/** Who holds a flagged socket, as the flags group them: one process, an unseen one, or none. */
function holderKey(e: SocketEntry, owners: readonly Owner[]): string {
  if (owners.length > 0) return `pid ${owners[0]!.pid}`;
  return e.inode !== 0 ? 'unseen' : 'none';
}

function holderText(e: SocketEntry, owners: readonly Owner[], n: number): string {
  if (owners.length > 0) return `held by ${ownersText(owners)}`;
  if (e.inode === 0) return 'no process';
  return n === 1 ? `held by a process this user cannot see (inode ${e.inode})` : 'held by processes this user cannot see';
}

const WHY: Readonly<Record<'close-wait' | 'fin-wait2-no-timer', [string, string]>> = {
  'close-wait': ['CLOSE_WAIT', 'the peer closed and the application never did'],
  'fin-wait2-no-timer': ['FIN_WAIT2 with no timer', 'our half-close waits on a peer that never closes (an open fd has no FIN_WAIT2 timeout)'],
};

/**
 * `entry` with its owners and flags, field by field: `{ ...entry }` gives each copy a hidden
 * class of its own in V8, ~20x the time and ~30x the memory on 130,000 sockets.
 */
function ssSocket(e: SocketEntry, owners: readonly Owner[], flags: readonly FlagKind[]): SsSocket {
  return {
    family: e.family,
    local: e.local,
    remote: e.remote,
    state: e.state,
    timer: e.timer,
    recvQ: e.recvQ,
    sendQ: e.sendQ,
    inode: e.inode,
    uid: e.uid,
    cookie: e.cookie,
    owners,
    flags,
  };
}

/** Sockets flagged together: one process's CLOSE_WAIT or FIN_WAIT2 sockets, or one TIME_WAIT pile. */
interface Group {
  kind: FlagKind;
  count: number;
  /** Positions in the sorted report, ascending; filled once the group is known to be flagged. */
  indexes: number[];
}

/**
 * Sorts (close states first, then by local port, remote port, local and remote address), counts
 * and flags `entries`. Pure, and linear: one pass over the entries reads what the sort and the
 * flags need into typed arrays, and the sort is a radix sort of those (a comparator sort of
 * 130,000 objects scattered in memory took ~140 ms). The report's `sockets` are made when first
 * read: `renderSs()` reads the entries as they are.
 */
export function analyse(
  entries: readonly SocketEntry[],
  owners: Owners,
  options: { filter?: SocketFilter; timeWaitPile?: number } = {},
): SsReport {
  const timeWaitPile = options.timeWaitPile ?? DEFAULT_TIME_WAIT_PILE;
  const n = entries.length;
  const ownersOf = (e: SocketEntry): readonly Owner[] => (e.inode === 0 ? NO_OWNERS : (owners.byInode.get(e.inode) ?? NO_OWNERS));

  const rank = new Uint8Array(n);
  const localPort = new Uint16Array(n);
  const remotePort = new Uint16Array(n);
  const localAddress = new Uint32Array(n);
  const remoteAddress = new Uint32Array(n);
  const groupOf = new Int32Array(n).fill(-1);
  const perRank = new Array<number>(ORDER.length + 1).fill(0);
  const names = new Names();
  const groups: Group[] = [];
  const piles = new Map<number, number>(); // remote address id * 65536 + port -> group
  const held = new Map<string, number>(); // kind and holder -> group
  let unseen = false;
  for (let i = 0; i < n; i++) {
    const e = entries[i]!;
    const r = RANK.get(e.state) ?? ORDER.length;
    rank[i] = r;
    perRank[r]!++;
    localPort[i] = e.local.port;
    remotePort[i] = e.remote.port;
    localAddress[i] = names.id(e.local.address);
    remoteAddress[i] = names.id(e.remote.address);
    if (e.inode !== 0 && !unseen) unseen = ownersOf(e).length === 0;
    let group: number | undefined;
    if (e.state === 'TIME_WAIT') {
      const key = remoteAddress[i]! * 65536 + e.remote.port;
      group = piles.get(key);
      if (group === undefined) piles.set(key, (group = groups.push({ kind: 'time-wait-pile', count: 0, indexes: [] }) - 1));
    } else if (e.state === 'CLOSE_WAIT' || (e.state === 'FIN_WAIT2' && e.timer.kind === 'off')) {
      const kind = e.state === 'CLOSE_WAIT' ? 'close-wait' : 'fin-wait2-no-timer';
      const key = `${kind} ${holderKey(e, ownersOf(e))}`;
      group = held.get(key);
      if (group === undefined) held.set(key, (group = groups.push({ kind, count: 0, indexes: [] }) - 1));
    }
    if (group !== undefined) {
      groupOf[i] = group;
      groups[group]!.count++;
    }
  }

  // Least significant key first; each pass keeps the order of the ones before.
  let order: Uint32Array = new Uint32Array(n);
  for (let i = 0; i < n; i++) order[i] = i;
  const addressRank = names.ranks();
  if (!allSame(remoteAddress)) order = countingPass(order, (i) => addressRank[remoteAddress[i]!]!, names.size);
  if (!allSame(localAddress)) order = countingPass(order, (i) => addressRank[localAddress[i]!]!, names.size);
  if (!allSame(remotePort)) order = countingPass(order, (i) => remotePort[i]!, 65536);
  if (!allSame(localPort)) order = countingPass(order, (i) => localPort[i]!, 65536);
  if (!allSame(rank)) order = countingPass(order, (i) => rank[i]!, ORDER.length + 1);

  const counts: Partial<Record<TcpState, number>> = {};
  for (const state of TCP_STATES) {
    const count = perRank[RANK.get(state)!]!;
    if (count > 0) counts[state] = count;
  }

  // Flagged: every CLOSE_WAIT and FIN_WAIT2 group, and the TIME_WAIT piles over the limit.
  const isFlagged = groups.map((g) => g.kind !== 'time-wait-pile' || g.count > timeWaitPile);
  for (let g = 0; g < groups.length; g++) if (isFlagged[g]) groups[g]!.indexes = new Array<number>(groups[g]!.count).fill(0);
  const filled = new Uint32Array(groups.length);
  const flagged = new Uint8Array(n);
  for (let p = 0; p < n; p++) {
    const g = groupOf[order[p]!]!;
    if (g < 0 || !isFlagged[g]) continue;
    groups[g]!.indexes[filled[g]!++] = p;
    flagged[p] = KIND_NUMBER[groups[g]!.kind];
  }
  const flags: Flag[] = [];
  // The biggest first (a terminal may show only the first few), then in the table's order.
  const biggest = (kinds: (kind: FlagKind) => boolean): Group[] =>
    groups.filter((g, i) => isFlagged[i] && kinds(g.kind)).sort((a, b) => b.count - a.count || a.indexes[0]! - b.indexes[0]!);
  for (const { kind, indexes } of biggest((kind) => kind !== 'time-wait-pile')) {
    const first = entries[order[indexes[0]!]!]!;
    const tuple = `${addressOf(first.local)} <- ${addressOf(first.remote)}`;
    const [what, why] = WHY[kind as keyof typeof WHY];
    const where = indexes.length === 1 ? `${what} ${tuple}` : `${what} on ${indexes.length} sockets (${tuple} and ${indexes.length - 1} more)`;
    flags.push({ kind, message: `${where}: ${why}; ${holderText(first, ownersOf(first), indexes.length)}`, sockets: indexes });
  }
  for (const { kind, indexes } of biggest((kind) => kind === 'time-wait-pile')) {
    const remote = addressOf(entries[order[indexes[0]!]!]!.remote);
    const message = `TIME_WAIT pile: ${indexes.length} sockets to ${remote} (over ${timeWaitPile}): each holds a local port for 60 s, so new connections to ${remote} can run out of ports`;
    flags.push({ kind, message, sockets: indexes });
  }

  const { scanned, unreadable, error } = owners;
  let list: SsSocket[] | undefined;
  const report: SsReport = {
    filter: options.filter ?? {},
    counts,
    get sockets(): SsSocket[] {
      list ??= Array.from(order, (i, p) => {
        const e = entries[i]!;
        const kind = KINDS[flagged[p]!];
        return ssSocket(e, ownersOf(e), kind ? ONE_FLAG[kind] : NO_FLAGS);
      });
      return list;
    },
    flags,
    processes: { scanned, unreadable, ...(error ? { error } : {}) },
    timeWaitPile,
  };
  TABLES.set(report, { entries, order, flagged, ownersOf, unseen });
  return report;
}

/** Reads the kernel's sockets (sock_diag) and their owners (/proc) and analyses them. */
export function collect(filter: SocketFilter, timeWaitPile = DEFAULT_TIME_WAIT_PILE): SsReport {
  const entries = sockets(filter);
  const wanted = new Set<number>();
  for (const e of entries) if (e.inode !== 0) wanted.add(e.inode);
  const owners: Owners = wanted.size > 0 ? socketOwners(wanted) : { byInode: new Map(), scanned: 0, unreadable: 0 };
  return analyse(entries, owners, { filter, timeWaitPile });
}

/** The lines after the rows: what /proc showed. */
function processNotes(report: SsReport, table: Table): string[] {
  const notes: string[] = [];
  const p = report.processes;
  if (p.error) notes.push(`processes: not shown: ${p.error}`);
  else if (p.unreadable > 0) {
    notes.push(`processes: ${p.unreadable} processes' fds are not readable by this user (other users' /proc/<pid>/fd needs root): their sockets show '?'`);
  } else notes.push('processes: from /proc/*/fd; inode 0 = no process (TIME_WAIT or an orphan the application closed)');
  if (!p.error && table.unseen) {
    notes.push("'?': no process visible in this /proc holds it (another PID namespace, or it exited during the scan)");
  }
  return notes;
}

/** `n` things, `1 flag` / `2 flags`. */
const counted = (n: number, what: string): string => `${n} ${what}${n === 1 ? '' : 's'}`;

/**
 * The report as text: counts per state, the flags, a table of sockets (not with `summary`), and
 * what /proc showed. Lines longer than `columns` are cut; with `height`, the flags and rows that
 * do not fit are counted instead of drawn, so that the counts and flags stay on the screen.
 * Text from other processes is escaped (`visible()`).
 */
export function renderSs(report: SsReport, style: Style = plain, columns = Infinity, options: RenderOptions = {}): string {
  return [...ssPieces(report, style, columns, options)].join('\n');
}

/**
 * `renderSs()` in pieces of one or more lines (no newline at the end of a piece), made as they
 * are asked for: 130,000 rows never make one string of all of them, and a writer can wait for
 * its reader between pieces.
 */
export function* ssPieces(report: SsReport, style: Style = plain, columns = Infinity, options: RenderOptions = {}): Generator<string, void, undefined> {
  const clip =
    columns === Infinity ? (line: string): string => line : (line: string): string => (line.length > columns ? `${line.slice(0, Math.max(0, columns - 1))}…` : line);
  const table = tableOf(report);
  const total = table.order.length;
  const head: string[] = [];
  const filters = [
    report.filter.states ? `state ${report.filter.states.join(',')}` : '',
    report.filter.port !== undefined ? `port ${report.filter.port}` : '',
  ].filter(Boolean);
  head.push(style.title(clip(`TCP sockets in this network namespace${filters.length ? ` (${filters.join(', ')})` : ''}: ${total}`)));
  const counts = Object.entries(report.counts).map(([state, n]) => `${state} ${n}`);
  head.push(clip(counts.length > 0 ? `  ${counts.join('   ')}` : '  none'));
  const notes = processNotes(report, table);
  const shown = total > 0 && !options.summary;
  // Lines left for the flags and the rows (each section starts with a blank line and a heading).
  let room = options.height === undefined ? Infinity : Math.max(0, options.height - head.length - 1 - notes.length);

  if (report.flags.length > 0) {
    const wanted = 2 + report.flags.length;
    // The flags first: the rows get what is left, at least a heading, two rows and a count.
    const lines = Math.min(wanted, shown ? Math.max(3, room - 5) : room);
    const drawn = lines >= wanted ? report.flags.length : Math.max(0, lines - 3);
    head.push('');
    head.push(style.warn(clip(`flags (${report.flags.length}):`)));
    for (let i = 0; i < drawn; i++) head.push(clip(`  ! ${visible(report.flags[i]!.message)}`));
    if (drawn < report.flags.length) head.push(style.dim(clip(`  … and ${counted(report.flags.length - drawn, 'more flag')} (a taller terminal shows them)`)));
    room -= 3 + drawn - (drawn === report.flags.length ? 1 : 0);
  }

  if (shown) {
    const fit = room >= total + 2 ? total : Math.max(0, room - 3);
    head.push('');
    yield head.join('\n');
    yield* rowPieces(table, fit, style, clip);
    if (fit < total) yield style.dim(clip(`… and ${counted(total - fit, 'more socket')} (--state or --port narrows the list, --summary leaves it out)`));
  } else yield head.join('\n');

  yield ['', ...notes.map((note) => style.dim(clip(note)))].join('\n');
}

const HEAD = [' ', 'State', 'Local', 'Remote', 'Timer', 'Recv-Q', 'Send-Q', 'Process'] as const;

/** Decimal digits of a non-negative integer, without making the string. */
function digits(n: number): number {
  let d = 1;
  for (let x = n; x >= 10; x = Math.floor(x / 10)) d++;
  return d;
}

/** `addressOf(a).length`, without making the string. */
function addressLength(a: SocketEntry['local']): number {
  return a.address.length + 1 + digits(a.port) + (a.address.includes(':') ? 2 : 0);
}

/** A timer in tenths of a second, as `timerText()` writes it: `timewait 59.3 s`. */
function tenthsOf(s: SocketEntry): number {
  return Math.round(s.timer.expiresMs / 100);
}

function timerLength(s: SocketEntry): number {
  if (s.timer.kind === 'off') return 1;
  return s.timer.kind.length + 1 + digits(Math.floor(tenthsOf(s) / 10)) + 4;
}

function timerText(s: SocketEntry): string {
  if (s.timer.kind === 'off') return '-';
  const tenths = tenthsOf(s);
  return `${s.timer.kind} ${Math.floor(tenths / 10)}.${tenths % 10} s`;
}

/** Runs of 0 to 63 spaces, made once. */
const SPACES = Array.from({ length: 64 }, (_, n) => ' '.repeat(n));

/** `n` spaces. */
function pad(n: number): string {
  return n <= 0 ? '' : (SPACES[n] ?? ' '.repeat(n));
}

/** A queue's bytes as text; nearly always 0. */
const queueText = (bytes: number): string => (bytes === 0 ? '0' : String(bytes));

/** Lines handed to `write` at a time: each piece is one string of about 100 KB. */
const LINES_PER_PIECE = 1024;

/** The widths of the columns before Process, over the first `count` rows. */
type Widths = [state: number, local: number, remote: number, timer: number, recv: number, send: number];

/** The column widths, measured without making the cells (each row's strings are made once, for its line). */
function columnWidths(table: Table, count: number): Widths {
  const { entries, order } = table;
  let [wState, wLocal, wRemote, wTimer, wRecv, wSend] = HEAD.slice(1, 7).map((h) => h.length) as Widths;
  for (let p = 0; p < count; p++) {
    const e = entries[order[p]!]!;
    wState = Math.max(wState, e.state.length);
    wLocal = Math.max(wLocal, addressLength(e.local));
    wRemote = Math.max(wRemote, addressLength(e.remote));
    wTimer = Math.max(wTimer, timerLength(e));
    wRecv = Math.max(wRecv, digits(e.recvQ));
    wSend = Math.max(wSend, digits(e.sendQ));
  }
  return [wState, wLocal, wRemote, wTimer, wRecv, wSend];
}

/**
 * Rows `from` to `to` (positions) as lines joined by newlines, built by concatenation: ~2x
 * faster than an array of rows joined. A plain function, not the generator's own loop: V8
 * optimizes a loop while it runs (on-stack replacement) only outside generators.
 */
function rowsText(table: Table, from: number, to: number, widths: Widths, style: Style, clip: (line: string) => string, processText: (e: SocketEntry) => string): string {
  const { entries, order, flagged } = table;
  const [wState, wLocal, wRemote, wTimer, wRecv, wSend] = widths;
  let text = '';
  for (let p = from; p < to; p++) {
    const e = entries[order[p]!]!;
    const mark = flagged[p] !== 0;
    const local = addressOf(e.local);
    const remote = addressOf(e.remote);
    const timer = timerText(e);
    const recv = queueText(e.recvQ);
    const send = queueText(e.sendQ);
    const line = clip(
      (mark ? '!  ' : '   ') + e.state + pad(wState - e.state.length) + '  ' + local + pad(wLocal - local.length) + '  ' + remote + pad(wRemote - remote.length) +
        '  ' + timer + pad(wTimer - timer.length) + '  ' + pad(wRecv - recv.length) + recv + '  ' + pad(wSend - send.length) + send + '  ' + processText(e),
    );
    text += (p === from ? '' : '\n') + (mark ? style.warn(line) : line);
  }
  return text;
}

/**
 * The table's heading, then its first `count` rows `LINES_PER_PIECE` at a time: each piece is
 * let go once written, instead of every row held to the end (~100 MB of strings on 130,000).
 */
function* rowPieces(table: Table, count: number, style: Style, clip: (line: string) => string): Generator<string, void, undefined> {
  const labels = new Map<readonly Owner[], string>();
  const processText = (e: SocketEntry): string => {
    const owners = table.ownersOf(e);
    if (owners.length > 0) {
      let label = labels.get(owners);
      if (label === undefined) labels.set(owners, (label = visible(ownersText(owners))));
      return label;
    }
    if (e.inode === 0) return e.state === 'TIME_WAIT' ? '- (TIME_WAIT: no process)' : '- (orphan: no process)';
    return `? (inode ${e.inode})`;
  };
  const widths = columnWidths(table, count);
  const [wState, wLocal, wRemote, wTimer, wRecv, wSend] = widths;
  const head = `${HEAD[0]}  ${HEAD[1].padEnd(wState)}  ${HEAD[2].padEnd(wLocal)}  ${HEAD[3].padEnd(wRemote)}  ${HEAD[4].padEnd(wTimer)}  ${HEAD[5].padStart(wRecv)}  ${HEAD[6].padStart(wSend)}  ${HEAD[7]}`;
  yield style.dim(clip(head));
  for (let from = 0; from < count; from += LINES_PER_PIECE) yield rowsText(table, from, Math.min(count, from + LINES_PER_PIECE), widths, style, clip, processText);
}

/** A socket for `--json`: the entry, its owners and flags, and `process`, the first owner or null. */
function socketJson(table: Table, p: number): SsSocket & { process: Owner | null } {
  const e = table.entries[table.order[p]!]!;
  const owners = table.ownersOf(e);
  const kind = KINDS[table.flagged[p]!];
  const flags = kind ? ONE_FLAG[kind] : NO_FLAGS;
  const { family, local, remote, state, timer, recvQ, sendQ, inode, uid, cookie } = e;
  return { family, local, remote, state, timer, recvQ, sendQ, inode, uid, cookie, owners, flags, process: owners[0] ?? null };
}

/** The sockets at positions `from` to `to` for `--json` (a plain function: see `rowsText()`). */
function socketsJson(table: Table, from: number, to: number): unknown[] {
  const list: unknown[] = [];
  for (let p = from; p < to; p++) list.push(socketJson(table, p));
  return list;
}

/** The report for `--json` with `sockets` as given (`ssJson()` and `ssJsonPieces()` fill it differently). */
function jsonWith(report: SsReport, table: Table, summary: boolean, sockets: unknown): Record<string, unknown> {
  const { scanned, unreadable, error } = report.processes;
  return {
    namespace: 'this network namespace',
    filter: report.filter,
    total: table.order.length,
    counts: report.counts,
    ...(summary ? {} : { sockets }),
    flags: report.flags.map((f) => (summary ? { kind: f.kind, message: f.message, count: f.sockets.length } : { ...f, count: f.sockets.length })),
    processes: {
      scanned,
      unreadable,
      ...(error ? { error } : {}),
      // A process chooses its own command line: it is cut, and says so.
      commandMaxBytes: COMMAND_MAX_BYTES,
      commandTruncatedMark: TRUNCATED_MARK,
    },
    timeWaitPile: report.timeWaitPile,
  };
}

/** The report as plain data for `--json`; with `summary`, without the sockets (each flag gives its count). */
export function ssJson(report: SsReport, options: { summary?: boolean } = {}): unknown {
  const table = tableOf(report);
  return jsonWith(report, table, options.summary === true, Array.from(table.order, (_, p) => socketJson(table, p)));
}

/** Sockets per piece of `ssJsonPieces()`: each piece is a string of about 1 MB. */
const SOCKETS_PER_JSON_PIECE = 2048;

/**
 * `jsonText(ssJson(report))`, the same text, in pieces to be written one after the other (no
 * separator) as they are asked for: the sockets a
 * few thousand at a time, so that no string holds all of them (V8's longest string, 2^29 - 24
 * characters, holds ~1,000,000 sockets) and a writer can wait for its reader between pieces.
 */
export function* ssJsonPieces(report: SsReport, options: { summary?: boolean } = {}): Generator<string, void, undefined> {
  const table = tableOf(report);
  const summary = options.summary === true;
  const n = table.order.length;
  // Where the sockets go: a placeholder no socket can produce, replaced by the array piece by piece.
  const placeholder = '\u0000sockets\u0000';
  const text = jsonText(jsonWith(report, table, summary, placeholder));
  const at = text.indexOf(JSON.stringify(placeholder));
  if (summary || at < 0) return yield text;
  const before = text.slice(0, at);
  const after = text.slice(at + JSON.stringify(placeholder).length);
  if (n === 0) return yield `${before}[]${after}`;
  // JSON.stringify(value, null, 2) indents the array's elements by 4 here: a chunk of them is
  // stringified as an array of its own (elements indented by 2), unwrapped and indented by 2 more.
  yield `${before}[\n`;
  for (let from = 0; from < n; from += SOCKETS_PER_JSON_PIECE) {
    const elements = jsonText(socketsJson(table, from, Math.min(n, from + SOCKETS_PER_JSON_PIECE))).slice(2, -2).replace(/\n/g, '\n  ');
    yield `${from > 0 ? ',\n' : ''}  ${elements}`;
  }
  yield `\n  ]${after}`;
}
