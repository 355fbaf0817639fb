// `finwait ss` against `ss -tanp` on 130,000 TIME_WAIT sockets, in a network namespace of our own
// (created here, deleted when done); the work happens in bench/ss-child.mjs.
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { fmt, machine, ownNetnsUnavailable, printResult, runInOwnNetns, verdict } from './lib.mjs';

const TARGET = 1.5;

/** The table rows, or `{ skipped }` with the reason. */
export async function benchSs(finwait, { count = 130_000, rounds = 7 } = {}) {
  const why = ownNetnsUnavailable();
  if (why) return { skipped: why };
  // Namespaces share the kernel's established/TIME_WAIT hash table: both tools walk these too.
  const outside = finwait.sockets({ states: ['TIME_WAIT'] }).length;
  const r = await runInOwnNetns('ss-child.mjs', [String(count), String(rounds)]);
  if (r.skipped) return r;
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
  printResult(result);
}
