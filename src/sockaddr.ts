/**
 * The bytes of a socket address for bind(2) and connect(2), built in TypeScript for the addon's
 * one-syscall calls: used by the same-port handoff, the adoption of connections and the lab.
 */
import net from 'node:net';
import os from 'node:os';
import { native } from './binding';
import { invalidArgType } from './errors';

/** The 16 bytes of an IPv6 address in any RFC 4291 text form without an embedded IPv4 part. */
function ipv6Bytes(address: string): Uint8Array {
  const [head, tail] = address.includes('::') ? address.split('::') : [address, undefined];
  const groups = (s: string | undefined): number[] => (s ? s.split(':').map((g) => parseInt(g, 16)) : []);
  const first = groups(head);
  const last = groups(tail);
  const all = tail === undefined ? first : [...first, ...new Array<number>(8 - first.length - last.length).fill(0), ...last];
  const bytes = new Uint8Array(16);
  all.forEach((g, i) => {
    bytes[2 * i] = g >> 8;
    bytes[2 * i + 1] = g & 0xff;
  });
  return bytes;
}

/** The bytes of a `struct sockaddr_in` / `sockaddr_in6` for bind(2). */
export function sockaddr(address: string, port: number): Uint8Array {
  const { AF_INET, AF_INET6 } = native().constants;
  const le = os.endianness() === 'LE';
  if (net.isIPv4(address)) {
    const bytes = new Uint8Array(16);
    const view = new DataView(bytes.buffer);
    view.setUint16(0, AF_INET, le); // sa_family_t is in host order, the port in network order
    view.setUint16(2, port);
    bytes.set(address.split('.').map(Number), 4);
    return bytes;
  }
  if (net.isIPv6(address) && !address.includes('.') && !address.includes('%')) {
    const bytes = new Uint8Array(28);
    const view = new DataView(bytes.buffer);
    view.setUint16(0, AF_INET6, le);
    view.setUint16(2, port);
    bytes.set(ipv6Bytes(address), 8);
    return bytes;
  }
  throw invalidArgType('host', 'an IPv4 or IPv6 address (no zone, no embedded IPv4)', address);
}

/** The bytes of a `struct sockaddr_un` for the abstract name `name` (a leading NUL, no trailing one; Linux). */
export function abstractSockaddr(name: string): Uint8Array {
  const bytes = new Uint8Array(3 + Buffer.byteLength(name));
  new DataView(bytes.buffer).setUint16(0, native().constants.AF_UNIX, os.endianness() === 'LE'); // sa_family_t, host order
  bytes.set(Buffer.from(name), 3);
  return bytes;
}
