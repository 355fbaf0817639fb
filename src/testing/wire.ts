/**
 * The lab's wire: a userspace relay between two TUN devices, one in each network namespace.
 * Every packet one kernel sends is read here and written into the other kernel, unless a rule
 * says to drop it or hold it; every TCP segment seen is logged with a verdict.
 *
 * Reading never blocks a thread: the TUN fds are non-blocking, a uv_poll_t (the addon's `FdPoll`)
 * calls back when one is readable, and the callback reads packets until none is left or it has
 * read `BATCH` of them; the poll is level-triggered, so the rest is read on the next turn of the
 * event loop, after the timers (delays) and I/O that were waiting: a burst does not stall the loop.
 */
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { native, type NativeFdPoll } from '../binding';
import { codedError, invalidArgType, outOfRange } from '../errors';
import { buildSegment, parseSegment, type Segment, type TcpFlag } from './segment';

/** One end of the wire: host `a` or host `b`. */
export type Side = 'a' | 'b';

/**
 * What the wire did with a segment: passed it, dropped it, held it, released it (held before),
 * delayed it (forwarded `delayMs` later, see `Wire.delay()`), or wrote a segment this process made
 * (`Wire.inject()`) or one it had logged before, again (`Wire.replay()`).
 */
export type Verdict = 'pass' | 'drop' | 'hold' | 'release' | 'delay' | 'inject' | 'replay';

/** A segment on the wire, with sequence numbers relative to each side's ISN. */
export interface WireSegment extends Segment {
  /** The host that sent it. */
  from: Side;
  /** `seq` minus the sender's initial sequence number (mod 2^32); `undefined` before its SYN was seen. */
  relSeq: number | undefined;
  /** `ack` minus the receiver's ISN (mod 2^32); `undefined` without ACK or before that ISN was seen. */
  relAck: number | undefined;
}

/** One line of the wire's log. */
export interface LogEntry extends WireSegment {
  /** When, in milliseconds since the wire started (monotonic clock, fractional). */
  at: number;
  /** What the wire did with the segment. */
  verdict: Verdict;
  /**
   * With verdict `'delay'`: the delay the rule asked for, ms. The segment is forwarded at
   * `at + delayMs` at the earliest, later if an earlier segment of its direction is still queued.
   */
  delayMs?: number;
}

/** Options of `wire.release()`. */
export interface ReleaseOptions {
  /** Release at most this many of the segments the predicate accepts, the earliest first (default: all). */
  count?: number;
}

/** What `wire.inject()` writes: a segment of a connection the wire has seen, by relative numbers. */
export interface InjectOptions {
  /** Control bits to set. */
  flags: TcpFlag[];
  /** Sequence number relative to the sender's ISN (mod 2^32). */
  relSeq: number;
  /** Acknowledgment number relative to the receiver's ISN; required with `'ACK'` in `flags`, ignored without. */
  relAck?: number;
  /** Payload bytes (default none). */
  payload?: Uint8Array;
  /** Window field as sent, before scaling (default: that of the sender's last segment on the wire, else 0). */
  window?: number;
  /**
   * A segment of the connection (either direction: a log entry, a held segment); default: the
   * connection of the last segment the wire saw.
   */
  of?: WireSegment;
}

/** Decides about a segment; it sees `from` and the relative numbers too. */
export type SegmentPredicate = (segment: WireSegment) => boolean;

interface Rule {
  verdict: 'drop' | 'hold' | 'delay';
  predicate: SegmentPredicate;
  /** For `'delay'`: ms. */
  ms?: number;
}

interface Held {
  segment: WireSegment;
  packet: Uint8Array;
}

/** A packet waiting in a direction's delay queue; `due` is on the `performance.now()` clock. */
interface Delayed {
  due: number;
  packet: Uint8Array;
}

/**
 * One direction's delay queue: FIFO, forwarded by one timer armed for the head. `due` never
 * decreases along the queue, so nothing overtakes anything within a direction.
 */
interface DelayQueue {
  items: Delayed[];
  /** Index of the head in `items` (the array is compacted now and then, not shifted per packet). */
  head: number;
  /** `due` of the last packet queued. */
  last: number;
  timer: NodeJS.Timeout | undefined;
}

/** Largest packet read: a TUN device's MTU is 1500 by default; 64 KiB covers any MTU. */
const READ_BUFFER_SIZE = 65536;
/** Packets read per readable callback at most, before the event loop gets a turn. */
const BATCH = 64;
const everything: SegmentPredicate = () => true;
/** Longest delay `delay()` takes, ms (Node's largest timer). */
const MAX_DELAY_MS = 2 ** 31 - 1;

function flowKey(s: Segment): string {
  return `${s.src.address}|${s.src.port}|${s.dst.address}|${s.dst.port}`;
}

function reverseKey(s: Segment): string {
  return `${s.dst.address}|${s.dst.port}|${s.src.address}|${s.src.port}`;
}

function checkDelay(ms: unknown): number {
  if (typeof ms !== 'number') throw invalidArgType('ms', 'of type number', ms);
  if (!Number.isFinite(ms) || ms < 0 || ms > MAX_DELAY_MS) throw outOfRange('ms', `>= 0 and <= ${MAX_DELAY_MS}`, ms);
  return ms;
}

function checkPredicate(predicate: unknown): SegmentPredicate {
  if (predicate === undefined) return everything;
  if (typeof predicate !== 'function') throw invalidArgType('predicate', 'of type function', predicate);
  return predicate as SegmentPredicate;
}

/**
 * The wire between hosts `a` and `b`. Rules accumulate: `hold(p)`, `drop(p)` and `delay(ms, p)`
 * each add one, the first rule whose predicate accepts a segment decides, a segment no rule
 * accepts passes, and `pass()` removes every rule. Packets that are not TCP always pass at once
 * and are not logged.
 *
 * Events: `'segment'` (a `LogEntry`, as it is logged); `'error'` (a read or write on a TUN fd
 * failed; without a listener it is thrown, as for any `EventEmitter`).
 */
export class Wire extends EventEmitter {
  readonly #fds: Record<Side, number>;
  readonly #polls: NativeFdPoll[] = [];
  readonly #buffer = new Uint8Array(READ_BUFFER_SIZE);
  readonly #start = performance.now();
  readonly #isn = new Map<string, number>();
  readonly #log: LogEntry[] = [];
  /** The packet of each log entry, for `replay()`; dropped with the entry by `clearLog()`. */
  #packets = new WeakMap<LogEntry, Uint8Array>();
  /** The last TCP segment read, for `inject()` without `of`. */
  #last: WireSegment | undefined;
  /** The window of each flow's last segment, by flowKey. */
  readonly #windows = new Map<string, number>();
  #rules: Rule[] = [];
  #held: Held[] = [];
  readonly #delayed: Record<Side, DelayQueue> = {
    a: { items: [], head: 0, last: 0, timer: undefined },
    b: { items: [], head: 0, last: 0, timer: undefined },
  };
  #closed = false;

  /** @internal Starts relaying between two open, non-blocking TUN fds (the lab owns them). */
  constructor(fds: Record<Side, number>) {
    super();
    if (fds === null || typeof fds !== 'object') throw invalidArgType('fds', 'of type object', fds);
    for (const side of ['a', 'b'] as const) {
      const fd: unknown = fds[side];
      if (typeof fd !== 'number') throw invalidArgType(`fds.${side}`, 'of type number', fd);
      if (!Number.isInteger(fd) || fd < 0 || fd > 2 ** 31 - 1) throw outOfRange(`fds.${side}`, `an integer >= 0 and <= ${2 ** 31 - 1}`, fd);
    }
    this.#fds = { a: fds.a, b: fds.b };
    try {
      for (const side of ['a', 'b'] as const) {
        this.#polls.push(new (native().FdPoll)(fds[side], (status) => this.#drain(side, status)));
      }
    } catch (error) {
      for (const poll of this.#polls) poll.close(); // the first, when the second cannot be made
      throw error;
    }
  }

  /** Every TCP segment seen so far, in order, with its verdict; a release adds a second entry. */
  get log(): readonly LogEntry[] {
    return this.#log;
  }

  /** The segments held now, in arrival order. */
  get held(): readonly WireSegment[] {
    return this.#held.map((h) => h.segment);
  }

  /** Holds every segment `predicate` accepts (default: every segment) until `release()`. */
  hold(predicate?: SegmentPredicate): this {
    this.#rules.push({ verdict: 'hold', predicate: checkPredicate(predicate) });
    return this;
  }

  /** Drops every segment `predicate` accepts (default: every segment): a loss on the wire. */
  drop(predicate?: SegmentPredicate): this {
    this.#rules.push({ verdict: 'drop', predicate: checkPredicate(predicate) });
    return this;
  }

  /**
   * Delays every segment `predicate` accepts (default: every segment) by `ms` milliseconds: it is
   * forwarded `ms` after it reached the wire, without blocking the relay. Order is kept within each
   * direction: a segment of the same direction that arrives later — delayed, or passing because no
   * rule delays it — is never forwarded before it (a passing segment queues behind the delayed
   * ones). `delay(10)` on both directions (the default) adds 20 ms of round-trip time.
   * Logged with verdict `'delay'` and `delayMs` when the segment reaches the wire.
   */
  delay(ms: number, predicate?: SegmentPredicate): this {
    this.#rules.push({ verdict: 'delay', ms: checkDelay(ms), predicate: checkPredicate(predicate) });
    return this;
  }

  /** Segments waiting in the delay queues now, both directions. */
  get delayed(): number {
    return this.#delayed.a.items.length - this.#delayed.a.head + this.#delayed.b.items.length - this.#delayed.b.head;
  }

  /**
   * Removes every rule, delays included: from now on every segment passes. Held segments stay
   * held; segments already delayed are still forwarded at their time, and a segment that passes
   * while its direction still has some queued goes after them.
   */
  pass(): this {
    this.#rules = [];
    return this;
  }

  /**
   * Delivers the held segments `predicate` accepts (default: all), in arrival order, each to the
   * host it was sent to; returns how many. With `count`, only the first `count` of them (the
   * predicate is not asked about the rest). Rules are not applied again to released segments, and
   * they are written at once, ahead of any segment still delayed (a release is a chosen reordering).
   */
  release(predicate?: SegmentPredicate, options: ReleaseOptions = {}): number {
    const accept = checkPredicate(predicate);
    if (options === null || typeof options !== 'object') throw invalidArgType('options', 'of type object', options);
    const { count = Infinity } = options;
    if (typeof count !== 'number') throw invalidArgType('options.count', 'of type number', count);
    if (count !== Infinity && (!Number.isInteger(count) || count < 1)) throw outOfRange('options.count', 'an integer >= 1', count);
    const released: Held[] = [];
    for (const h of this.#held) {
      if (released.length >= count) break;
      if (accept(h.segment)) released.push(h);
    }
    this.#held = this.#held.filter((h) => !released.includes(h));
    let thrown: unknown;
    for (const { segment, packet } of released) {
      const listenerError = this.#record(segment, 'release', undefined, packet);
      thrown ??= listenerError;
      this.#write(segment.from === 'a' ? 'b' : 'a', packet, packet.length);
    }
    // Every released segment is written first: a 'segment' listener's error loses none of them.
    if (thrown !== undefined) throw thrown;
    return released.length;
  }

  /** Forgets the log (the ISNs it learned are kept, so relative numbers stay right). */
  clearLog(): void {
    this.#log.length = 0;
    this.#packets = new WeakMap();
  }

  /**
   * Writes a TCP segment this process makes into the host it is addressed to, as if `from` had
   * sent it: the 4-tuple of `options.of` (default: the connection of the last segment seen),
   * sequence numbers from the relative ones and the ISNs the wire learned, checksums filled, in
   * an IPv4 or IPv6 packet as the connection's. No rule applies to it; it is logged with verdict
   * `'inject'` and returned. Throws `ERR_FINWAIT_WIRE_NO_CONNECTION` when the wire has seen no
   * segment (or not the SYN that gives an ISN it needs).
   * @see RFC 9293 §3.1
   */
  inject(from: Side, options: InjectOptions): LogEntry {
    if (from !== 'a' && from !== 'b') throw invalidArgType('from', "'a' or 'b'", from);
    if (options === null || typeof options !== 'object') throw invalidArgType('options', 'of type object', options);
    const { flags, relSeq, relAck, payload, window, of = this.#last } = options;
    if (!Array.isArray(flags)) throw invalidArgType('options.flags', 'an array of TCP flag names', flags);
    const isAck = flags.includes('ACK');
    const checkNumber = (value: unknown, name: string, max: number): number => {
      if (typeof value !== 'number') throw invalidArgType(name, 'of type number', value);
      if (!Number.isInteger(value) || value < 0 || value > max) throw outOfRange(name, `an integer >= 0 and <= ${max}`, value);
      return value;
    };
    checkNumber(relSeq, 'options.relSeq', 2 ** 32 - 1);
    if (isAck) checkNumber(relAck, 'options.relAck', 2 ** 32 - 1);
    if (window !== undefined) checkNumber(window, 'options.window', 65535);
    if (of === undefined) throw codedError('ERR_FINWAIT_WIRE_NO_CONNECTION', 'wire.inject(): the wire has seen no segment yet: no connection to inject into');
    if (of === null || typeof of !== 'object' || typeof of.src !== 'object' || typeof of.dst !== 'object' || (of.from !== 'a' && of.from !== 'b')) {
      throw invalidArgType('options.of', 'a segment of the wire (a log entry, or a held segment)', of);
    }
    // `of` says which end of the connection sent it: the new segment goes the same way or back.
    const forward = of.from === from;
    const src = forward ? of.src : of.dst;
    const dst = forward ? of.dst : of.src;
    const flow = { src, dst } as Segment;
    const own = this.#isn.get(flowKey(flow));
    const peer = this.#isn.get(reverseKey(flow));
    if (own === undefined || (isAck && peer === undefined)) {
      throw codedError('ERR_FINWAIT_WIRE_NO_CONNECTION', `wire.inject(): the wire has not seen the SYN of ${own === undefined ? from : 'the other side'} for ${src.address}:${src.port} -> ${dst.address}:${dst.port}, so relative numbers mean nothing`);
    }
    const packet = buildSegment({
      src,
      dst,
      seq: (own + relSeq) >>> 0,
      ack: isAck ? (peer! + relAck!) >>> 0 : 0,
      flags,
      window: window ?? this.#windows.get(flowKey(flow)) ?? 0,
      payload,
    });
    return this.#writeOwn(from, packet, 'inject');
  }

  /**
   * Writes the packet of a log entry again, byte for byte, into the host it was sent to (a
   * duplicate, as a retransmission or a delayed copy would arrive); no rule applies. Logged with
   * verdict `'replay'` and returned. The wire keeps each entry's packet until `clearLog()`; an entry
   * not from this wire's log (or forgotten) throws `ERR_INVALID_ARG_VALUE`.
   */
  replay(entry: LogEntry): LogEntry {
    const packet = entry !== null && typeof entry === 'object' ? this.#packets.get(entry) : undefined;
    if (packet === undefined) throw codedError('ERR_INVALID_ARG_VALUE', "The argument 'entry' must be an entry of this wire's log (not cleared)");
    return this.#writeOwn(entry.from, packet, 'replay');
  }

  #writeOwn(from: Side, packet: Uint8Array, verdict: 'inject' | 'replay'): LogEntry {
    const segment = this.#relative(parseSegment(packet)!, from, false);
    const entry = this.#entry(segment, verdict, packet);
    this.#write(from === 'a' ? 'b' : 'a', packet, packet.length);
    this.emit('segment', entry); // after the write: a listener's error goes to the caller, the segment is out
    return entry;
  }

  /** Stops relaying; held and delayed segments are discarded. The lab closes the TUN fds afterwards. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const poll of this.#polls) poll.close();
    this.#held = [];
    for (const queue of Object.values(this.#delayed)) {
      clearTimeout(queue.timer);
      queue.items = [];
      queue.head = 0;
    }
  }

  #drain(from: Side, status: number): void {
    if (this.#closed) return;
    if (status < 0) return this.#fail(new Error(`poll on the TUN device of ${from} failed (${status})`));
    const to: Side = from === 'a' ? 'b' : 'a';
    for (let n = 0; n < BATCH; n++) {
      let length: number;
      try {
        length = native().tunRead(this.#fds[from], this.#buffer);
      } catch (error) {
        return this.#fail(error as Error);
      }
      if (length === 0) return;
      const parsed = parseSegment(this.#buffer.subarray(0, length));
      if (!parsed) {
        this.#write(to, this.#buffer, length);
        continue;
      }
      const segment = this.#relative(parsed, from);
      const packet = this.#buffer.slice(0, length);
      // What a predicate or a 'segment' listener throws is reported ('error') once the segment
      // has gone where it was going: the packet is out of the TUN device, and is never lost for
      // it. A predicate that throws does not match (the segment passes, if no other rule takes it).
      let thrown: unknown;
      const rule = this.#rules.find((r) => {
        try {
          return r.predicate(segment);
        } catch (error) {
          thrown ??= error;
          return false;
        }
      });
      const verdict = rule?.verdict ?? 'pass';
      const listenerError = this.#record(segment, verdict, rule?.ms, packet);
      thrown ??= listenerError;
      if (verdict === 'pass') {
        // Behind the segments of this direction still delayed, if any: no overtaking.
        if (this.#queued(from)) this.#enqueue(from, 0, packet);
        else this.#write(to, packet, length);
      } else if (verdict === 'hold') this.#held.push({ segment, packet });
      else if (verdict === 'delay') this.#enqueue(from, rule!.ms!, packet);
      if (thrown !== undefined) return this.#fail(thrown instanceof Error ? thrown : new Error(String(thrown)));
    }
  }

  #queued(from: Side): boolean {
    const queue = this.#delayed[from];
    return queue.head < queue.items.length;
  }

  #enqueue(from: Side, ms: number, packet: Uint8Array): void {
    const queue = this.#delayed[from];
    const due = Math.max(performance.now() + ms, queue.last);
    queue.last = due;
    queue.items.push({ due, packet });
    if (queue.timer === undefined) this.#arm(from);
  }

  /** One timer per direction, for the head of its queue. */
  #arm(from: Side): void {
    const queue = this.#delayed[from];
    const wait = queue.items[queue.head].due - performance.now();
    // A timer may fire up to a millisecond before performance.now() says it should (libuv's clock
    // is cached per loop iteration); #flush re-arms for whatever is not due yet.
    queue.timer = setTimeout(() => this.#flush(from), Math.max(0, Math.ceil(wait)));
  }

  #flush(from: Side): void {
    const queue = this.#delayed[from];
    queue.timer = undefined;
    if (this.#closed) return;
    const to: Side = from === 'a' ? 'b' : 'a';
    const now = performance.now();
    while (queue.head < queue.items.length && queue.items[queue.head].due <= now) {
      const { packet } = queue.items[queue.head++];
      this.#write(to, packet, packet.length);
    }
    if (queue.head === queue.items.length) {
      queue.items = [];
      queue.head = 0;
    } else {
      if (queue.head > 1024 && queue.head * 2 > queue.items.length) {
        queue.items = queue.items.slice(queue.head);
        queue.head = 0;
      }
      this.#arm(from);
    }
  }

  #relative(segment: Segment, from: Side, seen = true): WireSegment {
    // A SYN (with or without ACK) starts a direction of a connection: its seq is that side's ISN.
    if (seen && segment.flags.includes('SYN')) this.#isn.set(flowKey(segment), segment.seq);
    const own = this.#isn.get(flowKey(segment));
    const peer = this.#isn.get(reverseKey(segment));
    const relative: WireSegment = {
      ...segment,
      from,
      relSeq: own === undefined ? undefined : (segment.seq - own) >>> 0,
      relAck: peer === undefined || !segment.flags.includes('ACK') ? undefined : (segment.ack - peer) >>> 0,
    };
    if (seen) {
      this.#last = relative;
      this.#windows.set(flowKey(segment), segment.window);
    }
    return relative;
  }

  /** Logs a segment and tells the 'segment' listeners; returns what one of them threw, for the caller to report after the segment is on its way. */
  #record(segment: WireSegment, verdict: Verdict, delayMs: number | undefined, packet: Uint8Array): unknown {
    const entry = this.#entry(segment, verdict, packet, delayMs);
    try {
      this.emit('segment', entry);
    } catch (error) {
      return error;
    }
    return undefined;
  }

  #entry(segment: WireSegment, verdict: Verdict, packet: Uint8Array, delayMs?: number): LogEntry {
    const entry: LogEntry = { ...segment, at: performance.now() - this.#start, verdict };
    if (verdict === 'delay') entry.delayMs = delayMs;
    this.#log.push(entry);
    this.#packets.set(entry, packet);
    return entry;
  }

  #write(to: Side, packet: Uint8Array, length: number): void {
    if (this.#closed) return;
    try {
      native().tunWrite(this.#fds[to], packet, length);
    } catch (error) {
      this.#fail(error as Error);
    }
  }

  #fail(error: Error): void {
    this.emit('error', error);
  }
}
