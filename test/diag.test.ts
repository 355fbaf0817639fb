import { afterEach, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { DIAG_MSG_LEN, findSocket, ID_RECORD, recordOf, sameTuple, sockets, type SocketEntry, type SocketFilter, type SocketTuple } from '../src/diag';
import { native } from '../src/binding';
import { shutdown, tcpState } from '../src/ops';
import { pair, waitFor, type Pair } from './helpers';
import { itNeedsLab } from './testing/helpers';

let p: Pair | undefined;
afterEach(async () => {
  await p?.close();
  p = undefined;
});

const SS_STATES: Record<string, string> = {
  ESTAB: 'ESTABLISHED',
  'SYN-SENT': 'SYN_SENT',
  'SYN-RECV': 'SYN_RECV',
  'FIN-WAIT-1': 'FIN_WAIT1',
  'FIN-WAIT-2': 'FIN_WAIT2',
  'TIME-WAIT': 'TIME_WAIT',
  'CLOSE-WAIT': 'CLOSE_WAIT',
  'LAST-ACK': 'LAST_ACK',
  CLOSING: 'CLOSING',
  LISTEN: 'LISTEN',
};

/** `ss -tanH` for sockets with `port` on either end, as `state recvQ sendQ local remote` lines. */
function ss(port: number): string[] {
  const out = execFileSync('/usr/bin/ss', ['-tanH', `( sport = :${port} or dport = :${port} )`], { encoding: 'utf8' });
  // ss writes [::1]:80 and a peer port of * (listeners): make them Node's ::1:80 and port 0.
  const unbracket = (endpoint: string): string => endpoint.replace(/:\*$/, ':0').replace(/^\[(.*)\](:\d+)$/, '$1$2');
  return out
    .trim()
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => {
      const [state, recvQ, sendQ, local, remote] = line.trim().split(/\s+/);
      return `${SS_STATES[state] ?? state} ${recvQ} ${sendQ} ${unbracket(local)} ${unbracket(remote)}`;
    })
    .sort();
}

/**
 * Only the lines of this test's sockets: TIME_WAIT sockets of earlier runs (60 s) can share a
 * port number with a new listener, so every comparison keeps the sockets whose two ports are
 * among `ports` (or 0, a listener's peer).
 */
function scoped(lines: string[], ports: number[]): string[] {
  return lines.filter((line) => {
    const [, , , local, remote] = line.split(' ');
    return [local, remote].every((end) => [...ports, 0].includes(Number(end.slice(end.lastIndexOf(':') + 1))));
  });
}

function lines(entries: SocketEntry[]): string[] {
  return entries
    .map((e) => `${e.state} ${e.recvQ} ${e.sendQ} ${e.local.address}:${e.local.port} ${e.remote.address}:${e.remote.port}`)
    .sort();
}

function tupleOf(socket: net.Socket): SocketTuple {
  return {
    local: { address: socket.localAddress as string, port: socket.localPort as number },
    remote: { address: socket.remoteAddress as string, port: socket.remotePort as number },
  };
}

function entryOf(socket: net.Socket): SocketEntry | undefined {
  const { local, remote } = tupleOf(socket);
  return sockets({ localPort: local.port, remotePort: remote.port }).find((e) => e.local.address === local.address);
}

describe('sockets()', () => {
  it('lists both ends of a connection with their 4-tuples, inode and uid, as ss does', async () => {
    p = await pair();
    const port = p.server.localPort as number;
    const entries = sockets({ port, states: ['ESTABLISHED'] });
    expect(entries).toHaveLength(2);
    const client = entries.find((e) => e.local.port === p!.client.localPort);
    expect(client).toMatchObject({ family: 4, state: 'ESTABLISHED', ...tupleOf(p.client), uid: process.getuid!() });
    expect(client!.timer).toEqual({ kind: 'off', expiresMs: 0, retransmits: 0 });
    expect(entries.find((e) => e.local.port === port)).toMatchObject({ ...tupleOf(p.server), uid: process.getuid!() });
    for (const e of entries) expect(e.inode).toBeGreaterThan(0);
    expect(entries[0].inode).not.toBe(entries[1].inode);
    const ports = [port, client!.local.port];
    expect(scoped(lines(sockets({ port })), ports)).toEqual(scoped(ss(port), ports));
    const ssInode = execFileSync('/usr/bin/ss', ['-tanenH', `sport = :${client!.local.port}`], { encoding: 'utf8' });
    expect(ssInode).toContain(`ino:${client!.inode} `);
  });

  it('filters ports and families in the kernel', async () => {
    p = await pair();
    const port = p.server.localPort as number;
    const clientPort = p.client.localPort as number;
    const ports = [port, clientPort];
    const all = sockets();
    // Each kernel-filtered list holds only matching sockets, and all of this test's that match.
    const check = (filter: SocketFilter, match: (e: SocketEntry) => boolean, expected: number): void => {
      const got = sockets(filter);
      expect(got.filter((e) => !match(e))).toEqual([]);
      expect(scoped(lines(got), ports)).toEqual(scoped(lines(all.filter(match)), ports));
      expect(scoped(lines(got), ports)).toHaveLength(expected);
    };
    check({ port }, (e) => e.local.port === port || e.remote.port === port, 3);
    check({ localPort: port }, (e) => e.local.port === port, 2);
    check({ remotePort: port }, (e) => e.remote.port === port, 1);
    check({ port, localPort: clientPort }, (e) => e.local.port === clientPort && e.remote.port === port, 1);
    check({ localPort: port, remotePort: clientPort }, (e) => e.local.port === port && e.remote.port === clientPort, 1);
    check({ localPort: clientPort, remotePort: clientPort }, () => false, 0);
    check({ port, family: 4 }, (e) => e.family === 4 && (e.local.port === port || e.remote.port === port), 3);
    check({ port, family: 6 }, (e) => e.family === 6 && (e.local.port === port || e.remote.port === port), 0);
    check({ port, states: ['LISTEN'] }, (e) => e.state === 'LISTEN' && e.local.port === port, 1);
    check({ port, states: ['ESTABLISHED', 'LISTEN'] }, (e) => e.state !== 'TIME_WAIT' && (e.local.port === port || e.remote.port === port), 3);
    expect(sockets({ port, states: [] })).toEqual([]);
    expect(sockets({ port, states: ['LISTEN'] }).map((e) => e.remote)).toEqual([{ address: '0.0.0.0', port: 0 }]);
  });

  it('shows TIME_WAIT after an active close, with its 60 s timer, and findSocket finds it', async () => {
    p = await pair();
    const port = p.server.localPort as number;
    const tuple = tupleOf(p.client);
    p.client.end(); // the server ends when it reads EOF (allowHalfOpen: false)
    await once(p.client, 'close');
    const entry = await waitFor('TIME_WAIT in sock_diag', () =>
      sockets({ states: ['TIME_WAIT'], port }).find((e) => e.local.port === tuple.local.port),
    );
    expect(entry).toMatchObject({ ...tuple, family: 4, state: 'TIME_WAIT', inode: 0, recvQ: 0, sendQ: 0 });
    expect(entry.timer.kind).toBe('timewait');
    expect(entry.timer.expiresMs).toBeGreaterThan(55_000);
    expect(entry.timer.expiresMs).toBeLessThanOrEqual(60_000);
    expect(findSocket(tuple)).toMatchObject({ ...tuple, state: 'TIME_WAIT', timer: { kind: 'timewait' } });
    expect(findSocket(entry)).toMatchObject({ state: 'TIME_WAIT' });
    expect(ss(port)).toContain(lines([entry])[0]);
  });

  it('shows a FIN_WAIT2 orphan that no fd can show: no inode, timewait timer', async () => {
    p = await pair({ server: { allowHalfOpen: true } });
    const port = p.server.localPort as number;
    const tuple = tupleOf(p.client);
    p.client.end();
    await waitFor('FIN_WAIT2 on the fd', () => (tcpState(p!.client) === 'FIN_WAIT2' ? true : undefined));
    expect(entryOf(p.client)).toMatchObject({ state: 'FIN_WAIT2', timer: { kind: 'off' } });
    expect(entryOf(p.client)!.inode).toBeGreaterThan(0);
    p.client.destroy();
    await once(p.client, 'close');
    const orphan = await waitFor('the orphan', () => {
      const entry = findSocket(tuple);
      return entry?.inode === 0 ? entry : undefined;
    });
    expect(orphan).toMatchObject({ ...tuple, state: 'FIN_WAIT2', inode: 0, timer: { kind: 'timewait' } });
    expect(orphan.timer.expiresMs).toBeGreaterThan(0); // tcp_fin_timeout, 60 s by default
    expect(orphan.timer.expiresMs).toBeLessThanOrEqual(60_000);
    const mine = (e: SocketEntry): boolean => e.local.port === tuple.local.port || e.remote.port === tuple.local.port;
    expect(sockets({ port, states: ['FIN_WAIT2'] }).filter(mine)).toMatchObject([{ ...tuple, inode: 0 }]);
    expect(sockets({ port, states: ['CLOSE_WAIT'] }).filter(mine)).toMatchObject([{ ...tupleOf(p.server) }]);
    expect(ss(port)).toContain(lines([orphan])[0]);
  });

  it('names the keepalive, retransmit and zero-window probe timers', async () => {
    p = await pair({ server: { pauseOnConnect: true } });
    p.client.setKeepAlive(true, 30_000);
    const keepalive = entryOf(p.client)!.timer;
    expect(keepalive.kind).toBe('keepalive');
    expect(keepalive.expiresMs).toBeGreaterThan(25_000);
    expect(keepalive.expiresMs).toBeLessThanOrEqual(30_000);
    const chunk = Buffer.alloc(1 << 20);
    const seen = new Set<string>();
    await waitFor(
      'a zero-window probe timer',
      () => {
        if (p!.client.writableLength === 0) p!.client.write(chunk);
        const { kind } = entryOf(p!.client)!.timer;
        seen.add(kind);
        return kind === 'probe' ? true : undefined;
      },
      10_000,
    );
    expect(seen).toContain('retransmit');
  });

  it('works on IPv6 and shows IPv4 peers of a dual-stack socket as ::ffff:a.b.c.d, like Node', async () => {
    p = await pair({ host: '::1' });
    const port = p.server.localPort as number;
    const ports = [port, p.client.localPort as number];
    expect(scoped(lines(sockets({ port, family: 6 })), ports)).toEqual(scoped(ss(port), ports));
    expect(scoped(lines(sockets({ port, family: 4 })), ports)).toEqual([]);
    expect(entryOf(p.client)).toMatchObject({ family: 6, ...tupleOf(p.client) });
    expect(findSocket(tupleOf(p.server))).toMatchObject({ family: 6, ...tupleOf(p.server), state: 'ESTABLISHED' });
    await p.close();

    const listener = net.createServer().listen(0); // '::', dual-stack
    await once(listener, 'listening');
    const accepted = once(listener, 'connection') as Promise<[net.Socket]>;
    const client = net.connect((listener.address() as net.AddressInfo).port, '127.0.0.1');
    await once(client, 'connect');
    const [server] = await accepted;
    p = { client, server, listener, close: async () => { client.destroy(); server.destroy(); listener.close(); } };
    expect(server.remoteAddress).toBe('::ffff:127.0.0.1');
    expect(entryOf(server)).toMatchObject({ family: 6, ...tupleOf(server) });
    expect(entryOf(client)).toMatchObject({ family: 4, ...tupleOf(client) });
    // Either spelling of the addresses finds the same socket.
    expect(findSocket(tupleOf(server))).toMatchObject({ family: 6, ...tupleOf(server) });
    expect(findSocket({ ...tupleOf(server), family: 4 })).toMatchObject({ family: 6, ...tupleOf(server) });
    expect(findSocket({ ...tupleOf(client), family: 6 })).toMatchObject({ family: 4, ...tupleOf(client) });
  });
});

describe('findSocket()', () => {
  it('finds an established connection and nothing for a 4-tuple that is not one', async () => {
    p = await pair();
    expect(findSocket(tupleOf(p.client))).toEqual(entryOf(p.client));
    const { local, remote } = tupleOf(p.server);
    // The kernel answers this lookup with the listener on the local address: not a match.
    expect(findSocket({ local, remote: { ...remote, port: remote.port === 1 ? 2 : 1 } })).toBeUndefined();
    expect(findSocket({ local: { ...local, port: 1 }, remote })).toBeUndefined();
  });

  it("reports each socket's cookie, finds by it, and a TIME_WAIT socket keeps its connection's", async () => {
    p = await pair();
    const client = entryOf(p.client)!;
    const server = entryOf(p.server)!;
    expect(client.cookie).toMatch(/^[0-9a-f]{16}$/);
    expect(server.cookie).toMatch(/^[0-9a-f]{16}$/);
    expect(client.cookie).not.toBe(server.cookie);
    // The same number SO_COOKIE reads on the fd (sockDiagId writes it as sock_diag does).
    const fd = (p.client as unknown as { _handle: { fd: number } })._handle.fd;
    const record = new Uint8Array(64);
    expect(native().sockDiagId(fd, record)).toBe(true);
    const view = new DataView(record.buffer);
    const hex8 = (n: number) => n.toString(16).padStart(8, '0');
    expect(hex8(view.getUint32(48, true)) + hex8(view.getUint32(44, true))).toBe(client.cookie);
    const tuple = tupleOf(p.client);
    expect(findSocket(tuple)?.cookie).toBe(client.cookie);
    expect(findSocket({ ...tuple, cookie: client.cookie })).toMatchObject({ state: 'ESTABLISHED', cookie: client.cookie, ...tuple });
    expect(findSocket({ ...tuple, cookie: client.cookie.toUpperCase() })?.cookie).toBe(client.cookie);
    // Another cookie is another socket: the kernel says ENOENT, findSocket undefined.
    const other = (BigInt(`0x${client.cookie}`) ^ 1n).toString(16).padStart(16, '0');
    expect(findSocket({ ...tuple, cookie: other })).toBeUndefined();
    expect(findSocket({ ...tuple, cookie: server.cookie })).toBeUndefined();
    // The client closes first: its TIME_WAIT socket keeps the cookie (the dump above made it).
    p.client.resume();
    p.server.resume();
    p.client.end();
    const timeWait = await waitFor('TIME_WAIT', () => {
      const entry = findSocket({ ...tuple, cookie: client.cookie });
      return entry?.state === 'TIME_WAIT' ? entry : undefined;
    });
    expect(timeWait).toMatchObject({ cookie: client.cookie, inode: 0 });
    expect(findSocket({ ...tuple, cookie: other })).toBeUndefined();
  });

  it('sockDiagId: the state, then the name of a socket with a peer; only the state (CLOSE, no peer) once TIME_WAIT began', async () => {
    p = await pair({ client: { allowHalfOpen: true } });
    const fd = (p.client as unknown as { _handle: { fd: number } })._handle.fd;
    const record = new Uint8Array(64);
    expect(native().sockDiagId(fd, record)).toBe(true);
    expect(record[1]).toBe(1); // TCP_ESTABLISHED
    const tuple = tupleOf(p.client);
    const view = new DataView(record.buffer);
    expect(view.getUint16(4)).toBe(tuple.local.port);
    expect(view.getUint16(6)).toBe(tuple.remote.port);
    const hex8 = (n: number) => n.toString(16).padStart(8, '0');
    const cookie = hex8(view.getUint32(48, true)) + hex8(view.getUint32(44, true));
    expect(view.getBigUint64(56, true)).toBe(native().netnsCookie());
    // The client closes first with a raw shutdown(2) and keeps its fd (Node's writable never ends,
    // and allowHalfOpen keeps it open after 'end'): once TIME_WAIT began, the fd is in CLOSE and
    // has no peer (getpeername: ENOTCONN), so a cookie read now could not be the TIME_WAIT's.
    p.server.resume();
    shutdown(p.client, 'write');
    const timeWait = await waitFor('TIME_WAIT', () => {
      const entry = findSocket(tuple);
      return entry?.state === 'TIME_WAIT' ? entry : undefined;
    });
    expect(timeWait.cookie).toBe(cookie);
    expect(p.client.destroyed).toBe(false);
    expect(tcpState(p.client)).toBe('CLOSE');
    const after = new Uint8Array(64).fill(0xee);
    expect(native().sockDiagId(fd, after)).toBe(false);
    expect(after[1]).toBe(7); // TCP_CLOSE
    expect(after.subarray(4).every((b) => b === 0)).toBe(true);
  });

  it('sockDiagFind: many lookups through one kept netlink socket, in batches of 32, call after call', async () => {
    const pairs = [await pair(), await pair(), await pair()];
    const nl = native().sockDiagSocket();
    try {
      // 40 lookups (two sendmsg batches): the three connections, and 37 4-tuples nobody has.
      const tuples = pairs.map((q) => tupleOf(q.client));
      for (let i = 0; i < 37; i++) {
        tuples.splice(1 + (i % 3), 0, { local: { address: '127.0.0.1', port: 1 + i }, remote: { address: '127.0.0.1', port: 9 } });
      }
      const requests = new Uint8Array(tuples.length * ID_RECORD);
      tuples.forEach((t, i) => requests.set(recordOf(t), i * ID_RECORD));
      const replies = new Uint8Array(tuples.length * DIAG_MSG_LEN);
      const real = new Set(pairs.map((q) => tupleOf(q.client).local.port));
      for (let round = 0; round < 3; round++) {
        const status = new Int32Array(tuples.length);
        native().sockDiagFind(nl, requests, replies, status);
        tuples.forEach((t, i) => {
          if (real.has(t.local.port)) {
            expect(status[i]).toBe(1);
            expect(sameTuple(requests, i, replies, i)).toBe(true);
          } else {
            expect(status[i]).toBe(-2); // ENOENT
          }
        });
      }
    } finally {
      fs.closeSync(nl);
      for (const q of pairs) await q.close();
    }
  });

  it('validates the tuple', () => {
    const ok = { local: { address: '127.0.0.1', port: 1 }, remote: { address: '127.0.0.1', port: 2 } };
    const code = (fn: () => unknown): unknown => {
      try {
        fn();
      } catch (error) {
        return [(error as Error).name, (error as { code?: string }).code];
      }
      return 'no error';
    };
    const bad = (value: unknown): unknown => code(() => findSocket(value as SocketTuple));
    expect(bad(null)).toEqual(['TypeError', 'ERR_INVALID_ARG_TYPE']);
    expect(bad({ ...ok, local: undefined })).toEqual(['TypeError', 'ERR_INVALID_ARG_TYPE']);
    expect(bad({ ...ok, local: { address: 'localhost', port: 1 } })).toEqual(['TypeError', 'ERR_INVALID_ARG_TYPE']);
    // A zone id must name an interface with an IPv6 link-local address (lo has none here); an index is taken as is.
    expect(bad({ ...ok, local: { address: 'fe80::1%lo', port: 1 } })).toEqual(['TypeError', 'ERR_INVALID_ARG_TYPE']);
    expect(bad({ ...ok, local: { address: 'fe80::1%no-such-if', port: 1 } })).toEqual(['TypeError', 'ERR_INVALID_ARG_TYPE']);
    expect(bad({ local: { address: 'fe80::1%1', port: 1 }, remote: { address: 'fe80::2%1', port: 2 } })).toBe('no error');
    expect(bad({ ...ok, local: { address: '::1', port: 1 }, family: 4 })).toEqual(['TypeError', 'ERR_INVALID_ARG_TYPE']);
    expect(bad({ ...ok, remote: { address: '127.0.0.1' } })).toEqual(['TypeError', 'ERR_INVALID_ARG_TYPE']);
    expect(bad({ ...ok, remote: { address: '127.0.0.1', port: 65536 } })).toEqual(['RangeError', 'ERR_OUT_OF_RANGE']);
    expect(bad({ ...ok, family: 5 })).toEqual(['RangeError', 'ERR_OUT_OF_RANGE']);
    expect(bad({ ...ok, cookie: '12345' })).toEqual(['TypeError', 'ERR_INVALID_ARG_TYPE']);
    expect(bad({ ...ok, cookie: 'g000000000000001' })).toEqual(['TypeError', 'ERR_INVALID_ARG_TYPE']);
    expect(bad({ ...ok, cookie: 1n })).toEqual(['TypeError', 'ERR_INVALID_ARG_TYPE']);
    expect(bad(ok)).toBe('no error');
    expect(bad({ ...ok, cookie: '0000000000000001' })).toBe('no error');
  });
});

describe('sockets() filter validation', () => {
  const code = (filter: unknown): unknown => {
    try {
      sockets(filter as never);
    } catch (error) {
      return [(error as Error).name, (error as { code?: string }).code];
    }
    return 'no error';
  };
  const typeError = ['TypeError', 'ERR_INVALID_ARG_TYPE'];
  const rangeError = ['RangeError', 'ERR_OUT_OF_RANGE'];

  it.each([
    ['a string', 'ESTABLISHED', typeError],
    ['null', null, typeError],
    ['states not an array', { states: 'TIME_WAIT' }, typeError],
    ['a state that is not a string', { states: [6] }, typeError],
    ['an unknown state', { states: ['TIME-WAIT'] }, rangeError],
    ['a port that is not an integer', { port: 80.5 }, typeError],
    ['a port as a string', { localPort: '80' }, typeError],
    ['a port above 65535', { remotePort: 65536 }, rangeError],
    ['a negative port', { port: -1 }, rangeError],
    ['family 5', { family: 5 }, rangeError],
    ["family 'IPv4'", { family: 'IPv4' }, typeError],
    ['an unknown key (a typo must not list everything)', { state: ['TIME_WAIT'] }, typeError],
  ])('rejects %s', (_, filter, expected) => {
    expect(code(filter)).toEqual(expected);
  });

  it('accepts no filter, an empty filter and undefined values', () => {
    expect(code(undefined)).toBe('no error');
    expect(code({})).toBe('no error');
    expect(code({ port: undefined, other: undefined })).toBe('no error');
  });
});

describe('the dump received into a kept scratch array', () => {
  it('grows a scratch array that is too small (mid-dump), with the same bytes as a roomy one', async () => {
    const listeners: net.Server[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        const server = net.createServer().listen(0, '127.0.0.1');
        await once(server, 'listening');
        listeners.push(server);
      }
      const LISTEN = 1 << 10;
      const ours = listeners.map((l) => (l.address() as net.AddressInfo).port).sort();
      // The local ports of the listeners in a reply (other test files may listen meanwhile).
      const ports = (reply: Uint8Array): number[] => {
        const view = new DataView(reply.buffer, reply.byteOffset, reply.byteLength);
        const found: number[] = [];
        for (let off = 0; off + 88 <= reply.byteLength; off += (view.getUint32(off, true) + 3) & ~3) found.push(view.getUint16(off + 20));
        return found.filter((port) => ours.includes(port)).sort();
      };
      const roomy = new Uint8Array(1 << 20);
      const whole = native().sockDiag(2, LISTEN, null, null, roomy);
      expect(whole.buffer).toBe(roomy.buffer); // it fitted: received in place
      expect(whole.byteOffset).toBe(0);
      expect(ports(whole)).toEqual(ours);
      const tiny = new Uint8Array(8);
      const grown = native().sockDiag(2, LISTEN, null, null, tiny);
      expect(grown.buffer).not.toBe(tiny.buffer);
      expect(ports(grown)).toEqual(ours);
      // A view into the middle of an ArrayBuffer: the reply starts at the view's start.
      const offset = new Uint8Array(new ArrayBuffer(1 << 20), 4096);
      const atOffset = native().sockDiag(2, LISTEN, null, null, offset);
      expect(atOffset.buffer).toBe(offset.buffer);
      expect(atOffset.byteOffset).toBe(4096);
      expect(ports(atOffset)).toEqual(ours);
      expect(() => native().sockDiag(2, LISTEN, null, null, undefined as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    } finally {
      for (const server of listeners) server.close();
    }
  });
});

describe('link-local IPv6 (zone ids, as Node writes them: fe80::1%lo)', () => {
  itNeedsLab('findSocket, gracefulClose and watch() follow a link-local connection (its interface is part of the lookup)', async () => {
    // In a network namespace of its own (unshare -n), with fe80::1 on its lo: a connection bound
    // to an interface is found by sock_diag only with that interface's index.
    const dist = path.join(__dirname, '..', 'dist', 'index.js');
    const script = `
      const net = require('node:net');
      const { execFileSync } = require('node:child_process');
      const f = require(${JSON.stringify(dist)});
      execFileSync('ip', ['link', 'set', 'lo', 'up']);
      execFileSync('ip', ['addr', 'add', 'fe80::1/64', 'dev', 'lo']);
      const server = net.createServer({ allowHalfOpen: true }).listen(0, '::', () => {
        const c = net.connect({ host: 'fe80::1%lo', port: server.address().port });
        c.on('connect', async () => {
          const life = f.watch(c);
          const tuple = { local: { address: c.localAddress, port: c.localPort }, remote: { address: c.remoteAddress, port: c.remotePort } };
          const found = f.findSocket(tuple)?.state;
          const report = await f.gracefulClose(c, { timeout: 2000 });
          await life.until('TIME_WAIT', { timeout: 2000 });
          const orphan = f.findSocket(tuple)?.state;
          console.log(JSON.stringify({ local: tuple.local.address, found, outcome: report.outcome, orphan,
            timeWait: life.history.find((h) => h.state === 'TIME_WAIT')?.source }));
          server.close();
          process.exit(0);
        });
      });
      server.on('connection', (s) => s.on('end', () => s.end()));`;
    const out = execFileSync('unshare', ['-n', process.execPath, '-e', script], { encoding: 'utf8', timeout: 10_000 });
    expect(JSON.parse(out.trim().split('\n').pop()!)).toEqual({
      local: 'fe80::1%lo',
      found: 'ESTABLISHED',
      outcome: 'graceful',
      orphan: 'TIME_WAIT',
      timeWait: 'diag',
    });
  });
});
