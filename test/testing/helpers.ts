/**
 * The lab test policy: a test that needs the lab (root, /dev/net/tun) skips with the reason when
 * the lab is unavailable, except under CI=true, where a skipped privileged test is a failure.
 */
import { createLab, labAvailable, type Lab, type LabAvailability, type LabOptions } from '../../src/testing/index';
import { itNeeds, privilegedGate } from '../helpers';

/** What to do with a lab test: run it, skip it (with the reason), or fail it (CI=true). */
export function labGate(availability: LabAvailability, env: NodeJS.ProcessEnv): { run: true } | { run: false; skip?: string; fail?: string } {
  return privilegedGate('the lab', availability, env);
}

/** A test that needs the lab's privileges (it makes its own labs, e.g. through the CLI). */
export function itNeedsLab(name: string, fn: () => Promise<void>, timeout?: number): void {
  itNeeds('the lab', labAvailable, name, fn, timeout);
}

/** A test with a fresh lab, closed in `finally` whatever the test did. */
export function itLab(name: string, fn: (lab: Lab) => Promise<void>, options: LabOptions & { timeout?: number } = {}): void {
  const { timeout, ...labOptions } = options;
  itNeedsLab(
    name,
    async () => {
      const lab = await createLab(labOptions);
      try {
        await fn(lab);
      } finally {
        await lab.close();
      }
    },
    timeout,
  );
}
