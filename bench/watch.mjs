// watch() on both ends of 10,000 short connections against the same connections unwatched:
// runs in rotating order, each in a fresh process (bench/watch-child.mjs), medians compared; and
// the same connections with only the native calls watch() makes on them, the kernel's share.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { benchDir, fmt, median, verdict } from './lib.mjs';

const TARGET = 1.15;

function runChild(variant, host, { count, concurrency, warmup }) {
  const args = [path.join(benchDir, 'watch-child.mjs'), variant, host, String(count), String(concurrency), String(warmup)];
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (chunk) => (out += chunk));
  return new Promise((resolve, reject) => {
    child.on('error', reject).on('close', (status) => {
      if (status !== 0) reject(new Error(`watch-child.mjs ${variant} exited with ${status}`));
      else resolve(JSON.parse(out.trim().split('\n').pop()));
    });
  });
}

function summary(perRun) {
  const total = {};
  for (const run of perRun) for (const [reason, n] of Object.entries(run)) total[reason] = (total[reason] ?? 0) + n;
  const entries = Object.entries(total);
  return entries.length === 0 ? 'none' : entries.map(([reason, n]) => `${n} × "${reason}"`).join(', ');
}

export async function benchWatch({ count = 10_000, concurrency = 500, warmup = 1000, rounds = 3 } = {}) {
  const options = { count, concurrency, warmup };
  const variants = ['plain', 'kernel', 'watch'];
  const ms = { plain: [], kernel: [], watch: [] };
  const states = [];
  const anomalies = [];
  // The order rotates each round (plain kernel watch, kernel watch plain, ...): a slow drift of the
  // machine weighs on every variant alike. Each run has its own 127.x address, so the TIME_WAIT
  // sockets left by earlier runs take no ports from it.
  for (let i = 0; i < rounds; i++) {
    for (let j = 0; j < variants.length; j++) {
      const variant = variants[(i + j) % variants.length];
      const result = await runChild(variant, `127.0.${1 + (process.pid % 250)}.${100 + variants.length * i + j}`, options);
      ms[variant].push(result.ms);
      if (variant === 'watch') {
        states.push(result.states);
        anomalies.push(result.anomalies);
      }
    }
  }
  const plain = median(ms.plain);
  const kernel = median(ms.kernel);
  const watched = median(ms.watch);
  const ratio = watched / plain;
  const rows = [
    ['operation', 'time', 'without', 'ratio', 'target', ''],
    [`${count} connections, watch() on both ends`, fmt(watched, 'ms'), fmt(plain, 'ms'), `${ratio.toFixed(2)}x`, `<= ${TARGET}x`, verdict(ratio, TARGET)],
    [`the same, only watch()'s native calls`, fmt(kernel, 'ms'), fmt(plain, 'ms'), `${(kernel / plain).toFixed(2)}x`, '', ''],
  ];
  const list = (values) => values.map((v) => v.toFixed(0)).join(', ');
  const perEnd = (value) => `${((value * 1000) / (2 * count)).toFixed(1)} µs`;
  const notes = [
    `Each connection: connect, 5-byte request, 5-byte response, client end() (its side goes to TIME_WAIT), server ends; ${concurrency} at a time, both ends in one process; time from the first connect() to the last of the ${2 * count} 'close' events, after ${warmup} warm-up connections of the same variant (so that each is measured compiled); medians of ${rounds} runs each, in rotating order, each run a fresh process.`,
    `"Only watch()'s native calls": no watch(), but the state reads, sockDiagId calls and batched sock_diag lookups watch() makes on these connections, at the same moments (see bench/watch-child.mjs). Per watched end: watch() costs ${perEnd(watched - plain)}, of which its native calls ${perEnd(kernel - plain)}; the target leaves ${perEnd(TARGET * plain - kernel)} per end for everything else watch() does.`,
    `Runs (ms): without ${list(ms.plain)}; native calls only ${list(ms.kernel)}; with watch() ${list(ms.watch)}.`,
    `Lifecycle states at the last 'close' (first watched run): ${Object.entries(states[0]).map(([k, v]) => `${k} ${v}`).join(', ')}.`,
    `Anomalies recorded by the watchers (all watched runs): ${summary(anomalies)}.`,
  ];
  return { rows, notes };
}
