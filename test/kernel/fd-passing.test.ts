/**
 * Kernel row 23 (numbered in ./helpers.ts): a connection's fd passed to another socket with
 * SCM_RIGHTS is the same kernel socket twice. Closing the fd it came from sends nothing on the
 * wire: the connection stays ESTABLISHED, the copy reads what the peer sends next and answers it;
 * only the close of the last fd sends the FIN. What `closeServer()` relies on when it hands an idle
 * keep-alive connection to the next instance of a server (`listenReusePort()`'s `adoptConnections`).
 */
import { describe, expect } from 'vitest';
import { once } from 'node:events';
import net from 'node:net';
import { native } from '../../src/binding';
import { abstractSockaddr } from '../../src/sockaddr';
import { waitUntil } from '../../src/testing/index';
import { connect, fdOf, itLab, segmentText, waitForSegment } from './helpers';

/** A connected pair of SOCK_SEQPACKET Unix sockets (an abstract listener, closed once accepted). */
function seqpacketPair(): [number, number] {
  const n = native();
  const address = abstractSockaddr(`finwait-test/row23/${process.pid}/${Math.random()}`);
  const listener = n.seqpacketSocket!();
  try {
    n.bind(listener, address);
    n.listen(listener, 1);
    const client = n.seqpacketSocket!();
    n.connectUnix!(client, address);
    return [client, n.acceptUnix!(listener)];
  } finally {
    n.closeFd(listener);
  }
}

describe('kernel row 23: a connection passed to another fd (SCM_RIGHTS)', () => {
  itLab('23. B passes its fd and closes it: nothing on the wire; the copy serves A; its close sends the FIN', async (lab) => {
    const { b, wire } = lab;
    const { sa, sb } = await connect(lab);
    const [sender, receiver] = seqpacketPair();
    const n = native();
    try {
      expect(n.sendFds!(sender, Int32Array.of(fdOf(sb)), 1, Uint8Array.of(1))).toBe(1);
      const fds = new Int32Array(4);
      expect(n.recvFds!(receiver, new Uint8Array(4), fds)).toBe(1);
      expect(fds[0]).toBeGreaterThanOrEqual(0);
      expect(fds[1]).toBe(-1);
      wire.clearLog();

      // The fd B's connection came with is closed: the kernel socket lives on in the copy.
      sb.destroy();
      await once(sb, 'close');
      expect(b.sockets({ port: 80, states: ['ESTABLISHED'] })).toHaveLength(1);

      // A sends; the copy reads it and answers, on the same connection.
      const copy = new net.Socket({ fd: fds[0], readable: true, writable: true });
      let heard = '';
      copy.setEncoding('utf8').on('data', (d: string) => {
        heard += d;
        if (heard === 'ping') copy.write('pong');
      });
      let answer = '';
      sa.setEncoding('utf8').on('data', (d: string) => (answer += d));
      sa.write('ping');
      await waitUntil('the answer through the copy', () => answer === 'pong');
      await waitForSegment(wire, "A's ACK of the answer", (e) => e.from === 'a' && e.len === 0 && e.relAck === 5);
      // Up to here neither end sent a FIN or an RST.
      expect(wire.log.filter((e) => e.flags.includes('FIN') || e.flags.includes('RST')).map(segmentText)).toEqual([]);

      // The last fd closes: now B's FIN goes out.
      copy.end();
      const fin = await waitForSegment(wire, "B's FIN", (e) => e.from === 'b' && e.flags.includes('FIN'));
      expect(segmentText(fin)).toBe('b <SEQ=5><ACK=5><CTL=FIN,ACK>');
      expect(wire.log.some((e) => e.flags.includes('RST'))).toBe(false);
      sa.end();
      await waitUntil("A's connection gone", () => lab.a.sockets({ remotePort: 80 }).length === 0);
    } finally {
      n.closeFd(sender);
      n.closeFd(receiver);
    }
  });
});
