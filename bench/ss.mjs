// `finwait ss` against `ss -tanp` on 130,000 TIME_WAIT sockets, in a network namespace of our own
// (created here, deleted when done); the work happens in bench/ss-child.mjs.
import { spawn, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { benchDir, fmt, machine, table, verdict } from './lib.mjs';

const TARGET = 1.5;

/** Why the benchmark cannot run here, or undefined. */
function cannotRun() {
  if (process.platform !== 'linux') return 'sock_diag and network namespaces are Linux only';
  if (process.getuid?.() !== 0) return 'creating a network namespace needs root (run npm run bench as root)';
  for (const tool of ['ip', 'ss']) {
    if (spawnSync(tool, ['-V']).error) return `${tool} (iproute2) is not installed`;
  }
  return undefined;
}

/** The table rows, or `{ skipped }` with the reason. */
export async function benchSs(finwait, { count = 130_000, rounds = 7 } = {}) {
  const why = cannotRun();
  if (why) return { skipped: why };
  // Namespaces share the kernel's established/TIME_WAIT hash table: both tools walk these too.
  const outside = finwait.sockets({ states: ['TIME_WAIT'] }).length;
  const ns = `finwait-bench-ss-${process.pid}`;
  const add = spawnSync('ip', ['netns', 'add', ns], { encoding: 'utf8' });
  if (add.status !== 0) return { skipped: `ip netns add failed: ${add.stderr.trim()}` };
  let child;
  const removeNs = () => spawnSync('ip', ['netns', 'del', ns]);
  // Interrupted: stop the child and delete the namespace, then die of the same signal.
  const onSignal = (signal) => {
    child?.kill('SIGKILL');
    removeNs();
    process.kill(process.pid, signal);
  };
  process.once('exit', removeNs).once('SIGINT', onSignal).once('SIGTERM', onSignal);
  let r;
  try {
    child = spawn('ip', ['netns', 'exec', ns, process.execPath, path.join(benchDir, 'ss-child.mjs'), String(count), String(rounds)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (chunk) => (out += chunk));
    const status = await new Promise((resolve, reject) => child.on('error', reject).on('close', resolve));
    if (status !== 0) throw new Error(`ss-child.mjs exited with ${status}`);
    r = JSON.parse(out.trim().split('\n').pop());
  } finally {
    process.off('exit', removeNs).off('SIGINT', onSignal).off('SIGTERM', onSignal);
    const del = removeNs();
    if (del.status !== 0) console.error(`could not delete network namespace ${ns}: ${del.stderr}`);
  }
  const rows = [
    ['operation', 'finwait', 'ss -tanp', 'ratio', 'target', ''],
    [`finwait ss, ${count} sockets`, fmt(r.finwait, 'ms'), fmt(r.ss, 'ms'), `${(r.finwait / r.ss).toFixed(2)}x`, `<= ${TARGET}x`, verdict(r.finwait / r.ss, TARGET)],
  ];
  const list = (values) => values.map((v) => v.toFixed(0)).join(', ');
  const notes = [
    `Wall time of each process, from spawn to the end of its output, read from a pipe by the benchmark (as \`| less\` would); medians of ${r.rounds} alternating rounds. Both list the ${count} TIME_WAIT sockets (one pile to one remote endpoint) and the listener, whose process both find through /proc.`,
    `Where finwait's time goes (medians of the same rounds): Node's start-up and loading the CLI (\`finwait --version\`) ${fmt(r.startup, 'ms')}; \`finwait ss --summary\` (start-up, the sock_diag dump, the owner scan and the analysis: everything but the rows) ${fmt(r.summary, 'ms')}; the rows ${fmt(r.finwait - r.summary, 'ms')}.`,
    `Runs (ms): finwait ${list(r.raw.finwait)}; ss -tanp ${list(r.raw.ss)}; --summary ${list(r.raw.summary)}; --version ${list(r.raw.startup)}.`,
    `The kernel walks one socket table shared by all namespaces: ${outside} TIME_WAIT sockets of the namespace \`npm run bench\` runs in were in it too.`,
    `Output: finwait ${r.finwaitLines} lines (${(r.finwaitBytes / 1e6).toFixed(1)} MB), ss ${r.ssLines} lines (${(r.ssBytes / 1e6).toFixed(1)} MB), the same every round. Filled in ${fmt(r.fillMs / 1000, 's')}; measured within ${fmt(r.measuredWithinMs / 1000, 's')} of the first TIME_WAIT (they last 60 s).`,
  ];
  return { rows, notes };
}

// `node bench/ss.mjs [rounds]` runs this benchmark alone (as root, after `npm run build`).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(`finwait benchmarks — ${machine()}\n`);
  const result = await benchSs(createRequire(import.meta.url)('../dist/index.js'), { rounds: Number(process.argv[2] ?? 7) });
  if (result.skipped) console.log(`skipped: ${result.skipped}`);
  else {
    console.log(table(result.rows));
    for (const note of result.notes) console.log(`\n  ${note}`);
  }
}
