// Rolling restarts behind a real nginx: what the clients see while each of two Node instances is
// restarted on its own port, ten rounds in turn, under a bounded keep-alive load.
//
// Per run: nginx (started here as a child process, its own config, logs and temp files in a
// mkdtemp directory; upstream keepalive 32, one worker) in front of two instances of
// bench/restart-instance.mjs (the handlers of bench/shutdown-app.mjs), and bench/restart-client.mjs:
// `connections` keep-alive clients of nginx sending about `rate` requests/s in all, GET and POST
// with a body, each request classified by what the client saw (2xx, nginx's 5xx, reset, timeout).
// A round restarts instance 1, waits `pauseMs`, restarts instance 2, waits `pauseMs`. A restart is
//   handoff  the new instance listens on the port first (SO_REUSEPORT, finwait's listenReusePort()),
//            then the old one gets SIGTERM and shuts down by its strategy;
//   gap      SIGTERM, the old one shuts down and exits, then the new one starts and listens (the
//            only way on one port without SO_REUSEPORT).
// Strategies (on SIGTERM, same deadline): Node's server.close() then closeAllConnections() at the
// deadline, http-terminator, stoppable, @godaddy/terminus, finwait's gracefulShutdown().
// nginx configs: its default upstream settings (max_fails=1 fail_timeout=10s: one error marks an
// instance down for 10 s), and max_fails=0 (never marked down). After the load, nginx's error log
// is counted by kind and its access log for requests nginx passed to a second instance after an
// error (retried: the client saw no failure, nginx did).
//
// Where: when root, every run in a network namespace of its own (loopback inside it, fixed ports,
// net.ipv4.tcp_migrate_req set to `migrateReq` there); otherwise this namespace's loopback, on
// ports the kernel picks, with this namespace's tcp_migrate_req. Everything started is stopped on
// success, failure, Ctrl-C and SIGTERM: the children get SIGTERM (nginx) or SIGKILL (Node) on
// exit, the Node children exit when the IPC channel closes, nginx gets SIGTERM when this process
// dies (setpriv --pdeathsig, where setpriv exists), namespaces and temp directories are removed.
//
// `node bench/restart.mjs [--rounds=N] [--strategies=a,b] [--modes=handoff,gap]
//   [--configs=default,max_fails=0] [--rate=N] [--connections=N] [--migrate-req=0|1]`
import { execFile, execFileSync, spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { median } from './lib.mjs';

const run = promisify(execFile);
const benchDir = path.dirname(fileURLToPath(import.meta.url));

export const STRATEGIES = ['finwait', 'node', 'http-terminator', 'stoppable', 'terminus'];
export const LABELS = {
  finwait: 'finwait gracefulShutdown',
  node: 'Node close()+closeAll',
  'http-terminator': 'http-terminator',
  stoppable: 'stoppable',
  terminus: 'terminus',
};
export const CONFIGS = {
  default: { label: "nginx's default upstream settings (max_fails=1 fail_timeout=10s)", server: '' },
  'max_fails=0': { label: 'max_fails=0 (an instance is never marked down)', server: ' max_fails=0' },
};

export const DEFAULTS = {
  rounds: 10,
  strategies: STRATEGIES,
  modes: ['handoff', 'gap'],
  configs: Object.keys(CONFIGS),
  connections: 32,
  rate: 300,
  postBytes: 4096,
  /** Every strategy's deadline, ms. */
  deadline: 10_000,
  pauseMs: 500,
  warmup: 200,
  tailMs: 1000,
  /** Per request, client side. */
  timeoutMs: 15_000,
  /** net.ipv4.tcp_migrate_req in each run's namespace (root only). */
  migrateReq: 1,
  /** 'auto' (a namespace per run when root), 'netns' (required), 'loopback'. */
  path: 'auto',
};

/** nginx's error log lines by kind (the other lines of level warn and above count as 'other'). */
const LOG_KINDS = [
  ['refused', /connect\(\) failed \(111: Connection refused\)/],
  ['reset', /\(104: Connection reset by peer\)/],
  ['prematurely closed', /upstream prematurely closed connection/],
  ['timed out', /upstream timed out/],
  ['no live upstreams', /no live upstreams/],
  ['disabled', /upstream server temporarily disabled/],
];

function hasCommand(command) {
  const dirs = (process.env.PATH ?? '').split(path.delimiter).concat(['/usr/sbin', '/sbin']);
  return dirs.map((dir) => path.join(dir, command)).find((file) => {
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** The nginx binary, or undefined. */
export function nginxBinary() {
  return hasCommand('nginx');
}

/** Whether this benchmark can run here: { ok: true } or { ok: false, reason }. */
export function restartAvailable() {
  if (process.platform !== 'linux') return { ok: false, reason: `it needs Linux (this is ${process.platform})` };
  if (!nginxBinary()) return { ok: false, reason: 'nginx is not installed (Debian: apt-get install nginx)' };
  return { ok: true };
}

/** nginx's version, e.g. 'nginx/1.22.1' (`nginx -v` prints it on stderr). */
function nginxVersion(binary) {
  const out = spawnSync(binary, ['-v'], { encoding: 'utf8' });
  return `${out.stderr}${out.stdout}`.trim().replace(/^nginx version: /, '') || 'nginx';
}

/**
 * Everything a run starts, so that it can be stopped whatever happens: children (nginx gets
 * SIGTERM, so that its master stops its workers; Node gets SIGKILL), namespaces, directories.
 */
class Resources {
  children = new Set();
  namespaces = new Set();
  dirs = new Set();

  /** Stops everything, waiting for the children (SIGKILL after 5 s); then namespaces and dirs. */
  async release() {
    await Promise.all([...this.children].map((child) => stopChild(child, child.nginx ? 'SIGTERM' : 'SIGKILL', 5000)));
    for (const name of this.namespaces) await run('ip', ['netns', 'delete', name]).catch(() => {});
    for (const dir of this.dirs) fs.rmSync(dir, { recursive: true, force: true });
    this.namespaces.clear();
    this.dirs.clear();
  }

  /** The same without waiting, for process 'exit'. */
  releaseSync() {
    for (const child of this.children) {
      if (child.exitCode === null && child.signalCode === null) child.kill(child.nginx ? 'SIGTERM' : 'SIGKILL');
    }
    for (const name of this.namespaces) {
      try {
        execFileSync('ip', ['netns', 'delete', name], { stdio: 'ignore' });
      } catch {
        // already gone
      }
    }
    for (const dir of this.dirs) fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Sends `signal`, waits for the exit up to `ms`, then SIGKILLs it (and nginx's workers). */
async function stopChild(child, signal, ms) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  const workers = child.nginx ? childPids(child.pid) : [];
  child.kill(signal);
  const timer = setTimeout(() => {
    child.kill('SIGKILL');
    for (const pid of workers) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
    }
  }, ms);
  await exited;
  clearTimeout(timer);
}

function childPids(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

const setpriv = hasCommand('setpriv');

/**
 * A child in network namespace `netns` (or here), its output kept (and the last lines of stderr
 * for errors), messages by type when it has an IPC channel. With setpriv, it gets SIGTERM if this
 * process dies (--pdeathsig).
 */
function spawnChild(resources, { netns, command, args, ipc = false, nginx = false, env }) {
  const argv = [...(setpriv ? [setpriv, '--pdeathsig', 'TERM'] : []), command, ...args];
  const full = netns ? ['ip', 'netns', 'exec', netns, ...argv] : argv;
  const proc = spawn(full[0], full.slice(1), { stdio: ['ignore', 'pipe', 'pipe', ...(ipc ? ['ipc'] : [])], env: env ?? process.env });
  proc.nginx = nginx;
  resources.children.add(proc);
  proc.output = { stdout: '', stderr: '' };
  proc.stdout.setEncoding('utf8').on('data', (d) => (proc.output.stdout += d));
  proc.stderr.setEncoding('utf8').on('data', (d) => (proc.output.stderr += d));
  proc.exited = once(proc, 'exit').then(([code, signal]) => {
    resources.children.delete(proc);
    return code ?? signal;
  });
  const inbox = [];
  const waiting = [];
  if (ipc) {
    proc.on('message', (m) => {
      const i = waiting.findIndex((w) => w.type === m.type);
      if (i >= 0) waiting.splice(i, 1)[0].resolve(m);
      else inbox.push(m);
    });
  }
  proc.exited.then((code) => {
    for (const w of waiting.splice(0)) w.reject(new Error(`${path.basename(args[0] ?? command)} exited (${code}) before '${w.type}': ${proc.output.stderr.slice(-500)}`));
  });
  /** Resolves with the first message of `type` (kept if it came first), rejects after `ms` or on exit. */
  proc.message = (type, ms) => {
    const i = inbox.findIndex((m) => m.type === type);
    if (i >= 0) return Promise.resolve(inbox.splice(i, 1)[0]);
    if (proc.exitCode !== null || proc.signalCode !== null) return Promise.reject(new Error(`${command} exited before '${type}'`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no '${type}' within ${ms} ms from ${args.join(' ')}`)), ms);
      waiting.push({ type, resolve: (m) => (clearTimeout(timer), resolve(m)), reject: (e) => (clearTimeout(timer), reject(e)) });
    });
  };
  proc.post = (m) => {
    if (proc.connected) proc.send(m, () => {});
  };
  return proc;
}

/** A port nobody listens on now, in this namespace (for runs on this namespace's loopback). */
async function freePort() {
  const server = net.createServer().listen(0, '127.0.0.1');
  await once(server, 'listening');
  const { port } = server.address();
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function nginxConf(dir, { port, upstreams, config }) {
  const servers = upstreams.map((p) => `    server 127.0.0.1:${p}${CONFIGS[config].server};`).join('\n');
  return `# Written by bench/restart.mjs for one run; removed with its directory.
daemon off;
master_process on;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 1024; }
http {
  log_format restart '$status $request_method $upstream_status';
  access_log ${dir}/access.log restart;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  upstream app {
${servers}
    keepalive 32;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`;
}

/** nginx's error log: lines by kind, and a few of the others. */
function readErrorLog(file) {
  const kinds = Object.fromEntries([...LOG_KINDS.map(([k]) => [k, 0]), ['other', 0]]);
  const others = [];
  const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  for (const line of text.split('\n')) {
    if (!/\[(warn|error|crit|alert|emerg)\]/.test(line)) continue;
    const kind = LOG_KINDS.find(([, re]) => re.test(line))?.[0];
    if (kind) kinds[kind]++;
    else {
      kinds.other++;
      if (others.length < 5) others.push(line.replace(/^\S+ \S+ /, '').slice(0, 200));
    }
  }
  return { kinds, others };
}

/** nginx's access log: requests, and those passed to a second instance after an error ("502, 200"). */
function readAccessLog(file) {
  const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  let requests = 0;
  let retried = 0;
  for (const line of text.split('\n')) {
    if (!line) continue;
    requests++;
    if (line.includes(',')) retried++;
  }
  return { requests, retried };
}

/** Where a run goes: a fresh namespace (root), or this namespace's loopback. */
async function placement(options, resources, index) {
  const root = process.getuid?.() === 0 && hasCommand('ip');
  if (options.path === 'netns' && !root) throw new Error('path "netns" needs root and the ip command');
  if (options.path === 'loopback' || !root) {
    return { netns: undefined, nginxPort: await freePort(), ports: [await freePort(), await freePort()], migrateReq: readMigrateReq(options) };
  }
  const name = `fwrestart-${process.pid}-${index}`;
  await run('ip', ['netns', 'add', name]);
  resources.namespaces.add(name);
  await run('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
  let migrateReq;
  if (fs.existsSync('/proc/sys/net/ipv4/tcp_migrate_req')) {
    await run('ip', ['netns', 'exec', name, 'sh', '-c', `echo ${Number(options.migrateReq)} > /proc/sys/net/ipv4/tcp_migrate_req`]);
    migrateReq = Number(options.migrateReq);
  }
  return { netns: name, nginxPort: 8080, ports: [9001, 9002], migrateReq };
}

/** This namespace's tcp_migrate_req as a number, through finwait's tcpMigrateReq(); undefined without it. */
function readMigrateReq(options) {
  const on = createRequire(import.meta.url)(options.finwaitModule ?? '../dist/index.js').tcpMigrateReq();
  return on === undefined ? undefined : Number(on);
}

/** One instance of the app: started, listening. */
async function startInstance(resources, where, strategy, mode, port, options) {
  const proc = spawnChild(resources, { netns: where.netns, command: process.execPath, args: [path.join(benchDir, 'restart-instance.mjs')], ipc: true });
  proc.post({ strategy, mode, host: '127.0.0.1', port, deadline: options.deadline, finwaitModule: options.finwaitModule });
  const ready = await proc.message('ready', 15_000);
  if (ready.error) throw new Error(`instance on ${port} (${strategy}, ${mode}) failed to listen: ${ready.error}`);
  return proc;
}

/** The old instance's shutdown: SIGTERM, then its exit (SIGKILL after the deadline and 5 s more). */
async function shutdownInstance(proc, options) {
  const started = performance.now();
  const timer = setTimeout(() => proc.kill('SIGKILL'), options.deadline + 5000);
  proc.kill('SIGTERM');
  const exit = await proc.exited;
  clearTimeout(timer);
  const summary = /^finwait: shutdown .*$/m.exec(proc.output.stderr)?.[0];
  return { exit, ms: performance.now() - started, summary };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** One run: one strategy, one restart mode, one nginx config. */
async function runOne({ strategy, mode, config }, options, resources, index) {
  const where = await placement(options, resources, index);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-restart-'));
  resources.dirs.add(dir);
  // nginx's workers run as another user when it starts as root: they must reach their temp dirs.
  fs.chmodSync(dir, 0o711);
  fs.writeFileSync(path.join(dir, 'nginx.conf'), nginxConf(dir, { port: where.nginxPort, upstreams: where.ports, config }));
  const nginx = spawnChild(resources, {
    netns: where.netns,
    command: nginxBinary(),
    args: ['-p', dir, '-e', path.join(dir, 'error.log'), '-c', path.join(dir, 'nginx.conf')],
    nginx: true,
  });
  const instances = [];
  let client;
  try {
    // The pid file is written once the listening socket is open.
    const pidFile = path.join(dir, 'nginx.pid');
    const nginxUp = performance.now();
    while (!fs.existsSync(pidFile)) {
      if (nginx.exitCode !== null || nginx.signalCode !== null) throw new Error(`nginx exited (${nginx.exitCode ?? nginx.signalCode}): ${nginx.output.stderr.trim()}`);
      if (performance.now() - nginxUp > 10_000) throw new Error('nginx did not write its pid file within 10 s');
      await sleep(10);
    }
    for (const port of where.ports) instances.push(await startInstance(resources, where, strategy, mode, port, options));
    client = spawnChild(resources, { netns: where.netns, command: process.execPath, args: [path.join(benchDir, 'restart-client.mjs')], ipc: true });
    const roundsBudget = options.rounds * 2 * (options.deadline + options.pauseMs + 20_000);
    client.post({
      host: '127.0.0.1',
      port: where.nginxPort,
      connections: options.connections,
      rate: options.rate,
      postBytes: options.postBytes,
      timeoutMs: options.timeoutMs,
      warmup: options.warmup,
      maxMs: roundsBudget + options.tailMs + 60_000,
    });
    await client.message('warm', 30_000);

    const restarts = [];
    const loadStarted = performance.now();
    for (let round = 0; round < options.rounds; round++) {
      for (let i = 0; i < instances.length; i++) {
        const started = performance.now();
        let shutdown;
        if (mode === 'handoff') {
          const next = await startInstance(resources, where, strategy, mode, where.ports[i], options);
          shutdown = await shutdownInstance(instances[i], options);
          instances[i] = next;
        } else {
          shutdown = await shutdownInstance(instances[i], options);
          instances[i] = await startInstance(resources, where, strategy, mode, where.ports[i], options);
        }
        restarts.push({ ...shutdown, totalMs: performance.now() - started });
        await sleep(options.pauseMs);
      }
    }
    await sleep(options.tailMs);
    client.post({ type: 'stop' });
    const results = await client.message('results', options.timeoutMs + 30_000);
    const loadMs = performance.now() - loadStarted;
    for (const proc of instances) await shutdownInstance(proc, options);
    await stopChild(nginx, 'SIGQUIT', 10_000);
    return {
      strategy,
      mode,
      config,
      migrateReq: where.migrateReq,
      netns: Boolean(where.netns),
      client: results,
      errorLog: readErrorLog(path.join(dir, 'error.log')),
      accessLog: readAccessLog(path.join(dir, 'access.log')),
      restarts,
      loadMs,
    };
  } finally {
    await Promise.all([client, ...instances, nginx].filter(Boolean).map((c) => stopChild(c, c.nginx ? 'SIGTERM' : 'SIGKILL', 5000)));
    if (where.netns) {
      await run('ip', ['netns', 'delete', where.netns]).catch(() => {});
      resources.namespaces.delete(where.netns);
    }
    fs.rmSync(dir, { recursive: true, force: true });
    resources.dirs.delete(dir);
  }
}

/** Client outcomes summed over GET and POST: { total, ok, failed, byOutcome, failedPost }. */
export function clientTotals(counts) {
  const byOutcome = {};
  let total = 0;
  let failedPost = 0;
  for (const kind of ['get', 'post']) {
    for (const [outcome, n] of Object.entries(counts[kind])) {
      byOutcome[outcome] = (byOutcome[outcome] ?? 0) + n;
      total += n;
      if (kind === 'post' && outcome !== 'ok') failedPost += n;
    }
  }
  const ok = byOutcome.ok ?? 0;
  return { total, ok, failed: total - ok, byOutcome, failedPost };
}

/**
 * Runs every (config, strategy, mode) and returns the results. Stops everything it started
 * whatever happens; on SIGINT/SIGTERM it does so and then lets the signal end the process.
 */
export async function benchRestart(overrides = {}) {
  const options = { ...DEFAULTS, ...overrides };
  const available = restartAvailable();
  if (!available.ok) return { skipped: available.reason };
  const resources = new Resources();
  const onExit = () => resources.releaseSync();
  // On SIGINT/SIGTERM: stop everything, then let the signal end the process as it would have.
  let interrupted;
  const onSignal = (signal) => {
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
    console.error(`\nbench/restart.mjs: ${signal}: stopping nginx, the instances and the client, removing namespaces and temp files`);
    interrupted = resources.release().then(() => {
      process.off('exit', onExit);
      process.kill(process.pid, signal);
    });
  };
  process.on('exit', onExit).on('SIGINT', onSignal).on('SIGTERM', onSignal);
  const started = performance.now();
  const runs = [];
  try {
    const plan = options.configs.flatMap((config) => options.strategies.flatMap((strategy) => options.modes.map((mode) => ({ strategy, mode, config }))));
    for (const [index, one] of plan.entries()) {
      const result = await runOne(one, options, resources, index);
      if (interrupted) break;
      runs.push(result);
      options.onRun?.(result);
    }
  } catch (error) {
    // A run cut short by the signal fails (its children were stopped under it): not an error.
    if (!interrupted) throw error;
  } finally {
    if (interrupted) {
      await interrupted;
      await new Promise(() => {}); // the signal, re-raised, ends the process
    }
    await resources.release();
    process.off('exit', onExit).off('SIGINT', onSignal).off('SIGTERM', onSignal);
  }
  return { options, runs, nginx: nginxVersion(nginxBinary()), seconds: (performance.now() - started) / 1000 };
}

function table(rows) {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => String(r[c] ?? '').length)));
  return rows.map((r) => r.map((cell, c) => String(cell ?? '').padEnd(widths[c])).join('  ').trimEnd()).join('\n');
}

/** One table row of a run. */
function row(r) {
  const c = clientTotals(r.client.counts);
  const o = c.byOutcome;
  const fiveXX = Object.entries(o).filter(([k]) => /^status-5/.test(k) && k !== 'status-502' && k !== 'status-504').reduce((s, [, n]) => s + n, 0);
  const otherFailures = (o.truncated ?? 0) + (o.refused ?? 0) + (o.other ?? 0) + Object.entries(o).filter(([k]) => /^status-[1-4]/.test(k)).reduce((s, [, n]) => s + n, 0);
  const k = r.errorLog.kinds;
  const exits = {};
  for (const x of r.restarts) exits[x.exit] = (exits[x.exit] ?? 0) + 1;
  return [
    `${LABELS[r.strategy]}, ${r.mode}`,
    c.total,
    c.failed,
    c.failedPost,
    o['status-502'] ?? 0,
    o['status-504'] ?? 0,
    fiveXX,
    o.reset ?? 0,
    o.timeout ?? 0,
    otherFailures,
    `${k.refused}/${k.reset}/${k['prematurely closed']}/${k['timed out']}/${k['no live upstreams']}/${k.disabled}/${k.other}`,
    r.accessLog.retried,
    `${Math.round(median(r.restarts.map((x) => x.totalMs)))} (${Math.round(Math.max(...r.restarts.map((x) => x.totalMs)))})`,
    Object.entries(exits)
      .map(([e, n]) => `${e}:${n}`)
      .join(' '),
  ];
}

const HEADER = [
  'strategy, restart',
  'requests',
  'failed',
  'of them POST',
  '502',
  '504',
  'other 5xx',
  'reset',
  'timeout',
  'other',
  'nginx error.log: refused/reset/premature/timed out/no live/disabled/other',
  'retried by nginx',
  'restart ms median (max)',
  'old instance exits',
];

/** The results as text: one table per nginx config, the notes, the target. */
export function formatRestart(result) {
  if (result.skipped) return `skipped: ${result.skipped}`;
  const { options, runs } = result;
  const first = runs[0];
  const parts = [
    `Rolling restarts behind ${result.nginx}: 2 instances, ${options.rounds} rounds (each instance restarted ${options.rounds} times, ${options.pauseMs} ms apart), ` +
      `~${options.rate} requests/s from ${options.connections} keep-alive clients (GET, and POST with ${options.postBytes} bytes), deadline ${options.deadline} ms`,
    first?.netns
      ? `path: a network namespace per run (loopback inside it), net.ipv4.tcp_migrate_req=${first.migrateReq ?? 'absent'} there`
      : `path: this namespace's loopback, net.ipv4.tcp_migrate_req=${first?.migrateReq ?? 'absent'}`,
  ];
  for (const config of options.configs) {
    const rows = runs.filter((r) => r.config === config).map(row);
    if (!rows.length) continue;
    parts.push('', `${CONFIGS[config].label}:`, '', table([HEADER, ...rows]));
  }
  const notes = [];
  for (const r of runs) {
    const label = `${LABELS[r.strategy]}, ${r.mode}, ${r.config}`;
    if (r.client.failures.length) notes.push(`${label}: first failures (ms since the load began) ${r.client.failures.slice(0, 6).map((f) => `${f.at} ${f.kind} ${f.outcome}`).join('; ')}`);
    for (const line of r.errorLog.others.slice(0, 2)) notes.push(`${label}: nginx: ${line}`);
    const summaries = r.restarts.map((x) => x.summary).filter(Boolean);
    if (summaries.length) {
      // finwait's own account of each shutdown (its summary line on the old instance's stderr).
      const clean = summaries.filter((line) => /; clean, exit code 0$/.test(line)).length;
      const handedOff = summaries.map((line) => /; (\d+) other listeners? on the port \(tcp_migrate_req \S+: (\d+) migrated, (\d+) not\)/.exec(line)).filter(Boolean);
      const migrated = handedOff.reduce((sum, m) => sum + Number(m[2]), 0);
      const notMigrated = handedOff.reduce((sum, m) => sum + Number(m[3]), 0);
      notes.push(`${label}: finwait's reports: ${clean} of ${summaries.length} shutdowns clean; another listener on the port at ${handedOff.length} of them; accept-queue entries the kernel migrated (namespace counters) ${migrated}, failed ${notMigrated}`);
      for (const line of summaries.filter((l) => !/; clean, exit code 0$/.test(l)).slice(0, 2)) notes.push(`${label}: ${line}`);
    }
  }
  if (notes.length) parts.push('', ...notes);
  const targets = [['finwait target', 'measured', '']];
  for (const config of options.configs) {
    const fw = runs.find((r) => r.strategy === 'finwait' && r.mode === 'handoff' && r.config === config);
    if (!fw) continue;
    const failed = clientTotals(fw.client.counts).failed;
    targets.push([`0 failed requests over ${options.rounds} rounds, handoff, ${config}`, String(failed), failed === 0 ? 'met' : 'MISSED']);
  }
  if (targets.length > 1) parts.push('', table(targets));
  parts.push('', `(${result.seconds.toFixed(0)} s)`);
  return parts.join('\n');
}

/** One line on stderr as each run ends (the tables come at the end). */
export function progress(r) {
  const c = clientTotals(r.client.counts);
  console.error(`  ${LABELS[r.strategy]}, ${r.mode}, ${r.config}: ${c.failed} failed of ${c.total}`);
}

function parseArgs(argv) {
  const out = {};
  for (const arg of argv) {
    const m = /^--([a-z-]+)=(.*)$/.exec(arg);
    if (!m) throw new Error(`unknown argument ${arg} (see the comment at the top of bench/restart.mjs)`);
    const key = m[1].replace(/-([a-z])/g, (_, ch) => ch.toUpperCase());
    if (!(key in DEFAULTS)) throw new Error(`unknown option --${m[1]}`);
    out[key] = Array.isArray(DEFAULTS[key]) ? m[2].split(',') : typeof DEFAULTS[key] === 'number' ? Number(m[2]) : m[2];
  }
  for (const s of out.strategies ?? []) if (!STRATEGIES.includes(s)) throw new Error(`unknown strategy ${s}`);
  for (const c of out.configs ?? []) if (!CONFIGS[c]) throw new Error(`unknown config ${c}`);
  for (const m of out.modes ?? []) if (m !== 'handoff' && m !== 'gap') throw new Error(`unknown mode ${m}`);
  return out;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const overrides = parseArgs(process.argv.slice(2));
  const result = await benchRestart({ ...overrides, onRun: progress });
  console.log(formatRestart(result));
}
