/**
 * The close hook's one native call (closeLook): what it reads matches the calls it replaces, on
 * real sockets, in a synchronized state and in CLOSE; the states where it reads only the state are
 * the caller's mask.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { constants, native } from '../../src/binding';
import { shutdown, tcpInfo } from '../../src/index';
import { closeLookByCalls, UNSYNCHRONIZED_MASK } from '../../src/lifecycle/sources/node-hooks';
import { fdOf } from '../../src/testing/index';
import { pair, waitFor, type Pair } from '../helpers';

let p: Pair | undefined;
afterEach(async () => {
  await p?.close();
  p = undefined;
});

describe('closeLook', () => {
  it('in ESTABLISHED: state, SO_LINGER, unread bytes, TCP_LINGER2 and data segments in, as the single calls read them', async () => {
    p = await pair({ server: { pauseOnConnect: true } });
    const fd = fdOf(p.server);
    const { IPPROTO_TCP, TCP_LINGER2, SIOCINQ } = constants();
    // Values that differ from the defaults, so a call that read nothing could not match.
    native().setLinger(fd, 1, 7);
    native().setIntOption(fd, IPPROTO_TCP, TCP_LINGER2, 13);
    p.client.write(Buffer.alloc(300));
    p.client.write(Buffer.alloc(200));
    await waitFor('500 unread bytes', () => (native().ioctlInt(fd, SIOCINQ) === 500 ? true : undefined));
    const look = new Int32Array(6).fill(-2);
    expect(native().closeLook!(fd, look, UNSYNCHRONIZED_MASK)).toBe(true);
    expect(Array.from(look)).toEqual([
      1, // TCP_ESTABLISHED
      1,
      7,
      500,
      native().getIntOption(fd, IPPROTO_TCP, TCP_LINGER2),
      tcpInfo(p.server).dataSegsIn,
    ]);
    expect(native().getIntOption(fd, IPPROTO_TCP, TCP_LINGER2)).toBe(13);
    // The same, one call at a time (an addon built before closeLook).
    const byCalls = new Int32Array(6).fill(-2);
    expect(closeLookByCalls(fd, byCalls, UNSYNCHRONIZED_MASK)).toBe(true);
    expect(Array.from(byCalls)).toEqual(Array.from(look));
    expect(native().getLinger(fd)).toEqual({ onoff: 1, linger: 7 });
    expect(look[5]).toBeGreaterThanOrEqual(1);
    // Which states need only the state is the caller's to say: with ESTABLISHED in the mask, that is all it reads.
    const stateOnly = new Int32Array(6).fill(-2);
    expect(native().closeLook!(fd, stateOnly, 1 << 1)).toBe(false);
    expect(Array.from(stateOnly)).toEqual([1, 0, 0, 0, 0, look[5]]);
    expect(closeLookByCalls(fd, byCalls, 1 << 1)).toBe(false);
    expect(Array.from(byCalls)).toEqual(Array.from(stateOnly));
  });

  it('in CLOSE: false, with only the state and data segments in (closing sends nothing the rest could change)', async () => {
    // Half-open allowed: Node keeps the client's fd open after the server's FIN.
    p = await pair({ client: { allowHalfOpen: true } });
    const fd = fdOf(p.client);
    p.client.resume();
    shutdown(p.client, 'write');
    p.server.end();
    await waitFor('the client in CLOSE (TIME_WAIT began)', () => (native().tcpState(fd) === 7 ? true : undefined));
    const look = new Int32Array(6).fill(-2);
    expect(native().closeLook!(fd, look, UNSYNCHRONIZED_MASK)).toBe(false);
    expect(Array.from(look.subarray(0, 5))).toEqual([7, 0, 0, 0, 0]); // TCP_CLOSE
    expect(look[5]).toBe(tcpInfo(p.client).dataSegsIn);
    const byCalls = new Int32Array(6).fill(-2);
    expect(closeLookByCalls(fd, byCalls, UNSYNCHRONIZED_MASK)).toBe(false);
    expect(Array.from(byCalls)).toEqual(Array.from(look));
  });

  it('refuses what is not a TCP socket with the kernel error, and a short array', async () => {
    p = await pair();
    expect(() => native().closeLook!(-1, new Int32Array(6), UNSYNCHRONIZED_MASK)).toThrow(expect.objectContaining({ code: 'EBADF', syscall: 'getsockopt' }));
    expect(() => native().closeLook!(fdOf(p!.client), new Int32Array(5), UNSYNCHRONIZED_MASK)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
  });
});
