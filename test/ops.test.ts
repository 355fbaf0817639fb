import { afterEach, describe, expect, it } from 'vitest';
import { once } from 'node:events';
import { queues, shutdown, tcpState } from '../src/index';
import { nextError, pair, readAll, waitFor, type Pair } from './helpers';

let p: Pair | undefined;
afterEach(async () => {
  await p?.close();
  p = undefined;
});

describe('queues', () => {
  it('shows bytes the application has not read yet', async () => {
    p = await pair({ server: { pauseOnConnect: true } });
    expect(queues(p.server)).toEqual({ unsent: 0, unacked: 0, unread: 0 });
    p.client.write(Buffer.alloc(1000));
    await waitFor('1000 unread bytes', () => (queues(p!.server).unread === 1000 ? true : undefined));
  });

  it('shows bytes the kernel cannot send while the peer reads nothing (zero window)', async () => {
    p = await pair({ server: { pauseOnConnect: true } });
    const chunk = Buffer.alloc(256 * 1024);
    const q = await waitFor(
      'unsent bytes in the kernel',
      () => {
        if (p!.client.writableLength === 0) p!.client.write(chunk);
        const now = queues(p!.client);
        return now.unsent > 0 ? now : undefined;
      },
      10_000,
    );
    expect(q.unsent).toBeGreaterThan(0);
    expect(q.unacked).toBeGreaterThanOrEqual(0);
    expect(queues(p.server).unread).toBeGreaterThan(0);
  });
});

describe('shutdown (raw)', () => {
  it("'write' sends FIN: the peer gets 'end' and can still send to us", async () => {
    p = await pair({ server: { allowHalfOpen: true }, client: { allowHalfOpen: true } });
    const got = readAll(p.server);
    shutdown(p.client, 'write');
    expect((await got).length).toBe(0);
    expect(tcpState(p.server)).toBe('CLOSE_WAIT');
    const data = new Promise<Buffer>((resolve) => p!.client.once('data', resolve));
    p.server.write('still open');
    expect((await data).toString()).toBe('still open');
  });

  it("'write' bypasses Node: a later write fails with EPIPE", async () => {
    p = await pair({ server: { allowHalfOpen: true }, client: { allowHalfOpen: true } });
    shutdown(p.client, 'write');
    const error = nextError(p.client);
    p.client.write('too late');
    expect(await error).toMatchObject({ code: 'EPIPE' });
  });

  it("'read' makes Node's next read see end-of-file", async () => {
    p = await pair({ client: { allowHalfOpen: true } });
    const ended = once(p.client, 'end');
    shutdown(p.client, 'read');
    await ended;
    expect(tcpState(p.client)).toBe('ESTABLISHED');
  });

  it("'both' sends FIN and ends reading", async () => {
    p = await pair({ server: { allowHalfOpen: true }, client: { allowHalfOpen: true } });
    const peerEnded = once(p.server.resume(), 'end');
    const ended = once(p.client, 'end');
    shutdown(p.client, 'both');
    await Promise.all([peerEnded, ended]);
    expect(tcpState(p.server)).toBe('CLOSE_WAIT');
  });

  it('rejects an unknown direction', async () => {
    p = await pair();
    expect(() => shutdown(p!.client, 'sideways' as never)).toThrow(
      expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }),
    );
  });
});
