// watch() on both ends of 10,000 short connections against the same connections unwatched, on
// each back-end (the BPF stream, the destroy multicast, polling): each run a fresh process
// (bench/watch-child.mjs) in which batches with and without watch() alternate, the runs' ratios'
// median compared; and four floors measured the same way: the destroy
// multicast's listener alone (joined, every message read, no watch()), the BPF program on every
// state change with every record read (no watch()), the native calls the polling watch() makes on
// them (the kernel's share of polling), and the lifecycle model alone (no kernel call).
import { pathToFileURL } from 'node:url';
import { fmt, machine, median, ownNetns, paired, pairedRuns, printResult, runJsonChild, verdict } from './lib.mjs';

/** The targets, per back-end; polling is kept as a row without one. */
const TARGETS = { bpf: 1.1, 'destroy-multicast': 1.25 };
/** The variants that watch(), each on its back-end. */
const WATCHED = ['bpf', 'destroy-multicast', 'poll'];

function summary(perRun) {
  const total = {};
  for (const run of perRun) for (const [reason, n] of Object.entries(run)) total[reason] = (total[reason] ?? 0) + n;
  const entries = Object.entries(total);
  return entries.length === 0 ? 'none' : entries.map(([reason, n]) => `${n} × "${reason}"`).join(', ');
}

export async function benchWatch({ count = 10_000, concurrency = 500, warmup = 1000, rounds = 3, orphans = false, batch = 1000 } = {}) {
  const variants = ['bpf', 'destroy-multicast', 'poll', 'multicast', 'bpf-stream', 'kernel', 'model'];
  /** Per variant, per run: its connections' wall and CPU ms, and those of the same process's connections without it. */
  const ms = Object.fromEntries(variants.map((v) => [v, []]));
  const cpu = Object.fromEntries(variants.map((v) => [v, []]));
  const plainMs = Object.fromEntries(variants.map((v) => [v, []]));
  const plainCpu = Object.fromEntries(variants.map((v) => [v, []]));
  const states = {};
  const anomalies = {};
  const backends = {};
  const events = {};
  /** Why a floor could not run here (the BPF one without the privilege). */
  const unavailable = {};
  // One process per variant and round, in which batches with and without the variant alternate;
  // the order of the variants rotates each round. Each run has its own 127.x address, so the
  // TIME_WAIT sockets left by earlier runs take no ports from it.
  for (let i = 0; i < rounds; i++) {
    for (let j = 0; j < variants.length; j++) {
      const variant = variants[(i + j) % variants.length];
      const result = await runJsonChild('watch-child.mjs', [variant, `127.0.${1 + (process.pid % 250)}.${100 + variants.length * i + j}`, count, concurrency, warmup, orphans ? 'orphans' : 'plain', batch]);
      if (result.unavailable !== undefined) {
        unavailable[variant] = result.unavailable;
        continue;
      }
      ms[variant].push(result.ms);
      cpu[variant].push(result.cpu);
      plainMs[variant].push(result.without.ms);
      plainCpu[variant].push(result.without.cpu);
      if (result.events) events[variant] ??= result.events;
      if (WATCHED.includes(variant)) {
        states[variant] ??= result.states;
        (anomalies[variant] ??= []).push(result.anomalies);
        backends[variant] ??= result.backends;
      }
    }
  }
  const ran = variants.filter((v) => unavailable[v] === undefined);
  const perEnd = (v) => `${((paired(ms[v], plainMs[v]).difference * 1000) / (2 * count)).toFixed(1)} µs`;
  const row = (label, variant, target) => {
    if (unavailable[variant] !== undefined) return [label, `unavailable: ${unavailable[variant]}`, '', '', '', '', '', ''];
    const r = paired(ms[variant], plainMs[variant]).ratio;
    const cpuRatio = paired(cpu[variant], plainCpu[variant]).ratio;
    return [label, fmt(median(ms[variant]), 'ms'), fmt(median(plainMs[variant]), 'ms'), `${r.toFixed(2)}x`, `${cpuRatio.toFixed(2)}x`, perEnd(variant), target ? `<= ${target}x` : '', target ? verdict(r, target) : ''];
  };
  const rows = [
    ['operation', 'time', 'without', 'ratio', 'CPU ratio', 'per watched end', 'target', ''],
    row(`${count} connections, watch() on both ends, BPF stream`, 'bpf', TARGETS.bpf),
    row('the same, destroy multicast', 'destroy-multicast', TARGETS['destroy-multicast']),
    row('the same, polling', 'poll'),
    row('only the destroy multicast, joined and read (no watch())', 'multicast'),
    row('only the BPF program on every change, read (no watch())', 'bpf-stream'),
    row("only the polling watch()'s native calls (no watch())", 'kernel'),
    row('only the lifecycle model, fed at Node events (no kernel call)', 'model'),
  ];
  const shown = (counts) => Object.entries(counts).map(([k, v]) => `${k} ${v}`).join(', ');
  const notes = [
    `Each connection: connect, 5-byte request, 5-byte response, client end()${orphans ? ' and at once destroy() (its fd closed: the client side lives on as an orphan, FIN_WAIT1 then FIN_WAIT2, which the back-end follows to TIME_WAIT)' : ' (its side goes to TIME_WAIT)'}, server ends; ${concurrency} at a time, both ends in one process${ownNetns ? ', each run in a network namespace of its own' : ''}. Each run is a fresh process that makes ${count} connections with the variant and ${count} without, in batches of ${batch} that alternate (after ${warmup} warm-up connections of each, so that both are measured compiled); "time" and "without" are the two totals, from each batch's first connect() to its last 'close', medians over ${rounds} runs; a ratio is the median of the runs' ratios, "per watched end" the median of their differences over the ${2 * count} ends. Bursts of other load on a shared machine, shorter than a run, can move separate runs of each side by a half: within a run both sides meet them.`,
    `"Only the destroy multicast": no watch(), but the destroy group joined for the whole run and every message read and dropped, as the destroy-multicast back-end's listener does. "Only the polling watch()'s native calls": no watch(), but the state reads, sockDiagId calls and batched sock_diag lookups the polling watch() makes on these connections, at the same moments (see bench/watch-child.mjs). "Only the BPF program": no watch(), but the program every back-end's BPF stream loads, on every TCP state change for the whole run, unfiltered, every record read and dropped${events['bpf-stream'] ? ` (${events['bpf-stream'].read} records in the first run, warm-up included)` : ''}: the kernel's share of a back-end that would take every transition from the ring. "Only the lifecycle model": no watch() and no kernel call, but a Lifecycle per end fed each state at the Node event that shows it (4 states per end): what any back-end pays for the model, the history and the transitions. The BPF rows need root (or CAP_BPF + CAP_PERFMON); without it, the back-ends line below says what followed the connections instead.`,
    pairedRuns(ran, ms, plainMs),
    ...WATCHED.map((v) => `${v}: back-ends that followed the connections ${shown(backends[v])};${events[v] ? ` records read ${events[v].read}, of which ended a watched socket ${events[v].matched} (first run, warm-up included);` : ''} lifecycle states at the last 'close' (first run) ${shown(states[v])}; anomalies (all runs) ${summary(anomalies[v])}.`),
  ];
  return { rows, notes };
}

// `node bench/watch.mjs [rounds] [--orphans]` runs this benchmark alone (after `npm run build`);
// --orphans: each client closes its fd right after end(), leaving an orphan for the back-end.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(`finwait benchmarks — ${machine()}\n`);
  const args = process.argv.slice(2);
  const rounds = Number(args.find((a) => /^\d+$/.test(a)) ?? 3);
  const { rows, notes } = await benchWatch({ rounds, orphans: args.includes('--orphans') });
  printResult({ rows, notes });
}
