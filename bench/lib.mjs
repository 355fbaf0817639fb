// Shared pieces of the benchmarks: timing, the C baseline, loopback connections held by a peer,
// a network namespace of a benchmark's own and the TIME_WAIT sockets filled into it.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
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

/**
 * Runs of a variant against the connections without it that the same processes made (batches
 * alternating): the median of the runs' ratios, their range as text, and the median of their
 * differences.
 */
export function paired(runs, without) {
  const ratios = runs.map((x, i) => x / without[i]);
  return {
    ratio: median(ratios),
    range: `${Math.min(...ratios).toFixed(2)}-${Math.max(...ratios).toFixed(2)}x`,
    difference: median(runs.map((x, i) => x - without[i])),
  };
}

/**
 * Runs `count` connections of `variant` and `count` without it (`'plain'`) in batches of `batch`
 * that alternate, which going first too, after `warmup` of each (then `afterWarmup()`): bursts of
 * other load on the machine, shorter than a run but longer than a batch, weigh on both alike.
 * With `batch` 0, `warmup` then `count` of `variant` alone. `timed(v, n)` runs `n` connections of
 * `v` and resolves with their `{ ms, cpu }`. Resolves with the totals of each side (`without`
 * undefined when alone).
 */
export async function alternateBatches(variant, { count, warmup, batch }, timed, afterWarmup = () => {}) {
  if (batch === 0) {
    await timed(variant, warmup);
    afterWarmup();
    return { total: await timed(variant, count), without: undefined };
  }
  for (let done = 0; done < warmup; done += batch) for (const v of [variant, 'plain']) await timed(v, Math.min(batch, warmup - done));
  afterWarmup();
  const total = { ms: 0, cpu: 0 };
  const without = { ms: 0, cpu: 0 };
  for (let done = 0, i = 0; done < count; done += batch, i++) {
    for (const v of i % 2 === 0 ? [variant, 'plain'] : ['plain', variant]) {
      const t = await timed(v, Math.min(batch, count - done));
      const sum = v === variant ? total : without;
      sum.ms += t.ms;
      sum.cpu += t.cpu;
    }
  }
  return { total, without };
}

/** The runs of each variant as `ms/without` pairs, and the range of their ratios, as text. */
export function pairedRuns(variants, ms, plainMs) {
  const runs = variants.map((v) => `${v} ${ms[v].map((x, r) => `${x.toFixed(0)}/${plainMs[v][r].toFixed(0)}`).join(', ')}`).join('; ');
  return `Runs (ms, the variant / without it in the same process): ${runs}; ratios ${variants.map((v) => `${v} ${paired(ms[v], plainMs[v]).range}`).join(', ')}.`;
}

/** Prints a benchmark's result: its table and notes, or why it was skipped. */
export function printResult(result) {
  if (result.skipped) {
    console.log(`skipped: ${result.skipped}`);
    return;
  }
  console.log(table(result.rows));
  for (const note of result.notes ?? []) console.log(`\n  ${note}`);
}

/**
 * Whether a benchmark's runs can each have a network namespace of their own (root): the TIME_WAIT
 * sockets earlier runs left, which every later sock_diag lookup and socket free walks past and
 * which count against the namespace's `tcp_max_tw_buckets`, go with it.
 */
export const ownNetns = process.getuid?.() === 0 && spawnSync('unshare', ['-n', 'true']).status === 0;

/**
 * Runs `node bench/<script> ...args`, in a network namespace of its own where it can (`ownNetns`),
 * and resolves with the last line it printed, parsed as JSON.
 */
export function runJsonChild(script, args) {
  const argv = [path.join(benchDir, script), ...args.map(String)];
  const child = ownNetns
    ? spawn('unshare', ['-n', 'sh', '-c', 'ip link set lo up && exec "$0" "$@"', process.execPath, ...argv], { stdio: ['ignore', 'pipe', 'inherit'] })
    : spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (chunk) => (out += chunk));
  return new Promise((resolve, reject) => {
    child.on('error', reject).on('close', (status) => {
      if (status !== 0) reject(new Error(`${script} ${args[0]} exited with ${status}`));
      else resolve(JSON.parse(out.trim().split('\n').pop()));
    });
  });
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

/** Why a benchmark in a network namespace of its own (made with `ip`, measured against `ss`) cannot run here, or undefined. */
export function ownNetnsUnavailable() {
  if (process.platform !== 'linux') return 'sock_diag and network namespaces are Linux only';
  if (process.getuid?.() !== 0) return 'creating a network namespace needs root (run npm run bench as root)';
  for (const tool of ['ip', 'ss']) {
    if (spawnSync(tool, ['-V']).error) return `${tool} (iproute2) is not installed`;
  }
  return undefined;
}

/**
 * Runs `node bench/SCRIPT ARGS` in a network namespace made for it and deleted when it ends (also
 * on SIGINT and SIGTERM, after which this process dies of the same signal). Returns the JSON object
 * on the child's last line of stdout, or `{ skipped }` when the namespace cannot be made.
 */
export async function runInOwnNetns(script, args) {
  const ns = `finwait-bench-${path.basename(script, '.mjs')}-${process.pid}`;
  const add = spawnSync('ip', ['netns', 'add', ns], { encoding: 'utf8' });
  if (add.status !== 0) return { skipped: `ip netns add failed: ${add.stderr.trim()}` };
  let child;
  const removeNs = () => spawnSync('ip', ['netns', 'del', ns], { encoding: 'utf8' });
  const onSignal = (signal) => {
    child?.kill('SIGKILL');
    removeNs();
    process.kill(process.pid, signal);
  };
  process.once('exit', removeNs).once('SIGINT', onSignal).once('SIGTERM', onSignal);
  try {
    child = spawn('ip', ['netns', 'exec', ns, process.execPath, path.join(benchDir, script), ...args], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (chunk) => (out += chunk));
    const status = await new Promise((resolve, reject) => child.on('error', reject).on('close', resolve));
    if (status !== 0) throw new Error(`${script} exited with ${status}`);
    return JSON.parse(out.trim().split('\n').pop());
  } finally {
    process.off('exit', removeNs).off('SIGINT', onSignal).off('SIGTERM', onSignal);
    const del = removeNs();
    if (del.status !== 0) console.error(`could not delete network namespace ${ns}: ${del.stderr}`);
  }
}

/**
 * In a benchmark's own network namespace: brings `lo` up and sets the sysctls that let `count`
 * TIME_WAIT sockets pile up (bucket limit, the whole port range, no reuse by a new connect()).
 */
export function prepareTimeWaitNamespace(count) {
  const setup = spawnSync('ip', ['link', 'set', 'lo', 'up'], { encoding: 'utf8' });
  if (setup.status !== 0) throw new Error(`ip link set lo up: ${setup.stderr.trim()}`);
  const sysctl = (name, value) => writeFileSync(`/proc/sys/net/ipv4/${name}`, value);
  sysctl('tcp_max_tw_buckets', String(4 * count)); // the kernel would drop TIME_WAIT sockets past it
  sysctl('ip_local_port_range', '1024 65535');
  sysctl('tcp_tw_reuse', '0'); // a new connect() must not recycle one of our TIME_WAIT sockets
}

/**
 * Makes `count` connections, `concurrency` at a time, with `net.connect(optionsOf(i))`; each client
 * ends as soon as it connects, so it closes first and the TIME_WAIT sockets are the clients'. The
 * server must end its side on the client's FIN (allowHalfOpen off). Resolves when all have closed.
 */
export function fillTimeWaits(count, optionsOf, concurrency = 1000) {
  return new Promise((resolve, reject) => {
    let started = 0;
    let finished = 0;
    const next = () => {
      const socket = net.connect(optionsOf(started++));
      socket.on('connect', () => socket.end()).resume();
      socket.on('error', reject);
      socket.on('close', () => {
        finished++;
        if (finished === count) resolve();
        else if (started < count) next();
      });
    };
    for (let i = 0; i < Math.min(concurrency, count); i++) next();
  });
}

const requireDist = createRequire(import.meta.url);

/**
 * A destroy-multicast floor (watch-child.mjs, metrics-child.mjs): a sock_diag socket with a
 * receive buffer of `rcvbuf` bytes joined to `groups` (DESTROY_GROUP_V4/V6 of dist/diag.js),
 * every message read and dropped, `onRead(n)` told of each read; what a back-end's listener does
 * before it decodes anything. Returns `close()`.
 */
export function destroyMulticastFloor(groups, rcvbuf, onRead = () => {}) {
  const addon = requireDist('../dist/binding.js').native();
  const { DESTROY_SLOT, DESTROY_SLOTS } = requireDist('../dist/diag.js');
  const socket = new addon.SockDiagEventsSocket(null, rcvbuf);
  for (const group of groups) addon.sockDiagJoin(socket.fd, group);
  const buffer = new Uint8Array(DESTROY_SLOTS * DESTROY_SLOT);
  const lengths = new Int32Array(DESTROY_SLOTS);
  const poll = new addon.FdPoll(socket.fd, () => {
    // A negative count is a loss (DESTROY_LOST): nothing read, read on.
    for (let n; (n = addon.sockDiagReadEvents(socket.fd, buffer, lengths)) !== 0; ) if (n > 0) onRead(n);
  });
  return {
    close() {
      poll.close();
      socket.close();
    },
  };
}

/**
 * dist/bpf.js for a BPF floor of a benchmark child; where the program cannot run, the child
 * prints `{ variant, unavailable }` (its parent shows the row as unavailable) and exits.
 */
export function bpfOrExit(variant) {
  const bpf = requireDist('../dist/bpf.js');
  const why = bpf.stateChangesUnavailable();
  if (why !== undefined) {
    console.log(JSON.stringify({ variant, unavailable: why }));
    process.exit(0);
  }
  return bpf;
}
