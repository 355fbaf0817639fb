import { afterEach, describe, expect, it } from 'vitest';
import { once } from 'node:events';
import { execFileSync } from 'node:child_process';
import os from 'node:os';
import type net from 'node:net';
import { getLinger, reset, setLinger, tcpState } from '../src/index';
import { takeSocketError } from '../src/ops';
import { fdOf } from '../src/fd';
import { findSocket, type SocketTuple } from '../src/diag';
import { nextError, pair, waitFor, type Pair } from './helpers';

let p: Pair | undefined;
afterEach(async () => {
  await p?.close();
  p = undefined;
});

/** The 4-tuple of a connected socket, read while it is open. */
function tupleOf(socket: net.Socket): SocketTuple {
  return {
    local: { address: socket.localAddress!, port: socket.localPort! },
    remote: { address: socket.remoteAddress!, port: socket.remotePort! },
  };
}

/** Lines of `ss -tanH` (iproute2's own sock_diag client) for exactly this connection. */
function ssLines({ local, remote }: SocketTuple): string[] {
  return execFileSync('ss', ['-tanH', 'src', `${local.address}:${local.port}`, 'dst', `${remote.address}:${remote.port}`], {
    encoding: 'utf8',
  })
    .split('\n')
    .filter(Boolean);
}

describe('reset', () => {
  it('sends RST: the peer sees ECONNRESET and no TIME_WAIT is left anywhere', async () => {
    p = await pair();
    const client = tupleOf(p.client);
    const server = tupleOf(p.server);
    const error = nextError(p.server);
    reset(p.client);
    expect(await error).toMatchObject({ code: 'ECONNRESET' });
    expect(p.client.destroyed).toBe(true);
    await once(p.server, 'close');
    expect(findSocket(client)).toBeUndefined();
    expect(findSocket(server)).toBeUndefined();
    expect(ssLines(client)).toEqual([]);
    expect(ssLines(server)).toEqual([]);
  });

  it('works while an end() is still pending behind data the peer will not read', async () => {
    p = await pair({ server: { pauseOnConnect: true } });
    const sent = 8 * 1024 * 1024;
    p.client.write(Buffer.alloc(sent));
    p.client.end();
    expect(p.client.writableFinished).toBe(false);
    reset(p.client);
    // The peer's kernel shows RST, not FIN: CLOSE (a FIN would give CLOSE_WAIT), error ECONNRESET.
    await waitFor('peer in CLOSE', () => (tcpState(p!.server) === 'CLOSE' ? true : undefined));
    expect(takeSocketError(fdOf(p.server))).toBe(os.constants.errno.ECONNRESET);
    // With bytes still queued, libuv reports the RST to Node as 'end' (POLLHUP after a partial
    // read), so the peer must not trust 'end' here: it got only part of what was sent.
    let received = 0;
    p.server.on('data', (chunk: Buffer) => (received += chunk.length));
    p.server.on('error', () => {});
    p.server.resume();
    await once(p.server, 'close');
    expect(received).toBeLessThan(sent);
  });

  it('works after our FIN was sent, in FIN_WAIT2, and leaves no TIME_WAIT', async () => {
    p = await pair({ server: { allowHalfOpen: true } });
    const client = tupleOf(p.client);
    p.client.end();
    await waitFor('FIN_WAIT2', () => (tcpState(p!.client) === 'FIN_WAIT2' ? true : undefined));
    const error = nextError(p.server);
    reset(p.client);
    // The peer already read EOF; its next write meets our RST.
    p.server.write('x');
    expect((await error).code).toMatch(/^(ECONNRESET|EPIPE)$/);
    expect(findSocket(client)).toBeUndefined();
    expect(ssLines(client)).toEqual([]);
  });
});

describe('getLinger / setLinger', () => {
  it('round-trips 0 and null', async () => {
    p = await pair();
    expect(getLinger(p.client)).toBeNull();
    expect(setLinger(p.client, 0)).toBe(0);
    expect(getLinger(p.client)).toBe(0);
    expect(setLinger(p.client, null)).toBeNull();
  });

  it('refuses a positive linger, which would block the event loop, and says what to use instead', async () => {
    p = await pair();
    expect(() => setLinger(p!.client, 5 as never)).toThrow(
      expect.objectContaining({ code: 'ERR_OUT_OF_RANGE', message: expect.stringContaining('gracefulClose') }),
    );
    expect(getLinger(p.client)).toBeNull();
    expect(() => setLinger(p!.client, '0' as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
  });

  it('setLinger(0) then a normal destroy() resets the peer', async () => {
    p = await pair();
    setLinger(p.client, 0);
    const error = nextError(p.server);
    p.client.destroy();
    expect(await error).toMatchObject({ code: 'ECONNRESET' });
  });
});
