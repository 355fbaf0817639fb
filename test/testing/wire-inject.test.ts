/**
 * wire.inject() and wire.replay(): segments this process makes or repeats, written into a real
 * kernel. The kernels' answers prove the checksums and numbers right (a bad checksum is dropped
 * silently, a wrong sequence number is not delivered).
 */
import { describe, expect, it } from 'vitest';
import { once } from 'node:events';
import { execFile, spawn } from 'node:child_process';
import type net from 'node:net';
import { promisify } from 'node:util';
import { buildSegment, parseSegment, waitUntil, type Lab } from '../../src/testing/index';
import { itLab } from './helpers';

async function connected(lab: Lab): Promise<{ sa: net.Socket; sb: net.Socket }> {
  const server = await lab.b.listen(80);
  const accepted = once(server, 'connection');
  const sa = await lab.a.connect(80);
  const [sb] = (await accepted) as [net.Socket];
  return { sa, sb };
}

const code = (fn: () => unknown): string | undefined => {
  try {
    fn();
  } catch (error) {
    return (error as { code?: string }).code;
  }
  return undefined;
};

describe('wire.inject()', () => {
  itLab('writes a data segment as if a sent it: b delivers its bytes and ACKs them', async (lab) => {
    expect(code(() => lab.wire.inject('a', { flags: ['ACK'], relSeq: 1, relAck: 1 }))).toBe('ERR_FINWAIT_WIRE_NO_CONNECTION');
    const { sb } = await connected(lab);
    const received = once(sb, 'data');
    const entry = lab.wire.inject('a', { flags: ['PSH', 'ACK'], relSeq: 1, relAck: 1, payload: Buffer.from('hi') });
    expect(entry).toMatchObject({ from: 'a', verdict: 'inject', relSeq: 1, relAck: 1, len: 2, flags: ['PSH', 'ACK'] });
    expect(String((await received)[0])).toBe('hi');
    await waitUntil("b's ACK of the injected bytes", () => lab.wire.log.find((e) => e.from === 'b' && e.relAck === 3));
  });

  itLab('an injected RST in window resets the host it reaches: its socket sees ECONNRESET', async (lab) => {
    const { sa, sb } = await connected(lab);
    const error = once(sb, 'error');
    lab.wire.inject('a', { flags: ['RST'], relSeq: 1 });
    expect(((await error)[0] as NodeJS.ErrnoException).code).toBe('ECONNRESET');
    // The other way, with the default connection (the last segment seen was a's, or b's RST-free answer).
    const errorA = once(sa, 'error');
    const entry = lab.wire.inject('b', { flags: ['RST'], relSeq: 1 });
    expect(entry).toMatchObject({ from: 'b', src: { address: '10.77.0.2', port: 80 }, dst: { address: '10.77.0.1', port: sa.localPort } });
    expect(((await errorA)[0] as NodeJS.ErrnoException).code).toBe('ECONNRESET');
    await waitUntil('b has no connection', () => lab.b.sockets({ port: 80 }).every((s) => s.state === 'LISTEN'));
  });

  itLab('checks its arguments', async (lab) => {
    await connected(lab);
    expect(code(() => lab.wire.inject('c' as never, { flags: ['ACK'], relSeq: 1, relAck: 1 }))).toBe('ERR_INVALID_ARG_TYPE');
    expect(code(() => lab.wire.inject('a', { flags: ['ACK'], relSeq: 1 }))).toBe('ERR_INVALID_ARG_TYPE');
    expect(code(() => lab.wire.inject('a', { flags: ['ACK'], relSeq: -1, relAck: 1 }))).toBe('ERR_OUT_OF_RANGE');
    expect(code(() => lab.wire.inject('a', { flags: ['NOPE' as never], relSeq: 1, relAck: 1 }))).toBe('ERR_INVALID_ARG_TYPE');
    expect(code(() => lab.wire.inject('a', { flags: ['ACK'], relSeq: 1, relAck: 1, window: 70000 }))).toBe('ERR_OUT_OF_RANGE');
    expect(code(() => lab.wire.inject('a', null as never))).toBe('ERR_INVALID_ARG_TYPE');
    const { src, dst } = lab.wire.log[0];
    expect(code(() => lab.wire.inject('a', { flags: ['RST'], relSeq: 1, of: { src, dst } as never }))).toBe('ERR_INVALID_ARG_TYPE');
  });
});

/** A host's link-local IPv6 address on the wire (the kernel's own), once duplicate detection passed. */
async function linkLocal(netns: string): Promise<string | undefined> {
  const { stdout } = await promisify(execFile)('ip', ['-n', netns, '-j', '-6', 'addr', 'show', 'dev', 'wire0']);
  const [device] = JSON.parse(stdout) as { addr_info: { local: string; scope: string; tentative?: boolean }[] }[];
  return device?.addr_info.find((a) => a.scope === 'link' && !a.tentative)?.local;
}

describe('wire.inject() over IPv6', () => {
  itLab("takes a connection between the hosts' link-local addresses: b delivers injected bytes, ACKs them, and takes an RST", async (lab) => {
    // The lab's hosts have only the kernel's link-local IPv6 addresses. A connection to one names
    // the zone (%wire0), which Node resolves in its own namespace: the client runs inside a's.
    let address: string | undefined;
    await waitUntil("b's link-local address", async () => (address = await linkLocal(lab.b.netns)));
    await waitUntil("a's link-local address", () => linkLocal(lab.a.netns));
    const server = await lab.b.listen(80, { host: '::' });
    const accepted = once(server, 'connection');
    const client = spawn('ip', ['netns', 'exec', lab.a.netns, process.execPath, '-e', CLIENT, `${address}%wire0`], { stdio: ['pipe', 'inherit', 'inherit'] });
    try {
      const [sb] = (await accepted) as [net.Socket];
      expect(sb.remoteFamily).toBe('IPv6');
      await waitUntil("a's ACK of b's SYN-ACK", () => lab.wire.log.find((e) => e.from === 'a' && e.relAck === 1));
      const received = once(sb, 'data');
      const entry = lab.wire.inject('a', { flags: ['PSH', 'ACK'], relSeq: 1, relAck: 1, payload: Buffer.from('six') });
      expect(entry).toMatchObject({ family: 6, from: 'a', verdict: 'inject', dst: { address, port: 80 }, len: 3 });
      expect(String((await received)[0])).toBe('six'); // a bad checksum would have been dropped
      await waitUntil("b's ACK of the injected bytes", () => lab.wire.log.find((e) => e.from === 'b' && e.family === 6 && e.relAck === 4));
      const error = once(sb, 'error');
      lab.wire.inject('a', { flags: ['RST'], relSeq: 4 });
      expect(((await error)[0] as NodeJS.ErrnoException).code).toBe('ECONNRESET');
    } finally {
      client.kill();
      await once(client, 'close');
    }
  });
});

/** The IPv6 client, run in host a's namespace: connects, reads, and stays until killed. */
const CLIENT = `
const socket = require('node:net').connect({ host: process.argv[1], port: 80 });
socket.on('error', () => {});
socket.resume();
`;

describe('wire.replay()', () => {
  itLab('writes a logged packet again: b delivers the bytes once and answers the duplicate with an ACK', async (lab) => {
    const { sa, sb } = await connected(lab);
    let bytes = '';
    sb.on('data', (d: Buffer) => (bytes += String(d)));
    sa.write('once');
    await waitUntil('b read the bytes', () => bytes === 'once');
    const original = lab.wire.log.find((e) => e.from === 'a' && e.len === 4)!;
    await waitUntil("b's ACK", () => lab.wire.log.find((e) => e.from === 'b' && e.relAck === 5));
    const acks = (): number => lab.wire.log.filter((e) => e.from === 'b' && e.relAck === 5).length;
    const before = acks();
    const copy = lab.wire.replay(original);
    expect(copy).toMatchObject({ from: 'a', verdict: 'replay', relSeq: 1, len: 4, seq: original.seq });
    await waitUntil('a duplicate ACK from b', () => acks() > before);
    expect(bytes).toBe('once');
    expect(code(() => lab.wire.replay({ ...original }))).toBe('ERR_INVALID_ARG_VALUE');
    lab.wire.clearLog();
    expect(code(() => lab.wire.replay(original))).toBe('ERR_INVALID_ARG_VALUE');
  });
});

it('buildSegment() makes what parseSegment() reads, with valid checksums', () => {
  const segment = { src: { address: '10.77.0.1', port: 40000 }, dst: { address: '10.77.0.2', port: 80 }, seq: 2 ** 32 - 1, ack: 7, flags: ['FIN', 'ACK'] as const, window: 502 };
  const packet = buildSegment({ ...segment, flags: [...segment.flags], payload: Buffer.from('odd') });
  expect(parseSegment(packet)).toEqual({ ...segment, flags: ['FIN', 'ACK'], family: 4, len: 3 });
  // A correct checksum sums (with the pseudo-header) to 0xffff: the IPv4 header's does alone.
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += (packet[i] << 8) | packet[i + 1];
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  expect(sum).toBe(0xffff);
  expect(code(() => buildSegment({ ...segment, flags: [], src: { address: '::1', port: 1 } }))).toBe('ERR_INVALID_ARG_TYPE');
  expect(code(() => buildSegment({ ...segment, flags: [], src: { address: 'fe80::1%wire0', port: 1 }, dst: { address: 'fe80::2', port: 1 } }))).toBe('ERR_INVALID_ARG_TYPE');
});

it('buildSegment() makes IPv6 packets too: what parseSegment() reads, the TCP checksum over the RFC 8200 pseudo-header', () => {
  const segment = { src: { address: 'fe80::1:2', port: 40000 }, dst: { address: 'fd77::2', port: 80 }, seq: 5, ack: 2 ** 32 - 1, flags: ['ACK'] as const, window: 65535 };
  const packet = buildSegment({ ...segment, flags: [...segment.flags], payload: Buffer.from('odd') });
  expect(packet.length).toBe(40 + 20 + 3);
  expect([packet[0] >> 4, (packet[4] << 8) | packet[5], packet[6]]).toEqual([6, 23, 6]); // version, payload length, TCP
  expect(parseSegment(packet)).toEqual({ ...segment, flags: ['ACK'], family: 6, len: 3 });
  // Pseudo-header (source, destination, upper-layer length, next header) plus the segment sums to 0xffff.
  let sum = 23 + 6;
  for (let i = 8; i < packet.length; i += 2) sum += (packet[i] << 8) | (i + 1 < packet.length ? packet[i + 1] : 0);
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  expect(sum).toBe(0xffff);
});
