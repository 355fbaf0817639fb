/**
 * `finwait trace` as a user runs it: a child process tracing while this test opens and closes real
 * loopback connections; the unprivileged fallback and its message; usage errors.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { hasCapability, waitFor } from '../helpers';
import { BIN, finwait } from './run';
import { homeNetns } from '../../src/trace/netns';

interface Traced {
  code: number;
  lines: string[];
  stderr: string;
}

/** Starts `finwait trace ...args`; `act` runs once it says it is tracing; resolves when it exits. */
async function traceWhile(args: string[], act: () => Promise<void>, prefix: string[] = []): Promise<Traced> {
  const [file, ...rest] = [...prefix, process.execPath, BIN, 'trace', ...args];
  const child = spawn(file!, rest, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const exited = once(child, 'exit') as Promise<[number | null, string | null]>;
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  try {
    await waitFor('finwait trace to start', () => (stderr.includes('finwait trace:') || child.exitCode !== null ? true : undefined), 15_000);
    if (child.exitCode === null) await act();
    const [code] = await exited;
    return { code: code ?? -1, lines: stdout.trim().split('\n').filter(Boolean), stderr };
  } finally {
    clearTimeout(timer);
    child.kill();
  }
}

/** A listener whose connections the client closes first, gracefully. */
async function gracefulConnection(): Promise<{ port: number; run: () => Promise<number> }> {
  const server = net.createServer((s) => {
    s.resume();
    s.on('end', () => s.end());
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    async run() {
      const c = net.connect(port, '127.0.0.1');
      await once(c, 'connect');
      const local = c.localPort!;
      c.resume();
      c.end('hello');
      await once(c, 'close');
      server.close();
      return local;
    },
  };
}

describe('finwait trace', () => {
  it('--json --source destroy-multicast: one object per connection end, then a summary; --count ends it', async () => {
    const conn = await gracefulConnection();
    let local = 0;
    const out = await traceWhile(['--json', '--source', 'destroy-multicast', '--interval', '20', '--port', String(conn.port), '--count', '2'], async () => {
      local = await conn.run();
    });
    expect(out.code).toBe(0);
    expect(out.stderr).toContain('the sock_diag destroy multicast of this network namespace, states sampled every 20 ms');
    const objects = out.lines.map((l) => JSON.parse(l));
    expect(objects).toHaveLength(3);
    const ends = objects.slice(0, 2);
    const client = ends.find((e) => e.local.port === local);
    const server = ends.find((e) => e.local.port === conn.port);
    expect(client).toMatchObject({ remote: { port: conn.port }, source: 'destroy-multicast', pathSeen: 'sampled' });
    expect(server).toMatchObject({ remote: { port: local } });
    expect(client.outcome === 'graceful' ? client.path.at(-1) : 'TIME_WAIT').toBe('TIME_WAIT');
    expect(['graceful', 'unknown']).toContain(client.outcome);
    expect(objects[2].summary).toMatchObject({ total: 2, source: 'destroy-multicast' });
    expect(Object.values(objects[2].summary.byOutcome as Record<string, number>).reduce((a, b) => a + b)).toBe(2);
    expect(typeof ends[0].time).toBe('string');
  });

  it('human output: one line per end and the summary by outcome and remote', async () => {
    const conn = await gracefulConnection();
    const out = await traceWhile(['--source', 'destroy-multicast', '--interval', '20', '--port', String(conn.port), '--count', '2'], async () => {
      await conn.run();
    });
    expect(out.code).toBe(0);
    const ends = out.lines.filter((l) => /^\d\d:\d\d:\d\d\.\d{3} /.test(l));
    expect(ends).toHaveLength(2);
    for (const line of ends) expect(line).toMatch(new RegExp(`127\\.0\\.0\\.1:\\d+ -> 127\\.0\\.0\\.1:\\d+ .* ~\\S+`));
    expect(out.lines).toContain('by remote:');
    expect(out.lines.some((l) => /^2 connections ended in \d+\.\d s \(source destroy-multicast\)$/.test(l))).toBe(true);
  });

  it('without CAP_BPF and CAP_PERFMON: the default falls back and says why; --source bpf fails with the reason', async () => {
    // Root with every capability dropped (no CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN), or a plain user as is.
    const prefix = hasCapability(21) ? ['setpriv', '--bounding-set=-all', '--inh-caps=-all', '--'] : [];
    const fallback = await traceWhile(['--count', '0'], async () => {}, prefix);
    expect(fallback.code).toBe(0);
    expect(fallback.stderr).toMatch(/destroy multicast of this network namespace.*BPF is not available: .*CAP_BPF/);
    expect(fallback.lines.at(-1)).toMatch(/^0 connections ended in/);
    const [file, ...rest] = prefix;
    const refused = await finwait(['trace', '--source', 'bpf', '--count', '0'], {}, file ? { prefix: [file, ...rest] } : {});
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/CAP_BPF/);
  });

  it("--netns of another namespace with the destroy multicast: exit 1 and why (it sees only its own), not a trace that prints nothing", async () => {
    const other = await finwait(['trace', '--source', 'destroy-multicast', '--netns', '0123456789abcdef', '--count', '0']);
    expect(other.code).toBe(1);
    expect(other.stdout).toBe('');
    expect(other.stderr).toContain('--netns 0123456789abcdef: the sock_diag destroy multicast shows only this network namespace');
    expect(other.stderr).toContain('ip netns exec NAME finwait trace');
    // This process's own namespace, by its cookie, is what the destroy multicast shows.
    const home = homeNetns();
    const own = await finwait(['trace', '--source', 'destroy-multicast', '--netns', home, '--count', '0']);
    expect(own.code).toBe(0);
    expect(own.stdout).toMatch(/^0 connections ended in/m);
  });

  it.each([
    [['--outcome', 'fine'], "unknown outcome 'fine'"],
    [['--state', 'NOPE'], "unknown state 'NOPE'"],
    [['--netns', 'no-such-namespace'], "no network namespace named 'no-such-namespace'"],
    [['--interval', '5'], '--interval needs at least 10 ms'],
    [['--source', 'ebpf'], '--source is bpf or destroy-multicast'],
    [['--port', '70000'], '--port needs an integer 0-65535'],
    [['extra'], "unexpected argument 'extra'"],
    [['--outcome', '\x1b]0;x\x07'], 'unknown outcome'],
  ])('usage error %j: exit 2, a clear message, control characters escaped', async (args, message) => {
    const out = await finwait(['trace', ...args]);
    expect(out.code).toBe(2);
    expect(out.stderr).toContain(message);
    expect(out.stderr).not.toContain('\x1b');
    expect(out.stderr).toContain('usage: finwait trace');
  });

  it('--help describes the sources and the outcomes', async () => {
    const out = await finwait(['trace', '--help']);
    expect(out.code).toBe(0);
    expect(out.stdout).toContain('graceful, reset-sent, reset-received, timed-out, refused, killed, unknown');
    expect(out.stdout).toContain('CAP_BPF and CAP_PERFMON');
  });
});
