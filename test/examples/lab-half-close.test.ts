// A kernel test as a user of finwait writes it: two real Linux TCP stacks in the lab, the wire's
// log checked segment by segment, states checked with the vitest matchers.
import { expect, test } from 'vitest';
import { once } from 'node:events';
import type net from 'node:net';
import { closeWrite, watch } from 'finwait';
import { createLab, formatSegment, labAvailable, waitUntil } from 'finwait/testing';
import { matchers } from 'finwait/vitest';

expect.extend(matchers);

// The lab needs root (or a user namespace); skip elsewhere, but never in CI.
const lab = labAvailable();
const needsLab = !lab.ok && process.env.CI !== 'true';

test.skipIf(needsLab)('half-close: after our FIN the peer still sends, and we still read', async () => {
  const theLab = await createLab();
  const { a, b, wire } = theLab;
  try {
    const server = await b.listen(80, { allowHalfOpen: true });
    const accepted = once(server, 'connection') as Promise<[net.Socket]>;
    const client = await a.connect(80, { allowHalfOpen: true });
    const [peer] = await accepted;
    const history = watch(client);
    wire.clearLog(); // forget the handshake

    await closeWrite(client); // FIN sent, and the kernel shows it acknowledged
    expect(client).toBeInTcpState('FIN_WAIT2');
    expect(peer).toBeInTcpState('CLOSE_WAIT');

    let received = '';
    client.on('data', (chunk: Buffer) => (received += chunk));
    peer.write('still talking'); // the peer sends after our FIN...
    await waitUntil('the reply read', () => received === 'still talking');
    peer.end(); // ...and then closes its side

    await history.until('TIME_WAIT'); // seen through sock_diag: the fd reads CLOSE
    expect(history).toHaveSeenStates(['ESTABLISHED', 'FIN_WAIT1', 'FIN_WAIT2', 'TIME_WAIT']);
    // In RFC 793's notation (numbers relative to each side's ISN, PSH left out): our FIN and its
    // ACK, the two FINs, and our last ACK, of the peer's FIN after its 13 bytes.
    const log = wire.log.map((e) => `${e.from} ${formatSegment(e).replace(',PSH', '')}`);
    expect(log.slice(0, 2)).toEqual(['a <SEQ=1><ACK=1><CTL=FIN,ACK>', 'b <SEQ=1><ACK=2><CTL=ACK>']);
    expect(log.filter((s) => s.includes('FIN'))).toEqual(['a <SEQ=1><ACK=1><CTL=FIN,ACK>', 'b <SEQ=14><ACK=2><CTL=FIN,ACK>']);
    expect(log.at(-1)).toBe('a <SEQ=2><ACK=15><CTL=ACK>');
  } finally {
    await theLab.close();
  }
});
