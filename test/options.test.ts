import { afterEach, describe, expect, it } from 'vitest';
import {
  getKeepAlive, getKeepCnt, getKeepIdle, getKeepIntvl, getLinger2, getUserTimeout,
  setKeepAlive, setKeepCnt, setKeepIdle, setKeepIntvl, setLinger2, setUserTimeout,
} from '../src/index';
import { pair, type Pair } from './helpers';

let p: Pair | undefined;
afterEach(async () => {
  await p?.close();
  p = undefined;
});

describe('integer options: values read back after set, starting from a different value', () => {
  it('TCP_USER_TIMEOUT (ms)', async () => {
    p = await pair();
    expect(getUserTimeout(p.client)).toBe(0);
    expect(setUserTimeout(p.client, 1500)).toBe(1500);
    expect(getUserTimeout(p.client)).toBe(1500);
  });

  it('TCP_LINGER2 (s): 0 reads back the system default, -1 means RST, large values are capped', async () => {
    p = await pair();
    const initial = getLinger2(p.client);
    expect(initial).toBeGreaterThan(0); // the system's tcp_fin_timeout
    expect(setLinger2(p.client, 3)).toBe(3);
    expect(setLinger2(p.client, -1)).toBe(-1);
    expect(setLinger2(p.client, 0)).toBe(initial);
    expect(setLinger2(p.client, 100_000)).toBe(120); // TCP_FIN_TIMEOUT_MAX
  });

  it('SO_KEEPALIVE', async () => {
    p = await pair();
    expect(getKeepAlive(p.client)).toBe(false);
    expect(setKeepAlive(p.client, true)).toBe(true);
    expect(setKeepAlive(p.client, false)).toBe(false);
  });

  it('TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT', async () => {
    p = await pair();
    expect(getKeepIdle(p.client)).not.toBe(17);
    expect(setKeepIdle(p.client, 17)).toBe(17);
    expect(getKeepIntvl(p.client)).not.toBe(3);
    expect(setKeepIntvl(p.client, 3)).toBe(3);
    expect(getKeepCnt(p.client)).not.toBe(4);
    expect(setKeepCnt(p.client, 4)).toBe(4);
    expect(getKeepCnt(p.client)).toBe(4);
  });

  it('rejects values outside the kernel range before the syscall, with Node codes', async () => {
    p = await pair();
    const c = p.client;
    expect(() => setUserTimeout(c, -1)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => setUserTimeout(c, 1.5)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => setLinger2(c, -2)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => setKeepIdle(c, 0)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => setKeepIntvl(c, 32768)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => setKeepCnt(c, 128)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => setKeepAlive(c, 1 as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => setKeepCnt(c, '4' as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(getKeepCnt(c)).not.toBe(128);
  });
});
