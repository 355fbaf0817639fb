/**
 * The accept-queue drain: closeServer() makes the listener answer no new SYN, takes in what waits
 * in the kernel's accept queue and what completes the handshakes under way, and closes the listener
 * as soon as neither is left, not after a fixed second of accepting each new arrival only to close
 * it; no client that connected is reset when the listener closes, even under a steady stream of
 * new connections on a loaded machine (the close no longer races the next handshake).
 */
import { describe, expect, it } from 'vitest';
import net from 'node:net';
import { once } from 'node:events';
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { native } from '../src/binding';
import { closeServer, shutdownSignal, tcpInfo } from '../src/index';
import { isPureAck, waitUntil, type Lab, type LogEntry } from '../src/testing/index';
import { itNeeds, mayLoadBpf, sealAvailable, waitFor } from './helpers';
import { itLab } from './testing/helpers';

/** A client process opening a new connection every 5 ms (a steady stream, not a flood); counts how each ended. */
const clientScript = `
  const net = require('node:net');
  const port = Number(process.argv[1]);
  const ends = {};
  let opened = 0;
  let open = 0;
  let refused = false;
  const timer = setInterval(() => {
    if (refused) return;
    const s = net.connect(port, '127.0.0.1');
    open++;
    let connected = false;
    s.on('connect', () => { connected = true; if (++opened === 100) process.send('flowing'); });
    s.on('end', () => done('fin'));
    s.on('error', (e) => done(connected ? 'connected-then-' + e.code : e.code));
    s.resume();
    let counted = false;
    function done(how) {
      if (counted) return;
      counted = true;
      open--;
      ends[how] = (ends[how] || 0) + 1;
      s.destroy();
      if (how === 'ECONNREFUSED') refused = true;
      if (refused && open === 0) { clearInterval(timer); process.send(ends, () => process.exit(0)); }
    }
  }, 5);
`;

/**
 * B's server (each connection answered 'bye' and ended) and a client of A whose handshake is under
 * way: its last ACK held on the wire, B in SYN_RECV. `seen`: what the client saw, in order
 * ('connect', data, 'FIN', an error's code).
 */
async function handshakeHeld(lab: Lab): Promise<{ server: net.Server; client: net.Socket; held: LogEntry; seen: string[] }> {
  const { a, b, wire } = lab;
  const server = await b.listen(80);
  server.on('connection', (socket: net.Socket) => socket.end('bye'));
  wire.hold((s) => s.from === 'a' && isPureAck(s) && s.relSeq === 1 && s.relAck === 1);
  const client = a.connectSocket(80);
  const seen: string[] = [];
  client.on('connect', () => seen.push('connect'));
  client.setEncoding('utf8').on('data', (d: string) => seen.push(d));
  client.on('end', () => seen.push('FIN'));
  client.on('error', (error: NodeJS.ErrnoException) => seen.push(error.code ?? String(error)));
  const held = await waitUntil("the client's last ACK, held", () => wire.log.find((e) => e.verdict === 'hold'));
  await waitUntil('B in SYN_RECV', () => b.sockets({ localPort: 80, states: ['SYN_RECV'] }).length === 1);
  return { server, client, held, seen };
}

/** What the tests that seal a listener need. */
const SEAL = 'a socket filter on a listening TCP socket';

describe('closeServer, accept-queue drain', () => {
  itNeeds(SEAL, sealAvailable, 'under a steady stream of new connections (one every 5 ms): the listener closes as soon as nothing is left to take in, no connected client is reset', async () => {
    const server = net.createServer((socket) => socket.end('bye')); // a stream of short connections
    server.listen({ port: 0, host: '127.0.0.1', backlog: 511 });
    await once(server, 'listening');
    const { port } = server.address() as net.AddressInfo;
    const child = spawn(process.execPath, ['-e', clientScript, String(port)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    const messages: unknown[] = [];
    child.on('message', (m) => messages.push(m));
    try {
      await waitFor('connections flowing', () => (messages.includes('flowing') ? true : undefined), 10_000);
      const report = await closeServer(server, { timeout: 5000, drainWindow: 3000 });
      const ends = (await waitFor('the client done', () => messages.find((m) => typeof m === 'object'), 10_000)) as Record<string, number>;
      expect(server.listening).toBe(false);
      // Not a fixed second (nor the drain window) of accepting: the listener closed at the first empty queue.
      expect(report.duration).toBeLessThan(900);
      expect(report.acceptedFromQueue).toBeLessThan(report.duration / 5 + 10);
      // Every connection that got in ended with our FIN; the others were refused (never connected):
      // those whose SYN came after the listener stopped answering SYNs were refused when they sent
      // it again, a second later, to the closed port. No client that connected was reset.
      expect(ends, JSON.stringify(ends)).toEqual({ fin: expect.any(Number), ECONNREFUSED: expect.any(Number) });
      expect(report.queuedAtClose).toBe(0);
      expect(report.handshakesAtClose).toBe(0);
      expect(ends.ECONNREFUSED).toBeGreaterThan(0);
      expect(report.totals.resetSent + report.totals.resetReceived).toBe(0);
    } finally {
      child.kill();
    }
  });

  itLab('a handshake under way when the listener stops answering SYNs is taken in and served; a SYN after that is refused, no one reset', async (lab) => {
    const { a, wire } = lab;
    // The first client's handshake is under way at the close.
    const { server, client: first, held, seen } = await handshakeHeld(lab);

    const stopping = shutdownSignal(server);
    const closing = closeServer(server, { drainWindow: 4000, timeout: 8000 });
    // The application is told in the same run as the listener stops answering SYNs.
    await waitUntil('the shutdown began', () => stopping.aborted || undefined);
    // A second client's SYN gets no answer from the closing listener: its kernel sends it again.
    const second = a.connectSocket(80);
    let secondEnd = '';
    second.on('connect', () => (secondEnd = 'connected'));
    second.on('error', (error: NodeJS.ErrnoException) => (secondEnd ||= error.code ?? String(error)));
    const syn = await waitUntil("the second client's SYN", () => wire.log.find((e) => e.from === 'a' && e.flags.includes('SYN') && e.src.port !== held.src.port));
    await waitUntil('the SYN sent again', () => wire.log.find((e) => e.from === 'a' && e.flags.includes('SYN') && e.src.port === syn.src.port && e.at > syn.at), { timeout: 5000 });
    // All that time the listener stayed open, waiting for the handshake under way.
    expect(server.listening).toBe(true);
    expect(secondEnd).toBe('');

    wire.pass().release(); // with any ACK of a SYN-ACK B sent again meanwhile: the rule held those too
    const report = await closing;
    expect(server.listening).toBe(false);
    await waitUntil('the first client served', () => (seen.includes('FIN') ? true : undefined));
    expect(seen).toEqual(['connect', 'bye', 'FIN']);
    expect(report.acceptedFromQueue).toBe(1);
    expect(report.queuedAtClose).toBe(0);
    expect(report.handshakesAtClose).toBe(0);
    expect(report.totals).toMatchObject({ total: 1, graceful: 1, resetSent: 0, resetReceived: 0 });
    await waitUntil('the second client refused', () => secondEnd || undefined, { timeout: 8000 });
    expect(secondEnd).toBe('ECONNREFUSED');
    expect(wire.log.filter((e) => e.from === 'b' && e.flags.includes('RST')).map((e) => e.dst.port)).toEqual([syn.src.port]);
    first.destroy();
  }, { timeout: 20_000 });

  it('with a native part built before the SYN filter, the listener closes at the first empty accept queue', async () => {
    const n = native() as { SealedListener?: unknown };
    const SealedListener = n.SealedListener;
    delete n.SealedListener;
    const server = net.createServer((socket) => socket.end('bye'));
    try {
      server.listen({ port: 0, host: '127.0.0.1' });
      await once(server, 'listening');
      const { port } = server.address() as net.AddressInfo;
      const client = net.connect(port, '127.0.0.1');
      let saw = '';
      client.setEncoding('utf8').on('data', (d: string) => (saw += d));
      const ended = once(client, 'end');
      await once(server, 'connection');
      const report = await closeServer(server, { timeout: 2000, drainWindow: 500 });
      await ended;
      expect(saw).toBe('bye');
      expect(server.listening).toBe(false);
      expect(report).toMatchObject({ acceptQueue: 'drained', queuedAtClose: 0, totals: { total: 1, graceful: 1 } });
      await expect(new Promise((resolve, reject) => net.connect(port, '127.0.0.1').on('connect', resolve).on('error', reject))).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    } finally {
      n.SealedListener = SealedListener;
      server.close();
    }
  });

  itNeeds(SEAL, sealAvailable, 'the seal is set for the drain window plus 2 s: where BPF may be loaded it lifts by itself then, should this process die before removing it', async () => {
    const n = native();
    const Sealed = n.SealedListener!;
    const seals: { maxMs: number | undefined; expires: boolean | undefined }[] = [];
    // The native class, recording what each seal was asked and got.
    n.SealedListener = class extends Sealed {
      constructor(fd: number, maxMs?: number) {
        super(fd, maxMs);
        seals.push({ maxMs, expires: this.expires });
      }
    };
    const server = net.createServer((socket) => socket.end('bye'));
    try {
      server.listen({ port: 0, host: '127.0.0.1' });
      await once(server, 'listening');
      const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1').resume();
      const clientClosed = once(client, 'close');
      await once(server, 'connection');
      const report = await closeServer(server, { timeout: 2000, drainWindow: 500 });
      await clientClosed;
      expect(report.acceptQueue).toBe('drained');
      expect(seals).toHaveLength(1);
      // The drain window is counted from the call: what is left of it when the listener is sealed, plus 2 s.
      expect(seals[0]!.maxMs).toBeGreaterThanOrEqual(2000);
      expect(seals[0]!.maxMs).toBeLessThanOrEqual(2500);
      // With CAP_BPF (or CAP_SYS_ADMIN), the eBPF filter; with CAP_NET_ADMIN alone, the classic one, which cannot lift by itself.
      expect(seals[0]!.expires).toBe(mayLoadBpf());
    } finally {
      n.SealedListener = Sealed;
      server.close();
    }
  });

  itNeeds(SEAL, sealAvailable, 'a listening socket another process holds too (a server sent to a child) is left to it unsealed: its next clients connect at the first SYN', async () => {
    const server = net.createServer((socket) => socket.end('parent'));
    server.listen({ port: 0, host: '127.0.0.1' });
    await once(server, 'listening');
    const { port } = server.address() as net.AddressInfo;
    const child = spawn(
      process.execPath,
      ['-e', `process.on('message', (m, server) => { server.on('connection', (s) => s.end('child')); process.send('ready'); });`],
      { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] },
    );
    try {
      child.send('server', server);
      await once(child, 'message');
      const report = await closeServer(server, { timeout: 2000, drainWindow: 200 });
      expect(server.listening).toBe(false);
      expect(report.acceptQueue).toBe('drained');
      // The child's copy of the socket still listens, and answers at once: no SYN of these five
      // went unanswered (a sealed listener drops the first; the client's kernel then counts a
      // retransmission).
      for (let i = 0; i < 5; i++) {
        const client = net.connect(port, '127.0.0.1');
        let heard = '';
        client.setEncoding('utf8').on('data', (d: string) => (heard += d));
        await once(client, 'connect');
        expect(tcpInfo(client).totalRetrans).toBe(0);
        await once(client, 'end');
        expect(heard).toBe('child');
        client.destroy();
      }
    } finally {
      child.kill();
      server.close();
    }
  });

  itLab('a handshake whose last ACK does not come within the drain window is counted in handshakesAtClose: the kernel resets its client when the ACK comes', async (lab) => {
    const { wire } = lab;
    const { server, seen } = await handshakeHeld(lab);
    const report = await closeServer(server, { drainWindow: 300, timeout: 2000 });
    expect(server.listening).toBe(false);
    expect(report).toMatchObject({ acceptQueue: 'drained', acceptedFromQueue: 0, queuedAtClose: 0, handshakesAtClose: 1 });
    expect(report.duration).toBeGreaterThanOrEqual(290); // the listener waited the window for it
    expect(seen).toEqual(['connect']);
    wire.pass().release();
    await waitUntil('the client reset', () => (seen.includes('ECONNRESET') ? true : undefined));
    expect(seen).toEqual(['connect', 'ECONNRESET']);
    expect(wire.log.some((e) => e.from === 'b' && e.flags.includes('RST'))).toBe(true);
  });

  it('where the listener cannot be sealed (a process without CAP_NET_ADMIN and CAP_BPF on Linux 6.18), closeServer closes at the first empty accept queue and says handshakesAtClose -1', async (ctx) => {
    const index = path.join(__dirname, '..', 'dist', 'index.js');
    const binding = path.join(__dirname, '..', 'dist', 'binding.js');
    const script = `
      const net = require('node:net');
      const { closeServer } = require(${JSON.stringify(index)});
      const { native } = require(${JSON.stringify(binding)});
      const server = net.createServer((s) => s.end('bye')).listen(0, '127.0.0.1', async () => {
        let seal = 'ok';
        try { new (native().SealedListener)(server._handle.fd, 1000).release(); } catch (e) { seal = e.code; }
        const client = net.connect(server.address().port, '127.0.0.1');
        let heard = '';
        client.setEncoding('utf8').on('data', (d) => (heard += d));
        const ended = new Promise((resolve) => client.once('end', resolve));
        await new Promise((resolve) => server.once('connection', resolve));
        const report = await closeServer(server, { timeout: 2000, drainWindow: 200 });
        await ended;
        const { acceptQueue, queuedAtClose, handshakesAtClose, totals } = report;
        console.log(JSON.stringify({ seal, heard, listening: server.listening, acceptQueue, queuedAtClose, handshakesAtClose, graceful: totals.graceful }));
      });
    `;
    // As root, the child runs without CAP_NET_ADMIN and CAP_BPF (nor CAP_SYS_ADMIN, which covers
    // it), gone from its bounding set; otherwise it has none.
    const root = process.getuid?.() === 0;
    const without = '-net_admin,-bpf,-sys_admin';
    const [file, ...args] = root
      ? ['setpriv', `--inh-caps=${without}`, `--bounding-set=${without}`, process.execPath, '-e', script]
      : [process.execPath, '-e', script];
    const child = spawnSync(file!, args, { encoding: 'utf8', timeout: 20_000 });
    expect(child.stderr).toBe('');
    const result = JSON.parse(child.stdout.trim()) as { seal: string; heard: string; listening: boolean; acceptQueue: string; queuedAtClose: number; handshakesAtClose: number; graceful: number };
    if (result.seal === 'ok') ctx.skip('this kernel lets a process without CAP_NET_ADMIN and CAP_BPF attach a socket filter to a TCP socket: the listener was sealed');
    expect(result).toEqual({ seal: 'EPERM', heard: 'bye', listening: false, acceptQueue: 'drained', queuedAtClose: 0, handshakesAtClose: -1, graceful: 1 });
  });

  itLab('a second closeServer() while the first drains a sealed listener leaves the close to the first: the handshake under way is served, nothing is reset or left listening', async (lab) => {
    const { b, wire } = lab;
    const { server, seen } = await handshakeHeld(lab);
    const stopping = shutdownSignal(server);
    const first = closeServer(server, { drainWindow: 3000, timeout: 6000 });
    await waitUntil('the first shutdown began', () => stopping.aborted || undefined);
    const second = closeServer(server, { drainWindow: 3000, timeout: 6000 });
    // The second waits with the first: the listener stays open for the handshake under way.
    await waitUntil("B's SYN-ACK sent again (1 s later)", () => wire.log.filter((e) => e.from === 'b' && e.flags.includes('SYN')).length >= 2 || undefined, { timeout: 5000 });
    expect(server.listening).toBe(true);
    wire.pass().release();
    const reports = await Promise.all([first, second]);
    expect(server.listening).toBe(false);
    await waitUntil('the client served', () => (seen.includes('FIN') ? true : undefined));
    expect(seen).toEqual(['connect', 'bye', 'FIN']);
    // The first closed the listener and read its queue then; the second did not see that instant.
    expect(reports.map((r) => [r.acceptQueue, r.queuedAtClose, r.handshakesAtClose])).toEqual([
      ['drained', 0, 0],
      ['drained', -1, -1],
    ]);
    expect(wire.log.some((e) => e.flags.includes('RST'))).toBe(false);
    expect(b.sockets({ localPort: 80, states: ['LISTEN'] })).toEqual([]);
  });
});
