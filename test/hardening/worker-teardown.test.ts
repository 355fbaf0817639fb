/**
 * Native callbacks survive environment teardown: a Worker terminated while its lab's wire carries
 * traffic (the TUN fds readable, the fd poll's callback due) ends the Worker, not the process.
 * Each run is a child process, so an abort fails the test instead of killing the runner.
 */
import { expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import path from 'node:path';
import { createLab } from '../../src/testing/index';
import { itNeeds, sealAvailable } from '../helpers';
import { itNeedsLab } from '../testing/helpers';

const testing = path.join(__dirname, '..', '..', 'dist', 'testing', 'index.js');

const script = `
  const { Worker } = require('node:worker_threads');
  const worker = new Worker(\`
    const t = require(${JSON.stringify(testing)});
    const { parentPort } = require('node:worker_threads');
    (async () => {
      const lab = await t.createLab();
      const server = await lab.b.listen(80);
      server.on('connection', (s) => s.on('data', (d) => s.write(d)));
      const c = await lab.a.connect(80);
      const chunk = Buffer.alloc(64 * 1024, 1);
      c.on('data', () => c.write(chunk)); // every echo sends 64 KiB more: the wire never idles
      c.write(chunk);
      parentPort.postMessage('busy');
    })();
  \`, { eval: true });
  worker.once('message', () => setTimeout(() => worker.terminate().then((code) => console.log('terminated', code)), 300));
  worker.on('error', (e) => { console.log('worker error', e.message); process.exitCode = 1; });
`;

/** Lab namespaces whose names carry one of `pids`. */
function namespacesOf(pids: number[]): string[] {
  return execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
    .split('\n')
    .map((line) => line.split(' ')[0])
    .filter((name) => pids.some((pid) => name.startsWith(`finwait-${pid}-`)));
}

itNeedsLab('terminating a Worker whose lab wire is busy ends the Worker, never the process (5 runs); the next lab sweeps what it left', async () => {
  const pids: number[] = [];
  for (let run = 0; run < 5; run++) {
    const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30_000 });
    pids.push(child.pid!);
    expect({ run, status: child.status, signal: child.signal, stderr: child.stderr.slice(0, 500) }).toEqual({
      run,
      status: 0,
      signal: null,
      stderr: '',
    });
    expect(child.stdout).toBe('terminated 1\n');
  }
  // A terminated Worker cannot close its lab; its owner is gone, so the next createLab() deletes it.
  const lab = await createLab();
  await lab.close();
  expect(namespacesOf(pids)).toEqual([]);
}, 120_000);

const index = path.join(__dirname, '..', '..', 'dist', 'index.js');

/**
 * Workers terminated at random moments while they open, watch and close connections: sooner or
 * later the termination lands inside a native call that fails (a closing socket's getsockopt) and
 * wants to throw into an environment that is going away. That must end the Worker, not abort the
 * process (node-addon-api aborted there until built with NODE_API_SWALLOW_UNTHROWABLE_EXCEPTIONS:
 * about one process in five, here, on Node 26).
 */
const churn = `
  const { Worker } = require('node:worker_threads');
  const code = \`
    const net = require('node:net');
    const finwait = require(${JSON.stringify(index)});
    const server = net.createServer((s) => { s.resume(); s.on('end', () => s.end()); }).listen(0, '127.0.0.1', () => {
      const port = server.address().port;
      const loop = () => {
        for (let i = 0; i < 20; i++) {
          const c = net.connect(port, '127.0.0.1');
          finwait.watch(c);
          c.on('error', () => {});
          c.on('connect', () => { try { finwait.getLinger(c); } catch {} c.end(); });
          c.resume();
        }
        setTimeout(loop, 1);
      };
      loop();
    });
  \`;
  (async () => {
    for (let i = 0; i < 40; i++) {
      const worker = new Worker(code, { eval: true });
      worker.on('error', () => {});
      await new Promise((resolve) => setTimeout(resolve, 30 + Math.random() * 120));
      await worker.terminate();
    }
    console.log('done');
  })();
`;

/**
 * The churn leaves thousands of TIME_WAIT sockets for 60 s: in a network namespace of its own where
 * one can be made (root), so that they go with it instead of crowding this one's table.
 */
function isolated(): string[] {
  const probe = spawnSync('unshare', ['-n', 'true']);
  return probe.status === 0 ? ['unshare', '-n', 'sh', '-c', 'ip link set lo up && exec "$0" "$@"'] : [];
}

it('40 Workers terminated at random moments while they open, watch and close connections: the process lives', () => {
  const [file, ...args] = [...isolated(), process.execPath, '-e', churn];
  const child = spawnSync(file!, args, { encoding: 'utf8', timeout: 60_000 });
  expect({ status: child.status, signal: child.signal, stdout: child.stdout, stderr: child.stderr.slice(0, 500) }).toEqual({ status: 0, signal: null, stdout: 'done\n', stderr: '' });
}, 90_000);

const binding = path.join(__dirname, '..', '..', 'dist', 'binding.js');

/**
 * A Worker that ends while closeServer() has its listener sealed (`SealedListener`: a SYN filter
 * and a copy of the listening fd, released once the listener closed): the copy goes with the
 * Worker, so no listening socket is left behind, sealed, holding the port.
 */
const sealedInWorker = `
  const { Worker } = require('node:worker_threads');
  const { sockets } = require(${JSON.stringify(index)});
  const worker = new Worker(\`
    const net = require('node:net');
    const { native } = require(${JSON.stringify(binding)});
    const { parentPort } = require('node:worker_threads');
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const port = server.address().port;
      globalThis.seal = new (native().SealedListener)(server._handle.fd);
      server.close(); // Node's fd closes; the seal's copy keeps the socket listening
      setInterval(() => {}, 1000); // the Worker lives until it is terminated
      parentPort.postMessage(port);
    });
  \`, { eval: true });
  worker.once('message', async (port) => {
    const before = sockets({ localPort: port, states: ['LISTEN'] }).length;
    await worker.terminate();
    const after = sockets({ localPort: port, states: ['LISTEN'] }).length;
    console.log(JSON.stringify({ before, after }));
  });
`;

itNeeds('a socket filter on a listening TCP socket', sealAvailable, "a Worker terminated with a sealed listener takes the seal's copy of the fd with it: nothing is left listening", async () => {
  const child = spawnSync(process.execPath, ['-e', sealedInWorker], { encoding: 'utf8', timeout: 30_000 });
  expect({ status: child.status, signal: child.signal, stdout: child.stdout, stderr: child.stderr.slice(0, 500) }).toEqual({
    status: 0,
    signal: null,
    stdout: '{"before":1,"after":0}\n',
    stderr: '',
  });
});
