/**
 * `finwait ss` against sockets this test holds: one in CLOSE_WAIT (a server that never ends after
 * the client's FIN) and one in TIME_WAIT, both gated on the states the kernel shows.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findSocket, tcpState } from '../../src/index';
import { pair, waitFor, type Pair } from '../helpers';
import { finwait } from './run';

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
