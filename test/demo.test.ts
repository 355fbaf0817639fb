/** `npm start` (dist/demo.js) shows a real close lifecycle: run as a user would, output checked. */
import { describe, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';

describe('npm start (the demo)', () => {
  it('prints both ends of a real close: states, sources and the outcome', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [path.join(__dirname, '..', 'dist', 'demo.js')], {
      timeout: 15_000,
      env: { ...process.env, NO_COLOR: '1' },
    });
    for (const state of ['ESTABLISHED', 'FIN_WAIT2', 'CLOSE_WAIT', 'LAST_ACK', 'TIME_WAIT', 'CLOSED']) {
      expect(stdout).toContain(state);
    }
    expect(stdout).toMatch(/TIME_WAIT\s+\(diag\)/);
    expect(stdout).toContain('server: graceful, passive close');
    expect(stdout).toMatch(/stays in TIME_WAIT for another (5\d|60)\.\d s/);
    expect(stdout).not.toMatch(/\x1b\[/); // NO_COLOR
  });
});
