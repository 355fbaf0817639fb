/**
 * The watch() suite once more, on the sock_diag destroy multicast (the back-end chosen where the BPF
 * stream cannot run; forced here, so that it is tested also where it can).
 */
import './backend-multicast';
import { expect, it } from 'vitest';
import { watch } from '../../src/index';
import { pair } from '../helpers';
import './watch.test';

it('this file runs on the destroy multicast', async () => {
  const p = await pair();
  try {
    expect(watch(p.client).backend).toEqual({ name: 'destroy-multicast' });
  } finally {
    await p.close();
  }
});
