/**
 * The watch() suite once more, on the poller alone (watch.test.ts runs it on the back-end chosen
 * here, the destroy multicast wherever it can be joined): the same tests, unchanged, must pass on
 * every back-end.
 */
import './backend-poll';
import { expect, it } from 'vitest';
import { watch } from '../../src/index';
import { pair } from '../helpers';
import './watch.test';

it('this file runs on the poller', async () => {
  const p = await pair();
  try {
    expect(watch(p.client).backend).toMatchObject({ name: 'poll', reason: expect.stringContaining('FINWAIT_WATCH_BACKEND') });
  } finally {
    await p.close();
  }
});
