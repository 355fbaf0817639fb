/**
 * The pure part of traceConnections(): from the observations a source makes to each connection's
 * end. The sequences are the ones the kernel makes (docs/kernel.md, "What the kernel reports"): every
 * transition from the BPF tracepoint, with sk_err at the last one.
 */
import { describe, expect, it } from 'vitest';
import { closedFirst, EndTracker, outcomeOf, settle, type ConnectionEnd, type Observation, type PendingEnd } from '../../src/trace/ends';
import type { TcpState } from '../../src/states';

const local = { address: '127.0.0.1', port: 40000 };
const remote = { address: '127.0.0.1', port: 8080 };

/** Feeds `from -> to` transitions of one socket, like the BPF source; returns what the last one gave. */
function run(tracker: EndTracker, steps: [TcpState, TcpState, number?, number?][], cookie = '00000000000000aa'): ConnectionEnd | PendingEnd | undefined {
  let out: ConnectionEnd | PendingEnd | undefined;
  steps.forEach(([from, to, error = 0, pid], i) => {
    const o: Observation = { cookie, netns: '0000000000000001', family: 4, local, remote, from, state: to, time: i * 10, error, ...(pid !== undefined ? { pid, comm: 'app' } : {}) };
    const r = tracker.observe(o);
    if (i < steps.length - 1) expect(r).toBeUndefined();
    out = r;
  });
  return out;
}

describe('EndTracker on every transition (BPF)', () => {
  it('an active close: connected by the process, FIN first, TIME_WAIT looked up, then graceful', () => {
    const r = run(new EndTracker('bpf'), [['CLOSE', 'SYN_SENT', 0, 77], ['SYN_SENT', 'ESTABLISHED'], ['ESTABLISHED', 'FIN_WAIT1', 0, 77], ['FIN_WAIT1', 'FIN_WAIT2'], ['FIN_WAIT2', 'CLOSE', 0, 5]]);
    expect(r).toMatchObject({ checkTimeWait: true });
    const end = settle((r as PendingEnd).end, 'TIME_WAIT', true);
    expect(end).toMatchObject({ path: ['SYN_SENT', 'ESTABLISHED', 'FIN_WAIT1', 'FIN_WAIT2', 'TIME_WAIT'], outcome: 'graceful', closedFirst: 'local', pid: 77, comm: 'app', startSeen: true, durationMs: 40, pathSeen: 'every-transition' });
  });

  it('a passive close ends graceful in LAST_ACK -> CLOSE; the closing process is the owner, not the softirq task', () => {
    // An accepted connection is cloned from its listener: its first change is LISTEN -> SYN_RECV.
    const end = run(new EndTracker('bpf'), [['LISTEN', 'SYN_RECV', 0, 9], ['SYN_RECV', 'ESTABLISHED', 0, 9], ['ESTABLISHED', 'CLOSE_WAIT', 0, 9], ['CLOSE_WAIT', 'LAST_ACK', 0, 42], ['LAST_ACK', 'CLOSE', 0, 9]]) as ConnectionEnd;
    expect(end).toMatchObject({ path: ['SYN_RECV', 'ESTABLISHED', 'CLOSE_WAIT', 'LAST_ACK', 'CLOSE'], outcome: 'graceful', closedFirst: 'remote', pid: 42, startSeen: true });
  });

  it.each([
    [104, 'reset-received', 'remote'],
    [32, 'reset-received', 'remote'],
    [103, 'killed', undefined],
    [110, 'timed-out', undefined],
  ] as const)('ESTABLISHED -> CLOSE with sk_err %i is %s', (error, outcome, first) => {
    const end = run(new EndTracker('bpf'), [['SYN_SENT', 'ESTABLISHED'], ['ESTABLISHED', 'CLOSE', error]]) as ConnectionEnd;
    expect(end.outcome).toBe(outcome);
    expect(end.closedFirst).toBe(first);
    expect(end.error).toBe({ 104: 'ECONNRESET', 32: 'EPIPE', 103: 'ECONNABORTED', 110: 'ETIMEDOUT' }[error]);
  });

  it('ECONNRESET after our FIN is not called received: a closed socket answering data sets it too', () => {
    expect(run(new EndTracker('bpf'), [['ESTABLISHED', 'FIN_WAIT1'], ['FIN_WAIT1', 'FIN_WAIT2'], ['FIN_WAIT2', 'CLOSE', 104]])).toMatchObject({ outcome: 'unknown', error: 'ECONNRESET' });
    expect(run(new EndTracker('bpf'), [['ESTABLISHED', 'FIN_WAIT1'], ['FIN_WAIT1', 'CLOSING'], ['CLOSING', 'CLOSE', 104]])).toMatchObject({ outcome: 'reset-received' });
  });

  it('a refused connect; an RST this end sent; a close in SYN_SENT is not called a reset', () => {
    expect(run(new EndTracker('bpf'), [['CLOSE', 'SYN_SENT', 0, 3], ['SYN_SENT', 'CLOSE', 111]])).toMatchObject({ outcome: 'refused', closedFirst: 'remote', pid: 3 });
    expect(run(new EndTracker('bpf'), [['SYN_SENT', 'ESTABLISHED'], ['ESTABLISHED', 'CLOSE', 0, 8]])).toMatchObject({ outcome: 'reset-sent', closedFirst: 'local', pid: 8 });
    expect(run(new EndTracker('bpf'), [['CLOSE', 'SYN_SENT'], ['SYN_SENT', 'CLOSE', 0]])).toMatchObject({ outcome: 'unknown' });
  });

  it('freed from FIN_WAIT2 with nothing after it: reset-sent only if the TIME_WAIT table never overflowed; a FIN_WAIT2 timewait socket is no end yet', () => {
    const tracker = new EndTracker('bpf');
    const steps: [TcpState, TcpState][] = [['ESTABLISHED', 'FIN_WAIT1'], ['FIN_WAIT1', 'FIN_WAIT2'], ['FIN_WAIT2', 'CLOSE']];
    const a = run(tracker, steps, '01') as PendingEnd;
    expect(settle(a.end, 'none', true, true)).toMatchObject({ outcome: 'unknown', path: ['ESTABLISHED', 'FIN_WAIT1', 'FIN_WAIT2', 'CLOSE'] });
    expect(a.end.because).toContain('no TIME_WAIT');
    const a2 = run(tracker, steps, '03') as PendingEnd;
    expect(settle(a2.end, 'none', true, false)).toMatchObject({ outcome: 'reset-sent', closedFirst: 'local' });
    const a3 = run(tracker, steps, '04') as PendingEnd;
    expect(settle(a3.end, 'FIN_WAIT2', true)).toMatchObject({ outcome: 'unknown', path: ['ESTABLISHED', 'FIN_WAIT1', 'FIN_WAIT2'] });
    const b = run(tracker, [['ESTABLISHED', 'FIN_WAIT1'], ['FIN_WAIT1', 'CLOSING'], ['CLOSING', 'CLOSE']], '02') as PendingEnd;
    expect(settle(b.end, undefined, true)).toMatchObject({ outcome: 'unknown', closedFirst: 'simultaneous' });
    expect(b.end.because).toContain('could not be searched');
  });

  it('listeners are not connections; same-state events add nothing; memory is one entry per open connection', () => {
    const tracker = new EndTracker('bpf');
    expect(tracker.observe({ cookie: 'l', state: 'LISTEN', from: 'CLOSE', time: 0, error: 0 })).toBeUndefined();
    expect(tracker.observe({ cookie: 'l', state: 'CLOSE', from: 'LISTEN', time: 1, error: 0 })).toBeUndefined();
    expect(tracker.size).toBe(0);
    const end = run(tracker, [['ESTABLISHED', 'FIN_WAIT1'], ['FIN_WAIT1', 'FIN_WAIT1'], ['FIN_WAIT1', 'CLOSE', 0]]) as PendingEnd;
    expect(end.end.path).toEqual(['ESTABLISHED', 'FIN_WAIT1', 'CLOSE']);
    expect(end.end.startSeen).toBe(false);
    expect(tracker.size).toBe(0);
  });

  it('keeps the ports seen before the kernel cleared them (a reset socket, a client before its bind)', () => {
    const tracker = new EndTracker('bpf');
    tracker.observe({ cookie: 'c', family: 4, local: { address: '127.0.0.1', port: 0 }, remote, from: 'CLOSE', state: 'SYN_SENT', time: 0, error: 0 });
    tracker.observe({ cookie: 'c', family: 4, local, remote, from: 'SYN_SENT', state: 'ESTABLISHED', time: 1, error: 0 });
    const end = tracker.observe({ cookie: 'c', family: 4, local, remote: { address: '0.0.0.0', port: 0 }, from: 'ESTABLISHED', state: 'CLOSE', time: 2, error: 0 }) as ConnectionEnd;
    expect(end).toMatchObject({ local, remote, outcome: 'reset-sent' });
  });
});

describe('EndTracker on sampled states (destroy multicast)', () => {
  it('never calls an end graceful or a reset without seeing it: a TIME_WAIT after it, or LAST_ACK with nothing unacknowledged', () => {
    const tracker = new EndTracker('destroy-multicast');
    tracker.observe({ cookie: 'a', family: 4, local, remote, state: 'ESTABLISHED', time: 0 });
    const a = tracker.observe({ cookie: 'a', family: 4, local, remote, state: 'CLOSE', from: 'ESTABLISHED', time: 5 }) as PendingEnd;
    expect(a.checkTimeWait).toBe(true);
    expect(settle(a.end, 'TIME_WAIT', false)).toMatchObject({ outcome: 'graceful', path: ['ESTABLISHED', 'TIME_WAIT'], closedFirst: 'local', pathSeen: 'sampled' });
    tracker.observe({ cookie: 'b', state: 'LAST_ACK', time: 0 });
    const acked = { retransmits: 0, unackedSegments: 0, bytesReceived: 1, bytesAcked: 1 };
    expect(tracker.observe({ cookie: 'b', state: 'CLOSE', from: 'LAST_ACK', time: 1, counters: acked })).toMatchObject({ outcome: 'graceful' });
    tracker.observe({ cookie: 'c', state: 'CLOSE_WAIT', time: 0 });
    expect(tracker.observe({ cookie: 'c', state: 'CLOSE', from: 'CLOSE_WAIT', time: 1, counters: acked })).toMatchObject({ outcome: 'unknown' });
    const d = tracker.observe({ cookie: 'd', state: 'CLOSE', time: 1, counters: acked }) as PendingEnd;
    expect(settle(d.end, 'none', false, false)).toMatchObject({ outcome: 'unknown', path: ['CLOSE'] });
  });

  it('outcomeOf and closedFirst on their own', () => {
    expect(outcomeOf('FIN_WAIT2', 0)).toMatchObject({ checkTimeWait: true });
    expect(outcomeOf('CLOSE_WAIT', 0).outcome).toBe('reset-sent');
    expect(outcomeOf('LAST_ACK', undefined).outcome).toBe('unknown');
    expect(closedFirst(['ESTABLISHED', 'CLOSE_WAIT', 'LAST_ACK', 'CLOSE'], 0)).toBe('remote');
    expect(closedFirst(['ESTABLISHED', 'CLOSE'], undefined)).toBeUndefined();
  });
});

describe('EndTracker.prune(): connections whose end was lost', () => {
  it('forgets those the predicate says are gone, with their namespace, and keeps the rest', () => {
    const tracker = new EndTracker('bpf');
    run(tracker, [['CLOSE', 'SYN_SENT'], ['SYN_SENT', 'ESTABLISHED']], '00000000000000a1');
    run(tracker, [['CLOSE', 'SYN_SENT'], ['SYN_SENT', 'ESTABLISHED']], '00000000000000a2');
    run(tracker, [['LISTEN', 'SYN_RECV'], ['SYN_RECV', 'ESTABLISHED']], '00000000000000a3');
    expect(tracker.size).toBe(3);
    const asked: [string, string | undefined][] = [];
    const gone = tracker.prune((cookie, netns) => {
      asked.push([cookie, netns]);
      return cookie !== '00000000000000a2';
    });
    expect(gone).toBe(1);
    expect(tracker.size).toBe(2);
    expect(asked.sort()).toEqual([
      ['00000000000000a1', '0000000000000001'],
      ['00000000000000a2', '0000000000000001'],
      ['00000000000000a3', '0000000000000001'],
    ]);
    // A socket forgotten and then seen again goes on from the path it had.
    expect(run(tracker, [['ESTABLISHED', 'FIN_WAIT1']], '00000000000000a2')).toBeUndefined();
    expect(tracker.size).toBe(3);
    const end = run(tracker, [['FIN_WAIT1', 'FIN_WAIT2'], ['FIN_WAIT2', 'CLOSE']], '00000000000000a2');
    expect(end).toMatchObject({ end: { path: ['SYN_SENT', 'ESTABLISHED', 'FIN_WAIT1', 'FIN_WAIT2', 'CLOSE'], startSeen: true } });
    expect(tracker.size).toBe(2);
  });

  it('keeps the last 4096 forgotten aside, oldest dropped first; clear() forgets them too', () => {
    const tracker = new EndTracker('bpf');
    const cookie = (i: number): string => i.toString(16).padStart(16, '0');
    for (let i = 1; i <= 4097; i++) run(tracker, [['CLOSE', 'SYN_SENT'], ['SYN_SENT', 'ESTABLISHED']], cookie(i));
    expect(tracker.prune(() => false)).toBe(4097);
    expect(tracker.size).toBe(0);
    // A reset: ESTABLISHED -> CLOSE with no error.
    const reset: [TcpState, TcpState][] = [['ESTABLISHED', 'CLOSE']];
    // The oldest forgotten is gone for good: its end is one seen alone.
    expect(run(tracker, reset, cookie(1))).toMatchObject({ path: ['ESTABLISHED', 'CLOSE'], startSeen: false });
    // The next one goes on from its path.
    expect(run(tracker, reset, cookie(2))).toMatchObject({ path: ['SYN_SENT', 'ESTABLISHED', 'CLOSE'], startSeen: true, outcome: 'reset-sent' });
    expect(tracker.size).toBe(0);
    tracker.clear();
    expect(run(tracker, reset, cookie(3))).toMatchObject({ path: ['ESTABLISHED', 'CLOSE'], startSeen: false });
  });
});
