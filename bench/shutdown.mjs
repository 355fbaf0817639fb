// Issue #5, "the proof": shutdown strategies compared under load, on real kernel sockets.
//
// One http.Server (bench/shutdown-app.mjs: GETs, POSTs with bodies, uploads answered 413 without
// reading the body, 300 ms responses) runs in its own process; keep-alive clients run in another
// (bench/shutdown-client.mjs) and classify every request themselves. Mid-load the server is shut
// down by one of four strategies with the same deadline:
//   node             server.close(), then server.closeAllConnections() at the deadline
//   http-terminator  createHttpTerminator({ server, gracefulTerminationTimeout }).terminate()
//   stoppable        stoppable(server, grace), then server.stop()
//   finwait          closeServer(server, { timeout }) (no setup: it finds every connection)
// The path (issue #5: races hide on bare loopback). When the lab can run here (root,
// /dev/net/tun; finwait/testing's labAvailable()), each variant gets a fresh lab: the server runs
// in host a's network namespace, the clients in host b's (`ip netns exec <netns> node ...`), and
// every packet between them crosses the lab's wire, which lives in this process and delays every
// segment by 10 ms each way (wire.delay(10): ~20 ms RTT; MTU 65535 like loopback's, so that only
// the RTT differs from a loopback run; the server reports the kernel's smoothed
// RTT of its connections at the trigger). This process must keep up with the wire: its CPU time
// and event-loop delay are reported. Otherwise each variant runs in a fresh network namespace
// (fresh counters, no TIME_WAIT left by the one before), on its loopback. Then 10,000 idle
// keep-alive connections are closed by Node's own server.close() + closeIdleConnections() and,
// in the same run on as many fresh connections, by closeServer, each always on loopback in a
// namespace of its own (through the wire that part would measure the wire's relay): the close's
// duration and the server's CPU time side by side.
//
// How RSTs are counted: nftables rules in the server's namespace count every RST whose source
// port is the server's (the server's kernel sent it) and every RST towards it (the clients'
// kernel; on loopback seen on output, over the lab on input): exact per direction, for the whole
// close. When they happened: the server process reads its namespace's TcpOutRsts at the trigger and
// at the deadline (its timer runs before the strategy's own deadline timer). Over the lab that
// namespace holds only the server's end, so the split is exact. On loopback the counter holds both
// ends, so it gives the server's RSTs before the deadline exactly when the clients sent none (the
// clients are written to send none: they never close with unread data); otherwise the table shows
// the range. RSTs that answer a SYN for the closed port (RST+ACK, sequence 0: the 'refused' class,
// no connection existed) are counted by a third rule and taken out, split at the deadline by when
// the client saw them.
//
// `node bench/shutdown.mjs` runs it alone; bench/run.mjs calls benchShutdown(finwait).
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const benchDir = path.dirname(fileURLToPath(import.meta.url));
const VARIANTS = ['node', 'http-terminator', 'stoppable', 'finwait'];
const LABELS = {
  node: 'Node close()+closeAll',
  'http-terminator': 'http-terminator',
  stoppable: 'stoppable',
  finwait: 'finwait closeServer',
};
const NFT_TABLE = 'finwait_shutdown';

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** The nftables table of RST counters, for `nft -f -` in the server's namespace. */
function rstRules(port, clientHook) {
  const table = `inet ${NFT_TABLE}`;
  return [
    `add table ${table}`,
    `add chain ${table} out { type filter hook output priority 0; }`,
    ...(clientHook === 'input' ? [`add chain ${table} in { type filter hook input priority 0; }`] : []),
    `add rule ${table} out tcp sport ${port} tcp flags & rst == rst counter comment "server"`,
    `add rule ${table} ${clientHook === 'input' ? 'in' : 'out'} tcp dport ${port} tcp flags & rst == rst counter comment "client"`,
    // The kernel's answer to a SYN for a closed port (ECONNREFUSED): RST+ACK with sequence 0.
    `add rule ${table} out tcp sport ${port} tcp flags & (rst | ack) == rst | ack tcp sequence 0 counter comment "refused"`,
    '',
  ].join('\n');
}

/** The counters of rstRules() in namespace `name`: { server, client, refused } packets. */
async function rstCounters(name) {
  const { stdout } = await run('ip', ['netns', 'exec', name, 'nft', '-j', 'list', 'table', 'inet', NFT_TABLE]);
  const out = {};
  for (const item of JSON.parse(stdout).nftables) {
    const rule = item.rule;
    if (!rule) continue;
    out[rule.comment] = rule.expr.find((e) => e.counter)?.counter.packets ?? 0;
  }
  return out;
}

/** finwait/testing (the lab), from ../dist unless given; undefined if it does not load. */
function loadTesting(options) {
  if (options.testing) return options.testing;
  try {
    return createRequire(import.meta.url)('../dist/testing/index.js');
  } catch {
    return undefined;
  }
}

/**
 * A fresh lab for one variant: the server in host a's namespace, the clients in host b's, the
 * wire delaying every segment by `delayMs` each way. The wire's log is emptied every 250 ms (it
 * would hold every segment of the run); the segments it saw and its longest delay queue are kept.
 */
async function labPlacement(options, testing) {
  const lab = await testing.createLab({ mtu: options.mtu });
  const stats = { segments: 0, maxDelayed: 0 };
  let sampler;
  try {
    lab.wire.delay(options.delayMs);
    const sample = () => {
      stats.segments += lab.wire.log.length;
      stats.maxDelayed = Math.max(stats.maxDelayed, lab.wire.delayed);
      lab.wire.clearLog();
    };
    sampler = setInterval(sample, 250);
    await lab.a.nft(rstRules(options.port, 'input'));
    return {
      server: lab.a.netns,
      client: lab.b.netns,
      host: lab.a.address,
      port: options.port,
      counting: 'nft-lab',
      wire: stats,
      rsts: () => rstCounters(lab.a.netns),
      async close() {
        clearInterval(sampler);
        sample();
        await lab.close();
      },
    };
  } catch (error) {
    clearInterval(sampler);
    await lab.close();
    throw error;
  }
}

/**
 * Where the server and clients run. 'auto': a fresh namespace per run when root (loopback inside
 * it), else this namespace's loopback without RST counts. `{ server, client }`: existing
 * namespaces (e.g. the lab's two ends) with `host` the server's address there; RSTs are then
 * counted from the server namespace's own TcpOutRsts, which holds only the server's end.
 */
async function placement(options, index) {
  const { netns, host, port } = options;
  if (netns && typeof netns === 'object') {
    return { server: netns.server, client: netns.client, host, port, counting: netns.server !== netns.client ? 'snmp' : 'none', async close() {} };
  }
  const root = process.getuid?.() === 0;
  // Here, on a port the kernel picks (a fixed one may be taken in a shared namespace).
  if (netns === 'none' || !root) return { server: undefined, client: undefined, host, port: 0, counting: 'none', async close() {} };
  const name = `fwshut-${process.pid}-${index}`;
  await run('ip', ['netns', 'add', name]);
  try {
    await run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
    const nft = spawn('ip', ['netns', 'exec', name, 'nft', '-f', '-'], { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    nft.stderr.on('data', (d) => (stderr += d));
    nft.stdin.end(rstRules(port, 'output'));
    const [code] = await once(nft, 'exit');
    if (code !== 0) throw new Error(`nft -f - in ${name} failed (${code}): ${stderr.trim()}`);
  } catch (error) {
    await run('ip', ['netns', 'delete', name]).catch(() => {});
    throw error;
  }
  return {
    server: name,
    client: name,
    host: '127.0.0.1',
    port,
    counting: 'nft',
    rsts: () => rstCounters(name),
    async close() {
      await run('ip', ['netns', 'delete', name]);
    },
  };
}

/** A node process in `netns` (or here), with every message it sends kept until asked for. */
function child(netns, script, config, execArgv = []) {
  const file = path.join(benchDir, script);
  const proc = netns
    ? spawn('ip', ['netns', 'exec', netns, process.execPath, ...execArgv, file], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    : spawn(process.execPath, [...execArgv, file], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const inbox = [];
  const waiting = [];
  let exited = false;
  proc.on('message', (m) => {
    const i = waiting.findIndex((w) => w.type === m.type);
    if (i >= 0) waiting.splice(i, 1)[0].resolve(m);
    else inbox.push(m);
  });
  proc.on('exit', (code) => {
    exited = true;
    for (const w of waiting.splice(0)) w.reject(new Error(`${script} exited (${code}) before '${w.type}'`));
  });
  proc.send(config);
  return {
    proc,
    /** Sends unless the process is gone (a client ends by itself once its loops are refused). */
    send: (m) => {
      if (proc.connected) proc.send(m, () => {});
    },
    message(type, timeoutMs) {
      const i = inbox.findIndex((m) => m.type === type);
      if (i >= 0) return Promise.resolve(inbox.splice(i, 1)[0]);
      if (exited) return Promise.reject(new Error(`${script} exited before '${type}'`));
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`${script}: no '${type}' within ${timeoutMs} ms`)), timeoutMs);
        waiting.push({
          type,
          resolve: (m) => (clearTimeout(timer), resolve(m)),
          reject: (e) => (clearTimeout(timer), reject(e)),
        });
      });
    },
    async stop() {
      if (exited) return;
      const gone = once(proc, 'exit');
      const timer = setTimeout(() => proc.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(timer);
    },
  };
}

/** One strategy under load: what the clients saw, matched with what the app finished. */
async function runVariant(variant, options, where) {
  const { connections, deadline, shutdownAfter, tail } = options;
  // This process relays the lab's wire: how busy and how responsive it stays while it does.
  const cpuAtStart = process.cpuUsage();
  const wallAtStart = performance.now();
  const loopDelay = monitorEventLoopDelay({ resolution: 5 });
  loopDelay.enable();
  const server = child(where.server, 'shutdown-server.mjs', { variant, host: where.host, port: where.port, deadline, finwaitModule: options.finwaitModule });
  let client;
  try {
    const { port } = await server.message('listening', 10_000);
    client = child(where.client, 'shutdown-client.mjs', {
      mode: 'load',
      host: where.host,
      port,
      connections,
      maxMs: shutdownAfter + deadline + tail + 30_000,
    });
    await client.message('ready', 15_000);
    await sleep(shutdownAfter);
    const rstsAtTrigger = where.rsts ? await where.rsts() : undefined;
    server.send({ type: 'shutdown' });
    const stopClients = sleep(deadline + tail).then(() => client.send({ type: 'stop' }));
    const done = await server.message('shutdown-done', deadline + 20_000);
    await stopClients;
    const { requests } = await client.message('results', 30_000);
    await client.stop();
    server.send({ type: 'final' });
    const final = await server.message('final', 10_000);
    await server.stop();
    const rstsAtEnd = where.rsts ? await where.rsts() : undefined;
    loopDelay.disable();
    const cpu = process.cpuUsage(cpuAtStart);
    const self = {
      cpuMs: (cpu.user + cpu.system) / 1000,
      wallMs: performance.now() - wallAtStart,
      loopDelayP99Ms: loopDelay.percentile(99) / 1e6,
      loopDelayMaxMs: loopDelay.max / 1e6,
    };
    return { ...analyze({ variant, deadline, done, requests, final, rstsAtTrigger, rstsAtEnd, counting: where.counting }), self, wire: where.wire && { ...where.wire } };
  } finally {
    loopDelay.disable();
    await Promise.all([client?.stop(), server.stop()]);
  }
}

function analyze({ variant, deadline, done, requests, final, rstsAtTrigger, rstsAtEnd, counting }) {
  const finished = new Set(final.log.finished);
  const received = new Set(final.log.received);
  const classes = {};
  const postClasses = {};
  let lost = 0;
  let lostPost = 0;
  let begunUnanswered = 0;
  let begunUnansweredPost = 0;
  let okNotFinished = 0;
  const notes = [];
  const unansweredKinds = {};
  const deadlineWall = done.triggerWall + deadline;
  let refusedBefore = 0;
  for (const [id, kind, cls, , at] of requests) {
    if (cls === 'refused' && at < deadlineWall) refusedBefore++;
    classes[cls] = (classes[cls] ?? 0) + 1;
    const post = kind === 'post' || kind === 'upload';
    if (post) postClasses[cls] = (postClasses[cls] ?? 0) + 1;
    if (cls === 'ok') {
      if (!finished.has(id)) okNotFinished++;
    } else if (finished.has(id)) {
      lost++;
      if (post) lostPost++;
    } else if (received.has(id)) {
      begunUnanswered++;
      if (post) begunUnansweredPost++;
      unansweredKinds[`${kind}:${cls}`] = (unansweredKinds[`${kind}:${cls}`] ?? 0) + 1;
    }
  }
  // RSTs that refused a connection attempt (a SYN to the closed port) are the 'refused' class,
  // not resets of connections: taken out of the server's counts, split at the deadline by when the
  // client saw them.
  const refused = classes.refused ?? 0;
  const c = final.counters;
  const snmpBefore = c.deadline.OutRsts - c.trigger.OutRsts - refusedBefore;
  const snmpAfter = c.final.OutRsts - c.deadline.OutRsts - (refused - refusedBefore);
  let rsts;
  if (counting === 'nft') {
    const refusedRsts = rstsAtEnd.refused - rstsAtTrigger.refused;
    const server = rstsAtEnd.server - rstsAtTrigger.server - refusedRsts;
    const client = rstsAtEnd.client - rstsAtTrigger.client;
    if (refusedRsts !== refused) notes.push(`${refusedRsts} RSTs answering a SYN (nft), ${refused} refusals seen by the clients`);
    // TcpOutRsts holds both ends; with no client RST it is the server's, exactly.
    const before = client === 0 ? `${snmpBefore}` : `${Math.max(0, snmpBefore - client)}..${Math.min(snmpBefore, server)}`;
    const after = client === 0 ? `${snmpAfter}` : `${Math.max(0, snmpAfter - client)}..${Math.min(snmpAfter, server)}`;
    rsts = { server, client, before, after, exact: client === 0 };
  } else if (counting === 'nft-lab') {
    // The server's namespace holds only the server's end: TcpOutRsts is the server's, exactly.
    const refusedRsts = rstsAtEnd.refused - rstsAtTrigger.refused;
    const server = rstsAtEnd.server - rstsAtTrigger.server - refusedRsts;
    const client = rstsAtEnd.client - rstsAtTrigger.client;
    if (refusedRsts !== refused) notes.push(`${refusedRsts} RSTs answering a SYN (nft), ${refused} refusals seen by the clients`);
    if (server !== snmpBefore + snmpAfter) notes.push(`server RSTs: ${server} counted by nft, ${snmpBefore + snmpAfter} by TcpOutRsts (both without the refusals)`);
    rsts = { server, client, before: `${snmpBefore}`, after: `${snmpAfter}`, exact: true };
  } else if (counting === 'snmp') {
    rsts = { server: snmpBefore + snmpAfter, client: 'n/a', before: `${snmpBefore}`, after: `${snmpAfter}`, exact: true };
  } else {
    rsts = { server: 'n/a', client: 'n/a', before: 'n/a', after: 'n/a', exact: false };
  }
  if (begunUnanswered) notes.push(`begun by the app, no response finished, by kind:class ${JSON.stringify(unansweredKinds)}`);
  const delta = (name) => c.final[name] - c.trigger[name];
  return {
    variant,
    total: requests.length,
    classes,
    postClasses,
    lost,
    lostPost,
    begunUnanswered,
    begunUnansweredPost,
    okNotFinished,
    rsts,
    kernel: { abortOnData: delta('TCPAbortOnData'), abortOnClose: delta('TCPAbortOnClose'), listenDrops: delta('ListenDrops') },
    closedMs: done.closedMs,
    cpuMs: done.cpuMs,
    apiMs: done.apiMs,
    stillOpen: done.stillOpen,
    openAtTrigger: done.openAtTrigger,
    rttAtTrigger: done.rttAtTrigger,
    acceptedAfterTrigger: done.acceptedAfterTrigger,
    report: done.report,
    apiError: done.apiError,
    serverClientErrors: final.clientErrors,
    notes,
  };
}

/**
 * 10,000 idle keep-alive connections (one request each, then idle 200 ms), closed by `variant`:
 * 'finwait' (closeServer with its defaults, the deadline `idleTimeout`) or 'node-idle' (Node's own
 * server.close() + closeIdleConnections(): every idle connection destroyed at once).
 */
async function runIdle(options, where, variant) {
  const { idleConnections, idleTimeout } = options;
  const server = child(where.server, 'shutdown-server.mjs', {
    variant,
    host: where.host,
    port: where.port,
    deadline: idleTimeout,
    // Longer than opening 10,000 connections takes: Node's own keep-alive timeout (5 s) would
    // otherwise close the first ones itself before or during the close measured.
    keepAliveTimeout: 120_000,
    holdUntilDeadline: false,
    finwaitModule: options.finwaitModule,
  }, options.serverExecArgv);
  let client;
  try {
    const { port } = await server.message('listening', 10_000);
    client = child(where.client, 'shutdown-client.mjs', { mode: 'idle', host: where.host, port, connections: idleConnections, maxMs: 120_000 });
    const ready = await client.message('ready', 90_000);
    await sleep(200); // every connection idle
    const rstsAtTrigger = where.rsts ? await where.rsts() : undefined;
    server.send({ type: 'shutdown' });
    const done = await server.message('shutdown-done', idleTimeout + 20_000);
    client.send({ type: 'stop' }); // it stops by itself once all are closed; this bounds it
    const { endings } = await client.message('results', 20_000);
    await client.stop();
    server.send({ type: 'final' });
    const final = await server.message('final', 10_000);
    await server.stop();
    const rstsAtEnd = where.rsts ? await where.rsts() : undefined;
    const serverRsts = rstsAtEnd ? rstsAtEnd.server - rstsAtTrigger.server : where.counting === 'snmp' ? final.counters.final.OutRsts - final.counters.trigger.OutRsts : 'n/a';
    return { variant, ready, done, endings, serverRsts };
  } finally {
    await Promise.all([client?.stop(), server.stop()]);
  }
}

const IDLE_LABELS = { 'node-idle': 'Node close()+closeIdleConnections()', finwait: 'finwait closeServer' };

const CLASS_ROWS = [
  ['ok', 'ok'],
  ['refused', 'refused (ECONNREFUSED, never reached the server)'],
  ['reset-before-send', 'reset before the request went out'],
  ['reset-after-send', 'reset after the request was sent'],
  ['closed-before-response', 'closed before any response (EOF)'],
  ['truncated', 'truncated response'],
];

function variantTable(results, options) {
  const header = ['', ...results.map((r) => LABELS[r.variant])];
  const row = (label, f) => [label, ...results.map(f)];
  const rows = [header, row('requests classified by the client', (r) => r.total)];
  for (const [cls, label] of CLASS_ROWS) {
    rows.push(row(label, (r) => r.classes[cls] ?? 0));
    if (cls.startsWith('reset') || cls.startsWith('closed') || cls === 'truncated') {
      rows.push(row('  of which POST (non-idempotent)', (r) => r.postClasses[cls] ?? 0));
    }
  }
  const known = new Set(CLASS_ROWS.map(([c]) => c));
  rows.push(row('other (timeout, other errors)', (r) => Object.entries(r.classes).filter(([c]) => !known.has(c)).map(([c, n]) => `${c}:${n}`).join(' ') || 0));
  rows.push(row('finished by the app, never received (lost)', (r) => r.lost));
  rows.push(row('  of which POST', (r) => r.lostPost));
  rows.push(row('begun by the app, no response finished', (r) => r.begunUnanswered));
  rows.push(row('  of which POST', (r) => r.begunUnansweredPost));
  rows.push(row(`server RSTs before the deadline (${options.deadline} ms)`, (r) => r.rsts.before));
  rows.push(row('server RSTs at/after the deadline', (r) => r.rsts.after));
  rows.push(row('client RSTs (whole close)', (r) => r.rsts.client));
  rows.push(row('kernel TCPAbortOnData / OnClose (both ends)', (r) => `${r.kernel.abortOnData} / ${r.kernel.abortOnClose}`));
  rows.push(row('shutdown: listener + all connections closed', (r) => (r.closedMs == null ? `> ${options.deadline + 10_000} ms` : `${r.closedMs.toFixed(0)} ms`)));
  rows.push(row('shutdown: API resolved', (r) => (r.apiMs == null ? 'never' : `${r.apiMs.toFixed(0)} ms`)));
  rows.push(row('server CPU time from trigger to all closed', (r) => `${r.cpuMs.toFixed(0)} ms`));
  rows.push(row('connections open at trigger / accepted after', (r) => `${r.openAtTrigger} / ${r.acceptedAfterTrigger}`));
  if (results.some((r) => r.rttAtTrigger && r.wire)) {
    rows.push(row('RTT at trigger, tcp_info (median, min-max)', (r) => (r.rttAtTrigger ? `${(r.rttAtTrigger.median / 1000).toFixed(1)} (${(r.rttAtTrigger.min / 1000).toFixed(1)}-${(r.rttAtTrigger.max / 1000).toFixed(1)}) ms` : 'n/a')));
  }
  return rows;
}

function verdict(ok) {
  return ok ? 'met' : 'MISSED';
}

/**
 * Runs every variant, then the 10,000-idle-connection close. Options: connections (50), deadline
 * (ms, 2000), shutdownAfter (ms of load before the trigger, 1000), tail (ms the clients go on after
 * the deadline, 500), variants, idleConnections (10 000, 0 skips), idleTimeout (closeServer's
 * timeout for them, ms, 10 000; the target is <= idleTarget, 600: the default drain window + 20%),
 * idleVariants (['node-idle', 'finwait']: Node's own close()+closeIdleConnections() and
 * closeServer, on the same kind of connections, in the same run), idleRounds (1; each round runs
 * every idle variant, the order alternating), serverExecArgv (extra node flags for the idle
 * part's server process, e.g. ['--cpu-prof']), netns ('auto' | 'none' | { server, client }),
 * host and port (the server's address in its namespace), finwaitModule (a path to load finwait from
 * in the server process instead of ../dist/index.js, to compare builds), path ('auto': the lab's
 * wire when labAvailable().ok and netns is 'auto', else loopback; 'lab': the wire or throw;
 * 'loopback'), delayMs (the wire's delay each way, 10), mtu (the wire's, 65535), testing (finwait/testing, default
 * ../dist/testing/index.js). The idle part always runs on loopback. Resolves with { path,
 * variants (rows), details, idle (rows), targets (rows), results }.
 */
export async function benchShutdown(finwait, options = {}) {
  if (typeof finwait?.closeServer !== 'function') throw new TypeError('benchShutdown(finwait): finwait.closeServer is missing');
  const o = {
    connections: 50,
    deadline: 2000,
    shutdownAfter: 1000,
    tail: 500,
    variants: VARIANTS,
    idleConnections: 10_000,
    idleTimeout: 10_000,
    // closeServer's default drain window is 500 ms: the whole close within it + 20%.
    idleTarget: 600,
    idleVariants: ['node-idle', 'finwait'],
    idleRounds: 1,
    netns: 'auto',
    host: '127.0.0.1',
    port: 8080,
    path: 'auto',
    delayMs: 10,
    // The wire's MTU: 65535, like loopback's 65536, so that the lab run differs from the loopback
    // one by the RTT only (and the relay handles ~10x fewer packets than at 1500).
    mtu: 65535,
    ...options,
  };
  if (!['auto', 'lab', 'loopback'].includes(o.path)) throw new TypeError(`benchShutdown: path must be 'auto', 'lab' or 'loopback', not ${o.path}`);
  let testing;
  let labWhyNot;
  if (o.path !== 'loopback' && o.netns === 'auto') {
    testing = loadTesting(o);
    const availability = testing ? testing.labAvailable() : { ok: false, reason: 'finwait/testing did not load (npm run build)' };
    if (!availability.ok) {
      labWhyNot = availability.reason;
      testing = undefined;
    }
  } else if (o.path === 'lab') labWhyNot = 'netns is not auto';
  if (o.path === 'lab' && !testing) throw new Error(`benchShutdown: the lab is unavailable: ${labWhyNot}`);
  const onLab = testing !== undefined;
  const results = [];
  let counting = 'none';
  let serverHost;
  const loadBefore = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  for (const [i, variant] of o.variants.entries()) {
    const where = onLab ? await labPlacement(o, testing) : await placement(o, i);
    counting = where.counting;
    serverHost = where.host;
    try {
      results.push(await runVariant(variant, o, where));
    } finally {
      await where.close();
    }
  }
  // The idle part: the same kind of connections closed by Node's own close and by closeServer,
  // alternating, each run in a namespace of its own. Always loopback: through the wire this part
  // would measure the wire's relay.
  const idleRuns = [];
  let idlePath;
  if (o.idleConnections > 0) {
    for (let round = 0; round < o.idleRounds; round++) {
      const order = round % 2 === 0 ? o.idleVariants : [...o.idleVariants].reverse();
      for (const variant of order) {
        const where = await placement(onLab ? { ...o, host: '127.0.0.1' } : o, o.variants.length + idleRuns.length);
        idlePath = where.server ? 'loopback in a network namespace of its own' : 'loopback';
        try {
          idleRuns.push(await runIdle(o, where, variant));
        } finally {
          await where.close();
        }
      }
    }
  }
  const idle = idleRuns.filter((r) => r.variant === 'finwait').at(-1);

  const rtts = results.map((r) => r.rttAtTrigger?.median).filter((v) => v !== undefined).sort((x, y) => x - y);
  const measuredRtt = rtts.length ? `${(rtts[rtts.length >> 1] / 1000).toFixed(1)} ms` : 'n/a';
  const path = onLab
    ? `path: lab wire, ~${2 * o.delayMs} ms RTT (measured: ${measuredRtt} from tcp_info)`
    : o.netns && typeof o.netns === 'object'
      ? `path: server in netns ${o.netns.server}, clients in netns ${o.netns.client}, server ${o.host}`
      : `path: loopback, no added RTT (the lab's wire is not available here${labWhyNot ? `: ${labWhyNot}` : ''})${counting === 'nft' ? '; each variant in a fresh network namespace' : ''}`;
  const details = [];
  if (onLab) {
    details.push(
      `each variant in a fresh lab: server in host a's namespace (${serverHost}), clients in host b's, every segment delayed ${o.delayMs} ms each way by the wire this process relays (wire.delay(${o.delayMs})), MTU ${o.mtu}; measured RTT = median over the variants of the median tcpi_rtt of the server's connections at the trigger`,
    );
    for (const r of results) {
      details.push(
        `${LABELS[r.variant]}: wire (this process) relayed ${r.wire.segments} TCP segments, longest delay queue ${r.wire.maxDelayed}; CPU ${r.self.cpuMs.toFixed(0)} ms over ${(r.self.wallMs / 1000).toFixed(1)} s (${((100 * r.self.cpuMs) / r.self.wallMs).toFixed(0)} % of a core), event-loop delay p99 ${r.self.loopDelayP99Ms.toFixed(1)} ms, max ${r.self.loopDelayMaxMs.toFixed(1)} ms`,
      );
    }
  }
  details.push(
    `${o.connections} keep-alive connections (every 5th thinks 0-800 ms between requests), load ${o.shutdownAfter} ms before the trigger, deadline ${o.deadline} ms for every strategy`,
    `load average (other processes share these cores) before ${loadBefore}, after ${readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')}`,
  );
  for (const r of results) {
    if (r.report) details.push(`${LABELS[r.variant]} report: totals ${JSON.stringify(r.report.totals)}, reasons ${JSON.stringify(r.report.reasons)}, acceptedFromQueue ${r.report.acceptedFromQueue}, untracked ${r.report.untracked}, duration ${r.report.duration.toFixed(0)} ms${Object.keys(r.report.errors).length ? `, errors ${JSON.stringify(r.report.errors)}` : ''}`);
    for (const c of r.report?.notGraceful ?? []) details.push(`  not graceful: ${JSON.stringify(c)}`);
    if (r.apiError) details.push(`${LABELS[r.variant]} threw: ${r.apiError.split('\n')[0]}`);
    if (r.okNotFinished) details.push(`${LABELS[r.variant]}: ${r.okNotFinished} responses received without the app's 'finish' (should be 0)`);
    if (!r.rsts.exact && counting !== 'none') details.push(`${LABELS[r.variant]}: the clients sent RSTs, so the server's RSTs before/after the deadline are a range`);
    for (const note of r.notes) details.push(`${LABELS[r.variant]}: ${note}`);
    if (r.stillOpen) details.push(`${LABELS[r.variant]}: ${r.stillOpen} connections still open 10 s after the deadline`);
    if (Object.keys(r.serverClientErrors).length) details.push(`${LABELS[r.variant]}: server 'clientError' ${JSON.stringify(r.serverClientErrors)}`);
  }
  if (counting === 'none') details.push('RSTs not counted: that needs a network namespace owned by the benchmark (root, nftables) or the server in a namespace without the clients');

  const fw = results.find((r) => r.variant === 'finwait');
  const targets = [['closeServer target', 'measured', '']];
  if (fw) {
    targets.push(['0 responses finished by the app and lost', String(fw.lost), verdict(fw.lost === 0)]);
    targets.push(['0 RSTs sent before the deadline', String(fw.rsts.before), fw.rsts.before === 'n/a' ? 'not measured' : verdict(fw.rsts.before === '0')]);
    const postResets = fw.postClasses['reset-after-send'] ?? 0;
    targets.push(['0 POSTs reset after being sent', String(postResets), verdict(postResets === 0)]);
  }
  let idleRows;
  if (idleRuns.length) {
    const median = (values) => {
      const sorted = values.filter((v) => typeof v === 'number').sort((x, y) => x - y);
      return sorted.length ? sorted[(sorted.length - 1) >> 1] : undefined;
    };
    const by = (variant) => idleRuns.filter((r) => r.variant === variant);
    const variants = o.idleVariants.filter((v) => by(v).length);
    const cell = (variant, f) => {
      const runs = by(variant).map(f);
      return runs.length === 1 ? runs[0] : runs.join(', ');
    };
    const ms = (v) => (v == null ? 'n/a' : `${v.toFixed(0)} ms`);
    idleRows = [
      [`${o.idleConnections} idle keep-alive connections (one GET each, idle 200 ms), closed`, ...variants.map((v) => IDLE_LABELS[v] ?? v)],
      ['path', ...variants.map(() => `${idlePath}${onLab ? ' (not the wire)' : ''}`)],
      ['connections opened / failed', ...variants.map((v) => cell(v, (r) => `${r.ready.ok} / ${r.ready.failed}`))],
      ['API resolved (closeServer: report duration)', ...variants.map((v) => cell(v, (r) => ms(r.done.report ? r.done.report.duration : r.done.apiMs)))],
      ['listener + all connections closed (server side)', ...variants.map((v) => cell(v, (r) => (r.done.closedMs == null ? 'not within the bound' : ms(r.done.closedMs))))],
      ['server CPU time during the close', ...variants.map((v) => cell(v, (r) => ms(r.done.cpuMs)))],
      ['client saw', ...variants.map((v) => cell(v, (r) => JSON.stringify(r.endings)))],
      ['server RSTs', ...variants.map((v) => cell(v, (r) => String(r.serverRsts)))],
      ['report totals', ...variants.map((v) => cell(v, (r) => (r.done.report ? JSON.stringify(r.done.report.totals) : '-')))],
      ['report reasons', ...variants.map((v) => cell(v, (r) => (r.done.report ? JSON.stringify(r.done.report.reasons) : '-')))],
    ];
    if (idle) {
      const fw = by('finwait');
      const nd = by('node-idle');
      const rep = idle.done.report;
      const duration = median(fw.map((r) => r.done.report?.duration));
      const allGraceful = fw.every((r) => r.done.report && r.done.report.totals.graceful === o.idleConnections && r.ready.ok === o.idleConnections && (r.serverRsts === 0 || r.serverRsts === 'n/a'));
      const met = rep && allGraceful && duration <= o.idleTarget;
      targets.push([
        `${o.idleConnections} idle keep-alive closed gracefully in <= ${o.idleTarget} ms (drain window + 20%)`,
        `${allGraceful ? o.idleConnections : 'not all'} graceful in ${ms(duration)}${fw.length > 1 ? ' (median)' : ''}`,
        verdict(met),
      ]);
      const cpuFw = median(fw.map((r) => r.done.cpuMs));
      const cpuNode = median(nd.map((r) => r.done.cpuMs));
      if (cpuNode !== undefined) targets.push(['server CPU time of the close, finwait / Node close()+closeIdleConnections()', `${ms(cpuFw)} / ${ms(cpuNode)} (${(cpuFw / cpuNode).toFixed(1)}x)`, '']);
    }
  }
  return { path, variants: variantTable(results, o), details, idle: idleRows, targets, results, idleResult: idle, idleRuns };
}

function table(rows) {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => String(r[c] ?? '').length)));
  return rows.map((r) => r.map((cell, c) => String(cell ?? '').padEnd(widths[c])).join('  ').trimEnd()).join('\n');
}

/** The whole result as text, as bench/run.mjs would print it. */
export function formatShutdown(result) {
  const parts = [result.path, '', table(result.variants)];
  if (result.details.length) parts.push('', ...result.details);
  if (result.idle) parts.push('', table(result.idle));
  parts.push('', table(result.targets));
  return parts.join('\n');
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const { createRequire } = await import('node:module');
  const finwait = createRequire(import.meta.url)('../dist/index.js');
  const started = Date.now();
  const result = await benchShutdown(finwait, JSON.parse(process.env.SHUTDOWN_OPTIONS ?? '{}'));
  console.log(formatShutdown(result));
  console.log(`\n(${((Date.now() - started) / 1000).toFixed(1)} s)`);
}
