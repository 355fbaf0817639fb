/**
 * TCP segments as they cross the lab's wire: the IPv4 or IPv6 header and the TCP header of one
 * packet, decoded from its bytes (RFC 791, RFC 8200, RFC 9293 §3.1). Pure functions, no I/O.
 */
import net from 'node:net';
import { invalidArgType, outOfRange } from '../errors';

/** TCP control bits by their RFC names, in the order finwait lists them. */
export type TcpFlag = 'SYN' | 'FIN' | 'RST' | 'PSH' | 'ACK' | 'URG' | 'ECE' | 'CWR';

/** The control bits in display order with their bit in the TCP header's flags byte. */
const FLAG_BITS: ReadonlyArray<readonly [TcpFlag, number]> = [
  ['SYN', 0x02],
  ['FIN', 0x01],
  ['RST', 0x04],
  ['PSH', 0x08],
  ['ACK', 0x10],
  ['URG', 0x20],
  ['ECE', 0x40],
  ['CWR', 0x80],
];

const FLAG_NAMES: ReadonlySet<string> = new Set(FLAG_BITS.map(([name]) => name));
const MAX_UINT32 = 2 ** 32 - 1;

function checkObject(value: unknown, name: string): Record<string, unknown> {
  if (value === null || typeof value !== 'object') throw invalidArgType(name, 'of type object', value);
  return value as Record<string, unknown>;
}

/** An integer from 0 to `max` (a sequence number, a length), else Node's argument errors. */
function checkCount(value: unknown, name: string, max: number): number {
  if (typeof value !== 'number') throw invalidArgType(name, 'of type number', value);
  if (!Number.isInteger(value) || value < 0 || value > max) throw outOfRange(name, `an integer >= 0 and <= ${max}`, value);
  return value;
}

function checkFlags(value: unknown, name: string): TcpFlag[] {
  if (!Array.isArray(value)) throw invalidArgType(name, `an array of TCP flag names (${[...FLAG_NAMES].join(' ')})`, value);
  value.forEach((flag: unknown, i) => {
    if (typeof flag !== 'string' || !FLAG_NAMES.has(flag)) throw invalidArgType(`${name}[${i}]`, `a TCP flag name (${[...FLAG_NAMES].join(' ')})`, flag);
  });
  return value as TcpFlag[];
}

/** An IP address and TCP port. */
export interface Endpoint {
  address: string;
  port: number;
}

/** One TCP segment, decoded from the packet that carries it. */
export interface Segment {
  /** IP version of the packet. */
  family: 4 | 6;
  src: Endpoint;
  dst: Endpoint;
  /** Sequence number, absolute (0 to 2^32 - 1). */
  seq: number;
  /** Acknowledgment number, absolute; meaningful only when `flags` has `'ACK'`. */
  ack: number;
  /** Control bits that are set, in the order SYN FIN RST PSH ACK URG ECE CWR. */
  flags: TcpFlag[];
  /** Receive window as sent, before window scaling (bytes / 2^wscale). */
  window: number;
  /** TCP payload length, bytes. */
  len: number;
}

const IPPROTO_TCP = 6;

function ipv4(bytes: Uint8Array, offset: number): string {
  return `${bytes[offset]}.${bytes[offset + 1]}.${bytes[offset + 2]}.${bytes[offset + 3]}`;
}

/** An IPv6 address in the compressed form Node prints (RFC 5952). */
function ipv6(bytes: Uint8Array, offset: number): string {
  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push((bytes[offset + 2 * i] << 8) | bytes[offset + 2 * i + 1]);
  // The longest run of two or more zero groups becomes '::'.
  let best = -1;
  let bestLength = 1;
  for (let i = 0; i < 8; ) {
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) [best, bestLength] = [i, j - i];
    i = j === i ? i + 1 : j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (best < 0) return hex.join(':');
  return `${hex.slice(0, best).join(':')}::${hex.slice(best + bestLength).join(':')}`;
}

/**
 * The TCP segment in an IP packet, or `undefined` when the packet is not TCP (ICMP, UDP, a
 * non-first IPv4 fragment, an IPv6 packet with extension headers before TCP) or is truncated.
 * Throws `ERR_INVALID_ARG_TYPE` unless `packet` is a `Uint8Array` (a `Buffer` is one).
 */
export function parseSegment(packet: Uint8Array): Segment | undefined {
  if (!(packet instanceof Uint8Array)) throw invalidArgType('packet', 'an instance of Uint8Array', packet);
  if (packet.length < 1) return undefined;
  const view = new DataView(packet.buffer, packet.byteOffset, packet.byteLength);
  const version = packet[0] >> 4;
  let family: 4 | 6;
  let src: string;
  let dst: string;
  let tcp: number; // offset of the TCP header
  let end: number; // end of the IP payload
  if (version === 4) {
    if (packet.length < 20) return undefined;
    const headerLength = (packet[0] & 0x0f) * 4;
    const totalLength = view.getUint16(2);
    const fragmentOffset = view.getUint16(6) & 0x1fff;
    if (packet[9] !== IPPROTO_TCP || fragmentOffset !== 0 || headerLength < 20) return undefined;
    family = 4;
    src = ipv4(packet, 12);
    dst = ipv4(packet, 16);
    tcp = headerLength;
    end = Math.min(totalLength, packet.length);
  } else if (version === 6) {
    if (packet.length < 40 || packet[6] !== IPPROTO_TCP) return undefined;
    family = 6;
    src = ipv6(packet, 8);
    dst = ipv6(packet, 24);
    tcp = 40;
    end = Math.min(40 + view.getUint16(4), packet.length);
  } else {
    return undefined;
  }
  if (end - tcp < 20) return undefined;
  const dataOffset = (packet[tcp + 12] >> 4) * 4;
  if (dataOffset < 20 || tcp + dataOffset > end) return undefined;
  const bits = packet[tcp + 13];
  return {
    family,
    src: { address: src, port: view.getUint16(tcp) },
    dst: { address: dst, port: view.getUint16(tcp + 2) },
    seq: view.getUint32(tcp + 4),
    ack: view.getUint32(tcp + 8),
    flags: FLAG_BITS.filter(([, bit]) => (bits & bit) !== 0).map(([name]) => name),
    window: view.getUint16(tcp + 14),
    len: end - tcp - dataOffset,
  };
}

/**
 * A segment with sequence numbers relative to each side's initial sequence number, as in the
 * figures of RFC 793 §3.5: `"<SEQ=1><ACK=1><CTL=FIN,ACK>"`, with `"<DATA=n>"` when it carries
 * n bytes. An unknown ISN (no SYN seen) prints the absolute number. Throws Node's argument
 * errors for anything else: `ERR_INVALID_ARG_TYPE` for a missing or mistyped field or an unknown
 * flag, `ERR_OUT_OF_RANGE` for a number that is not an integer from 0 to 2^32 - 1.
 */
export function formatSegment(segment: Pick<Segment, 'seq' | 'ack' | 'flags' | 'len'> & {
  relSeq?: number;
  relAck?: number;
}): string {
  const fields = checkObject(segment, 'segment');
  const flags = checkFlags(fields.flags, 'segment.flags');
  const number = (key: 'seq' | 'ack' | 'relSeq' | 'relAck', optional: boolean): number | undefined =>
    optional && fields[key] === undefined ? undefined : checkCount(fields[key], `segment.${key}`, MAX_UINT32);
  const absolute = { seq: number('seq', false)!, ack: number('ack', false)! };
  const relSeq = number('relSeq', true);
  const relAck = number('relAck', true);
  const len = checkCount(fields.len, 'segment.len', Number.MAX_SAFE_INTEGER);
  const ack = flags.includes('ACK') ? `<ACK=${relAck ?? absolute.ack}>` : '';
  const data = len > 0 ? `<DATA=${len}>` : '';
  return `<SEQ=${relSeq ?? absolute.seq}>${ack}<CTL=${flags.join(',')}>${data}`;
}

/**
 * True for a segment with ACK as its only control bit (PSH aside) and no payload: a pure ACK.
 * Throws Node's argument errors as `formatSegment()` does for `flags` and `len`.
 */
export function isPureAck(segment: Pick<Segment, 'flags' | 'len'>): boolean {
  const fields = checkObject(segment, 'segment');
  const flags = checkFlags(fields.flags, 'segment.flags');
  const len = checkCount(fields.len, 'segment.len', Number.MAX_SAFE_INTEGER);
  return len === 0 && flags.every((f) => f === 'ACK' || f === 'PSH') && flags.includes('ACK');
}

/** The 16-bit one's complement sum of `bytes` (RFC 1071), folded, not yet complemented. */
function onesSum(bytes: Uint8Array, start: number, end: number, sum = 0): number {
  for (let i = start; i < end; i += 2) sum += (bytes[i] << 8) | (i + 1 < end ? bytes[i + 1] : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/** The 16 bytes of an IPv6 address in text form (no zone, no embedded IPv4 part). */
function ipv6Bytes(address: string): number[] {
  const [head, tail] = address.includes('::') ? address.split('::') : [address, undefined];
  const groups = (text: string | undefined): number[] => (text ? text.split(':').map((g) => parseInt(g, 16)) : []);
  const first = groups(head);
  const last = groups(tail);
  const all = tail === undefined ? first : [...first, ...new Array<number>(8 - first.length - last.length).fill(0), ...last];
  return all.flatMap((g) => [g >> 8, g & 0xff]);
}

/** The IP version of an address `buildSegment()` takes, or 0. */
function familyOf(address: unknown): 0 | 4 | 6 {
  if (typeof address !== 'string') return 0;
  if (net.isIPv4(address)) return 4;
  return net.isIPv6(address) && !address.includes('%') && !address.includes('.') ? 6 : 0;
}

/**
 * The bytes of an IP packet carrying one TCP segment with no options, the TCP checksum filled
 * (RFC 9293 §3.1, over the pseudo-header of RFC 791 or RFC 8200 §8.1, the header and the
 * payload): IPv4 (TTL 64, DF set, header checksum filled) when both addresses are IPv4, IPv6
 * (hop limit 64, no extension header) when both are IPv6. The inverse of `parseSegment()` for
 * what it covers.
 */
export function buildSegment(segment: Omit<Segment, 'family' | 'len'> & { payload?: Uint8Array }): Uint8Array {
  checkObject(segment, 'segment');
  const { src, dst, seq, ack, flags, window, payload = new Uint8Array(0) } = segment;
  for (const [name, end] of [
    ['segment.src', src],
    ['segment.dst', dst],
  ] as const) {
    checkObject(end, name);
    if (familyOf(end.address) === 0) throw invalidArgType(`${name}.address`, 'an IPv4 or IPv6 address (no zone)', end.address);
    checkCount(end.port, `${name}.port`, 65535);
  }
  const family = familyOf(src.address);
  if (familyOf(dst.address) !== family) throw invalidArgType('segment.dst.address', `an IPv${family} address, as segment.src.address`, dst.address);
  checkCount(seq, 'segment.seq', MAX_UINT32);
  checkCount(ack, 'segment.ack', MAX_UINT32);
  checkFlags(flags, 'segment.flags');
  checkCount(window, 'segment.window', 65535);
  if (!(payload instanceof Uint8Array)) throw invalidArgType('segment.payload', 'an instance of Uint8Array', payload);
  const ipHeader = family === 4 ? 20 : 40;
  // IPv4's total length counts its header; IPv6's payload length does not.
  const maxPayload = family === 4 ? 65535 - 40 : 65535 - 20;
  if (payload.length > maxPayload) throw outOfRange('segment.payload.length', `<= ${maxPayload}`, payload.length);
  const tcpLength = 20 + payload.length;
  const packet = new Uint8Array(ipHeader + tcpLength);
  const view = new DataView(packet.buffer);
  let pseudo: number; // the pseudo-header's sum: addresses, protocol, TCP length
  if (family === 4) {
    packet[0] = 0x45; // IPv4, 5 words of header
    view.setUint16(2, packet.length);
    view.setUint16(6, 0x4000); // DF
    packet[8] = 64;
    packet[9] = IPPROTO_TCP;
    packet.set(src.address.split('.').map(Number), 12);
    packet.set(dst.address.split('.').map(Number), 16);
    view.setUint16(10, ~onesSum(packet, 0, 20) & 0xffff);
    pseudo = onesSum(packet, 12, 20, IPPROTO_TCP + tcpLength);
  } else {
    packet[0] = 0x60; // IPv6, traffic class and flow label 0
    view.setUint16(4, tcpLength);
    packet[6] = IPPROTO_TCP;
    packet[7] = 64;
    packet.set(ipv6Bytes(src.address), 8);
    packet.set(ipv6Bytes(dst.address), 24);
    pseudo = onesSum(packet, 8, 40, IPPROTO_TCP + tcpLength);
  }
  const tcp = ipHeader;
  view.setUint16(tcp, src.port);
  view.setUint16(tcp + 2, dst.port);
  view.setUint32(tcp + 4, seq);
  view.setUint32(tcp + 8, ack);
  packet[tcp + 12] = 5 << 4; // data offset: 5 words, no options
  packet[tcp + 13] = FLAG_BITS.reduce((bits, [name, bit]) => (flags.includes(name) ? bits | bit : bits), 0);
  view.setUint16(tcp + 14, window);
  packet.set(payload, tcp + 20);
  view.setUint16(tcp + 16, ~onesSum(packet, tcp, packet.length, pseudo) & 0xffff);
  return packet;
}
