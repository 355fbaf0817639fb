/**
 * The CLI on a broken network: each run is in a fresh network namespace (`unshare -n`), where `lo`
 * is down, or made worse on purpose (no 127.0.0.1, SYNs dropped). Every command must end by itself
 * with a clear message and exit code 1 (3 for a scenario that needs the lab), never hang: the
 * runner kills a process still running after its timeout, and the test fails saying so.
 * Skipped with the reason where no network namespace can be made, failed under CI=true.
 */
import { describe, expect } from 'vitest';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { itNeeds, type Availability } from '../helpers';
import { finwait, freshNetns, type Ran } from './run';

const LOOPBACK_SCENARIOS = ['normal', 'three-way', 'half-close', 'reset', 'unread-data', 'fin-wait2-timeout', 'time-wait'];
// Node adds ' - Local (0.0.0.0:0)' to a connect error when it knows the local address.
const LO_DOWN = /^finwait: connect ENETUNREACH 127\.0\.0\.1:\d+( - Local \(\S+\))? \(no interface in this network namespace is up with 127\.0\.0\.1: bring the loopback up with 'ip link set lo up'\)$/;

/** `finwait ...args` in a fresh network namespace; `setup` runs there first (sh). */
function inFreshNetns(args: string[], options: { setup?: string; env?: NodeJS.ProcessEnv; timeout?: number } = {}): Promise<Ran> {
  const { prefix } = freshNetns();
  const setup = options.setup ? ['sh', '-c', `${options.setup} && exec "$0" "$@"`] : [];
  return finwait(args, options.env, { prefix: [...prefix!, ...setup], timeout: options.timeout ?? 15_000 });
}

/** Lines of stderr, without the trailing newline. */
const lines = (text: string): string[] => text.replace(/\n$/, '').split('\n');

/** An `ip` that fails every command, first in PATH: the lab cannot be made, so the demo falls back to loopback. */
function withFailingIp<T>(body: (env: NodeJS.ProcessEnv) => Promise<T>): Promise<T> {
  const bin = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-no-ip-'));
  fs.writeFileSync(path.join(bin, 'ip'), '#!/bin/sh\necho "ip: refused by the test" >&2\nexit 2\n', { mode: 0o755 });
  return body({ PATH: `${bin}:${process.env.PATH}` }).finally(() => fs.rmSync(bin, { recursive: true, force: true }));
}

function hasNft(): Availability {
  const netns = freshNetns();
  if (!netns.ok) return netns;
  const probe = spawnSync('nft', ['--version'], { encoding: 'utf8' });
  return probe.status === 0 ? { ok: true } : { ok: false, reason: 'the nft command (nftables) is not installed' };
}

const NETNS = 'a fresh network namespace';

describe.concurrent('finwait on a broken network', () => {
  for (const name of LOOPBACK_SCENARIOS) {
    itNeeds(NETNS, freshNetns, `demo ${name} --loopback with lo down: ENETUNREACH at once, exit 1, no hang`, async () => {
      const started = performance.now();
      const { code, stdout, stderr } = await inFreshNetns(['demo', name, '--loopback']);
      expect(lines(stderr)).toEqual([expect.stringMatching(LO_DOWN)]);
      expect(code).toBe(1);
      expect(stdout).toBe('');
      // It failed on the connect's error, not on a 10 s deadline.
      expect(performance.now() - started).toBeLessThan(5000);
    });
  }

  itNeeds(NETNS, freshNetns, 'demo --json with lo down: nothing on stdout, the error on stderr, exit 1', async () => {
    const { code, stdout, stderr } = await inFreshNetns(['demo', 'reset', '--loopback', '--json']);
    expect(code).toBe(1);
    expect(stdout).toBe('');
    expect(lines(stderr)).toEqual([expect.stringMatching(LO_DOWN)]);
  });

  itNeeds(NETNS, freshNetns, 'demo with lo up but no 127.0.0.1: the listen error, exit 1', async () => {
    const { code, stdout, stderr } = await inFreshNetns(['demo', 'normal', '--loopback'], { setup: 'ip link set lo up && ip addr del 127.0.0.1/8 dev lo' });
    expect(code).toBe(1);
    expect(stdout).toBe('');
    expect(lines(stderr)).toEqual([
      "finwait: listen EADDRNOTAVAIL: address not available 127.0.0.1 (no interface in this network namespace is up with 127.0.0.1: bring the loopback up with 'ip link set lo up')",
    ]);
  });

  itNeeds(
    NETNS,
    hasNft,
    "demo with every SYN dropped: the connect's deadline, then exit 1 (it used to stay alive on its listener)",
    async () => {
      const drop = "nft 'add table inet t; add chain inet t c { type filter hook input priority 0; }; add rule inet t c tcp flags syn drop'";
      const { code, stdout, stderr } = await inFreshNetns(['demo', 'normal', '--loopback'], { setup: `ip link set lo up && ${drop}`, timeout: 25_000 });
      expect(lines(stderr)).toEqual([expect.stringMatching(/^finwait: timed out after 10000 ms waiting for the connection to 127\.0\.0\.1:\d+$/)]);
      expect(code).toBe(1);
      expect(stdout).toBe('');
    },
    30_000,
  );

  for (const name of ['normal', 'time-wait']) {
    itNeeds(NETNS, freshNetns, `demo ${name} when the lab cannot be made: loopback is tried, fails with lo down, exit 1; the lab's failure is said too`, () =>
      withFailingIp(async (env) => {
        const { code, stdout, stderr } = await inFreshNetns(['demo', name], { env });
        expect(code).toBe(1);
        expect(stdout).toBe('');
        const said = lines(stderr);
        expect(said.at(-1)).toMatch(LO_DOWN);
        // Where the lab looked available (root), its failure is said before loopback's.
        if (said.length > 1) expect(said).toEqual([expect.stringMatching(new RegExp(`^finwait demo ${name}: lab: not used: The finwait lab is unavailable: .*refused by the test`)), said.at(-1)]);
      }),
    );
  }

  itNeeds(NETNS, freshNetns, 'demo simultaneous when the lab cannot be made: needs the lab, exit 3, no hang', () =>
    withFailingIp(async (env) => {
      const { code, stdout, stderr } = await inFreshNetns(['demo', 'simultaneous'], { env });
      expect(code).toBe(3);
      expect(stdout).toBe('');
      expect(stderr).toMatch(/^finwait demo simultaneous: needs the lab: both FINs must cross on the wire/);
      expect(stderr).toMatch(/is not available here: /);
    }),
  );

  itNeeds(NETNS, freshNetns, 'ss and ss --json in a namespace with nothing up: no sockets, exit 0', async () => {
    const text = await inFreshNetns(['ss']);
    expect(text).toMatchObject({ code: 0, stderr: '' });
    expect(text.stdout).toMatch(/^TCP sockets in this network namespace: 0\n/);
    const json = await inFreshNetns(['ss', '--json', '--state', 'time-wait']);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({ total: 0, sockets: [] });
  });
});
