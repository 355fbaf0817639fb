/**
 * Kernel row 3 (numbered in ./helpers.ts), the flagship: a simultaneous close (RFC 793 §3.5, figure
 * 14) between two real kernels, both ends passing through CLOSING, made deterministic by holding
 * segments on the lab's wire.
 *
 *     TCP A                                                TCP B
 * 1.  ESTABLISHED                                          ESTABLISHED
 * 2.  (Close)                                              (Close)
 *     FIN-WAIT-1  --> <SEQ=100><ACK=300><CTL=FIN,ACK>  ... FIN-WAIT-1
 *                 <-- <SEQ=300><ACK=100><CTL=FIN,ACK>  <--
 *                 ... <SEQ=100><ACK=300><CTL=FIN,ACK>  -->
 * 3.  CLOSING     --> <SEQ=101><ACK=301><CTL=ACK>      ... CLOSING
 *                 <-- <SEQ=301><ACK=101><CTL=ACK>      <--
 *                 ... <SEQ=101><ACK=301><CTL=ACK>      -->
 * 4.  TIME-WAIT                                            TIME-WAIT
 */
import { describe, expect } from 'vitest';
import { tcpState } from '../../src/index';
import { isPureAck, waitForState, waitUntil } from '../../src/testing/index';
import { connect, itLab, segments } from './helpers';

describe('kernel row 3: simultaneous close', () => {
  itLab('3. simultaneous close: both ends pass through CLOSING, as in RFC 793 figure 14', async (lab) => {
    const { a, b, wire } = lab;
    // Paused ends never read EOF, so Node keeps both fds open and the kernel's states stay visible.
    const { sa, sb } = await connect(lab, { allowHalfOpen: true, pauseOnConnect: true });
    await waitForState(sb, 'ESTABLISHED');
    wire.clearLog();

    // 2. Both close; every FIN waits on the wire until both ends are in FIN_WAIT1.
    wire.hold((s) => s.flags.includes('FIN'));
    sa.end();
    sb.end();
    await Promise.all([waitForState(sa, 'FIN_WAIT1'), waitForState(sb, 'FIN_WAIT1')]);
    await waitUntil('both FINs held', () => wire.held.length === 2);

    // 3. The FINs cross; each end answers the other's FIN with an ACK, held until both are CLOSING.
    wire.pass().hold(isPureAck);
    expect(wire.release()).toBe(2);
    await Promise.all([waitForState(sa, 'CLOSING'), waitForState(sb, 'CLOSING')]);
    await waitUntil('both ACKs held', () => wire.held.length === 2);

    // 4. The ACKs cross: each end's FIN is acknowledged in CLOSING, so both enter TIME-WAIT,
    // which an open fd reads as CLOSE.
    expect(wire.release()).toBe(2);
    await Promise.all([waitForState(sa, 'CLOSE'), waitForState(sb, 'CLOSE')]);
    expect(b.sockets({ states: ['TIME_WAIT'], port: 80 })).toEqual([expect.objectContaining({ timer: expect.objectContaining({ kind: 'timewait' }) })]);
    expect(a.sockets({ states: ['TIME_WAIT'], port: 80 })).toEqual([expect.objectContaining({ timer: expect.objectContaining({ kind: 'timewait' }) })]);

    // The wire saw exactly figure 14, with each side's numbers relative to its ISN (a data-free
    // connection: both FINs have SEQ=1, both ACKs SEQ=2 ACK=2). The order in which the two hosts'
    // segments reach the wire depends on the kernels, so each step is compared as a set.
    const log = segments(wire.log, { verdicts: ['pass', 'drop', 'hold', 'release', 'delay'], withVerdict: true });
    expect(log).toHaveLength(8);
    expect(log.slice(0, 2).sort()).toEqual(['a <SEQ=1><ACK=1><CTL=FIN,ACK> hold', 'b <SEQ=1><ACK=1><CTL=FIN,ACK> hold']);
    expect(log.slice(2, 4).sort()).toEqual(['a <SEQ=1><ACK=1><CTL=FIN,ACK> release', 'b <SEQ=1><ACK=1><CTL=FIN,ACK> release']);
    expect(log.slice(4, 6).sort()).toEqual(['a <SEQ=2><ACK=2><CTL=ACK> hold', 'b <SEQ=2><ACK=2><CTL=ACK> hold']);
    expect(log.slice(6, 8).sort()).toEqual(['a <SEQ=2><ACK=2><CTL=ACK> release', 'b <SEQ=2><ACK=2><CTL=ACK> release']);
    expect(tcpState(sa)).toBe('CLOSE');
    expect(tcpState(sb)).toBe('CLOSE');
  });
});
