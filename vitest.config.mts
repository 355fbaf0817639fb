import path from 'node:path';
import { defineConfig } from 'vitest/config';
import { BaseSequencer, type TestSpecification } from 'vitest/node';

// The package's own names, as a user imports them (test/examples/ is written that way).
const resolve = {
  alias: [
    { find: /^finwait\/testing$/, replacement: path.resolve('src/testing/index.ts') },
    { find: /^finwait\/vitest$/, replacement: path.resolve('src/vitest.ts') },
    { find: /^finwait$/, replacement: path.resolve('src/index.ts') },
  ],
};

const shared = {
  testTimeout: 20_000,
  hookTimeout: 20_000,
  // Tests open real sockets; separate files run in separate processes.
  pool: 'forks' as const,
};

/**
 * Files of the 'finwait' project run three at once, whatever the CPUs: most spend their time
 * waiting on sockets, timers and child processes, not on a CPU, and each uses ports the kernel
 * picks, namespaces and temporary folders of its own.
 */
const FILES_AT_ONCE = 3;

/**
 * The longest files, started first (in this order) so that the short ones fill the time beside
 * them: the pack (two compiles of the addon, shared with arm64.test.ts), the build from source,
 * TypeDoc, and the ones that wait longest on timers and child processes.
 */
const LONGEST_FIRST = [
  'test/package.test.ts',
  'test/install.test.ts',
  'test/api-reference.test.ts',
  'test/cli/broken-network.test.ts',
];

/** Files that use what a longer file builds (the pack): started last, when it is there. */
const LAST = ['test/arm64.test.ts'];

/**
 * Files that run one at a time, after the others and before the kernel rows, with no other file
 * of the run beside them:
 * - lab lifetimes: a process or Worker that ends without closing its lab leaves its namespaces
 *   until the next createLab() sweeps them, and these files look for them in between (any other
 *   file's lab would sweep them first);
 * - a decision closeServer() makes by the clock: the peer's write after our FIN must come within
 *   the 20 ms quiet period (server-net), and the handoff counters must be read while every file
 *   descriptor is taken (shutdown-out-of-fds); both missed it with other files loading the CPUs;
 * - `finwait demo` in the lab, whose process relays the wire: with the CPUs loaded the relay held
 *   B's ACK past A's retransmission timeout, and A's FIN went twice (a sequence the scenarios'
 *   drawings do not have);
 * - a trace that loses events on purpose (a burst of connections while its loop is blocked): the
 *   burst reaches every other BPF trace of the run too.
 */
const ALONE = [
  'test/testing/lifetime.test.ts',
  'test/hardening/lab-worker.test.ts',
  'test/server-net.test.ts',
  'test/hardening/shutdown-out-of-fds.test.ts',
  'test/cli/demo-lab.test.ts',
  'test/trace/bpf-lost.test.ts',
];

/**
 * The kernel rows (test/kernel/) run after the rest, several files at once: each builds labs of
 * its own (network namespaces of their own), and they spend most of their time waiting for the
 * kernels' timers and segments, not on a CPU.
 */
const KERNEL_ROWS_AT_ONCE = 4;

/**
 * Kernel rows that time the kernel's timers by when this process read each segment off the wire,
 * which it relays: run alone, last, since other labs relayed at the same moment add their delay
 * to those readings (row 10's gaps between retransmissions, and its RTO, which the relay's delay
 * is part of).
 */
const TIMED_KERNEL_ROWS = ['test/kernel/retransmission.test.ts'];

/** vitest's order (files that failed last time first, then the longest), with the lists above. */
class Sequencer extends BaseSequencer {
  override async sort(files: TestSpecification[]): Promise<TestSpecification[]> {
    const sorted = await super.sort(files);
    const rank = (spec: TestSpecification): number => {
      const file = path.relative(this.ctx.config.root, spec.moduleId);
      if (LONGEST_FIRST.includes(file)) return LONGEST_FIRST.indexOf(file) - LONGEST_FIRST.length;
      return LAST.includes(file) ? 1 : 0;
    };
    // Within a project only: projects keep the order of their groups.
    const order = new Map(sorted.map((spec, i) => [spec, i]));
    return sorted.sort((a, b) => (a.project === b.project ? rank(a) - rank(b) : 0) || order.get(a)! - order.get(b)!);
  }
}

export default defineConfig({
  resolve,
  test: {
    sequence: { sequencer: Sequencer },
    // A temporary folder of the run's own, which must be empty at the end: set here, in the root
    // config, so that it is made once for the run, not once per project.
    globalSetup: ['test/global-setup.ts'],
    projects: [
      {
        resolve,
        test: {
          ...shared,
          name: 'finwait',
          maxWorkers: FILES_AT_ONCE,
          include: ['test/**/*.test.ts'],
          exclude: ['test/kernel/**', ...ALONE],
          typecheck: {
            enabled: true,
            include: ['test/**/*.test-d.ts'],
            tsconfig: './tsconfig.json',
          },
        },
      },
      {
        resolve,
        test: {
          ...shared,
          name: 'finwait-alone',
          include: ALONE,
          maxWorkers: 1,
          // Projects with their own maxWorkers run in a group of their own, after the others.
          sequence: { groupOrder: 1 },
        },
      },
      {
        resolve,
        test: {
          ...shared,
          name: 'kernel',
          include: ['test/kernel/**/*.test.ts'],
          exclude: TIMED_KERNEL_ROWS,
          maxWorkers: KERNEL_ROWS_AT_ONCE,
          sequence: { groupOrder: 2 },
        },
      },
      {
        resolve,
        test: {
          ...shared,
          name: 'kernel-timed',
          include: TIMED_KERNEL_ROWS,
          maxWorkers: 1,
          sequence: { groupOrder: 3 },
        },
      },
    ],
  },
});
