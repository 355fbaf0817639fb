/**
 * The watch() suite once more, on the BPF state-change stream (watch.test.ts runs it on the
 * back-end chosen here, watch.multicast.test.ts and watch.poll.test.ts on the others): the same
 * tests, unchanged, must pass on every back-end. Without the privilege the suite runs on the
 * fallback, and the check below says so (a failure under CI).
 */
import './backend-bpf';
import { expect } from 'vitest';
import { watch } from '../../src/index';
import { bpfStatus } from '../../src/lifecycle/sources/bpf';
import { BPF, bpfAvailable, itNeeds, pair } from '../helpers';
import './watch.test';

itNeeds(BPF, bpfAvailable, 'this file runs on the BPF stream, whose records ended the orphans above', async () => {
  expect(bpfStatus().matched).toBeGreaterThan(0);
  const p = await pair();
  try {
    expect(watch(p.client).backend).toEqual({ name: 'bpf' });
  } finally {
    await p.close();
  }
});
