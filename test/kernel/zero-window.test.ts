/**
 * Kernel row 21 (numbered in ./helpers.ts): a close behind a zero window. B's receive buffer is
 * small and B reads nothing, so A's data fills B's window; A then closes for writing.
 */
import { describe, expect } from 'vitest';
import { once } from 'node:events';
import type net from 'node:net';
import { queues } from '../../src/index';
import { waitForState, waitUntil } from '../../src/testing/index';
import { finFrom, itLab, waitForSegment, writeResult } from './helpers';

describe('kernel row 21: close behind a zero window', () => {
  itLab('21. behind a zero window the FIN waits until the window opens (FIN_WAIT1 with a probe timer)', async (lab) => {
    const { a, b, wire } = lab;
    const server = await b.listen(80, { allowHalfOpen: true, pauseOnConnect: true, recvBufferSize: 4096 });
    const accepted = once(server, 'connection') as Promise<[net.Socket]>;
    // A's send buffer holds all it writes, so Node hands every byte to the kernel and can shut down.
    const sa = await a.connect(80, { allowHalfOpen: true, pauseOnConnect: true, sendBufferSize: 1 << 20 });
    const [sb] = await accepted;
    const size = 64 * 1024;
    expect(await writeResult(sa, Buffer.alloc(size, 'x'))).toBe('ok');
    await waitForSegment(wire, 'a zero window from B', (e) => e.from === 'b' && e.window === 0);
    sa.end(); // Node's write queue is empty: shutdown(SHUT_WR) at once
    await waitForState(sa, 'FIN_WAIT1');
    // Bytes still unsent; the FIN is queued behind them, and A probes the window instead of sending.
    await waitUntil("A's zero-window probe timer", () => a.findSocket(sa)?.timer.kind === 'probe');
    expect(a.findSocket(sa)).toMatchObject({ state: 'FIN_WAIT1', timer: { kind: 'probe' } });
    expect(queues(sa).unsent).toBeGreaterThan(0);
    expect(wire.log.some(finFrom('a'))).toBe(false);
    expect(b.findSocket(sb)?.state).toBe('ESTABLISHED');
    // B reads: the window opens, the rest of the data goes, then the FIN, right after the last byte.
    let read = 0;
    sb.on('data', (d: Buffer) => (read += d.length));
    sb.resume();
    const fin = await waitForSegment(wire, "A's FIN", finFrom('a'), 10_000);
    expect(fin.relSeq! + fin.len).toBe(1 + size);
    await waitForState(sb, 'CLOSE_WAIT');
    await waitForState(sa, 'FIN_WAIT2');
    await waitUntil('B read everything', () => read === size);
    // Every segment A sent before its FIN carried data or probed: no FIN anywhere before.
    expect(wire.log.filter(finFrom('a'))).toHaveLength(1);
  });
});
