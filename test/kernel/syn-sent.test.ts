/**
 * Kernel row 20 (numbered in ./helpers.ts): a close in SYN_SENT. The socket is handed back before
 * it connects (`host.connectSocket()`), its SYN held on the wire, and closed there.
 */
import { describe, expect } from 'vitest';
import { once } from 'node:events';
import { tcpState } from '../../src/index';
import { fdOf, waitForState, waitUntil } from '../../src/testing/index';
import { expectSegments, itLab, waitForSegment } from './helpers';

describe('kernel row 20: close in SYN_SENT', () => {
  itLab('20. close() in SYN_SENT sends nothing; the late SYN-ACK then gets RST', async (lab) => {
    const { a, b, wire } = lab;
    const server = await b.listen(80);
    let accepted = 0;
    server.on('connection', () => accepted++);
    wire.hold((s) => s.from === 'a' && s.flags.includes('SYN'));
    const sa = a.connectSocket(80);
    sa.on('error', () => {}); // destroyed before it connects: no 'connect', and no error either
    await waitForState(sa, 'SYN_SENT');
    const syn = await waitForSegment(wire, "a's SYN, held", (e) => e.verdict === 'hold');
    expect(tcpState(fdOf(sa))).toBe('SYN_SENT');
    expect(a.findSocket(sa)?.state).toBe('SYN_SENT');
    const port = syn.src.port; // not sa.localPort: Node may have no answer before the connect ends
    sa.destroy();
    await once(sa, 'close');
    // A forgot it at once, and sent nothing: the only segment so far is the SYN the wire holds.
    expect(a.sockets({ remotePort: 80 })).toEqual([]);
    expectSegments(wire.log, ['a <SEQ=0><CTL=SYN> hold'], { verdicts: ['pass', 'hold', 'release', 'drop', 'delay'], withVerdict: true });
    // The SYN reaches B late: B answers SYN-ACK, and A, which has no such connection, answers RST.
    wire.pass().release();
    await waitForSegment(wire, "A's RST", (e) => e.from === 'a' && e.flags.includes('RST'));
    expectSegments(wire.log, ['a <SEQ=0><CTL=SYN> hold', 'a <SEQ=0><CTL=SYN> release', 'b <SEQ=0><ACK=1><CTL=SYN,ACK> pass', 'a <SEQ=1><CTL=RST> pass'], {
      verdicts: ['pass', 'hold', 'release', 'drop', 'delay'],
      withVerdict: true,
    });
    // B's half-open connection (a request socket, SYN_RECV) is gone with the RST; nothing was accepted.
    const tuple = { local: { address: b.address, port: 80 }, remote: { address: a.address, port } };
    await waitUntil("B forgot the half-open connection", () => b.findSocket(tuple) === undefined && b.sockets({ localPort: 80 }).every((s) => s.state === 'LISTEN'));
    expect(b.sockets({ localPort: 80 }).map((s) => s.state)).toEqual(['LISTEN']);
    expect(accepted).toBe(0);
  });
});
