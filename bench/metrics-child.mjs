// One timed run of the serverMetrics() benchmark (bench/metrics.mjs starts one per run):
//
//   node bench/metrics-child.mjs plain|destroy-multicast|bpf|multicast|bpf-stream <host> <count> <concurrency> <warm-up count> [batch]
//
// With a batch size, the process runs <count> connections of the variant and <count> without it
// (plain), in batches of that many that alternate, and prints both totals: what bench/metrics.mjs
// compares. serverMetrics() (or the floor) is set up before each batch of its variant and closed
// after it, once every end was counted. Without a batch size, it runs the variant alone.
//
// A net server and its clients in this process, on <host> (a 127.x address of its own). Each
// connection: connect, the client writes 5 bytes, the server answers 5 bytes and ends, the client
// ends in turn (the server's side goes to TIME_WAIT). At most <concurrency> open at once. With a
// source, serverMetrics(server, { source }) counts every connection the server accepts. Two floors,
// each source's kernel side with no serverMetrics(): `multicast` joins the destroy groups as the
// trace does and reads every message, `bpf-stream` loads the BPF program with serverMetrics'
// filters (ends only, the listener's port, reads every 100 ms) and reads every record; neither
// decodes what it read. Prints one JSON line: ms from the first connect() to the last of the
// 2 × <count> 'close' events and the ends then waiting read; process CPU ms until every end was
// counted; for the metrics runs, the counts (the warm-up's included).
import { createRequire } from 'node:module';
import net from 'node:net';
import { alternateBatches, bpfOrExit, destroyMulticastFloor } from './lib.mjs';

const require = createRequire(import.meta.url);
const finwait = require('../dist/index.js');

const [variant, host, countArg, concurrencyArg, warmupArg, batchArg] = process.argv.slice(2);
const count = Number(countArg);
const concurrency = Number(concurrencyArg);
const warmup = Number(warmupArg);
/** Connections per batch, where batches with and without the variant alternate in this process (0: one run of the variant alone). */
const batch = Number(batchArg ?? 0);
const request = Buffer.from('ping\n');
const response = Buffer.from('pong\n');

function fail(error) {
  console.error(error);
  process.exit(1);
}

let onServerClose = () => {};
const server = net.createServer((socket) => {
  socket.on('data', () => socket.end(response));
  socket.on('error', fail);
  socket.on('close', () => onServerClose());
});
server.listen({ port: 0, host, backlog: 4096 });
await new Promise((resolve) => server.once('listening', resolve));
const { port } = server.address();
function run(n) {
  if (n === 0) return Promise.resolve();
  return new Promise((resolve) => {
    let started = 0;
    let closes = 0;
    const closed = () => {
      if (++closes === 2 * n) resolve();
    };
    onServerClose = closed;
    const next = () => {
      started++;
      const socket = net.connect({ port, host });
      socket.on('connect', () => socket.write(request));
      socket.resume();
      socket.on('error', fail);
      socket.on('close', () => {
        closed();
        if (started < n) next();
      });
    };
    for (let i = 0; i < Math.min(concurrency, n); i++) next();
  });
}

const { drainMetricEnds } = require('../dist/metrics.js');
const netnsCookie = require('../dist/binding.js').native().socketNetnsCookie(server._handle.fd);
if (variant === 'bpf-stream') bpfOrExit(variant);
/** The counts of the metrics runs, added up (every end of the timed connections and the warm-up's). */
const counts = {};
/** What a floor variant read: messages or records. */
let read = 0;

/**
 * Runs `n` connections of variant `v`: its wall time, from the first connect() to the last
 * 'close' and the ends then waiting read (counted, for serverMetrics()); and its process CPU time
 * until serverMetrics() counted every end (the rest read later, its work included), ms.
 */
async function timed(v, n) {
  let metrics;
  let floor;
  if (v === 'destroy-multicast' || v === 'bpf') metrics = finwait.serverMetrics(server, { source: v });
  if (v === 'multicast') {
    const { DESTROY_GROUP_V4, DESTROY_GROUP_V6 } = require('../dist/diag.js');
    // Both groups and an 8 MiB socket, as the trace's destroy-multicast source.
    floor = destroyMulticastFloor([DESTROY_GROUP_V4, DESTROY_GROUP_V6], 8 << 20, (k) => (read += k));
  } else if (v === 'bpf-stream') {
    floor = bpfOrExit(v).openStateRecords((bytes, view, k) => (read += k), () => {}, { closeOnly: true, byCookie: true, byPort: true, maxDelay: 100 }).unref();
    floor.addPort(netnsCookie, port);
  }
  const cpuStart = process.cpuUsage();
  const start = process.hrtime.bigint();
  await run(n);
  if (metrics) drainMetricEnds();
  floor?.drainNow?.();
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  if (metrics) {
    const deadline = Date.now() + 30_000;
    while (metrics.pending > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
  }
  const used = process.cpuUsage(cpuStart);
  if (metrics) {
    for (const [k, c] of Object.entries(metrics.counts)) counts[k] = (counts[k] ?? 0) + c;
    counts.pending = (counts.pending ?? 0) + metrics.pending;
    counts.source = metrics.source;
    metrics.close();
  }
  floor?.close();
  return { ms, cpu: (used.user + used.system) / 1000 };
}

const { total, without } = await alternateBatches(variant, { count, warmup, batch }, timed);
server.close();
const metered = variant === 'destroy-multicast' || variant === 'bpf';
const floored = variant === 'multicast' || variant === 'bpf-stream';
console.log(JSON.stringify({ variant, ms: total.ms, cpuMs: total.cpu, ...(without ? { without: { ms: without.ms, cpuMs: without.cpu } } : {}), ...(metered ? { counts } : {}), ...(floored ? { read } : {}) }));
