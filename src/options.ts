/**
 * Integer socket options that decide how a connection ends, as getter/setter pairs named after
 * the option. Each setter validates the value, sets it, and returns the value read back from the
 * kernel (which may differ: `setLinger2(s, 0)` reads back the system's `tcp_fin_timeout`).
 * @see tcp(7), socket(7)
 */
import { constants, native, type NativeConstants } from './binding';
import { invalidArgType, outOfRange } from './errors';
import { fdOf, type SocketLike } from './fd';
import { tcpFdOf } from './ops';

type OptionName = 'SO_KEEPALIVE' | 'TCP_USER_TIMEOUT' | 'TCP_LINGER2' | 'TCP_KEEPIDLE' | 'TCP_KEEPINTVL' | 'TCP_KEEPCNT';

function levelOf(c: NativeConstants, name: OptionName): number {
  return name === 'SO_KEEPALIVE' ? c.SOL_SOCKET : c.IPPROTO_TCP;
}

/** The fd, checked to be TCP's where the option is a socket-level one the kernel takes on any socket. */
function fdFor(socket: SocketLike, name: OptionName): number {
  return name === 'SO_KEEPALIVE' ? tcpFdOf(socket) : fdOf(socket);
}

function get(socket: SocketLike, name: OptionName): number {
  const fd = fdFor(socket, name);
  const c = constants();
  return native().getIntOption(fd, levelOf(c, name), c[name]);
}

function set(socket: SocketLike, name: OptionName, value: unknown, min: number, max: number, arg: string): number {
  const fd = fdFor(socket, name);
  if (typeof value !== 'number' || !Number.isInteger(value)) throw invalidArgType(arg, 'an integer', value);
  if (value < min || value > max) throw outOfRange(arg, `>= ${min} and <= ${max}`, value);
  const c = constants();
  native().setIntOption(fd, levelOf(c, name), c[name], value);
  return native().getIntOption(fd, levelOf(c, name), c[name]);
}

const INT_MAX = 0x7fffffff;
/** MAX_TCP_KEEPIDLE and MAX_TCP_KEEPINTVL in include/net/tcp.h. */
const KEEP_TIME_MAX = 32767;
/** MAX_TCP_KEEPCNT in include/net/tcp.h. */
const KEEPCNT_MAX = 127;

/** `TCP_USER_TIMEOUT`: ms that sent data may stay unacknowledged before the kernel drops the connection (ETIMEDOUT); 0 means the system default. */
export function getUserTimeout(socket: SocketLike): number {
  return get(socket, 'TCP_USER_TIMEOUT');
}
/** Sets `TCP_USER_TIMEOUT` in ms (0 to INT_MAX) and returns the value read back. */
export function setUserTimeout(socket: SocketLike, ms: number): number {
  return set(socket, 'TCP_USER_TIMEOUT', ms, 0, INT_MAX, 'ms');
}

/** `TCP_LINGER2`: seconds an orphaned socket stays in FIN_WAIT2 (reads the system's `tcp_fin_timeout` when unset); -1: RST instead of FIN_WAIT2. */
export function getLinger2(socket: SocketLike): number {
  return get(socket, 'TCP_LINGER2');
}
/**
 * Sets `TCP_LINGER2` in seconds and returns the value read back: -1 sends RST instead of waiting
 * in FIN_WAIT2, 0 restores the system default, larger values are capped by the kernel (120 s).
 */
export function setLinger2(socket: SocketLike, seconds: number): number {
  return set(socket, 'TCP_LINGER2', seconds, -1, INT_MAX, 'seconds');
}

/** `SO_KEEPALIVE`: whether the kernel sends keepalive probes on an idle connection. */
export function getKeepAlive(socket: SocketLike): boolean {
  return get(socket, 'SO_KEEPALIVE') !== 0;
}
/** Sets `SO_KEEPALIVE` and returns the value read back. */
export function setKeepAlive(socket: SocketLike, enabled: boolean): boolean {
  if (typeof enabled !== 'boolean') throw invalidArgType('enabled', 'of type boolean', enabled);
  return set(socket, 'SO_KEEPALIVE', enabled ? 1 : 0, 0, 1, 'enabled') !== 0;
}

/** `TCP_KEEPIDLE`: seconds of idleness before the first keepalive probe. */
export function getKeepIdle(socket: SocketLike): number {
  return get(socket, 'TCP_KEEPIDLE');
}
/** Sets `TCP_KEEPIDLE` in seconds (1 to 32767) and returns the value read back. */
export function setKeepIdle(socket: SocketLike, seconds: number): number {
  return set(socket, 'TCP_KEEPIDLE', seconds, 1, KEEP_TIME_MAX, 'seconds');
}

/** `TCP_KEEPINTVL`: seconds between keepalive probes. */
export function getKeepIntvl(socket: SocketLike): number {
  return get(socket, 'TCP_KEEPINTVL');
}
/** Sets `TCP_KEEPINTVL` in seconds (1 to 32767) and returns the value read back. */
export function setKeepIntvl(socket: SocketLike, seconds: number): number {
  return set(socket, 'TCP_KEEPINTVL', seconds, 1, KEEP_TIME_MAX, 'seconds');
}

/** `TCP_KEEPCNT`: unanswered keepalive probes before the connection is dropped. */
export function getKeepCnt(socket: SocketLike): number {
  return get(socket, 'TCP_KEEPCNT');
}
/** Sets `TCP_KEEPCNT` (1 to 127) and returns the value read back. */
export function setKeepCnt(socket: SocketLike, count: number): number {
  return set(socket, 'TCP_KEEPCNT', count, 1, KEEPCNT_MAX, 'count');
}
