/**
 * `finwait trace`: one line per TCP connection as it ends (from `traceConnections()`), the
 * filters, and the summary printed on exit. Rendering and counting only; main.ts parses the
 * arguments and runs it.
 */
import type { TcpState } from '../states';
import type { ConnectionEnd, TraceOutcome } from '../trace/ends';
import { jsonText, visible } from './escape';
import type { Style } from './style';

/** Which ends are printed; every given condition must hold. */
export interface TraceFilter {
  /** Local or remote port. */
  port?: number;
  pid?: number;
  /** Namespace cookie (16 hex digits); `home` stands for this process's namespace. */
  netns?: string;
  /** The path went through one of these states. */
  states?: ReadonlySet<TcpState>;
  outcomes?: ReadonlySet<TraceOutcome>;
}

export function matches(end: ConnectionEnd, filter: TraceFilter, home: string): boolean {
  if (filter.port !== undefined && end.local.port !== filter.port && end.remote.port !== filter.port) return false;
  if (filter.pid !== undefined && end.pid !== filter.pid) return false;
  if (filter.netns !== undefined && (end.netns ?? home) !== filter.netns) return false;
  if (filter.states !== undefined && !end.path.some((s) => filter.states!.has(s))) return false;
  if (filter.outcomes !== undefined && !filter.outcomes.has(end.outcome)) return false;
  return true;
}

function endpoint(a: { address: string; port: number }): string {
  return a.address.includes(':') ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
}

function clock(at: Date): string {
  return at.toISOString().slice(11, 23);
}

function duration(ms: number): string {
  return ms < 1 ? `${(ms * 1000).toFixed(0)} µs` : ms < 10_000 ? `${ms.toFixed(1)} ms` : `${(ms / 1000).toFixed(1)} s`;
}

const OUTCOME_STYLE: Record<TraceOutcome, keyof Style> = {
  graceful: 'state',
  'reset-sent': 'warn',
  'reset-received': 'warn',
  'timed-out': 'anomaly',
  refused: 'warn',
  killed: 'anomaly',
  unknown: 'dim',
};

/** One line for one end. Text from other processes (comm) is escaped. */
export function renderEnd(end: ConnectionEnd, at: Date, style: Style, home: string): string {
  const parts = [clock(at), `${endpoint(end.local)} -> ${endpoint(end.remote)}`];
  if (end.netns !== undefined && end.netns !== home) parts.push(`netns ${visible(end.netnsName ?? end.netns)}`);
  if (end.pid !== undefined) parts.push(`pid ${end.pid}${end.comm !== undefined ? ` ${visible(end.comm)}` : ''}`);
  parts.push(`first: ${end.closedFirst ?? '?'}`);
  parts.push((end.pathSeen === 'sampled' ? '~' : '') + end.path.join(' > '));
  parts.push(style[OUTCOME_STYLE[end.outcome]](end.outcome) + (end.error !== undefined ? ` (${end.error})` : ''));
  if (end.durationMs !== undefined) parts.push(`${end.startSeen ? '' : '>='}${duration(end.durationMs)}`);
  if (end.counters !== undefined) {
    const c = end.counters;
    const unacked = c.unackedBytes !== undefined ? `${c.unackedBytes} B` : `${c.unackedSegments ?? '?'} seg`;
    parts.push(`retrans ${c.retransmits} unacked ${unacked}`);
  }
  return parts.join('  ');
}

/** One JSON line for one end. */
export function jsonEnd(end: ConnectionEnd, at: Date): string {
  return jsonText({ time: at.toISOString(), ...end }, 0);
}

/** Counts by outcome and by remote address, kept as ends are printed. */
export class TraceSummary {
  readonly byOutcome = new Map<TraceOutcome, number>();
  readonly byRemote = new Map<string, Map<TraceOutcome, number>>();
  total = 0;

  add(end: ConnectionEnd): void {
    this.total++;
    this.byOutcome.set(end.outcome, (this.byOutcome.get(end.outcome) ?? 0) + 1);
    let r = this.byRemote.get(end.remote.address);
    if (r === undefined) this.byRemote.set(end.remote.address, (r = new Map()));
    r.set(end.outcome, (r.get(end.outcome) ?? 0) + 1);
  }

  /** The remotes with the most ends, most first. */
  topRemotes(limit: number): [string, number, Map<TraceOutcome, number>][] {
    const rows: [string, number, Map<TraceOutcome, number>][] = [];
    for (const [address, counts] of this.byRemote) {
      let n = 0;
      for (const c of counts.values()) n += c;
      rows.push([address, n, counts]);
    }
    return rows.sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).slice(0, limit);
  }
}

function counts(m: Map<TraceOutcome, number>): string {
  return [...m].sort((a, b) => b[1] - a[1]).map(([o, n]) => `${o} ${n}`).join(', ');
}

export const SUMMARY_REMOTES = 10;

export function renderSummary(s: TraceSummary, extra: { source: string; lost: number; seconds: number }): string {
  const lines = [`${s.total} connection${s.total === 1 ? '' : 's'} ended in ${extra.seconds.toFixed(1)} s (source ${extra.source}${extra.lost > 0 ? `, ${extra.lost} batches of events lost` : ''})`];
  if (s.total > 0) {
    lines.push(`by outcome: ${counts(s.byOutcome)}`);
    const top = s.topRemotes(SUMMARY_REMOTES);
    lines.push(`by remote${s.byRemote.size > top.length ? ` (top ${top.length} of ${s.byRemote.size})` : ''}:`);
    for (const [address, n, by] of top) lines.push(`  ${address.padEnd(39)} ${String(n).padStart(7)}  ${counts(by)}`);
  }
  return lines.join('\n');
}

export function jsonSummary(s: TraceSummary, extra: { source: string; lost: number; seconds: number }): string {
  return jsonText(
    {
    summary: {
      total: s.total,
      seconds: extra.seconds,
      source: extra.source,
      lost: extra.lost,
      byOutcome: Object.fromEntries(s.byOutcome),
      byRemote: s.topRemotes(SUMMARY_REMOTES).map(([address, total, by]) => ({ address, total, byOutcome: Object.fromEntries(by) })),
    },
    },
    0,
  );
}
