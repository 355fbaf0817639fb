#!/usr/bin/env node
/**
 * The `finwait` command: `finwait demo [scenario]` runs a close on real kernel sockets — in the
 * lab (two network namespaces and a userspace wire, with every segment) when it is available,
 * on loopback (states only) otherwise or with `--loopback` — and draws it as an RFC 793 ladder;
 * `finwait ss` lists this host's TCP sockets by close state and flags the suspicious ones.
 * Argument parsing, help, output and exit codes live here; the work is in `scenarios.ts`,
 * `lab-scenarios.ts`, `ladder.ts`, `svg.ts` and `ss.ts`.
 */
import { once } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { SocketFilter } from '../diag';
import { isTcpState, type TcpState } from '../states';
import type { Diagram } from './diagram';
import { jsonText, visible, visibleLines } from './escape';
import { COMMAND_MAX_BYTES } from '../processes';
import { collect, DEFAULT_TIME_WAIT_PILE, renderSs, ssChunks, ssJsonPieces } from './ss';
import { styleFor } from './style';
import type { TraceFilter } from './trace';
import type { TraceOutcome } from '../trace/ends';
import type { ConnectionTrace } from '../trace/trace';

// The demo's modules (the lab, the scenarios and through them the whole library) load when a demo
// runs or its help is shown: `finwait ss` starts ~70 ms sooner without them. So do the diagram's,
// the ladder's, the SVG's and the trace's modules, which `finwait ss` does not use either.
const scenarios = (): typeof import('./scenarios') => require('./scenarios');
const traceText = (): typeof import('./trace') => require('./trace');
const traceOutcomes = (): readonly TraceOutcome[] => (require('../trace/ends') as typeof import('../trace/ends')).TRACE_OUTCOMES;

/** The exit codes, as the README documents them. */
export const EXIT = {
  ok: 0,
  /** The scenario or the kernel call failed. */
  failed: 1,
  /** Unknown command, scenario or flag, or a bad value. */
  usage: 2,
  /** The scenario needs the lab, and the lab is not available (or `--loopback` was given). */
  needsLab: 3,
} as const;

class UsageError extends Error {
  constructor(
    message: string,
    readonly command: 'main' | 'demo' | 'ss' | 'trace' = 'main',
  ) {
    super(message);
  }
}

const USAGE = {
  main: 'usage: finwait <command> [options]   (commands: demo, ss, trace; finwait <command> --help; finwait --version)',
  demo: 'usage: finwait demo [scenario] [--loopback] [--json] [--svg FILE]',
  ss: 'usage: finwait ss [--port N] [--state S...] [--time-wait-pile N] [--summary] [--watch | --json]',
  trace:
    'usage: finwait trace [--port N] [--pid N] [--netns NAME|COOKIE] [--state S...] [--outcome O...] [--source bpf|destroy-multicast] [--interval MS] [--count N] [--duration S] [--json]',
};

const HELP = {
  main: `finwait: see how TCP connections end, on this host's real kernel sockets

${USAGE.main}

commands:
  demo [scenario]   run a close on real sockets (the lab, or loopback), drawn as an RFC 793 ladder
  ss                this host's TCP sockets by close state, with owners and flags
  trace             one line per TCP connection as it ends: who closed first, the path of states, the outcome

options:
  -h, --help        this help; finwait <command> --help for a command's
  -V, --version     the version of finwait

exit codes: 0 ok, 1 failed, 2 usage error, 3 the scenario needs the lab`,
  get demo(): string {
    return `finwait demo: a TCP close on real kernel sockets, drawn like RFC 793 figures 13 and 14:
TCP A's states down the left, TCP B's down the right, time going down, and the segments between.

${USAGE.demo}

scenarios (default: normal; any case, - or _):
${scenarios().SCENARIOS.map((s) => `  ${s.name.padEnd(18)}${s.title}${s.needs ? ' [needs the lab]' : ''}`).join('\n')}

options:
  --loopback        run on loopback even when the lab is available (states only)
  --json            print the scenario, path, both histories, outcome and role per end, segments and notes as JSON
  --svg FILE        also write the ladder as an SVG file
  -h, --help        this help

paths:
  lab               when it can run (root or a user namespace: CAP_NET_ADMIN, CAP_SYS_ADMIN, /dev/net/tun, ip):
                    TCP A in one network namespace, TCP B in another, joined by a userspace wire that logs
                    every segment (<SEQ=..><ACK=..><CTL=..>) and holds or drops them where a scenario says
  loopback          otherwise, or with --loopback: both ends on 127.0.0.1, states only
The output says which: "path: lab (two network namespaces, userspace wire)" or "path: loopback".
exit codes: 0 ok, 1 the scenario failed, 2 usage error, 3 the scenario needs the lab and it is not available`;
  },
  ss: `finwait ss: this host's TCP sockets by close state (sock_diag, like ss -tan), with the process
holding each (from /proc/*/fd) and flags on CLOSE_WAIT, FIN_WAIT2 with no timer, and TIME_WAIT piles.

${USAGE.ss}

options:
  --port N              only sockets with N as their local or remote port
  --state S...          only these states (repeat the flag, list them, or comma-separate):
                        e.g. --state CLOSE_WAIT TIME_WAIT, --state fin-wait-2
  --time-wait-pile N    flag more than N TIME_WAIT sockets to one remote endpoint (default ${DEFAULT_TIME_WAIT_PILE})
  --summary             the counts per state and the flags, no rows
  --watch               refresh every second like top (q or Ctrl-C quits); needs a terminal
  --json                machine-readable output (command lines cut at ${COMMAND_MAX_BYTES} bytes, marked)
  -h, --help            this help

Text from other processes (command lines and names) is printed with control characters escaped (ESC as \\x1b).
exit codes: 0 ok, 1 failed, 2 usage error`,
  get trace(): string {
    return `finwait trace: one line per TCP connection as it ends, until Ctrl-C (or --count, --duration), then a
summary by outcome and by remote address.

${USAGE.trace}

Each line: the time, local -> remote, the network namespace (when not this one), the process that
connected or closed it (when seen), who closed first (local, remote, simultaneous), the path of states,
the outcome (${traceOutcomes().join(', ')}) with the socket's error, the duration (>= when
the start was not seen), and the retransmissions and unacknowledged data at the end.

sources:
  bpf                 (default where it can run: CAP_BPF and CAP_PERFMON, or root) a BPF program on the
                      inet_sock_set_state tracepoint, loaded from finwait's addon (no compiler, no headers):
                      every transition of every connection in every network namespace, with the error
  destroy-multicast   (no privilege; the default otherwise) the sock_diag destroy multicast of this network
                      namespace, with states sampled every --interval ms: a path marked ~ may miss states,
                      and outcomes it cannot tell are 'unknown'

options:
  --port N            only connections with N as their local or remote port
  --pid N             only connections of process N (where the process was seen)
  --netns NAME|COOKIE only connections in this network namespace (a name in /run/netns, or its cookie)
  --state S...        only connections whose path went through one of these states
  --outcome O...      only these outcomes
  --source NAME       this source, or exit 1 with the reason it cannot run
  --interval MS       sampling interval of the destroy-multicast source (default 1000, at least 10)
  --count N           exit after N connections were printed
  --duration S        exit after S seconds
  --json              one JSON object per line, then a {"summary": ...} line
  -h, --help          this help

Text from other processes (command names) is printed with control characters escaped.
exit codes: 0 ok, 1 failed (e.g. --source bpf without the privilege), 2 usage error`;
  },
};

type Options = NonNullable<NonNullable<Parameters<typeof parseArgs>[0]>['options']>;

function parse<T extends Options>(command: 'demo' | 'ss' | 'trace', args: string[], options: T) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError((error as Error).message.replace(/\. To specify a positional argument.*$/s, ''), command);
  }
}

function print(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

/** `finwait: <message>`, the error's code in front unless the message says it already (`connect ENETUNREACH ...`). */
function errorLine(error: unknown): string {
  const e = error as NodeJS.ErrnoException | undefined;
  const message = e?.message ?? String(error);
  const code = e?.code && !message.split(/[^\w]+/).includes(e.code) ? `${e.code}: ` : '';
  return `finwait: ${code}${visibleLines(message)}\n`;
}

/** This package's version, from its package.json. */
function version(): string {
  return (JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string }).version;
}

const SVG_PROBLEMS: Record<string, (dir: string) => string> = {
  ENOENT: (dir) => `there is no directory ${dir}`,
  ENOTDIR: (dir) => `${dir} is not a directory`,
  EACCES: (dir) => `no permission to write in ${dir}`,
  EROFS: (dir) => `${dir} is on a read-only file system`,
};

/** Why `file` cannot be written (`[code, reason]`): a missing or read-only directory, a directory by that name; or `undefined`. */
function svgFileProblem(file: string): [string, string] | undefined {
  const dir = path.dirname(path.resolve(file));
  try {
    if (fs.statSync(file, { throwIfNoEntry: false })?.isDirectory()) return ['EISDIR', 'it is a directory'];
    // Node 22 and later answer a path through a file (ENOTDIR) with undefined above, as for a missing one.
    if (!fs.statSync(dir).isDirectory()) return ['ENOTDIR', SVG_PROBLEMS.ENOTDIR!(dir)];
    fs.accessSync(dir, fs.constants.W_OK);
    return undefined;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? 'EIO';
    return [code, SVG_PROBLEMS[code]?.(dir) ?? (error as Error).message];
  }
}

/** Fails before the scenario runs when `file` cannot be written. */
function checkSvgFile(file: string): void {
  const problem = svgFileProblem(file);
  if (problem) throw Object.assign(new Error(`--svg ${file}: cannot write it: ${problem[1]} (${problem[0]})`), { code: problem[0] });
}

/** Writes the SVG; an error names the file once, with the system's reason. */
function writeSvg(file: string, svg: string): void {
  try {
    fs.writeFileSync(file, svg);
  } catch (error) {
    const e = error as NodeJS.ErrnoException;
    throw Object.assign(new Error(`--svg ${file}: cannot write it: ${e.message}`), { code: e.code });
  }
}

/** Whether the lab can run, or why not (`--loopback` counts as a reason). */
function labPath(loopback: boolean): { ok: true } | { ok: false; reason: string } {
  if (loopback) return { ok: false, reason: '--loopback was given' };
  return (require('../testing/lab') as typeof import('../testing/lab')).labAvailable();
}

async function demo(args: string[]): Promise<number> {
  const { values, positionals } = parse('demo', args, {
    loopback: { type: 'boolean' },
    json: { type: 'boolean' },
    svg: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    print(HELP.demo);
    return EXIT.ok;
  }
  if (positionals.length > 1) throw new UsageError(`one scenario at a time, got ${positionals.join(' ')}`, 'demo');
  const name = positionals[0] ?? 'normal';
  const { SCENARIOS, scenario: findScenario } = scenarios();
  const chosen = findScenario(name);
  if (!chosen) throw new UsageError(`unknown scenario '${name}' (scenarios: ${SCENARIOS.map((s) => s.name).join(', ')})`, 'demo');
  if (values.svg === '') throw new UsageError('--svg needs a file name', 'demo');
  if (values.svg) checkSvgFile(values.svg as string);
  let lab = labPath(values.loopback === true);
  let diagram: Diagram | undefined;
  let labFailed: string | undefined;
  if (lab.ok) {
    try {
      diagram = await chosen.lab();
    } catch (error) {
      // labAvailable() is a cheap check; making the namespaces can still be refused (a container).
      if ((error as NodeJS.ErrnoException).code !== 'ERR_FINWAIT_LAB_UNAVAILABLE') throw error;
      labFailed = (error as Error).message;
      lab = { ok: false, reason: labFailed };
    }
  }
  if (!diagram && !chosen.loopback) {
    const needs = chosen.needs ?? 'it has no loopback version';
    const why = lab.ok ? '' : lab.reason;
    const status = values.loopback ? 'was not used: --loopback was given' : `is not available here: ${visible(why)}`;
    process.stderr.write(
      `finwait demo ${chosen.name}: needs the lab: ${needs}.\n` +
        `The lab (two network namespaces joined by a userspace wire; root or a user namespace) ${status}. ` +
        'A drawing without it would be made up, so none is drawn.\n',
    );
    if (values.json) print(jsonText({ scenario: chosen.name, title: chosen.title, shown: null, needs: 'lab', reason: needs, unavailable: why }));
    return EXIT.needsLab;
  }
  if (!diagram) {
    try {
      diagram = await chosen.loopback!();
    } catch (error) {
      if (labFailed) process.stderr.write(`finwait demo ${chosen.name}: lab: not used: ${visibleLines(labFailed)}\n`);
      throw error;
    }
    // Said when the lab looked available but could not be made; --loopback and an unprivileged user are the ordinary cases.
    if (labFailed) diagram = { ...diagram, notes: [...diagram.notes, `lab: not used: ${visible(labFailed)}`] };
  }
  const { diagramJson } = require('./diagram') as typeof import('./diagram');
  const { renderLadder } = require('./ladder') as typeof import('./ladder');
  const { renderSvg } = require('./svg') as typeof import('./svg');
  if (values.svg) writeSvg(values.svg as string, renderSvg(diagram));
  if (values.json) print(jsonText(diagramJson(diagram)));
  else print(renderLadder(diagram, styleFor(process.stdout)));
  if (values.svg && !values.json) process.stderr.write(`svg: written to ${visible(values.svg as string)}\n`);
  return EXIT.ok;
}

/** `'fin-wait-2'`, `'FIN_WAIT_2'`, `'time-wait'` → the kernel's names. */
function stateArg(text: string, command: 'ss' | 'trace' = 'ss'): TcpState {
  const name = text.trim().toUpperCase().replace(/-/g, '_').replace(/^FIN_WAIT_([12])$/, 'FIN_WAIT$1');
  if (!isTcpState(name)) throw new UsageError(`unknown state '${visible(text)}'`, command);
  return name;
}

function intArg(flag: string, text: string, max: number, command: 'ss' | 'trace' = 'ss'): number {
  if (!/^\d+$/.test(text) || Number(text) > max) throw new UsageError(`${flag} needs an integer 0-${max}, got '${visible(text)}'`, command);
  return Number(text);
}

/** The values of a repeatable flag, also comma-separated; an empty one is a mistake. */
function listArg(flag: string, texts: string[] | undefined, command: 'ss' | 'trace', what = 'names'): string[] {
  const names = (texts ?? []).flatMap((s) => s.split(','));
  // An empty name (`--state ''`, `--state a,,b`) is a mistake, not "every state".
  if (names.some((n) => n.trim() === '')) throw new UsageError(`${flag} needs ${what}, got '${visible((texts ?? []).join(' '))}'`, command);
  return names.map((n) => n.trim());
}

async function trace(args: string[]): Promise<number> {
  const { values, positionals } = parse('trace', args, {
    port: { type: 'string' },
    pid: { type: 'string' },
    netns: { type: 'string' },
    state: { type: 'string', multiple: true },
    outcome: { type: 'string', multiple: true },
    source: { type: 'string' },
    interval: { type: 'string' },
    count: { type: 'string' },
    duration: { type: 'string' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    print(HELP.trace);
    return EXIT.ok;
  }
  if (positionals.length > 0) throw new UsageError(`unexpected argument '${visible(positionals[0]!)}'`, 'trace');
  const { traceConnections } = require('../trace/trace') as typeof import('../trace/trace');
  const { homeNetns, NamespaceIndex } = require('../trace/netns') as typeof import('../trace/netns');
  const filter: TraceFilter = {};
  if (values.port !== undefined) filter.port = intArg('--port', values.port as string, 65535, 'trace');
  if (values.pid !== undefined) filter.pid = intArg('--pid', values.pid as string, 2 ** 22, 'trace');
  const states = listArg('--state', values.state as string[] | undefined, 'trace').map((s) => stateArg(s, 'trace'));
  if (states.length > 0) filter.states = new Set(states);
  const outcomes = listArg('--outcome', values.outcome as string[] | undefined, 'trace');
  const known: readonly string[] = traceOutcomes();
  for (const o of outcomes) if (!known.includes(o)) throw new UsageError(`unknown outcome '${visible(o)}' (one of ${known.join(', ')})`, 'trace');
  if (outcomes.length > 0) filter.outcomes = new Set(outcomes as TraceOutcome[]);
  const source = values.source as string | undefined;
  if (source !== undefined && source !== 'bpf' && source !== 'destroy-multicast') throw new UsageError(`--source is bpf or destroy-multicast, got '${visible(source)}'`, 'trace');
  const interval = values.interval !== undefined ? intArg('--interval', values.interval as string, 2 ** 31 - 1, 'trace') : undefined;
  if (interval !== undefined && interval < 10) throw new UsageError(`--interval needs at least 10 ms, got ${interval}`, 'trace');
  const count = values.count !== undefined ? intArg('--count', values.count as string, 2 ** 31, 'trace') : undefined;
  const seconds = values.duration !== undefined ? intArg('--duration', values.duration as string, 2 ** 31 / 1000, 'trace') : undefined;
  const home = homeNetns();
  if (values.netns !== undefined) {
    const text = values.netns as string;
    const cookie = /^[0-9a-f]{16}$/i.test(text) ? text.toLowerCase() : new NamespaceIndex().cookieOfName(text);
    if (cookie === undefined) throw new UsageError(`no network namespace named '${visible(text)}' in /run/netns (give its name or its 16-hex-digit cookie)`, 'trace');
    filter.netns = cookie;
  }
  const json = values.json === true;
  const style = styleFor(process.stdout);
  const { jsonEnd, jsonSummary, matches, renderEnd, renderSummary, TraceSummary } = traceText();
  const summary = new TraceSummary();
  const started = performance.now();
  return new Promise<number>((resolve, reject) => {
    let printed = 0;
    let done = false;
    let t: ConnectionTrace | undefined;
    let timer: NodeJS.Timeout | undefined;
    const finish = (): void => {
      if (done) return;
      done = true;
      process.off('SIGINT', finish);
      process.off('SIGTERM', finish);
      if (timer !== undefined) clearTimeout(timer);
      t?.close();
      const extra = { source: t?.source ?? '?', lost: t?.lost ?? 0, seconds: (performance.now() - started) / 1000 };
      process.stdout.write(`${json ? jsonSummary(summary, extra) : renderSummary(summary, extra)}\n`);
      resolve(EXIT.ok);
    };
    try {
      t = traceConnections(
        (end) => {
          if (done || !matches(end, filter, home)) return;
          summary.add(end);
          const at = new Date();
          process.stdout.write(`${json ? jsonEnd(end, at) : renderEnd(end, at, style, home)}\n`);
          if (count !== undefined && ++printed >= count) finish();
        },
        { ...(source !== undefined ? { source: source as 'bpf' | 'destroy-multicast' } : {}), ...(interval !== undefined ? { interval } : {}) },
      );
      if (t.source !== 'bpf' && filter.netns !== undefined && filter.netns !== home) {
        // The destroy multicast is this namespace's: it would print nothing, as if nothing ended there.
        t.close();
        const e = new Error(
          `--netns ${visible(values.netns as string)}: the sock_diag destroy multicast shows only this network namespace${t.reason !== undefined ? ` (BPF is not available: ${visible(t.reason)})` : ''}; trace with BPF (CAP_BPF and CAP_PERFMON, or root), or run finwait trace inside that namespace (ip netns exec NAME finwait trace)`,
        );
        throw Object.assign(e, { code: 'ENOTSUP' });
      }
    } catch (error) {
      reject(error);
      return;
    }
    const how =
      t.source === 'bpf'
        ? 'every transition of every connection on this host (BPF)'
        : `the sock_diag destroy multicast of this network namespace, states sampled every ${interval ?? 1000} ms`;
    process.stderr.write(`finwait trace: ${how}${t.reason !== undefined ? `; BPF is not available: ${visible(t.reason)}` : ''}; Ctrl-C ends it\n`);
    process.once('SIGINT', finish);
    process.once('SIGTERM', finish);
    if (seconds !== undefined) timer = setTimeout(finish, seconds * 1000);
    if (count === 0) finish();
  });
}

async function ss(args: string[]): Promise<number> {
  const { values, positionals } = parse('ss', args, {
    port: { type: 'string' },
    state: { type: 'string', multiple: true },
    'time-wait-pile': { type: 'string' },
    summary: { type: 'boolean' },
    watch: { type: 'boolean' },
    json: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  });
  if (values.help) {
    print(HELP.ss);
    return EXIT.ok;
  }
  const stateTexts = (values.state as string[] | undefined) ?? [];
  if (positionals.length > 0 && stateTexts.length === 0) throw new UsageError(`unexpected argument '${positionals[0]}'`, 'ss');
  const states = listArg('--state', [...stateTexts, ...positionals], 'ss', 'state names').map((n) => stateArg(n));
  const filter: SocketFilter = {};
  if (states.length > 0) filter.states = [...new Set(states)];
  if (values.port !== undefined) filter.port = intArg('--port', values.port as string, 65535);
  const pile = values['time-wait-pile'] !== undefined ? intArg('--time-wait-pile', values['time-wait-pile'] as string, 2 ** 31) : undefined;
  if (values.watch && values.json) throw new UsageError('--watch and --json do not go together (for scripts, run --json repeatedly)', 'ss');
  if (values.watch && !process.stdout.isTTY) throw new UsageError('--watch needs a terminal: stdout is not a TTY (use --json for scripts)', 'ss');
  const summary = values.summary === true;
  if (values.watch) return watchSs(filter, pile, summary);
  const report = collect(filter, pile);
  // A piece at a time, waiting for a slow reader (a pipe): Node would queue the rest in memory.
  const write = async (piece: string | Buffer): Promise<void> => {
    if (!process.stdout.write(piece)) await once(process.stdout, 'drain');
  };
  if (values.json) {
    for (const piece of ssJsonPieces(report, { summary })) await write(piece);
    await write('\n');
  } else {
    // Rows come as bytes (see ssChunks()); each piece ends without its newline.
    for (const piece of ssChunks(report, styleFor(process.stdout), Infinity, { summary })) {
      if (typeof piece === 'string') await write(`${piece}\n`);
      else {
        await write(piece);
        await write('\n');
      }
    }
  }
  return EXIT.ok;
}

/** Redraws the report every second in the alternate screen until q or Ctrl-C. */
function watchSs(filter: SocketFilter, pile: number | undefined, summary: boolean): Promise<number> {
  const out = process.stdout;
  const style = styleFor(out);
  const draw = (): void => {
    // The last 3 lines: a blank, the footer, and the line its newline moves to.
    const height = out.rows ? Math.max(1, out.rows - 3) : undefined;
    const report = renderSs(collect(filter, pile), style, out.columns ?? Infinity, { summary, ...(height ? { height } : {}) });
    const footer = style.dim(`refreshing every 1 s at ${new Date().toLocaleTimeString()}; q or Ctrl-C quits`);
    out.write(`\x1b[H\x1b[2J${report}\n\n${footer}\n`);
  };
  return new Promise((resolve) => {
    const stdin = process.stdin;
    let timer: NodeJS.Timeout | undefined;
    /** Leaves the alternate screen, then says why if a read failed (after, so that it stays visible). */
    const stop = (error?: unknown): void => {
      clearInterval(timer);
      process.off('SIGINT', onSigint);
      stdin.off('data', onKey);
      if (stdin.isTTY) stdin.setRawMode(false);
      stdin.pause();
      out.write('\x1b[?25h\x1b[?1049l');
      if (error === undefined) return resolve(EXIT.ok);
      process.stderr.write(errorLine(error));
      resolve(EXIT.failed);
    };
    const onSigint = (): void => stop();
    const onKey = (key: Buffer): void => {
      const k = key.toString();
      if (k === 'q' || k === 'Q' || k === '\x03') stop();
    };
    const redraw = (): void => {
      try {
        draw();
      } catch (error) {
        stop(error);
      }
    };
    out.write('\x1b[?1049h\x1b[?25l');
    timer = setInterval(redraw, 1000);
    process.on('SIGINT', onSigint);
    if (stdin.isTTY) stdin.setRawMode(true);
    stdin.on('data', onKey);
    stdin.resume();
    redraw();
  });
}

/** Runs the command line `argv` (without node and the script); resolves with the exit code. */
export async function main(argv: string[]): Promise<number> {
  try {
    const [command, ...rest] = argv;
    if (command === '-h' || command === '--help' || command === 'help') {
      const topic = rest[0] === 'demo' || rest[0] === 'ss' || rest[0] === 'trace' ? rest[0] : 'main';
      print(HELP[topic]);
      return EXIT.ok;
    }
    if (command === '-V' || command === '--version') {
      if (rest.length > 0) throw new UsageError(`${command} takes no arguments, got '${rest.join(' ')}'`);
      print(version());
      return EXIT.ok;
    }
    if (command === 'demo') return await demo(rest);
    if (command === 'ss') return await ss(rest);
    if (command === 'trace') return await trace(rest);
    throw new UsageError(command === undefined ? 'a command is needed' : `unknown command '${command}'`);
  } catch (error) {
    if (error instanceof UsageError) {
      const more = error.command === 'main' ? 'finwait --help' : `finwait ${error.command} --help`;
      process.stderr.write(`finwait: ${visibleLines(error.message)}\n${USAGE[error.command]}\nsee '${more}'\n`);
      return EXIT.usage;
    }
    process.stderr.write(errorLine(error));
    return EXIT.failed;
  }
}

if (require.main === module) {
  // `finwait ss | head`: a reader that went away is not an error.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(process.exitCode ?? EXIT.ok);
    throw error;
  });
  void main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}
