/**
 * traceConnections() on the BPF source: every transition, with sk_err, in every network namespace.
 * On loopback: both closes, an RST each way, a refused connect, each end's exact path and owner.
 * In the lab (two network namespaces, the wire carrying every segment): the RSTs an orphan sends
 * (kernel rows 15 and 16) called reset-sent, a socket killed with ss -K called killed, and a trace
 * of `finwait demo` scenarios showing the path of states the demo draws.
 */
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import net from 'node:net';
import { afterEach, describe, expect } from 'vitest';
import { closeWrite, queues, setLinger2 } from '../../src/index';
import type { ConnectionEnd } from '../../src/trace/ends';
import { checkOptions, FOLLOW, startTrace, traceConnections, type ConnectionTrace } from '../../src/trace/trace';
import { native } from '../../src/binding';
import { fdOf } from '../../src/fd';
import { createLab, labAvailable, type Lab } from '../../src/testing/index';
import { BPF, bpfAvailable, itNeeds, pair, waitFor, type Availability } from '../helpers';
import { BIN } from '../cli/run';

function labAndBpf(): Availability {
  const lab = labAvailable();
  return lab.ok ? bpfAvailable() : lab;
}

/** A test with a fresh lab and the BPF source (see itLab()). */
function itLabBpf(name: string, fn: (lab: Lab) => Promise<void>): void {
  itNeeds(`the lab and ${BPF}`, labAndBpf, name, async () => {
    const lab = await createLab();
    try {
      await fn(lab);
    } finally {
      await lab.close();
    }
  });
}

let trace: ConnectionTrace | undefined;
afterEach(() => {
  trace?.close();
  trace = undefined;
});

function start(): ConnectionEnd[] {
  const ends: ConnectionEnd[] = [];
  trace = traceConnections((end) => ends.push(end), { source: 'bpf' });
  expect(trace.source).toBe('bpf');
  return ends;
}

function endOf(ends: ConnectionEnd[], local: number, remote: number): Promise<ConnectionEnd> {
  return waitFor(`the end of ${local} -> ${remote}`, () => ends.find((e) => e.local.port === local && e.remote.port === remote));
}

describe('traceConnections() on BPF, loopback', () => {
  itNeeds(BPF, bpfAvailable, 'a graceful close: every state of both ends, who closed first, the owner, the counters', async () => {
    const ends = start();
    const p = await pair();
    const c = p.client.localPort!;
    const s = p.server.localPort!;
    p.server.resume();
    p.server.on('end', () => p.server.end());
    p.client.resume();
    p.client.end(Buffer.alloc(1000, 1));
    const client = await endOf(ends, c, s);
    const server = await endOf(ends, s, c);
    expect(client).toMatchObject({ path: ['SYN_SENT', 'ESTABLISHED', 'FIN_WAIT1', 'FIN_WAIT2', 'TIME_WAIT'], outcome: 'graceful', closedFirst: 'local', pid: process.pid, startSeen: true, pathSeen: 'every-transition' });
    expect(server).toMatchObject({ path: ['SYN_RECV', 'ESTABLISHED', 'CLOSE_WAIT', 'LAST_ACK', 'CLOSE'], outcome: 'graceful', closedFirst: 'remote', pid: process.pid, startSeen: true });
    expect(client.error).toBeUndefined();
    // SYN and FIN count one byte of sequence space each.
    expect(client.counters).toMatchObject({ retransmits: 0, unackedBytes: 0, bytesAcked: 1002 });
    expect(server.counters!.bytesReceived).toBe(1001);
    expect(client.netns).toBe(server.netns);
    expect(client.durationMs).toBeGreaterThan(0);
    await p.close();
  });

  itNeeds(BPF, bpfAvailable, 'a close with unread data: reset-sent on the end that closed, reset-received (ECONNRESET) on the other', async () => {
    const ends = start();
    const p = await pair({ server: { pauseOnConnect: true } });
    const c = p.client.localPort!;
    const s = p.server.localPort!;
    p.client.on('error', () => {});
    p.client.write('unread');
    await waitFor('the bytes unread on the server', () => (queues(p.server).unread === 6 ? true : undefined));
    p.server.destroy();
    const server = await endOf(ends, s, c);
    const client = await endOf(ends, c, s);
    expect(server).toMatchObject({ path: ['SYN_RECV', 'ESTABLISHED', 'CLOSE'], outcome: 'reset-sent', closedFirst: 'local', pid: process.pid });
    expect(client).toMatchObject({ path: ['SYN_SENT', 'ESTABLISHED', 'CLOSE'], outcome: 'reset-received', error: 'ECONNRESET', closedFirst: 'remote' });
    await p.close();
  });

  itNeeds(BPF, bpfAvailable, "byCookie (serverMetrics' kernel-side filter): only the followed sockets' ends come, each once", async () => {
    const ends: ConnectionEnd[] = [];
    const t = startTrace((end) => ends.push(end), checkOptions({ source: 'bpf' }), { byCookie: true, endsOnly: true });
    trace = t;
    const followed = await pair();
    const other = await pair();
    const marker = await pair();
    for (const s of [followed.server, marker.server]) expect(t[FOLLOW](native().socketCookie(fdOf(s)))).toBe(true);
    const [f, m] = [followed, marker].map((p) => `${p.server.localPort}->${p.client.localPort}`);
    for (const p of [followed, other, marker]) p.client.on('error', () => {});
    // Reset in this order: the ring keeps the kernel's order, so once the marker's end came the
    // other pair's ends would have come before it had the filter let them through.
    for (const p of [followed, other, marker]) p.server.resetAndDestroy();
    await waitFor("the marker's end", () => ends.find((e) => `${e.local.port}->${e.remote.port}` === m));
    expect(ends.map((e) => `${e.local.port}->${e.remote.port} ${e.outcome}`)).toEqual([`${f} reset-sent`, `${m} reset-sent`]);
    for (const p of [followed, other, marker]) await p.close();
  });

  itNeeds(BPF, bpfAvailable, 'a refused connect: refused, ECONNREFUSED, the process that connected', async () => {
    const ends = start();
    const server = net.createServer().listen(0, '127.0.0.1');
    await once(server, 'listening');
    const port = (server.address() as net.AddressInfo).port;
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const socket = net.connect(port, '127.0.0.1');
    const [error] = (await once(socket, 'error')) as [NodeJS.ErrnoException];
    expect(error.code).toBe('ECONNREFUSED');
    const end = await waitFor('the refused end', () => ends.find((e) => e.remote.port === port && e.path[0] === 'SYN_SENT'));
    expect(end).toMatchObject({ path: ['SYN_SENT', 'CLOSE'], outcome: 'refused', error: 'ECONNREFUSED', closedFirst: 'remote', pid: process.pid });
  });
});

/** A connection a -> b:80 across the wire, both ends allowing half-open, b reading. */
async function labConnection(lab: Lab): Promise<{ a: net.Socket; b: net.Socket }> {
  const server = await lab.b.listen(80, { allowHalfOpen: true });
  server.on('connection', (socket: net.Socket) => socket.on('error', () => {}));
  const accepted = once(server, 'connection') as Promise<[net.Socket]>;
  const a = await lab.a.connect(80, { allowHalfOpen: true });
  const [b] = await accepted;
  a.on('error', () => {});
  b.resume();
  return { a, b };
}

/** a's FIN sent and acknowledged (a in FIN_WAIT2, b in CLOSE_WAIT), then a's fd closed: an orphan. */
async function orphanInFinWait2(lab: Lab, linger2?: number): Promise<{ a: net.Socket; b: net.Socket; port: number }> {
  const c = await labConnection(lab);
  const port = c.a.localPort!;
  await closeWrite(c.a);
  if (linger2 !== undefined) expect(setLinger2(c.a, linger2)).toBe(linger2);
  c.a.destroy();
  return { ...c, port };
}

describe('traceConnections() on BPF, in the lab', () => {
  itLabBpf('kernel row 15: TCP_LINGER2 = -1 close in FIN_WAIT2 is reset-sent (no TIME_WAIT after it, none ever refused)', async (lab) => {
    const ends = start();
    const { port } = await orphanInFinWait2(lab, -1);
    const end = await waitFor('a', () => ends.find((e) => e.local.port === port && e.remote.port === 80));
    expect(end).toMatchObject({ outcome: 'reset-sent', closedFirst: 'local', netnsName: lab.a.netns });
    expect(end.path.slice(-3)).toEqual(['FIN_WAIT1', 'FIN_WAIT2', 'CLOSE']);
    await waitFor('the RST on the wire from a', () => (lab.wire.log.some((e) => e.from === 'a' && e.flags.includes('RST')) ? true : undefined));
  });

  itLabBpf('kernel row 16: an orphan in FIN_WAIT2 is handed to a timewait socket at once, which the trace says (its later RST is unseen); the peer that sent data, reset-received', async (lab) => {
    const ends = start();
    const { b, port } = await orphanInFinWait2(lab);
    // With a FIN_WAIT2 timer of at most 60 s the kernel frees the full socket when Node closes the fd.
    const a = await waitFor('a', () => ends.find((e) => e.local.port === port && e.remote.port === 80));
    expect(a).toMatchObject({ outcome: 'unknown', closedFirst: 'local', path: ['SYN_SENT', 'ESTABLISHED', 'FIN_WAIT1', 'FIN_WAIT2'] });
    expect(a.because).toContain('FIN_WAIT2 timewait socket');
    b.write('late data');
    const bEnd = await waitFor('b', () => ends.find((e) => e.local.port === 80 && e.remote.port === port));
    // An RST received in CLOSE_WAIT sets EPIPE (tcp_reset()).
    expect(bEnd).toMatchObject({ outcome: 'reset-received', error: 'EPIPE', closedFirst: 'remote', netnsName: lab.b.netns, path: ['SYN_RECV', 'ESTABLISHED', 'CLOSE_WAIT', 'CLOSE'] });
    expect(lab.wire.log.some((e) => e.from === 'a' && e.flags.includes('RST'))).toBe(true);
  });

  itLabBpf('a connection killed with ss -K: killed (ECONNABORTED) on that end, reset-received on the other', async (lab) => {
    const ends = start();
    const { a } = await labConnection(lab);
    const port = a.localPort!;
    execFileSync('ip', ['netns', 'exec', lab.a.netns, 'ss', '-K', 'dst', `${lab.b.address}`, 'dport', '=', ':80'], { stdio: 'pipe' });
    const killed = await waitFor('a', () => ends.find((e) => e.local.port === port && e.remote.port === 80));
    expect(killed).toMatchObject({ outcome: 'killed', error: 'ECONNABORTED', path: ['SYN_SENT', 'ESTABLISHED', 'CLOSE'] });
    const other = await waitFor('b', () => ends.find((e) => e.local.port === 80 && e.remote.port === port));
    expect(other).toMatchObject({ outcome: 'reset-received', error: 'ECONNRESET' });
  });
});

interface DemoEnd {
  local: { port: number };
  outcome: string;
  history: { state: string }[];
}

describe('a trace of finwait demo', () => {
  for (const scenario of ['normal', 'simultaneous', 'reset', 'unread-data']) {
    itNeeds(`the lab and ${BPF}`, labAndBpf, `${scenario}: each end's path of states and outcome as the demo draws them`, async () => {
      const ends = start();
      const child = spawn(process.execPath, [BIN, 'demo', scenario, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
      const [code] = await once(child, 'exit');
      expect(code).toBe(0);
      const demo = JSON.parse(out) as { path: string; ends: Record<'a' | 'b', DemoEnd> };
      for (const side of ['a', 'b'] as const) {
        const drawn = demo.ends[side];
        // The demo's lab hosts are network namespaces named after its pid; on loopback, this namespace.
        const traced = await waitFor(`the trace of end ${side}`, () =>
          ends.find((e) => e.local.port === drawn.local.port && (demo.path !== 'lab' || e.netnsName?.startsWith(`finwait-${child.pid}-`))),
        );
        // The demo draws what an fd shows (CLOSE once the socket is freed or in TIME_WAIT) and its end
        // (CLOSED); the trace, the kernel's own states and the hand-over to a TIME_WAIT.
        const drawnPath = drawn.history.map((h) => h.state).filter((s) => s !== 'CLOSE' && s !== 'CLOSED');
        const tracedPath = traced.path.filter((s) => s !== 'SYN_SENT' && s !== 'SYN_RECV' && s !== 'CLOSE');
        expect(tracedPath, `end ${side}`).toEqual(drawnPath);
        expect(traced.outcome, `end ${side}`).toBe(drawn.outcome);
      }
    }, 30_000);
  }
});
