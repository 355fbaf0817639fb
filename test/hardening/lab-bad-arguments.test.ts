/**
 * Every public function of finwait/testing answers bad input (null, undefined, wrong types, NaN,
 * negatives, out of range) with a Node-style coded error (ERR_INVALID_ARG_TYPE, ERR_OUT_OF_RANGE):
 * never an uncoded TypeError, a crash or a hang. A function that returns a promise rejects; the
 * others throw. One table per function: the call, and the code it must give.
 */
import { describe, expect, it } from 'vitest';
import net from 'node:net';
import {
  connectPair,
  createLab,
  formatSegment,
  isPureAck,
  parseSegment,
  waitForState,
  waitUntil,
  Wire,
  type Lab,
} from '../../src/testing/index';
import { itLab } from '../testing/helpers';

const TYPE = 'ERR_INVALID_ARG_TYPE';
const RANGE = 'ERR_OUT_OF_RANGE';
/** Longer than any of these calls takes; a call still pending then is reported as a hang. */
const HANG_MS = 3000;

type Row = readonly [name: string, call: () => unknown, code: string];

/**
 * How a call ended: `throws CODE` (synchronously), `rejects CODE`, or `returned`/`resolved`;
 * `hang` if its promise is still pending after HANG_MS. An error without a code reads `no code: ...`.
 */
async function outcome(call: () => unknown): Promise<string> {
  const codeOf = (error: unknown): string => {
    const code = (error as { code?: unknown } | undefined)?.code;
    return typeof code === 'string' ? code : `no code: ${String(error)}`;
  };
  let result: unknown;
  try {
    result = call();
  } catch (error) {
    return `throws ${codeOf(error)}`;
  }
  if (!(result instanceof Promise)) return 'returned';
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<string>((resolve) => (timer = setTimeout(() => resolve('hang'), HANG_MS)));
  try {
    return await Promise.race([result.then(() => 'resolved', (error: unknown) => `rejects ${codeOf(error)}`), hang]);
  } finally {
    clearTimeout(timer);
  }
}

/** Checks a whole table at once: every row's outcome against the expected one. */
async function check(rows: readonly Row[], how: 'throws' | 'rejects'): Promise<void> {
  const got: string[] = [];
  for (const [name, call] of rows) got.push(`${name}: ${await outcome(call)}`);
  expect(got).toEqual(rows.map(([name, , code]) => `${name}: ${how} ${code}`));
}

/** A valid segment, to spoil one field at a time. */
const segment = { seq: 1, ack: 1, flags: ['FIN', 'ACK'], len: 0, relSeq: 1, relAck: 1 };
const spoiled = (field: string, value: unknown): Record<string, unknown> => ({ ...segment, [field]: value });

describe('finwait/testing: bad arguments get coded errors', () => {
  it('parseSegment(packet)', async () => {
    await check(
      [
        ['null', () => parseSegment(null as never), TYPE],
        ['undefined', () => parseSegment(undefined as never), TYPE],
        ['a number', () => parseSegment(42 as never), TYPE],
        ['a string', () => parseSegment('E\0\0' as never), TYPE],
        ['an array of bytes', () => parseSegment([0x45, 0, 0] as never), TYPE],
        ['an ArrayBuffer', () => parseSegment(new ArrayBuffer(40) as never), TYPE],
        ['a plain object', () => parseSegment({ length: 40 } as never), TYPE],
      ],
      'throws',
    );
    // What it takes: any Uint8Array (a Buffer is one); bytes that are no TCP segment give undefined.
    expect(parseSegment(new Uint8Array(0))).toBeUndefined();
    expect(parseSegment(Buffer.alloc(40))).toBeUndefined();
  });

  it('formatSegment(segment)', async () => {
    await check(
      [
        ['null', () => formatSegment(null as never), TYPE],
        ['undefined', () => formatSegment(undefined as never), TYPE],
        ['a string', () => formatSegment('<SEQ=1>' as never), TYPE],
        ['no flags', () => formatSegment(spoiled('flags', undefined) as never), TYPE],
        ['flags null', () => formatSegment(spoiled('flags', null) as never), TYPE],
        ['flags a string', () => formatSegment(spoiled('flags', 'ACK') as never), TYPE],
        ['an unknown flag', () => formatSegment(spoiled('flags', ['ACK', 'NOPE']) as never), TYPE],
        ['a flag that is a number', () => formatSegment(spoiled('flags', [0x10]) as never), TYPE],
        ['seq undefined', () => formatSegment(spoiled('seq', undefined) as never), TYPE],
        ['seq a string', () => formatSegment(spoiled('seq', '1') as never), TYPE],
        ['seq NaN', () => formatSegment(spoiled('seq', NaN) as never), RANGE],
        ['seq negative', () => formatSegment(spoiled('seq', -1) as never), RANGE],
        ['seq 2^32', () => formatSegment(spoiled('seq', 2 ** 32) as never), RANGE],
        ['seq 1.5', () => formatSegment(spoiled('seq', 1.5) as never), RANGE],
        ['ack null', () => formatSegment(spoiled('ack', null) as never), TYPE],
        ['ack negative', () => formatSegment(spoiled('ack', -1) as never), RANGE],
        ['len undefined', () => formatSegment(spoiled('len', undefined) as never), TYPE],
        ['len NaN', () => formatSegment(spoiled('len', NaN) as never), RANGE],
        ['len negative', () => formatSegment(spoiled('len', -1) as never), RANGE],
        ['relSeq a string', () => formatSegment(spoiled('relSeq', '1') as never), TYPE],
        ['relSeq NaN', () => formatSegment(spoiled('relSeq', NaN) as never), RANGE],
        ['relAck negative', () => formatSegment(spoiled('relAck', -1) as never), RANGE],
      ],
      'throws',
    );
    // relSeq and relAck may be absent or undefined (no SYN seen): the absolute numbers print.
    expect(formatSegment({ seq: 5, ack: 6, flags: ['ACK'], len: 0, relSeq: undefined })).toBe('<SEQ=5><ACK=6><CTL=ACK>');
  });

  it('isPureAck(segment)', async () => {
    await check(
      [
        ['null', () => isPureAck(null as never), TYPE],
        ['undefined', () => isPureAck(undefined as never), TYPE],
        ['a number', () => isPureAck(1 as never), TYPE],
        ['flags null', () => isPureAck({ flags: null, len: 0 } as never), TYPE],
        ['an unknown flag', () => isPureAck({ flags: ['ack'], len: 0 } as never), TYPE],
        ['len undefined', () => isPureAck({ flags: ['ACK'] } as never), TYPE],
        ['len NaN', () => isPureAck({ flags: ['ACK'], len: NaN } as never), RANGE],
        ['len negative', () => isPureAck({ flags: ['ACK'], len: -1 } as never), RANGE],
      ],
      'throws',
    );
    expect(isPureAck({ flags: ['ACK'], len: 0 })).toBe(true);
  });

  it('connectPair(options)', async () => {
    await check(
      [
        ['null', () => connectPair(null as never), TYPE],
        ['a number', () => connectPair(1 as never), TYPE],
        ['a string', () => connectPair('127.0.0.1' as never), TYPE],
        ['host a number', () => connectPair({ host: 1 as never }), TYPE],
        ['host null', () => connectPair({ host: null as never }), TYPE],
        ['host not an address', () => connectPair({ host: 'no such host' }), TYPE],
        ['allowHalfOpen a string', () => connectPair({ allowHalfOpen: 'yes' as never }), TYPE],
        ['pauseOnConnect a number', () => connectPair({ pauseOnConnect: 1 as never }), TYPE],
      ],
      'rejects',
    );
  });

  it('waitForState(socket, state, options)', async () => {
    const pair = await connectPair();
    try {
      await check(
        [
          ['socket null', () => waitForState(null as never, 'ESTABLISHED'), TYPE],
          ['socket undefined', () => waitForState(undefined as never, 'ESTABLISHED'), TYPE],
          ['socket a string', () => waitForState('socket' as never, 'ESTABLISHED'), TYPE],
          ['socket NaN', () => waitForState(NaN as never, 'ESTABLISHED'), TYPE],
          ['state null', () => waitForState(pair.client, null as never), TYPE],
          ['state unknown', () => waitForState(pair.client, 'NOPE' as never), TYPE],
          ['states empty', () => waitForState(pair.client, []), TYPE],
          ['states with an unknown one', () => waitForState(pair.client, ['ESTABLISHED', 'NOPE'] as never), TYPE],
          ['options null', () => waitForState(pair.client, 'ESTABLISHED', null as never), TYPE],
          ['timeout a string', () => waitForState(pair.client, 'CLOSE', { timeout: '5' as never }), TYPE],
          ['timeout NaN', () => waitForState(pair.client, 'CLOSE', { timeout: NaN }), RANGE],
          ['timeout negative', () => waitForState(pair.client, 'CLOSE', { timeout: -1 }), RANGE],
          ['timeout Infinity', () => waitForState(pair.client, 'CLOSE', { timeout: Infinity }), RANGE],
          ['signal not an AbortSignal', () => waitForState(pair.client, 'CLOSE', { signal: {} as never }), TYPE],
        ],
        'rejects',
      );
    } finally {
      await pair.close();
    }
  });

  it('waitUntil(describe, probe, options, lastSeen)', async () => {
    const probe = (): boolean => false;
    await check(
      [
        ['describe null', () => waitUntil(null as never, probe), TYPE],
        ['describe a number', () => waitUntil(1 as never, probe), TYPE],
        ['probe null', () => waitUntil('x', null as never), TYPE],
        ['probe a string', () => waitUntil('x', 'probe' as never), TYPE],
        ['options null', () => waitUntil('x', probe, null as never), TYPE],
        ['options a number', () => waitUntil('x', probe, 5 as never), TYPE],
        ['timeout NaN', () => waitUntil('x', probe, { timeout: NaN }), RANGE],
        ['timeout negative', () => waitUntil('x', probe, { timeout: -5 }), RANGE],
        ['signal a string', () => waitUntil('x', probe, { signal: 'abort' as never }), TYPE],
        ['lastSeen a string', () => waitUntil('x', probe, {}, 'last' as never), TYPE],
      ],
      'rejects',
    );
  });

  it('createLab(options): checked before anything is made, privileged or not', async () => {
    await check(
      [
        ['null', () => createLab(null as never), TYPE],
        ['a number', () => createLab(1500 as never), TYPE],
        ['a string', () => createLab('mtu' as never), TYPE],
        ['mtu a string', () => createLab({ mtu: '1500' as never }), TYPE],
        ['mtu null', () => createLab({ mtu: null as never }), TYPE],
        ['mtu NaN', () => createLab({ mtu: NaN }), RANGE],
        ['mtu negative', () => createLab({ mtu: -1 }), RANGE],
        ['mtu below 576', () => createLab({ mtu: 575 }), RANGE],
        ['mtu above 65535', () => createLab({ mtu: 65536 }), RANGE],
        ['mtu 1500.5', () => createLab({ mtu: 1500.5 }), RANGE],
        ['mtu Infinity', () => createLab({ mtu: Infinity }), RANGE],
      ],
      'rejects',
    );
  });

  it('new Wire(fds) (made by the lab; a direct call is still checked)', async () => {
    await check(
      [
        ['null', () => new Wire(null as never), TYPE],
        ['undefined', () => new Wire(undefined as never), TYPE],
        ['no b', () => new Wire({ a: 0 } as never), TYPE],
        ['a string fd', () => new Wire({ a: '3', b: 4 } as never), TYPE],
        ['a negative fd', () => new Wire({ a: -1, b: 4 }), RANGE],
        ['a NaN fd', () => new Wire({ a: NaN, b: 4 }), RANGE],
      ],
      'throws',
    );
  });

  itLab('the hosts and the wire of a lab', async (lab: Lab) => {
    const { a, wire } = lab;
    const rejecting: Row[] = [
      ['listen: port null', () => a.listen(null as never), TYPE],
      ['listen: port undefined', () => a.listen(undefined as never), TYPE],
      ['listen: port a string', () => a.listen('80' as never), TYPE],
      ['listen: port NaN', () => a.listen(NaN), RANGE],
      ['listen: port negative', () => a.listen(-1), RANGE],
      ['listen: port 65536', () => a.listen(65536), RANGE],
      ['listen: port 1.5', () => a.listen(1.5), RANGE],
      ['listen: options null', () => a.listen(0, null as never), TYPE],
      ['listen: options a number', () => a.listen(0, 1 as never), TYPE],
      ['listen: host a number', () => a.listen(0, { host: 1 as never }), TYPE],
      ['listen: host null', () => a.listen(0, { host: null as never }), TYPE],
      ['listen: host not an address', () => a.listen(0, { host: 'localhost' }), TYPE],
      ['listen: backlog a string', () => a.listen(0, { backlog: '5' as never }), TYPE],
      ['listen: backlog NaN', () => a.listen(0, { backlog: NaN }), RANGE],
      ['listen: backlog negative', () => a.listen(0, { backlog: -1 }), RANGE],
      ['listen: backlog 1.5', () => a.listen(0, { backlog: 1.5 }), RANGE],
      ['listen: allowHalfOpen a string', () => a.listen(0, { allowHalfOpen: 'yes' as never }), TYPE],
      ['listen: pauseOnConnect null', () => a.listen(0, { pauseOnConnect: null as never }), TYPE],
      ['connect: port null', () => a.connect(null as never), TYPE],
      ['connect: port 0', () => a.connect(0), RANGE],
      ['connect: port NaN', () => a.connect(NaN), RANGE],
      ['connect: port negative', () => a.connect(-80), RANGE],
      ['connect: options null', () => a.connect(80, null as never), TYPE],
      ['connect: host a number', () => a.connect(80, { host: 1 as never }), TYPE],
      ['connect: host null', () => a.connect(80, { host: null as never }), TYPE],
      ['connect: host not an address', () => a.connect(80, { host: 'b' }), TYPE],
      ['connect: localPort a string', () => a.connect(80, { localPort: '1' as never }), TYPE],
      ['connect: localPort NaN', () => a.connect(80, { localPort: NaN }), RANGE],
      ['connect: localPort negative', () => a.connect(80, { localPort: -1 }), RANGE],
      ['connect: reuseAddress a number', () => a.connect(80, { reuseAddress: 1 as never }), TYPE],
      ['connect: allowHalfOpen null', () => a.connect(80, { allowHalfOpen: null as never }), TYPE],
      ['connect: pauseOnConnect a string', () => a.connect(80, { pauseOnConnect: 'no' as never }), TYPE],
      ['nft: rules null', () => a.nft(null as never), TYPE],
      ['nft: rules undefined', () => a.nft(undefined as never), TYPE],
      ['nft: rules a number', () => a.nft(1 as never), TYPE],
    ];
    await check(rejecting, 'rejects');
    const throwing: Row[] = [
      ['sysctl: name null', () => a.sysctl(null as never, 1), TYPE],
      ['sysctl: name a number', () => a.sysctl(1 as never, 1), TYPE],
      ['sysctl: name outside net.', () => a.sysctl('kernel.pid_max', 1), TYPE],
      ['sysctl: name with a path in it', () => a.sysctl('net.ipv4/../../kernel.x', 1), TYPE],
      ['sysctl: value null', () => a.sysctl('net.ipv4.tcp_fin_timeout', null as never), TYPE],
      ['sysctl: value undefined', () => a.sysctl('net.ipv4.tcp_fin_timeout', undefined as never), TYPE],
      ['sysctl: value an object', () => a.sysctl('net.ipv4.tcp_fin_timeout', {} as never), TYPE],
      ['sysctl: value NaN', () => a.sysctl('net.ipv4.tcp_fin_timeout', NaN), RANGE],
      ['sysctl: value Infinity', () => a.sysctl('net.ipv4.tcp_fin_timeout', Infinity), RANGE],
      ['sockets: filter null', () => a.sockets(null as never), TYPE],
      ['sockets: filter a number', () => a.sockets(1 as never), TYPE],
      ['sockets: an unknown filter key', () => a.sockets({ nope: 1 } as never), TYPE],
      ['sockets: states a string', () => a.sockets({ states: 'LISTEN' as never }), TYPE],
      ['findSocket: null', () => a.findSocket(null as never), TYPE],
      ['findSocket: undefined', () => a.findSocket(undefined as never), TYPE],
      ['findSocket: an empty object', () => a.findSocket({} as never), TYPE],
      ['hold: predicate null', () => wire.hold(null as never), TYPE],
      ['hold: predicate a string', () => wire.hold('FIN' as never), TYPE],
      ['drop: predicate a number', () => wire.drop(1 as never), TYPE],
      ['delay: ms null', () => wire.delay(null as never), TYPE],
      ['delay: ms undefined', () => wire.delay(undefined as never), TYPE],
      ['delay: ms a string', () => wire.delay('10' as never), TYPE],
      ['delay: ms NaN', () => wire.delay(NaN), RANGE],
      ['delay: ms negative', () => wire.delay(-1), RANGE],
      ['delay: ms Infinity', () => wire.delay(Infinity), RANGE],
      ['delay: predicate an object', () => wire.delay(1, {} as never), TYPE],
      ['release: predicate null', () => wire.release(null as never), TYPE],
      ['release: predicate a number', () => wire.release(1 as never), TYPE],
    ];
    await check(throwing, 'throws');
    // None of them took effect: no rule, no socket or server left behind, and the lab still works.
    expect(wire.held).toEqual([]);
    expect(a.sockets()).toEqual([]);
    const server = await lab.b.listen(80);
    const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
    (await a.connect(80)).destroy();
    (await accepted).destroy();
  });
});
