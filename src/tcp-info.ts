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

/**
 * The struct's fields as host-order words: a `Uint32Array` and a `Uint16Array` over the bytes
 * (tcp_info is in the host's byte order, and every field is aligned to its size). Made once for
 * the buffer `tcpInfo()` reuses; bytes at an offset not a multiple of 4 are copied first.
 */
interface Words {
  bytes: Uint8Array;
  w32: Uint32Array;
  w16: Uint16Array;
}

let lastWords: Words | undefined;

function wordsOf(bytes: Uint8Array): Words {
  // Views of the same bytes see what was written to them since.
  if (lastWords?.bytes === bytes) return lastWords;
  let aligned = bytes;
  if ((bytes.byteOffset & 3) !== 0) aligned = new Uint8Array(bytes);
  const words: Words = {
    bytes: aligned,
    w32: new Uint32Array(aligned.buffer, aligned.byteOffset, aligned.byteLength >> 2),
    w16: new Uint16Array(aligned.buffer, aligned.byteOffset, aligned.byteLength >> 1),
  };
  // A copy is a snapshot of this call's bytes: not kept for the next call.
  if (aligned === bytes) lastWords = words;
  return words;
}

/** The u64's low and high words' places: its first word is the low one on a little-endian host. */
const LOW = LE ? 0 : 1;
const HIGH = 1 - LOW;

function u64(w: Uint32Array, n: number, off: number): number | undefined {
  return off + 8 <= n ? w[(off >> 2) + HIGH]! * 2 ** 32 + w[(off >> 2) + LOW]! : undefined;
}

/**
 * @internal The host-order u64 at `off` as a number, read as two u32 (no bigint): exact below
 * 2^53, the nearest double above. For the kernel's counters in a BPF record and a sock_diag message.
 */
export function u64At(view: DataView, off: number): number {
  return view.getUint32(off + (LE ? 4 : 0), LE) * 2 ** 32 + view.getUint32(off + (LE ? 0 : 4), LE);
}

/** A pacing rate: the kernel reports "no pacing limit" as ~0ULL. */
function rate(w: Uint32Array, n: number, off: number): number | undefined {
  const value = u64(w, n, off);
  return value === U64_MAX_AS_NUMBER ? Infinity : value;
}

/** The length of the fields every kernel's struct has (Linux 2.6 to 3.14 stop there). */
const BASE_LENGTH = 104;

/** The base fields' words of a struct shorter than they are: those past its end 0. */
function baseWords(w: Uint32Array, n: number): Uint32Array {
  const out = new Uint32Array(BASE_LENGTH >> 2);
  for (let i = 0; (i + 1) * 4 <= n; i++) out[i] = w[i]!;
  return out;
}

/** Decodes `length` bytes of `struct tcp_info` from `bytes`. */
export function decodeTcpInfo(bytes: Uint8Array, length: number, bitfieldTail = TAIL_BITFIELDS): TcpInfo {
  const v = wordsOf(bytes);
  const n = Math.min(length, bytes.byteLength);
  // Each field read in place, not through a helper per field: a call each was more than half of
  // the decoding's time, as V8 stops inlining after a few dozen calls in one function.
  const b = v.bytes;
  const w = v.w32;
  const h = v.w16;
  // The fields every kernel has: read from words of their own where the struct is shorter (0 past its end).
  const bw = n >= BASE_LENGTH ? w : baseWords(w, n);
  const tail = n >= 280 ? w[276 >> 2] : undefined;
  return {
    length: n,
    state: stateOrThrow(b[0]!),
    caState: b[1]!,
    retransmits: b[2]!,
    probes: b[3]!,
    backoff: b[4]!,
    options: b[5]!,
    sndWscale: b[6]! & 0x0f,
    rcvWscale: b[6]! >> 4,
    deliveryRateAppLimited: (b[7]! & 0x01) !== 0,
    fastopenClientFail: (b[7]! >> 1) & 0x03,
    rto: bw[8 >> 2]!,
    ato: bw[12 >> 2]!,
    sndMss: bw[16 >> 2]!,
    rcvMss: bw[20 >> 2]!,
    unacked: bw[24 >> 2]!,
    sacked: bw[28 >> 2]!,
    lost: bw[32 >> 2]!,
    retrans: bw[36 >> 2]!,
    fackets: bw[40 >> 2]!,
    lastDataSent: bw[44 >> 2]!,
    lastAckSent: bw[48 >> 2]!,
    lastDataRecv: bw[52 >> 2]!,
    lastAckRecv: bw[56 >> 2]!,
    pmtu: bw[60 >> 2]!,
    rcvSsthresh: bw[64 >> 2]!,
    rtt: bw[68 >> 2]!,
    rttvar: bw[72 >> 2]!,
    sndSsthresh: bw[76 >> 2]!,
    sndCwnd: bw[80 >> 2]!,
    advmss: bw[84 >> 2]!,
    reordering: bw[88 >> 2]!,
    rcvRtt: bw[92 >> 2]!,
    rcvSpace: bw[96 >> 2]!,
    totalRetrans: bw[100 >> 2]!,
    pacingRate: rate(w, n, 104),
    maxPacingRate: rate(w, n, 112),
    bytesAcked: u64(w, n, 120),
    bytesReceived: u64(w, n, 128),
    segsOut: n >= 140 ? w[136 >> 2] : undefined,
    segsIn: n >= 144 ? w[140 >> 2] : undefined,
    notsentBytes: n >= 148 ? w[144 >> 2] : undefined,
    minRtt: n >= 152 ? w[148 >> 2] : undefined,
    dataSegsIn: n >= TCPI_DATA_SEGS_IN + 4 ? w[TCPI_DATA_SEGS_IN >> 2] : undefined,
    dataSegsOut: n >= 160 ? w[156 >> 2] : undefined,
    deliveryRate: u64(w, n, 160),
    busyTime: u64(w, n, 168),
    rwndLimited: u64(w, n, 176),
    sndbufLimited: u64(w, n, 184),
    delivered: n >= 196 ? w[192 >> 2] : undefined,
    deliveredCe: n >= 200 ? w[196 >> 2] : undefined,
    bytesSent: u64(w, n, 200),
    bytesRetrans: u64(w, n, 208),
    dsackDups: n >= 220 ? w[216 >> 2] : undefined,
    reordSeen: n >= 224 ? w[220 >> 2] : undefined,
    rcvOoopack: n >= 228 ? w[224 >> 2] : undefined,
    sndWnd: n >= 232 ? w[228 >> 2] : undefined,
    rcvWnd: n >= 236 ? w[232 >> 2] : undefined,
    rehash: n >= 240 ? w[236 >> 2] : undefined,
    totalRto: n >= 242 ? h[240 >> 1] : undefined,
    totalRtoRecoveries: n >= 244 ? h[242 >> 1] : undefined,
    totalRtoTime: n >= 248 ? w[244 >> 2] : undefined,
    receivedCe: n >= 252 ? w[248 >> 2] : undefined,
    deliveredE1Bytes: n >= 256 ? w[252 >> 2] : undefined,
    deliveredE0Bytes: n >= 260 ? w[256 >> 2] : undefined,
    deliveredCeBytes: n >= 264 ? w[260 >> 2] : undefined,
    receivedE1Bytes: n >= 268 ? w[264 >> 2] : undefined,
    receivedE0Bytes: n >= 272 ? w[268 >> 2] : undefined,
    receivedCeBytes: n >= 276 ? w[272 >> 2] : undefined,
    accecnFailMode: bitfieldTail ? (tail === undefined ? undefined : (tail >>> 4) & 0x0f) : n >= 278 ? h[276 >> 1] : undefined,
    accecnOptSeen: bitfieldTail ? (tail === undefined ? undefined : (tail >>> 2) & 0x03) : n >= 280 ? h[278 >> 1] : undefined,
    ecnMode: bitfieldTail && tail !== undefined ? tail & 0x03 : undefined,
    options2: bitfieldTail && tail !== undefined ? tail >>> 8 : undefined,
  };
}
