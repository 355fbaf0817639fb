// Runs inside the benchmark's own network namespace (bench/diag.mjs starts it with
// `ip netns exec`): fills the namespace with TIME_WAIT sockets, then times finwait's sockets()
// against ss on them, alternating. Prints one JSON line with the figures on stdout.
import { spawnSync } from 'node:child_process';
import { openSync } from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import { fillTimeWaits, median, prepareTimeWaitNamespace } from './lib.mjs';

const require = createRequire(import.meta.url);
const finwait = require('../dist/index.js');

const count = Number(process.argv[2] ?? 50_000);
const rounds = Number(process.argv[3] ?? 7);
const destinations = 100; // 127.0.0.1 .. 127.0.0.100, so no (address, port) pair runs short of ports

prepareTimeWaitNamespace(count);

// The namespace has only lo, so listening on every address listens on loopback alone.
const server = net.createServer((socket) => socket.resume()); // reads the client's FIN, then ends (allowHalfOpen off)
server.listen({ port: 0, host: '0.0.0.0', backlog: 4096 });
await new Promise((resolve) => server.once('listening', resolve));
const { port } = server.address();

// The client closes first, so the TIME_WAIT sockets are the clients': 127.0.0.1:eph -> 127.0.0.x:port.
const fillStart = process.hrtime.bigint();
await fillTimeWaits(count, (i) => ({ port, host: `127.0.0.${1 + (i % destinations)}` }));
server.close();
const fillMs = Number(process.hrtime.bigint() - fillStart) / 1e6;
const firstTimeWait = Number(fillStart) / 1e6;

const devNull = openSync('/dev/null', 'w');
function timeSs(args) {
  const start = process.hrtime.bigint();
  const child = spawnSync('ss', args, { stdio: ['ignore', devNull, 'pipe'] });
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  if (child.status !== 0) throw new Error(`ss ${args.join(' ')}: ${child.stderr}`);
  return ms;
}
function ssCount(args) {
  const child = spawnSync('ss', ['-H', ...args], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (child.status !== 0) throw new Error(`ss ${args.join(' ')}: ${child.stderr}`);
  return child.stdout.split('\n').filter(Boolean).length;
}

const full = ['-tan', 'state', 'time-wait'];
// The same process with nothing to list: ss's start-up and exit, and Node's spawn around it. The
// kernel answers a LISTEN-only request without walking the established/TIME_WAIT table.
const empty = ['-tan', 'state', 'listening'];
// Nothing to list either, but the kernel still walks the table (a state test per socket).
const emptyWalk = ['-tan', 'state', 'syn-recv'];

const ours = [], ssFull = [], ssEmpty = [], ssEmptyWalk = [], counts = new Set();
const ssCounts = new Set();
ssCounts.add(ssCount(full));
finwait.sockets({ states: ['TIME_WAIT'] }); // warm-up: the decoder's first run compiles it
for (let r = 0; r < rounds; r++) {
  const start = process.hrtime.bigint();
  const list = finwait.sockets({ states: ['TIME_WAIT'] });
  ours.push(Number(process.hrtime.bigint() - start) / 1e6);
  counts.add(list.length);
  ssFull.push(timeSs(full));
  ssEmpty.push(timeSs(empty));
  ssEmptyWalk.push(timeSs(emptyWalk));
}
ssCounts.add(ssCount(full));
const measuredWithinMs = Number(process.hrtime.bigint()) / 1e6 - firstTimeWait;

console.log(
  JSON.stringify({
    count,
    fillMs,
    measuredWithinMs,
    oursCounts: [...counts],
    ssCounts: [...ssCounts],
    ours: median(ours),
    ssFull: median(ssFull),
    ssEmpty: median(ssEmpty),
    ssEmptyWalk: median(ssEmptyWalk),
    raw: { ours, ssFull, ssEmpty, ssEmptyWalk },
  }),
);
