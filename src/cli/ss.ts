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
import { INTO_COLUMNS, SocketColumns, sockets, type SocketAddress, type SocketEntry, type SocketFilter, type TimerKind } from '../diag';
import { TCP_STATES, type TcpState } from '../states';
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
 * Reorders `order` stably by `keys[entry index]`, a whole number below `range`: one pass of a
 * counting sort (LSD radix sort by one key). The keys as an array, not a function of the index:
 * one call per socket per pass cost more than the pass.
 */
function countingPass(order: Uint32Array, keys: Uint32Array, range: number): Uint32Array {
  const n = order.length;
  const starts = new Uint32Array(range + 1);
  for (let k = 0; k < n; k++) starts[keys[order[k]!]! + 1]!++;
  for (let d = 0; d < range; d++) starts[d + 1]! += starts[d]!;
  const sorted = new Uint32Array(n);
  for (let k = 0; k < n; k++) {
    const i = order[k]!;
    sorted[starts[keys[i]!]!++] = i;
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
  #last = '';
  #lastId = -1;

  id(name: string): number {
    // Sockets in a row mostly share an address (one string: the decoder makes each address once).
    if (name === this.#last) return this.#lastId;
    this.#last = name;
    return (this.#lastId = this.#idOf(name));
  }

  #idOf(name: string): number {
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
 * socket `order[p]` of `columns` is the one at position `p`, `flagged[p]` its flag's number in
 * `KINDS` (0: none).
 */
interface Table {
  columns: SocketColumns;
  order: Uint32Array;
  flagged: Uint8Array;
  /** The owners of socket `i` (of `columns`). */
  ownersOf(i: number): readonly Owner[];
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
  return { columns: SocketColumns.of(list), order, flagged, ownersOf: (i) => list[i]!.owners, unseen: list.some((s) => s.inode !== 0 && s.owners.length === 0) };
}

/** Who holds a flagged socket, as the flags group them: one process, an unseen one, or none. */
function holderKey(inode: number, owners: readonly Owner[]): string {
  if (owners.length > 0) return `pid ${owners[0]!.pid}`;
  return inode !== 0 ? 'unseen' : 'none';
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
 * read: `renderSs()` reads the columns the analysis read.
 */
export function analyse(
  entries: readonly SocketEntry[],
  owners: Owners,
  options: { filter?: SocketFilter; timeWaitPile?: number } = {},
): SsReport {
  return analyseColumns(SocketColumns.of(entries), owners, options);
}

/** `analyse()` of sockets as columns: `collect()` reads them so from the kernel, with no object per socket. */
function analyseColumns(columns: SocketColumns, owners: Owners, options: { filter?: SocketFilter; timeWaitPile?: number }): SsReport {
  const timeWaitPile = options.timeWaitPile ?? DEFAULT_TIME_WAIT_PILE;
  const n = columns.length;
  const { state, timer, inode } = columns;
  // The columns can hold room for more sockets than there are.
  const localPort = columns.localPort.subarray(0, n);
  const remotePort = columns.remotePort.subarray(0, n);
  const ownersOf = (i: number): readonly Owner[] => (inode[i] === 0 ? NO_OWNERS : (owners.byInode.get(inode[i]!) ?? NO_OWNERS));

  const rank = new Uint8Array(n);
  const localAddress = new Uint32Array(n);
  const remoteAddress = new Uint32Array(n);
  const groupOf = new Int32Array(n).fill(-1);
  const perRank = new Array<number>(ORDER.length + 1).fill(0);
  const names = new Names();
  const groups: Group[] = [];
  const piles = new Map<number, number>(); // remote address id * 65536 + port -> group
  const held = new Map<string, number>(); // kind and holder -> group
  let unseen = false;
  // Sockets in a row mostly share their state, and TIME_WAIT ones their pile: the last is kept.
  let lastState: string | undefined;
  let lastRank = 0;
  let lastPile = -1;
  let lastPileGroup = 0;
  for (let i = 0; i < n; i++) {
    const s = state[i]!;
    if (s !== lastState) {
      lastState = s;
      lastRank = RANK.get(s) ?? ORDER.length;
    }
    const r = lastRank;
    rank[i] = r;
    perRank[r]!++;
    localAddress[i] = names.id(columns.localAddress[i]!);
    remoteAddress[i] = names.id(columns.remoteAddress[i]!);
    if (inode[i] !== 0 && !unseen) unseen = ownersOf(i).length === 0;
    let group: number | undefined;
    if (s === 'TIME_WAIT') {
      const key = remoteAddress[i]! * 65536 + remotePort[i]!;
      group = key === lastPile ? lastPileGroup : piles.get(key);
      if (group === undefined) piles.set(key, (group = groups.push({ kind: 'time-wait-pile', count: 0, indexes: [] }) - 1));
      lastPile = key;
      lastPileGroup = group;
    } else if (s === 'CLOSE_WAIT' || (s === 'FIN_WAIT2' && timer[i] === 'off')) {
      const kind = s === 'CLOSE_WAIT' ? 'close-wait' : 'fin-wait2-no-timer';
      const key = `${kind} ${holderKey(inode[i]!, ownersOf(i))}`;
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
  if (!allSame(remoteAddress)) order = countingPass(order, remoteAddress.map((id) => addressRank[id]!), names.size);
  if (!allSame(localAddress)) order = countingPass(order, localAddress.map((id) => addressRank[id]!), names.size);
  if (!allSame(remotePort)) order = countingPass(order, Uint32Array.from(remotePort), 65536);
  if (!allSame(localPort)) order = countingPass(order, Uint32Array.from(localPort), 65536);
  if (!allSame(rank)) order = countingPass(order, Uint32Array.from(rank), ORDER.length + 1);

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
    const i = order[indexes[0]!]!;
    const first = columns.entry(i);
    const tuple = `${addressText(first.local)} <- ${addressText(first.remote)}`;
    const [what, why] = WHY[kind as keyof typeof WHY];
    const where = indexes.length === 1 ? `${what} ${tuple}` : `${what} on ${indexes.length} sockets (${tuple} and ${indexes.length - 1} more)`;
    flags.push({ kind, message: `${where}: ${why}; ${holderText(first, ownersOf(i), indexes.length)}`, sockets: indexes });
  }
  for (const { kind, indexes } of biggest((kind) => kind === 'time-wait-pile')) {
    const remote = addressText(columns.entry(order[indexes[0]!]!).remote);
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
        const kind = KINDS[flagged[p]!];
        return ssSocket(columns.entry(i), ownersOf(i), kind ? ONE_FLAG[kind] : NO_FLAGS);
      });
      return list;
    },
    flags,
    processes: { scanned, unreadable, ...(error ? { error } : {}) },
    timeWaitPile,
  };
  TABLES.set(report, { columns, order, flagged, ownersOf, unseen });
  return report;
}

/** Reads the kernel's sockets (sock_diag) and their owners (/proc) and analyses them. */
export function collect(filter: SocketFilter, timeWaitPile = DEFAULT_TIME_WAIT_PILE): SsReport {
  // Into columns: no object per socket (see INTO_COLUMNS); entries are made for the few that need one.
  const columns = new SocketColumns();
  sockets({ ...filter, [INTO_COLUMNS]: columns } as SocketFilter);
  const wanted = new Set<number>();
  for (let i = 0; i < columns.length; i++) if (columns.inode[i] !== 0) wanted.add(columns.inode[i]!);
  const owners: Owners = wanted.size > 0 ? socketOwners(wanted) : { byInode: new Map(), scanned: 0, unreadable: 0 };
  return analyseColumns(columns, owners, { filter, timeWaitPile });
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
  for (const piece of ssChunks(report, style, columns, options)) yield typeof piece === 'string' ? piece : piece.toString('utf8');
}

/**
 * @internal `ssPieces()`, but the rows as UTF-8 bytes when they need no clipping or styling
 * (plain, no width: `finwait ss` into a pipe or a file), which `finwait ss` writes as they are.
 */
export function* ssChunks(report: SsReport, style: Style = plain, columns = Infinity, options: RenderOptions = {}): Generator<string | Buffer, void, undefined> {
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
    yield* rowPieces(table, fit, style, clip, style === plain && columns === Infinity);
    if (fit < total) yield style.dim(clip(`… and ${counted(total - fit, 'more socket')} (--state or --port narrows the list, --summary leaves it out)`));
  } else yield head.join('\n');

  yield ['', ...notes.map((note) => style.dim(clip(note)))].join('\n');
}

const HEAD = [' ', 'State', 'Local', 'Remote', 'Timer', 'Recv-Q', 'Send-Q', 'Process'] as const;

/** Decimal digits of a non-negative integer, without making the string (by comparisons: a row has six such numbers). */
function digits(n: number): number {
  if (n < 100000) return n < 10 ? 1 : n < 100 ? 2 : n < 1000 ? 3 : n < 10000 ? 4 : 5;
  let d = 6;
  for (let x = n; x >= 1000000; x = Math.floor(x / 10)) d++;
  return d;
}

/** `addressText({ address, port }).length` without the port's digits, and without making the string. */
function addressLength(address: string): number {
  return address.length + 1 + (address.includes(':') ? 2 : 0);
}

/** A timer in tenths of a second, as a row shows it: `timewait 59.3 s`. */
function tenthsOf(expiresMs: number): number {
  return Math.round(expiresMs / 100);
}

function timerLength(kind: TimerKind, expiresMs: number): number {
  if (kind === 'off') return 1;
  return kind.length + 1 + digits(Math.floor(tenthsOf(expiresMs) / 10)) + 4;
}

/** Lines handed to `write` at a time: each piece is about 100 KB. */
const LINES_PER_PIECE = 1024;

/** The widths of the columns before Process, over the first `count` rows. */
type Widths = [state: number, local: number, remote: number, timer: number, recv: number, send: number];

/** The column widths, measured without making the cells (each row's are written once, for its line). */
function columnWidths(table: Table, count: number): Widths {
  const { order } = table;
  // Each column in a local: the loop reads them 130,000 times.
  const { state, localAddress, remoteAddress, localPort, remotePort, timer, expiresMs, recvQ, sendQ } = table.columns;
  let [wState, wLocal, wRemote, wTimer, wRecv, wSend] = HEAD.slice(1, 7).map((h) => h.length) as Widths;
  // Rows in a row mostly share their addresses: each is measured when it changes.
  let local = '';
  let localLength = 0;
  let remote = '';
  let remoteLength = 0;
  for (let p = 0; p < count; p++) {
    const i = order[p]!;
    wState = Math.max(wState, state[i]!.length);
    if (localAddress[i] !== local) localLength = addressLength((local = localAddress[i]!));
    if (remoteAddress[i] !== remote) remoteLength = addressLength((remote = remoteAddress[i]!));
    wLocal = Math.max(wLocal, localLength + digits(localPort[i]!));
    wRemote = Math.max(wRemote, remoteLength + digits(remotePort[i]!));
    wTimer = Math.max(wTimer, timerLength(timer[i]!, expiresMs[i]!));
    wRecv = Math.max(wRecv, digits(recvQ[i]!));
    wSend = Math.max(wSend, digits(sendQ[i]!));
  }
  return [wState, wLocal, wRemote, wTimer, wRecv, wSend];
}

/** A text as a row writes it: its UTF-8 bytes, and its width (UTF-16 units, as the column widths count). */
interface Cell {
  bytes: Buffer;
  length: number;
}

/**
 * The cells of the texts rows repeat (states, timer kinds, addresses, process labels), each made
 * once; `make` turns a text into the cell's text (an address into `127.0.0.1:`). Rows in a row
 * mostly repeat the row before, so the last text is checked first (often the same string).
 */
class Cells {
  #cells = new Map<string, Cell>();
  #last = '';
  #lastCell: Cell = { bytes: Buffer.alloc(0), length: 0 };

  constructor(readonly make: (text: string) => string = (text) => text) {}

  of(text: string): Cell {
    if (text === this.#last) return this.#lastCell;
    let cell = this.#cells.get(text);
    if (cell === undefined) {
      const made = this.make(text);
      this.#cells.set(text, (cell = { bytes: Buffer.from(made, 'utf8'), length: made.length }));
    }
    this.#last = text;
    return (this.#lastCell = cell);
  }
}

/** The cells of one render: a set for each column (each remembers its own last text). */
interface RowCells {
  state: Cells;
  local: Cells;
  remote: Cells;
  timer: Cells;
  label: Cells;
}

/** Writes the `digits(n)` decimal digits of the whole number `n` at `at`; returns where they end. */
function putDigits(out: Buffer, at: number, n: number): number {
  const end = at + digits(n);
  for (let k = end - 1; k >= at; k--) {
    const digit = n % 10;
    out[k] = 48 + digit;
    n = (n - digit) / 10;
  }
  return end;
}

/** `count` spaces at `at`; returns where they end. Byte by byte: `Buffer.fill()` and `copy()` cost more than a few bytes do. */
function putSpaces(out: Buffer, at: number, count: number): number {
  for (let k = 0; k < count; k++) out[at + k] = 0x20;
  return count > 0 ? at + count : at;
}

/** A cell's bytes at `at`; returns where they end. */
function putCell(out: Buffer, at: number, cell: Cell): number {
  const bytes = cell.bytes;
  if (bytes.length > 16) out.set(bytes, at);
  else for (let k = 0; k < bytes.length; k++) out[at + k] = bytes[k]!;
  return at + bytes.length;
}

/** `addressText({ address, port })` without the port: `127.0.0.1:`, `[::1]:`. */
function addressPrefix(address: string): string {
  return address.includes(':') ? `[${address}]:` : `${address}:`;
}

/**
 * `127.0.0.1:80`, `[::1]:80`: `addressOf()` of the diagrams, written here so that `finwait ss`
 * does not load the diagrams' modules (and the lifecycle model behind them).
 */
function addressText(a: SocketAddress): string {
  return addressPrefix(a.address) + a.port;
}

/**
 * Rows `from` to `to` (positions) as UTF-8 lines joined by newlines, written byte by byte: as
 * strings, 130,000 rows took ~17 concatenations each and then the encoding of the result, about
 * a quarter of `finwait ss`'s time. A plain function, not the generator's own loop: V8 optimizes
 * a loop while it runs (on-stack replacement) only outside generators.
 */
function rowsBytes(table: Table, from: number, to: number, widths: Widths, cells: RowCells, processText: (i: number) => string): Buffer {
  const { order, flagged } = table;
  // Each column in a local: the loop reads them 130,000 times.
  const { state, localAddress, remoteAddress, localPort, remotePort, timer, expiresMs, recvQ, sendQ } = table.columns;
  const [wState, wLocal, wRemote, wTimer, wRecv, wSend] = widths;
  const fixed = 3 + wState + 2 + wLocal + 2 + wRemote + 2 + wTimer + 2 + wRecv + 2 + wSend + 2 + 1;
  let out = Buffer.allocUnsafe((to - from) * (fixed + 32));
  let at = 0;
  for (let p = from; p < to; p++) {
    const i = order[p]!;
    const stateCell = cells.state.of(state[i]!);
    const local = cells.local.of(localAddress[i]!);
    const remote = cells.remote.of(remoteAddress[i]!);
    const label = cells.label.of(processText(i));
    // The longest this row can be: a UTF-16 unit is at most 3 bytes.
    const need = at + 3 * (fixed + stateCell.length + local.length + remote.length) + label.bytes.length;
    if (need > out.length) {
      const bigger = Buffer.allocUnsafe(Math.max(need, 2 * out.length));
      out.copy(bigger, 0, 0, at);
      out = bigger;
    }
    if (p !== from) out[at++] = 0x0a;
    out[at++] = flagged[p] !== 0 ? 0x21 : 0x20; // '!'
    at = putSpaces(out, at, 2);
    at = putCell(out, at, stateCell);
    at = putSpaces(out, at, wState - stateCell.length + 2);
    at = putCell(out, at, local);
    at = putDigits(out, at, localPort[i]!);
    at = putSpaces(out, at, wLocal - local.length - digits(localPort[i]!) + 2);
    at = putCell(out, at, remote);
    at = putDigits(out, at, remotePort[i]!);
    at = putSpaces(out, at, wRemote - remote.length - digits(remotePort[i]!) + 2);
    const timerAt = at;
    const kind = timer[i]!;
    if (kind === 'off') out[at++] = 0x2d; // '-'
    else {
      // `timewait 59.3 s`, as timerText() writes it.
      const tenths = tenthsOf(expiresMs[i]!);
      at = putCell(out, at, cells.timer.of(kind));
      out[at++] = 0x20;
      at = putDigits(out, at, Math.floor(tenths / 10));
      out[at++] = 0x2e; // '.'
      out[at++] = 48 + (tenths % 10);
      out[at++] = 0x20;
      out[at++] = 0x73; // 's'
    }
    at = putSpaces(out, at, wTimer - (at - timerAt) + 2); // ASCII: a byte per column
    at = putSpaces(out, at, wRecv - digits(recvQ[i]!));
    at = putDigits(out, at, recvQ[i]!);
    at = putSpaces(out, at, 2 + wSend - digits(sendQ[i]!));
    at = putDigits(out, at, sendQ[i]!);
    at = putSpaces(out, at, 2);
    at = putCell(out, at, label);
  }
  return out.subarray(0, at);
}

/**
 * The table's heading, then its first `count` rows `LINES_PER_PIECE` at a time: each piece is
 * let go once written, instead of every row held to the end (~100 MB of strings on 130,000).
 * With `raw`, the rows as `rowsBytes()` writes them; else as text, each line clipped and the
 * flagged ones styled.
 */
function* rowPieces(table: Table, count: number, style: Style, clip: (line: string) => string, raw: boolean): Generator<string | Buffer, void, undefined> {
  const labels = new Map<readonly Owner[], string>();
  const { inode, state } = table.columns;
  const processText = (i: number): string => {
    const owners = table.ownersOf(i);
    if (owners.length > 0) {
      let label = labels.get(owners);
      if (label === undefined) labels.set(owners, (label = visible(ownersText(owners))));
      return label;
    }
    if (inode[i] === 0) return state[i] === 'TIME_WAIT' ? '- (TIME_WAIT: no process)' : '- (orphan: no process)';
    return `? (inode ${inode[i]})`;
  };
  const widths = columnWidths(table, count);
  const [wState, wLocal, wRemote, wTimer, wRecv, wSend] = widths;
  const head = `${HEAD[0]}  ${HEAD[1].padEnd(wState)}  ${HEAD[2].padEnd(wLocal)}  ${HEAD[3].padEnd(wRemote)}  ${HEAD[4].padEnd(wTimer)}  ${HEAD[5].padStart(wRecv)}  ${HEAD[6].padStart(wSend)}  ${HEAD[7]}`;
  yield style.dim(clip(head));
  const cells: RowCells = { state: new Cells(), local: new Cells(addressPrefix), remote: new Cells(addressPrefix), timer: new Cells(), label: new Cells() };
  for (let from = 0; from < count; from += LINES_PER_PIECE) {
    const to = Math.min(count, from + LINES_PER_PIECE);
    const bytes = rowsBytes(table, from, to, widths, cells, processText);
    if (raw) yield bytes;
    else {
      const lines = bytes.toString('utf8').split('\n');
      yield lines.map((line, k) => (table.flagged[from + k] !== 0 ? style.warn(clip(line)) : clip(line))).join('\n');
    }
  }
}

/** A socket for `--json`: the entry, its owners and flags, and `process`, the first owner or null. */
function socketJson(table: Table, p: number): SsSocket & { process: Owner | null } {
  const i = table.order[p]!;
  const e = table.columns.entry(i);
  const owners = table.ownersOf(i);
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
