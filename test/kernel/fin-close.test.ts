/**
 * Kernel rows 1 and 2 (numbered in ./helpers.ts): the orderly close with four segments (RFC 793
 * figure 13) and with three (FIN, FIN+ACK, ACK), between two real kernels on the lab's wire.
 *
 *     TCP A                                                TCP B
 * 1.  ESTABLISHED                                          ESTABLISHED
 * 2.  (Close)
 *     FIN-WAIT-1  --> <SEQ=1><ACK=1><CTL=FIN,ACK>      --> CLOSE-WAIT
 * 3.  FIN-WAIT-2  <-- <SEQ=1><ACK=2><CTL=ACK>          <-- CLOSE-WAIT
 * 4.                                                       (Close)
 *     TIME-WAIT   <-- <SEQ=1><ACK=2><CTL=FIN,ACK>      <-- LAST-ACK
 * 5.  TIME-WAIT   --> <SEQ=2><ACK=2><CTL=ACK>          --> CLOSED
 *
 * Both ends are paused (`pauseOnConnect`): Node never reads the peer's FIN, so it never closes an
 * fd on its own, and each fd shows its kernel's state to the end.
 */
import { describe, expect } from 'vitest';
import { tcpInfo, tcpState } from '../../src/index';
import { isPureAck, waitForState, waitUntil } from '../../src/testing/index';
import { connect, expectSegments, finFrom, itLab, segments, waitForSegment } from './helpers';

describe('kernel rows 1-2: orderly close', () => {
  itLab('1. normal close, 4 segments (RFC 793 figure 13): B closes only after A is in FIN_WAIT2', async (lab) => {
    const { a, b, wire } = lab;
    const { sa, sb } = await connect(lab, { allowHalfOpen: true, pauseOnConnect: true });
    const port = sa.localPort as number;
    wire.clearLog();

    // 2. A closes. Its FIN is held on the wire for a moment so that FIN_WAIT1 is seen, not guessed.
    wire.hold(finFrom('a'));
    sa.end();
    await waitForState(sa, 'FIN_WAIT1');
    await waitUntil("A's FIN held", () => wire.held.length === 1);
    expect(tcpState(sb)).toBe('ESTABLISHED');
    wire.pass().release();

    // 3. B's kernel acknowledges the FIN on its own (a delayed ACK): A FIN_WAIT2, B CLOSE_WAIT.
    await waitForState(sa, 'FIN_WAIT2');
    expect(tcpState(sb)).toBe('CLOSE_WAIT');
    // An fd-held FIN_WAIT2 has no timer (only an orphan's does); CLOSE_WAIT has none either.
    expect(a.sockets({ localPort: port })).toEqual([expect.objectContaining({ state: 'FIN_WAIT2', timer: expect.objectContaining({ kind: 'off' }) })]);
    expect(b.sockets({ remotePort: port })).toEqual([expect.objectContaining({ state: 'CLOSE_WAIT', timer: expect.objectContaining({ kind: 'off' }) })]);

    // 4. B closes: LAST_ACK, held there by holding A's last ACK; A's fd reads CLOSE: TIME_WAIT began.
    wire.hold((s) => s.from === 'a' && isPureAck(s));
    sb.end();
    await waitForState(sb, 'LAST_ACK');
    await waitForState(sa, 'CLOSE');
    expect(a.sockets({ localPort: port })).toEqual([
      expect.objectContaining({ state: 'TIME_WAIT', inode: 0, timer: expect.objectContaining({ kind: 'timewait' }) }),
    ]);
    await waitUntil("A's last ACK held", () => wire.held.length === 1);
    expect(tcpState(sb)).toBe('LAST_ACK');

    // 5. The ACK arrives: B's kernel forgets the connection (its fd reads CLOSE; sock_diag has only the listener).
    wire.pass().release();
    await waitForState(sb, 'CLOSE');
    expect(b.sockets({ port: 80 }).map((s) => s.state)).toEqual(['LISTEN']);
    expect(tcpInfo(sb).retransmits).toBe(0);

    expectSegments(wire.log, [
      'a <SEQ=1><ACK=1><CTL=FIN,ACK>',
      'b <SEQ=1><ACK=2><CTL=ACK>',
      'b <SEQ=1><ACK=2><CTL=FIN,ACK>',
      'a <SEQ=2><ACK=2><CTL=ACK>',
    ]);
    // Nothing was lost or retransmitted: every segment crossed once (the holds delayed two of them).
    expect(segments(wire.log, { verdicts: ['pass', 'hold', 'release', 'drop'], withVerdict: true })).toEqual([
      'a <SEQ=1><ACK=1><CTL=FIN,ACK> hold',
      'a <SEQ=1><ACK=1><CTL=FIN,ACK> release',
      'b <SEQ=1><ACK=2><CTL=ACK> pass',
      'b <SEQ=1><ACK=2><CTL=FIN,ACK> pass',
      'a <SEQ=2><ACK=2><CTL=ACK> hold',
      'a <SEQ=2><ACK=2><CTL=ACK> release',
    ]);
  });

  itLab("2. 3-segment close (FIN, FIN+ACK, ACK): B's pure ACKs dropped by nft in B's namespace until B closed", async (lab) => {
    const { a, b, wire } = lab;
    const { sa, sb } = await connect(lab, { allowHalfOpen: true, pauseOnConnect: true });
    // B sends no data here, so every segment of B's whose only control bit is ACK is a pure ACK.
    await b.nft(`
      table inet row2 {
        chain output {
          type filter hook output priority 0; policy accept;
          tcp sport 80 tcp flags == ack counter drop
        }
      }`);
    wire.clearLog();
    const sentBefore = tcpInfo(sb).segsOut as number;

    sa.end();
    await waitForState(sb, 'CLOSE_WAIT');
    // B's kernel sent its ACK of the FIN (tcpi_segs_out counts it); nft dropped it before the wire.
    await waitUntil("B's ACK of the FIN sent (and dropped)", () => (tcpInfo(sb).segsOut as number) > sentBefore);
    expect(tcpState(sa)).toBe('FIN_WAIT1');
    expect(wire.log.filter((e) => e.from === 'b')).toEqual([]);

    // B closes: its FIN+ACK acknowledges A's FIN too, so A goes FIN_WAIT1 -> TIME_WAIT, skipping FIN_WAIT2.
    sb.end();
    await waitForSegment(wire, "B's FIN", finFrom('b'));
    await b.nft('delete table inet row2');
    await waitForState(sa, 'CLOSE');
    expect(a.sockets({ localPort: sa.localPort as number }).map((s) => s.state)).toEqual(['TIME_WAIT']);
    await waitForState(sb, 'CLOSE');
    expect(b.sockets({ port: 80 }).map((s) => s.state)).toEqual(['LISTEN']);

    await waitForSegment(wire, "A's last ACK", (e) => e.from === 'a' && e.relSeq === 2);
    expectSegments(wire.log, [
      'a <SEQ=1><ACK=1><CTL=FIN,ACK>',
      'b <SEQ=1><ACK=2><CTL=FIN,ACK>',
      'a <SEQ=2><ACK=2><CTL=ACK>',
    ]);
  });
});
