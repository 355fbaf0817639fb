/** Decoding segments from packet bytes (no sockets: the bytes are built here, field by field). */
import { describe, expect, it } from 'vitest';
import { formatSegment, isPureAck, parseSegment } from '../../src/testing/index';

/** An IPv4 packet with a TCP header (+ options) and payload. */
function ipv4Tcp(o: { flags: number; seq?: number; ack?: number; payload?: number; options?: number; fragment?: number; proto?: number }): Uint8Array {
  const tcpLength = 20 + (o.options ?? 0);
  const total = 20 + tcpLength + (o.payload ?? 0);
  const b = new Uint8Array(total);
  const v = new DataView(b.buffer);
  b[0] = 0x45;
  v.setUint16(2, total);
  v.setUint16(6, o.fragment ?? 0x4000); // DF, offset 0
  b[8] = 64;
  b[9] = o.proto ?? 6;
  b.set([10, 77, 0, 1], 12);
  b.set([10, 77, 0, 2], 16);
  v.setUint16(20, 40000);
  v.setUint16(22, 80);
  v.setUint32(24, o.seq ?? 0xfffffffe);
  v.setUint32(28, o.ack ?? 7);
  b[32] = (tcpLength / 4) << 4;
  b[33] = o.flags;
  v.setUint16(34, 502);
  return b;
}

describe('parseSegment', () => {
  it('decodes IPv4 + TCP: addresses, ports, numbers, flags in RFC order, window, payload length', () => {
    const s = parseSegment(ipv4Tcp({ flags: 0x11 | 0x08, payload: 5, options: 12 }));
    expect(s).toEqual({
      family: 4,
      src: { address: '10.77.0.1', port: 40000 },
      dst: { address: '10.77.0.2', port: 80 },
      seq: 0xfffffffe,
      ack: 7,
      flags: ['FIN', 'PSH', 'ACK'],
      window: 502,
      len: 5,
    });
    expect(parseSegment(ipv4Tcp({ flags: 0x12 }))?.flags).toEqual(['SYN', 'ACK']);
    expect(parseSegment(ipv4Tcp({ flags: 0x04 | 0x40 | 0x80 | 0x20 }))?.flags).toEqual(['RST', 'URG', 'ECE', 'CWR']);
  });

  it('decodes IPv6 + TCP with compressed addresses', () => {
    const b = new Uint8Array(40 + 20 + 3);
    const v = new DataView(b.buffer);
    b[0] = 0x60;
    v.setUint16(4, 23);
    b[6] = 6;
    b[7] = 64;
    b[23] = 1; // ::1
    b.set([0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2], 24); // fd77::2
    v.setUint16(40, 1234);
    v.setUint16(42, 443);
    b[52] = 5 << 4;
    b[53] = 0x10;
    expect(parseSegment(b)).toMatchObject({ family: 6, src: { address: '::1', port: 1234 }, dst: { address: 'fd77::2', port: 443 }, flags: ['ACK'], len: 3 });
  });

  it('returns undefined for what is not a whole TCP header: ICMP, a later fragment, truncation, other versions', () => {
    expect(parseSegment(ipv4Tcp({ flags: 0x10, proto: 1 }))).toBeUndefined();
    expect(parseSegment(ipv4Tcp({ flags: 0x10, fragment: 0x0010 }))).toBeUndefined();
    expect(parseSegment(ipv4Tcp({ flags: 0x10 }).subarray(0, 30))).toBeUndefined();
    expect(parseSegment(new Uint8Array([0x50, 0, 0, 0]))).toBeUndefined();
    expect(parseSegment(new Uint8Array(0))).toBeUndefined();
  });
});

describe('formatSegment / isPureAck', () => {
  it('writes RFC 793 figure notation with relative numbers when known', () => {
    expect(formatSegment({ seq: 5, ack: 9, flags: ['FIN', 'ACK'], len: 0, relSeq: 1, relAck: 1 })).toBe('<SEQ=1><ACK=1><CTL=FIN,ACK>');
    expect(formatSegment({ seq: 100, ack: 0, flags: ['SYN'], len: 0 })).toBe('<SEQ=100><CTL=SYN>');
    expect(formatSegment({ seq: 1, ack: 1, flags: ['PSH', 'ACK'], len: 4 })).toBe('<SEQ=1><ACK=1><CTL=PSH,ACK><DATA=4>');
  });

  it('a pure ACK has no payload and no control bit but ACK (PSH aside)', () => {
    expect(isPureAck({ flags: ['ACK'], len: 0 })).toBe(true);
    expect(isPureAck({ flags: ['ACK'], len: 1 })).toBe(false);
    expect(isPureAck({ flags: ['FIN', 'ACK'], len: 0 })).toBe(false);
    expect(isPureAck({ flags: ['SYN'], len: 0 })).toBe(false);
  });
});
