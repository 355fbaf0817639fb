// sockets({ states: ['TIME_WAIT'] }) against ss on 50,000 TIME_WAIT sockets, in a network
// namespace of our own (created here, deleted when done); the work happens in bench/diag-child.mjs.
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { fmt, machine, ownNetnsUnavailable, printResult, runInOwnNetns, verdict } from './lib.mjs';

const TARGET = 1;

/** The table rows, or `{ skipped }` with the reason. */
export async function benchDiag(finwait, { count = 50_000, rounds = 7 } = {}) {
  const why = ownNetnsUnavailable();
  if (why) return { skipped: why };
  // Namespaces share the kernel's established/TIME_WAIT hash table (unless tcp_child_ehash_entries
  // was set): a dump in ours walks the sockets of every other namespace too.
  const outside = finwait.sockets({ states: ['TIME_WAIT'] }).length;
  const r = await runInOwnNetns('diag-child.mjs', [String(count), String(rounds)]);
  if (r.skipped) return r;
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

// `node bench/diag.mjs [rounds]` runs this benchmark alone (as root, after `npm run build`).
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  console.log(`finwait benchmarks — ${machine()}\n`);
  const result = await benchDiag(createRequire(import.meta.url)('../dist/index.js'), { rounds: Number(process.argv[2] ?? 7) });
  printResult(result);
}
