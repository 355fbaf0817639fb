/**
 * `finwait ss`: this host's TCP sockets by close state, through sock_diag (`sockets()`), with the
 * owning process found through `/proc`, and flags on the ones that point at a bug: CLOSE_WAIT
 * (an application that never closed), FIN_WAIT2 with no timer (a half-close waiting on a peer
 * that never closes) and TIME_WAIT piling up towards one remote endpoint.
 *
 * `analyse()`, `renderSs()` and `ssJson()` are pure; `collect()` reads the kernel and /proc.
 */
import { sockets, TCP_STATES, type SocketEntry, type SocketFilter, type TcpState } from '../index';
import { addressOf, seconds } from './diagram';
import { socketOwners, type Owner, type Owners } from './processes';
import { plain, type Style } from './style';

/** TIME_WAIT sockets to one remote endpoint above which `finwait ss` flags a pile (default). */
export const DEFAULT_TIME_WAIT_PILE = 1000;

/** Why a socket or a group of sockets is flagged. */
export type FlagKind = 'close-wait' | 'fin-wait2-no-timer' | 'time-wait-pile';

export interface Flag {
  kind: FlagKind;
  message: string;
  /** The flagged sockets' indexes in `SsReport.sockets`. */
  sockets: number[];
}

/** One socket with its owners and the flags on it. */
export interface SsSocket extends SocketEntry {
  /** Processes holding it; empty when none (inode 0) or none could be read. */
  owners: Owner[];
  flags: FlagKind[];
}

export interface SsReport {
  /** The states and port asked for. */
  filter: SocketFilter;
  counts: Partial<Record<TcpState, number>>;
  sockets: SsSocket[];
  flags: Flag[];
  /** What the owner lookup could and could not read. */
  processes: { scanned: number; unreadable: number; error?: string };
  timeWaitPile: number;
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

function ownersText(owners: readonly Owner[]): string {
  if (owners.length === 0) return '';
  const [first] = owners;
  return `pid ${first!.pid} (${first!.command})${owners.length > 1 ? ` and ${owners.length - 1} more` : ''}`;
}

/** Sorts, counts and flags `entries`. Pure. */
export function analyse(
  entries: readonly SocketEntry[],
  owners: Owners,
  options: { filter?: SocketFilter; timeWaitPile?: number } = {},
): SsReport {
  const timeWaitPile = options.timeWaitPile ?? DEFAULT_TIME_WAIT_PILE;
  const list: SsSocket[] = entries
    .map((e) => ({ ...e, owners: e.inode === 0 ? [] : (owners.byInode.get(e.inode) ?? []), flags: [] as FlagKind[] }))
    .sort(
      (x, y) =>
        ORDER.indexOf(x.state) - ORDER.indexOf(y.state) ||
        x.local.port - y.local.port ||
        x.remote.port - y.remote.port ||
        x.local.address.localeCompare(y.local.address),
    );
  const counts: Partial<Record<TcpState, number>> = {};
  for (const state of TCP_STATES) {
    const n = list.filter((s) => s.state === state).length;
    if (n > 0) counts[state] = n;
  }
  const flags: Flag[] = [];
  const flag = (kind: FlagKind, message: string, indexes: number[]): void => {
    for (const i of indexes) list[i]!.flags.push(kind);
    flags.push({ kind, message, sockets: indexes });
  };
  list.forEach((s, i) => {
    const tuple = `${addressOf(s.local)} <- ${addressOf(s.remote)}`;
    const holder = s.owners.length > 0 ? `held by ${ownersText(s.owners)}` : s.inode !== 0 ? `held by a process this user cannot see (inode ${s.inode})` : 'no process';
    if (s.state === 'CLOSE_WAIT') {
      flag('close-wait', `CLOSE_WAIT ${tuple}: the peer closed and the application never did; ${holder}`, [i]);
    } else if (s.state === 'FIN_WAIT2' && s.timer.kind === 'off') {
      flag('fin-wait2-no-timer', `FIN_WAIT2 with no timer ${tuple}: our half-close waits on a peer that never closes (an open fd has no FIN_WAIT2 timeout); ${holder}`, [i]);
    }
  });
  const piles = new Map<string, number[]>();
  list.forEach((s, i) => {
    if (s.state !== 'TIME_WAIT') return;
    const key = addressOf(s.remote);
    piles.set(key, [...(piles.get(key) ?? []), i]);
  });
  for (const [remote, indexes] of piles) {
    if (indexes.length > timeWaitPile) {
      flag(
        'time-wait-pile',
        `TIME_WAIT pile: ${indexes.length} sockets to ${remote} (over ${timeWaitPile}): each holds a local port for 60 s, so new connections to ${remote} can run out of ports`,
        indexes,
      );
    }
  }
  const { scanned, unreadable, error } = owners;
  return {
    filter: options.filter ?? {},
    counts,
    sockets: list,
    flags,
    processes: { scanned, unreadable, ...(error ? { error } : {}) },
    timeWaitPile,
  };
}

/** Reads the kernel's sockets (sock_diag) and their owners (/proc) and analyses them. */
export function collect(filter: SocketFilter, timeWaitPile = DEFAULT_TIME_WAIT_PILE): SsReport {
  const entries = sockets(filter);
  const wanted = new Set(entries.map((e) => e.inode).filter((i) => i !== 0));
  const owners: Owners = wanted.size > 0 ? socketOwners(wanted) : { byInode: new Map(), scanned: 0, unreadable: 0 };
  return analyse(entries, owners, { filter, timeWaitPile });
}

function timerText(s: SocketEntry): string {
  if (s.timer.kind === 'off') return '-';
  return `${s.timer.kind} ${seconds(s.timer.expiresMs)}`;
}

function processText(s: SsSocket): string {
  if (s.owners.length > 0) return ownersText(s.owners);
  if (s.inode === 0) return s.state === 'TIME_WAIT' ? '- (TIME_WAIT: no process)' : '- (orphan: no process)';
  return `? (inode ${s.inode})`;
}

/** The report as text: counts per state, a table of sockets, the flags, and what /proc showed. */
export function renderSs(report: SsReport, style: Style = plain, columns = Infinity): string {
  const out: string[] = [];
  const clip = (line: string): string => (line.length > columns ? `${line.slice(0, Math.max(0, columns - 1))}…` : line);
  const filters = [
    report.filter.states ? `state ${report.filter.states.join(',')}` : '',
    report.filter.port !== undefined ? `port ${report.filter.port}` : '',
  ].filter(Boolean);
  out.push(style.title(`TCP sockets in this network namespace${filters.length ? ` (${filters.join(', ')})` : ''}: ${report.sockets.length}`));
  const counts = Object.entries(report.counts).map(([state, n]) => `${state} ${n}`);
  out.push(counts.length > 0 ? `  ${counts.join('   ')}` : '  none');
  if (report.sockets.length > 0) {
    out.push('');
    const rows = report.sockets.map((s) => [
      s.flags.length > 0 ? '!' : ' ',
      s.state,
      addressOf(s.local),
      addressOf(s.remote),
      timerText(s),
      String(s.recvQ),
      String(s.sendQ),
      processText(s),
    ]);
    const head = [' ', 'State', 'Local', 'Remote', 'Timer', 'Recv-Q', 'Send-Q', 'Process'];
    const widths = head.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c]!.length)));
    const line = (cells: string[]): string =>
      cells.map((cell, c) => (c === 5 || c === 6 ? cell.padStart(widths[c]!) : c === cells.length - 1 ? cell : cell.padEnd(widths[c]!))).join('  ');
    out.push(style.dim(clip(line(head))));
    rows.forEach((r, i) => {
      const text = clip(line(r));
      out.push(report.sockets[i]!.flags.length > 0 ? style.warn(text) : text);
    });
  }
  if (report.flags.length > 0) {
    out.push('');
    out.push(style.warn(`flags (${report.flags.length}):`));
    for (const f of report.flags) out.push(`  ! ${f.message}`);
  }
  out.push('');
  const p = report.processes;
  if (p.error) out.push(style.dim(`processes: not shown: ${p.error}`));
  else if (p.unreadable > 0) {
    out.push(style.dim(`processes: ${p.unreadable} processes' fds are not readable by this user (other users' /proc/<pid>/fd needs root): their sockets show '?'`));
  } else out.push(style.dim('processes: from /proc/*/fd; inode 0 = no process (TIME_WAIT or an orphan the application closed)'));
  if (!p.error && report.sockets.some((s) => s.inode !== 0 && s.owners.length === 0)) {
    out.push(style.dim("'?': no process visible in this /proc holds it (another PID namespace, or it exited during the scan)"));
  }
  return out.join('\n');
}

/** The report as plain data for `--json`. */
export function ssJson(report: SsReport): unknown {
  return {
    namespace: 'this network namespace',
    filter: report.filter,
    total: report.sockets.length,
    counts: report.counts,
    sockets: report.sockets.map((s) => ({ ...s, process: s.owners[0] ?? null })),
    flags: report.flags,
    processes: report.processes,
    timeWaitPile: report.timeWaitPile,
  };
}
