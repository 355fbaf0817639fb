// tcpState, tcpInfo and the batch state read, against the C baseline on the same sockets.
import { baselineBinary, fmt, openConnections, runBaseline, timeNs } from './lib.mjs';

export async function benchLowLevel(finwait, { connections = 10_000 } = {}) {
  const binary = baselineBinary();
  const conns = await openConnections(connections);
  try {
    const socket = conns.sockets[0];
    const fd = conns.fds[0];
    const calls = 200_000;
    const sweeps = 30;
    const rows = [];
    const add = (op, ours, base, unit, target) =>
      rows.push({ op, ours, base, ratio: ours / base, unit, target });

    const cState = runBaseline(binary, ['state', String(calls)], [fd]);
    add('tcpState(socket)', timeNs(() => finwait.tcpState(socket), calls), cState, 'ns/call', 1.5);
    add('tcpState(fd)', timeNs(() => finwait.tcpState(fd), calls), cState, 'ns/call', 1.5);
    const cInfo = runBaseline(binary, ['info', String(calls)], [fd]);
    add('tcpInfo(socket), full decode', timeNs(() => finwait.tcpInfo(socket), calls), cInfo, 'ns/call', 3);
    add('tcpInfo(fd), full decode', timeNs(() => finwait.tcpInfo(fd), calls), cInfo, 'ns/call', 3);
    const cBatch = runBaseline(binary, ['batch', String(sweeps), String(connections)], Array.from(conns.fds), 5);
    const ours = timeNs(() => finwait.tcpStates(conns.fds), sweeps, 5);
    add(`tcpStates(${connections} fds)`, ours / 1000, cBatch / 1000, 'µs/sweep', 1.2);
    return rows.map((r) => [r.op, fmt(r.ours, r.unit), fmt(r.base, r.unit), `${r.ratio.toFixed(2)}x`, `<= ${r.target}x`, r.ratio <= r.target ? 'met' : 'MISSED']);
  } finally {
    await conns.close();
  }
}
