// tcpState, tcpInfo and the batch state read, against the C baseline on the same sockets.
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { baselineBinary, fmt, machine, openConnections, printResult, runBaseline, timeNs, verdict } from './lib.mjs';

/**
 * The fastest of `rounds` rounds of the C baseline and of finwait, alternating one round of each:
 * a tight loop's time only grows with other load on the machine, and on a shared VM that load
 * comes in bursts shorter than a round, which moved medians by up to half.
 */
function alternate(rounds, c, ours) {
  ours(); // warm-up: compiles finwait's path before the first timed round
  const cs = [];
  const oursNs = [];
  for (let r = 0; r < rounds; r++) {
    cs.push(c());
    oursNs.push(ours());
  }
  return { ours: Math.min(...oursNs), base: Math.min(...cs) };
}

export async function benchLowLevel(finwait, { connections = 10_000, rounds = 15 } = {}) {
  const binary = baselineBinary();
  const conns = await openConnections(connections);
  try {
    const socket = conns.sockets[0];
    const fd = conns.fds[0];
    const calls = 100_000;
    const sweeps = 30;
    const rows = [];
    const add = (op, { ours, base }, unit, target) => rows.push({ op, ours, base, ratio: ours / base, unit, target });
    const c = (args, fds) => () => runBaseline(binary, args, fds, 1);
    const js = (fn, iterations) => () => timeNs(fn, iterations, 1);

    const cState = c(['state', String(calls)], [fd]);
    add('tcpState(socket)', alternate(rounds, cState, js(() => finwait.tcpState(socket), calls)), 'ns/call', 1.5);
    add('tcpState(fd)', alternate(rounds, cState, js(() => finwait.tcpState(fd), calls)), 'ns/call', 1.5);
    const cInfo = c(['info', String(calls)], [fd]);
    add('tcpInfo(socket), full decode', alternate(rounds, cInfo, js(() => finwait.tcpInfo(socket), calls)), 'ns/call', 3);
    add('tcpInfo(fd), full decode', alternate(rounds, cInfo, js(() => finwait.tcpInfo(fd), calls)), 'ns/call', 3);
    const cBatch = c(['batch', String(sweeps), String(connections)], Array.from(conns.fds));
    const batch = alternate(7, cBatch, js(() => finwait.tcpStates(conns.fds), sweeps));
    add(`tcpStates(${connections} fds)`, { ours: batch.ours / 1000, base: batch.base / 1000 }, 'µs/sweep', 1.2);
    return [
      ['operation', 'finwait', 'C baseline', 'ratio', 'target', ''],
      ...rows.map((r) => [r.op, fmt(r.ours, r.unit), fmt(r.base, r.unit), `${r.ratio.toFixed(2)}x`, `<= ${r.target}x`, verdict(r.ratio, r.target)]),
    ];
  } finally {
    await conns.close();
  }
}

// `node bench/low-level.mjs` runs this benchmark alone (after `npm run build`).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(`finwait benchmarks — ${machine()}\n`);
  printResult({ rows: await benchLowLevel(createRequire(import.meta.url)('../dist/index.js')) });
}
