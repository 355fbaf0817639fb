/**
 * Imported first by the `*.multicast.test.ts` files: every `watch()` in them follows its socket with
 * the sock_diag destroy multicast, also where the BPF stream could run.
 */
process.env.FINWAIT_WATCH_BACKEND = 'destroy-multicast';
