/**
 * The same checks everywhere: a socket whose handle holds a number that is not a valid fd is
 * refused by every call (tcpStates() read another fd for 2^32 + fd), and calls whose own syscall
 * would take any socket (SO_LINGER, SO_KEEPALIVE, the queue ioctls) refuse what is not TCP with
 * ENOTSUP, as the TCP_INFO calls do, instead of succeeding on a Unix or UDP socket.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import dgram from 'node:dgram';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import * as finwait from '../../src/index';
import { pair, type Pair } from '../helpers';

const code = (c: string) => expect.objectContaining({ code: c });

describe('a socket whose handle holds an invalid fd', () => {
  let p: Pair;
  beforeAll(async () => {
    p = await pair();
  });
  afterAll(async () => {
    await p.close();
  });

  /** A net.Socket whose handle reports `fd`, as a patched or foreign handle could. */
  const withFd = (fd: number): net.Socket => {
    const fake = new net.Socket();
    Object.defineProperty(fake, '_handle', { value: { fd }, configurable: true });
    return fake;
  };

  it('is refused with ERR_OUT_OF_RANGE by every call, tcpStates() included, and no other fd is read', () => {
    const real = (p.client as unknown as { _handle: { fd: number } })._handle.fd;
    for (const bad of [real + 2 ** 32, real + 0.5, 2 ** 31]) {
      const s = withFd(bad);
      expect(() => finwait.tcpState(s), String(bad)).toThrow(code('ERR_OUT_OF_RANGE'));
      expect(() => finwait.tcpStates([s]), String(bad)).toThrow(code('ERR_OUT_OF_RANGE'));
      expect(() => finwait.tcpInfo(s), String(bad)).toThrow(code('ERR_OUT_OF_RANGE'));
      expect(() => finwait.queues(s), String(bad)).toThrow(code('ERR_OUT_OF_RANGE'));
      expect(() => finwait.getLinger(s), String(bad)).toThrow(code('ERR_OUT_OF_RANGE'));
      expect(() => finwait.getKeepAlive(s), String(bad)).toThrow(code('ERR_OUT_OF_RANGE'));
    }
    expect(finwait.tcpState(p.client)).toBe('ESTABLISHED');
  });
});

describe('sockets that are not TCP', () => {
  let dir: string;
  let unixServer: net.Server;
  let unixClient: net.Socket;
  let udp: dgram.Socket;

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-non-tcp-'));
    unixServer = net.createServer().listen(path.join(dir, 's.sock'));
    await once(unixServer, 'listening');
    unixClient = net.connect(path.join(dir, 's.sock'));
    await once(unixClient, 'connect');
    udp = dgram.createSocket('udp4');
    udp.bind(0, '127.0.0.1');
    await once(udp, 'listening');
  });
  afterAll(async () => {
    unixClient.destroy();
    udp.close();
    await new Promise((resolve) => unixServer.close(resolve));
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const udpFd = (): number => {
    const symbol = Object.getOwnPropertySymbols(udp).find((s) => s.description === 'state symbol')!;
    return (udp as unknown as Record<symbol, { handle: { fd: number } }>)[symbol].handle.fd;
  };

  it('a Unix socket: reset, setLinger, getLinger, setKeepAlive, getKeepAlive and queues throw ENOTSUP, and nothing changes', () => {
    for (const call of [
      () => finwait.getLinger(unixClient),
      () => finwait.setLinger(unixClient, 0),
      () => finwait.getKeepAlive(unixClient),
      () => finwait.setKeepAlive(unixClient, true),
      () => finwait.queues(unixClient),
      () => finwait.reset(unixClient),
    ]) {
      expect(call).toThrow(code('ENOTSUP'));
    }
    expect(unixClient.destroyed).toBe(false); // reset() refused before destroying anything
  });

  it('a UDP fd: the same calls throw ENOTSUP', () => {
    const fd = udpFd();
    for (const call of [
      () => finwait.getLinger(fd),
      () => finwait.setLinger(fd, 0),
      () => finwait.getKeepAlive(fd),
      () => finwait.setKeepAlive(fd, true),
      () => finwait.queues(fd),
    ]) {
      expect(call).toThrow(code('ENOTSUP'));
    }
  });

  it('a TCP socket still works for each (the check costs one TCP_INFO read)', async () => {
    const p = await pair();
    try {
      expect(finwait.getLinger(p.client)).toBe(null);
      expect(finwait.setKeepAlive(p.client, true)).toBe(true);
      expect(finwait.queues(p.client)).toEqual({ unsent: 0, unacked: 0, unread: 0 });
      const error = once(p.server, 'error');
      finwait.reset(p.client);
      expect((await error)[0]).toMatchObject({ code: 'ECONNRESET' });
    } finally {
      await p.close();
    }
  });
});
