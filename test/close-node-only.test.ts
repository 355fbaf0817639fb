/**
 * gracefulClose() without the native part (FINWAIT_NATIVE points at a missing file, as in
 * test/unavailable.test.ts): what it reports when Node closes the socket under the close, and a
 * second call on the same socket. The sockets are real.
 */
import { afterEach, describe, expect, it } from 'vitest';
import * as finwait from '../src/index';
import { pair, waitFor, type Pair, withoutNativePart } from './helpers';

withoutNativePart();

let p: Pair | undefined;
afterEach(async () => {
  await p?.close();
  p = undefined;
});

describe('gracefulClose() with what Node alone can do', () => {
  it('a write after the close began: Node destroyed the socket, which is what the report says (no RST claimed); a second call joins', async () => {
    expect(finwait.capabilities().close).toBe('node');
    p = await pair({ client: { allowHalfOpen: true } });
    const peer: string[] = [];
    p.client.on('end', () => peer.push('end')).on('error', (e: NodeJS.ErrnoException) => peer.push(e.code ?? 'error'));
    p.server.on('error', () => {}); // the application's ERR_STREAM_WRITE_AFTER_END
    const first = finwait.gracefulClose(p.server, { timeout: 5000 });
    const second = finwait.gracefulClose(p.server, { timeout: 5000 });
    await waitFor('our FIN at the peer', () => (peer.includes('end') ? true : undefined));
    p.server.write('too late');
    const report = await first;
    expect(await second).toBe(report);
    expect(report).toMatchObject({ outcome: 'destroyed', reason: 'closed-elsewhere', kernelView: false, error: { code: 'ERR_STREAM_WRITE_AFTER_END' } });
    expect(report.states).toEqual([]);
    expect(peer).toEqual(['end']);
  });

  it("a second call's earlier deadline applies to the close under way", async () => {
    p = await pair({ client: { allowHalfOpen: true } });
    p.client.on('error', () => {});
    const first = finwait.gracefulClose(p.server, { timeout: 10_000 });
    const second = finwait.gracefulClose(p.server, { timeout: 100 });
    const report = await first;
    expect(await second).toBe(report);
    expect(report).toMatchObject({ outcome: 'reset-sent', reason: 'deadline' });
    expect(report.durations.total).toBeLessThan(5000);
  });
});
