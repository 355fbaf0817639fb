// One timed run of the watch() benchmark (bench/watch.mjs starts one per run, so that the
// watchers of a run, which follow TIME_WAIT for 60 s, cannot slow the next run):
//
//   node bench/watch-child.mjs plain|watch <host> <count> <concurrency> <warm-up count>
//
// Client and server live in this process, on <host> (a 127.x address of its own). Each connection:
// connect, the client writes 5 bytes, the server answers 5 bytes, the client ends, the server ends
// in turn (allowHalfOpen off); the client's end goes to TIME_WAIT. At most <concurrency>
// connections are open at once. Prints one JSON line: ms from the first connect() to the last of
// the 2 × <count> 'close' events.
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

let watching = false;
const lifecycles = { client: [], server: [] };
let onServerClose = () => {};

const server = net.createServer((socket) => {
  if (watching) lifecycles.server.push(finwait.watch(socket));
  socket.on('data', () => socket.write(response));
  socket.on('error', fail);
  socket.on('close', () => onServerClose());
});
server.listen({ port: 0, host, backlog: 4096 });
await new Promise((resolve) => server.once('listening', resolve));
const { port } = server.address();

function fail(error) {
  console.error(error);
  process.exit(1);
}

/** Runs `n` connections, at most `concurrency` at once; resolves at the last 'close' of either end. */
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
      if (watching) lifecycles.client.push(finwait.watch(socket));
      socket.on('connect', () => socket.write(request));
      socket.on('data', () => socket.end());
      socket.on('error', fail);
      socket.on('close', () => {
        closed();
        if (started < n) next();
      });
    };
    for (let i = 0; i < Math.min(concurrency, n); i++) next();
  });
}

// The warm-up runs each variant's own code, so that both are measured compiled (a fresh process
// would otherwise charge the JIT's one-time work on finwait's code to the watched run alone).
watching = variant === 'watch';
await run(warmup);
lifecycles.client.length = lifecycles.server.length = 0;
const start = process.hrtime.bigint();
await run(count);
const ms = Number(process.hrtime.bigint() - start) / 1e6;

// What the watchers knew when the last 'close' came (they go on following TIME_WAIT afterwards).
const states = {};
const anomalies = {};
for (const [side, list] of Object.entries(lifecycles)) {
  for (const l of list) {
    const key = `${side}:${l.state}`;
    states[key] = (states[key] ?? 0) + 1;
    for (const a of l.anomalies) anomalies[a.reason] = (anomalies[a.reason] ?? 0) + 1;
  }
}
console.log(JSON.stringify({ variant, ms, states, anomalies }));
process.exit(0);
