/**
 * The native addon, loaded once and typed. Every function makes one system call and throws a
 * Node-style errno error (`.code`, `.errno`, `.syscall`); policy lives in the callers.
 */
import path from 'node:path';
import nodeGypBuild from 'node-gyp-build';
import type { CodedError } from './errors';

/** Numbers of the platform's constants; only `supported` exists where there is no back-end. */
export interface NativeConstants {
  supported: boolean;
  SHUT_RD: number;
  SHUT_WR: number;
  SHUT_RDWR: number;
  SOL_SOCKET: number;
  IPPROTO_TCP: number;
  SO_ERROR: number;
  SO_KEEPALIVE: number;
  TCP_USER_TIMEOUT: number;
  TCP_LINGER2: number;
  TCP_KEEPIDLE: number;
  TCP_KEEPINTVL: number;
  TCP_KEEPCNT: number;
  SIOCINQ: number;
  SIOCOUTQ: number;
  SIOCOUTQNSD: number;
  SO_REUSEADDR: number;
  /** Absent from an addon built before it was added. */
  SO_REUSEPORT?: number;
  SO_RCVBUF: number;
  SO_SNDBUF: number;
  AF_INET: number;
  AF_INET6: number;
  SOCK_STREAM: number;
  AF_UNIX: number;
  SO_TYPE: number;
  SO_PROTOCOL: number;
  IFF_TUN: number;
  IFF_NO_PI: number;
}

/** A NETLINK_SOCK_DIAG socket bound for the destroy multicast, owning its fd. */
export interface NativeEventsSocket {
  readonly fd: number;
  /** Closes the fd (idempotent). */
  close(): void;
}

/**
 * The BPF program on the tracepoint `sock:inet_sock_set_state`, attached, with its ring buffer
 * mapped; owns its fds and mappings (released by `close()`, or with the object or its environment).
 */
export interface NativeStateChanges {
  /** The ring buffer's fd (-1 once closed): readable (epoll) while records wait. */
  readonly fd: number;
  /**
   * Copies the waiting records, 136 bytes each (layout in addon/bpf_linux.h), into `buffer`, as
   * many as fit, and frees their room in the ring; returns how many. Never blocks.
   */
  read(buffer: Uint8Array): number;
  /** Records the program dropped because the ring was full, since it was loaded. */
  lost(): number;
  /** Adds the cookie in the 8 bytes at `offset` (host order) to the filter (a source made with `maxCookies` > 0; else EINVAL). */
  addCookie(bytes: Uint8Array, offset: number): void;
  /** Takes that cookie out of the filter; false if it was not in. */
  removeCookie(bytes: Uint8Array, offset: number): boolean;
  /**
   * Adds the 16-byte key at `offset` (namespace cookie, u64 host order; local port, 2 bytes in
   * network order; 6 zero bytes) to the port filter (a source made with `maxPorts` > 0; else EINVAL).
   */
  addPort(bytes: Uint8Array, offset: number): void;
  /** Takes that key out of the port filter; false if it was not in. */
  removePort(bytes: Uint8Array, offset: number): boolean;
  /** Detaches the program and releases everything (idempotent). */
  close(): void;
}

/** A uv_poll_t on the calling environment's loop; unref'd, so it never keeps the process alive. */
export interface NativeFdPoll {
  /** Stops watching and closes the handle (idempotent); the fd stays open unless the poll owns it. */
  close(): void;
}

export interface Native {
  /** shutdown(2). */
  shutdown(fd: number, how: number): void;
  /** getsockopt(SO_LINGER). */
  getLinger(fd: number): { onoff: number; linger: number };
  /** setsockopt(SO_LINGER), exactly as given. */
  setLinger(fd: number, onoff: number, linger: number): void;
  /** getsockopt of an `int` option. */
  getIntOption(fd: number, level: number, name: number): number;
  /** setsockopt of an `int` option. */
  setIntOption(fd: number, level: number, name: number, value: number): void;
  /** getsockopt(TCP_INFO) into `buffer`; returns the number of bytes the kernel wrote. */
  tcpInfo(fd: number, buffer: Uint8Array): number;
  /** `tcpi_state` alone. */
  tcpState(fd: number): number;
  /** `out[i]` = `tcpi_state` of `fds[i]`, or the negative libuv errno of its failure. */
  tcpStates(fds: Int32Array, out: Int32Array): void;
  /** ioctl(SIOCINQ | SIOCOUTQ | SIOCOUTQNSD). */
  ioctlInt(fd: number, request: number): number;
  /**
   * One NETLINK_SOCK_DIAG dump request for TCP sockets of `family` (AF_INET 2, AF_INET6 10) in
   * the states of the `states` bit mask (bit n = state n), filtered in the kernel by `bytecode`
   * (INET_DIAG_REQ_BYTECODE) if given. Returns the reply's netlink messages, headers included,
   * received straight into `scratch` (kept by the caller between calls) or, when they do not fit,
   * into a larger ArrayBuffer: the result views whichever holds them.
   * With `nsFd` (an fd of `/run/netns/NAME`) the netlink socket is made inside that network
   * namespace, and so answers for its sockets (the lab's hosts); without it, for the caller's.
   */
  sockDiag(family: number, states: number, bytecode: Uint8Array | null | undefined, nsFd: number | null | undefined, scratch: Uint8Array): Uint8Array;
  /** A NETLINK_SOCK_DIAG socket (close-on-exec) for `sockDiagFind`, made here or in `nsFd`'s namespace. */
  sockDiagSocket(nsFd?: number | null): number;
  /**
   * `status.length` exact lookups through the netlink socket `nlFd` (32 requests per sendmsg).
   * Request i is the 64-byte record at `requests[64 * i]` (u8 family, 3 bytes pad, 48 bytes of
   * `struct inet_diag_sockid`); `status[i]` becomes 1 with the reply's 72-byte `struct
   * inet_diag_msg` at `replies[72 * i]`, or the kernel's negative errno (`-ENOENT`: none), or
   * `-EAGAIN` if no reply came.
   */
  sockDiagFind(nlFd: number, requests: Uint8Array, replies: Uint8Array, status: Int32Array): void;
  /**
   * Reads the socket's state into byte 1 of `record` (TCP_INFO, first); if it has a peer, writes
   * the rest of the 64-byte record `sockDiagFind` takes for it (SO_COOKIE, read before the
   * peer's name; all ones before Linux 4.12; getsockname, getpeername) and its network
   * namespace's cookie (SO_NETNS_COOKIE, 0 before 5.14) as a u64 at byte 56. False, with only
   * the state, in CLOSE, LISTEN and SYN_SENT.
   */
  sockDiagId(fd: number, record: Uint8Array): boolean;
  /**
   * getsockopt(SO_COOKIE): the socket's 64-bit cookie, as sock_diag, the destroy multicast and the
   * BPF program name it (`SocketEntry.cookie` in hex). Any socket has one; `ENOTSOCK` for an fd
   * that is no socket, `EBADF` for one that is not open, `ENOPROTOOPT` before Linux 4.12.
   */
  socketCookie(fd: number): bigint;
  /**
   * getsockopt(SO_NETNS_COOKIE) of the socket `fd`: its network namespace's cookie, with no
   * privilege (socketNetns() needs CAP_NET_ADMIN); 0n before Linux 5.14; `EBADF`, `ENOTSOCK` as
   * socketCookie(). Absent from an addon built before it was added.
   */
  socketNetnsCookie?(fd: number): bigint;
  /** ioctl(SIOCGSKNS) (CAP_NET_ADMIN): a new fd (close-on-exec) of the network namespace the socket lives in. */
  socketNetns(fd: number): number;
  /** SO_NETNS_COOKIE of a socket made in this thread's network namespace, or in `nsFd`'s; 0n before 5.14. */
  netnsCookie(nsFd?: number | null): bigint;
  /**
   * socket(2) made with the calling thread inside the network namespace `nsFd` (an fd of
   * `/run/netns/NAME`), close-on-exec and non-blocking; the thread returns to its own namespace.
   */
  netnsSocket(nsFd: number, family: number, type: number): number;
  /** open(2) of `path` with `flags` (plus O_CLOEXEC) made inside the network namespace `nsFd`. */
  netnsOpen(nsFd: number, path: string, flags: number): number;
  /**
   * close(2) of an fd the addon made (a netlink socket, a namespace's fd from `socketNetns`): not
   * `fs.closeSync()`, which in a Worker warns about an fd Node did not open. Never an fd Node owns.
   */
  closeFd(fd: number): void;
  /** bind(2) to the address in `sockaddr` (the bytes of a `sockaddr_in` or `sockaddr_in6`). */
  bind(fd: number, sockaddr: Uint8Array): void;
  /**
   * socket(2) of a stream socket of `family`, close-on-exec and non-blocking, made here or in the
   * network namespace `nsFd`, with SO_REUSEPORT set before anything binds it (Linux).
   */
  reusePortSocket(family: number, nsFd?: number | null): number;
  /** listen(2) (Linux). */
  listen(fd: number, backlog: number): void;
  /**
   * Seals the listener `fd`: a socket filter that drops every segment with SYN set and ACK clear,
   * so no new handshake starts while those under way complete into the accept queue (a dropped
   * client sends its SYN again after a second). The filter belongs to the socket, which other
   * processes may hold too: the object keeps a copy of the fd, and `release()`, called once the
   * caller closed its own fd, detaches the filter and closes the copy in one call (a socket held
   * elsewhere lives on unsealed); also when the object is collected or its environment ends.
   * With `maxMs` (at least 1; capped at 2^31 - 1), where this process may load BPF (CAP_BPF or
   * CAP_SYS_ADMIN, or anyone where kernel.unprivileged_bpf_disabled is 0), the filter is an eBPF
   * one that stops dropping `maxMs` from now, released or not (`expires: true`; the host's clock,
   * also in a time namespace); otherwise a classic one, until released. Throws EPERM where neither
   * can be had: on a TCP socket Linux 6.18 attaches the classic filter only with CAP_NET_ADMIN.
   * Linux only; absent from an addon built before it (`expires` and `maxMs` too, in one built
   * before them).
   */
  SealedListener?: new (fd: number, maxMs?: number) => { release(): void; readonly expires?: boolean };
  /** SO_DETACH_FILTER (none attached is no error): for a connection accepted from a sealed listener, which inherited its filter. */
  detachFilter?(fd: number): void;
  /** socket(AF_UNIX, SOCK_SEQPACKET), non-blocking and close-on-exec (Linux only). */
  seqpacketSocket?(): number;
  /** connect(2) to a `sockaddr_un` (bytes); never waits (EAGAIN when the listener's backlog is full). */
  connectUnix?(fd: number, sockaddr: Uint8Array): void;
  /** accept4(2), non-blocking and close-on-exec: the new fd, or -1 when none waits. */
  acceptUnix?(fd: number): number;
  /** SO_PEERCRED: the peer process's credentials as they were when it connected. */
  peerCredentials?(fd: number): { pid: number; uid: number; gid: number };
  /** One sendmsg(2) of `payload` (at least a byte) carrying the first `count` of `fds` (at most 253) as SCM_RIGHTS; never waits (EAGAIN). */
  sendFds?(fd: number, fds: Int32Array, count: number, payload: Uint8Array): number;
  /**
   * One recvmsg(2): the message's bytes into `payload`, its fds (close-on-exec) into `fds`, the
   * rest of `fds` set to -1. Returns the bytes, 0 when the peer closed, -1 when nothing waits;
   * throws EMSGSIZE, with the message's fds closed, when it did not fit.
   */
  recvFds?(fd: number, payload: Uint8Array, fds: Int32Array): number;
  /** ioctl(TUNSETIFF) on an open `/dev/net/tun`; returns the device's name. */
  tunSetIff(fd: number, name: string, flags: number): string;
  /** read(2) of one packet into `buffer`: its length, or 0 when none is waiting (EAGAIN). */
  tunRead(fd: number, buffer: Uint8Array): number;
  /** write(2) of the first `length` bytes of `buffer` as one packet; returns bytes written. */
  tunWrite(fd: number, buffer: Uint8Array, length: number): number;
  /**
   * The sock_diag destroy multicast (Linux only): a NETLINK_SOCK_DIAG socket, non-blocking and
   * close-on-exec, made here or in `nsFd`'s network namespace, SO_RCVBUF set to `rcvbuf` bytes if
   * above 0, and bound (multicast reaches only a bound socket). The object owns its `fd` (-1 once
   * closed): closed by `close()`, or when it is collected or its environment ends.
   */
  SockDiagEventsSocket?: new (nsFd: number | null, rcvbuf: number) => NativeEventsSocket;
  /** NETLINK_ADD_MEMBERSHIP of `group` (SKNLGRP_INET_TCP_DESTROY 1, SKNLGRP_INET6_TCP_DESTROY 3). */
  sockDiagJoin?(fd: number, group: number): void;
  /** NETLINK_DROP_MEMBERSHIP of `group`. */
  sockDiagLeave?(fd: number, group: number): void;
  /**
   * One recvmmsg of what is queued: message i into slot i of `buffer` (`buffer.length /
   * lengths.length` bytes each), `lengths[i]` its length (negative: cut to its slot). Returns the
   * count, 0 when nothing is queued, or -ENOBUFS when messages were lost (the buffer was full).
   */
  sockDiagReadEvents?(fd: number, buffer: Uint8Array, lengths: Int32Array): number;
  /**
   * What decides a close, read just before Node closes the fd (Linux only), into `out` (6 or more
   * elements): `[tcpi_state, l_onoff, l_linger, SIOCINQ, TCP_LINGER2, tcpi_data_segs_in]` (the last
   * -1 before Linux 4.6). False, with 0 in the middle four, when the bit of tcpi_state is set in
   * `stopStates` (bit n for the kernel's state number n): only the state was read. (An addon built
   * before `stopStates` stops in CLOSE, LISTEN, SYN_SENT and TIME_WAIT.)
   */
  closeLook?(fd: number, out: Int32Array, stopStates: number): boolean;
  /**
   * TCP state changes (Linux only): loads the BPF program (field offsets from the kernel's BTF),
   * its ring buffer of `ringBytes` (a power of 2, at least a page) and attaches it. Throws `bpf
   * EPERM` without CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN), `ENOTSUP` without BTF (`open`) or
   * a field it reads (`read`), and a refused load with the verifier's last words in the message.
   * `maxCookies` > 0 gives it a cookie filter of that size (only the sockets added are written).
   * `wakeBytes` > 0: a record makes `fd` readable only once that many bytes wait in the ring (the
   * caller reads the rest on a timer); 0 (the default): every record does. `maxPorts` > 0 gives it
   * a port filter of that size (the sockets on the ports added are written; with a cookie filter
   * too, a change either keeps is written).
   */
  BpfStateChanges?: new (ringBytes: number, closeOnly: boolean, maxCookies?: number, wakeBytes?: number, maxPorts?: number) => NativeStateChanges;
  /**
   * Calls `onReadable(status)` (0, or a negative libuv errno) each time `fd` is readable. With
   * `ownsFd`, the fd is closed with the handle (by `close()`, or when the object is collected or
   * its environment ends); else it stays open. If the constructor throws, the fd is not closed.
   */
  FdPoll: new (fd: number, onReadable: (status: number) => void, ownsFd?: boolean) => NativeFdPoll;
  constants: NativeConstants;
}

let libcName: 'glibc' | 'musl' | undefined;

/**
 * The C library this Linux process runs on, as prebuilds are tagged: glibc or musl. Node's
 * diagnostic report names glibc's version; it is made once, without its network part (which
 * would walk every open handle).
 */
function libc(): 'glibc' | 'musl' {
  if (libcName) return libcName;
  // excludeNetwork: Node >= 20.13 (and older @types/node do not know it).
  const report = process.report as (NodeJS.ProcessReport & { excludeNetwork?: boolean }) | undefined;
  const excluded = report?.excludeNetwork;
  if (report) report.excludeNetwork = true;
  try {
    const header = (report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined)?.header;
    libcName = header?.glibcVersionRuntime ? 'glibc' : 'musl';
  } finally {
    if (report && excluded !== undefined) report.excludeNetwork = excluded;
  }
  return libcName;
}

/** Where this runs, as prebuilds are named: `linux-x64-glibc`, `darwin-arm64`. */
export function platformName(): string {
  const name = `${process.platform}-${process.arch}`;
  return process.platform === 'linux' ? `${name}-${libc()}` : name;
}

/**
 * The one error every kernel-only call throws where the native part cannot be used: `ENOTSUP`,
 * naming the platform and what is missing, with the loader's error as `cause`.
 */
function unavailable(why: string, cause?: unknown): CodedError {
  const error = new Error(`finwait's kernel calls are not available on ${platformName()}: ${why}`, { cause });
  return Object.assign(error, { code: 'ENOTSUP' });
}

type Loaded = { native: Native; error?: undefined } | { native?: undefined; error: CodedError };

function load(): Loaded {
  try {
    // FINWAIT_NATIVE names a .node file to load instead (a custom or debug build).
    const override = process.env.FINWAIT_NATIVE;
    const addon = (override ? require(path.resolve(override)) : nodeGypBuild(path.join(__dirname, '..'))) as Native;
    if (!addon.constants.supported) return { error: unavailable(`finwait has no back-end for ${process.platform} yet`) };
    return { native: addon };
  } catch (cause) {
    // Deferred to the first call so that importing finwait never throws.
    if (process.platform !== 'linux') return { error: unavailable(`finwait has no back-end for ${process.platform} yet`, cause) };
    const why = (cause as Error).message.split('\n')[0];
    return {
      error: unavailable(
        `its native part could not be loaded (${why}). No prebuilt binary matches this platform and none was built at install; ` +
          '"npm rebuild finwait" builds one (it needs python3, make and a C++ compiler)',
        cause,
      ),
    };
  }
}

let loaded: Loaded | undefined;

/** The addon, loaded on first use; throws the `ENOTSUP` of `nativeUnavailable()` where it cannot be used. */
export function native(): Native {
  loaded ??= load();
  if (loaded.error) throw loaded.error;
  return loaded.native;
}

/** Why the kernel calls cannot be made here (the error they throw), or `undefined` when they can. */
export function nativeUnavailable(): CodedError | undefined {
  loaded ??= load();
  return loaded.error;
}

/** The platform's constants; throws `ENOTSUP` where there is no back-end. */
export function constants(): NativeConstants {
  return native().constants;
}
