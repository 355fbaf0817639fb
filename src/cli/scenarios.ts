/**
 * The close scenarios of `finwait demo`. Each runs in the lab when it is available (two network
 * namespaces and a userspace wire: `lab-scenarios.ts`, with segments) and here on real loopback
 * sockets otherwise, both ends watched, returning the `Diagram` the renderers draw. Only the
 * public API is used here.
 *
 * Every wait is on something the kernel or Node showed (a state, an event, a queue), bounded by
 * a deadline; nothing sleeps. Scenarios that loopback cannot produce deterministically say what
 * they need (`needs`) and have no loopback version.
 */
import net from 'node:net';
import os from 'node:os';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import {
  closeWrite,
  findSocket,
  queues,
  reset,
  setLinger2,
  tcpState,
  watch,
  type Lifecycle,
  type SocketTuple,
} from '../index';
import { connectedTuple } from '../diag';
import type { Action, Diagram, DiagramEnd, Side } from './diagram';
import {
  labFinWait2Timeout,
  labHalfClose,
  labLostAck,
  labNormal,
  labReset,
  labSimultaneous,
  labThreeWay,
  labTimeWait,
  labUnreadData,
} from './lab-scenarios';
import { DEADLINE, until, within } from './wait';

/** A scenario of `finwait demo`. */
export interface Scenario {
  name: string;
  /** What it shows, one line. */
  title: string;
  /** Why loopback cannot run it and what it needs; present for lab-only scenarios. */
  needs?: string;
  /** On loopback, states only; absent for lab-only scenarios. */
  loopback?: () => Promise<Diagram>;
  /** In the lab, with segments; rejects with `ERR_FINWAIT_LAB_UNAVAILABLE` when the lab cannot run. */
  lab: () => Promise<Diagram>;
}

interface ConnectOptions {
  client?: { allowHalfOpen?: boolean };
  server?: net.ServerOpts;
  /** Which socket is TCP A (drawn on the left, acts first); default the client. */
  a?: 'client' | 'server';
}

/** A watched loopback connection and the scenario's record of it. */
class Run {
  readonly t0 = performance.now();
  readonly actions: Action[] = [];
  listener!: net.Server;
  client!: net.Socket;
  server!: net.Socket;
  a!: Lifecycle;
  b!: Lifecycle;
  aSocket!: net.Socket;
  bSocket!: net.Socket;
  readonly finished = { a: false, b: false };
  #labels = { a: 'client', b: 'server (accepted)' };

  /**
   * Listens on 127.0.0.1, connects to it and watches both ends. Fails at once with the socket's
   * error (`connect ENETUNREACH` when `lo` is down), or at the deadline; either way it closes what
   * it opened first, so that a failure never leaves the process running.
   */
  static async open(options: ConnectOptions = {}): Promise<Run> {
    const run = new Run();
    const listener = net.createServer(options.server ?? {});
    run.listener = listener;
    let client: net.Socket | undefined;
    const accepted = once(listener, 'connection') as Promise<[net.Socket]>;
    accepted.catch(() => {}); // a failed listen() rejects it too; the failure is reported once, below
    try {
      listener.listen(0, '127.0.0.1');
      await within(once(listener, 'listening'), 'listening on 127.0.0.1');
      const { port } = listener.address() as net.AddressInfo;
      client = net.connect({ port, host: '127.0.0.1', ...options.client });
      const clientWatch = watch(client);
      run.act(options.a === 'server' ? 'b' : 'a', 'connect()');
      // Rejects with the client's error ('connect ENETUNREACH') as soon as it comes.
      await within(once(client, 'connect'), `the connection to 127.0.0.1:${port}`);
      const [server] = await within(accepted, 'the accepted connection');
      const serverWatch = watch(server);
      run.client = client;
      run.server = server;
      const clientIsA = options.a !== 'server';
      [run.aSocket, run.bSocket] = clientIsA ? [client, server] : [server, client];
      [run.a, run.b] = clientIsA ? [clientWatch, serverWatch] : [serverWatch, clientWatch];
      if (!clientIsA) run.#labels = { a: 'server (accepted)', b: 'client' };
      run.#tuples = { a: connectedTuple(run.aSocket), b: connectedTuple(run.bSocket) };
    } catch (error) {
      client?.destroy();
      listener.close();
      // A connection accepted after the deadline is closed too.
      accepted.then(([late]) => late.destroy(), () => {});
      throw withLoopbackHint(error);
    }
    void run.a.done.then(() => (run.finished.a = true));
    void run.b.done.then(() => (run.finished.b = true));
    return run;
  }

  act(side: Side, text: string): void {
    this.actions.push({ at: performance.now(), side, text });
  }

  /** The 4-tuple of an end, as its own socket named it once connected (Node forgets it on destroy). */
  tuple(side: Side): SocketTuple {
    return this.#tuples[side];
  }

  #tuples!: Record<Side, SocketTuple>;

  async done(side: Side): Promise<void> {
    await within((side === 'a' ? this.a : this.b).done, `TCP ${side.toUpperCase()} to be forgotten by the kernel`);
    this.finished[side] = true;
  }

  /** Snapshots both ends (histories so far, sock_diag for the ends the kernel still has). */
  diagram(scenario: string, title: string, notes: string[]): Diagram {
    const end = (side: Side): DiagramEnd => {
      const tuple = this.tuple(side);
      const lifecycle = side === 'a' ? this.a : this.b;
      const finished = this.finished[side];
      const entry = finished ? undefined : findSocket(tuple);
      return {
        label: this.#labels[side],
        local: tuple.local,
        remote: tuple.remote,
        history: [...lifecycle.history],
        finished,
        ...(entry ? { diag: { state: entry.state, timer: entry.timer, inode: entry.inode, at: performance.now() } } : {}),
      };
    };
    const a = end('a');
    const b = end('b');
    return { scenario, title, path: 'loopback', t0: this.t0, a, b, actions: [...this.actions], notes };
  }

  /** Closes what is left; an end still in TIME_WAIT stays in the kernel, as it must. */
  cleanup(): void {
    this.client.destroy();
    this.server.destroy();
    this.listener.close();
  }
}

/** The kernel's errors for 127.0.0.1 when `lo` is down (ENETUNREACH, EHOSTUNREACH) or lacks the address (EADDRNOTAVAIL). */
const LOOPBACK_MISSING = new Set(['ENETUNREACH', 'EADDRNOTAVAIL', 'EHOSTUNREACH']);

/**
 * Adds what to do to a socket error that means 127.0.0.1 is not up here (a fresh network namespace
 * has `lo` down), when no interface that is up has 127.0.0.1; other errors are returned as they are.
 */
function withLoopbackHint(error: unknown): unknown {
  const e = error as NodeJS.ErrnoException;
  if (!(error instanceof Error) || !LOOPBACK_MISSING.has(e.code ?? '')) return error;
  const up = Object.values(os.networkInterfaces()).some((addresses) => addresses?.some((a) => a.address === '127.0.0.1'));
  if (up) return error;
  e.message += " (no interface in this network namespace is up with 127.0.0.1: bring the loopback up with 'ip link set lo up')";
  return error;
}

/** Runs `body` on a fresh connection and always cleans up. */
async function withRun(options: ConnectOptions, body: (run: Run) => Promise<Diagram>): Promise<Diagram> {
  const run = await Run.open(options);
  try {
    return await body(run);
  } finally {
    run.cleanup();
  }
}

const halfOpen = { client: { allowHalfOpen: true }, server: { allowHalfOpen: true } };

function stateSeen(run: Run, side: Side, state: string): boolean {
  return (side === 'a' ? run.a : run.b).history.some((h) => h.state === state && h.source !== 'inferred');
}

async function normal(): Promise<Diagram> {
  return withRun(halfOpen, async (run) => {
    run.server.resume();
    run.client.resume();
    run.act('a', 'close: closeWrite()');
    await within(closeWrite(run.client), 'closeWrite()');
    await run.b.until('CLOSE_WAIT', { timeout: DEADLINE });
    run.act('b', 'close: end()');
    run.server.end();
    await run.a.until('TIME_WAIT', { timeout: DEADLINE });
    await run.done('b');
    const note = stateSeen(run, 'a', 'FIN_WAIT2')
      ? "A was seen in FIN_WAIT2 before B closed: A's FIN had been acknowledged on its own, so B's FIN came in a segment of its own (figure 13's four segments)"
      : 'A was not seen in FIN_WAIT2 before B closed';
    return run.diagram('normal', 'normal close (RFC 793 figure 13)', [note]);
  });
}

async function threeWay(): Promise<Diagram> {
  return withRun(halfOpen, async (run) => {
    run.client.resume();
    run.server.resume();
    run.server.once('end', () => {
      run.act('b', "close: end() on A's FIN");
      run.server.end();
    });
    run.act('a', 'close: end()');
    run.client.end();
    await run.a.until('TIME_WAIT', { timeout: DEADLINE });
    await run.done('b');
    const note = stateSeen(run, 'a', 'FIN_WAIT2')
      ? "A was seen in FIN_WAIT2: this time B's ACK of A's FIN went out on its own before B's FIN (four segments); the ACK is usually delayed long enough to ride on B's FIN — run it again"
      : "A went from FIN_WAIT1 to TIME_WAIT without being seen in FIN_WAIT2, which is what a FIN+ACK answering A's FIN does (FIN, FIN+ACK, ACK: B's ACK is delayed a few ms and rides on its FIN). Without the lab's segment log that is what the states show, not proof: a FIN_WAIT2 shorter than one poll would look the same";
    return run.diagram('three-way', 'the peer closes at once: three segments (FIN, FIN+ACK, ACK)', [note]);
  });
}

async function halfClose(): Promise<Diagram> {
  const size = 256 * 1024;
  return withRun(halfOpen, async (run) => {
    let received = 0;
    run.client.on('data', (chunk: Buffer) => {
      if (received === 0) run.act('a', `read: first bytes, in ${tcpState(run.client)}`);
      received += chunk.length;
    });
    const ended = once(run.client, 'end');
    run.server.resume();
    run.act('a', 'half-close: closeWrite()');
    await within(closeWrite(run.client), 'closeWrite()');
    await run.b.until('CLOSE_WAIT', { timeout: DEADLINE });
    run.act('b', `write ${size} bytes in CLOSE_WAIT, then end()`);
    run.server.end(Buffer.alloc(size, 'x'));
    await within(ended, "A's end-of-file");
    run.act('a', `read ${received} bytes after its own FIN, then end-of-file`);
    await run.a.until('TIME_WAIT', { timeout: DEADLINE });
    await run.done('b');
    return run.diagram('half-close', 'half-close: data keeps flowing to the end that sent FIN (RFC 1122 4.2.2.13)', [
      `A shut down writing only: it read all ${received} of B's bytes while in FIN_WAIT2, then B's FIN`,
    ]);
  });
}

async function resetScenario(): Promise<Diagram> {
  return withRun({}, async (run) => {
    run.client.resume();
    run.server.resume();
    const peerError = within(once(run.server, 'error') as Promise<[NodeJS.ErrnoException]>, "B's 'error'");
    run.act('a', 'abort: reset()');
    reset(run.client);
    const [error] = await peerError;
    run.act('b', `'error' ${error.code}`);
    await run.done('a');
    await run.done('b');
    const leftover = findSocket(run.tuple('a')) ?? findSocket(run.tuple('b'));
    return run.diagram('reset', 'abortive close: RST instead of FIN (SO_LINGER {1, 0})', [
      `reset() set SO_LINGER {1, 0} and closed: A sent RST, and B's application got ${error.code}`,
      leftover ? `sock_diag still lists ${leftover.state} for this 4-tuple` : 'no TIME_WAIT on either side: sock_diag has neither end of this 4-tuple',
    ]);
  });
}

async function unreadData(): Promise<Diagram> {
  const request = Buffer.from('a request the server never reads\n');
  return withRun({ server: { pauseOnConnect: true }, a: 'server' }, async (run) => {
    run.client.resume();
    const peerError = within(once(run.client, 'error') as Promise<[NodeJS.ErrnoException]>, "B's 'error'");
    run.act('b', `write ${request.length} bytes`);
    run.client.write(request);
    await until('the bytes in A\'s receive queue', () => queues(run.server).unread >= request.length);
    const unread = queues(run.server).unread;
    run.act('a', `close: destroy() with ${unread} bytes unread`);
    run.server.destroy();
    const [error] = await peerError;
    run.act('b', `'error' ${error.code}`);
    await run.done('a');
    await run.done('b');
    return run.diagram('unread-data', 'closing with unread data sends RST, not FIN (RFC 1122 4.2.2.13)', [
      `A closed with ${unread} bytes it never read in its receive queue: its kernel sent RST instead of FIN, and B's application got ${error.code}`,
      'whatever B sent that A had not read is lost, and B cannot tell how much: use a lingering close (read until the peer\'s FIN) to avoid this',
    ]);
  });
}

async function finWait2Timeout(): Promise<Diagram> {
  return withRun(halfOpen, async (run) => {
    run.server.resume();
    run.client.resume();
    const linger2 = setLinger2(run.client, 1);
    run.act('a', `setLinger2(${linger2})`);
    run.act('a', 'half-close: closeWrite()');
    await within(closeWrite(run.client), 'closeWrite()');
    await run.b.until('CLOSE_WAIT', { timeout: DEADLINE });
    const tuple = run.tuple('a');
    run.act('a', 'close: destroy()');
    run.client.destroy();
    const orphan = findSocket(tuple);
    if (orphan) {
      const timer = orphan.timer.kind === 'off' ? 'no timer' : `${orphan.timer.kind} timer ${(orphan.timer.expiresMs / 1000).toFixed(1)} s`;
      run.act('a', `orphan in sock_diag: ${orphan.state}, ${timer}, inode ${orphan.inode}`);
    }
    await run.done('a');
    const diagram = run.diagram('fin-wait2-timeout', 'an orphaned FIN_WAIT2 times out (TCP_LINGER2) while the peer never closes', [
      `TCP_LINGER2 = ${linger2} s on A. While A's fd was open, its FIN_WAIT2 had no timer (it would wait forever); once the fd closed, the orphan got the TCP_LINGER2 timer and the kernel dropped it when it ran out, without the peer's FIN`,
      "B never closed: it stays in CLOSE_WAIT, which has no timer, until its application closes",
    ]);
    return diagram;
  });
}

async function timeWait(): Promise<Diagram> {
  return withRun({}, async (run) => {
    run.client.resume();
    run.server.resume();
    run.server.once('end', () => run.act('b', "close: Node's own end() on the FIN (allowHalfOpen: false)"));
    run.act('a', 'close: end()');
    run.client.end();
    await run.a.until('TIME_WAIT', { timeout: DEADLINE });
    await run.done('b');
    const diagram = run.diagram('time-wait', 'TIME_WAIT: the active closer keeps the 4-tuple for 2MSL (60 s on Linux)', []);
    const tw = diagram.a.diag;
    const notes = [
      tw
        ? `A is in ${tw.state} with a ${tw.timer.kind} timer of ${(tw.timer.expiresMs / 1000).toFixed(1)} s (sock_diag); ${tw.inode === 0 ? 'inode 0: a TIME_WAIT socket belongs to no process, whether or not the application still holds the fd' : `inode ${tw.inode}`}`
        : 'A was no longer in sock_diag when the scenario ended',
      "no fd can show TIME_WAIT (an fd reads CLOSE): only sock_diag, as `ss` and `finwait ss --state TIME_WAIT` do; it holds the 4-tuple until the timer runs out",
    ];
    return { ...diagram, notes };
  });
}

const SIMULTANEOUS_NEEDS =
  "both FINs must cross on the wire: the lab holds each FIN on its userspace wire until both ends are in FIN_WAIT1, then releases them together. On loopback a FIN arrives microseconds after it is sent, so one end always sees the other's FIN before it closes itself: that is a normal close, not CLOSING";
const LOST_ACK_NEEDS =
  "the last ACK must be lost: the lab's wire drops A's ACK of B's FIN, so B retransmits its FIN from LAST_ACK and A, in TIME_WAIT, acknowledges it again. Loopback never loses a segment";

/** Every scenario, in the order `finwait demo --help` lists them. */
export const SCENARIOS: readonly Scenario[] = [
  { name: 'normal', title: 'A closes, B closes after seeing A in FIN_WAIT2: four segments (RFC 793 fig. 13)', loopback: normal, lab: labNormal },
  { name: 'three-way', title: "B closes as soon as it sees A's FIN: FIN, FIN+ACK, ACK", loopback: threeWay, lab: labThreeWay },
  { name: 'simultaneous', title: 'both close at once, both through CLOSING (RFC 793 fig. 14)', needs: SIMULTANEOUS_NEEDS, lab: labSimultaneous },
  { name: 'half-close', title: 'A half-closes and keeps reading what B sends (RFC 1122 4.2.2.13)', loopback: halfClose, lab: labHalfClose },
  { name: 'reset', title: 'A aborts with reset(): RST, no TIME_WAIT', loopback: resetScenario, lab: labReset },
  { name: 'unread-data', title: 'A closes with unread bytes: RST, not FIN', loopback: unreadData, lab: labUnreadData },
  { name: 'lost-ack', title: "A's last ACK is lost: B retransmits its FIN from LAST_ACK", needs: LOST_ACK_NEEDS, lab: labLostAck },
  { name: 'fin-wait2-timeout', title: "A's orphaned FIN_WAIT2 times out (TCP_LINGER2 = 1 s) while B never closes", loopback: finWait2Timeout, lab: labFinWait2Timeout },
  { name: 'time-wait', title: 'TIME_WAIT and its 60 s timer, seen through sock_diag', loopback: timeWait, lab: labTimeWait },
];

/**
 * The scenario called `name`, or `undefined`. Spelt as you like, as state names are: case, `_` for
 * `-`, and `fin-wait-2` for `fin-wait2` (`NORMAL`, `Three_Way`, `FIN_WAIT_2_TIMEOUT`).
 */
export function scenario(name: string): Scenario | undefined {
  const wanted = name.trim().toLowerCase().replace(/_/g, '-').replace(/fin-wait-([12])/g, 'fin-wait$1');
  return SCENARIOS.find((s) => s.name === wanted);
}
