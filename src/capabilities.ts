/**
 * What finwait can do on this machine, for applications that run in many places: whether the
 * kernel calls work here, and how `gracefulClose()` and `closeServer()` close.
 */
import { nativeUnavailable, platformName } from './binding';
import type { CodedError } from './errors';

/** What finwait can do here; see `capabilities()`. */
export interface Capabilities {
  /**
   * Whether finwait's kernel calls work here (its native part loaded on a platform with a
   * back-end): tcpInfo, tcpState, queues, shutdown, reset, the socket options, sockets(),
   * findSocket(), closeWrite(), watch() and the lab.
   */
  kernel: boolean;
  /** Where this runs, as prebuilt binaries are named: `linux-x64-glibc`, `linux-arm64-musl`, `darwin-arm64`. */
  platform: string;
  /** The error every kernel-only call throws here (`ENOTSUP`, naming what is missing); only when `kernel` is false. */
  error?: CodedError;
  /**
   * How gracefulClose() and closeServer() close: `'kernel'`, decided by what the kernel shows;
   * `'node'`, with what Node alone can do (end, read and discard until the peer's FIN, reset at
   * the deadline), their reports saying `kernelView: false`.
   */
  close: 'kernel' | 'node';
}

/** What finwait can do on this machine. Loads the native part if it was not loaded yet; never throws. */
export function capabilities(): Capabilities {
  const error = nativeUnavailable();
  const platform = platformName();
  return error ? { kernel: false, platform, error, close: 'node' } : { kernel: true, platform, close: 'kernel' };
}
