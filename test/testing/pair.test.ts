/** connectPair and the state waiters, on loopback. */
import { afterEach, describe, expect, it } from 'vitest';
import { once } from 'node:events';
import { queues, tcpState } from '../../src/index';
import { connectPair, fdOf, waitForState, waitUntil, type SocketPair } from '../../src/testing/index';

let p: SocketPair | undefined;
afterEach(async () => {
  await p?.close();
  p = undefined;
});

describe('connectPair', () => {
  it('connects two ordinary sockets over 127.0.0.1', async () => {
    p = await connectPair();
    expect(p.client.remotePort).toBe(p.server.localPort);
    expect(p.server.remotePort).toBe(p.client.localPort);
    expect(tcpState(p.client)).toBe('ESTABLISHED');
    p.client.write('hi');
    expect(String((await once(p.server, 'data'))[0])).toBe('hi');
  });

  it('connects over ::1', async () => {
    p = await connectPair({ host: '::1' });
    expect(p.client.remoteAddress).toBe('::1');
    expect(p.client.remoteFamily).toBe('IPv6');
    expect(tcpState(p.server)).toBe('ESTABLISHED');
  });

  it('allowHalfOpen: the peer of a half-close stays in CLOSE_WAIT and can still send', async () => {
    p = await connectPair({ allowHalfOpen: true });
    p.client.end();
    await once(p.server.resume(), 'end');
    expect(tcpState(p.server)).toBe('CLOSE_WAIT');
    await waitForState(p.client, 'FIN_WAIT2');
    p.server.write('still here');
    expect(String((await once(p.client, 'data'))[0])).toBe('still here');
  });

  it('without allowHalfOpen, Node ends the peer at once (the default)', async () => {
    p = await connectPair();
    p.server.resume();
    p.client.resume();
    p.client.end();
    await once(p.server, 'close');
    await once(p.client, 'end');
  });

  it('pauseOnConnect: neither end reads, so data and the FIN stay in the kernel', async () => {
    p = await connectPair({ pauseOnConnect: true, allowHalfOpen: true });
    p.client.write('abc');
    p.server.write('defg');
    await waitUntil('3 bytes unread at the server', () => queues(p!.server).unread === 3);
    await waitUntil('4 bytes unread at the client', () => queues(p!.client).unread === 4);
    p.client.end();
    await waitForState(p.server, 'CLOSE_WAIT');
    // Node read nothing: no 'data', no 'end', and the fd is still open.
    expect(p.server.readableLength).toBe(0);
    expect(p.server.readableEnded).toBe(false);
    p.server.resume();
    expect(String((await once(p.server, 'data'))[0])).toBe('abc');
  });

  it('validates its options', async () => {
    await expect(connectPair({ allowHalfOpen: 'yes' as never })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    await expect(connectPair(null as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
  });
});

describe('waitForState', () => {
  it('resolves with the state once the kernel shows it, and accepts a list of states', async () => {
    p = await connectPair({ allowHalfOpen: true });
    expect(await waitForState(p.client, 'ESTABLISHED')).toBe('ESTABLISHED');
    p.client.end();
    expect(await waitForState(p.client, ['FIN_WAIT2', 'CLOSE'])).toBe('FIN_WAIT2');
    const fd = fdOf(p.server);
    expect(await waitForState(fd, 'CLOSE_WAIT')).toBe('CLOSE_WAIT');
  });

  it('rejects at the timeout naming the state it last saw', async () => {
    p = await connectPair();
    const started = performance.now();
    const error = await waitForState(p.client, 'FIN_WAIT2', { timeout: 50 }).catch((e: unknown) => e);
    expect(performance.now() - started).toBeGreaterThanOrEqual(49);
    expect(error).toMatchObject({
      code: 'ERR_FINWAIT_TIMEOUT',
      lastSeen: 'ESTABLISHED',
      message: 'Timed out after 50 ms waiting for FIN_WAIT2; last seen: ESTABLISHED',
    });
  });

  it('rejects with the socket\'s own error when it closes meanwhile', async () => {
    p = await connectPair();
    const waiting = waitForState(p.client, 'FIN_WAIT2');
    p.client.destroy();
    await expect(waiting).rejects.toMatchObject({ code: 'ERR_SOCKET_CLOSED' });
  });

  it('stops on an AbortSignal', async () => {
    p = await connectPair();
    const controller = new AbortController();
    const waiting = waitForState(p.client, 'CLOSE', { signal: controller.signal });
    controller.abort();
    await expect(waiting).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
  });

  it('validates its arguments', async () => {
    p = await connectPair();
    await expect(waitForState(p.client, 'FIN_WAIT_2' as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    await expect(waitForState(p.client, [])).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    await expect(waitForState(p.client, 'CLOSE', { timeout: -1 })).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
    await expect(waitForState('3' as never, 'CLOSE')).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
  });
});

describe('waitUntil', () => {
  it('polls a probe until it returns a value, first on the spot', async () => {
    let calls = 0;
    expect(await waitUntil('three calls', () => (++calls === 3 ? 'done' : undefined))).toBe('done');
    expect(await waitUntil('now', () => 0)).toBe(0); // 0 is a value; only undefined and false mean "not yet"
  });

  it('rejects with the probe\'s error', async () => {
    await expect(waitUntil('x', () => {
      throw new Error('probe failed');
    })).rejects.toThrow('probe failed');
  });

  it('a lastSeen() that throws at the deadline still rejects with ERR_FINWAIT_TIMEOUT, naming what it threw', async () => {
    const lastSeen = (): never => {
      throw new Error('no state to show');
    };
    await expect(waitUntil('never', () => undefined, { timeout: 5 }, lastSeen)).rejects.toMatchObject({
      code: 'ERR_FINWAIT_TIMEOUT',
      message: 'Timed out after 5 ms waiting for never; lastSeen() threw: no state to show',
    });
    await expect(waitUntil('x', () => 1, {}, 'state' as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
  });
});
