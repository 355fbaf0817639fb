// One timed run of the watch() benchmark (bench/watch.mjs starts one per run, so that the
// watchers of a run, which follow TIME_WAIT for 60 s, cannot slow another variant's run):
//
//   node bench/watch-child.mjs plain|kernel|multicast|bpf-stream|model|listeners|poll|destroy-multicast|bpf <host> <count> <concurrency> <warm-up count> [plain|orphans] [batch]
//
// With a batch size, the process runs <count> connections of the variant and <count> without it
// (plain), in batches of that many that alternate, and prints both totals (`ms`, `cpu`, and
// `without`): what bench/watch.mjs compares. Without one, it runs the variant alone.
//
// Two more floors: `bpf-stream` has no watch(), but the BPF program on every TCP state change of
// the host for the whole run, every record read and dropped (what a back-end that took every
// transition from the ring could not go below: the kernel's share and the reads); `model` has no
// watch() and no kernel call, but a Lifecycle per end fed the states each end goes through, at
// the moments Node's events show them (what any back-end pays for the model, the history and the
// 'transition' events, whatever its source); `listeners` has the same listeners on each socket
// and no Lifecycle, to split the two.
// `bpf`, `destroy-multicast` and `poll` watch() both ends on that back-end (setWatchBackend(), as
// FINWAIT_WATCH_BACKEND would; `bpf` needs root or CAP_BPF + CAP_PERFMON, else it falls back, and
// the back-ends printed say so). `multicast` has no watch(): the destroy multicast joined for the
// whole run and every message read and dropped, as the destroy-multicast back-end's listener does
// (a floor under that back-end's cost: the kernel builds one message per socket freed in the
// namespace while anyone listens). `kernel` makes, without watch(), the native calls the polling
// watch() makes on these connections, at the same moments (a floor under its cost: the kernel's
// share of it). Counted in a polled run
// (native calls wrapped), watch() makes per connection: three TCP state reads (server: when
// watched and at 'end'; client: at 'end'), two sockDiagId calls (client: before its FIN, five
// syscalls; server: at its close, one syscall in CLOSE) and one sock_diag lookup of the client's
// TIME_WAIT, batched with the others closed since the last poll. Not copied: its batch reads of
// closing fds (about one call per three connections).
//
// Client and server live in this process, on <host> (a 127.x address of its own). Each connection:
// connect, the client writes 5 bytes, the server answers 5 bytes, the client ends, the server ends
// in turn (allowHalfOpen off); the client's end goes to TIME_WAIT. At most <concurrency>
// connections are open at once. Prints one JSON line: ms from the first connect() to the last of
// the 2 × <count> 'close' events, and cpu: the process's CPU time (user + system, every thread)
// over the same span, ms.
import { createRequire } from 'node:module';
import net from 'node:net';
import { alternateBatches, bpfOrExit, destroyMulticastFloor } from './lib.mjs';

const require = createRequire(import.meta.url);
const finwait = require('../dist/index.js');
const addon = require('../dist/binding.js').native();
const { setWatchBackend } = require('../dist/lifecycle/watch.js');
const { DESTROY_GROUP_V4 } = require('../dist/diag.js');

const [variant, host, countArg, concurrencyArg, warmupArg, mode, batchArg] = process.argv.slice(2);
/** `orphans`: the client closes its fd right after end(), so its side lives on as an orphan (FIN_WAIT1, FIN_WAIT2) the back-end follows. */
const orphans = mode === 'orphans';
const count = Number(countArg);
const concurrency = Number(concurrencyArg);
const warmup = Number(warmupArg);
/** Connections per batch, where batches with and without the variant alternate in this process (0: one run of the variant alone). */
const batch = Number(batchArg ?? 0);
const request = Buffer.from('ping\n');
const response = Buffer.from('pong\n');

let watching = false;
let kernel = false;
const fdOf = (socket) => socket._handle?.fd ?? -1;

// The `kernel` variant's lookups: the closed clients' records, asked for in one batch a poll later.
const ID_RECORD = 64;
const DIAG_MSG_LEN = 72;
let closedIds = [];
let lookupTimer;
let netlink = -1;
function lookUp() {
  lookupTimer = undefined;
  const ids = closedIds;
  closedIds = [];
  const requests = new Uint8Array(ids.length * ID_RECORD);
  ids.forEach((id, i) => requests.set(id, i * ID_RECORD));
  if (netlink < 0) netlink = addon.sockDiagSocket();
  addon.sockDiagFind(netlink, requests, new Uint8Array(ids.length * DIAG_MSG_LEN), new Int32Array(ids.length));
}
const lifecycles = { client: [], server: [] };
let modelled = false;
const { Lifecycle } = require('../dist/lifecycle/lifecycle.js');
/** The `model` variant: a Lifecycle fed `state` at the moment Node shows it (no kernel call). */
const feed = (lifecycle, state) => lifecycle?.observe({ state, source: 'event', at: performance.now() });
/** The `listeners` variant: the `model` variant's listeners on each socket, with no Lifecycle (its share split off). */
let listenersOnly = false;
/** Feeds `first` now, and each `[event, state]` of `later` at that event of the socket. */
function model(socket, first, later) {
  const l = listenersOnly ? undefined : new Lifecycle();
  feed(l, first);
  for (const [event, state] of later) socket.on(event, () => feed(l, state));
}
const modelServer = (socket) => model(socket, 'ESTABLISHED', [['end', 'CLOSE_WAIT'], ['finish', 'LAST_ACK'], ['close', 'CLOSED']]);
const modelClient = (socket) => model(socket, 'SYN_SENT', [['connect', 'ESTABLISHED'], ['finish', 'FIN_WAIT2'], ['end', 'TIME_WAIT']]);
let onServerClose = () => {};

const server = net.createServer((socket) => {
  if (watching) lifecycles.server.push(finwait.watch(socket));
  if (modelled) modelServer(socket);
  if (kernel) {
    addon.tcpState(fdOf(socket));
    socket.on('end', () => addon.tcpState(fdOf(socket)));
    // 'finish' comes in the same turn as the close, just before it.
    socket.on('finish', () => addon.sockDiagId(fdOf(socket), new Uint8Array(ID_RECORD)));
  }
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
      if (modelled) modelClient(socket);
      socket.on('connect', () => socket.write(request));
      let id;
      socket.on('data', () => {
        if (kernel) addon.sockDiagId(fdOf(socket), (id = new Uint8Array(ID_RECORD)));
        socket.end();
        if (orphans) socket.destroy();
      });
      if (kernel) {
        socket.on('end', () => addon.tcpState(fdOf(socket)));
        socket.on('close', () => {
          closedIds.push(id);
          lookupTimer ??= setTimeout(lookUp, 1);
        });
      }
      socket.on('error', fail);
      socket.on('close', () => {
        closed();
        if (started < n) next();
      });
    };
    for (let i = 0; i < Math.min(concurrency, n); i++) next();
  });
}

// What a variant needs for a run (or a batch) of its connections, set before it starts.
let listener;
let stream;
let streamRecords = 0;
if (variant === 'bpf-stream') bpfOrExit(variant);
function setUp(v) {
  watching = v === 'poll' || v === 'destroy-multicast' || v === 'bpf';
  kernel = v === 'kernel';
  modelled = v === 'model' || v === 'listeners';
  listenersOnly = v === 'listeners';
  if (watching) setWatchBackend(v);
  // What the destroy-multicast back-end's listener does, without watch(): joined (the v4 group, as
  // its 4 MiB socket), read, dropped.
  if (v === 'multicast') listener = destroyMulticastFloor([DESTROY_GROUP_V4], 4 << 20);
  // What a back-end taking every transition from the ring would read, read and dropped.
  if (v === 'bpf-stream') stream = bpfOrExit(v).openStateRecords((bytes, view, n) => (streamRecords += n), () => {}).unref();
}
function tearDown() {
  watching = kernel = modelled = listenersOnly = false;
  listener?.close();
  stream?.close();
  listener = stream = undefined;
}

/** Runs `n` connections of variant `v`; its wall time and process CPU time, ms. */
async function timed(v, n) {
  setUp(v);
  const start = process.hrtime.bigint();
  const cpuStart = process.cpuUsage();
  await run(n);
  // The `kernel` variant's last lookups, due a millisecond after the last 'close': made now.
  if (lookupTimer !== undefined) {
    clearTimeout(lookupTimer);
    lookUp();
  }
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  const { user, system } = process.cpuUsage(cpuStart);
  tearDown();
  return { ms, cpu: (user + system) / 1000 };
}

// The warm-up runs each variant's own code, so that both are measured compiled (a fresh process
// would otherwise charge the JIT's one-time work on finwait's code to the watched run alone).
/** The variant's connections' wall and CPU time, ms; with `batch`, also those of the plain batches between. */
const { total, without } = await alternateBatches(variant, { count, warmup, batch }, timed, () => (lifecycles.client.length = lifecycles.server.length = 0));
const { ms, cpu } = total;

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
const backends = {};
for (const l of [...lifecycles.client, ...lifecycles.server]) backends[l.backend.name] = (backends[l.backend.name] ?? 0) + 1;
// What the event back-end read, and how many of those ended a watched socket (warm-up included).
let events;
if (variant === 'bpf') {
  const { records, matched } = require('../dist/lifecycle/sources/bpf.js').bpfStatus();
  events = { read: records, matched };
} else if (variant === 'destroy-multicast') {
  const { messages, matched } = require('../dist/lifecycle/sources/destroy-multicast.js').destroyMulticastStatus();
  events = { read: messages, matched };
}
if (variant === 'bpf-stream') events = { read: streamRecords };
console.log(JSON.stringify({ variant, ms, cpu, ...(without ? { without } : {}), states, anomalies, backends, events }));
process.exit(0);
