/**
 * Every TCP state change of the host, pushed by the kernel: a BPF program on the tracepoint
 * `sock:inet_sock_set_state` (addon/bpf_linux.cc) writes one record per change into a ring
 * buffer; this file polls the ring's fd on the event loop and decodes the records.
 */
import os from 'node:os';
import { native, nativeUnavailable, type NativeFdPoll, type NativeStateChanges } from './binding';
import { AF_INET6, cookieKey, cookieKeyOf, formatAddress } from './diag';
import { codedError, errnoError, invalidArgType, outOfRange, type CodedError } from './errors';
import { stateName, type TcpState } from './states';

/** One change of state of one TCP socket, as the kernel made it. */
export interface StateChange {
  /**
   * When, in ns of the host's `CLOCK_MONOTONIC` (`bpf_ktime_get_ns()`): the clock of
   * `process.hrtime.bigint()`, except in a time namespace, whose offset the kernel's time leaves out.
   */
  time: bigint;
  /** The socket's cookie: `getsockopt(SO_COOKIE)` of it, `SocketEntry.cookie` as a number. */
  cookie: bigint;
  /** The cookie of its network namespace (`SO_NETNS_COOKIE`). */
  netnsCookie: bigint;
  /** IPv4 or IPv6 (a dual-stack socket is 6, its IPv4 peers `::ffff:a.b.c.d`). */
  family: 4 | 6;
  /**
   * The local address and port. A client's first change (CLOSE → SYN_SENT) comes before its
   * port is chosen: port 0, and address 0.0.0.0 (or `::`) unless it was bound.
   */
  localAddress: string;
  localPort: number;
  remoteAddress: string;
  remotePort: number;
  /** The state it left. */
  from: TcpState;
  /** The state it entered. The hand-over to TIME_WAIT shows as FIN_WAIT2 (or CLOSING) → CLOSE. */
  to: TcpState;
  /**
   * `sk_err` at the change: 104 (ECONNRESET) after an RST received, 111 (ECONNREFUSED) for a
   * refused connect, 103 (ECONNABORTED) for a socket killed with `ss -K`, 110 (ETIMEDOUT) after
   * a timeout; 0 otherwise.
   */
  error: number;
  /**
   * The process (thread group id) running when the change was made, and its `comm`. Meaningful
   * when a system call made it (connect, close, shutdown); when a packet or a timer did (softirq:
   * an orphan's FIN_WAIT1 → FIN_WAIT2 → CLOSE, most changes of a peer on loopback), it is
   * whatever process was interrupted, often pid 0 (`swapper/N`).
   */
  pid: number;
  comm: string;
  /** `total_retrans`: segments retransmitted over the connection's life (`tcpi_total_retrans`). */
  retransmits: number;
  /** Bytes sent and not yet acknowledged (`snd_nxt − snd_una`, SYN and FIN count one each). */
  unackedBytes: number;
  /** `bytes_received`: bytes of sequence space received (`tcpi_bytes_received`). */
  bytesReceived: bigint;
  /** `bytes_acked`: bytes of sequence space acknowledged by the peer (`tcpi_bytes_acked`). */
  bytesAcked: bigint;
  /** `data_segs_in`: segments received that carried data, counted before they are processed (`tcpi_data_segs_in`). */
  dataSegsIn: number;
}

/** Which changes `openStateChanges()` reports. */
export interface StateChangeOptions {
  /**
   * Only changes into CLOSE: the end of every full socket (reset, refused, timed out, LAST_ACK's
   * last ACK, the hand-over to a TIME_WAIT), with the state it left and `error`. The program drops
   * the rest in the kernel, so a connection costs one record per end instead of about five.
   */
  closeOnly?: boolean;
  /**
   * Only changes of the sockets whose cookie was added with `stream.addCookie()`: the program
   * looks each change's cookie up in a BPF hash map and drops the rest in the kernel, so the other
   * sockets of the host cost no record. A socket's change into CLOSE (its end, or the hand-over to
   * a TIME_WAIT) is its last: the program takes its cookie out of the map then.
   */
  byCookie?: boolean;
  /** With `byCookie`: how many cookies the filter holds at once (default 65,536; 1 to 2^24). */
  maxCookies?: number;
  /**
   * Only changes of the sockets on the local ports given to `stream.addPort()` (each in one
   * network namespace): a server's listening port, whose connections then need no call each
   * (every socket on that port is reported, whatever process holds it). With `byCookie` too, a
   * change is reported if either filter keeps it. The filter holds up to 1,024 ports.
   */
  byPort?: boolean;
  /**
   * Milliseconds a change may wait in the ring before it is read (0 to 60,000; default 0: each
   * change wakes the process). The kernel wakes a reader with an interrupt (IRQ work) per record;
   * with a delay, changes are read on a timer of that period, or as soon as an eighth of the ring
   * is full, so a busy host costs no interrupt per change. For consumers that count rather than
   * wait on a change.
   */
  maxDelay?: number;
}

/** An open source of state changes; the BPF program runs until `close()`. */
export interface StateChangeStream {
  /** Detaches the program and stops the calls (idempotent). */
  close(): void;
  /** Changes dropped because the ring buffer was full (the callback fell behind a burst). */
  readonly lost: number;
  /** Lets the process exit while the stream is open (like `server.unref()`); returns the stream. */
  unref(): this;
  /** Keeps the process alive while the stream is open (the default); returns the stream. */
  ref(): this;
  /**
   * With `byCookie`: changes of the socket with this cookie (`SocketEntry.cookie` as a number,
   * `StateChange.cookie`) are reported from now on, until its change into CLOSE or
   * `removeCookie()`. Throws `ERR_FINWAIT_NO_COOKIE_FILTER` on a stream opened without
   * `byCookie`, `ERR_FINWAIT_STREAM_CLOSED` once closed, `E2BIG` when `maxCookies` are in.
   */
  addCookie(cookie: bigint): void;
  /** With `byCookie`: stops reporting the socket's changes; false if its cookie was not in the filter. */
  removeCookie(cookie: bigint): boolean;
  /**
   * With `byPort`: changes of the sockets whose local port is `port` in the network namespace
   * whose cookie is `netnsCookie` (`SO_NETNS_COOKIE`) are reported from now on, until
   * `removePort()`. Throws `ERR_FINWAIT_NO_PORT_FILTER` on a stream opened without `byPort`,
   * `ERR_FINWAIT_STREAM_CLOSED` once closed, `E2BIG` when 1,024 ports are in.
   */
  addPort(netnsCookie: bigint, port: number): void;
  /** With `byPort`: stops reporting that port's changes; false if it was not in the filter. */
  removePort(netnsCookie: bigint, port: number): boolean;
}

/** Ring buffer size: ~7,280 records (136 bytes and an 8-byte header each) before the kernel drops any. */
const RING_BYTES = 1 << 20;
/** The record (layout in addon/bpf_linux.h) and how many one native call copies. */
export const RECORD = 136;
/**
 * @internal Where each field of a record is, in bytes (addon/bpf_linux.h): host byte order, but
 * the ports and IPv4 addresses in network order; `PID_TGID` a u64 whose high half is the pid.
 */
export const AT = Object.freeze({
  TIME: 0,
  COOKIE: 8,
  NETNS_COOKIE: 16,
  PID_TGID: 24,
  FROM: 32,
  TO: 33,
  FAMILY: 34,
  ERROR: 36,
  LOCAL_PORT: 40,
  REMOTE_PORT: 42,
  TOTAL_RETRANS: 44,
  SND_UNA: 48,
  SND_NXT: 52,
  BYTES_RECEIVED: 56,
  BYTES_ACKED: 64,
  LOCAL_V6: 72,
  REMOTE_V6: 88,
  COMM: 104,
  LOCAL_V4: 120,
  REMOTE_V4: 124,
  DATA_SEGS_IN: 128,
  /** The low half of `sk_flags` (bit 1, SOCK_DONE: the peer's FIN was received). */
  SK_FLAGS: 132,
});
const BATCH = 256;
const LE = os.endianness() === 'LE';

/**
 * @internal The key `cookieKey()` gives a cookie (a number below 2^53, else its 16 hex digits) of
 * a record's socket cookie, a u64 in host order, read without a bigint while it is under 2^53.
 */
export function recordCookieKey(view: DataView, at: number): number | string {
  // On a little-endian host the u64's bytes are those of sock_diag's two u32, low first.
  return LE ? cookieKey(view, at + AT.COOKIE) : cookieKeyOf(view.getBigUint64(at + AT.COOKIE, false));
}

/** The error `openStateChanges()` throws for what the native part said, with what it means. */
function explain(error: CodedError & { command?: string }): CodedError {
  const { code } = error;
  const privilege = code === 'EPERM' || (code === 'EACCES' && error.command !== 'BPF_PROG_LOAD');
  if (privilege) {
    const message = `TCP state changes need CAP_BPF and CAP_PERFMON, or root (CAP_SYS_ADMIN) outside a user namespace: ${error.message}`;
    return Object.assign(codedError('EPERM', message), { cause: error, errno: (error as { errno?: number }).errno, syscall: 'bpf' });
  }
  if (code === 'ENOTSUP') {
    return Object.assign(codedError('ENOTSUP', `TCP state changes need the kernel's BTF, with the fields finwait reads: ${error.message}`), { cause: error });
  }
  return error;
}

/** The cookie filter's default size, and the largest taken. */
const MAX_COOKIES = 65_536;
const MAX_COOKIES_LIMIT = 2 ** 24;

/** The port filter's size. */
const MAX_PORTS = 1024;
/** With `maxDelay`: the bytes waiting in the ring that wake the reader before its timer (an eighth of it, ~910 records). */
const WAKE_BYTES = RING_BYTES / 8;
const MAX_DELAY_LIMIT = 60_000;

function open(closeOnly = false, maxCookies = 0, maxDelay = 0, byPort = false): NativeStateChanges {
  const addon = native();
  if (!addon.BpfStateChanges) {
    throw codedError(
      'ENOTSUP',
      process.platform === 'linux' ? 'this build of the addon has no BPF part (npm rebuild finwait)' : `TCP state changes from BPF need Linux, not ${process.platform}`,
    );
  }
  try {
    return new addon.BpfStateChanges(RING_BYTES, closeOnly, maxCookies, maxDelay > 0 ? WAKE_BYTES : 0, byPort ? MAX_PORTS : 0);
  } catch (error) {
    throw explain(error as CodedError);
  }
}

let why: string | null | undefined;

/**
 * Why `openStateChanges()` cannot run here (not Linux, no privilege, no BTF, a program the kernel
 * refuses), or `undefined` when it can. Found once by loading the program, then remembered.
 */
export function stateChangesUnavailable(): string | undefined {
  if (why === undefined) {
    try {
      const unavailable = nativeUnavailable();
      if (unavailable) throw unavailable;
      open().close();
      why = null;
    } catch (error) {
      why = (error as Error).message;
    }
  }
  return why ?? undefined;
}

/** The last `comm` decoded, and its 16 bytes: most records of a batch name the same process. */
const lastComm = new Uint8Array(16);
let lastCommText = '';

/** @internal The NUL-terminated `comm` (16 bytes) at `at`, as text. */
export function commAt(buffer: Uint8Array, at: number): string {
  let same = true;
  for (let i = 0; i < 16; i++) {
    if (buffer[at + i] !== lastComm[i]) {
      same = false;
      break;
    }
  }
  if (same) return lastCommText;
  let end = at;
  while (end < at + 16 && buffer[end] !== 0) end++;
  lastComm.set(buffer.subarray(at, at + 16));
  lastCommText = Buffer.from(buffer.buffer, buffer.byteOffset + at, end - at).toString('utf8');
  return lastCommText;
}

/**
 * Decodes the `count` records in `buffer` into `out`, leaving out same-state records (a close()
 * after shutdown() stores FIN_WAIT1 again) and states this table does not know.
 */
function decode(buffer: Uint8Array, view: DataView, count: number, out: StateChange[]): void {
  for (let i = 0; i < count; i++) {
    const at = i * RECORD;
    const from = stateName(buffer[at + AT.FROM]);
    const to = stateName(buffer[at + AT.TO]);
    if (from === undefined || to === undefined || from === to) continue;
    const v6 = view.getUint16(at + AT.FAMILY, LE) === AF_INET6;
    out.push({
      time: view.getBigUint64(at + AT.TIME, LE),
      cookie: view.getBigUint64(at + AT.COOKIE, LE),
      netnsCookie: view.getBigUint64(at + AT.NETNS_COOKIE, LE),
      family: v6 ? 6 : 4,
      localAddress: v6 ? formatAddress(view, at + AT.LOCAL_V6, true) : formatAddress(view, at + AT.LOCAL_V4, false),
      localPort: view.getUint16(at + AT.LOCAL_PORT),
      remoteAddress: v6 ? formatAddress(view, at + AT.REMOTE_V6, true) : formatAddress(view, at + AT.REMOTE_V4, false),
      remotePort: view.getUint16(at + AT.REMOTE_PORT),
      from,
      to,
      error: view.getInt32(at + AT.ERROR, LE),
      pid: view.getUint32(at + AT.PID_TGID + (LE ? 4 : 0), LE),
      comm: commAt(buffer, at + AT.COMM),
      retransmits: view.getUint32(at + AT.TOTAL_RETRANS, LE),
      unackedBytes: (view.getUint32(at + AT.SND_NXT, LE) - view.getUint32(at + AT.SND_UNA, LE)) >>> 0,
      bytesReceived: view.getBigUint64(at + AT.BYTES_RECEIVED, LE),
      bytesAcked: view.getBigUint64(at + AT.BYTES_ACKED, LE),
      dataSegsIn: view.getUint32(at + AT.DATA_SEGS_IN, LE),
    });
  }
}

/** The records of one native read: `count` records of `RECORD` bytes in `bytes` (layout in addon/bpf_linux.h). */
export type RecordSink = (bytes: Uint8Array, view: DataView, count: number) => void;

/** @internal The stream with the cookie filter's calls on a cookie's 8 bytes in place (a `sockDiagId` record's, at 44). */
export interface StateRecordStream extends StateChangeStream {
  addCookieAt(bytes: Uint8Array, offset: number): void;
  removeCookieAt(bytes: Uint8Array, offset: number): boolean;
  /** Reads what waits in the ring now, as the poll would (the callbacks run before it returns). */
  drainNow(): void;
}

function portArgs(netnsCookie: unknown, port: unknown, key: DataView): void {
  const netns = cookieArg(netnsCookie, 'netnsCookie');
  if (typeof port !== 'number') throw invalidArgType('port', 'of type number', port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw outOfRange('port', 'an integer >= 1 and <= 65535', port);
  key.setBigUint64(0, netns, LE);
  // The port as the program reads it from the socket (inet_sport): network order.
  key.setUint16(8, port, false);
}

/** A socket's or a namespace's cookie: a bigint from 1n to 2n ** 64n - 1n. */
function cookieArg(cookie: unknown, name = 'cookie'): bigint {
  if (typeof cookie !== 'bigint') throw invalidArgType(name, 'of type bigint', cookie);
  if (cookie <= 0n || cookie >= 1n << 64n) throw outOfRange(name, '>= 1n and < 2n ** 64n', cookie);
  return cookie;
}

class Stream implements StateRecordStream {
  #source: NativeStateChanges | undefined;
  #poll: NativeFdPoll | undefined;
  #lost = 0;
  readonly #filtered: boolean;
  readonly #byPort: boolean;
  /** A port filter's key (bpf_linux.h): the namespace cookie, the port, zeros. */
  readonly #portKey = new Uint8Array(16);
  readonly #portView = new DataView(this.#portKey.buffer);
  readonly #buffer = new Uint8Array(RECORD * BATCH);
  readonly #view = new DataView(this.#buffer.buffer);
  readonly #cookie = new BigUint64Array(1);
  readonly #cookieBytes = new Uint8Array(this.#cookie.buffer);
  readonly #sink: RecordSink;
  /** Called after a drain when `lost` rose (the watch back-end's; none for `openStateChanges()`). */
  readonly #onLost: (() => void) | undefined;
  /** Called after each drain (`openStateChanges()`: its changes, decoded from every read, in one call). */
  readonly #drained: (() => void) | undefined;
  #lostSeen = 0;
  // The uv_poll_t never keeps the loop alive; this timer does, while the stream is ref'd.
  readonly #keepAlive = setInterval(() => {}, 2 ** 31 - 1);
  /** With `maxDelay`: reads what waits in the ring (the kernel wakes the poll only for a full eighth of it). */
  readonly #reader: NodeJS.Timeout | undefined;

  constructor(source: NativeStateChanges, sink: RecordSink, o: Opened, onLost?: () => void, drained?: () => void) {
    const { maxDelay } = o;
    this.#source = source;
    this.#sink = sink;
    this.#filtered = o.maxCookies > 0;
    this.#byPort = o.byPort;
    this.#onLost = onLost;
    this.#drained = drained;
    if (maxDelay > 0) this.#reader = setInterval(() => this.#drain(0), maxDelay).unref();
    if (onLost) this.#lostSeen = source.lost();
    try {
      this.#poll = new (native().FdPoll)(source.fd, (status) => this.#drain(status));
    } catch (error) {
      this.close();
      throw error;
    }
  }

  get lost(): number {
    return this.#source ? this.#source.lost() : this.#lost;
  }

  ref(): this {
    this.#keepAlive.ref();
    return this;
  }

  unref(): this {
    this.#keepAlive.unref();
    return this;
  }

  close(): void {
    clearInterval(this.#keepAlive);
    clearInterval(this.#reader);
    this.#poll?.close();
    this.#poll = undefined;
    if (this.#source) this.#lost = this.#source.lost();
    this.#source?.close();
    this.#source = undefined;
  }

  #filter(): NativeStateChanges {
    if (!this.#filtered) throw codedError('ERR_FINWAIT_NO_COOKIE_FILTER', 'This stream has no cookie filter: open it with { byCookie: true }');
    if (!this.#source) throw codedError('ERR_FINWAIT_STREAM_CLOSED', 'The stream of state changes is closed');
    return this.#source;
  }

  #portFilter(): NativeStateChanges {
    if (!this.#byPort) throw codedError('ERR_FINWAIT_NO_PORT_FILTER', 'This stream has no port filter: open it with { byPort: true }');
    if (!this.#source) throw codedError('ERR_FINWAIT_STREAM_CLOSED', 'The stream of state changes is closed');
    // An addon built before the port filter (a stale build/ in a checkout) loads the program without it.
    if (typeof this.#source.addPort !== 'function') throw codedError('ENOTSUP', 'this build of the addon has no port filter (npm rebuild finwait)');
    return this.#source;
  }

  addPort(netnsCookie: bigint, port: number): void {
    portArgs(netnsCookie, port, this.#portView);
    const source = this.#portFilter();
    try {
      source.addPort(this.#portKey, 0);
    } catch (error) {
      const e = error as CodedError;
      if (e.code === 'E2BIG') e.message = `The port filter is full (${MAX_PORTS} ports): ${e.message}`;
      throw e;
    }
  }

  removePort(netnsCookie: bigint, port: number): boolean {
    portArgs(netnsCookie, port, this.#portView);
    return this.#portFilter().removePort(this.#portKey, 0);
  }

  addCookie(cookie: bigint): void {
    this.#cookie[0] = cookieArg(cookie);
    this.addCookieAt(this.#cookieBytes, 0);
  }

  removeCookie(cookie: bigint): boolean {
    this.#cookie[0] = cookieArg(cookie);
    return this.removeCookieAt(this.#cookieBytes, 0);
  }

  addCookieAt(bytes: Uint8Array, offset: number): void {
    const source = this.#filter();
    try {
      source.addCookie(bytes, offset);
    } catch (error) {
      const e = error as CodedError;
      if (e.code === 'E2BIG') e.message = `The cookie filter is full (maxCookies): ${e.message}`;
      throw e;
    }
  }

  removeCookieAt(bytes: Uint8Array, offset: number): boolean {
    return this.#filter().removeCookie(bytes, offset);
  }

  drainNow(): void {
    this.#drain(0);
  }

  #drain(status: number): void {
    if (!this.#source) return;
    if (status < 0) {
      // The poll itself failed (never seen): nothing more will come, so say so, uncaught.
      this.close();
      throw errnoError(status, 'uv_poll');
    }
    // The sink can close the stream: read no further then.
    for (let source = this.#source; source !== undefined; source = this.#source) {
      const count = source.read(this.#buffer);
      if (count > 0) this.#sink(this.#buffer, this.#view, count);
      if (count < BATCH) break;
    }
    this.#drained?.();
    // A loss is seen after the drain that follows it (the ring was full, so there was one), also
    // when every record read was filtered out or none of the sink's.
    const source = this.#source;
    if (this.#onLost && source) {
      const lost = source.lost();
      if (lost > this.#lostSeen) {
        this.#lostSeen = lost;
        this.#onLost();
      }
    }
  }
}

interface Opened {
  closeOnly: boolean;
  maxCookies: number;
  maxDelay: number;
  byPort: boolean;
}

function options(value: unknown): Opened {
  if (typeof value !== 'object' || value === null) throw invalidArgType('options', 'an object', value);
  const { closeOnly = false, byCookie = false, maxCookies, maxDelay = 0, byPort = false } = value as StateChangeOptions;
  if (typeof closeOnly !== 'boolean') throw invalidArgType('options.closeOnly', 'a boolean', closeOnly);
  if (typeof byCookie !== 'boolean') throw invalidArgType('options.byCookie', 'a boolean', byCookie);
  if (typeof byPort !== 'boolean') throw invalidArgType('options.byPort', 'a boolean', byPort);
  if (maxCookies !== undefined) {
    if (!byCookie) throw codedError('ERR_INVALID_ARG_VALUE', 'options.maxCookies is the size of the cookie filter: it needs options.byCookie');
    if (typeof maxCookies !== 'number') throw invalidArgType('options.maxCookies', 'a number', maxCookies);
    if (!Number.isInteger(maxCookies) || maxCookies < 1 || maxCookies > MAX_COOKIES_LIMIT) {
      throw outOfRange('options.maxCookies', `an integer >= 1 and <= ${MAX_COOKIES_LIMIT}`, maxCookies);
    }
  }
  if (typeof maxDelay !== 'number') throw invalidArgType('options.maxDelay', 'a number of milliseconds', maxDelay);
  if (!Number.isInteger(maxDelay) || maxDelay < 0 || maxDelay > MAX_DELAY_LIMIT) {
    throw outOfRange('options.maxDelay', `an integer >= 0 and <= ${MAX_DELAY_LIMIT}`, maxDelay);
  }
  return { closeOnly, maxCookies: byCookie ? (maxCookies ?? MAX_COOKIES) : 0, maxDelay, byPort };
}

/**
 * @internal `openStateChanges()` without the decoding: `onRecords` gets each native read's records
 * as they are (layout in addon/bpf_linux.h), same-state ones included, and `onLost` is called
 * after a drain when records were dropped. For the watch back-end, which needs four fields of a
 * few records.
 */
export function openStateRecords(onRecords: RecordSink, onLost: () => void, opts: StateChangeOptions = {}): StateRecordStream {
  const o = options(opts);
  return new Stream(open(o.closeOnly, o.maxCookies, o.maxDelay, o.byPort), onRecords, o, onLost);
}

/**
 * Calls `onChanges` with every TCP state change of the host (all network namespaces; filter on
 * `netnsCookie`), in the kernel's order, in batches as they arrive; changes from a state to
 * itself are left out. Linux 5.9 or later with BTF, and CAP_BPF + CAP_PERFMON (or root): throws
 * `EPERM` without them, `ENOTSUP` without BTF or elsewhere than Linux, the kernel's code if it
 * refuses the program (the verifier's last words in the message). Every TCP state change of the
 * machine runs the program while the stream is open (0.1 to 0.2 µs each, by the kernel's own
 * accounting, on the machine of bench/README.md). The
 * stream keeps the process alive until `close()` (or `unref()`), and closes with its Worker.
 */
export function openStateChanges(onChanges: (changes: StateChange[]) => void, opts: StateChangeOptions = {}): StateChangeStream {
  if (typeof onChanges !== 'function') throw invalidArgType('onChanges', 'of type function', onChanges);
  const o = options(opts);
  let changes: StateChange[] = [];
  const sink: RecordSink = (bytes, view, count) => decode(bytes, view, count, changes);
  const drained = (): void => {
    if (changes.length === 0) return;
    const batch = changes;
    changes = [];
    onChanges(batch);
  };
  return new Stream(open(o.closeOnly, o.maxCookies, o.maxDelay, o.byPort), sink, o, undefined, drained);
}
