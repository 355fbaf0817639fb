/**
 * The lab's wire: a userspace relay between two TUN devices, one in each network namespace.
 * Every packet one kernel sends is read here and written into the other kernel, unless a rule
 * says to drop it or hold it; every TCP segment seen is logged with a verdict.
 *
 * Reading never blocks a thread: the TUN fds are non-blocking, a uv_poll_t (the addon's `FdPoll`)
 * calls back when one is readable, and the callback reads packets until none is left.
 */
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import { native, type NativeFdPoll } from '../binding';
import { invalidArgType } from '../errors';
import { parseSegment, type Segment } from './segment';

/** One end of the wire: host `a` or host `b`. */
export type Side = 'a' | 'b';

/** What the wire did with a segment: passed it, dropped it, held it, or released it (held before). */
export type Verdict = 'pass' | 'drop' | 'hold' | 'release';

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
  verdict: Verdict;
}

/** Decides about a segment; it sees `from` and the relative numbers too. */
export type SegmentPredicate = (segment: WireSegment) => boolean;

interface Rule {
  verdict: 'drop' | 'hold';
  predicate: SegmentPredicate;
}

interface Held {
  segment: WireSegment;
  packet: Uint8Array;
}

/** Largest packet read: a TUN device's MTU is 1500 by default; 64 KiB covers any MTU. */
const READ_BUFFER_SIZE = 65536;
const everything: SegmentPredicate = () => true;

function flowKey(s: Segment): string {
  return `${s.src.address}|${s.src.port}|${s.dst.address}|${s.dst.port}`;
}

function reverseKey(s: Segment): string {
  return `${s.dst.address}|${s.dst.port}|${s.src.address}|${s.src.port}`;
}

function checkPredicate(predicate: unknown): SegmentPredicate {
  if (predicate === undefined) return everything;
  if (typeof predicate !== 'function') throw invalidArgType('predicate', 'of type function', predicate);
  return predicate as SegmentPredicate;
}

/**
 * The wire between hosts `a` and `b`. Rules accumulate: `hold(p)` and `drop(p)` each add one,
 * the first rule whose predicate accepts a segment decides, a segment no rule accepts passes,
 * and `pass()` removes every rule. Packets that are not TCP always pass and are not logged.
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
  #rules: Rule[] = [];
  #held: Held[] = [];
  #closed = false;

  /** @internal Starts relaying between two open, non-blocking TUN fds (the lab owns them). */
  constructor(fds: Record<Side, number>) {
    super();
    this.#fds = { ...fds };
    for (const side of ['a', 'b'] as const) {
      this.#polls.push(new (native().FdPoll)(fds[side], (status) => this.#drain(side, status)));
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

  /** Removes every rule: from now on every segment passes. Held segments stay held. */
  pass(): this {
    this.#rules = [];
    return this;
  }

  /**
   * Delivers the held segments `predicate` accepts (default: all), in arrival order, each to the
   * host it was sent to; returns how many. Rules are not applied again to released segments.
   */
  release(predicate?: SegmentPredicate): number {
    const accept = checkPredicate(predicate);
    const released = this.#held.filter((h) => accept(h.segment));
    this.#held = this.#held.filter((h) => !released.includes(h));
    for (const { segment, packet } of released) {
      this.#record(segment, 'release');
      this.#write(segment.from === 'a' ? 'b' : 'a', packet, packet.length);
    }
    return released.length;
  }

  /** Forgets the log (the ISNs it learned are kept, so relative numbers stay right). */
  clearLog(): void {
    this.#log.length = 0;
  }

  /** Stops relaying; held segments are discarded. The lab closes the TUN fds afterwards. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const poll of this.#polls) poll.close();
    this.#held = [];
  }

  #drain(from: Side, status: number): void {
    if (this.#closed) return;
    if (status < 0) return this.#fail(new Error(`poll on the TUN device of ${from} failed (${status})`));
    const to: Side = from === 'a' ? 'b' : 'a';
    for (;;) {
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
      const rule = this.#rules.find((r) => r.predicate(segment));
      const verdict = rule?.verdict ?? 'pass';
      this.#record(segment, verdict);
      if (verdict === 'pass') this.#write(to, this.#buffer, length);
      else if (verdict === 'hold') this.#held.push({ segment, packet: this.#buffer.slice(0, length) });
    }
  }

  #relative(segment: Segment, from: Side): WireSegment {
    // A SYN (with or without ACK) starts a direction of a connection: its seq is that side's ISN.
    if (segment.flags.includes('SYN')) this.#isn.set(flowKey(segment), segment.seq);
    const own = this.#isn.get(flowKey(segment));
    const peer = this.#isn.get(reverseKey(segment));
    return {
      ...segment,
      from,
      relSeq: own === undefined ? undefined : (segment.seq - own) >>> 0,
      relAck: peer === undefined || !segment.flags.includes('ACK') ? undefined : (segment.ack - peer) >>> 0,
    };
  }

  #record(segment: WireSegment, verdict: Verdict): void {
    const entry: LogEntry = { ...segment, at: performance.now() - this.#start, verdict };
    this.#log.push(entry);
    this.emit('segment', entry);
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
