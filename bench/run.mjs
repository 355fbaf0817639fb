// npm run bench: every benchmark, each against a baseline measured in the same run.
import { createRequire } from 'node:module';
import { benchDiag } from './diag.mjs';
import { benchLowLevel } from './low-level.mjs';
import { benchWatch } from './watch.mjs';
import { benchMetrics } from './metrics.mjs';
import { benchShutdown, formatShutdown } from './shutdown.mjs';
import { benchRestart, formatRestart, progress } from './restart.mjs';
import { benchSs } from './ss.mjs';
import { machine, printResult } from './lib.mjs';

const require = createRequire(import.meta.url);
const finwait = require('../dist/index.js');

function print(title, result) {
  console.log(`\n${title}\n`);
  printResult(result);
}

const started = process.hrtime.bigint();
console.log(`finwait benchmarks — ${machine()}`);
// The dump runs first: the TIME_WAIT sockets the other two leave behind sit in the socket table
// every namespace shares, and would lengthen its walk for 60 s.
print('sock_diag dump of TIME_WAIT sockets against ss, in a network namespace of its own:', await benchDiag(finwait));
// Next, for the same reason; deleting its namespace takes its 130,000 TIME_WAIT sockets with it.
print('finwait ss against ss -tanp on 130,000 TIME_WAIT sockets, in a network namespace of its own:', await benchSs(finwait));
print('Low-level calls against a C loop making the same getsockopt(TCP_INFO) on the same sockets:', {
  rows: await benchLowLevel(finwait),
  notes: [
    'The fastest of 15 rounds of 100,000 calls (7 rounds of 30 sweeps for tcpStates), one C round and one finwait round alternating; the C program inherits the same sockets (a connection held by a peer process).',
  ],
});
print('watch() on both ends of short connections against the same connections unwatched, per back-end:', await benchWatch());
print('serverMetrics() on a server\'s short connections against the same server without it, per trace source:', await benchMetrics());
console.log('\nServer shutdown under load: Node, http-terminator, stoppable and closeServer, same handlers, same deadline:\n');
console.log(formatShutdown(await benchShutdown(finwait)));
// Last: it starts nginx itself, and is skipped (saying why) where nginx is not installed.
console.log('\nRolling restarts behind nginx, per shutdown strategy, with the same-port handoff and with stop-then-start:\n');
console.log(formatRestart(await benchRestart({ onRun: progress })));
console.log(`\nTotal ${(Number(process.hrtime.bigint() - started) / 1e9).toFixed(0)} s.`);
