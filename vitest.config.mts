import path from 'node:path';
import { defineConfig } from 'vitest/config';

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
 * Files run in parallel up to vitest's default (one fewer than the CPUs, at least one). The
 * kernel rows (test/kernel/) run after the rest, several files at once whatever the CPUs: each
 * builds labs of its own (network namespaces of their own), and they spend most of their time
 * waiting for the kernels' timers and segments, not on a CPU.
 */
const KERNEL_ROWS_AT_ONCE = 4;

/**
 * Kernel rows that time the kernel's timers by when this process read each segment off the wire,
 * which it relays: run alone, last, since other labs relayed at the same moment add their delay
 * to those readings (row 10's gaps between retransmissions, and its RTO, which the relay's delay
 * is part of).
 */
const TIMED_KERNEL_ROWS = ['test/kernel/retransmission.test.ts'];

export default defineConfig({
  resolve,
  test: {
    // A temporary folder of the run's own, which must be empty at the end: set here, in the root
    // config, so that it is made once for the run, not once per project.
    globalSetup: ['test/global-setup.ts'],
    projects: [
      {
        resolve,
        test: {
          ...shared,
          name: 'finwait',
          include: ['test/**/*.test.ts'],
          exclude: ['test/kernel/**'],
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
          name: 'kernel',
          include: ['test/kernel/**/*.test.ts'],
          exclude: TIMED_KERNEL_ROWS,
          maxWorkers: KERNEL_ROWS_AT_ONCE,
          // Projects with their own maxWorkers run in a group of their own, after the others.
          sequence: { groupOrder: 1 },
        },
      },
      {
        resolve,
        test: {
          ...shared,
          name: 'kernel-timed',
          include: TIMED_KERNEL_ROWS,
          maxWorkers: 1,
          sequence: { groupOrder: 2 },
        },
      },
    ],
  },
});
