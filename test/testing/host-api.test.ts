/**
 * The lab's hosts beyond listen/connect: a socket handed back in SYN_SENT, connects that can be
 * aborted, the borrowed fd, releasing a number of held segments, waiting on a state through the
 * host's sock_diag, and socket buffer sizes. Every assertion is on what a kernel or the wire showed.
 */
import { describe, expect, it } from 'vitest';
import net from 'node:net';
import { once } from 'node:events';
import { tcpState } from '../../src/index';
import { native } from '../../src/binding';
import { fdOf, waitForState, waitUntil } from '../../src/testing/index';
import { itLab } from './helpers';

const SOL_SOCKET = 1;
const SO_RCVBUF = 8;
const SO_SNDBUF = 7;

const code = async (promise: Promise<unknown>): Promise<string | undefined> =>
  promise.then(
    () => undefined,
    (error: { code?: string; name?: string }) => error.code ?? error.name,
  );
const thrown = (fn: () => unknown): string | undefined => {
  try {
    fn();
  } catch (error) {
    return (error as { code?: string }).code;
  }
  return undefined;
};

const synFromA = (s: { from: string; flags: readonly string[] }): boolean => s.from === 'a' && s.flags.includes('SYN');

describe('host.connectSocket()', () => {
  itLab('hands back the socket in SYN_SENT, with its fd; it connects once the SYN is released', async (lab) => {
    const server = await lab.b.listen(80);
    lab.wire.hold(synFromA);
    const socket = lab.a.connectSocket(80);
    expect(socket).toBeInstanceOf(net.Socket);
    const fd = fdOf(socket);
    // connect(2) is made on Node's next tick: before it, the fd is a bound-or-fresh socket.
    expect(tcpState(fd)).toBe('CLOSE');
    // Read before the connect, Node 20 answers 0 and caches it for good; the host's lookups below
    // read the bound port from the handle itself.
    expect([0, undefined]).toContain(socket.localPort);
    await waitForState(socket, 'SYN_SENT');
    await waitUntil('the SYN held', () => lab.wire.held.length === 1);
    await expect(lab.a.waitForState(socket, 'SYN_SENT')).resolves.toBe('SYN_SENT');
    expect(lab.a.findSocket(socket)?.state).toBe('SYN_SENT');
    const accepted = once(server, 'connection');
    lab.wire.pass();
    expect(lab.wire.release()).toBe(1);
    await once(socket, 'connect');
    const [sb] = (await accepted) as [net.Socket];
    expect(tcpState(sb)).toBe('ESTABLISHED');
    expect(fdOf(socket)).toBe(fd);
  });

  itLab('reports a refused connect as the socket\'s error, and refuses a signal', async (lab) => {
    const socket = lab.a.connectSocket(81);
    const [error] = (await once(socket, 'error').catch((e: unknown) => [e])) as [NodeJS.ErrnoException];
    expect(error.code).toBe('ECONNREFUSED');
    expect(thrown(() => lab.a.connectSocket(81, { signal: new AbortController().signal }))).toBe('ERR_INVALID_ARG_TYPE');
    expect(thrown(() => lab.a.connectSocket(0))).toBe('ERR_OUT_OF_RANGE');
  });
});

describe('host.connect({ signal })', () => {
  itLab('an abort in SYN_SENT destroys the socket, rejects with AbortError, and sends nothing more', async (lab) => {
    await lab.b.listen(80);
    lab.wire.hold(synFromA);
    const controller = new AbortController();
    const connecting = lab.a.connect(80, { signal: controller.signal });
    await waitUntil('the SYN held', () => lab.wire.held.length === 1);
    controller.abort();
    await expect(connecting).rejects.toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
    // The socket is gone from a's namespace: nothing in SYN_SENT, and no segment after the SYN.
    await waitUntil('no socket of a in SYN_SENT', () => lab.a.sockets({ states: ['SYN_SENT'] }).length === 0);
    expect(lab.wire.log.map((e) => `${e.from} ${e.flags.join(',')} ${e.verdict}`)).toEqual(['a SYN hold']);
    const aborted = new AbortController();
    aborted.abort();
    expect(await code(lab.a.connect(80, { signal: aborted.signal }))).toBe('ABORT_ERR');
    expect(await code(lab.a.connect(80, { signal: 'no' as never }))).toBe('ERR_INVALID_ARG_TYPE');
  });
});

describe('fdOf()', () => {
  itLab('is the fd the kernel state is read on; refuses what is not a socket, and a destroyed one', async (lab) => {
    const server = await lab.b.listen(80);
    const accepted = once(server, 'connection');
    const socket = await lab.a.connect(80);
    await accepted;
    expect(Number.isInteger(fdOf(socket))).toBe(true);
    expect(tcpState(fdOf(socket))).toBe('ESTABLISHED');
    expect(thrown(() => fdOf(3 as never))).toBe('ERR_INVALID_ARG_TYPE');
    expect(thrown(() => fdOf({} as never))).toBe('ERR_INVALID_ARG_TYPE');
    socket.destroy();
    expect(thrown(() => fdOf(socket))).toBe('ERR_SOCKET_CLOSED');
  });
});

describe('wire.release(predicate, { count })', () => {
  itLab('releases the earliest count of the accepted held segments, and asks the predicate no further', async (lab) => {
    const server = await lab.b.listen(80);
    lab.wire.hold(synFromA);
    const sockets = [lab.a.connectSocket(80), lab.a.connectSocket(80), lab.a.connectSocket(80)];
    await waitUntil('three SYNs held', () => lab.wire.held.length === 3);
    const ports = lab.wire.held.map((s) => s.src.port);
    lab.wire.pass();
    let asked = 0;
    const accepted = once(server, 'connection');
    expect(
      lab.wire.release(
        () => {
          asked++;
          return true;
        },
        { count: 1 },
      ),
    ).toBe(1);
    expect(asked).toBe(1);
    const [first] = (await accepted) as [net.Socket];
    expect(first.remotePort).toBe(ports[0]);
    expect(lab.wire.held.map((s) => s.src.port)).toEqual(ports.slice(1));
    expect(lab.wire.release((s) => s.src.port === ports[2], { count: 5 })).toBe(1);
    expect(lab.wire.held.map((s) => s.src.port)).toEqual([ports[1]]);
    for (const count of [0, -1, 1.5, NaN]) expect(thrown(() => lab.wire.release(undefined, { count }))).toBe('ERR_OUT_OF_RANGE');
    expect(thrown(() => lab.wire.release(undefined, { count: '1' as never }))).toBe('ERR_INVALID_ARG_TYPE');
    expect(thrown(() => lab.wire.release(undefined, null as never))).toBe('ERR_INVALID_ARG_TYPE');
    expect(lab.wire.release(undefined, {})).toBe(1);
    await Promise.all(sockets.map((s) => (s.connecting ? once(s, 'connect') : undefined)));
  });
});

describe('host.waitForState() and host.findSocket(socket)', () => {
  itLab('follows a socket into TIME_WAIT after Node closed it, and its peer into LAST_ACK and out', async (lab) => {
    const server = await lab.b.listen(80);
    const accepted = once(server, 'connection');
    const sa = await lab.a.connect(80);
    const [sb] = (await accepted) as [net.Socket];
    const localPort = sa.localPort; // Node forgets it once the fd is closed
    // b's FIN is held: a stays in FIN_WAIT2 and b in LAST_ACK until it is released.
    lab.wire.hold((s) => s.from === 'b' && s.flags.includes('FIN'));
    sa.end();
    await expect(lab.a.waitForState(sa, 'FIN_WAIT2')).resolves.toBe('FIN_WAIT2');
    await expect(lab.b.waitForState(sb, 'LAST_ACK')).resolves.toBe('LAST_ACK'); // Node ended sb on 'end'
    expect(lab.b.findSocket(sb)?.state).toBe('LAST_ACK');
    const closed = once(sa, 'close');
    lab.wire.pass().release();
    await closed; // b's FIN came: Node closed a's fd
    expect(() => fdOf(sa)).toThrow(/Socket is closed/);
    await expect(lab.a.waitForState(sa, 'TIME_WAIT')).resolves.toBe('TIME_WAIT');
    const entry = lab.a.findSocket(sa);
    expect(entry).toMatchObject({ state: 'TIME_WAIT', local: { port: localPort }, remote: { address: '10.77.0.2', port: 80 } });
    expect(entry?.timer?.kind).toBe('timewait');
    // The same lookup by 4-tuple; b's side of it is gone.
    expect(lab.a.findSocket({ local: entry!.local, remote: entry!.remote })?.state).toBe('TIME_WAIT');
    await expect(lab.b.waitForState(sb, 'ESTABLISHED', { timeout: 20 })).rejects.toMatchObject({ code: 'ERR_FINWAIT_TIMEOUT', lastSeen: 'gone' });
    expect(await code(lab.a.waitForState(sa, 'TIME-WAIT' as never))).toBe('ERR_INVALID_ARG_TYPE');
    expect(await code(lab.a.waitForState({ local: 'x' } as never, 'TIME_WAIT'))).toBe('ERR_INVALID_ARG_TYPE');
    const controller = new AbortController();
    const waiting = lab.a.waitForState(sa, 'ESTABLISHED', { signal: controller.signal });
    controller.abort();
    expect(await code(waiting)).toBe('ABORT_ERR');
  });

  itLab('refuses a socket it never saw connected, once destroyed', async (lab) => {
    const stray = new net.Socket();
    stray.destroy();
    expect(thrown(() => lab.a.findSocket(stray))).toBe('ERR_SOCKET_CLOSED');
    expect(await code(lab.a.waitForState(stray, 'TIME_WAIT'))).toBe('ERR_SOCKET_CLOSED');
  });
});

describe('recvBufferSize and sendBufferSize', () => {
  itLab('are set before listen and connect: read back doubled, inherited by accepted sockets, and the SYN-ACK window follows', async (lab) => {
    const server = await lab.b.listen(80, { recvBufferSize: 4096, sendBufferSize: 8192 });
    const accepted = once(server, 'connection');
    const sa = await lab.a.connect(80, { recvBufferSize: 6000, sendBufferSize: 10000 });
    const [sb] = (await accepted) as [net.Socket];
    const get = (s: net.Socket, name: number): number => native().getIntOption(fdOf(s), SOL_SOCKET, name);
    expect([get(sa, SO_RCVBUF), get(sa, SO_SNDBUF)]).toEqual([12000, 20000]);
    expect([get(sb, SO_RCVBUF), get(sb, SO_SNDBUF)]).toEqual([8192, 16384]);
    // The lab sets them by the addon's constants: the numbers of asm-generic socket.h.
    expect(native().constants).toMatchObject({ SOL_SOCKET, SO_RCVBUF, SO_SNDBUF });
    const synAck = lab.wire.log.find((e) => e.from === 'b' && e.flags.includes('SYN'))!;
    const syn = lab.wire.log.find((e) => e.from === 'a' && e.flags.includes('SYN'))!;
    expect(synAck.window).toBeLessThan(4096);
    expect(syn.window).toBeLessThan(6000);
    for (const value of [0, -1, 1.5, 2 ** 30]) {
      expect(await code(lab.b.listen(0, { recvBufferSize: value }))).toBe('ERR_OUT_OF_RANGE');
      expect(thrown(() => lab.a.connectSocket(80, { sendBufferSize: value }))).toBe('ERR_OUT_OF_RANGE');
    }
    expect(await code(lab.a.connect(80, { recvBufferSize: '4096' as never }))).toBe('ERR_INVALID_ARG_TYPE');
  });
});

it('has nothing to skip without the lab: the argument checks above run inside labs only', () => {
  expect(typeof fdOf).toBe('function');
});
