/**
 * Kernel rows 17, 18 and 19 (numbered in ./helpers.ts): segments that reach a TIME_WAIT socket.
 * A copy of the peer's FIN (`wire.replay()`), an RST made on the wire (`wire.inject()`), and a new
 * SYN on the same 4-tuple. The TIME_WAIT socket is read through sock_diag in its namespace.
 */
import { describe, expect } from 'vitest';
import { once } from 'node:events';
import type net from 'node:net';
import type { SocketEntry } from '../../src/index';
import { waitForState, waitUntil, type Lab } from '../../src/testing/index';
import { connect, expectSegments, finFrom, itLab, waitForSegment } from './helpers';

/** A closes first, B after A's FIN_WAIT2: A's end is in TIME_WAIT; returns B's FIN as logged. */
async function timeWaitOnA(lab: Lab, sa: net.Socket, sb: net.Socket) {
  lab.wire.clearLog();
  sa.end();
  await waitForState(sa, 'FIN_WAIT2');
  sb.end();
  await lab.a.waitForState(sa, 'TIME_WAIT');
  return waitForSegment(lab.wire, "B's FIN", finFrom('b'));
}

describe('kernel rows 17-19: segments that reach TIME_WAIT', () => {
  itLab('17. a FIN retransmitted into TIME_WAIT is re-ACKed and restarts the 60 s timer', async (lab) => {
    const { a, wire } = lab;
    const { sa, sb } = await connect(lab, { allowHalfOpen: true, pauseOnConnect: true });
    const fin = await timeWaitOnA(lab, sa, sb);
    const entry = (): SocketEntry => a.findSocket(sa)!;
    const first = entry().timer.expiresMs;
    expect(entry()).toMatchObject({ state: 'TIME_WAIT', timer: { kind: 'timewait' } });
    // Let the timer run down 300 ms (read from the timer, not a clock), then B's FIN again.
    await waitUntil('the TIME_WAIT timer 300 ms down', () => entry().timer.expiresMs <= first - 300);
    const before = entry().timer.expiresMs;
    const acks = (): number => wire.log.filter((e) => e.from === 'a' && e.relAck === 2 && !e.flags.includes('FIN')).length;
    const acked = acks();
    const replayedAt = performance.now();
    wire.replay(fin);
    await waitUntil("A's ACK of the copy", () => acks() > acked);
    const after = entry();
    const readAt = performance.now();
    expect(after.state).toBe('TIME_WAIT');
    // Restarted: back to 60 s minus the time since the copy went in (one jiffy of rounding, 4 ms at HZ=250).
    expect(after.timer.expiresMs).toBeGreaterThan(before + 200);
    expect(after.timer.expiresMs).toBeGreaterThanOrEqual(60_000 - (readAt - replayedAt) - 8);
    expect(after.timer.expiresMs).toBeLessThanOrEqual(60_000);
    expectSegments(
      wire.log,
      ['a <SEQ=1><ACK=1><CTL=FIN,ACK> pass', 'b <SEQ=1><ACK=2><CTL=ACK> pass', 'b <SEQ=1><ACK=2><CTL=FIN,ACK> pass', 'a <SEQ=2><ACK=2><CTL=ACK> pass', 'b <SEQ=1><ACK=2><CTL=FIN,ACK> replay', 'a <SEQ=2><ACK=2><CTL=ACK> pass'],
      { verdicts: ['pass', 'replay'], withVerdict: true },
    );
  });

  for (const rfc1337 of [0, 1] as const) {
    itLab(`18. RFC 1337: with net.ipv4.tcp_rfc1337=${rfc1337} an in-window RST ${rfc1337 ? 'is ignored by' : 'kills'} a TIME_WAIT`, async (lab) => {
      const { a, wire } = lab;
      expect(a.sysctl('net.ipv4.tcp_rfc1337', rfc1337)).toBe(String(rfc1337));
      const { sa, sb } = await connect(lab, { allowHalfOpen: true, pauseOnConnect: true });
      const fin = await timeWaitOnA(lab, sa, sb);
      await waitForSegment(wire, "A's last ACK", (e) => e.from === 'a' && e.relAck === 2 && !e.flags.includes('FIN'));
      // B's next sequence number, in window for A's TIME_WAIT: an RST as B's kernel would send it.
      wire.inject('b', { flags: ['RST'], relSeq: 2, of: fin });
      if (rfc1337) {
        // Ignored: A's TIME_WAIT is still there once A answered a later segment (a FIN copy, re-ACKed).
        const acks = (): number => wire.log.filter((e) => e.from === 'a' && e.relAck === 2).length;
        const acked = acks();
        wire.replay(fin);
        await waitUntil("A's ACK of the copy after the RST", () => acks() > acked);
        expect(a.findSocket(sa)?.state).toBe('TIME_WAIT');
      } else {
        await waitUntil("A's TIME_WAIT gone", () => a.findSocket(sa) === undefined);
      }
      expect(a.sockets({ remotePort: 80 }).map((s) => s.state)).toEqual(rfc1337 ? ['TIME_WAIT'] : []);
      expectSegments(
        wire.log.filter((e) => e.verdict === 'inject'),
        ['b <SEQ=2><CTL=RST> inject'],
        { verdicts: ['inject'], withVerdict: true },
      );
      // A sent nothing for the RST.
      const rst = wire.log.findIndex((e) => e.verdict === 'inject');
      expect(wire.log.slice(rst + 1).filter((e) => e.from === 'a' && e.verdict === 'pass').length).toBe(rfc1337 ? 1 : 0);
    });
  }

  itLab('19. a SYN to a TIME_WAIT 4-tuple is accepted; the new ISN is the old SND.NXT + 65537', async (lab) => {
    const { a, b, wire } = lab;
    const server = await b.listen(80, { allowHalfOpen: true, pauseOnConnect: true });
    let accepted = once(server, 'connection') as Promise<[net.Socket]>;
    // B closes first this time: the TIME_WAIT is on the listener's side, where a new SYN arrives.
    const sa = await a.connect(80, { localPort: 40_019, allowHalfOpen: true, pauseOnConnect: true });
    const [sb] = await accepted;
    sb.end();
    await waitForState(sb, 'FIN_WAIT2');
    sa.end();
    await b.waitForState(sb, 'TIME_WAIT');
    const finB = await waitForSegment(wire, "B's FIN", finFrom('b'));
    sa.destroy();
    await once(sa, 'close');
    await waitUntil("A's end gone (LAST_ACK, then B's ACK): its port is free", () => a.sockets({ remotePort: 80 }).length === 0);
    const tuple = { local: { address: b.address, port: 80 }, remote: { address: a.address, port: 40_019 } };
    expect(b.findSocket(tuple)?.state).toBe('TIME_WAIT');
    wire.clearLog();
    accepted = once(server, 'connection') as Promise<[net.Socket]>;
    const again = await a.connect(80, { localPort: 40_019, allowHalfOpen: true, pauseOnConnect: true });
    const [sb2] = await accepted;
    expect(b.findSocket(tuple)?.state).toBe('ESTABLISHED');
    expect(b.sockets({ states: ['TIME_WAIT'] })).toEqual([]);
    const synAck = wire.log.find((e) => e.from === 'b' && e.flags.includes('SYN'))!;
    // B's old SND.NXT is one past its FIN; the new ISN is 65535 + 2 beyond it (tcp_timewait_state_process).
    expect(synAck.seq).toBe((finB.seq + 1 + 65_537) >>> 0);
    expectSegments(wire.log, ['a <SEQ=0><CTL=SYN>', 'b <SEQ=0><ACK=1><CTL=SYN,ACK>', 'a <SEQ=1><ACK=1><CTL=ACK>']);
    again.destroy();
    sb2.destroy();
  });
});
