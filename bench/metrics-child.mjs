// One timed run of the serverMetrics() benchmark (bench/metrics.mjs starts one per run: the trace
// is shared by the whole process and chooses its source once):
//
//   node bench/metrics-child.mjs plain|destroy-multicast|bpf <host> <count> <concurrency> <warm-up count>
//
// A net server and its clients in this process, on <host> (a 127.x address of its own). Each
// connection: connect, the client writes 5 bytes, the server answers 5 bytes and ends, the client
// ends in turn (the server's side goes to TIME_WAIT). At most <concurrency> open at once. With a
// source, serverMetrics(server, { source }) counts every connection the server accepts. Prints one
// JSON line: ms and process CPU ms from the first connect() to the last of the 2 × <count> 'close'
// events, and, for the metrics runs, the counts once every end was counted (not timed).
import { createRequire } from 'node:module';
import net from 'node:net';

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
const metrics = variant === 'plain' ? undefined : finwait.serverMetrics(server, { source: variant });

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
server.close();
console.log(JSON.stringify({ variant, ms, cpuMs: (used.user + used.system) / 1000, counts }));
