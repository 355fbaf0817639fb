import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { execFileSync, spawnSync } from 'node:child_process';
import * as finwait from '../src/index';
import { pair } from './helpers';
import { itNeedsLab } from './testing/helpers';

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
  let unixDir: string;

  /**
   * The fd of a bound UDP socket. `dgram.Socket#_handle` is deprecated (DEP0112) and gone in
   * Node 26; the handle lives in the socket's state, under a symbol, on every supported Node.
   */
  function udpFd(socket: dgram.Socket): number {
    const symbol = Object.getOwnPropertySymbols(socket).find((s) => s.description === 'state symbol');
    const state = symbol && (socket as unknown as Record<symbol, { handle?: { fd?: number } }>)[symbol];
    if (typeof state?.handle?.fd !== 'number') throw new Error(`no UDP handle found on Node ${process.version}`);
    return state.handle.fd;
  }

  beforeAll(async () => {
    unixDir = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-errors-'));
    const unixPath = path.join(unixDir, 'unix.sock');
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
    fs.rmSync(unixDir, { recursive: true, force: true });
  });

  it('a UDP fd: TCP options are refused by the kernel (EOPNOTSUPP, which libuv names ENOTSUP)', () => {
    const fd = udpFd(udp);
    expect(fd).toBeGreaterThan(0);
    expect(() => finwait.tcpState(fd)).toThrow(code('ENOTSUP'));
    expect(() => finwait.tcpInfo(fd)).toThrow(code('ENOTSUP'));
    expect(() => finwait.getUserTimeout(fd)).toThrow(code('ENOTSUP'));
  });

  it('a Unix stream socket: the kernel says EOPNOTSUPP (ENOTSUP)', () => {
    expect(() => finwait.tcpState(unixClient)).toThrow(code('ENOTSUP'));
    expect(() => finwait.tcpInfo(unixClient)).toThrow(code('ENOTSUP'));
  });

  it('gracefulClose() and closeWrite() refuse a Unix socket before touching it: no timer, listener, end() or reset', async () => {
    const timers = (): number => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const before = timers();
    const listeners = ['data', 'end', 'finish', 'close', 'error'].map((e) => unixClient.listenerCount(e));
    await expect(finwait.gracefulClose(unixClient, { timeout: 1500 })).rejects.toMatchObject({ code: 'ENOTSUP' });
    await expect(finwait.gracefulClose(unixClient, { timeout: 0 })).rejects.toMatchObject({ code: 'ENOTSUP' });
    await expect(finwait.closeWrite(unixClient)).rejects.toMatchObject({ code: 'ENOTSUP' });
    expect(timers()).toBe(before);
    expect(['data', 'end', 'finish', 'close', 'error'].map((e) => unixClient.listenerCount(e))).toEqual(listeners);
    expect(unixClient.writableEnded).toBe(false);
    expect(unixClient.destroyed).toBe(false);
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

  it('takes only integers in int32 range as numbers: no fd is wrapped or truncated into another', async () => {
    const { native } = await import('../src/binding');
    const p = await pair();
    try {
      const fd = (p.client as unknown as { _handle: { fd: number } })._handle.fd;
      expect(native().tcpState(fd)).toBe(1); // ESTABLISHED: the fd itself works
      for (const bad of [fd + 2 ** 32, fd + 0.5, NaN, Infinity, -(2 ** 31) - 1]) {
        let thrown: unknown;
        try {
          native().tcpState(bad);
        } catch (error) {
          thrown = error;
        }
        expect(thrown, String(bad)).toBeInstanceOf(RangeError);
        expect(thrown).toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
      }
    } finally {
      await p.close();
    }
  });

  it('sockDiagFind refuses an fd that is not a sock_diag netlink socket before sending anything', async () => {
    const { native } = await import('../src/binding');
    const p = await pair();
    try {
      const fd = (p.client as unknown as { _handle: { fd: number } })._handle.fd;
      const lookup = () => native().sockDiagFind(fd, new Uint8Array(64), new Uint8Array(72), new Int32Array(1));
      expect(lookup).toThrow(expect.objectContaining({ code: 'EPROTOTYPE', syscall: 'sendto' }));
      // Loopback delivers inside sendto(2): had the request gone out, the peer would hold it now.
      expect(finwait.queues(p.server).unread).toBe(0);
      const closed = fs.openSync(os.devNull, 'r');
      fs.closeSync(closed);
      expect(() => native().sockDiagFind(closed, new Uint8Array(64), new Uint8Array(72), new Int32Array(1))).toThrow(code('EBADF'));
    } finally {
      await p.close();
    }
  });

  it('tunRead refuses an empty buffer (it would read nothing and leave the packet queued)', async () => {
    const { native } = await import('../src/binding');
    const fd = fs.openSync(os.devNull, 'r');
    try {
      expect(() => native().tunRead(fd, new Uint8Array(0))).toThrow(code('ERR_OUT_OF_RANGE'));
    } finally {
      fs.closeSync(fd);
    }
  });
});

describe('the addon in another network namespace', () => {
  const binding = path.join(__dirname, '..', 'dist', 'binding.js');
  /**
   * Runs `script` in a child Node, after `prefix` (a command that runs the rest), and returns its
   * last line as JSON. Killed after 10 s: a call that blocked would otherwise hang this worker.
   */
  const runChild = (prefix: string[], script: string): { status: number | null; result: Record<string, unknown> | undefined; stderr: string } => {
    const command = [...prefix, process.execPath, '-e', script, binding];
    const out = spawnSync(command[0]!, command.slice(1), { encoding: 'utf8', timeout: 10_000 });
    const line = out.stdout.trim().split('\n').pop();
    return { status: out.status, result: line ? (JSON.parse(line) as Record<string, unknown>) : undefined, stderr: out.stderr };
  };

  itNeedsLab('netnsOpen creates nothing (EINVAL for O_CREAT) and never waits (a FIFO without a reader: ENXIO)', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-open-'));
    try {
      const script = `
        const fs = require('node:fs');
        const { native } = require(process.argv[1]);
        const ns = fs.openSync('/proc/self/ns/net', 'r');
        const codeOf = (f) => { try { fs.closeSync(f()); return 'opened'; } catch (e) { return e.code; } };
        const created = codeOf(() => native().netnsOpen(ns, ${JSON.stringify(path.join(dir, 'new'))}, fs.constants.O_WRONLY | fs.constants.O_CREAT));
        const fifo = codeOf(() => native().netnsOpen(ns, ${JSON.stringify(path.join(dir, 'fifo'))}, fs.constants.O_WRONLY));
        console.log(JSON.stringify({ created, fifo }));`;
      execFileSync('mkfifo', [path.join(dir, 'fifo')]);
      const { status, result, stderr } = runChild([], script);
      expect(stderr).toBe('');
      expect(status).toBe(0);
      expect(result).toEqual({ created: 'EINVAL', fifo: 'ENXIO' });
      expect(fs.existsSync(path.join(dir, 'new'))).toBe(false);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  itNeedsLab('a namespace the thread could enter but not leave is refused with EPERM before the thread moves (no abort)', async () => {
    // In a user namespace of its own, the process owns a network namespace its child makes, but
    // not the one it lives in: setns(2) would take it there and refuse the way back.
    const script = `
      const { spawn } = require('node:child_process');
      const fs = require('node:fs');
      const { native } = require(process.argv[1]);
      const home = fs.readlinkSync('/proc/self/ns/net');
      const child = spawn('unshare', ['-n', 'sleep', '30'], { stdio: 'ignore' });
      const deadline = Date.now() + 5000;
      (function look() {
        let ns;
        try { ns = fs.readlinkSync('/proc/' + child.pid + '/ns/net'); } catch {}
        if (ns === undefined || ns === home) {
          if (Date.now() < deadline) return setTimeout(look, 5);
          child.kill();
          throw new Error('the child never entered a namespace of its own');
        }
        const nsFd = fs.openSync('/proc/' + child.pid + '/ns/net', 'r');
        const result = {};
        try { fs.closeSync(native().netnsSocket(nsFd, 2, 1)); result.code = 'made'; } catch (e) { result.code = e.code; result.syscall = e.syscall; }
        result.home = fs.readlinkSync('/proc/thread-self/ns/net') === home;
        child.kill();
        console.log(JSON.stringify(result));
      })();`;
    const { status, result, stderr } = runChild(['unshare', '-U', '-r'], script);
    expect(stderr).toBe('');
    expect(status).toBe(0);
    expect(result).toEqual({ code: 'EPERM', syscall: 'setns', home: true });
  });
});
