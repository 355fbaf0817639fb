/**
 * finwait: see and control how TCP connections end, on real kernel sockets.
 * @packageDocumentation
 * @module finwait
 */
export { TCP_STATES, isTcpState, type TcpState } from './states';
export type { ErrnoError, CodedError } from './errors';
export { capabilities, type Capabilities } from './capabilities';
export type { SocketLike } from './fd';
export type { TcpInfo } from './tcp-info';
export {
  tcpInfo,
  tcpState,
  tcpStates,
  queues,
  shutdown,
  getLinger,
  setLinger,
  reset,
  type Queues,
  type ShutdownHow,
} from './ops';
export { closeWrite, type CloseWriteOptions } from './close-write';
export {
  sockets,
  findSocket,
  type SocketEntry,
  type SocketFilter,
  type SocketTuple,
  type SocketAddress,
  type SocketTimer,
  type TimerKind,
} from './diag';
export { gracefulClose, type GracefulCloseOptions, type CloseReport, type CloseReason } from './close';
export {
  closeServer,
  trackConnections,
  type CloseServerOptions,
  type ServerCloseReport,
  type ConnectionReport,
  type ConnectionProtocol,
} from './server';
export { shutdownSignal, type ShutdownTarget } from './shutdown-signal';
export type { StreamCounts } from './http2';
export {
  gracefulShutdown,
  type GracefulShutdown,
  type GracefulShutdownOptions,
  type ShutdownPhase,
  type ShutdownReport,
} from './shutdown';
export {
  listenReusePort,
  tcpMigrateReq,
  type ListenReusePortOptions,
  type HandoffState,
} from './handoff';
export { openStateChanges, stateChangesUnavailable, type StateChange, type StateChangeOptions, type StateChangeStream } from './bpf';
export {
  watch,
  Lifecycle,
  STATE_CHANNEL,
  type Transition,
  type WatchResult,
  type UntilOptions,
  type WatchBackend,
  type WatchBackendName,
} from './lifecycle/watch';
export { traceConnections, type TraceOptions, type ConnectionTrace } from './trace/trace';
export type { ConnectionEnd, TraceOutcome, ClosedFirst, EndCounters, TraceSourceName } from './trace/ends';
export {
  serverMetrics,
  END_CHANNEL,
  type ServerMetrics,
  type ServerMetricsOptions,
  type OutcomeCounts,
  type ConnectionEndMessage,
} from './metrics';
export type {
  LifecycleState,
  CloseEvent,
  CloseOutcome,
  CloseRole,
  HistoryEntry,
  Anomaly,
  Source,
} from './lifecycle/fsm';
export {
  getUserTimeout,
  setUserTimeout,
  getLinger2,
  setLinger2,
  getKeepAlive,
  setKeepAlive,
  getKeepIdle,
  setKeepIdle,
  getKeepIntvl,
  setKeepIntvl,
  getKeepCnt,
  setKeepCnt,
} from './options';
