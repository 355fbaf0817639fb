// Runs inside the benchmark's own network namespace (bench/ss.mjs starts it with `ip netns exec`):
// fills the namespace with TIME_WAIT sockets, then times `finwait ss` against `ss -tanp` on them,
// alternating. Prints one JSON line with the figures on stdout.
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { benchDir, fillTimeWaits, median, prepareTimeWaitNamespace } from './lib.mjs';

const count = Number(process.argv[2] ?? 130_000);
const rounds = Number(process.argv[3] ?? 7);
const sources = 20; // 127.0.0.2 .. 127.0.0.21: each local address has ~64,000 ports
const BIN = path.join(benchDir, '..', 'dist', 'cli', 'main.js');

/** Runs `file args`, reading its stdout from a pipe; its wall time (spawn to exit), lines and bytes. */
function run(file, args) {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    const child = spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let bytes = 0;
    let lines = 0;
    let head = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => {
      if (head.length < 200) head += chunk.toString('latin1', 0, 200);
      bytes += chunk.length;
      for (let i = chunk.indexOf(10); i !== -1; i = chunk.indexOf(10, i + 1)) lines++;
    });
    child.stderr.setEncoding('utf8').on('data', (text) => (stderr += text));
    child.on('error', reject).on('close', (status) => {
      const ms = Number(process.hrtime.bigint() - start) / 1e6;
      if (status !== 0) reject(new Error(`${file} ${args.join(' ')} exited with ${status}: ${stderr}`));
      else resolve({ ms, lines, bytes, head });
    });
  });
}

prepareTimeWaitNamespace(count);

// The listener stays open while both tools run: each finds its process through /proc.
const server = net.createServer((socket) => socket.resume()); // reads the client's FIN, then ends
server.listen({ port: 0, host: '127.0.0.1', backlog: 4096 });
await new Promise((resolve) => server.once('listening', resolve));
const { port } = server.address();

// The clients close first, so the TIME_WAIT sockets are theirs: 127.0.0.x:eph -> 127.0.0.1:port,
// one pile towards one remote endpoint.
const fillStart = process.hrtime.bigint();
await fillTimeWaits(count, (i) => ({ port, host: '127.0.0.1', localAddress: `127.0.0.${2 + (i % sources)}` }));
const fillMs = Number(process.hrtime.bigint() - fillStart) / 1e6;

const tools = {
  finwait: [process.execPath, [BIN, 'ss']],
  ss: ['ss', ['-tanp']],
  summary: [process.execPath, [BIN, 'ss', '--summary']],
  startup: [process.execPath, [BIN, '--version']],
};
const ms = { finwait: [], ss: [], summary: [], startup: [] };
const shape = { finwait: new Set(), ss: new Set() };
// Warm-up (the page cache, for both), and finwait's count of what it listed.
const listed = Number(/^TCP sockets in this network namespace: (\d+)$/m.exec((await run(...tools.finwait)).head)?.[1]);
if (listed !== count + 1) throw new Error(`finwait ss listed ${listed} sockets, not ${count + 1}`);
// TIME_WAIT lasts 60 s from each socket's close: a round starts only while all of them will last it.
const elapsed = () => Number(process.hrtime.bigint() - fillStart) / 1e6;
let done = 0;
for (let r = 0; r < rounds && elapsed() < 50_000; r++, done++) {
  for (const name of r % 2 === 0 ? ['finwait', 'ss', 'summary', 'startup'] : ['ss', 'finwait', 'startup', 'summary']) {
    const result = await run(...tools[name]);
    ms[name].push(result.ms);
    if (shape[name]) shape[name].add(`${result.lines} ${result.bytes}`);
  }
}
server.close();
const measuredWithinMs = elapsed();
if (done < 3) throw new Error(`only ${done} rounds within 50 s of the first TIME_WAIT (filling took ${(fillMs / 1000).toFixed(1)} s): the machine is too busy`);
// Every round listed the same table: 130,000 sockets and the listener (ss: one heading line more).
const [finwaitShape, ssShape] = [[...shape.finwait], [...shape.ss]];
if (finwaitShape.length !== 1 || ssShape.length !== 1) throw new Error(`the output changed between rounds: finwait ${finwaitShape}, ss ${ssShape}`);
const [finwaitLines, finwaitBytes] = finwaitShape[0].split(' ').map(Number);
const [ssLines, ssBytes] = ssShape[0].split(' ').map(Number);
if (ssLines !== count + 2) throw new Error(`ss listed ${ssLines - 1} sockets, not ${count + 1}`);

console.log(
  JSON.stringify({
    count,
    rounds: done,
    fillMs,
    measuredWithinMs,
    finwait: median(ms.finwait),
    ss: median(ms.ss),
    summary: median(ms.summary),
    startup: median(ms.startup),
    finwaitLines,
    finwaitBytes,
    ssLines,
    ssBytes,
    raw: ms,
  }),
);
