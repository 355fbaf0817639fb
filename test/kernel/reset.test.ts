/**
 * Kernel rows 5, 6 and 7 (numbered in ./helpers.ts): where an RST comes from without anyone asking
 * for one. A close with unread data, data sent to a socket that was closed, a SYN to a port nobody
 * listens on.
 */
import { describe, expect } from 'vitest';
import fs from 'node:fs';
import { queues, tcpState } from '../../src/index';
import { waitForState, waitUntil, type Lab } from '../../src/testing/index';
import { connect, expectSegments, fdOf, itLab, waitForSegment, writeResult, type Connection } from './helpers';

/**
 * Both ends paused; B sends 'hello' (5 bytes, left unread in A's kernel), A sends 'data' (4 bytes,
 * left unread in B's); then B closes its fd with those 4 bytes unread. The log is cleared first,
 * once both kernels have acknowledged everything, so that it holds only what the close sent.
 */
async function closeWithUnreadData(lab: Lab, port: number): Promise<Connection> {
  const connection = await connect(lab, { allowHalfOpen: true, pauseOnConnect: true }, port);
  const { sa, sb } = connection;
  sb.write('hello');
  sa.write('data');
  await waitUntil('the bytes queued unread and acknowledged on both ends', () => {
    const qa = queues(sa);
    const qb = queues(sb);
    return qa.unread === 5 && qb.unread === 4 && qa.unacked === 0 && qb.unacked === 0;
  });
  lab.wire.clearLog();
  sb.destroy(); // close(2) with 4 bytes unread: the kernel sends RST instead of FIN
  await waitForState(sa, ['CLOSE', 'CLOSE_WAIT']);
  return connection;
}

describe('kernel rows 5-7: RSTs nobody asked for', () => {
  itLab('5. close with unread data sends RST; the peer reads the bytes already queued, then ECONNRESET once, then EOF', async (lab) => {
    const { a, b, wire } = lab;
    const { sa } = await closeWithUnreadData(lab, 80);
    // RST, not FIN: A's kernel is in CLOSE, not CLOSE_WAIT, and B's forgot the connection at once.
    expect(tcpState(sa)).toBe('CLOSE');
    expect(b.sockets({ port: 80 }).map((s) => s.state)).toEqual(['LISTEN']);
    expect(a.sockets({ remotePort: 80 })).toEqual([]);
    await waitForSegment(wire, "B's RST", (e) => e.flags.includes('RST'));
    // B had sent 5 bytes (next SEQ 6) and received 4 (ACK 5).
    expectSegments(wire.log, ['b <SEQ=6><ACK=5><CTL=RST,ACK>']);
    // The bytes A's kernel had queued survive the RST.
    expect(queues(sa).unread).toBe(5);

    // recv(2) on A's fd (Node is paused and reads nothing): the bytes, ECONNRESET once, then 0 (EOF).
    const buffer = Buffer.alloc(64);
    const fd = fdOf(sa);
    expect(buffer.toString('latin1', 0, fs.readSync(fd, buffer))).toBe('hello');
    expect(() => fs.readSync(fd, buffer)).toThrow(expect.objectContaining({ code: 'ECONNRESET' }));
    expect(fs.readSync(fd, buffer)).toBe(0);
    expect(fs.readSync(fd, buffer)).toBe(0);

    // Through Node, the same close reads as the bytes and then, on Node 20 and 22, 'end': libuv
    // takes the hang-up after a short read for end-of-file and never calls recv() again, so
    // ECONNRESET is not reported; only the kernel's state (and the pending SO_ERROR) tells this
    // RST from a FIN. Node 24 and later read on and emit 'error' ECONNRESET.
    const second = await closeWithUnreadData(lab, 81);
    expect(tcpState(second.sa)).toBe('CLOSE');
    const events: string[] = [];
    second.sa.on('data', (chunk: Buffer) => events.push(`data ${chunk.toString()}`));
    second.sa.on('error', (error: NodeJS.ErrnoException) => events.push(`error ${error.code}`));
    second.sa.on('end', () => events.push('end'));
    second.sa.resume();
    await waitUntil("Node's report", () => events.some((e) => e === 'end' || e.startsWith('error')));
    const major = Number(process.versions.node.split('.')[0]);
    expect(events).toEqual(['data hello', major >= 24 ? 'error ECONNRESET' : 'end']);
    // After 'end' the fd is still open: CLOSE, where a FIN would have left CLOSE_WAIT. (The
    // 'error' of Node 24 and later destroys the socket.)
    if (major < 24) expect(tcpState(second.sa)).toBe('CLOSE');
  });

  itLab('6. data after the receiver closed: the first send succeeds, the orphan answers RST, later sends get EPIPE', async (lab) => {
    const { a, b, wire } = lab;
    const { sa, sb } = await connect(lab, { allowHalfOpen: true });
    wire.clearLog();
    sb.destroy(); // close(2), nothing unread: FIN
    await waitForState(sa, 'CLOSE_WAIT');
    // B's socket lives on as an orphan in FIN_WAIT2 (no fd: inode 0), under tcp_fin_timeout (60 s).
    const orphan = await waitUntil("B's orphan in FIN_WAIT2", () => b.sockets({ port: 80, states: ['FIN_WAIT2'] })[0]);
    expect(orphan).toMatchObject({ inode: 0, timer: { kind: 'timewait' } });
    expect(orphan.timer.expiresMs).toBeGreaterThan(55_000);

    expect(await writeResult(sa, 'x')).toBe('ok');
    // The orphan cannot deliver data to anyone: RST (no ACK bit: it answers A's segment's ACK number).
    await waitForState(sa, 'CLOSE');
    await waitForSegment(wire, "B's RST", (e) => e.flags.includes('RST'));
    expect(b.sockets({ port: 80 }).map((s) => s.state)).toEqual(['LISTEN']);
    expect(a.sockets({ remotePort: 80 })).toEqual([]);
    // The RST came in CLOSE_WAIT, so the error is EPIPE, not ECONNRESET.
    expect(await writeResult(sa, 'y')).toBe('EPIPE');

    expectSegments(wire.log, [
      'b <SEQ=1><ACK=1><CTL=FIN,ACK>',
      'a <SEQ=1><ACK=2><CTL=ACK>',
      'a <SEQ=1><ACK=2><CTL=ACK><DATA=1>',
      'b <SEQ=2><CTL=RST>',
    ]);
  });

  itLab('7. SYN to a port nobody listens on: ECONNREFUSED, segments S and R.', async (lab) => {
    const { a, b, wire } = lab;
    await expect(a.connect(81)).rejects.toMatchObject({ code: 'ECONNREFUSED', syscall: 'connect' });
    await waitForSegment(wire, "B's RST", (e) => e.flags.includes('RST'));
    // B's kernel never had a connection, so its RST's SEQ is 0, not relative to any ISN.
    expectSegments(wire.log, ['a <SEQ=0><CTL=SYN>', 'b <SEQ=0><ACK=1><CTL=RST,ACK>']);
    expect(wire.log[1].relSeq).toBeUndefined();
    expect(wire.log[1].seq).toBe(0);
    expect(a.sockets({ remotePort: 81 })).toEqual([]);
    expect(b.sockets({ port: 81 })).toEqual([]);
  });
});
