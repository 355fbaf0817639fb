/**
 * `finwait ss` against sockets this test holds: one in CLOSE_WAIT (a server that never ends after
 * the client's FIN) and one in TIME_WAIT, both gated on the states the kernel shows.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findSocket, tcpState } from '../../src/index';
import { pair, waitFor, type Pair } from '../helpers';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
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
    expect(stdout).toMatch(new RegExp(`^! +CLOSE_WAIT +127\\.0\\.0\\.1:${port} .* pid ${process.pid} \\(`, 'm'));
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

describe('finwait ss --watch', () => {
  const hasPython = (() => {
    try {
      execFileSync('python3', ['-c', 'import pty'], { stdio: 'ignore' });
      return true;
    } catch {
      return false;
    }
  })();

  it.skipIf(!hasPython).each([
    ['q', 'q'],
    ['Ctrl-C', '\x03'],
  ])('redraws in place every second on a terminal and quits on %s', (_, key) => {
    const out = execFileSync('python3', ['-c', PTY_DRIVER, process.execPath, BIN, 'ss', '--watch', '--port', '1', key], { encoding: 'utf8', timeout: 15_000 });
    const [code, redraws, restored] = out.split(' ').map(Number);
    expect(code).toBe(0);
    expect(redraws).toBeGreaterThanOrEqual(2);
    expect(restored).toBe(1);
  });

  it.skipIf(!hasPython)('a kernel call that fails on a redraw: the screen is restored, the error shown after it, exit 1', () => {
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
