/**
 * gracefulClose() against a peer that vanishes mid-close: on the lab's wire everything the peer
 * would send is dropped, so our FIN is never acknowledged; the close must end at the deadline with
 * RST, on time, and report what was still unacknowledged. Needs the lab (root): see itLab.
 */
import { describe, expect } from 'vitest';
import { once } from 'node:events';
import type net from 'node:net';
import { gracefulClose } from '../src/index';
import { waitUntil } from '../src/testing/index';
import { itLab } from './testing/helpers';

describe('gracefulClose, peer vanishes', () => {
  itLab('our FIN is never acknowledged: reset at the deadline, on time, unacknowledged bytes reported', async (lab) => {
    const server = await lab.a.listen(7000);
    const accepted = once(server, 'connection') as Promise<[net.Socket]>;
    const client = await lab.b.connect(7000);
    const [socket] = await accepted;
    client.on('error', () => {});
    // From now on b is gone: nothing it sends reaches a.
    lab.wire.drop((segment) => segment.from === 'b');
    socket.write(Buffer.alloc(20_000, 7));
    const report = await gracefulClose(socket, { timeout: 400 });
    expect(report).toMatchObject({ outcome: 'reset-sent', reason: 'deadline' });
    expect(report.durations.total).toBeGreaterThanOrEqual(399);
    expect(report.durations.total).toBeLessThan(1400);
    // 20 000 bytes and our FIN were never acknowledged.
    expect(report.unackedAtClose).toBeGreaterThanOrEqual(20_000);
    expect(report.states.map((s) => s.state)).toContain('FIN_WAIT1');
    expect(report.states.map((s) => s.state)).not.toContain('FIN_WAIT2');
    // The RST went out on the wire from a.
    const rst = await waitUntil('our RST on the wire', () => lab.wire.log.find((entry) => entry.from === 'a' && entry.flags.includes('RST')));
    expect(rst).toBeDefined();
    expect(server.listening).toBe(true);
    server.close();
    client.destroy();
  });
});
