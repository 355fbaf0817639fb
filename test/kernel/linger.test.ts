/**
 * Kernel rows 13 and 14 (numbered in ./helpers.ts): SO_LINGER. {1, 0} makes close() abortive (RST,
 * no TIME_WAIT on either side); {1, N > 0} makes close() block for up to N seconds, even on a
 * non-blocking socket, which is why finwait's setLinger refuses positive values and why row 14 runs
 * in a child process, never on this event loop.
 */
import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import { promisify } from 'node:util';
import { getLinger, reset, setLinger } from '../../src/index';
import { connectPair, waitForState } from '../../src/testing/index';
import { connect, expectSegments, fdOf, itLab, waitForSegment, writeResult } from './helpers';

const pexecFile = promisify(execFile);

/**
 * Row 14 in a child process: a loopback connection whose receiver never reads, the sender
 * non-blocking and filled until EAGAIN (so its FIN cannot go out), then SO_LINGER {1, 1} and
 * close(), timed. Python, because Node has no setsockopt and finwait will not set a positive linger.
 */
const BLOCKING_CLOSE = String.raw`
import fcntl, json, socket, struct, termios, time
server = socket.socket(); server.bind(('127.0.0.1', 0)); server.listen(1)
sender = socket.create_connection(server.getsockname())
receiver, _ = server.accept()  # never reads
sender.setblocking(False)
try:
    while True: sender.send(b'x' * 65536)
except BlockingIOError: pass
unacked = struct.unpack('i', fcntl.ioctl(sender.fileno(), termios.TIOCOUTQ, b'\0' * 4))[0]
sender.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 1))
start = time.monotonic(); sender.close(); took = time.monotonic() - start
print(json.dumps({'nonBlocking': True, 'unackedAtClose': unacked, 'closeSeconds': took}))
`;

describe('kernel rows 13-14: SO_LINGER', () => {
  itLab('13. SO_LINGER {1, 0}: close() sends RST; the peer reads ECONNRESET, then sends get EPIPE; no TIME_WAIT anywhere', async (lab) => {
    const { a, b, wire } = lab;

    // setLinger(s, 0) and close(2). B is paused, so recv(2) is read from its fd, as the kernel says it.
    const one = await connect(lab, { allowHalfOpen: true, pauseOnConnect: true }, 80);
    expect(getLinger(one.sa)).toBeNull();
    expect(setLinger(one.sa, 0)).toBe(0);
    wire.clearLog();
    one.sa.destroy();
    await waitForState(one.sb, 'CLOSE');
    await waitForSegment(wire, "A's RST", (e) => e.flags.includes('RST'));
    expectSegments(wire.log, ['a <SEQ=1><ACK=1><CTL=RST,ACK>']);
    expect(() => fs.readSync(fdOf(one.sb), Buffer.alloc(16))).toThrow(expect.objectContaining({ code: 'ECONNRESET' }));
    expect(await writeResult(one.sb, 'x')).toBe('EPIPE');

    // reset() (SO_LINGER {1, 0} and destroy()): a peer reading through Node gets 'error' ECONNRESET.
    const two = await connect(lab, { allowHalfOpen: true }, 81);
    wire.clearLog();
    const peerError = once(two.sb, 'error');
    reset(two.sa);
    expect((await peerError)[0]).toMatchObject({ code: 'ECONNRESET' });
    await waitForSegment(wire, "A's RST", (e) => e.flags.includes('RST'));
    expectSegments(wire.log, ['a <SEQ=1><ACK=1><CTL=RST,ACK>']);

    // The kernel reports the reset once, to whichever call comes first: a send before any recv
    // gets ECONNRESET (the EPIPE above came after recv had taken it).
    const three = await connect(lab, { allowHalfOpen: true, pauseOnConnect: true }, 82);
    reset(three.sa);
    await waitForState(three.sb, 'CLOSE');
    expect(await writeResult(three.sb, 'x')).toBe('ECONNRESET');

    // No TIME_WAIT, no orphan, nothing left of the three connections in either namespace.
    expect(a.sockets()).toEqual([]);
    expect(b.sockets().map((s) => s.state)).toEqual(['LISTEN', 'LISTEN', 'LISTEN']);
  });

  it('14. SO_LINGER {1, N > 0}: close() blocks up to N s even on a non-blocking socket (in a child process)', async (ctx) => {
    // The reason finwait refuses it: on Node's event loop this would freeze every connection.
    const pair = await connectPair();
    try {
      expect(() => setLinger(pair.client, 1 as never)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    } finally {
      await pair.close();
    }
    let stdout: string;
    try {
      ({ stdout } = await pexecFile('python3', ['-c', BLOCKING_CLOSE], { timeout: 10_000 }));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      return ctx.skip('python3 is not installed: row 14 needs a setsockopt(SO_LINGER, {1, 1}) that neither Node nor finwait makes');
    }
    const result = JSON.parse(stdout) as { nonBlocking: boolean; unackedAtClose: number; closeSeconds: number };
    expect(result.nonBlocking).toBe(true);
    expect(result.unackedAtClose).toBeGreaterThan(0);
    // Blocked for the whole linger time (1 s): the FIN could not be sent, let alone acknowledged.
    expect(result.closeSeconds).toBeGreaterThan(0.95);
    expect(result.closeSeconds).toBeLessThan(2);
  });
});
