/**
 * The scenarios of `finwait demo` in the lab: TCP A in host `a`'s network namespace, TCP B in
 * host `b`'s, every segment between them logged by the wire, and held or dropped where a
 * scenario needs the network to misbehave (`simultaneous`, `three-way`, `lost-ack`). Each returns
 * the same `Diagram` as its loopback version, with `segments` and `path: 'lab'`.
 */
import net from 'node:net';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import { closeWrite, queues, reset, setLinger2, tcpInfo, tcpState, type LifecycleState } from '../index';
import { isPureAck, type LogEntry } from '../testing/index';
import { ctlOf, segmentLabel, type Diagram, type Segment, type Side } from './diagram';
import { withLab, type LabEndOptions, type LabRun } from './lab-run';
import { DEADLINE, within } from './wait';

const HALF_OPEN: LabEndOptions = { allowHalfOpen: true };
/** Never reads, so Node never closes the fd on its own: the fd shows every state to the end. */
const PAUSED: LabEndOptions = { allowHalfOpen: true, pauseOnConnect: true };

/** Retransmitted FINs `lost-ack` lets B send before the wire passes A's ACKs again. */
export const LOST_ACK_RETRANSMISSIONS = 3;

const ctl = (s: Segment): string => ctlOf(s.flags);
const has = (s: Segment, bit: string): boolean => ctl(s).split(',').includes(bit);
const name = (side: Side): string => side.toUpperCase();

/** The segments after the three-way handshake (its last one is the first without SYN). */
function afterHandshake(segments: readonly Segment[]): Segment[] {
  const ack = segments.findIndex((s) => !has(s, 'SYN'));
  return ack < 0 ? [] : segments.slice(ack + 1);
}

/** The segments that reached the other end: passed, delayed, or released after a hold (each once). */
function delivered(segments: readonly Segment[]): Segment[] {
  return segments.filter((s) => s.verdict === 'pass' || s.verdict === 'release' || s.verdict === 'delay');
}

/** `"A <SEQ=1><ACK=1><CTL=FIN,ACK>, B <SEQ=1><ACK=2><CTL=ACK>"`. */
function listed(segments: readonly Segment[]): string {
  return segments.map((s) => `${name(s.from)} ${segmentLabel(s)}`).join(', ');
}

/** `"a FIN,ACK"` per segment, for comparing with what a figure shows. */
function shape(segments: readonly Segment[]): string[] {
  return segments.map((s) => `${s.from} ${ctl(s)}`);
}

function same(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** What the wire carried after the handshake, as a note. */
function wireNote(segments: readonly Segment[]): string {
  const close = delivered(afterHandshake(segments));
  return `the wire delivered ${close.length} segment${close.length === 1 ? '' : 's'} after the handshake: ${listed(close)}`;
}

function sockets(run: LabRun): { a: net.Socket; b: net.Socket } {
  return { a: run.sockets.a, b: run.sockets.b };
}

export function labNormal(): Promise<Diagram> {
  return withLab({ client: HALF_OPEN, server: HALF_OPEN }, async (run) => {
    const { a, b } = sockets(run);
    a.resume();
    b.resume();
    run.act('a', 'close: closeWrite()');
    await within(closeWrite(a), 'closeWrite()');
    await run.until('b', 'CLOSE_WAIT');
    run.act('b', 'close: end()');
    b.end();
    await run.until('a', 'TIME_WAIT');
    await run.done('b');
    const close = delivered(afterHandshake(run.segments()));
    const figure13 = same(shape(close), ['a FIN,ACK', 'b ACK', 'b FIN,ACK', 'a ACK']);
    const notes = [
      figure13 && run.seen('a', 'FIN_WAIT2')
        ? "A was seen in FIN_WAIT2 before B closed, and the wire carried figure 13's four segments: A's FIN, B's ACK of it on its own, B's FIN, A's ACK"
        : `figure 13 has four segments (FIN, ACK, FIN, ACK); ${wireNote(run.segments())}`,
    ];
    return run.diagram('normal', 'normal close (RFC 793 figure 13)', notes);
  });
}

export function labThreeWay(): Promise<Diagram> {
  return withLab({ client: HALF_OPEN, server: HALF_OPEN }, async (run) => {
    const { a, b } = sockets(run);
    const { wire } = run.lab;
    a.resume();
    b.resume();
    // B's ACK of A's FIN is lost until B has closed, so the only ACK A gets rides on B's FIN.
    wire.drop((s) => s.from === 'b' && isPureAck(s));
    b.once('end', () => {
      run.act('b', "close: end() on A's FIN");
      b.end();
    });
    run.act('a', 'close: end()');
    a.end();
    await run.wait("B's FIN on the wire", () => wire.log.some((e) => e.from === 'b' && e.flags.includes('FIN')));
    wire.pass();
    await run.until('a', 'TIME_WAIT');
    await run.done('b');
    const segments = run.segments();
    const dropped = segments.filter((s) => s.verdict === 'drop');
    const close = delivered(afterHandshake(segments));
    const threeSegments = same(shape(close), ['a FIN,ACK', 'b FIN,ACK', 'a ACK']);
    const notes = [
      dropped.length > 0
        ? `the wire dropped B's pure ACK of A's FIN (${listed(dropped)}) until B had closed, as if it were lost`
        : "B closed before its ACK of A's FIN was due, so that ACK rode on B's FIN: nothing had to be dropped",
      threeSegments && !run.seen('a', 'FIN_WAIT2')
        ? "B's FIN+ACK acknowledged A's FIN, so A went from FIN_WAIT1 straight to TIME_WAIT, FIN_WAIT2 skipped: three segments delivered, FIN, FIN+ACK, ACK"
        : wireNote(segments),
    ];
    return run.diagram('three-way', 'the peer closes at once: three segments (FIN, FIN+ACK, ACK)', notes);
  });
}

export function labSimultaneous(): Promise<Diagram> {
  return withLab({ client: PAUSED, server: PAUSED }, async (run) => {
    const { a, b } = sockets(run);
    const { wire } = run.lab;
    // Every FIN waits on the wire until both ends have closed.
    wire.hold((s) => s.flags.includes('FIN'));
    run.act('a', 'close: end()');
    a.end();
    run.act('b', 'close: end()');
    b.end();
    await run.wait('both ends in FIN_WAIT1', () => run.seen('a', 'FIN_WAIT1') && run.seen('b', 'FIN_WAIT1'));
    await run.wait('both FINs held on the wire', () => wire.held.length >= 2);
    // The FINs cross; each end's ACK of the other's FIN waits until both are CLOSING.
    wire.pass().hold(isPureAck);
    wire.release();
    await run.wait('both ends in CLOSING', () => run.seen('a', 'CLOSING') && run.seen('b', 'CLOSING'));
    await run.wait('both ACKs held on the wire', () => wire.held.length >= 2);
    wire.pass();
    wire.release();
    await run.wait('both ends in TIME_WAIT', () => run.reached('a', 'TIME_WAIT') && run.reached('b', 'TIME_WAIT'));
    const both = (state: LifecycleState): boolean => run.seen('a', state) && run.seen('b', state);
    const notes = [
      "the wire held each FIN until both ends were in FIN_WAIT1, then released both: they crossed, and each end got the other's FIN while its own was unacknowledged",
      both('CLOSING') && both('TIME_WAIT')
        ? 'both ends went FIN_WAIT1 -> CLOSING; the two ACKs were held until both were CLOSING, then released: each FIN acknowledged, both ends went to TIME_WAIT (figure 14)'
        : `figure 14 has both ends in CLOSING, then TIME_WAIT; ${wireNote(run.segments())}`,
      'both ends were paused (pauseOnConnect), so Node never read the FIN and kept both fds open: each fd shows CLOSING, then CLOSE once TIME_WAIT began',
    ];
    return run.diagram('simultaneous', 'simultaneous close: both ends through CLOSING (RFC 793 figure 14)', notes);
  });
}

export function labHalfClose(): Promise<Diagram> {
  // Two writes of a few full-sized segments each (the loopback version sends 256 KiB): B writes
  // the second only once A has read the first, so A is seen reading in FIN_WAIT2.
  const half = 4096;
  return withLab({ client: HALF_OPEN, server: HALF_OPEN }, async (run) => {
    const { a, b } = sockets(run);
    let received = 0;
    let firstIn = '';
    a.on('data', (chunk: Buffer) => {
      if (received === 0) {
        firstIn = tcpState(a);
        run.act('a', `read: first bytes, in ${firstIn}`);
      }
      received += chunk.length;
    });
    const ended = once(a, 'end');
    b.resume();
    run.act('a', 'half-close: closeWrite()');
    await within(closeWrite(a), 'closeWrite()');
    await run.until('b', 'CLOSE_WAIT');
    run.act('b', `write ${half} bytes in CLOSE_WAIT`);
    b.write(Buffer.alloc(half, 'x'));
    await run.wait(`A to read ${half} bytes`, () => received >= half);
    run.act('b', `write ${half} bytes, then end()`);
    b.end(Buffer.alloc(half, 'y'));
    await within(ended, "A's end-of-file");
    run.act('a', `read ${received} bytes after its own FIN, then end-of-file`);
    await run.until('a', 'TIME_WAIT');
    await run.done('b');
    const close = delivered(afterHandshake(run.segments()));
    const data = close.filter((s) => s.from === 'b' && s.len > 0);
    const again = data.length - new Set(data.map((s) => s.relSeq)).size;
    const acks = close.filter((s) => s.from === 'a' && ctl(s) === 'ACK' && s.len === 0);
    return run.diagram('half-close', 'half-close: data keeps flowing to the end that sent FIN (RFC 1122 4.2.2.13)', [
      `A shut down writing only: after its own FIN it read all ${received} of B's bytes (the first in ${firstIn}), then B's FIN`,
      `on the wire after A's FIN: ${data.length} data segments from B${again > 0 ? ` (${again} of them sent again)` : ''} and ${acks.length} pure ACKs from A, which acknowledges data after its own FIN as before it`,
    ]);
  });
}

export function labReset(): Promise<Diagram> {
  return withLab({}, async (run) => {
    const { a, b } = sockets(run);
    a.resume();
    b.resume();
    const peerError = within(once(b, 'error') as Promise<[NodeJS.ErrnoException]>, "B's 'error'");
    run.act('a', 'abort: reset()');
    reset(a);
    const [error] = await peerError;
    run.act('b', `'error' ${error.code}`);
    await run.done('a');
    await run.done('b');
    const rst = run.segments().find((s) => s.from === 'a' && has(s, 'RST'));
    const leftover = run.lookup('a') ?? run.lookup('b');
    return run.diagram('reset', 'abortive close: RST instead of FIN (SO_LINGER {1, 0})', [
      `reset() set SO_LINGER {1, 0} and closed: A sent ${rst ? `RST (${segmentLabel(rst)}), no FIN` : 'no RST the wire saw'}, and B's application got ${error.code}`,
      leftover ? `a host's sock_diag still lists ${leftover.state} for this connection` : "no TIME_WAIT on either side: neither host's sock_diag has this connection",
    ]);
  });
}

export function labUnreadData(): Promise<Diagram> {
  const request = Buffer.from('a request the server never reads\n');
  return withLab({ listener: 'a', server: { pauseOnConnect: true } }, async (run) => {
    const { a, b } = sockets(run);
    b.resume();
    const peerError = within(once(b, 'error') as Promise<[NodeJS.ErrnoException]>, "B's 'error'");
    run.act('b', `write ${request.length} bytes`);
    b.write(request);
    await run.wait("the bytes in A's receive queue", () => queues(a).unread >= request.length);
    const unread = queues(a).unread;
    run.act('a', `close: destroy() with ${unread} bytes unread`);
    a.destroy();
    const [error] = await peerError;
    run.act('b', `'error' ${error.code}`);
    await run.done('a');
    await run.done('b');
    const segments = run.segments();
    const rst = segments.find((s) => s.from === 'a' && has(s, 'RST'));
    const fin = segments.some((s) => s.from === 'a' && has(s, 'FIN'));
    return run.diagram('unread-data', 'closing with unread data sends RST, not FIN (RFC 1122 4.2.2.13)', [
      `A closed with ${unread} bytes it never read in its receive queue: its kernel sent ${rst ? `RST (${segmentLabel(rst)})` : 'no RST the wire saw'}${fin ? ' and a FIN' : ' instead of FIN'}, and B's application got ${error.code}`,
      "whatever B sent that A had not read is lost, and B cannot tell how much: use a lingering close (read until the peer's FIN) to avoid this",
    ]);
  });
}

export function labFinWait2Timeout(): Promise<Diagram> {
  return withLab({ client: HALF_OPEN, server: HALF_OPEN }, async (run) => {
    const { a, b } = sockets(run);
    b.resume();
    a.resume();
    const linger2 = setLinger2(a, 1);
    run.act('a', `setLinger2(${linger2})`);
    run.act('a', 'half-close: closeWrite()');
    await within(closeWrite(a), 'closeWrite()');
    await run.until('b', 'CLOSE_WAIT');
    run.act('a', 'close: destroy()');
    const closedAt = performance.now();
    a.destroy();
    const orphan = run.lookup('a');
    if (orphan) {
      const timer = orphan.timer.kind === 'off' ? 'no timer' : `${orphan.timer.kind} timer ${(orphan.timer.expiresMs / 1000).toFixed(1)} s`;
      run.act('a', `orphan in sock_diag: ${orphan.state}, ${timer}, inode ${orphan.inode}`);
    }
    await run.done('a', DEADLINE);
    const after = run.segments().filter((s) => s.at > closedAt);
    return run.diagram('fin-wait2-timeout', 'an orphaned FIN_WAIT2 times out (TCP_LINGER2) while the peer never closes', [
      `TCP_LINGER2 = ${linger2} s on A. While A's fd was open, its FIN_WAIT2 had no timer (it would wait forever); once the fd closed, the orphan got the TCP_LINGER2 timer and the kernel dropped it when it ran out, without the peer's FIN`,
      after.length === 0 ? 'nothing went on the wire after A closed its fd: the orphan was dropped silently, and B was not told' : `on the wire after A closed its fd: ${listed(after)}`,
      'B never closed: it stays in CLOSE_WAIT, which has no timer, until its application closes',
    ]);
  });
}

export function labTimeWait(): Promise<Diagram> {
  return withLab({}, async (run) => {
    const { a, b } = sockets(run);
    a.resume();
    b.resume();
    b.once('end', () => run.act('b', "close: Node's own end() on the FIN (allowHalfOpen: false)"));
    run.act('a', 'close: end()');
    a.end();
    await run.until('a', 'TIME_WAIT');
    await run.done('b');
    const diagram = run.diagram('time-wait', 'TIME_WAIT: the active closer keeps the 4-tuple for 2MSL (60 s on Linux)', []);
    const tw = diagram.a.diag;
    const notes = [
      tw
        ? `A is in ${tw.state} with a ${tw.timer.kind} timer of ${(tw.timer.expiresMs / 1000).toFixed(1)} s (sock_diag in host a's namespace); ${tw.inode === 0 ? 'inode 0: a TIME_WAIT socket belongs to no process, whether or not the application still holds the fd' : `inode ${tw.inode}`}`
        : "A was no longer in host a's sock_diag when the scenario ended",
      'no fd can show TIME_WAIT (an fd reads CLOSE): only sock_diag, as `ss` and `finwait ss --state TIME_WAIT` do; it holds the 4-tuple until the timer runs out. Closing the lab deleted its namespace, and the TIME_WAIT socket with it',
    ];
    return { ...diagram, notes: [...notes, ...diagram.notes] };
  });
}

export function labLostAck(): Promise<Diagram> {
  const rtoMin = 20_000;
  return withLab({ client: HALF_OPEN, server: PAUSED, sysctl: { 'net.ipv4.tcp_rto_min_us': rtoMin } }, async (run) => {
    const { a, b } = sockets(run);
    const { wire } = run.lab;
    a.resume();
    run.act('a', 'close: closeWrite()');
    await within(closeWrite(a), 'closeWrite()');
    await run.until('b', 'CLOSE_WAIT');
    // From now on A's pure ACKs are lost, until B has retransmitted its FIN a bounded number of times.
    wire.drop((s) => s.from === 'a' && isPureAck(s));
    let fins = 0;
    const onSegment = (entry: LogEntry): void => {
      if (entry.from !== 'b' || !entry.flags.includes('FIN')) return;
      fins++;
      if (fins > 1) {
        // An RTO counts in tcpi_retransmits; a tail-loss probe resends the FIN without counting.
        const info = tcpInfo(b);
        const why = info.retransmits === 0 ? 'tail-loss probe' : 'RTO';
        run.act('b', `FIN sent again (${why}): tcp_info retransmits ${info.retransmits}, backoff ${info.backoff}, rto ${info.rto / 1000} ms`);
      }
      // Before the wire forwards this FIN: A's ACK of it gets through.
      if (fins === 1 + LOST_ACK_RETRANSMISSIONS) wire.pass();
    };
    wire.on('segment', onSegment);
    try {
      run.act('b', 'close: end()');
      b.end();
      await run.until('a', 'TIME_WAIT');
      await run.done('b');
    } finally {
      wire.off('segment', onSegment);
    }
    const segments = run.segments();
    const bFins = segments.filter((s) => s.from === 'b' && has(s, 'FIN'));
    const first = bFins[0]?.at ?? 0;
    const aAcks = segments.filter((s) => s.from === 'a' && s.at > first && ctl(s) === 'ACK');
    const lost = aAcks.filter((s) => s.verdict === 'drop').length;
    return run.diagram('lost-ack', "A's last ACK is lost: B retransmits its FIN from LAST_ACK", [
      `B, in LAST_ACK, sent its FIN ${bFins.length} times (${bFins.map((s) => `+${(s.at - first).toFixed(1)} ms`).join(', ')}); A, in TIME_WAIT, acknowledged each, and the wire dropped ${lost} of those ACKs`,
      `once the wire had read ${LOST_ACK_RETRANSMISSIONS} retransmissions it let A's ACKs through again: the first that passed reached B, which closed (tcp_info above is read when the wire reads each FIN)`,
      `net.ipv4.tcp_rto_min_us = ${rtoMin} in both hosts' namespaces (the default minimum RTO is 200 ms) made B retransmit about 10x sooner`,
      "B was paused (pauseOnConnect), so Node never read A's FIN and kept B's fd open: its tcp_info shows the retransmissions",
    ]);
  });
}
