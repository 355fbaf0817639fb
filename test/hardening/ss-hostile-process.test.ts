/**
 * `finwait ss` run by one user on sockets held by a process that chose its own command line and
 * command name: a 1.8 MB command line holding 600 sockets, and one whose command line and name
 * carry terminal escapes (title change, screen clear, OSC 52 clipboard write, C1 CSI, bidi
 * override, zero-width space). Both processes are real, and so are their sockets; each test waits
 * for the kernel to show them before running the CLI.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { sockets } from '../../src/index';
import { COMMAND_MAX_BYTES, TRUNCATED_MARK } from '../../src/processes';
import { waitFor } from '../helpers';
import { finwait } from '../cli/run';

/**
 * A process holding `PAIRS` loopback connections (both ends) on one listener; with `HALF`, each
 * client has sent its FIN, so the accepted ends sit in CLOSE_WAIT and the clients in FIN_WAIT2.
 * `COMM`, when set, is written to /proc/self/comm. Prints the port, then lives until its stdin ends.
 */
/**
 * A process's comm as /proc shows it (what `ss -p` prints): 'node' up to Node 22; Node 24 and
 * later name the main thread 'MainThread', and /proc/<pid>/comm is the main thread's name.
 */
function commOf(pid: number): string {
  return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
}

const HOLDER = `
const net = require('node:net');
if (process.env.COMM) require('node:fs').writeFileSync('/proc/self/comm', process.env.COMM);
const pairs = Number(process.env.PAIRS);
const accepted = [];
const server = net.createServer({ allowHalfOpen: true }, (s) => accepted.push(s.pause()));
server.listen(0, '127.0.0.1', () => {
  const { port } = server.address();
  let connected = 0;
  for (let i = 0; i < pairs; i++) {
    const c = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    c.pause();
    c.on('connect', () => {
      if (process.env.HALF) c.end();
      if (++connected === pairs) process.stdout.write(port + '\\n');
    });
  }
});
process.stdin.on('end', () => process.exit(0)).resume();
`;

interface Holder {
  child: ChildProcess;
  port: number;
  /** The holder's script: its command line is `node <script> <args>`. */
  script: string;
}

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-ss-holder-'));
  fs.writeFileSync(path.join(dir, 'holder.cjs'), HOLDER);
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

async function startHolder(args: string[], env: Record<string, string>): Promise<Holder> {
  const script = path.join(dir, 'holder.cjs');
  const child = spawn(process.execPath, [script, ...args], {
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const [line] = (await Promise.race([once(child.stdout!, 'data'), once(child, 'exit').then(() => [Buffer.from('')])])) as [Buffer];
  const port = Number(line.toString().trim());
  if (!port) throw new Error('the holder process did not start');
  return { child, port, script };
}

async function stopHolder(holder: Holder | undefined): Promise<void> {
  if (!holder || holder.child.exitCode !== null) return;
  holder.child.stdin!.end();
  const exited = once(holder.child, 'exit');
  const timer = setTimeout(() => holder.child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

/** Any character a terminal would act on or hide: C0 but newline, DEL, C1, bidi controls, zero-width characters. */
const RAW_CONTROL = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/;

describe('finwait ss: a process with a 1.8 MB command line holding 600 sockets', () => {
  // MAX_ARG_STRLEN: one argument is at most 128 KiB with its NUL; 14 of them stay under ARG_MAX (2 MB).
  const ARGS = Array.from({ length: 14 }, (_, i) => String.fromCharCode(97 + i).repeat(128 * 1024 - 1));
  const PAIRS = 300;
  let holder: Holder | undefined;

  beforeAll(async () => {
    holder = await startHolder(ARGS, { PAIRS: String(PAIRS) });
    const port = holder.port;
    // Counted without TIME_WAIT: other tests' closed connections may still name this port (a
    // listener can get a port their TIME_WAIT sockets hold); the holder's own sockets are live.
    await waitFor(`${2 * PAIRS + 1} live sockets on port ${port}`, () =>
      sockets({ port, states: ['LISTEN', 'ESTABLISHED'] }).length === 2 * PAIRS + 1 ? true : undefined,
    );
  });

  afterAll(() => stopHolder(holder));

  // Before: every row and flag copied the whole command line; 'Invalid string length' after seconds and GBs.
  it('the table: each row names the process by pid and comm with a command line cut at the bound and marked', async () => {
    const { code, stdout, stderr } = await finwait(['ss', '--port', String(holder!.port)], { NO_COLOR: '1', NODE_OPTIONS: '--max-old-space-size=64' });
    expect(stderr).toBe('');
    expect(code).toBe(0);
    const rows = stdout.split('\n').filter((line) => line.includes(` pid ${holder!.child.pid} `));
    expect(rows).toHaveLength(2 * PAIRS + 1);
    for (const row of rows) {
      expect(row).toContain(`pid ${holder!.child.pid} ${commOf(holder!.child.pid!)} (${process.execPath} ${holder!.script} aaaa`);
      expect(row.endsWith(`${TRUNCATED_MARK})`)).toBe(true);
      // Columns are padded to the widest cell of the table, which other tests' sockets on the same
      // port (a TIME_WAIT and its timer) can widen: the padding is not counted, and no cell is
      // padded to an uncut command line's width either.
      expect(row.replace(/ {2,}/g, ' ').length).toBeLessThan(COMMAND_MAX_BYTES + 120);
      expect(row).not.toMatch(/ {64}/);
    }
    expect(stdout.replace(/ {2,}/g, ' ').length).toBeLessThan((2 * PAIRS + 20) * (COMMAND_MAX_BYTES + 120));
  });

  it('--json: the command line cut at the bound, flagged as truncated, and the bound said in the output', async () => {
    const { code, stdout } = await finwait(['ss', '--port', String(holder!.port), '--json'], { NODE_OPTIONS: '--max-old-space-size=64' });
    expect(code).toBe(0);
    const json = JSON.parse(stdout);
    expect(json.processes).toMatchObject({ commandMaxBytes: COMMAND_MAX_BYTES, commandTruncatedMark: TRUNCATED_MARK });
    const held = json.sockets.filter((s: { process: unknown }) => s.process !== null);
    expect(held).toHaveLength(2 * PAIRS + 1);
    for (const s of held) {
      expect(s.process).toMatchObject({ pid: holder!.child.pid, comm: commOf(holder!.child.pid!), commandTruncated: true });
      expect(s.process.command.startsWith(`${process.execPath} ${holder!.script} aaaa`)).toBe(true);
      expect(s.process.command.endsWith(TRUNCATED_MARK)).toBe(true);
      expect(Buffer.byteLength(s.process.command)).toBeLessThanOrEqual(COMMAND_MAX_BYTES + Buffer.byteLength(TRUNCATED_MARK));
    }
    expect(stdout.length).toBeLessThan(held.length * 3 * (COMMAND_MAX_BYTES + 1500));
  });
});

describe('finwait ss: a process whose command line and name carry terminal escapes', () => {
  // What another user can put in front of root: set the title, clear the screen, write the
  // clipboard (OSC 52), colour through the 8-bit CSI, reverse text (RLO), hide text (zero-width space).
  const ARGS = ['\x1b]0;pwned\x07', '\x1b[2J\x1b[H', '\x1b]52;c;cHduZWQ=\x07', '\u009b31mred', '\u202eevil', 'zero\u200bwidth', 'del\x7f'];
  const COMM = '\x1b]0;T\x07\u009b2J';
  let holder: Holder | undefined;

  beforeAll(async () => {
    holder = await startHolder(ARGS, { PAIRS: '1', HALF: '1', COMM });
    const port = holder.port;
    await waitFor('the accepted end in CLOSE_WAIT and the client in FIN_WAIT2', () => {
      const states = sockets({ port }).map((s) => s.state);
      return states.includes('CLOSE_WAIT') && states.includes('FIN_WAIT2') ? true : undefined;
    });
  });

  afterAll(() => stopHolder(holder));

  it('the table and the flags show every control character escaped, none raw', async () => {
    const { code, stdout } = await finwait(['ss', '--port', String(holder!.port)], { NO_COLOR: '1' });
    expect(code).toBe(0);
    expect(stdout).not.toMatch(RAW_CONTROL);
    const pid = holder!.child.pid;
    const shown = String.raw`pid ${pid} \x1b]0;T\x07\x9b2J (${process.execPath} ${holder!.script} \x1b]0;pwned\x07`;
    expect(stdout).toContain(shown);
    for (const arg of [
      String.raw`\x1b]0;pwned\x07`,
      String.raw`\x1b[2J\x1b[H`,
      String.raw`\x1b]52;c;cHduZWQ=\x07`,
      String.raw`\x9b31mred`,
      String.raw`\u202eevil`,
      String.raw`zero\u200bwidth`,
      String.raw`del\x7f`,
    ]) {
      expect(stdout).toContain(arg);
    }
    expect(stdout).toMatch(new RegExp(String.raw`! CLOSE_WAIT .*: the peer closed and the application never did; held by pid ${pid} \\x1b\]0;T\\x07\\x9b2J \(`));
    expect(stdout).toMatch(new RegExp(String.raw`! FIN_WAIT2 with no timer .*held by pid ${pid} \\x1b`));
  });

  it('--summary: the flags escaped too', async () => {
    const { code, stdout } = await finwait(['ss', '--port', String(holder!.port), '--summary'], { NO_COLOR: '1' });
    expect(code).toBe(0);
    expect(stdout).not.toMatch(RAW_CONTROL);
    expect(stdout).toContain(String.raw`held by pid ${holder!.child.pid} \x1b]0;T\x07\x9b2J`);
  });

  it('--json: the strings as they are, and no character a terminal acts on outside a JSON escape', async () => {
    const { code, stdout } = await finwait(['ss', '--port', String(holder!.port), '--json']);
    expect(code).toBe(0);
    // JSON.stringify leaves DEL, C1 (U+009B) and format characters raw; they are \u escapes here.
    expect(stdout).not.toMatch(RAW_CONTROL);
    expect(stdout).toContain('\\u009b');
    const json = JSON.parse(stdout);
    const held = json.sockets.find((s: { state: string }) => s.state === 'CLOSE_WAIT');
    expect(held.process).toMatchObject({ pid: holder!.child.pid, comm: COMM });
    expect(held.process.command).toBe([process.execPath, holder!.script, ...ARGS].join(' '));
    expect(json.flags.map((f: { message: string }) => f.message).join('\n')).toContain(COMM);
  });
});

describe('socketOwners() on a /proc whose files are as big as a process makes them', () => {
  it('reads at most COMMAND_MAX_BYTES of a command line and 64 bytes of a name, once per process, each process once per socket', async () => {
    const { socketOwners } = await import('../../src/processes');
    const proc = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-proc-'));
    try {
      // pid 10: a 10 MB command line and name, two fds on socket 7 (dup) and one on socket 8.
      fs.mkdirSync(path.join(proc, '10', 'fd'), { recursive: true });
      fs.writeFileSync(path.join(proc, '10', 'cmdline'), `server\0${'x'.repeat(10 * 1024 * 1024)}\0`);
      fs.writeFileSync(path.join(proc, '10', 'comm'), `${'n'.repeat(1024 * 1024)}\n`);
      for (const [fd, inode] of [[3, 7], [4, 7], [5, 8]]) fs.symlinkSync(`socket:[${inode}]`, path.join(proc, '10', 'fd', String(fd)));
      // pid 11: a multi-byte character across the bound, and socket 7 too.
      fs.mkdirSync(path.join(proc, '11', 'fd'), { recursive: true });
      fs.writeFileSync(path.join(proc, '11', 'cmdline'), `${'a'.repeat(COMMAND_MAX_BYTES - 1)}é\0`);
      fs.writeFileSync(path.join(proc, '11', 'comm'), 'worker\n');
      fs.symlinkSync('socket:[7]', path.join(proc, '11', 'fd', '3'));

      const found = socketOwners(undefined, proc);
      const [ten, eleven] = found.byInode.get(7)!;
      expect(found.byInode.get(7)).toHaveLength(2);
      expect(ten).toEqual({ pid: 10, comm: 'n'.repeat(64), command: `server ${'x'.repeat(COMMAND_MAX_BYTES - 7)}${TRUNCATED_MARK}`, commandTruncated: true });
      expect(found.byInode.get(8)).toHaveLength(1);
      expect(found.byInode.get(8)![0]).toBe(ten); // the same object: read once
      expect(eleven).toEqual({ pid: 11, comm: 'worker', command: `${'a'.repeat(COMMAND_MAX_BYTES - 1)}${TRUNCATED_MARK}`, commandTruncated: true });
    } finally {
      fs.rmSync(proc, { recursive: true, force: true });
    }
  });
});
