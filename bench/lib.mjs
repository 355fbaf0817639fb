// Shared pieces of the benchmarks: timing, the C baseline, loopback connections held by a peer.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const benchDir = path.dirname(fileURLToPath(import.meta.url));

export function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/** ns per operation of `fn` run `iterations` times, the median of `rounds` rounds. */
export function timeNs(fn, iterations, rounds = 7) {
  const results = [];
  for (let r = 0; r < rounds; r++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < iterations; i++) fn();
    results.push(Number(process.hrtime.bigint() - start) / iterations);
  }
  return median(results);
}

/** Compiles bench/baseline.c once (cc -O2) and returns its path. */
export function baselineBinary() {
  const out = path.join(benchDir, 'bin', 'baseline');
  mkdirSync(path.dirname(out), { recursive: true });
  execFileSync('cc', ['-O2', '-Wall', '-o', out, path.join(benchDir, 'baseline.c')]);
  return out;
}

/** Runs the baseline with `fds` inherited as 3, 4, ...; the median ns it reports over `rounds`. */
export function runBaseline(binary, args, fds, rounds = 7) {
  const results = [];
  for (let r = 0; r < rounds; r++) {
    const child = spawnSync(binary, args, { stdio: ['ignore', 'pipe', 'inherit', ...fds], encoding: 'utf8' });
    if (child.status !== 0) throw new Error(`baseline ${args.join(' ')} failed: ${child.status}`);
    results.push(Number(child.stdout.trim()));
  }
  return median(results);
}

/**
 * `count` loopback connections whose server ends live in a child process (so the fd limit holds
 * for both ends); returns the client sockets and a function that closes everything.
 */
export async function openConnections(count) {
  const peer = spawn(process.execPath, [path.join(benchDir, 'peer.mjs')], { stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
  const [{ port }] = await once(peer, 'message');
  const sockets = [];
  for (let i = 0; i < count; i += 500) {
    const batch = [];
    for (let j = i; j < Math.min(count, i + 500); j++) {
      const socket = net.connect({ port, host: '127.0.0.1' });
      batch.push(once(socket, 'connect').then(() => socket));
    }
    sockets.push(...(await Promise.all(batch)));
  }
  return {
    sockets,
    fds: Int32Array.from(sockets, (s) => s._handle.fd),
    async close() {
      for (const s of sockets) s.destroy();
      peer.kill();
      await once(peer, 'exit');
    },
  };
}

export function fmt(value, unit) {
  return `${value >= 100 ? value.toFixed(0) : value.toFixed(1)} ${unit}`;
}

/** 'met' when `ratio` is within `target`, else 'MISSED'. */
export function verdict(ratio, target) {
  return ratio <= target ? 'met' : 'MISSED';
}

export function table(rows) {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => String(r[c]).length)));
  return rows.map((r) => r.map((cell, c) => String(cell).padEnd(widths[c])).join('  ')).join('\n');
}

export function machine() {
  const cpu = execFileSync('sh', ['-c', "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"], { encoding: 'utf8' }).trim();
  return `Node ${process.version}, Linux ${spawnSync('uname', ['-r'], { encoding: 'utf8' }).stdout.trim()}, ${cpu}, ${os.availableParallelism()} CPUs`;
}
