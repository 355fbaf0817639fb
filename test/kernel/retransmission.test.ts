/**
 * Kernel row 10 (numbered in ./helpers.ts): the final ACK is lost, so B retransmits its FIN from
 * LAST_ACK, each time after a longer timeout, and A, in TIME_WAIT, acknowledges every copy and
 * restarts its 60 s. `net.ipv4.tcp_rto_min_us` = 20 000 in both namespaces makes the timeouts ~10x
 * shorter than the default 200 ms floor, so the whole backoff takes a few hundred milliseconds.
 */
import { describe, expect } from 'vitest';
import { tcpInfo, tcpState } from '../../src/index';
import { isPureAck, waitForState, waitUntil, type LogEntry } from '../../src/testing/index';
import { connect, itLab, segments } from './helpers';

/** B's tcp_info as one of its FINs reached the wire. */
interface FinSample {
  at: number;
  state: string;
  retransmits: number;
  backoff: number;
  rto: number;
  totalRetrans: number;
}

/** A's TIME_WAIT timer read as one of its ACKs reached the wire (`now` on performance.now()). */
interface AckSample {
  now: number;
  expiresMs: number | undefined;
}

describe('kernel row 10: lost final ACK', () => {
  itLab('10. lost final ACK: B retransmits its FIN from LAST_ACK with growing backoff, A re-ACKs each copy from TIME_WAIT', async (lab) => {
    const { a, b, wire } = lab;
    // Before any socket exists: a socket takes its RTO floor when it is created.
    expect(a.sysctl('net.ipv4.tcp_rto_min_us', 20_000)).toBe('20000');
    expect(b.sysctl('net.ipv4.tcp_rto_min_us', 20_000)).toBe('20000');
    const { sa, sb } = await connect(lab, { allowHalfOpen: true, pauseOnConnect: true });
    sa.end();
    await waitForState(sa, 'FIN_WAIT2');
    expect(tcpState(sb)).toBe('CLOSE_WAIT');
    wire.clearLog();

    // Every pure ACK of A's is lost from now on; each segment is sampled as it crosses the wire.
    wire.drop((s) => s.from === 'a' && isPureAck(s));
    const fins: FinSample[] = [];
    const acks: AckSample[] = [];
    const sample = (e: LogEntry): void => {
      if (e.from === 'b' && e.flags.includes('FIN')) {
        const info = tcpInfo(sb);
        fins.push({
          at: e.at,
          state: info.state,
          retransmits: info.retransmits,
          backoff: info.backoff,
          rto: info.rto,
          totalRetrans: info.totalRetrans,
        });
      } else if (e.from === 'a' && e.verdict === 'drop') {
        acks.push({ now: performance.now(), expiresMs: a.sockets({ states: ['TIME_WAIT'] })[0]?.timer.expiresMs });
      }
    };
    wire.on('segment', sample);
    sb.end();
    await waitUntil('five FINs from B: the first, a tail-loss probe and three timeouts', () => fins.length >= 5 && acks.length >= 5, {
      timeout: 3000,
    });
    wire.off('segment', sample);

    // Each copy of B's FIN is the same segment, and A acknowledges each one (lost on the wire):
    // the k-th ACK is logged after the k-th FIN. (The wire reads both devices as it gets the CPU,
    // so an ACK and the next copy of the FIN may be logged in either order.)
    const finEntries = wire.log.filter((e) => e.from === 'b');
    const ackEntries = wire.log.filter((e) => e.from === 'a');
    expect(segments(finEntries.slice(0, 5), { verdicts: ['pass'], withVerdict: true })).toEqual(Array(5).fill('b <SEQ=1><ACK=2><CTL=FIN,ACK> pass'));
    expect(segments(ackEntries.slice(0, 5), { verdicts: ['drop'], withVerdict: true })).toEqual(Array(5).fill('a <SEQ=2><ACK=2><CTL=ACK> drop'));
    for (let k = 0; k < 5; k++) expect(wire.log.indexOf(ackEntries[k])).toBeGreaterThan(wire.log.indexOf(finEntries[k]));

    // B stays in LAST_ACK (its fd open). Its first retransmission is a tail-loss probe: counted in
    // totalRetrans, but no timeout, no backoff. Every later one is a timeout: retransmits and
    // backoff count it and the RTO doubles. That holds in every sample, whenever it was taken.
    const rto = fins[0].rto / 2 ** Math.max(0, fins[0].totalRetrans - 1);
    expect(rto).toBeGreaterThanOrEqual(20_000);
    expect(rto).toBeLessThan(40_000); // the 20 ms floor, not the default 200 ms
    for (const f of fins) {
      const timeouts = Math.max(0, f.totalRetrans - 1);
      expect(f).toMatchObject({ state: 'LAST_ACK', retransmits: timeouts, backoff: timeouts, rto: rto * 2 ** timeouts });
    }
    const totals = fins.map((f) => f.totalRetrans);
    expect(totals).toEqual([...totals].sort((x, y) => x - y));
    expect(totals[0]).toBe(0);
    expect(totals[4]).toBeGreaterThanOrEqual(4); // the probe and three timeouts
    const first = fins.slice(0, 5);

    // On the wire the gaps between the copies sent on timeouts grow with the backoff (nominally
    // rto, 2 rto, 4 rto after the probe). The times are when this process read each copy from the
    // device, so they carry its scheduling noise: the assertions leave room for it.
    const gaps = first.slice(2).map((f, i) => f.at - first[i + 1].at);
    const rtoMs = first.slice(1, 4).map((f) => f.rto / 1000);
    expect(gaps[2]).toBeGreaterThan(gaps[0]);
    expect(gaps[2]).toBeGreaterThan(rtoMs[2] / 2);
    expect(gaps.reduce((x, y) => x + y)).toBeGreaterThan(0.75 * rtoMs.reduce((x, y) => x + y));

    // A's TIME_WAIT restarts its 60 s at every copy: had it not, the last reading would be lower
    // than the first by the time between them (well over 100 ms).
    expect(acks.every((s) => s.expiresMs !== undefined && s.expiresMs > 59_000)).toBe(true);
    const [firstAck, lastAck] = [acks[0], acks[acks.length - 1]];
    expect(lastAck.now - firstAck.now).toBeGreaterThan(150);
    expect((lastAck.expiresMs as number) + (lastAck.now - firstAck.now) - (firstAck.expiresMs as number)).toBeGreaterThan(100);

    // Let the ACKs through: B's next copy is acknowledged and B's kernel forgets the connection.
    wire.pass();
    await waitForState(sb, 'CLOSE', { timeout: 3000 });
    expect(b.sockets({ port: 80 }).map((s) => s.state)).toEqual(['LISTEN']);
    expect(a.sockets({ states: ['TIME_WAIT'] })).toHaveLength(1);
  });
});
