import { afterEach, describe, expect, it } from 'vitest';
import { once } from 'node:events';
import { tcpInfo, tcpState, tcpStates, TCP_STATES } from '../src/index';
import { native } from '../src/binding';
import { decodeTcpInfo, tailIsBitfields, TCP_INFO_BUFFER_SIZE } from '../src/tcp-info';
import { pair, waitFor, type Pair } from './helpers';

/** Lengths of struct tcp_info a decoder must accept: each kernel release that grew it, 2.6 (104) to 6.18 (280). */
const KNOWN_LENGTHS = [104, 120, 136, 144, 160, 168, 192, 200, 224, 232, 240, 248, 280];

let p: Pair | undefined;
afterEach(async () => {
  await p?.close();
  p = undefined;
});

describe('tcpState', () => {
  it('reads ESTABLISHED on both ends, then the half-close states each end shows', async () => {
    p = await pair({ server: { allowHalfOpen: true } });
    expect(tcpState(p.client)).toBe('ESTABLISHED');
    expect(tcpState(p.server)).toBe('ESTABLISHED');
    p.client.end();
    await once(p.server.resume(), 'end');
    expect(tcpState(p.server)).toBe('CLOSE_WAIT');
    await waitFor('client FIN_WAIT2', () => (tcpState(p!.client) === 'FIN_WAIT2' ? true : undefined));
  });

  it('accepts a raw fd', async () => {
    p = await pair();
    const fd = (p.client as unknown as { _handle: { fd: number } })._handle.fd;
    expect(tcpState(fd)).toBe('ESTABLISHED');
  });
});

describe('tcpStates (batch)', () => {
  it('reads many sockets in one call and reports a bad fd by its own error', async () => {
    p = await pair({ server: { allowHalfOpen: true } });
    p.client.end();
    await once(p.server.resume(), 'end');
    const fd = (p.server as unknown as { _handle: { fd: number } })._handle.fd;
    const states = tcpStates([p.server, fd, 0x7ffffff0]);
    expect(states[0]).toBe('CLOSE_WAIT');
    expect(states[1]).toBe('CLOSE_WAIT');
    expect(states[2]).toMatchObject({ code: 'EBADF', syscall: 'getsockopt' });
    expect(tcpStates(new Int32Array([fd]))).toEqual(['CLOSE_WAIT']);
  });
});

describe('tcpInfo', () => {
  it('decodes every field the kernel filled, with values that match what happened', async () => {
    p = await pair();
    const payload = Buffer.alloc(10_000, 7);
    p.client.write(payload);
    let received = 0;
    p.server.on('data', (chunk: Buffer) => (received += chunk.length));
    await waitFor('all bytes received', () => (received === payload.length ? true : undefined));
    const info = await waitFor('bytes acked', () => {
      const i = tcpInfo(p!.client);
      return i.bytesAcked !== undefined && i.bytesAcked >= payload.length ? i : undefined;
    });
    expect(KNOWN_LENGTHS).toContain(info.length);
    expect(info.state).toBe('ESTABLISHED');
    expect(info.sndMss).toBeGreaterThan(0);
    expect(info.rto).toBeGreaterThanOrEqual(200_000); // µs, TCP_RTO_MIN
    expect(info.rtt).toBeGreaterThan(0);
    expect(info.options & 1).toBe(1); // timestamps are on by default on loopback
    // bytes_acked counts the SYN too: 1 + the payload (RFC 4898 counts from the ISN).
    expect(info.bytesAcked).toBe(payload.length + 1);
    const server = tcpInfo(p.server);
    expect(server.bytesReceived).toBe(payload.length);
    if (info.length >= 160) expect(server.dataSegsIn).toBeGreaterThan(0);
    // A field beyond the kernel's length would be undefined; this kernel fills up to `length`.
    if (info.length >= 280) expect(info.receivedCeBytes).toBe(0);
  });

  it('leaves fields beyond the length the kernel wrote undefined, for every known length', async () => {
    p = await pair();
    const bytes = new Uint8Array(TCP_INFO_BUFFER_SIZE);
    const full = native().tcpInfo((p.client as unknown as { _handle: { fd: number } })._handle.fd, bytes);
    for (const length of KNOWN_LENGTHS.filter((l) => l <= full)) {
      const info = decodeTcpInfo(bytes, length);
      expect(info.length).toBe(length);
      expect(info.state).toBe('ESTABLISHED');
      expect(info.totalRetrans).toBe(0);
      expect(info.pacingRate === undefined).toBe(length < 120);
      expect(info.bytesReceived === undefined).toBe(length < 136);
      expect(info.segsIn === undefined).toBe(length < 144);
      expect(info.sndWnd === undefined).toBe(length < 232);
      expect(info.rehash === undefined).toBe(length < 240);
      expect(info.totalRtoTime === undefined).toBe(length < 248);
      expect(info.accecnOptSeen === undefined).toBe(length < 280);
    }
  });

  it('decodes the same struct wherever its bytes sit, and each buffer as it is now', async () => {
    p = await pair();
    const bytes = new Uint8Array(TCP_INFO_BUFFER_SIZE);
    const length = native().tcpInfo((p.client as unknown as { _handle: { fd: number } })._handle.fd, bytes);
    const aligned = decodeTcpInfo(bytes, length);
    // At an odd offset of a larger buffer (the u32 and u64 fields are then not aligned in memory).
    for (const offset of [1, 2, 3, 5]) {
      const shifted = new Uint8Array(length + offset + 3);
      shifted.set(bytes.subarray(0, length), offset);
      expect(decodeTcpInfo(shifted.subarray(offset), length)).toEqual(aligned);
    }
    // The same buffer decoded again after its bytes changed: the new values, not the old ones.
    const changed = bytes.slice();
    expect(decodeTcpInfo(changed, length)).toEqual(aligned);
    const view = new DataView(changed.buffer);
    const le = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
    view.setUint32(100, 7, le); // tcpi_total_retrans
    view.setUint32(le ? 128 : 132, 0x12345678, le); // tcpi_bytes_received, low half
    view.setUint32(le ? 132 : 128, 0x9, le); // and high half
    expect(decodeTcpInfo(changed, length)).toMatchObject({ totalRetrans: 7, bytesReceived: 0x9_1234_5678 });
  });

  it('asks the kernel with a 512-byte buffer and gets at most what it has', async () => {
    p = await pair();
    const bytes = new Uint8Array(TCP_INFO_BUFFER_SIZE);
    const length = native().tcpInfo((p.client as unknown as { _handle: { fd: number } })._handle.fd, bytes);
    expect(KNOWN_LENGTHS).toContain(length);
    expect(tcpInfo(p.client).length).toBe(length);
  });

  it('decodes the bitfields at offsets 6 and 7 and the 7.0 tail explicitly', () => {
    const bytes = new Uint8Array(280);
    bytes[0] = 1; // ESTABLISHED
    bytes[6] = 0x7a; // rcv_wscale 7, snd_wscale 10
    bytes[7] = 0b101; // app limited, fastopen_client_fail 2
    new DataView(bytes.buffer).setUint32(276, (0xabcdef << 8) | (9 << 4) | (3 << 2) | 2, true);
    new DataView(bytes.buffer).setBigUint64(104, 0xffffffffffffffffn, true);
    const info = decodeTcpInfo(bytes, 280, true);
    expect(info).toMatchObject({ sndWscale: 10, rcvWscale: 7, deliveryRateAppLimited: true, fastopenClientFail: 2 });
    expect(info).toMatchObject({ ecnMode: 2, accecnOptSeen: 3, accecnFailMode: 9, options2: 0xabcdef });
    expect(info.pacingRate).toBe(Infinity);
    const v618 = decodeTcpInfo(bytes, 280, false);
    expect(v618.ecnMode).toBeUndefined();
    expect(v618.accecnFailMode).toBe(0xef9e); // the low __u16 of the same 4 bytes
    expect(v618.accecnOptSeen).toBe(0xabcd);
    expect(tailIsBitfields('6.18.44-fc')).toBe(false);
    expect(tailIsBitfields('7.0.1')).toBe(true);
  });

  it('names a state number it does not know with a clear error, never a wrong state', () => {
    const bytes = new Uint8Array(104);
    bytes[0] = TCP_STATES.length + 1;
    expect(() => decodeTcpInfo(bytes, 104)).toThrow(expect.objectContaining({ code: 'ERR_FINWAIT_UNKNOWN_STATE' }));
  });
});
