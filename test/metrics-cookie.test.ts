/**
 * socketCookie(fd): the one getsockopt(SO_COOKIE) serverMetrics() names an accepted connection by,
 * checked against what sock_diag reports for the same real sockets, and its coded errors; and
 * socketNetnsCookie(fd), the namespace cookie its port filter names a listener's namespace by.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import dgram from 'node:dgram';
import { once } from 'node:events';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { native } from '../src/binding';
import { cookieKeyOf, recordCookie, sockets } from '../src/diag';
import { RECORD, recordCookieKey } from '../src/bpf';
import { hexCookieKey } from '../src/trace/ends';
import { tcpState } from '../src/index';
import { CAP_NET_ADMIN, CAP_SYS_ADMIN, hasCapability, itNeeds, pair, waitFor, type Pair } from './helpers';


let p: Pair | undefined;
afterEach(async () => {
  await p?.close();
  p = undefined;
});

const fdOf = (socket: net.Socket | net.Server): number => (socket as unknown as { _handle: { fd: number } })._handle.fd;
const hex = (cookie: bigint): string => cookie.toString(16).padStart(16, '0');

describe('socketCookie()', () => {
  it("is the cookie sockDiagId reads and sock_diag reports, for both ends of a connection and the listener", async () => {
    p = await pair();
    const client = native().socketCookie(fdOf(p.client));
    const server = native().socketCookie(fdOf(p.server));
    const listener = native().socketCookie(fdOf(p.listener));
    expect(typeof client).toBe('bigint');
    expect(new Set([client, server, listener]).size).toBe(3);
    const record = new Uint8Array(64);
    expect(native().sockDiagId(fdOf(p.server), record)).toBe(true);
    expect(recordCookie(record)).toBe(hex(server));
    const port = (p.listener.address() as net.AddressInfo).port;
    // The listener's port names the listener and the accepted end (never a TIME_WAIT: they are open).
    const seen = sockets({ states: ['LISTEN', 'ESTABLISHED'], port });
    const byState = (state: string, local: boolean) => seen.find((e) => e.state === state && (local ? e.local.port === port : e.remote.port === port));
    expect(byState('LISTEN', true)?.cookie).toBe(hex(listener));
    expect(seen.find((e) => e.state === 'ESTABLISHED' && e.local.port === port && e.remote.port === p!.client.localPort)?.cookie).toBe(hex(server));
    expect(byState('ESTABLISHED', false)?.cookie).toBe(hex(client));
    // Read again, the same: it is the socket's, not a counter's next value.
    expect(native().socketCookie(fdOf(p.server))).toBe(server);
  });

  it('a connection the peer reset before Node read anything (in CLOSE) keeps its cookie', async () => {
    p = await pair({ server: { pauseOnConnect: true } });
    const before = native().socketCookie(fdOf(p.server));
    p.server.on('error', () => {});
    p.client.resetAndDestroy();
    // Paused, Node has not read the RST: the fd is still open, its socket in CLOSE.
    await waitFor('the RST', () => (tcpState(p!.server) === 'CLOSE' ? true : undefined));
    expect(native().socketCookie(fdOf(p.server))).toBe(before);
  });

  it('as a Map key: a number while under 2^53, else 16 hex digits, the same from the bigint and from the hex text', () => {
    expect(cookieKeyOf(1n)).toBe(1);
    expect(cookieKeyOf(2n ** 53n - 1n)).toBe(2 ** 53 - 1);
    expect(cookieKeyOf(2n ** 53n)).toBe('0020000000000000');
    expect(cookieKeyOf(2n ** 64n - 1n)).toBe('ffffffffffffffff');
    for (const c of [1n, 0x1234n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 64n - 1n]) expect(hexCookieKey(hex(c))).toBe(cookieKeyOf(c));
  });

  it("the same read from a BPF record's bytes (host order, at 8), as the trace asks before decoding one", () => {
    const view = new DataView(new ArrayBuffer(2 * RECORD));
    const cookies = [1n, 0x1234_5678_9abcn, 2n ** 32n - 1n, 2n ** 32n, 2n ** 53n - 1n, 2n ** 53n, 0xdead_beef_0000_0001n, 2n ** 64n - 1n];
    for (const c of cookies) {
      view.setBigUint64(RECORD + 8, c, os.endianness() === 'LE');
      expect(recordCookieKey(view, RECORD)).toBe(cookieKeyOf(c));
    }
  });

  it('coded errors: EBADF for an fd not open, ENOTSOCK for a file; a UDP socket has a cookie of its own', async () => {
    expect(() => native().socketCookie(-1)).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'getsockopt' }));
    // An fd number this process cannot have open (above any RLIMIT_NOFILE it may raise to).
    expect(() => native().socketCookie(2 ** 30)).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'getsockopt' }));
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-cookie-'));
    const file = fs.openSync(path.join(dir, 'f'), 'w');
    try {
      expect(() => native().socketCookie(file)).toThrow(expect.objectContaining({ code: 'ENOTSOCK', syscall: 'getsockopt' }));
    } finally {
      fs.closeSync(file);
      fs.rmSync(dir, { recursive: true });
    }
    const udp = dgram.createSocket('udp4');
    udp.bind(0, '127.0.0.1');
    await once(udp, 'listening');
    try {
      // Node keeps a dgram socket's handle behind a symbol (kStateSymbol) on newer versions, as _handle before.
      const state = Object.getOwnPropertySymbols(udp).map((k) => (udp as unknown as Record<symbol, { handle?: { fd: number } }>)[k]);
      const fd = (udp as unknown as { _handle?: { fd: number } })._handle?.fd ?? state.find((v) => v?.handle !== undefined)!.handle!.fd;
      expect(fd).toBeGreaterThan(2);
      const cookie = native().socketCookie(fd);
      expect(cookie > 0n).toBe(true);
      // No TCP socket of the host has it: the trace's events never name it.
      expect(sockets({ states: ['LISTEN', 'ESTABLISHED'] }).some((e) => e.cookie === hex(cookie))).toBe(false);
    } finally {
      udp.close();
    }
    expect(() => native().socketCookie('3' as never)).toThrow();
  });
});

describe('socketNetnsCookie()', () => {
  it("is the namespace cookie of the socket's network namespace, for any socket of this one; coded errors as socketCookie()", async () => {
    p = await pair();
    const here = native().netnsCookie();
    expect(here > 0n).toBe(true);
    for (const socket of [p.client, p.server, p.listener]) expect(native().socketNetnsCookie!(fdOf(socket))).toBe(here);
    expect(() => native().socketNetnsCookie!(-1)).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'getsockopt' }));
    expect(() => native().socketNetnsCookie!(2 ** 30)).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'getsockopt' }));
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-netns-cookie-'));
    const file = fs.openSync(path.join(dir, 'f'), 'w');
    try {
      expect(() => native().socketNetnsCookie!(file)).toThrow(expect.objectContaining({ code: 'ENOTSOCK', syscall: 'getsockopt' }));
    } finally {
      fs.closeSync(file);
      fs.rmSync(dir, { recursive: true });
    }
  });

  itNeeds(
    'root (unshare -n, and setpriv to drop CAP_NET_ADMIN)',
    () => (hasCapability(CAP_SYS_ADMIN) && hasCapability(CAP_NET_ADMIN) ? { ok: true } : { ok: false, reason: 'this process lacks CAP_SYS_ADMIN or CAP_NET_ADMIN (not root)' }),
    'needs no privilege: a process without CAP_NET_ADMIN in a namespace of its own reads that namespace\'s cookie from its socket, where SIOCGSKNS is refused',
    async () => {
      const script = `
        const net = require('node:net');
        const n = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'binding.js'))}).native();
        const server = net.createServer().listen(0, '127.0.0.1', () => {
          const fd = server._handle.fd;
          let skns = 'ok';
          try { n.closeFd(n.socketNetns(fd)); } catch (e) { skns = e.code; }
          console.log(JSON.stringify({ cookie: String(n.socketNetnsCookie(fd)), home: String(n.netnsCookie()), skns }));
          server.close();
        });`;
      const drop = ['--inh-caps=-net_admin', '--bounding-set=-net_admin'];
      const child = spawnSync('unshare', ['-n', 'sh', '-c', 'ip link set lo up && exec setpriv "$@"', 'sh', ...drop, process.execPath, '-e', script], { encoding: 'utf8', timeout: 20_000 });
      expect(child.stderr).toBe('');
      const seen = JSON.parse(child.stdout.trim()) as { cookie: string; home: string; skns: string };
      expect(seen.skns).toBe('EPERM');
      expect(seen.cookie).toBe(seen.home);
      expect(seen.cookie).not.toBe(String(native().netnsCookie()));
    },
  );
});
