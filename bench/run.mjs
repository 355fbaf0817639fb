// npm run bench: every benchmark, each against a baseline measured in the same run.
import { createRequire } from 'node:module';
import { benchLowLevel } from './low-level.mjs';
import { machine, table } from './lib.mjs';

const require = createRequire(import.meta.url);
const finwait = require('../dist/index.js');

console.log(`finwait benchmarks — ${machine()}`);
console.log('\nLow-level calls against a C loop making the same getsockopt(TCP_INFO) on the same sockets (median of rounds):\n');
console.log(table([['operation', 'finwait', 'C baseline', 'ratio', 'target', ''], ...(await benchLowLevel(finwait))]));
