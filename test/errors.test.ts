import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import dgram from 'node:dgram';
import { once } from 'node:events';
import * as finwait from '../src/index';
import { pair } from './helpers';

/** Every operation that takes a socket or an fd, called with one target. */
const fdOps: Record<string, (target: never) => unknown> = {
  tcpInfo: finwait.tcpInfo,
  tcpState: finwait.tcpState,
  queues: finwait.queues,
  shutdown: (t) => finwait.shutdown(t, 'write'),
  getLinger: finwait.getLinger,
  setLinger: (t) => finwait.setLinger(t, 0),
  getUserTimeout: finwait.getUserTimeout,
  setUserTimeout: (t) => finwait.setUserTimeout(t, 10),
  getLinger2: finwait.getLinger2,
  setLinger2: (t) => finwait.setLinger2(t, 1),
  getKeepAlive: finwait.getKeepAlive,
  setKeepAlive: (t) => finwait.setKeepAlive(t, true),
  getKeepIdle: finwait.getKeepIdle,
  setKeepIdle: (t) => finwait.setKeepIdle(t, 10),
  getKeepIntvl: finwait.getKeepIntvl,
  setKeepIntvl: (t) => finwait.setKeepIntvl(t, 10),
  getKeepCnt: finwait.getKeepCnt,
  setKeepCnt: (t) => finwait.setKeepCnt(t, 3),
};
/** Operations that only take a socket. */
const socketOps: Record<string, (target: never) => unknown> = {
  reset: finwait.reset,
};

const code = (c: string) => expect.objectContaining({ code: c });

describe.each(Object.entries(fdOps))('%s', (name, op) => {
  it('refuses wrong types with ERR_INVALID_ARG_TYPE (TypeError)', () => {
    for (const bad of ['3', 1.5, NaN, null, undefined, {}, [], () => 1, 3n, Symbol('s')]) {
      let thrown: unknown;
      try {
        op(bad as never);
      } catch (error) {
        thrown = error;
      }
      expect(thrown, `${name}(${String(bad)})`).toBeInstanceOf(TypeError);
      expect(thrown).toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    }
  });

  it('refuses negative fds with ERR_OUT_OF_RANGE', () => {
    expect(() => op(-1 as never)).toThrow(code('ERR_OUT_OF_RANGE'));
  });

  it('reports EBADF for a closed fd, with errno and syscall', () => {
    const fd = fs.openSync(os.devNull, 'r');
    fs.closeSync(fd);
    expect(() => op(fd as never)).toThrow(expect.objectContaining({ code: 'EBADF', errno: os.constants.errno.EBADF * -1 }));
    expect(() => op(fd as never)).toThrow(expect.objectContaining({ syscall: expect.stringMatching(/^(getsockopt|setsockopt|ioctl|shutdown)$/) }));
  });

  it('reports ENOTSOCK for a file fd', () => {
    const fd = fs.openSync(os.devNull, 'r');
    try {
      // queues() uses ioctl, which on a file is ENOTTY: the kernel's own answer.
      expect(() => op(fd as never)).toThrow(expect.objectContaining({ code: expect.stringMatching(/^(ENOTSOCK|ENOTTY)$/) }));
    } finally {
      fs.closeSync(fd);
    }
  });

  it('refuses a destroyed socket and one that never connected with ERR_SOCKET_CLOSED', async () => {
    expect(() => op(new net.Socket() as never)).toThrow(code('ERR_SOCKET_CLOSED'));
    const p = await pair();
    p.client.destroy();
    expect(() => op(p.client as never)).toThrow(code('ERR_SOCKET_CLOSED'));
    await p.close();
  });
});

describe('reset', () => {
  it('takes only sockets, and refuses closed ones', async () => {
    expect(() => socketOps.reset(3 as never)).toThrow(code('ERR_INVALID_ARG_TYPE'));
    expect(() => socketOps.reset(new net.Socket() as never)).toThrow(code('ERR_SOCKET_CLOSED'));
  });
});

describe('sockets that are not TCP keep the kernel own error code', () => {
  let udp: dgram.Socket;
  let unixServer: net.Server;
  let unixClient: net.Socket;
  const unixPath = path.join(os.tmpdir(), `finwait-${process.pid}.sock`);

  beforeAll(async () => {
    udp = dgram.createSocket('udp4');
    udp.bind(0, '127.0.0.1');
    await once(udp, 'listening');
    unixServer = net.createServer().listen(unixPath);
    await once(unixServer, 'listening');
    unixClient = net.connect(unixPath);
    await once(unixClient, 'connect');
  });
  afterAll(async () => {
    udp.close();
    unixClient.destroy();
    await new Promise((resolve) => unixServer.close(resolve));
  });

  it('a UDP fd: TCP options are refused by the kernel (EOPNOTSUPP, which libuv names ENOTSUP)', () => {
    const fd = (udp as unknown as { _handle: { fd: number } })._handle.fd;
    expect(fd).toBeGreaterThan(0);
    expect(() => finwait.tcpState(fd)).toThrow(code('ENOTSUP'));
    expect(() => finwait.tcpInfo(fd)).toThrow(code('ENOTSUP'));
    expect(() => finwait.getUserTimeout(fd)).toThrow(code('ENOTSUP'));
  });

  it('a Unix stream socket: the kernel says EOPNOTSUPP (ENOTSUP)', () => {
    expect(() => finwait.tcpState(unixClient)).toThrow(code('ENOTSUP'));
    expect(() => finwait.tcpInfo(unixClient)).toThrow(code('ENOTSUP'));
  });

  it('the dgram socket object itself is refused by type', () => {
    expect(() => finwait.tcpState(udp as never)).toThrow(code('ERR_INVALID_ARG_TYPE'));
  });
});

describe('the addon guards direct calls too', () => {
  it('throws instead of crashing on wrong native arguments', async () => {
    const { native } = await import('../src/binding');
    expect(() => native().tcpState('x' as never)).toThrow(code('ERR_INVALID_ARG_TYPE'));
    expect(() => native().tcpInfo(0, 'x' as never)).toThrow(code('ERR_INVALID_ARG_TYPE'));
    expect(() => native().tcpStates(new Int32Array(2), new Int32Array(1))).toThrow(code('ERR_OUT_OF_RANGE'));
    expect(() => native().ioctlInt(0, 0x1234)).toThrow(code('EINVAL'));
  });
});
