import path from 'node:path';
import { defineConfig } from 'vitest/config';

export default defineConfig({
  // The package's own names, as a user imports them (test/examples/ is written that way).
  resolve: {
    alias: [
      { find: /^finwait\/testing$/, replacement: path.resolve('src/testing/index.ts') },
      { find: /^finwait\/vitest$/, replacement: path.resolve('src/vitest.ts') },
      { find: /^finwait$/, replacement: path.resolve('src/index.ts') },
    ],
  },
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 20_000,
    hookTimeout: 20_000,
    // Tests open real sockets; separate files run in separate processes.
    pool: 'forks',
    // A temporary folder of the run's own, which must be empty at the end.
    globalSetup: ['test/global-setup.ts'],
    typecheck: {
      enabled: true,
      include: ['test/**/*.test-d.ts'],
      tsconfig: './tsconfig.json',
    },
  },
});
