/**
 * Imported first by the `*.bpf.test.ts` files: every `watch()` in them follows its socket with the
 * BPF state-change stream (where it cannot run, with what it falls back to and the reason).
 */
process.env.FINWAIT_WATCH_BACKEND = 'bpf';
