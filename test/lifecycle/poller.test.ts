/** The shared poller stops when nothing is watched (its own file: no other test's sockets are followed here). */
import { describe, it } from 'vitest';
import { reset, watch } from '../../src/index';
import { pollerStatus } from '../../src/lifecycle/watch';
import { pair, waitFor } from '../helpers';

describe('the shared poller', () => {
  it('leaves no timer running when nothing is watched', async () => {
    const p = await pair();
    const lc = watch(p.client);
    p.server.on('error', () => {});
    reset(p.client);
    await lc.done;
    await p.close();
    await waitFor('the poller to stop', () => {
      const status = pollerStatus();
      return status.watched === 0 && !status.scheduled ? true : undefined;
    });
  });

});
