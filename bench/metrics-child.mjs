// One timed run of the serverMetrics() benchmark (bench/metrics.mjs starts one per run: the trace
// is shared by the whole process and chooses its source once):
//
//   node bench/metrics-child.mjs plain|destroy-multicast|bpf|multicast|bpf-stream <host> <count> <concurrency> <warm-up count>
//
// A net server and its clients in this process, on <host> (a 127.x address of its own). Each
// connection: connect, the client writes 5 bytes, the server answers 5 bytes and ends, the client
// ends in turn (the server's side goes to TIME_WAIT). At most <concurrency> open at once. With a
// source, serverMetrics(server, { source }) counts every connection the server accepts. Two floors,
// each source's kernel side with no serverMetrics(): `multicast` joins the destroy groups as the
// trace does and reads every message, `bpf-stream` loads the BPF program with serverMetrics'
// filters (ends only, the listener's port, reads every 100 ms) and reads every record; neither
// decodes what it read. Prints one
// JSON line: ms and process CPU ms from the first connect() to the last of the 2 × <count> 'close'
// events, and, for the metrics runs, the counts once every end was counted (not timed).
import { createRequire } from 'node:module';
import net from 'node:net';
import { bpfOrExit, destroyMulticastFloor } from './lib.mjs';

const require = createRequire(import.meta.url);
const finwait = require('../dist/index.js');

const [variant, host, countArg, concurrencyArg, warmupArg] = process.argv.slice(2);
const count = Number(countArg);
const concurrency = Number(concurrencyArg);
const warmup = Number(warmupArg);
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
const metrics = variant === 'destroy-multicast' || variant === 'bpf' ? finwait.serverMetrics(server, { source: variant }) : undefined;
/** What a floor variant read: messages or records. */
let read = 0;
let floor;
if (variant === 'multicast') {
  const { DESTROY_GROUP_V4, DESTROY_GROUP_V6 } = require('../dist/diag.js');
  // Both groups and an 8 MiB socket, as the trace's destroy-multicast source.
  floor = destroyMulticastFloor([DESTROY_GROUP_V4, DESTROY_GROUP_V6], 8 << 20, (n) => (read += n));
} else if (variant === 'bpf-stream') {
  floor = bpfOrExit(variant).openStateRecords((bytes, view, n) => (read += n), () => {}, { closeOnly: true, byCookie: true, byPort: true, maxDelay: 100 }).unref();
  floor.addPort(require('../dist/binding.js').native().socketNetnsCookie(server._handle.fd), port);
}

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

await run(warmup);
const cpu = process.cpuUsage();
const start = process.hrtime.bigint();
await run(count);
const ms = Number(process.hrtime.bigint() - start) / 1e6;
const used = process.cpuUsage(cpu);
let counts;
if (metrics) {
  const deadline = Date.now() + 30_000;
  // Every end, the warm-up's included (a source's events can trail Node's 'close').
  while (metrics.pending > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
  counts = { ...metrics.counts, pending: metrics.pending, source: metrics.source };
  metrics.close();
}
// What waits in the ring is read too (not timed), for the count.
floor?.drainNow?.();
floor?.close();
server.close();
console.log(JSON.stringify({ variant, ms, cpuMs: (used.user + used.system) / 1000, counts, ...(floor ? { read } : {}) }));
