/**
 * `struct tcp_info` (include/uapi/linux/tcp.h), decoded by the length the kernel wrote: a field
 * beyond that length is `undefined`, not 0. Units are on each field of `TcpInfo`; the byte offsets
 * of the uapi header are in `decodeTcpInfo()`.
 * @see tcp(7) TCP_INFO
 */
import os from 'node:os';
import { stateName, type TcpState } from './states';
import { codedError, type CodedError } from './errors';

/** Offset of `tcpi_data_segs_in` (data segments received) in `struct tcp_info` (Linux 4.6). */
export const TCPI_DATA_SEGS_IN = 152;

/** Every field of Linux's `struct tcp_info` up to the 280 bytes of Linux 6.18, camelCased without `tcpi_`. */
export interface TcpInfo {
  /** Bytes of `struct tcp_info` the running kernel filled (104 on 2.6–3.14 … 280 on 6.18). */
  length: number;
  /** `tcpi_state`: the connection's state. An fd cannot show TIME_WAIT: it reads `'CLOSE'` then. */
  state: TcpState;
  /** `tcpi_ca_state`: congestion state, Open 0, Disorder 1, CWR 2, Recovery 3, Loss 4. */
  caState: number;
  /** `tcpi_retransmits`: retransmissions of the current RTO episode. */
  retransmits: number;
  /** `tcpi_probes`: unanswered zero-window or keepalive probes. */
  probes: number;
  /** `tcpi_backoff`: RTO backoff exponent. */
  backoff: number;
  /** `tcpi_options`: bits TIMESTAMPS 1, SACK 2, WSCALE 4, ECN 8, ECN_SEEN 16, SYN_DATA 32, USEC_TS 64, ECN_LOW 128. */
  options: number;
  /** `tcpi_snd_wscale`: the peer's window scale shift. */
  sndWscale: number;
  /** `tcpi_rcv_wscale`: our window scale shift. */
  rcvWscale: number;
  /** `tcpi_delivery_rate_app_limited` (Linux 4.9; always false before). */
  deliveryRateAppLimited: boolean;
  /** `tcpi_fastopen_client_fail` (Linux 5.5; 0 before): TFO_STATUS_UNSPEC 0, COOKIE_UNAVAILABLE 1, DATA_NOT_ACKED 2, SYN_RETRANSMITTED 3. */
  fastopenClientFail: number;
  /** `tcpi_rto`: retransmission timeout, µs. */
  rto: number;
  /** `tcpi_ato`: delayed-ACK timeout, µs. */
  ato: number;
  /** `tcpi_snd_mss`: bytes. */
  sndMss: number;
  /** `tcpi_rcv_mss`: bytes. */
  rcvMss: number;
  /** `tcpi_unacked`: segments sent and not acknowledged. */
  unacked: number;
  /** `tcpi_sacked`: segments. */
  sacked: number;
  /** `tcpi_lost`: segments. */
  lost: number;
  /** `tcpi_retrans`: segments retransmitted and not yet acknowledged. */
  retrans: number;
  /** `tcpi_fackets`: legacy, no longer used by the kernel. */
  fackets: number;
  /** `tcpi_last_data_sent`: ms since data was last sent. */
  lastDataSent: number;
  /** `tcpi_last_ack_sent`: not remembered by Linux, always 0. */
  lastAckSent: number;
  /** `tcpi_last_data_recv`: ms since data was last received. */
  lastDataRecv: number;
  /** `tcpi_last_ack_recv`: ms since an ACK was last received. */
  lastAckRecv: number;
  /** `tcpi_pmtu`: path MTU, bytes. */
  pmtu: number;
  /** `tcpi_rcv_ssthresh`: bytes. */
  rcvSsthresh: number;
  /** `tcpi_rtt`: smoothed round-trip time, µs. */
  rtt: number;
  /** `tcpi_rttvar`: round-trip time variation, µs. */
  rttvar: number;
  /** `tcpi_snd_ssthresh`: slow-start threshold, segments. */
  sndSsthresh: number;
  /** `tcpi_snd_cwnd`: congestion window, segments. */
  sndCwnd: number;
  /** `tcpi_advmss`: advertised MSS, bytes. */
  advmss: number;
  /** `tcpi_reordering`: reordering metric, segments. */
  reordering: number;
  /** `tcpi_rcv_rtt`: receiver-side RTT estimate, µs. */
  rcvRtt: number;
  /** `tcpi_rcv_space`: receive buffer space estimate, bytes. */
  rcvSpace: number;
  /** `tcpi_total_retrans`: segments retransmitted over the connection's life. */
  totalRetrans: number;
  /** `tcpi_pacing_rate`: bytes/s; `Infinity` when unlimited (Linux 3.15). */
  pacingRate: number | undefined;
  /** `tcpi_max_pacing_rate`: bytes/s; `Infinity` when unlimited (Linux 3.15). */
  maxPacingRate: number | undefined;
  /** `tcpi_bytes_acked`: bytes (RFC 4898 tcpEStatsAppHCThruOctetsAcked) (Linux 4.1). */
  bytesAcked: number | undefined;
  /** `tcpi_bytes_received`: bytes (RFC 4898 tcpEStatsAppHCThruOctetsReceived) (Linux 4.1). */
  bytesReceived: number | undefined;
  /** `tcpi_segs_out`: segments sent (Linux 4.2). */
  segsOut: number | undefined;
  /** `tcpi_segs_in`: segments received (Linux 4.2). */
  segsIn: number | undefined;
  /** `tcpi_notsent_bytes`: bytes in the write queue not yet sent (Linux 4.6). */
  notsentBytes: number | undefined;
  /** `tcpi_min_rtt`: minimum RTT seen, µs (Linux 4.6). */
  minRtt: number | undefined;
  /** `tcpi_data_segs_in`: segments with data received (Linux 4.6). */
  dataSegsIn: number | undefined;
  /** `tcpi_data_segs_out`: segments with data sent (Linux 4.6). */
  dataSegsOut: number | undefined;
  /** `tcpi_delivery_rate`: bytes/s (Linux 4.9). */
  deliveryRate: number | undefined;
  /** `tcpi_busy_time`: time with data in flight, µs (Linux 4.10). */
  busyTime: number | undefined;
  /** `tcpi_rwnd_limited`: time limited by the receive window, µs (Linux 4.10). */
  rwndLimited: number | undefined;
  /** `tcpi_sndbuf_limited`: time limited by the send buffer, µs (Linux 4.10). */
  sndbufLimited: number | undefined;
  /** `tcpi_delivered`: segments delivered (Linux 4.18). */
  delivered: number | undefined;
  /** `tcpi_delivered_ce`: segments delivered with CE marks (Linux 4.18). */
  deliveredCe: number | undefined;
  /** `tcpi_bytes_sent`: bytes sent including retransmissions (Linux 4.19). */
  bytesSent: number | undefined;
  /** `tcpi_bytes_retrans`: bytes retransmitted (Linux 4.19). */
  bytesRetrans: number | undefined;
  /** `tcpi_dsack_dups`: DSACKs received (Linux 4.19). */
  dsackDups: number | undefined;
  /** `tcpi_reord_seen`: reorderings seen (Linux 4.19). */
  reordSeen: number | undefined;
  /** `tcpi_rcv_ooopack`: out-of-order packets received (Linux 5.4). */
  rcvOoopack: number | undefined;
  /** `tcpi_snd_wnd`: the peer's advertised receive window, bytes (Linux 5.4). */
  sndWnd: number | undefined;
  /** `tcpi_rcv_wnd`: our advertised receive window, bytes (Linux 6.2). */
  rcvWnd: number | undefined;
  /** `tcpi_rehash`: PLB or timeout rehash attempts (Linux 6.2). */
  rehash: number | undefined;
  /** `tcpi_total_rto`: RTO timeouts, SYN and SYN-ACK included (Linux 6.7). */
  totalRto: number | undefined;
  /** `tcpi_total_rto_recoveries`: RTO recoveries (Linux 6.7). */
  totalRtoRecoveries: number | undefined;
  /** `tcpi_total_rto_time`: time spent in RTO recoveries, ms (Linux 6.7). */
  totalRtoTime: number | undefined;
  /** `tcpi_received_ce`: CE-marked segments received (Linux 6.18). */
  receivedCe: number | undefined;
  /** `tcpi_delivered_e1_bytes`: AccECN, bytes (Linux 6.18). */
  deliveredE1Bytes: number | undefined;
  /** `tcpi_delivered_e0_bytes`: AccECN, bytes (Linux 6.18). */
  deliveredE0Bytes: number | undefined;
  /** `tcpi_delivered_ce_bytes`: AccECN, bytes (Linux 6.18). */
  deliveredCeBytes: number | undefined;
  /** `tcpi_received_e1_bytes`: AccECN, bytes (Linux 6.18). */
  receivedE1Bytes: number | undefined;
  /** `tcpi_received_e0_bytes`: AccECN, bytes (Linux 6.18). */
  receivedE0Bytes: number | undefined;
  /** `tcpi_received_ce_bytes`: AccECN, bytes (Linux 6.18). */
  receivedCeBytes: number | undefined;
  /** `tcpi_accecn_fail_mode`: AccECN failure bits (Linux 6.18: 16 bits; 7.0: 4 bits). */
  accecnFailMode: number | undefined;
  /** `tcpi_accecn_opt_seen`: AccECN option seen (Linux 6.18: 16 bits; 7.0: 2 bits). */
  accecnOptSeen: number | undefined;
  /** `tcpi_ecn_mode` (Linux 7.0): DISABLED 0, RFC3168 1, ACCECN 2, PENDING 3; `undefined` on 6.18, which lacks it. */
  ecnMode: number | undefined;
  /** `tcpi_options2` (Linux 7.0): overflow bits for new options; `undefined` on 6.18. */
  options2: number | undefined;
}

/** Room for any kernel's `struct tcp_info` (280 bytes on Linux 6.18). */
export const TCP_INFO_BUFFER_SIZE = 512;

const LE = os.endianness() === 'LE';
const U64_MAX_AS_NUMBER = 2 ** 64;

/**
 * Linux 7.0 reshaped the last 4 bytes of the 280-byte struct from two `__u16`
 * (`accecn_fail_mode`, `accecn_opt_seen`) into bitfields with `ecn_mode` and `options2`;
 * the length is the same, so the running kernel's release decides.
 */
export function tailIsBitfields(release: string): boolean {
  const major = Number.parseInt(release, 10);
  return Number.isFinite(major) && major >= 7;
}

const TAIL_BITFIELDS = process.platform === 'linux' && tailIsBitfields(os.release());

/** Thrown for a state number finwait does not know (a future kernel). */
export function unknownState(n: number): CodedError {
  return codedError('ERR_FINWAIT_UNKNOWN_STATE', `The kernel reported TCP state ${n}, which finwait does not know`);
}

/** The name of a kernel state number, or an `ERR_FINWAIT_UNKNOWN_STATE` error. */
export function stateOrThrow(n: number): TcpState {
  const name = stateName(n);
  if (name === undefined) throw unknownState(n);
  return name;
}

// Field readers, given the view and the number of bytes the kernel wrote (`n`): module-level
// functions, not closures made on every call, which took ~1/6 of tcpInfo()'s time (bench/README.md).
function u16(view: DataView, n: number, off: number): number | undefined {
  return off + 2 <= n ? view.getUint16(off, LE) : undefined;
}

function u32(view: DataView, n: number, off: number): number | undefined {
  return off + 4 <= n ? view.getUint32(off, LE) : undefined;
}

function u64(view: DataView, n: number, off: number): number | undefined {
  return off + 8 <= n ? u64At(view, off) : undefined;
}

/**
 * @internal The host-order u64 at `off` as a number, read as two u32 (no bigint): exact below
 * 2^53, the nearest double above. For the kernel's counters (tcp_info, a BPF record).
 */
export function u64At(view: DataView, off: number): number {
  return view.getUint32(off + (LE ? 4 : 0), LE) * 2 ** 32 + view.getUint32(off + (LE ? 0 : 4), LE);
}

/** A pacing rate: the kernel reports "no pacing limit" as ~0ULL. */
function rate(view: DataView, n: number, off: number): number | undefined {
  const value = u64(view, n, off);
  return value === U64_MAX_AS_NUMBER ? Infinity : value;
}

/** A base field (up to offset 104): present in every kernel's struct. */
function base(view: DataView, n: number, off: number): number {
  return off + 4 <= n ? view.getUint32(off, LE) : 0;
}

/** Decodes `length` bytes of `struct tcp_info` from `bytes`. */
export function decodeTcpInfo(bytes: Uint8Array, length: number, bitfieldTail = TAIL_BITFIELDS): TcpInfo {
  const v = new DataView(bytes.buffer, bytes.byteOffset, Math.min(length, bytes.byteLength));
  const n = v.byteLength;
  const tail = u32(v, n, 276);
  return {
    length: n,
    state: stateOrThrow(v.getUint8(0)),
    caState: v.getUint8(1),
    retransmits: v.getUint8(2),
    probes: v.getUint8(3),
    backoff: v.getUint8(4),
    options: v.getUint8(5),
    sndWscale: v.getUint8(6) & 0x0f,
    rcvWscale: v.getUint8(6) >> 4,
    deliveryRateAppLimited: (v.getUint8(7) & 0x01) !== 0,
    fastopenClientFail: (v.getUint8(7) >> 1) & 0x03,
    rto: base(v, n, 8),
    ato: base(v, n, 12),
    sndMss: base(v, n, 16),
    rcvMss: base(v, n, 20),
    unacked: base(v, n, 24),
    sacked: base(v, n, 28),
    lost: base(v, n, 32),
    retrans: base(v, n, 36),
    fackets: base(v, n, 40),
    lastDataSent: base(v, n, 44),
    lastAckSent: base(v, n, 48),
    lastDataRecv: base(v, n, 52),
    lastAckRecv: base(v, n, 56),
    pmtu: base(v, n, 60),
    rcvSsthresh: base(v, n, 64),
    rtt: base(v, n, 68),
    rttvar: base(v, n, 72),
    sndSsthresh: base(v, n, 76),
    sndCwnd: base(v, n, 80),
    advmss: base(v, n, 84),
    reordering: base(v, n, 88),
    rcvRtt: base(v, n, 92),
    rcvSpace: base(v, n, 96),
    totalRetrans: base(v, n, 100),
    pacingRate: rate(v, n, 104),
    maxPacingRate: rate(v, n, 112),
    bytesAcked: u64(v, n, 120),
    bytesReceived: u64(v, n, 128),
    segsOut: u32(v, n, 136),
    segsIn: u32(v, n, 140),
    notsentBytes: u32(v, n, 144),
    minRtt: u32(v, n, 148),
    dataSegsIn: u32(v, n, TCPI_DATA_SEGS_IN),
    dataSegsOut: u32(v, n, 156),
    deliveryRate: u64(v, n, 160),
    busyTime: u64(v, n, 168),
    rwndLimited: u64(v, n, 176),
    sndbufLimited: u64(v, n, 184),
    delivered: u32(v, n, 192),
    deliveredCe: u32(v, n, 196),
    bytesSent: u64(v, n, 200),
    bytesRetrans: u64(v, n, 208),
    dsackDups: u32(v, n, 216),
    reordSeen: u32(v, n, 220),
    rcvOoopack: u32(v, n, 224),
    sndWnd: u32(v, n, 228),
    rcvWnd: u32(v, n, 232),
    rehash: u32(v, n, 236),
    totalRto: u16(v, n, 240),
    totalRtoRecoveries: u16(v, n, 242),
    totalRtoTime: u32(v, n, 244),
    receivedCe: u32(v, n, 248),
    deliveredE1Bytes: u32(v, n, 252),
    deliveredE0Bytes: u32(v, n, 256),
    deliveredCeBytes: u32(v, n, 260),
    receivedE1Bytes: u32(v, n, 264),
    receivedE0Bytes: u32(v, n, 268),
    receivedCeBytes: u32(v, n, 272),
    accecnFailMode: bitfieldTail ? (tail === undefined ? undefined : (tail >>> 4) & 0x0f) : u16(v, n, 276),
    accecnOptSeen: bitfieldTail ? (tail === undefined ? undefined : (tail >>> 2) & 0x03) : u16(v, n, 278),
    ecnMode: bitfieldTail && tail !== undefined ? tail & 0x03 : undefined,
    options2: bitfieldTail && tail !== undefined ? tail >>> 8 : undefined,
  };
}
