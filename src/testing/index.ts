/**
 * `finwait/testing`: connected loopback pairs, waiters on kernel states, and the lab (two
 * network namespaces joined by a programmable wire) for tests on real kernel sockets.
 * @packageDocumentation
 * @module finwait/testing
 */
export { connectPair, type PairOptions, type SocketPair } from './pair';
export { waitForState, waitUntil, type WaitOptions, type WaitTimeoutError } from './waiters';
export { createLab, labAvailable, WIRE_DEVICE, type Lab, type LabOptions, type LabAvailability } from './lab';
export { Host, type LabListenOptions, type LabConnectOptions, type LabBufferOptions, type LabWaitOptions, type LabSocket, type LabSocketFilter } from './host';
export { fdOf } from './fd';
export { Wire, type Side, type Verdict, type WireSegment, type LogEntry, type SegmentPredicate, type ReleaseOptions, type InjectOptions } from './wire';
export { parseSegment, formatSegment, isPureAck, buildSegment, type Segment, type Endpoint, type TcpFlag } from './segment';
