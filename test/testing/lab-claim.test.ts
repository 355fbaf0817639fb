/**
 * A lab's namespace swept by another process while it was being made: the sweeper unmounts the
 * namespace before it unlinks its name, so the maker can open a plain file there. Its claim must
 * take that as "swept" (and make a lab under new names), not fail the lab.
 */
import { expect } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { labNetnsNames, NETNS_DIR } from '../../src/testing/netns';
import { claimNew } from '../../src/testing/owner';
import { itNeedsLab } from './helpers';

itNeedsLab('claimNew(): a name that is no namespace any more (unmounted, not yet unlinked) is swept, not an error', async () => {
  const { a: name } = labNetnsNames();
  const file = path.join(NETNS_DIR, name);
  fs.mkdirSync(NETNS_DIR, { recursive: true });
  fs.writeFileSync(file, '', { flag: 'wx' }); // what `ip netns delete` leaves between umount and unlink
  try {
    expect(claimNew(name)).toBeUndefined();
    expect(fs.existsSync(file)).toBe(true); // the maker deletes nothing it does not own
  } finally {
    fs.rmSync(file, { force: true });
  }
});
