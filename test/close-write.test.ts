import { afterEach, describe, expect, it } from 'vitest';
import { once } from 'node:events';
import { closeWrite, findSocket, queues, reset, tcpState } from '../src/index';
import { pair, readAll, waitFor, type Pair } from './helpers';

let p: Pair | undefined;
afterEach(async () => {
  await p?.close();
  p = undefined;
});

/** Writes until the paused peer's window is full: bytes wait unsent in the kernel (our FIN would wait behind them), none in Node. */
async function fillPeerWindow(pair: Pair): Promise<void> {
  const chunk = Buffer.alloc(64 * 1024);
  await waitFor('unsent bytes in the kernel, none in Node', () => {
    if (pair.client.writableLength === 0) {
      if (queues(pair.client).unsent > 0) return true;
      pair.client.write(chunk);
    }
    return undefined;
  }, 10_000);
}

describe('closeWrite', () => {
  it("resolves when the kernel shows our FIN acknowledged; the peer gets 'end' and can still send", async () => {
    p = await pair({ server: { allowHalfOpen: true }, client: { allowHalfOpen: true } });
    const peerGot = readAll(p.server);
    p.client.write('request');
    await closeWrite(p.client);
    expect(tcpState(p.client)).toBe('FIN_WAIT2');
    expect((await peerGot).toString()).toBe('request');
    expect(tcpState(p.server)).toBe('CLOSE_WAIT');
    const reply = readAll(p.client);
    p.server.end('response after the FIN');
    expect((await reply).toString()).toBe('response after the FIN');
  });

  it('sends everything Node still queues before the FIN', async () => {
    p = await pair({ server: { allowHalfOpen: true, pauseOnConnect: true } });
    const payload = Buffer.alloc(4 * 1024 * 1024, 1);
    p.client.write(payload);
    expect(p.client.writableLength).toBeGreaterThan(0); // the peer is not reading: Node queues
    const closing = closeWrite(p.client);
    const got = readAll(p.server.resume());
    await closing;
    expect((await got).equals(payload)).toBe(true);
  });

  it('resolves after the peer closed first (CLOSE_WAIT -> LAST_ACK), following the socket after Node closes its fd', async () => {
    p = await pair({ client: { allowHalfOpen: true } });
    p.client.resume();
    p.server.end();
    await once(p.client, 'end');
    expect(tcpState(p.client)).toBe('CLOSE_WAIT');
    const closed = once(p.client, 'close');
    await closeWrite(p.client);
    await closed;
  });

  it("rejects with ECONNRESET when the peer resets before acknowledging our FIN", async () => {
    p = await pair({ server: { pauseOnConnect: true } });
    await fillPeerWindow(p);
    const closing = closeWrite(p.client);
    await waitFor('FIN_WAIT1', () => (tcpState(p!.client) === 'FIN_WAIT1' ? true : undefined));
    reset(p.server);
    await expect(closing).rejects.toMatchObject({ code: 'ECONNRESET' });
  });

  it.each(['reset() here', 'the peer, after Node closed our fd'])('rejects with ECONNRESET when the reset comes from %s while our FIN waits (FIN_WAIT1)', async (by) => {
    p = await pair({ server: { pauseOnConnect: true } });
    p.client.on('error', () => {});
    await fillPeerWindow(p);
    const tuple = { local: { address: p.client.localAddress!, port: p.client.localPort! }, remote: { address: p.client.remoteAddress!, port: p.client.remotePort! } };
    const closing = closeWrite(p.client).catch((error: unknown) => error);
    await waitFor('FIN_WAIT1', () => (tcpState(p!.client) === 'FIN_WAIT1' ? true : undefined));
    if (by === 'reset() here') {
      reset(p.client);
    } else {
      p.client.destroy(); // an orphan in FIN_WAIT1
      await waitFor('the orphan', () => (findSocket(tuple)?.state === 'FIN_WAIT1' ? true : undefined));
      p.server.destroy(); // unread bytes: RST
    }
    expect(await closing).toMatchObject({ code: 'ECONNRESET' });
    expect(findSocket(tuple)).toBeUndefined();
  });

  it('rejects with ERR_SOCKET_CLOSED when the socket is destroyed before the FIN was sent', async () => {
    p = await pair({ server: { pauseOnConnect: true } });
    p.client.write(Buffer.alloc(8 * 1024 * 1024));
    const closing = closeWrite(p.client);
    p.client.destroy();
    await expect(closing).rejects.toMatchObject({ code: 'ERR_SOCKET_CLOSED' });
  });

  it('stops waiting on an AbortSignal', async () => {
    p = await pair({ server: { pauseOnConnect: true } });
    p.client.write(Buffer.alloc(8 * 1024 * 1024));
    const controller = new AbortController();
    const closing = closeWrite(p.client, { signal: controller.signal });
    controller.abort();
    await expect(closing).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
  });

  it('rejects bad arguments with Node codes', async () => {
    await expect(closeWrite(42 as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    p = await pair();
    await expect(closeWrite(p.client, { signal: 'x' as never })).rejects.toMatchObject({
      code: 'ERR_INVALID_ARG_TYPE',
    });
    p.client.destroy();
    await expect(closeWrite(p.client)).rejects.toMatchObject({ code: 'ERR_SOCKET_CLOSED' });
  });
});
