#!/usr/bin/env node
/**
 * The `finwait` command: `finwait demo [scenario]` runs a close on real loopback sockets and
 * draws it as an RFC 793 ladder; `finwait ss` lists this host's TCP sockets by close state and
 * flags the suspicious ones. Argument parsing, help, output and exit codes live here; the work is
 * in `scenarios.ts`, `ladder.ts`, `svg.ts` and `ss.ts`.
 */
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { isTcpState, type SocketFilter, type TcpState } from '../index';
import { diagramJson } from './diagram';
import { renderLadder } from './ladder';
import { SCENARIOS, scenario as findScenario } from './scenarios';
import { collect, DEFAULT_TIME_WAIT_PILE, renderSs, ssJson } from './ss';
import { styleFor } from './style';
import { renderSvg } from './svg';

/** The exit codes, as the README documents them. */
export const EXIT = {
  ok: 0,
  /** The scenario or the kernel call failed. */
  failed: 1,
  /** Unknown command, scenario or flag, or a bad value. */
  usage: 2,
  /** The scenario cannot be shown on loopback: it needs the lab. */
  needsLab: 3,
} as const;

class UsageError extends Error {
  constructor(
    message: string,
    readonly command: 'main' | 'demo' | 'ss' = 'main',
  ) {
    super(message);
  }
}

const USAGE = {
  main: 'usage: finwait <command> [options]   (commands: demo, ss; finwait <command> --help)',
  demo: 'usage: finwait demo [scenario] [--json] [--svg FILE]',
  ss: 'usage: finwait ss [--port N] [--state S...] [--time-wait-pile N] [--watch | --json]',
};

const HELP = {
  main: `finwait: see how TCP connections end, on this host's real kernel sockets

${USAGE.main}

commands:
  demo [scenario]   run a close on loopback, both ends watched, drawn as an RFC 793 ladder
  ss                this host's TCP sockets by close state, with owners and flags

options:
  -h, --help        this help; finwait <command> --help for a command's

exit codes: 0 ok, 1 failed, 2 usage error, 3 the scenario needs the lab`,
  demo: `finwait demo: a TCP close on real loopback sockets, drawn like RFC 793 figures 13 and 14:
TCP A's states down the left, TCP B's down the right, time going down.

${USAGE.demo}

scenarios (default: normal):
${SCENARIOS.map((s) => `  ${s.name.padEnd(18)}${s.title}${s.needs ? ' [needs the lab]' : ''}`).join('\n')}

options:
  --json            print the scenario, both histories, outcome and role per end, and notes as JSON
  --svg FILE        also write the ladder as an SVG file
  -h, --help        this help

Segments (<SEQ=..><ACK=..><CTL=..>) need the lab (two network namespaces and a userspace wire:
root or a user namespace); on loopback the ladder shows states only and says so.
exit codes: 0 ok, 1 the scenario failed, 2 usage error, 3 the scenario needs the lab`,
  ss: `finwait ss: this host's TCP sockets by close state (sock_diag, like ss -tan), with the process
holding each (from /proc/*/fd) and flags on CLOSE_WAIT, FIN_WAIT2 with no timer, and TIME_WAIT piles.

${USAGE.ss}

options:
  --port N              only sockets with N as their local or remote port
  --state S...          only these states (repeat the flag, list them, or comma-separate):
                        e.g. --state CLOSE_WAIT TIME_WAIT, --state fin-wait-2
  --time-wait-pile N    flag more than N TIME_WAIT sockets to one remote endpoint (default ${DEFAULT_TIME_WAIT_PILE})
  --watch               refresh every second like top (q or Ctrl-C quits); needs a terminal
  --json                machine-readable output
  -h, --help            this help

exit codes: 0 ok, 1 failed, 2 usage error`,
};

type Options = NonNullable<NonNullable<Parameters<typeof parseArgs>[0]>['options']>;

function parse<T extends Options>(command: 'demo' | 'ss', args: string[], options: T) {
  try {
    return parseArgs({ args, options, allowPositionals: true, strict: true });
  } catch (error) {
    throw new UsageError((error as Error).message.replace(/\. To specify a positional argument.*$/s, ''), command);
  }
}

function print(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

async function demo(args: string[]): Promise<number> {
  const { values, positionals } = parse('demo', args, { json: { type: 'boolean' }, svg: { type: 'string' }, help: { type: 'boolean', short: 'h' } });
  if (values.help) {
    print(HELP.demo);
    return EXIT.ok;
  }
  if (positionals.length > 1) throw new UsageError(`one scenario at a time, got ${positionals.join(' ')}`, 'demo');
  const name = positionals[0] ?? 'normal';
  const chosen = findScenario(name);
  if (!chosen) throw new UsageError(`unknown scenario '${name}' (scenarios: ${SCENARIOS.map((s) => s.name).join(', ')})`, 'demo');
  if (values.svg === '') throw new UsageError('--svg needs a file name', 'demo');
  if (chosen.needs || !chosen.run) {
    const reason = chosen.needs ?? 'not available here';
    process.stderr.write(
      `finwait demo ${name}: needs the lab: ${reason}.\n` +
        'The lab (two network namespaces joined by a userspace wire; root or a user namespace) is not in this build, ' +
        'and a drawing without it would be made up, so none is drawn.\n',
    );
    if (values.json) print(JSON.stringify({ scenario: name, title: chosen.title, shown: null, needs: 'lab', reason }, null, 2));
    return EXIT.needsLab;
  }
  const diagram = await chosen.run();
  if (values.svg) fs.writeFileSync(values.svg as string, renderSvg(diagram));
  if (values.json) print(JSON.stringify(diagramJson(diagram), null, 2));
  else print(renderLadder(diagram, styleFor(process.stdout)));
  if (values.svg && !values.json) process.stderr.write(`svg: written to ${values.svg as string}\n`);
  return EXIT.ok;
}

/** `'fin-wait-2'`, `'FIN_WAIT_2'`, `'time-wait'` → the kernel's names. */
function stateArg(text: string): TcpState {
  const name = text.trim().toUpperCase().replace(/-/g, '_').replace(/^FIN_WAIT_([12])$/, 'FIN_WAIT$1');
  if (!isTcpState(name)) throw new UsageError(`unknown state '${text}'`, 'ss');
  return name;
}

function intArg(flag: string, text: string, max: number): number {
  if (!/^\d+$/.test(text) || Number(text) > max) throw new UsageError(`${flag} needs an integer 0-${max}, got '${text}'`, 'ss');
  return Number(text);
}

async function ss(args: string[]): Promise<number> {
  const { values, positionals } = parse('ss', args, {
    port: { type: 'string' },
    state: { type: 'string', multiple: true },
    'time-wait-pile': { type: 'string' },
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
  const states = [...stateTexts, ...positionals].flatMap((s) => s.split(',')).filter(Boolean).map(stateArg);
  const filter: SocketFilter = {};
  if (states.length > 0) filter.states = [...new Set(states)];
  if (values.port !== undefined) filter.port = intArg('--port', values.port as string, 65535);
  const pile = values['time-wait-pile'] !== undefined ? intArg('--time-wait-pile', values['time-wait-pile'] as string, 2 ** 31) : undefined;
  if (values.watch && values.json) throw new UsageError('--watch and --json do not go together (for scripts, run --json repeatedly)', 'ss');
  if (values.watch && !process.stdout.isTTY) throw new UsageError('--watch needs a terminal: stdout is not a TTY (use --json for scripts)', 'ss');
  if (values.watch) return watchSs(filter, pile);
  const report = collect(filter, pile);
  print(values.json ? JSON.stringify(ssJson(report), null, 2) : renderSs(report, styleFor(process.stdout)));
  return EXIT.ok;
}

/** Redraws the report every second in the alternate screen until q or Ctrl-C. */
function watchSs(filter: SocketFilter, pile: number | undefined): Promise<number> {
  const out = process.stdout;
  const style = styleFor(out);
  const draw = (): void => {
    const report = renderSs(collect(filter, pile), style, out.columns ?? Infinity);
    const footer = style.dim(`refreshing every 1 s at ${new Date().toLocaleTimeString()}; q or Ctrl-C quits`);
    out.write(`\x1b[H\x1b[2J${report}\n\n${footer}\n`);
  };
  return new Promise((resolve) => {
    const stdin = process.stdin;
    const stop = (): void => {
      clearInterval(timer);
      process.off('SIGINT', stop);
      if (stdin.isTTY) stdin.setRawMode(false);
      stdin.pause();
      out.write('\x1b[?25h\x1b[?1049l');
      resolve(EXIT.ok);
    };
    out.write('\x1b[?1049h\x1b[?25l');
    const timer = setInterval(() => {
      try {
        draw();
      } catch (error) {
        stop();
        process.stderr.write(`finwait ss: ${(error as Error).message}\n`);
      }
    }, 1000);
    process.on('SIGINT', stop);
    if (stdin.isTTY) stdin.setRawMode(true);
    stdin.on('data', (key: Buffer) => {
      const k = key.toString();
      if (k === 'q' || k === 'Q' || k === '\x03') stop();
    });
    stdin.resume();
    draw();
  });
}

/** Runs the command line `argv` (without node and the script); resolves with the exit code. */
export async function main(argv: string[]): Promise<number> {
  try {
    const [command, ...rest] = argv;
    if (command === '-h' || command === '--help' || command === 'help') {
      const topic = rest[0] === 'demo' || rest[0] === 'ss' ? rest[0] : 'main';
      print(HELP[topic]);
      return EXIT.ok;
    }
    if (command === 'demo') return await demo(rest);
    if (command === 'ss') return await ss(rest);
    throw new UsageError(command === undefined ? 'a command is needed' : `unknown command '${command}'`);
  } catch (error) {
    if (error instanceof UsageError) {
      const more = error.command === 'main' ? 'finwait --help' : `finwait ${error.command} --help`;
      process.stderr.write(`finwait: ${error.message}\n${USAGE[error.command]}\nsee '${more}'\n`);
      return EXIT.usage;
    }
    const e = error as NodeJS.ErrnoException;
    process.stderr.write(`finwait: ${e.code ? `${e.code}: ` : ''}${e.message}\n`);
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
