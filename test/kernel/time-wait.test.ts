/**
 * Kernel rows 11 and 12 (numbered in ./helpers.ts): TIME_WAIT, which only sock_diag shows. Its 2MSL
 * of 60 s is read from its timer (nobody waits a minute), and the address it holds is tried with
 * bind(2).
 */
import { describe, expect } from 'vitest';
import { once } from 'node:events';
import type net from 'node:net';
import { tcpState, type SocketEntry } from '../../src/index';
import { waitForState, waitUntil } from '../../src/testing/index';
import { connect, expectSegments, itLab } from './helpers';

/** A closes first, B after A's FIN_WAIT2: A's end goes to TIME_WAIT (its fd reads CLOSE). */
async function activeClose(sa: net.Socket, sb: net.Socket): Promise<void> {
  sa.end();
  await waitForState(sa, 'FIN_WAIT2');
  sb.end();
  await waitForState(sa, 'CLOSE');
}

describe('kernel rows 11-12: TIME_WAIT', () => {
  itLab('11. TIME_WAIT is 2MSL = 60 s on Linux: its sock_diag timer starts at 60 000 ms and counts down', async (lab) => {
    const { a, b } = lab;
    const { sa, sb } = await connect(lab, { allowHalfOpen: true, pauseOnConnect: true });
    await activeClose(sa, sb);
    // The fd cannot show it: it reads CLOSE, and the TIME_WAIT socket is a separate one with no inode.
    expect(tcpState(sa)).toBe('CLOSE');
    /** A's TIME_WAIT socket, with the clock read just before and just after the dump. */
    const read = (): { entry: SocketEntry | undefined; before: number; after: number } => {
      const before = performance.now();
      const [entry] = a.sockets({ states: ['TIME_WAIT'] });
      return { entry, before, after: performance.now() };
    };
    const first = read();
    expect(first.entry).toMatchObject({
      state: 'TIME_WAIT',
      local: { address: a.address, port: sa.localPort },
      remote: { address: b.address, port: 80 },
      inode: 0,
      recvQ: 0,
      sendQ: 0,
      timer: { kind: 'timewait', retransmits: 0 },
    });
    const start = (first.entry as SocketEntry).timer.expiresMs;
    expect(start).toBeGreaterThan(59_500);
    expect(start).toBeLessThanOrEqual(60_000);

    // It counts down with the clock, in jiffies (4 ms at HZ=250; one step of rounding per reading).
    const later = await waitUntil('the timer 40 ms further down', () => {
      const r = read();
      return r.entry !== undefined && r.entry.timer.expiresMs <= start - 40 ? r : undefined;
    });
    const counted = start - (later.entry as SocketEntry).timer.expiresMs;
    expect(counted).toBeGreaterThanOrEqual(later.before - first.after - 8);
    expect(counted).toBeLessThanOrEqual(later.after - first.before + 8);
    // Only the active closer has one.
    expect(b.sockets({ states: ['TIME_WAIT'] })).toEqual([]);
  });

  itLab('12. TIME_WAIT blocks bind(): EADDRINUSE unless the old and the new socket both set SO_REUSEADDR', async (lab) => {
    const { a, b, wire } = lab;
    const server = await b.listen(80, { allowHalfOpen: true, pauseOnConnect: true });
    await b.listen(81);
    /** A connects from `localPort` (SO_REUSEADDR or not), closes actively, and closes its fd: TIME_WAIT only. */
    const timeWaitFrom = async (localPort: number, reuseAddress: boolean): Promise<void> => {
      const accepted = once(server, 'connection') as Promise<[net.Socket]>;
      const sa = await a.connect(80, { localPort, reuseAddress, allowHalfOpen: true, pauseOnConnect: true });
      const [sb] = await accepted;
      await activeClose(sa, sb);
      // An explicitly bound socket keeps its port while its fd is open, even in CLOSE: close it.
      sa.destroy();
      await once(sa, 'close');
    };
    await timeWaitFrom(40_001, false);
    await timeWaitFrom(40_002, true);
    expect(a.sockets({ states: ['TIME_WAIT'] }).map((s) => s.local.port).sort()).toEqual([40_001, 40_002]);
    expect(a.sockets({ states: ['TIME_WAIT'] }).every((s) => s.inode === 0)).toBe(true);

    // New sockets bound to those ports, connecting to b:81 (so only the bind is in question).
    const tryBind = (localPort: number, reuseAddress: boolean): Promise<string> =>
      a.connect(81, { localPort, reuseAddress }).then(
        (socket) => {
          socket.destroy();
          return 'bound';
        },
        (error: NodeJS.ErrnoException) => `${error.code} (${error.syscall})`,
      );
    expect(await tryBind(40_001, false)).toBe('EADDRINUSE (bind)'); // neither
    expect(await tryBind(40_001, true)).toBe('EADDRINUSE (bind)'); // only the new one
    expect(await tryBind(40_002, false)).toBe('EADDRINUSE (bind)'); // only the old one
    expect(await tryBind(40_002, true)).toBe('bound'); // both

    // Beyond bind: a connect() from the bound port to the TIME_WAIT's own peer (the same 4-tuple)
    // succeeds too. The kernel takes the TIME_WAIT socket over (timestamps are on, so PAWS keeps
    // old segments out): a fresh handshake, and that TIME_WAIT is gone.
    const sameTuple = (e: { src: { port: number }; dst: { port: number } }): boolean =>
      (e.src.port === 40_002 && e.dst.port === 80) || (e.src.port === 80 && e.dst.port === 40_002);
    wire.clearLog();
    const again = await a.connect(80, { localPort: 40_002, reuseAddress: true });
    expect(again.localPort).toBe(40_002);
    expect(a.sockets({ states: ['TIME_WAIT'], remotePort: 80 }).map((s) => s.local.port)).toEqual([40_001]);
    await waitUntil('the handshake logged', () => wire.log.filter(sameTuple).length >= 3);
    expectSegments(wire.log.filter(sameTuple), ['a <SEQ=0><CTL=SYN>', 'b <SEQ=0><ACK=1><CTL=SYN,ACK>', 'a <SEQ=1><ACK=1><CTL=ACK>']);
  });
});
