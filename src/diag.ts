/**
 * The kernel's table of TCP sockets through sock_diag (NETLINK_SOCK_DIAG), the interface `ss`
 * uses: it shows what no fd can, TIME_WAIT sockets and orphans (sockets the application closed
 * that are still in FIN_WAIT1, FIN_WAIT2, CLOSING or LAST_ACK), in this network namespace.
 * Linux only; elsewhere every call throws `ENOTSUP`.
 * @see sock_diag(7), ss(8)
 */
import net from 'node:net';
import os from 'node:os';
import { native } from './binding';
import { codedError, errnoError, invalidArgType, outOfRange, type CodedError } from './errors';
import { stateMask, stateNumber, TCP_STATES, type TcpState } from './states';
import { stateOrThrow } from './tcp-info';

/** An address and port as Node writes them (`'127.0.0.1'`, `'::1'`, `'::ffff:127.0.0.1'`). */
export interface SocketAddress {
  address: string;
  port: number;
}

/**
 * The kernel timer pending on a socket (`idiag_timer`; `ss -o` prints `on`, `keepalive`,
 * `timewait`, `persist`): `'retransmit'` covers RTO, tail-loss probe and reordering timers,
 * `'probe'` is the zero-window probe, `'timewait'` the timer of a TIME_WAIT socket and of a
 * FIN_WAIT2 orphan, and `'keepalive'` also the FIN_WAIT2 timer of an orphan whose linger2 is
 * longer than 60 s.
 */
export type TimerKind = 'off' | 'retransmit' | 'keepalive' | 'timewait' | 'probe';

/** The timer pending on a socket, as sock_diag reports it (`ss -o`'s `timer:(...)`). */
export interface SocketTimer {
  /** Which timer. */
  kind: TimerKind;
  /** Milliseconds until the timer fires (`idiag_expires`); 0 when `kind` is `'off'`. */
  expiresMs: number;
  /** Retransmissions of the current episode, or unanswered probes for `'keepalive'`/`'probe'`. */
  retransmits: number;
}

/** One TCP socket as sock_diag reports it (`struct inet_diag_msg`). */
export interface SocketEntry {
  /** The socket's address family: 6 also for IPv4 peers of a dual-stack socket (`::ffff:a.b.c.d`). */
  family: 4 | 6;
  local: SocketAddress;
  /** `0.0.0.0:0` / `:::0` for a listening socket. */
  remote: SocketAddress;
  state: TcpState;
  timer: SocketTimer;
  /** Bytes received and not read (`idiag_rqueue`); for LISTEN, connections waiting in accept(). */
  recvQ: number;
  /** Bytes sent and not acknowledged plus unsent (`idiag_wqueue`); for LISTEN, the backlog. */
  sendQ: number;
  /** Inode of the socket's file; 0 once no fd refers to it (orphans, TIME_WAIT). */
  inode: number;
  /** Owner's uid; the kernel reports 0 for TIME_WAIT and FIN_WAIT2 orphans (timewait sockets). */
  uid: number;
  /**
   * The kernel's 64-bit id of this socket (`idiag_cookie`, `SO_COOKIE`; `ss -e` prints it as
   * `sk:`), as 16 lowercase hex digits: it tells apart two connections that had the same 4-tuple
   * one after the other. A TIME_WAIT socket keeps its connection's cookie if the kernel had
   * given it one before TIME_WAIT began (any dump, lookup or `SO_COOKIE` read does).
   */
  cookie: string;
}

/** Which sockets `sockets()` lists; every given condition must hold. */
export interface SocketFilter {
  /** Only these states, filtered in the kernel. Default: all but `'BOUND_INACTIVE'`, as `ss -ta`. */
  states?: readonly TcpState[];
  /** Local or remote port equals this (0–65535), filtered in the kernel. */
  port?: number;
  localPort?: number;
  remotePort?: number;
  /** Only sockets of this family; IPv4 peers of a dual-stack IPv6 socket are family 6. */
  family?: 4 | 6;
}

/** One connection's addresses; `family` defaults to that of the addresses. */
export interface SocketTuple {
  family?: 4 | 6;
  local: SocketAddress;
  remote: SocketAddress;
  /**
   * For `findSocket()`: only the socket with this cookie (16 hex digits, `SocketEntry.cookie`),
   * not a later connection that reused the 4-tuple (`tcp_tw_reuse`, a SYN that ends a TIME_WAIT).
   */
  cookie?: string;
}

// Linux's numbers; sock_diag exists only on Linux.
const AF_INET = 2;
/** @internal AF_INET6 on Linux: how sock_diag messages and the BPF program's records name IPv6. */
export const AF_INET6 = 10;
const SOCK_DIAG_BY_FAMILY = 20;
const NLMSG_HDRLEN = 16;
// Bytecode ops of include/uapi/linux/inet_diag.h; ports are compared with GE and LE, which every
// kernel has (S_EQ/D_EQ are 4.16+).
const BC_JMP = 1;
const BC_S_GE = 2;
const BC_S_LE = 3;
const BC_D_GE = 4;
const BC_D_LE = 5;
const LE = os.endianness() === 'LE';
const TIMERS: readonly TimerKind[] = ['off', 'retransmit', 'keepalive', 'timewait', 'probe'];
const FILTER_KEYS = ['states', 'port', 'localPort', 'remotePort', 'family'];
const DEFAULT_STATES = stateMask(TCP_STATES.filter((s) => s !== 'BOUND_INACTIVE'));


/** The 4-tuple of a connected socket (Node caches it, so it stays readable after close), or `undefined`. */
export function socketTuple(socket: net.Socket): SocketTuple | undefined {
  const { localAddress, localPort, remoteAddress, remotePort } = socket;
  if (!localAddress || !localPort || !remoteAddress || !remotePort) return undefined;
  return { local: { address: localAddress, port: localPort }, remote: { address: remoteAddress, port: remotePort } };
}

/**
 * @internal The 4-tuple of a connected socket and its `SO_COOKIE`, read on its fd: a lookup after
 * Node closed the fd then finds this connection (its orphan or TIME_WAIT keeps the cookie), never
 * a later one on the same 4-tuple. Node's cached 4-tuple alone if the fd has no peer any more.
 */
export function namedTuple(socket: net.Socket, fd: number): SocketTuple | undefined {
  const tuple = socketTuple(socket);
  if (!tuple) return undefined;
  const record = new Uint8Array(ID_RECORD);
  try {
    if (native().sockDiagId(fd, record)) return { ...tuple, cookie: recordCookie(record) };
  } catch {
    // Not readable now: the 4-tuple alone.
  }
  return tuple;
}

/** The 4-tuple of a socket that must be connected; `ERR_SOCKET_CLOSED` if it has none. */
export function connectedTuple(socket: net.Socket): SocketTuple {
  const tuple = socketTuple(socket);
  if (!tuple) throw codedError('ERR_SOCKET_CLOSED', 'Socket is closed: it has no 4-tuple (not connected)');
  return tuple;
}

/**
 * The TCP sockets of this network namespace, from the kernel's socket tables, like `ss -tan`:
 * every state including TIME_WAIT and orphans, IPv4 first then IPv6. Unknown filter keys throw
 * `ERR_INVALID_ARG_TYPE` (a misspelt key would otherwise list everything).
 * @see sock_diag(7)
 */
export function sockets(filter: SocketFilter = {}): SocketEntry[] {
  const into = (filter as { [INTO_COLUMNS]?: unknown } | null)?.[INTO_COLUMNS];
  if (into instanceof SocketColumns) {
    eachDump(null, filter, (reply) => decodeColumns(reply, into));
    return [];
  }
  return socketsIn(null, filter);
}

/**
 * @internal A filter key no public filter has (a symbol, which the key check does not see):
 * `sockets({ ...filter, [INTO_COLUMNS]: columns })` appends the sockets to `columns`
 * (`SocketColumns`) instead of making an object per socket, and returns `[]`. `finwait ss` reads
 * 100,000s of sockets this way, through `sockets()` as every other reader.
 */
export const INTO_COLUMNS: unique symbol = Symbol('finwait.intoColumns');

/** Where dumps are received, kept between calls (decoded at once, never handed out). */
const SCRATCH_MIN = 256 * 1024;
let scratch: Uint8Array = new Uint8Array(SCRATCH_MIN);
/** Dumps in a row that used under 1/16 of a large scratch. */
let smallDumps = 0;

/**
 * One dump's reply, received into `scratch`, which grows to the largest reply seen (a dump of
 * 50,000 sockets is ~4.8 MB: fresh memory for it each time would cost a page fault per 4 KiB), and
 * shrinks back after a run of small ones.
 */
function dump(family: number, mask: number, bytecode: Uint8Array | null, nsFd: number | null): Uint8Array {
  const reply = native().sockDiag(family, mask, bytecode, nsFd, scratch);
  if (reply.buffer !== scratch.buffer) scratch = new Uint8Array(reply.buffer);
  else if (scratch.byteLength > 16 * SCRATCH_MIN && reply.byteLength < scratch.byteLength / 16) smallDumps++;
  if (smallDumps > 100) {
    smallDumps = 0;
    scratch = new Uint8Array(SCRATCH_MIN);
  }
  return reply;
}

/**
 * @internal `sockets(filter)` in the network namespace `nsFd` (an open fd of
 * `/run/netns/NAME`; `null`: this process's), for the lab's hosts (`host.sockets()`).
 */
export function socketsIn(nsFd: number | null, filter: SocketFilter = {}): SocketEntry[] {
  const entries: SocketEntry[] = [];
  eachDump(nsFd, filter, (reply) => decode(reply, entries));
  return entries;
}

/** Checks `filter`, then dumps IPv4 then IPv6 as it asks, handing each reply to `each` before the next dump. */
function eachDump(nsFd: number | null, filter: SocketFilter, each: (reply: Uint8Array) => void): void {
  if (typeof filter !== 'object' || filter === null || Array.isArray(filter)) {
    throw invalidArgType('filter', 'an object', filter);
  }
  for (const key of Object.keys(filter)) {
    const value = (filter as Record<string, unknown>)[key];
    if (!FILTER_KEYS.includes(key) && value !== undefined) {
      throw invalidArgType(`filter.${key}`, `undefined (the filter keys are ${FILTER_KEYS.join(', ')})`, value);
    }
  }
  const mask = filter.states === undefined ? DEFAULT_STATES : stateMask(checkStates(filter.states));
  const bytecode = portBytecode(
    checkPort(filter.port, 'filter.port'),
    checkPort(filter.localPort, 'filter.localPort'),
    checkPort(filter.remotePort, 'filter.remotePort'),
  );
  const family = checkFamily(filter.family, 'filter.family');
  if (mask === 0) return;
  if (family !== 6) each(dump(AF_INET, mask, bytecode, nsFd));
  if (family !== 4) each(dump(AF_INET6, mask, bytecode, nsFd));
}

/**
 * The socket of one connection by its 4-tuple, in any state (TIME_WAIT and orphans included),
 * or `undefined` once the kernel has forgotten it: one lookup in the kernel's hash table, not a
 * dump. Accepts a `SocketEntry`; a `net.Socket`'s `localAddress`/`localPort`,
 * `remoteAddress`/`remotePort` make a tuple, link-local ones with their zone id (`%eth0`). With
 * `tuple.cookie`, only that socket: a later connection on the same 4-tuple is `undefined`.
 */
export function findSocket(tuple: SocketTuple): SocketEntry | undefined {
  return findSocketIn(null, tuple);
}

/**
 * @internal `findSocket(tuple)` in the network namespace `nsFd` (an open fd of
 * `/run/netns/NAME`; `null`: this thread's): the lab's hosts.
 */
export function findSocketIn(nsFd: number | null, tuple: SocketTuple): SocketEntry | undefined {
  if (typeof tuple !== 'object' || tuple === null) throw invalidArgType('tuple', 'an object', tuple);
  const family = checkFamily(tuple.family, 'tuple.family');
  const local = checkAddress(tuple.local, 'tuple.local');
  const remote = checkAddress(tuple.remote, 'tuple.remote');
  const cookie = checkCookie(tuple.cookie, 'tuple.cookie');
  const v6 = family === 6 || (family === undefined && (net.isIPv6(local.address) || net.isIPv6(remote.address)));
  const record = recordOf({ local, remote, cookie }, v6);
  const view = new DataView(record.buffer);
  const reply = new Uint8Array(DIAG_MSG_LEN);
  const status = new Int32Array(1);
  const nl = native().sockDiagSocket(nsFd);
  try {
    native().sockDiagFind(nl, record, reply, status);
  } finally {
    native().closeFd(nl);
  }
  if (status[0] !== 1) {
    if (isMiss(status[0]!)) return undefined;
    throw errnoError(status[0]!, 'recvmsg');
  }
  const entry = entryAt(new DataView(reply.buffer), 0);
  // Without an established or TIME_WAIT match the kernel answers with the listener of the local
  // address, if any: only an entry with the same 4-tuple is this connection. An IPv4 tuple may
  // be answered by a dual-stack IPv6 socket (`::ffff:a.b.c.d`).
  const localAddress = unmapped(formatAddress(view, 8, v6));
  const remoteAddress = unmapped(formatAddress(view, 24, v6));
  if (
    entry.local.port !== local.port ||
    entry.remote.port !== remote.port ||
    unmapped(entry.local.address) !== localAddress ||
    unmapped(entry.remote.address) !== remoteAddress
  ) {
    return undefined;
  }
  return entry;
}

/**
 * The interface index of an IPv6 address's zone id (`fe80::1%eth0`, `fe80::1%2`, as Node writes
 * link-local peers): 0 without a zone, `undefined` for a name that is no interface of this
 * network namespace with an IPv6 link-local address. A link-local connection is bound to its
 * interface, and the kernel finds it only with that index (`idiag_if`).
 */
function zoneIndex(address: string): number | undefined {
  const at = address.indexOf('%');
  if (at < 0) return 0;
  const zone = address.slice(at + 1);
  if (/^\d+$/.test(zone)) return Number(zone);
  return os.networkInterfaces()[zone]?.find((a) => a.family === 'IPv6' && a.scopeid)?.scopeid;
}

/**
 * @internal The `sockDiagFind` record of a valid `tuple` (IPv6 when `v6`, IPv4 addresses then
 * written as `::ffff:a.b.c.d`; by default as its addresses say), asking for its cookie if given.
 */
export function recordOf(tuple: SocketTuple, v6 = net.isIPv6(tuple.local.address) || net.isIPv6(tuple.remote.address)): Uint8Array {
  const { local, remote, cookie } = tuple;
  const record = new Uint8Array(ID_RECORD);
  const view = new DataView(record.buffer);
  record[0] = v6 ? AF_INET6 : AF_INET;
  view.setUint16(4, local.port);
  view.setUint16(6, remote.port);
  packAddress(local.address.split('%')[0]!, record, 8, v6, 'tuple.local.address');
  packAddress(remote.address.split('%')[0]!, record, 24, v6, 'tuple.remote.address');
  // idiag_if: a link-local connection's interface (the zone of either address, as the kernel
  // gives both ends the same); an unknown zone name asks for any, and finds only unbound ones.
  view.setUint32(40, zoneIndex(local.address) || zoneIndex(remote.address) || 0, LE);
  // idiag_cookie, low u32 first; INET_DIAG_NOCOOKIE (all ones) asks for any incarnation.
  view.setUint32(44, cookie === undefined ? 0xffffffff : Number.parseInt(cookie.slice(8), 16), LE);
  view.setUint32(48, cookie === undefined ? 0xffffffff : Number.parseInt(cookie.slice(0, 8), 16), LE);
  return record;
}

/** @internal Bytes of a `sockDiagFind` request record, and of one reply (`struct inet_diag_msg`). */
export const ID_RECORD = 64;
export const DIAG_MSG_LEN = 72;
const ENOENT = 2;
const EAGAIN = 11;
const ESTALE = 116;

/**
 * @internal True if a `sockDiagFind` status means "no such connection". With a cookie, a socket
 * of another incarnation is ENOENT on 6.18; sock_diag_check_cookie() itself says ESTALE, which
 * some kernels pass on: both mean "not this connection".
 */
export function isMiss(status: number): boolean {
  return status === -ENOENT || status === -ESTALE;
}

/** @internal True if a `sockDiagFind` status means the reply was lost (ask again). */
export function isLost(status: number): boolean {
  return status === -EAGAIN;
}

/**
 * @internal True if reply `j` (72 bytes each in `replies`) has the 4-tuple of request `i` (64
 * bytes each in `requests`, from `sockDiagId`): not the listener the kernel answers with when
 * nothing has that 4-tuple. Both hold `struct inet_diag_sockid` at byte 4; ports and addresses
 * are its first 36 bytes.
 */
export function sameTuple(requests: Uint8Array, i: number, replies: Uint8Array, j: number): boolean {
  const a = i * ID_RECORD + 4;
  const b = j * DIAG_MSG_LEN + 4;
  for (let k = 0; k < 36; k++) if (requests[a + k] !== replies[b + k]) return false;
  return true;
}

/** @internal The state and timer of reply `j` in `replies` (see `sameTuple`). */
export function replyAt(view: DataView, j: number): { state: TcpState; timer: SocketTimer } {
  const m = j * DIAG_MSG_LEN;
  return { state: stateOrThrow(view.getUint8(m + 1)), timer: timerAt(view, m) };
}

function checkStates(states: unknown): readonly TcpState[] {
  if (!Array.isArray(states)) throw invalidArgType('filter.states', 'an array of TCP state names', states);
  states.forEach((s: unknown, i) => {
    if (typeof s !== 'string') throw invalidArgType(`filter.states[${i}]`, 'a TCP state name', s);
    if (stateNumber(s) === undefined) throw outOfRange(`filter.states[${i}]`, `one of ${TCP_STATES.join(', ')}`, s);
  });
  return states as TcpState[];
}

function checkPort(port: unknown, name: string): number | undefined {
  if (port === undefined) return undefined;
  if (typeof port !== 'number' || !Number.isInteger(port)) throw invalidArgType(name, 'an integer', port);
  if (port < 0 || port > 0xffff) throw outOfRange(name, '>= 0 and <= 65535', port);
  return port;
}

function checkCookie(cookie: unknown, name: string): string | undefined {
  if (cookie === undefined) return undefined;
  if (typeof cookie !== 'string' || !/^[0-9a-f]{16}$/i.test(cookie)) {
    throw invalidArgType(name, 'a string of 16 hex digits (SocketEntry.cookie)', cookie);
  }
  return cookie;
}

function checkFamily(family: unknown, name: string): 4 | 6 | undefined {
  if (family === undefined) return undefined;
  if (typeof family !== 'number') throw invalidArgType(name, '4 or 6', family);
  if (family !== 4 && family !== 6) throw outOfRange(name, '4 or 6', family);
  return family;
}

function checkAddress(value: unknown, name: string): SocketAddress {
  if (typeof value !== 'object' || value === null) throw invalidArgType(name, 'an object', value);
  const { address, port } = value as Partial<SocketAddress>;
  if (typeof address !== 'string' || net.isIP(address) === 0) {
    throw invalidArgType(`${name}.address`, 'an IPv4 or IPv6 address', address);
  }
  if (zoneIndex(address) === undefined) {
    throw invalidArgType(`${name}.address`, 'an address whose zone id is an interface of this host (index or name)', address);
  }
  if (port === undefined) throw invalidArgType(`${name}.port`, 'an integer', port);
  return { address, port: checkPort(port, `${name}.port`) as number };
}

/**
 * Kernel bytecode (INET_DIAG_REQ_BYTECODE) that accepts a socket when every given port matches.
 * Each op is `{ code, yes, no }` with jumps relative to the op; a socket is accepted when the
 * program runs exactly to its end and rejected at end + 4; JMP always takes `no`.
 */
function portBytecode(port?: number, localPort?: number, remotePort?: number): Uint8Array | null {
  const REJECT = -1;
  const ops: Array<[code: number, yes: number, no: number, port: number]> = [];
  let at = 0;
  const equal = (ge: number, le: number, value: number, fail: number): void => {
    ops.push([ge, 8, fail, value], [le, 8, fail, value]);
    at += 16;
  };
  if (localPort !== undefined) equal(BC_S_GE, BC_S_LE, localPort, REJECT);
  if (remotePort !== undefined) equal(BC_D_GE, BC_D_LE, remotePort, REJECT);
  if (port !== undefined) {
    // local == port, else try remote == port; on success jump over the remote test.
    equal(BC_S_GE, BC_S_LE, port, at + 20);
    ops.push([BC_JMP, 4, at + 20, 0]);
    at += 4;
    equal(BC_D_GE, BC_D_LE, port, REJECT);
  }
  if (ops.length === 0) return null;
  const code = new Uint8Array(at);
  const view = new DataView(code.buffer);
  let pos = 0;
  for (const [op, yes, no, value] of ops) {
    view.setUint8(pos, op);
    view.setUint8(pos + 1, yes);
    view.setUint16(pos + 2, (no === REJECT ? at + 4 : no) - pos, LE);
    if (yes === 8) view.setUint16(pos + 6, value, LE); // the port rides in the next op's `no`
    pos += yes;
  }
  return code;
}

/** IPv4 addresses as text by their 4 bytes (a u32): a host's sockets name few addresses; at most 4,096 kept. */
const v4Names = new Map<number, string>();

/** Appends the entries of a sockDiag reply (netlink messages of `struct inet_diag_msg`) to `out`. */
function decode(reply: Uint8Array, out: SocketEntry[]): SocketEntry[] {
  const view = viewOf(reply);
  for (const m of diagBodies(view)) out.push(entryAt(view, m));
  return out;
}

function viewOf(reply: Uint8Array): DataView {
  return new DataView(reply.buffer, reply.byteOffset, reply.byteLength);
}

/** Where the `inet_diag_msg` of each SOCK_DIAG_BY_FAMILY message of a dump's reply begins. */
function diagBodies(view: DataView): Int32Array {
  const bodies = new Int32Array(Math.floor(view.byteLength / (NLMSG_HDRLEN + DIAG_MSG_LEN)));
  let n = 0;
  for (let off = 0; off + NLMSG_HDRLEN + DIAG_MSG_LEN <= view.byteLength; ) {
    const length = view.getUint32(off, LE);
    if (length < NLMSG_HDRLEN) break;
    if (view.getUint16(off + 4, LE) === SOCK_DIAG_BY_FAMILY) bodies[n++] = off + NLMSG_HDRLEN;
    off += (length + 3) & ~3;
  }
  return bodies.subarray(0, n);
}

/**
 * @internal The cookies (as `cookieKey()` makes them) of the TCP sockets in `states` of the
 * network namespace `nsFd` (`null`: this process's): a dump read for that field alone, with no
 * entry and no address text made per socket.
 */
export function socketCookieKeys(nsFd: number | null, states: readonly TcpState[]): Set<number | string> {
  const keys = new Set<number | string>();
  eachDump(nsFd, { states }, (reply) => {
    const view = viewOf(reply);
    for (const m of diagBodies(view)) keys.add(cookieKey(view, m + 44));
  });
  return keys;
}

/**
 * @internal Sockets as columns: socket `i`'s fields are `family[i]`, `state[i]` and so on, and
 * `entry(i)` makes its `SocketEntry` (the cookie is kept as two u32, low first, and made text
 * only there). From a dump (`INTO_COLUMNS`), or over entries already made (`of()`).
 */
export class SocketColumns {
  length = 0;
  family = new Uint8Array(0);
  readonly state: TcpState[] = [];
  readonly timer: TimerKind[] = [];
  retransmits = new Uint8Array(0);
  localPort = new Uint16Array(0);
  remotePort = new Uint16Array(0);
  readonly localAddress: string[] = [];
  readonly remoteAddress: string[] = [];
  expiresMs = new Uint32Array(0);
  recvQ = new Uint32Array(0);
  sendQ = new Uint32Array(0);
  uid = new Uint32Array(0);
  inode = new Uint32Array(0);
  cookie = new Uint32Array(0);
  #entries: readonly SocketEntry[] | undefined;

  /** Columns over `entries`, whose `entry(i)` is `entries[i]` itself. */
  static of(entries: readonly SocketEntry[]): SocketColumns {
    const c = new SocketColumns();
    c.#entries = entries;
    c.reserve(entries.length);
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!;
      c.family[i] = e.family;
      c.state.push(e.state);
      c.timer.push(e.timer.kind);
      c.retransmits[i] = e.timer.retransmits;
      c.localPort[i] = e.local.port;
      c.remotePort[i] = e.remote.port;
      c.localAddress.push(e.local.address);
      c.remoteAddress.push(e.remote.address);
      c.expiresMs[i] = e.timer.expiresMs;
      c.recvQ[i] = e.recvQ;
      c.sendQ[i] = e.sendQ;
      c.uid[i] = e.uid;
      c.inode[i] = e.inode;
    }
    c.length = entries.length;
    return c;
  }

  /** Room for `more` sockets after the `length` there are. */
  reserve(more: number): void {
    const need = this.length + more;
    if (need <= this.family.length) return;
    const grown = <T extends Uint8Array | Uint16Array | Uint32Array>(a: T, make: new (n: number) => T, per = 1): T => {
      const b = new make(need * per);
      b.set(a.subarray(0, this.length * per) as never);
      return b;
    };
    this.family = grown(this.family, Uint8Array);
    this.retransmits = grown(this.retransmits, Uint8Array);
    this.localPort = grown(this.localPort, Uint16Array);
    this.remotePort = grown(this.remotePort, Uint16Array);
    this.expiresMs = grown(this.expiresMs, Uint32Array);
    this.recvQ = grown(this.recvQ, Uint32Array);
    this.sendQ = grown(this.sendQ, Uint32Array);
    this.uid = grown(this.uid, Uint32Array);
    this.inode = grown(this.inode, Uint32Array);
    this.cookie = grown(this.cookie, Uint32Array, 2);
  }

  /** Socket `i` as `sockets()` lists it. */
  entry(i: number): SocketEntry {
    const given = this.#entries?.[i];
    if (given) return given;
    const hex = (n: number): string => n.toString(16).padStart(8, '0');
    return {
      family: this.family[i] === 6 ? 6 : 4,
      local: { address: this.localAddress[i]!, port: this.localPort[i]! },
      remote: { address: this.remoteAddress[i]!, port: this.remotePort[i]! },
      state: this.state[i]!,
      timer: { kind: this.timer[i]!, expiresMs: this.expiresMs[i]!, retransmits: this.retransmits[i]! },
      recvQ: this.recvQ[i]!,
      sendQ: this.sendQ[i]!,
      uid: this.uid[i]!,
      inode: this.inode[i]!,
      cookie: hex(this.cookie[2 * i + 1]!) + hex(this.cookie[2 * i]!),
    };
  }
}

/** `decode()` into columns: the same fields, read the same way, with no object per socket. */
function decodeColumns(reply: Uint8Array, c: SocketColumns): void {
  const view = viewOf(reply);
  const bodies = diagBodies(view);
  c.reserve(bodies.length);
  for (const m of bodies) {
    const i = c.length++;
    const v6 = view.getUint8(m) === AF_INET6;
    const kind = TIMERS[view.getUint8(m + 2)];
    if (kind === undefined) throw unknownTimer(view.getUint8(m + 2));
    c.family[i] = v6 ? 6 : 4;
    c.state.push(stateOrThrow(view.getUint8(m + 1)));
    c.timer.push(kind);
    c.retransmits[i] = view.getUint8(m + 3);
    c.localPort[i] = view.getUint16(m + 4);
    c.remotePort[i] = view.getUint16(m + 6);
    c.localAddress.push(formatAddress(view, m + 8, v6));
    c.remoteAddress.push(formatAddress(view, m + 24, v6));
    c.cookie[2 * i] = view.getUint32(m + 44, LE);
    c.cookie[2 * i + 1] = view.getUint32(m + 48, LE);
    c.expiresMs[i] = view.getUint32(m + 52, LE);
    c.recvQ[i] = view.getUint32(m + 56, LE);
    c.sendQ[i] = view.getUint32(m + 60, LE);
    c.uid[i] = view.getUint32(m + 64, LE);
    c.inode[i] = view.getUint32(m + 68, LE);
  }
}

/** @internal The destroy multicast's groups: SKNLGRP_INET_TCP_DESTROY and SKNLGRP_INET6_TCP_DESTROY (linux/sock_diag.h). */
export const DESTROY_GROUP_V4 = 1;
export const DESTROY_GROUP_V6 = 3;
/**
 * @internal How the destroy multicast is read (`sockDiagReadEvents`): messages per call, each into
 * a slot of its own (a message is ~380 bytes on 6.18), at most this many calls per readable turn
 * (a flood of other sockets' ends must not hold the loop); `-ENOBUFS` when messages were lost.
 */
export const DESTROY_SLOTS = 64;
export const DESTROY_SLOT = 1024;
export const DESTROY_READS_PER_TURN = 64;
export const DESTROY_LOST = -105;

/** @internal The attribute of a `struct inet_diag_msg` that holds the socket's `struct tcp_info`. */
export const INET_DIAG_INFO = 2;

/**
 * @internal The cookie of the SOCK_DIAG_BY_FAMILY message of `length` bytes at `off` (one
 * datagram of the destroy multicast) as `cookieKey()` gives it, `undefined` for anything else.
 */
export function messageCookie(view: DataView, off: number, length: number): number | string | undefined {
  if (length < NLMSG_HDRLEN + DIAG_MSG_LEN || view.getUint16(off + 4, LE) !== SOCK_DIAG_BY_FAMILY) return undefined;
  return cookieKey(view, off + NLMSG_HDRLEN + 44);
}

/**
 * @internal Where the payload of attribute `type` of the message at `off` (`length` bytes, as
 * `messageCookie()` takes it) begins, and its length: `[offset, bytes]`, `undefined` without it.
 */
export function messageAttribute(view: DataView, off: number, length: number, type: number): [number, number] | undefined {
  const end = off + Math.min(length, view.getUint32(off, LE));
  for (let a = off + NLMSG_HDRLEN + DIAG_MSG_LEN; a + 4 <= end; ) {
    const size = view.getUint16(a, LE);
    if (size < 4) return undefined;
    if ((view.getUint16(a + 2, LE) & 0x3fff) === type) return [a + 4, Math.min(size, end - a) - 4];
    a += (size + 3) & ~3;
  }
  return undefined;
}

/**
 * @internal The u64 cookie at `off` (two u32, low first, as `idiag_cookie` and a `sockDiagFind`
 * record hold it) as a Map key: a number while it fits in 53 bits (the kernel counts cookies up
 * from 1, so always in practice), its 16 hex digits beyond.
 */
export function cookieKey(view: DataView, off: number): number | string {
  const high = view.getUint32(off + 4, LE);
  return high < 0x200000 ? high * 0x100000000 + view.getUint32(off, LE) : u64Hex(view, off);
}

/** @internal The same key (`cookieKey()`) of a cookie read as a u64 (`socketCookie()`, a BPF record). */
export function cookieKeyOf(cookie: bigint): number | string {
  return cookie < SAFE_COOKIE ? Number(cookie) : cookie.toString(16).padStart(16, '0');
}
const SAFE_COOKIE = 2n ** 53n;

/**
 * @internal The socket a SOCK_DIAG_BY_FAMILY message at `off` describes (one datagram of the
 * destroy multicast, as `messageCookie()` takes it; check that first).
 */
export function messageEntry(view: DataView, off: number): SocketEntry {
  return entryAt(view, off + NLMSG_HDRLEN);
}

/** @internal A u64 cookie (`SO_COOKIE`, `SO_NETNS_COOKIE`) as `SocketEntry.cookie` writes one: 16 lowercase hex digits. */
export function cookieHex(cookie: bigint | number): string {
  return cookie.toString(16).padStart(16, '0');
}

/** The `struct inet_diag_msg` at `m`. */
function entryAt(view: DataView, m: number): SocketEntry {
  const v6 = view.getUint8(m) === AF_INET6;
  return {
    family: v6 ? 6 : 4,
    local: { address: formatAddress(view, m + 8, v6), port: view.getUint16(m + 4) },
    remote: { address: formatAddress(view, m + 24, v6), port: view.getUint16(m + 6) },
    state: stateOrThrow(view.getUint8(m + 1)),
    timer: timerAt(view, m),
    recvQ: view.getUint32(m + 56, LE),
    sendQ: view.getUint32(m + 60, LE),
    uid: view.getUint32(m + 64, LE),
    inode: view.getUint32(m + 68, LE),
    cookie: u64Hex(view, m + 44),
  };
}

function timerAt(view: DataView, m: number): SocketTimer {
  const kind = TIMERS[view.getUint8(m + 2)];
  if (kind === undefined) throw unknownTimer(view.getUint8(m + 2));
  return { kind, expiresMs: view.getUint32(m + 52, LE), retransmits: view.getUint8(m + 3) };
}

/** The two hex digits of each byte value, as character codes. */
const HEX_DIGITS = new Uint8Array(512);
for (let b = 0; b < 256; b++) HEX_DIGITS.set(Buffer.from(b.toString(16).padStart(2, '0'), 'latin1'), 2 * b);
const hexText = Buffer.alloc(16);

/**
 * @internal The host-order u64 at `off` (two u32, low first, as `idiag_cookie`) as 16 hex digits. Written
 * digit by digit and made a string once: a dump makes one per socket, and two numbers' strings,
 * padded and joined, cost a 50,000-socket dump ~15 ms more, mostly in garbage.
 */
export function u64Hex(view: DataView, off: number): string {
  let j = 0;
  for (const word of [off + 4, off]) {
    for (let k = 0; k < 4; k++) {
      const b = view.getUint8(LE ? word + 3 - k : word + k);
      hexText[j++] = HEX_DIGITS[2 * b]!;
      hexText[j++] = HEX_DIGITS[2 * b + 1]!;
    }
  }
  return hexText.toString('latin1', 0, 16);
}

const NO_COOKIE = 'ffffffffffffffff';

/** @internal The cookie a `sockDiagFind` record asks for (as `SocketEntry.cookie`), `undefined` for any. */
export function recordCookie(record: Uint8Array): string | undefined {
  const cookie = u64Hex(new DataView(record.buffer, record.byteOffset, ID_RECORD), 44);
  return cookie === NO_COOKIE ? undefined : cookie;
}

/** @internal The network namespace's cookie `sockDiagId` wrote (16 hex digits), `undefined` before Linux 5.14. */
export function recordNetns(record: Uint8Array): string | undefined {
  const cookie = u64Hex(new DataView(record.buffer, record.byteOffset, ID_RECORD), 56);
  return cookie === '0000000000000000' ? undefined : cookie;
}

/**
 * @internal True if the network namespace cookie `sockDiagId` wrote in `record` is `cookie` (its
 * 8 bytes as the kernel's u64), or unknown (0, before Linux 5.14: taken as this one).
 */
export function recordInNetns(record: Uint8Array, cookie: Uint8Array): boolean {
  let same = true;
  let unknown = true;
  for (let k = 0; k < 8; k++) {
    const byte = record[56 + k]!;
    if (byte !== cookie[k]) same = false;
    if (byte !== 0) unknown = false;
  }
  return same || unknown;
}

function unknownTimer(n: number): CodedError {
  return codedError('ERR_FINWAIT_UNKNOWN_TIMER', `The kernel reported socket timer ${n}, which finwait does not know`);
}

let lastV4 = -1;
let lastV4Name = '';

function formatV4(view: DataView, off: number): string {
  const key = view.getUint32(off);
  // Sockets in a row mostly share an address (a pile of TIME_WAIT to one peer).
  if (key === lastV4) return lastV4Name;
  let name = v4Names.get(key);
  if (name === undefined) {
    name = `${key >>> 24}.${(key >>> 16) & 255}.${(key >>> 8) & 255}.${key & 255}`;
    if (v4Names.size >= 4096) v4Names.clear();
    v4Names.set(key, name);
  }
  lastV4 = key;
  lastV4Name = name;
  return name;
}

const words = new Uint16Array(8);

/** @internal inet_ntop(3)'s text, as Node and `ss` print it: `::1`, `::ffff:127.0.0.1`. */
export function formatAddress(view: DataView, off: number, v6: boolean): string {
  if (!v6) return formatV4(view, off);
  let best = -1, bestLen = 0, run = -1; // longest run of zero words, leftmost on a tie
  for (let i = 0; i <= 8; i++) {
    const w = i < 8 ? (words[i] = view.getUint16(off + 2 * i)) : 1;
    if (w === 0 && run < 0) run = i;
    if (w !== 0 && run >= 0) {
      if (i - run > bestLen) [best, bestLen] = [run, i - run];
      run = -1;
    }
  }
  if (bestLen < 2) best = -1;
  let text = '';
  for (let i = 0; i < 8; i++) {
    if (i >= best && i < best + bestLen) {
      if (i === best) text += ':';
      continue;
    }
    if (i !== 0) text += ':';
    if (i === 6 && best === 0 && (bestLen === 6 || (bestLen === 5 && words[5] === 0xffff))) {
      return text + formatV4(view, off + 12);
    }
    text += words[i].toString(16);
  }
  return best >= 0 && best + bestLen === 8 ? text + ':' : text;
}

/** `'::ffff:127.0.0.1'` → `'127.0.0.1'`: the same peer seen by an IPv4 or a dual-stack socket. */
export function unmapped(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

/** Writes `address` into `out` at `off`: 4 bytes, or 16 when `v6` (IPv4 as `::ffff:a.b.c.d`). */
function packAddress(given: string, out: Uint8Array, off: number, v6: boolean, name: string): void {
  const address = v6 ? given : unmapped(given.toLowerCase());
  if (net.isIPv4(address)) {
    out.set(address.split('.').map(Number), v6 ? off + 12 : off);
    if (v6) out[off + 10] = out[off + 11] = 0xff;
    return;
  }
  if (!v6) throw invalidArgType(name, 'an IPv4 address when family is 4', address);
  let text = address;
  const dot = text.lastIndexOf(':');
  if (text.includes('.')) {
    const [a, b, c, d] = text.slice(dot + 1).split('.').map(Number);
    text = `${text.slice(0, dot + 1)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.split('::');
  const front = head ? head.split(':') : [];
  const back = tail === undefined ? [] : tail ? tail.split(':') : [];
  const all = [...front, ...new Array<string>(8 - front.length - back.length).fill('0'), ...back];
  const view = new DataView(out.buffer, out.byteOffset);
  all.forEach((word, i) => view.setUint16(off + 2 * i, Number.parseInt(word, 16)));
}
