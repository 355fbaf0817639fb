// watch() on both ends of 10,000 short connections against the same connections unwatched:
// alternating runs, each in a fresh process (bench/watch-child.mjs), medians compared.
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

export async function benchWatch({ count = 10_000, concurrency = 500, warmup = 1000, pairs = 3 } = {}) {
  const options = { count, concurrency, warmup };
  const ms = { plain: [], watch: [] };
  const states = [];
  const anomalies = [];
  // A B B A A B ...: a slow drift of the machine weighs on both variants alike. Each run has its
  // own 127.x address, so the TIME_WAIT sockets left by earlier runs take no ports from it.
  for (let i = 0; i < pairs; i++) {
    const order = i % 2 === 0 ? ['plain', 'watch'] : ['watch', 'plain'];
    for (const [j, variant] of order.entries()) {
      const result = await runChild(variant, `127.0.${1 + (process.pid % 250)}.${100 + 2 * i + j}`, options);
      ms[variant].push(result.ms);
      if (variant === 'watch') {
        states.push(result.states);
        anomalies.push(result.anomalies);
      }
    }
  }
  const plain = median(ms.plain);
  const watched = median(ms.watch);
  const ratio = watched / plain;
  const rows = [
    ['operation', 'with watch()', 'without', 'ratio', 'target', ''],
    [`${count} connections, watch() on both ends`, fmt(watched, 'ms'), fmt(plain, 'ms'), `${ratio.toFixed(2)}x`, `<= ${TARGET}x`, verdict(ratio, TARGET)],
  ];
  const list = (values) => values.map((v) => v.toFixed(0)).join(', ');
  const notes = [
    `Each connection: connect, 5-byte request, 5-byte response, client end() (its side goes to TIME_WAIT), server ends; ${concurrency} at a time, both ends in one process; time from the first connect() to the last of the ${2 * count} 'close' events, after ${warmup} warm-up connections of the same variant (so that both are measured compiled); medians of ${pairs} runs each, alternating, each run a fresh process.`,
    `Runs (ms): without ${list(ms.plain)}; with watch() ${list(ms.watch)}.`,
    `Lifecycle states at the last 'close' (first watched run): ${Object.entries(states[0]).map(([k, v]) => `${k} ${v}`).join(', ')}.`,
    `Anomalies recorded by the watchers (all watched runs): ${summary(anomalies)}.`,
  ];
  return { rows, notes };
}
