// serverMetrics() on a server's 10,000 short connections against the same server without it, per
// trace source (the destroy multicast everyone has; BPF where privileged): each run a fresh process
// (bench/metrics-child.mjs) in which batches with and without serverMetrics() alternate, the runs'
// ratios' median compared, wall time and process CPU.
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { fmt, machine, median, ownNetns, paired, pairedRuns, printResult, runJsonChild, verdict } from './lib.mjs';

const require = createRequire(import.meta.url);
const TARGETS = { bpf: 1.05, 'destroy-multicast': 1.15 };

export async function benchMetrics({ count = 10_000, concurrency = 500, warmup = 1000, rounds = 3, batch = 1000 } = {}) {
  const why = require('../dist/trace/bpf-source.js').bpfUnavailable();
  // With each source, its floor: the kernel's side and the reads, no serverMetrics() (metrics-child.mjs).
  const variants = ['destroy-multicast', 'multicast', ...(why === undefined ? ['bpf', 'bpf-stream'] : [])];
  const sources = variants.filter((v) => v in TARGETS);
  const floors = { 'destroy-multicast': 'multicast', bpf: 'bpf-stream' };
  /** Per variant, per run: its connections' wall and CPU ms, and those of the same process's connections without it. */
  const ms = Object.fromEntries(variants.map((v) => [v, []]));
  const cpu = Object.fromEntries(variants.map((v) => [v, []]));
  const plainMs = Object.fromEntries(variants.map((v) => [v, []]));
  const plainCpu = Object.fromEntries(variants.map((v) => [v, []]));
  const counts = {};
  // One process per variant and round, in which batches with and without the variant alternate;
  // the order of the variants rotates each round.
  for (let i = 0; i < rounds; i++) {
    for (let j = 0; j < variants.length; j++) {
      const variant = variants[(i + j) % variants.length];
      const result = await runJsonChild('metrics-child.mjs', [variant, `127.0.${1 + (process.pid % 250)}.${20 + variants.length * i + j}`, count, concurrency, warmup, batch]);
      ms[variant].push(result.ms);
      cpu[variant].push(result.cpuMs);
      plainMs[variant].push(result.without.ms);
      plainCpu[variant].push(result.without.cpuMs);
      if (result.counts) counts[variant] ??= result.counts;
    }
  }
  const row = (variant, name) => {
    const { ratio, difference } = paired(ms[variant], plainMs[variant]);
    const target = TARGETS[variant];
    const judged = target === undefined ? ['', ''] : [`<= ${target}x`, verdict(ratio, target)];
    return [name, fmt(median(ms[variant]), 'ms'), fmt(median(plainMs[variant]), 'ms'), `${ratio.toFixed(2)}x`, `${paired(cpu[variant], plainCpu[variant]).ratio.toFixed(2)}x`, `${((difference * 1000) / count).toFixed(1)} µs`, ...judged];
  };
  const floorNames = {
    multicast: 'floor: the destroy groups joined and read, no serverMetrics()',
    'bpf-stream': "floor: the BPF program with serverMetrics()' filters, its records read",
  };
  const rows = [
    ['operation', 'time', 'without', 'ratio', 'CPU ratio', 'per connection', 'target', ''],
    ...sources.flatMap((v) => [row(v, `${count} connections, serverMetrics(), ${v}`), row(floors[v], floorNames[floors[v]])]),
  ];
  const shown = (o) => Object.entries(o).filter(([, n]) => n !== 0).map(([k, n]) => `${k} ${n}`).join(', ');
  const notes = [
    `Each connection: connect, 5-byte request, 5-byte response and the server's end(), the client's end (the server's side goes to TIME_WAIT); ${concurrency} at a time, server and clients in one process${ownNetns ? ', each run in a network namespace of its own' : ''}. Each run is a fresh process that makes ${count} connections with the variant and ${count} without, in batches of ${batch} that alternate (after ${warmup} warm-up connections of each), serverMetrics() (or the floor) set up before each of its batches and closed after; "time" and "without" are the two totals, from each batch's first connect() to its last 'close' and the ends then waiting read, medians over ${rounds} runs; a ratio is the median of the runs' ratios, "per connection" the median of their differences over the ${count} connections. "CPU ratio": the process's user + system CPU, until every end of the batch was counted.`,
    ...sources.map((v) => `${v}: what was counted (first run, the warm-up's included, each batch's ends once all came) ${shown(counts[v])}.`),
    `The floors decode nothing they read: the rest of each source's row is serverMetrics()' JavaScript (the cookie read at accept included).`,
    ...(why !== undefined ? [`bpf: not run here: ${why}`] : []),
    pairedRuns(variants, ms, plainMs),
  ];
  return { rows, notes };
}

// `node bench/metrics.mjs [rounds]` runs this benchmark alone (after `npm run build`).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(`finwait benchmarks — ${machine()}\n`);
  const { rows, notes } = await benchMetrics({ rounds: Number(process.argv[2] ?? 3) });
  printResult({ rows, notes });
}
