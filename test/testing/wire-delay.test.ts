/**
 * `wire.delay()`: round-trip time added on the lab's wire, seen by the kernels themselves
 * (`tcpi_rtt`, `tcpi_rcv_ooopack`), never by sleeping.
 */
import { describe, expect } from 'vitest';
import net from 'node:net';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import { tcpInfo } from '../../src/index';
import { waitUntil, type Lab } from '../../src/testing/index';
import { itLab } from './helpers';

/** Connects a to b:80 (b echoes whatever it reads) and returns both ends. */
async function echoConnection(lab: Lab) {
  const server = await lab.b.listen(80);
  server.on('connection', (socket: net.Socket) => socket.pipe(socket));
  const accepted = once(server, 'connection') as Promise<[net.Socket]>;
  const sa = await lab.a.connect(80);
  sa.setNoDelay(true);
  const [sb] = await accepted;
  sb.setNoDelay(true);
  return { sa, sb };
}

/** One request/response over the echo connection: 100 bytes out, the same 100 back. */
async function roundTrip(socket: net.Socket): Promise<number> {
  const started = performance.now();
  let got = 0;
  const back = new Promise<void>((resolve) => {
    const onData = (chunk: Buffer) => {
      got += chunk.length;
      if (got >= 100) {
        socket.off('data', onData);
        resolve();
      }
    };
    socket.on('data', onData);
  });
  socket.write(Buffer.alloc(100, 0x61));
  await back;
  return performance.now() - started;
}

/** Round trips until the kernel's smoothed RTT (µs) satisfies `done`, at most `max`; returns the last tcpi_rtt. */
async function rttAfterTraffic(socket: net.Socket, done: (rttUs: number) => boolean, max = 100): Promise<number> {
  for (let i = 0; i < max; i++) {
    await roundTrip(socket);
    if (i >= 10 && done(tcpInfo(socket).rtt)) break;
  }
  return tcpInfo(socket).rtt;
}

describe('wire.delay()', () => {
  itLab('delay(10) each way raises the kernel-measured RTT from < 1 ms to about 20 ms', async (lab) => {
    const { sa } = await echoConnection(lab);
    const before = await rttAfterTraffic(sa, (rtt) => rtt < 1000);
    expect(before).toBeLessThan(1000);

    lab.wire.delay(10);
    // srtt moves 1/8 of the way per sample: ~20 samples to come within 10 % of the new RTT.
    const after = await rttAfterTraffic(sa, (rtt) => rtt >= 18_000, 200);
    expect(after).toBeGreaterThanOrEqual(18_000);
    expect(after).toBeLessThanOrEqual(40_000);
    // An application round trip takes as long too.
    const app = await roundTrip(sa);
    expect(app).toBeGreaterThanOrEqual(20);
    expect(app).toBeLessThan(60);
    // Every segment after the rule was delayed by 10 ms, and logged so.
    const delayed = lab.wire.log.filter((e) => e.verdict === 'delay');
    expect(delayed.length).toBeGreaterThan(20);
    expect(delayed.every((e) => e.delayMs === 10)).toBe(true);
    expect(new Set(delayed.map((e) => e.from))).toEqual(new Set(['a', 'b']));

    // pass() removes the delay: the RTT falls back.
    lab.wire.pass();
    await waitUntil('the delay queues empty', () => lab.wire.delayed === 0);
    const fast = await rttAfterTraffic(sa, (rtt) => rtt < 5000, 200);
    expect(fast).toBeLessThan(5000);
  });

  itLab('keeps the order within a direction: delayed and undelayed segments do not overtake each other', async (lab) => {
    const server = await lab.b.listen(80);
    const accepted = once(server, 'connection') as Promise<[net.Socket]>;
    const sa = await lab.a.connect(80);
    sa.setNoDelay(true);
    const [sb] = await accepted;
    const chunks: Buffer[] = [];
    sb.on('data', (d: Buffer) => chunks.push(d));

    // Every other data segment from a is delayed by 15 ms; the others would pass at once and
    // overtake them if the wire did not queue them behind.
    let n = 0;
    lab.wire.delay(15, (s) => s.from === 'a' && s.len > 0 && n++ % 2 === 0);
    const sent: Buffer[] = [];
    for (let i = 0; i < 200; i++) {
      const chunk = Buffer.from(`${String(i).padStart(4, '0')}:${'x'.repeat(95)}|`);
      sent.push(chunk);
      sa.write(chunk);
      if (i % 20 === 19) await new Promise((resolve) => setImmediate(resolve)); // many segments, not one
    }
    const total = sent.reduce((sum, c) => sum + c.length, 0);
    await waitUntil('every byte at b', () => chunks.reduce((sum, c) => sum + c.length, 0) === total, { timeout: 10_000 });
    expect(Buffer.concat(chunks).equals(Buffer.concat(sent))).toBe(true);

    const fromA = lab.wire.log.filter((e) => e.from === 'a' && e.len > 0);
    const delays = fromA.filter((e) => e.verdict === 'delay').length;
    const passes = fromA.filter((e) => e.verdict === 'pass').length;
    expect(delays).toBeGreaterThan(5);
    expect(passes).toBeGreaterThan(5);
    // The receiving kernel saw no segment out of order (and no retransmission was needed).
    expect(tcpInfo(sb).rcvOoopack).toBe(0);
    expect(tcpInfo(sa).totalRetrans).toBe(0);
  });

  itLab('delays a FIN like data: it reaches the peer after the data, 10 ms later', async (lab) => {
    const server = await lab.b.listen(80, { allowHalfOpen: true });
    const accepted = once(server, 'connection') as Promise<[net.Socket]>;
    const sa = await lab.a.connect(80, { allowHalfOpen: true });
    const [sb] = await accepted;
    let received = '';
    sb.on('data', (d: Buffer) => (received += d.toString()));
    const ended = once(sb, 'end');

    lab.wire.delay(10);
    const started = performance.now();
    sa.end('last words');
    await ended;
    const elapsed = performance.now() - started;
    expect(received).toBe('last words'); // the data before the FIN
    expect(elapsed).toBeGreaterThanOrEqual(10);
    expect(elapsed).toBeLessThan(100);

    const fin = lab.wire.log.find((e) => e.from === 'a' && e.flags.includes('FIN'));
    expect(fin).toMatchObject({ verdict: 'delay', delayMs: 10 });
    // b's ACK of the FIN is delayed on its way back too, and left b only once the FIN had arrived.
    const finAck = await waitUntil('b acknowledges the FIN on the wire', () =>
      lab.wire.log.find((e) => e.from === 'b' && e.flags.includes('ACK') && e.relAck === fin!.relSeq! + fin!.len + 1),
    );
    expect(finAck).toMatchObject({ verdict: 'delay', delayMs: 10 });
    expect(finAck.at - fin!.at).toBeGreaterThanOrEqual(10);
    await waitUntil('a sees its FIN acknowledged', () => tcpInfo(sa).state === 'FIN_WAIT2');
  });

  itLab('validates its arguments', async ({ wire }) => {
    expect(() => wire.delay('10' as unknown as number)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => wire.delay(-1)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => wire.delay(Number.NaN)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => wire.delay(10, 5 as unknown as () => boolean)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(wire.delay(0)).toBe(wire);
  });
});
