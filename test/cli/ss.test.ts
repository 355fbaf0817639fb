/**
 * `finwait ss` against sockets this test holds: one in CLOSE_WAIT (a server that never ends after
 * the client's FIN) and one in TIME_WAIT, both gated on the states the kernel shows.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findSocket, sockets, tcpState } from '../../src/index';
import { pair, waitFor, type Pair } from '../helpers';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { BIN, finwait } from './run';

let closeWait: Pair;
let timeWait: Pair;
let timeWaitPort: number;

beforeAll(async () => {
  closeWait = await pair({ server: { allowHalfOpen: true } });
  closeWait.server.resume();
  closeWait.client.end();
  await waitFor('CLOSE_WAIT on the server', () => (tcpState(closeWait.server) === 'CLOSE_WAIT' ? true : undefined));

  timeWait = await pair();
  timeWait.server.resume();
  timeWait.client.resume();
  const tuple = {
    local: { address: timeWait.client.localAddress!, port: timeWait.client.localPort! },
    remote: { address: timeWait.client.remoteAddress!, port: timeWait.client.remotePort! },
  };
  timeWaitPort = tuple.local.port;
  timeWait.client.end();
  await waitFor('TIME_WAIT on the client', () => (findSocket(tuple)?.state === 'TIME_WAIT' ? true : undefined));
});

afterAll(async () => {
  await closeWait?.close();
  await timeWait?.close();
});

interface JsonSocket {
  state: string;
  local: { port: number };
  remote: { port: number };
  inode: number;
  flags: string[];
  process: { pid: number; command: string } | null;
  timer: { kind: string; expiresMs: number };
}

describe('finwait ss', () => {
  it('--json: the CLOSE_WAIT socket flagged with this process, the TIME_WAIT one with no process', async () => {
    const port = closeWait.listener.address() as { port: number };
    const { code, stdout, stderr } = await finwait(['ss', '--port', String(port.port), '--json']);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    const json = JSON.parse(stdout);
    const mine: JsonSocket = json.sockets.find((s: JsonSocket) => s.state === 'CLOSE_WAIT' && s.local.port === port.port);
    expect(mine).toBeDefined();
    expect(mine.process?.pid).toBe(process.pid);
    expect(mine.flags).toEqual(['close-wait']);
    expect(json.counts.CLOSE_WAIT).toBeGreaterThanOrEqual(1);
    expect(json.flags.find((f: { kind: string }) => f.kind === 'close-wait').message).toContain(`held by pid ${process.pid}`);
    expect(json.filter).toEqual({ port: port.port });
  });

  it('--state: TIME_WAIT and CLOSE_WAIT both listed, and flagged (a TIME_WAIT pile over --time-wait-pile)', async () => {
    const { code, stdout } = await finwait(['ss', '--state', 'CLOSE_WAIT', 'time-wait', '--time-wait-pile', '0', '--json']);
    expect(code).toBe(0);
    const json = JSON.parse(stdout);
    expect(Object.keys(json.counts).sort()).toEqual(['CLOSE_WAIT', 'TIME_WAIT']);
    const tw: JsonSocket = json.sockets.find((s: JsonSocket) => s.state === 'TIME_WAIT' && s.local.port === timeWaitPort);
    expect(tw).toMatchObject({ inode: 0, process: null, timer: { kind: 'timewait' } });
    expect(tw.flags).toEqual(['time-wait-pile']);
    const cw: JsonSocket = json.sockets.find((s: JsonSocket) => s.state === 'CLOSE_WAIT' && s.remote.port === closeWait.client.localPort);
    expect(cw.process?.pid).toBe(process.pid);
  });

  it('as text: counts, the rows, the flags', async () => {
    const port = (closeWait.listener.address() as { port: number }).port;
    const { code, stdout } = await finwait(['ss', '--port', String(port)], { NO_COLOR: '' });
    expect(code).toBe(0);
    expect(stdout).toMatch(new RegExp(`^TCP sockets in this network namespace \\(port ${port}\\): \\d+$`, 'm'));
    expect(stdout).toMatch(/^ {2}.*CLOSE_WAIT 1/m);
    // The process as `ss -p` names it (pid, comm), then its command line.
    const comm = fs.readFileSync('/proc/self/comm', 'utf8').trim();
    expect(stdout).toMatch(new RegExp(`^! +CLOSE_WAIT +127\\.0\\.0\\.1:${port} .* pid ${process.pid} ${comm.replace(/[^\w]/g, '\\$&')} \\(`, 'm'));
    expect(stdout).toMatch(new RegExp(`! CLOSE_WAIT 127\\.0\\.0\\.1:${port} <- .*: the peer closed and the application never did; held by pid ${process.pid}`));
    expect(stdout).not.toMatch(/\x1b\[/);

    const tw = await finwait(['ss', '--port', String(timeWaitPort), '--state', 'TIME_WAIT']);
    expect(tw.stdout).toMatch(new RegExp(`TIME_WAIT +127\\.0\\.0\\.1:${timeWaitPort} .*timewait \\d+\\.\\d s .*- \\(TIME_WAIT: no process\\)`));
  });
});

/** Runs `finwait ss --watch` on a pseudo-terminal (python3's pty), waits for two redraws, presses `key`. */
const PTY_DRIVER = `
import os, pty, select, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:-1])
out, key, sent, deadline = b'', sys.argv[-1].encode(), False, time.time() + 10
while time.time() < deadline:
    if not sent and out.count(b'\\x1b[H\\x1b[2J') >= 2:
        os.write(fd, key)
        sent = True
    r, _, _ = select.select([fd], [], [], 0.05)
    if r:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        out += data
_, status = os.waitpid(pid, 0)
after = out.rsplit(b'\\x1b[?1049l', 1)[-1].decode(errors='replace').strip()
sys.stdout.write('%d %d %d %s' % (os.waitstatus_to_exitcode(status), out.count(b'\\x1b[H\\x1b[2J'), out.endswith(b'\\x1b[?25h\\x1b[?1049l'), after))
`;

/** Whether python3 with its pty module is here to drive --watch (asked once). */
let python: boolean | undefined;
function hasPython(): boolean {
  if (python === undefined) {
    try {
      execFileSync('python3', ['-c', 'import pty'], { stdio: 'ignore' });
      python = true;
    } catch {
      python = false;
    }
  }
  return python;
}

describe('finwait ss --watch', () => {

  it.skipIf(!hasPython()).each([
    ['q', 'q'],
    ['Ctrl-C', '\x03'],
  ])('redraws in place every second on a terminal and quits on %s', (_, key) => {
    const out = execFileSync('python3', ['-c', PTY_DRIVER, process.execPath, BIN, 'ss', '--watch', '--port', '1', key], { encoding: 'utf8', timeout: 15_000 });
    const [code, redraws, restored] = out.split(' ').map(Number);
    expect(code).toBe(0);
    expect(redraws).toBeGreaterThanOrEqual(2);
    expect(restored).toBe(1);
  });

  it.skipIf(!hasPython())('a kernel call that fails on a redraw: the screen is restored, the error shown after it, exit 1', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-ss-fail-'));
    const preload = path.join(dir, 'fail.cjs');
    // sockets() works for the first draw, then fails (EMFILE) on the next.
    try {
      fs.writeFileSync(
        preload,
        `const diag = require(${JSON.stringify(path.join(path.dirname(BIN), '..', 'diag.js'))});
         const real = diag.sockets;
         let calls = 0;
         diag.sockets = (...args) => {
           if (++calls > 1) throw Object.assign(new Error('socket EMFILE'), { code: 'EMFILE' });
           return real(...args);
         };`,
      );
      const out = execFileSync('python3', ['-c', PTY_DRIVER, process.execPath, '--require', preload, BIN, 'ss', '--watch', '--port', '1', 'q'], {
        encoding: 'utf8',
        timeout: 15_000,
      });
      const [code, redraws, , ...after] = out.split(' ');
      expect(Number(code)).toBe(1);
      expect(Number(redraws)).toBe(1);
      expect(after.join(' ')).toBe('finwait: socket EMFILE'); // the code once: the message has it
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('finwait ss: flags first, --summary, and the flags in --watch', () => {
  const PAIRS = 30;
  let listener: net.Server;
  const ends: net.Socket[] = [];
  let port: number;

  beforeAll(async () => {
    // 30 connections whose clients sent their FIN: 30 CLOSE_WAIT and 30 FIN_WAIT2 held by this process.
    // A port nothing else on this host has now: the counts below are exact, and a listener can get a
    // port that earlier connections' TIME_WAIT sockets still name (other tests leave thousands).
    for (let attempt = 0; ; attempt++) {
      listener = net.createServer({ allowHalfOpen: true }, (s) => ends.push(s.pause()));
      listener.listen(0, '127.0.0.1');
      await once(listener, 'listening');
      port = (listener.address() as net.AddressInfo).port;
      if (sockets({ port }).length === 1 || attempt === 50) break;
      await new Promise((resolve) => listener.close(resolve));
    }
    expect(sockets({ port })).toHaveLength(1);
    for (let i = 0; i < PAIRS; i++) {
      const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
      ends.push(client.pause());
      await once(client, 'connect');
      client.end();
    }
    await waitFor(`${PAIRS} CLOSE_WAIT and ${PAIRS} FIN_WAIT2 on port ${port}`, () => {
      const states = sockets({ port }).map((s) => s.state);
      return states.filter((s) => s === 'CLOSE_WAIT').length === PAIRS && states.filter((s) => s === 'FIN_WAIT2').length === PAIRS ? true : undefined;
    });
  });

  afterAll(async () => {
    for (const s of ends) s.destroy();
    await new Promise((resolve) => listener?.close(resolve));
  });

  it("the flags come before the rows, one per process and kind", async () => {
    const { code, stdout } = await finwait(['ss', '--port', String(port)], { NO_COLOR: '1' });
    expect(code).toBe(0);
    const flags = stdout.indexOf('flags (2):');
    expect(flags).toBeGreaterThan(0);
    expect(flags).toBeLessThan(stdout.indexOf('   State  '));
    expect(stdout).toMatch(new RegExp(`! CLOSE_WAIT on ${PAIRS} sockets \\(127\\.0\\.0\\.1:${port} <- 127\\.0\\.0\\.1:\\d+ and ${PAIRS - 1} more\\): the peer closed and the application never did; held by pid ${process.pid} `));
    expect(stdout).toMatch(new RegExp(`! FIN_WAIT2 with no timer on ${PAIRS} sockets .*held by pid ${process.pid} `));
    expect(stdout.split('\n').filter((line) => /^! {2}(CLOSE_WAIT|FIN_WAIT2) /.test(line))).toHaveLength(2 * PAIRS);
  });

  it('--summary: the counts and the flags, no rows', async () => {
    const { code, stdout } = await finwait(['ss', '--port', String(port), '--summary'], { NO_COLOR: '1' });
    expect(code).toBe(0);
    const lines = stdout.trimEnd().split('\n');
    expect(lines[0]).toBe(`TCP sockets in this network namespace (port ${port}): ${2 * PAIRS + 1}`);
    expect(lines[1]).toBe(`  FIN_WAIT2 ${PAIRS}   CLOSE_WAIT ${PAIRS}   LISTEN 1`);
    expect(stdout).toContain('flags (2):');
    expect(stdout).toContain(`! CLOSE_WAIT on ${PAIRS} sockets`);
    expect(stdout).not.toMatch(/State +Local +Remote/);
    expect(stdout).not.toMatch(/^! {2}CLOSE_WAIT/m);
    expect(lines.length).toBeLessThan(10);
  });

  it('--summary --json: no sockets, each flag with its count', async () => {
    const { code, stdout } = await finwait(['ss', '--port', String(port), '--summary', '--json']);
    expect(code).toBe(0);
    const json = JSON.parse(stdout);
    expect(json).not.toHaveProperty('sockets');
    expect(json.total).toBe(2 * PAIRS + 1);
    expect(json.counts).toEqual({ FIN_WAIT2: PAIRS, CLOSE_WAIT: PAIRS, LISTEN: 1 });
    expect(json.flags).toEqual([
      { kind: 'close-wait', message: expect.stringContaining(`held by pid ${process.pid}`), count: PAIRS },
      { kind: 'fin-wait2-no-timer', message: expect.stringContaining(`held by pid ${process.pid}`), count: PAIRS },
    ]);
  });

  /** `finwait ss --watch` on a 16 x 160 pseudo-terminal: the frames it drew (between screen clears) and its exit code. */
  const SIZED_PTY = `
import fcntl, json, os, pty, select, struct, sys, termios, time
pid, fd = pty.fork()
if pid == 0:
    fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack('HHHH', 16, 160, 0, 0))
    os.execv(sys.argv[1], sys.argv[1:])
out, sent, deadline = b'', False, time.time() + 10
while time.time() < deadline:
    if not sent and out.count(b'\\x1b[H\\x1b[2J') >= 3:
        os.write(fd, b'q')
        sent = True
    r, _, _ = select.select([fd], [], [], 0.05)
    if r:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        out += data
_, status = os.waitpid(pid, 0)
frames = [f.decode(errors='replace') for f in out.split(b'\\x1b[H\\x1b[2J')[1:]]
sys.stdout.write(json.dumps({'code': os.waitstatus_to_exitcode(status), 'frames': frames}))
`;

  it.skipIf(!hasPython())('--watch: the counts and flags stay on the screen, the rows that do not fit are counted', () => {
    const out = execFileSync('python3', ['-c', SIZED_PTY, process.execPath, BIN, 'ss', '--watch', '--port', String(port)], {
      encoding: 'utf8',
      timeout: 15_000,
      env: { ...process.env, NO_COLOR: '1' },
    });
    const { code, frames } = JSON.parse(out) as { code: number; frames: string[] };
    expect(code).toBe(0);
    expect(frames.length).toBeGreaterThanOrEqual(2);
    // The second frame is whole (the last one ends where the screen is restored).
    const lines = frames[1]!.replace(/\r/g, '').replace(/\n$/, '').split('\n');
    expect(lines.length).toBeLessThanOrEqual(15); // 16 rows: the last stays free for the cursor
    expect(lines[0]).toBe(`TCP sockets in this network namespace (port ${port}): ${2 * PAIRS + 1}`);
    expect(lines).toContain('flags (2):');
    expect(lines.some((l) => l.startsWith(`  ! CLOSE_WAIT on ${PAIRS} sockets`))).toBe(true);
    expect(lines.some((l) => l.startsWith(`  ! FIN_WAIT2 with no timer on ${PAIRS} sockets`))).toBe(true);
    expect(lines.some((l) => /^… and \d+ more sockets \(--state or --port narrows the list, --summary leaves it out\)$/.test(l))).toBe(true);
    expect(lines.filter((l) => /^! {2}CLOSE_WAIT /.test(l)).length).toBeGreaterThanOrEqual(2);
    expect(lines.at(-1)).toMatch(/^refreshing every 1 s at .*; q or Ctrl-C quits$/);
    for (const line of lines) expect(line.length).toBeLessThanOrEqual(160);
  });
});
