// sockets({ states: ['TIME_WAIT'] }) against ss on 50,000 TIME_WAIT sockets, in a network
// namespace of our own (created here, deleted when done); the work happens in bench/diag-child.mjs.
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { benchDir, fmt, verdict } from './lib.mjs';

const TARGET = 1;

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
export async function benchDiag(finwait, { count = 50_000, rounds = 7 } = {}) {
  const why = cannotRun();
  if (why) return { skipped: why };
  // Namespaces share the kernel's established/TIME_WAIT hash table (unless tcp_child_ehash_entries
  // was set): a dump in ours walks the sockets of every other namespace too.
  const outside = finwait.sockets({ states: ['TIME_WAIT'] }).length;
  const ns = `finwait-bench-${process.pid}`;
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
  let result;
  try {
    child = spawn('ip', ['netns', 'exec', ns, process.execPath, path.join(benchDir, 'diag-child.mjs'), String(count), String(rounds)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (chunk) => (out += chunk));
    const status = await new Promise((resolve, reject) => child.on('error', reject).on('close', resolve));
    if (status !== 0) throw new Error(`diag-child.mjs exited with ${status}`);
    result = JSON.parse(out.trim().split('\n').pop());
  } finally {
    process.off('exit', removeNs).off('SIGINT', onSignal).off('SIGTERM', onSignal);
    const del = removeNs();
    if (del.status !== 0) console.error(`could not delete network namespace ${ns}: ${del.stderr}`);
  }
  const r = result;
  const countsMatch = r.oursCounts.length === 1 && r.ssCounts.length === 1 && r.oursCounts[0] === count && r.ssCounts[0] === count;
  if (!countsMatch) {
    throw new Error(`TIME_WAIT counts differ: created ${count}, sockets() saw ${r.oursCounts}, ss saw ${r.ssCounts}`);
  }
  const ssDump = r.ssFull - r.ssEmptyWalk;
  const ssDumpStartupOnly = r.ssFull - r.ssEmpty;
  const rows = [
    ['operation', 'finwait', 'ss', 'ratio', 'target', ''],
    [
      `sockets({ states: ['TIME_WAIT'] }), ${count} sockets`,
      fmt(r.ours, 'ms'),
      fmt(ssDump, 'ms'),
      `${(r.ours / ssDump).toFixed(2)}x`,
      `<= ${TARGET}x`,
      verdict(r.ours / ssDump, TARGET),
    ],
  ];
  const notes = [
    `ss = wall time of \`ss -tan state time-wait\` (${fmt(r.ssFull, 'ms')}, output to /dev/null) minus that of \`ss -tan state syn-recv\` (${fmt(r.ssEmptyWalk, 'ms')}: nothing to list, same start-up and table walk); medians of ${rounds} alternating rounds.`,
    `Subtracting only ss's start-up (\`ss -tan state listening\`, ${fmt(r.ssEmpty, 'ms')}; the kernel does not walk the table for it) gives ss ${fmt(ssDumpStartupOnly, 'ms')}, ratio ${(r.ours / ssDumpStartupOnly).toFixed(2)}x.`,
    `The kernel walks one socket table shared by all namespaces: ${outside} TIME_WAIT sockets of the namespace \`npm run bench\` runs in (left by earlier benchmarks or runs within 60 s) were in it too; both tools skip them and both pay for the walk.`,
    `Counts: ${count} created; sockets() listed ${r.oursCounts[0]} every round, ss ${r.ssCounts[0]} (before and after). Filled in ${fmt(r.fillMs / 1000, 's')}; measured within ${fmt(r.measuredWithinMs / 1000, 's')} of the first TIME_WAIT (they last 60 s).`,
  ];
  return { rows, notes };
}
