/**
 * Kernel row 22 (numbered in ./helpers.ts): what is left of a connection that received an RST.
 * A reads nothing while B sends data and then resets, so the data and the RST are both in A's
 * kernel; A then writes, reads and closes with raw syscalls on its borrowed fd, where Node would
 * turn the first error into a destroy.
 */
import { describe, expect } from 'vitest';
import fs from 'node:fs';
import { once } from 'node:events';
import { queues, reset, tcpState } from '../../src/index';
import { fdOf, waitForState, waitUntil } from '../../src/testing/index';
import { connect, expectSegments, itLab, waitForSegment } from './helpers';

const code = (fn: () => unknown): string => {
  try {
    return `ok ${String(fn())}`;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code ?? String(error);
  }
};

describe('kernel row 22: after an RST', () => {
  itLab('22. after an RST is received, data already queued stays readable, a write gets ECONNRESET, close() sends nothing', async (lab) => {
    const { a, b, wire } = lab;
    const { sa, sb } = await connect(lab, { allowHalfOpen: true, pauseOnConnect: true });
    sb.write('data');
    await waitUntil("B's 4 bytes queued unread in A, acknowledged", () => queues(sa).unread === 4 && queues(sb).unacked === 0);
    wire.clearLog();
    reset(sb); // SO_LINGER {1, 0}, then close: B sends RST
    await waitForState(sa, 'CLOSE');
    await waitForSegment(wire, "B's RST", (e) => e.from === 'b' && e.flags.includes('RST'));
    expect(b.sockets({ localPort: 80 }).map((s) => s.state)).toEqual(['LISTEN']);
    const fd = fdOf(sa);
    // The RST left the bytes in A's receive queue; the error it set is reported by the first call.
    expect(queues(sa).unread).toBe(4);
    expect(code(() => fs.writeSync(fd, 'more'))).toBe('ECONNRESET');
    const buffer = Buffer.alloc(16);
    expect(code(() => fs.readSync(fd, buffer))).toBe('ok 4');
    expect(buffer.toString('utf8', 0, 4)).toBe('data');
    expect(code(() => fs.readSync(fd, buffer))).toBe('ok 0'); // EOF: the error was reported once
    expect(code(() => fs.writeSync(fd, 'more'))).toBe('EPIPE');
    expect(tcpState(sa)).toBe('CLOSE');
    // close(): nothing on the wire from A, before or after, and nothing left in either namespace.
    sa.destroy();
    await once(sa, 'close');
    expect(a.sockets({ remotePort: 80 })).toEqual([]);
    // A's TUN device is a FIFO: once a later SYN of A's has crossed the wire, anything its close
    // sent has been read (and logged) before it.
    const server = await b.listen(81);
    const accepted = once(server, 'connection');
    const probe = await a.connect(81);
    await accepted;
    probe.destroy();
    expect(wire.log.filter((e) => e.dst.port === 80 || e.src.port === 80).map((e) => `${e.from} ${e.flags.filter((f) => f !== 'PSH').join(',')}`)).toEqual(['b RST,ACK']);
    expectSegments(wire.log.filter((e) => e.src.port === 80), ['b <SEQ=5><ACK=1><CTL=RST,ACK>']);
  });
});
