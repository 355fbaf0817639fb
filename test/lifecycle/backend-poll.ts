/**
 * Imported first by the `*.poll.test.ts` files: every `watch()` in them follows its socket with the
 * poller alone, as where the destroy multicast cannot be joined.
 */
process.env.FINWAIT_WATCH_BACKEND = 'poll';
