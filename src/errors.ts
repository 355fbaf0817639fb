/**
 * Errors shaped like Node's own: argument errors carry Node's `ERR_*` codes, kernel errors the
 * kernel's code (`EBADF`), the negative libuv `errno` and the `syscall`.
 */
import { inspect, getSystemErrorName } from 'node:util';

/** An error from a system call, shaped like Node's `ErrnoException`. */
export interface ErrnoError extends Error {
  /** The kernel's code, e.g. `'EBADF'`, `'ENOTSOCK'`, `'ECONNRESET'`. */
  code: string;
  /** The negative libuv error number (`-9` for `EBADF` on Linux). */
  errno: number;
  /** The system call that failed, e.g. `'getsockopt'`. */
  syscall: string;
}

/** An error carrying a Node-style `code` such as `'ERR_INVALID_ARG_TYPE'`. */
export interface CodedError extends Error {
  code: string;
}

function coded<E extends Error>(error: E, code: string): E & { code: string } {
  return Object.assign(error, { code });
}

/** An `Error` with a finwait code such as `'ERR_FINWAIT_TIMEOUT'`. */
export function codedError(code: string, message: string): CodedError {
  return coded(new Error(message), code);
}

function describe(value: unknown): string {
  if (value === null || value === undefined) return `Received ${String(value)}`;
  if (typeof value === 'function') return `Received function ${value.name || '<anonymous>'}`;
  if (typeof value === 'object') {
    const name = (value as object).constructor?.name;
    return name ? `Received an instance of ${name}` : `Received ${inspect(value, { depth: -1 })}`;
  }
  return `Received type ${typeof value} (${inspect(value)})`;
}

/** `TypeError` with `code: 'ERR_INVALID_ARG_TYPE'`, worded like Node's. */
export function invalidArgType(name: string, expected: string, actual: unknown): TypeError & { code: string } {
  return coded(new TypeError(`The "${name}" argument must be ${expected}. ${describe(actual)}`), 'ERR_INVALID_ARG_TYPE');
}

/** `RangeError` with `code: 'ERR_OUT_OF_RANGE'`, worded like Node's. */
export function outOfRange(name: string, range: string, actual: unknown, hint = ''): RangeError & { code: string } {
  const message = `The value of "${name}" is out of range. It must be ${range}. Received ${inspect(actual)}`;
  return coded(new RangeError(hint ? `${message}. ${hint}` : message), 'ERR_OUT_OF_RANGE');
}

/** The longest delay setTimeout() takes, ms (beyond it Node fires after 1 ms). */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** A ms option a timer will take: a number from 0 to `MAX_TIMER_MS`, else Node's argument errors. */
export function checkTimerMs(value: unknown, name: string): number {
  if (typeof value !== 'number' || Number.isNaN(value)) throw invalidArgType(name, 'a number', value);
  if (value < 0 || value > MAX_TIMER_MS) throw outOfRange(name, `>= 0 and <= ${MAX_TIMER_MS}`, value);
  return value;
}

/** `Error` with `code: 'ERR_SOCKET_CLOSED'`: the socket has no file descriptor (yet or any more). */
export function socketClosed(why: string, cause?: unknown): Error & { code: string } {
  return coded(new Error(`Socket is closed: ${why}`, cause === undefined ? undefined : { cause }), 'ERR_SOCKET_CLOSED');
}

/** An errno error built from a negative libuv error number, the same shape the addon throws. */
export function errnoError(errno: number, syscall: string): ErrnoError {
  const code = getSystemErrorName(errno);
  return Object.assign(new Error(`${syscall} ${code}`), { code, errno, syscall });
}

/** `Error` with `code: 'ENOTSUP'` for what this platform or build cannot do. */
export function notSupported(what: string, cause?: unknown): Error & { code: string } {
  return coded(new Error(`${what} is not supported on ${process.platform}`, { cause }), 'ENOTSUP');
}

/** An `AbortError` like Node's, for operations cancelled through an `AbortSignal`. */
export function abortError(signal: AbortSignal): Error & { code: string } {
  const error = coded(new Error('The operation was aborted', { cause: signal.reason }), 'ABORT_ERR');
  error.name = 'AbortError';
  return error;
}
