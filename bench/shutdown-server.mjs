// The server process of the shutdown benchmark: one http.Server (bench/shutdown-app.mjs) shut
// down by one strategy when the parent says so. It reads the kernel's TCP counters of its network
// namespace at the trigger, at the deadline and at the end, and reports the app's log.
// At the trigger it also reads the kernel's smoothed RTT of every open connection (tcp_info).
// Messages from the parent: { variant, host, port, deadline, keepAliveTimeout? } -> { type: 'listening', port };
// { type: 'shutdown' } -> { type: 'shutdown-done', ... }; { type: 'final' } -> { type: 'final', ... }.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import { createApp, strategies, whenAllClosed } from './shutdown-app.mjs';

const require = createRequire(import.meta.url);
let deps;
/** finwait from ../dist (or `config.finwaitModule`, e.g. a build to compare), and the two libraries. */
function load(config) {
  deps ??= {
    finwait: require(config.finwaitModule ?? '../dist/index.js'),
    createHttpTerminator: require('http-terminator').createHttpTerminator,
    stoppable: require('stoppable'),
  };
  return deps;
}

const COUNTERS = {
  Tcp: ['OutRsts', 'EstabResets', 'ActiveOpens', 'PassiveOpens'],
  TcpExt: ['TCPAbortOnData', 'TCPAbortOnClose', 'TCPAbortOnLinger', 'TCPAbortOnTimeout', 'ListenOverflows', 'ListenDrops'],
};

/** The namespace's TCP counters (both ends when clients share the namespace): /proc/net/snmp and netstat. */
export function tcpCounters() {
  const out = {};
  for (const file of ['/proc/net/snmp', '/proc/net/netstat']) {
    const lines = readFileSync(file, 'utf8').split('\n');
    for (let i = 0; i + 1 < lines.length; i += 1) {
      const [prefix, ...names] = lines[i].split(/\s+/);
      const group = prefix.replace(/:$/, '');
      if (!COUNTERS[group] || !lines[i + 1].startsWith(prefix)) continue;
      const values = lines[i + 1].split(/\s+/).slice(1);
      for (const name of COUNTERS[group]) {
        const at = names.indexOf(name);
        if (at >= 0) out[name] = Number(values[at]);
      }
      i += 1;
    }
  }
  return out;
}

/** The kernel's smoothed RTT (tcpi_rtt, µs) of the open connections: { n, min, median, max } or undefined. */
function smoothedRtts(sockets) {
  const rtts = [];
  for (const socket of sockets) {
    try {
      rtts.push(deps.finwait.tcpInfo(socket).rtt);
    } catch {
      // closed meanwhile
    }
  }
  if (!rtts.length) return undefined;
  rtts.sort((x, y) => x - y);
  return { n: rtts.length, min: rtts[0], median: rtts[rtts.length >> 1], max: rtts[rtts.length - 1] };
}

function summarize(report) {
  if (!report || typeof report !== 'object' || !report.totals) return undefined;
  const reasons = {};
  for (const c of report.connections) reasons[`${c.outcome}/${c.reason}`] = (reasons[`${c.outcome}/${c.reason}`] ?? 0) + 1;
  const errors = {};
  for (const c of report.connections) if (c.error) errors[c.error.code ?? c.error.message] = (errors[c.error.code ?? c.error.message] ?? 0) + 1;
  // The connections that did not end gracefully, in full (without the Error objects).
  const notGraceful = report.connections
    .filter((c) => c.outcome !== 'graceful')
    .map(({ error, ...c }) => ({ ...c, error: error?.code ?? error?.message }));
  return { totals: report.totals, duration: report.duration, acceptedFromQueue: report.acceptedFromQueue, untracked: report.untracked, reasons, errors, notGraceful };
}

process.once('message', (config) => {
  const { variant, host, port, deadline, slowMs, keepAliveTimeout, holdUntilDeadline = true } = config;
  const { server, log, connections } = createApp({ slowMs, keepAliveTimeout });
  const strategy = strategies(load(config))[variant];
  if (!strategy) throw new Error(`unknown variant ${variant}`);
  strategy.setup(server, deadline);
  const errors = {};
  server.on('clientError', (error, socket) => {
    errors[error.code ?? 'clientError'] = (errors[error.code ?? 'clientError'] ?? 0) + 1;
    socket.destroy();
  });
  server.listen({ host, port, backlog: 4096 }, () => process.send({ type: 'listening', port: server.address().port }));

  const counters = {};
  process.on('message', async (message) => {
    if (message.type === 'shutdown') {
      const acceptedBefore = connections.accepted;
      const openAtTrigger = connections.open.size;
      counters.trigger = tcpCounters();
      const rttAtTrigger = smoothedRtts(connections.open);
      const cpuAtTrigger = process.cpuUsage();
      const started = performance.now();
      const triggerWall = performance.timeOrigin + started;
      // Created before the strategy's own deadline timer, so it runs first at the same instant.
      let deadlineTimer;
      const atDeadline = new Promise((resolve) => {
        deadlineTimer = setTimeout(() => {
          counters.deadline = tcpCounters();
          resolve();
        }, deadline);
      });
      let apiDoneAt;
      let report;
      let apiError;
      const api = Promise.resolve()
        .then(() => strategy.shutdown(server, deadline))
        .then(
          (r) => {
            report = r;
            apiDoneAt = performance.now();
          },
          (e) => {
            apiError = String(e?.stack ?? e);
            apiDoneAt = performance.now();
          },
        );
      // Bounded: a strategy that never finishes is reported as such.
      const limit = new Promise((resolve) => setTimeout(resolve, deadline + 10_000).unref());
      const closedAt = await Promise.race([whenAllClosed(server, connections), limit]);
      const cpu = process.cpuUsage(cpuAtTrigger);
      await Promise.race([api, limit]);
      // RSTs before the deadline are counted at the deadline, however early the close ended
      // (unless told not to wait: then at the end of the close).
      if (holdUntilDeadline) await atDeadline;
      else if (!counters.deadline) {
        clearTimeout(deadlineTimer);
        counters.deadline = tcpCounters();
      }
      process.send({
        type: 'shutdown-done',
        triggerWall,
        apiMs: apiDoneAt === undefined ? null : apiDoneAt - started,
        closedMs: typeof closedAt === 'number' ? closedAt - started : null,
        cpuMs: (cpu.user + cpu.system) / 1000, // the server process's CPU time from the trigger until all closed
        stillOpen: connections.open.size,
        openAtTrigger,
        rttAtTrigger,
        acceptedAfterTrigger: connections.accepted - acceptedBefore,
        report: summarize(report),
        apiError,
      });
    } else if (message.type === 'final') {
      counters.final = tcpCounters();
      process.send({ type: 'final', log, counters, accepted: connections.accepted, clientErrors: errors }, () => process.exit(0));
    }
  });
});
process.on('disconnect', () => process.exit(0));
