/**
 * Kernel row 4 (numbered in ./helpers.ts): the half-close of RFC 1122 4.2.2.13. As the row has it,
 * B half-closes here (`closeWrite()`: FIN after Node's queued writes) and A, in CLOSE_WAIT, keeps
 * sending; B, in FIN_WAIT2 with its fd open, receives every byte. The wire shows the data after the
 * FIN: every segment of A's acknowledges B's FIN (ACK=2), and every segment of B's sits at SEQ=2.
 */
import { describe, expect } from 'vitest';
import { once } from 'node:events';
import { closeWrite, tcpState } from '../../src/index';
import { waitUntil } from '../../src/testing/index';
import { connect, expectSegments, itLab, segmentText, waitForSegment } from './helpers';

/** Bytes A sends after B's FIN: about 70 full segments at the wire's MSS (1448). */
const SIZE = 100_000;

describe('kernel row 4: half-close', () => {
  itLab('4. half-close: B sends FIN, A in CLOSE_WAIT sends 100 000 bytes after it, B in FIN_WAIT2 receives them all', async (lab) => {
    const { a, b, wire } = lab;
    const { sa, sb } = await connect(lab, { allowHalfOpen: true });
    wire.clearLog();
    const received: Buffer[] = [];
    sb.on('data', (chunk: Buffer) => received.push(chunk));
    const aEnded = once(sa, 'end');

    await closeWrite(sb); // resolves once B's kernel shows its FIN acknowledged
    await aEnded;
    expect(tcpState(sb)).toBe('FIN_WAIT2');
    expect(tcpState(sa)).toBe('CLOSE_WAIT');
    // With its fd open, B's FIN_WAIT2 has no timer: it waits for A as long as A likes.
    expect(b.sockets({ port: 80, states: ['FIN_WAIT2'] })).toEqual([
      expect.objectContaining({ timer: { kind: 'off', expiresMs: 0, retransmits: 0 }, inode: expect.any(Number) }),
    ]);
    expect(a.sockets({ states: ['CLOSE_WAIT'] })).toEqual([expect.objectContaining({ timer: expect.objectContaining({ kind: 'off' }) })]);

    // A sends normally from CLOSE_WAIT; B receives everything in FIN_WAIT2.
    const data = Buffer.alloc(SIZE, 0x61);
    sa.write(data);
    await waitUntil('B has read every byte', () => received.reduce((n, c) => n + c.length, 0) === SIZE);
    expect(Buffer.concat(received).equals(data)).toBe(true);
    expect(tcpState(sa)).toBe('CLOSE_WAIT');
    expect(tcpState(sb)).toBe('FIN_WAIT2');

    // A closes too: B goes to TIME_WAIT, A's kernel forgets the connection. (Both ends have now
    // read and sent a FIN, so Node closes both fds: only sock_diag shows the rest.)
    sa.end();
    await waitUntil("B's TIME_WAIT", () => b.sockets({ port: 80, states: ['TIME_WAIT'] }).length === 1);
    await waitUntil("A's connection gone", () => a.sockets({ remotePort: 80 }).length === 0);
    await waitForSegment(wire, "B's last ACK", (e) => e.from === 'b' && e.relAck === SIZE + 2);

    // The wire: B's FIN and A's ACK of it, then A's data, every byte in order, each segment
    // acknowledging B's FIN; B only acknowledges, at SEQ=2; then A's FIN after the last byte and
    // B's ACK of it. (A segment may be sent twice: a tail-loss probe repeats the last one when
    // B's delayed ACK is slow, so a repeat is allowed, a gap is not.)
    const log = wire.log.filter((e) => e.verdict === 'pass');
    expectSegments(log.slice(0, 2), ['b <SEQ=1><ACK=1><CTL=FIN,ACK>', 'a <SEQ=1><ACK=2><CTL=ACK>']);
    const fromA = log.slice(2).filter((e) => e.from === 'a');
    const fromB = log.slice(2).filter((e) => e.from === 'b');
    let next = 1;
    for (const segment of fromA.filter((e) => e.len > 0)) {
      expect(segmentText(segment)).toBe(`a <SEQ=${segment.relSeq}><ACK=2><CTL=ACK><DATA=${segment.len}>`);
      const seq = segment.relSeq as number;
      if (seq === next) next += segment.len;
      else expect(seq + segment.len).toBeLessThanOrEqual(next); // a repeat of bytes already sent
    }
    expect(next).toBe(SIZE + 1);
    expect([...new Set(fromA.filter((e) => e.len === 0).map(segmentText))]).toEqual([`a <SEQ=${SIZE + 1}><ACK=2><CTL=FIN,ACK>`]);
    expect(fromB.every((e) => e.len === 0 && e.relSeq === 2 && e.flags.join() === 'ACK')).toBe(true);
    expect(segmentText(fromB[fromB.length - 1])).toBe(`b <SEQ=2><ACK=${SIZE + 2}><CTL=ACK>`);
  });
});
