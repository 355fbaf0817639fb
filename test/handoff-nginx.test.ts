/**
 * The short version of bench/restart.mjs: two rounds of rolling restarts behind a real nginx
 * (started by the harness, its own config in a temp directory), finwait's handoff with nginx's
 * default upstream settings. And the harness's promise to leave nothing behind: after a run, and
 * after Ctrl-C or SIGTERM in the middle of one, no nginx, no Node child, no namespace, no temp
 * directory is left. Needs nginx: skips with the reason without it, fails under CI=true.
 */
import { describe, expect } from 'vitest';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { benchRestart, restartAvailable, type RestartRun } from '../bench/restart.mjs';
import { itNeeds, waitFor } from './helpers';

const harness = path.join(__dirname, '..', 'bench', 'restart.mjs');

/** Every process descended from `pid` now (through /proc/<pid>/task/<tid>/children). */
function descendants(pid: number): number[] {
  const out: number[] = [];
  let tasks: string[] = [];
  try {
    tasks = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tasks) {
    let children: number[] = [];
    try {
      children = fs.readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
    } catch {
      continue;
    }
    for (const child of children) out.push(child, ...descendants(child));
  }
  return out;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function command(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return '';
  }
}

/** The harness's network namespaces (made when root) for harness process `pid`. */
function namespacesOf(pid: number): string[] {
  return fs.existsSync('/run/netns') ? fs.readdirSync('/run/netns').filter((n) => n.startsWith(`fwrestart-${pid}-`)) : [];
}

function tempDirs(): Set<string> {
  return new Set(fs.readdirSync(os.tmpdir()).filter((d) => d.startsWith('finwait-restart-')));
}

function failed(run: RestartRun): number {
  let n = 0;
  for (const kind of ['get', 'post'] as const) for (const [outcome, count] of Object.entries(run.client.counts[kind])) if (outcome !== 'ok') n += count;
  return n;
}

describe('rolling restarts behind nginx (short bench/restart.mjs)', () => {
  itNeeds(
    'nginx',
    restartAvailable,
    "finwait's handoff, nginx's default max_fails: two rounds, no failed request, no upstream error in nginx's log; nothing left behind",
    async () => {
      const dirsBefore = tempDirs();
      const result = await benchRestart({ rounds: 2, strategies: ['finwait'], modes: ['handoff'], configs: ['default'], rate: 200, connections: 16, pauseMs: 200, warmup: 100, tailMs: 300 });
      if (result.skipped !== undefined) throw new Error(result.skipped);
      const [run] = result.runs;
      expect(run!.restarts).toHaveLength(4);
      expect(run!.client.counts.get.ok).toBeGreaterThan(100);
      expect(run!.client.counts.post.ok).toBeGreaterThan(100);
      expect(failed(run!), JSON.stringify(run!.client)).toBe(0);
      expect(run!.errorLog.kinds).toEqual({ refused: 0, reset: 0, 'prematurely closed': 0, 'timed out': 0, 'no live upstreams': 0, disabled: 0, other: 0 });
      expect(run!.accessLog.retried).toBe(0);
      // Each old instance shut down cleanly by its own account (exit code 0, its summary line).
      for (const restart of run!.restarts) {
        expect(restart.exit).toBe(0);
        expect(restart.summary).toMatch(/; clean, exit code 0$/);
      }
      expect(descendants(process.pid).filter((pid) => /nginx|restart-(instance|client)/.test(command(pid)))).toEqual([]);
      expect(namespacesOf(process.pid)).toEqual([]);
      expect([...tempDirs()].filter((d) => !dirsBefore.has(d))).toEqual([]);
    },
    // One retry: the idle upstream connections are handed to the next instance, so no request can
    // race a FIN any more; but in two early runs of the full benchmark nginx logged an upstream
    // reset on a GET (which it retried: no client saw a failure), cause not found. The retry must
    // then fail nothing either.
    { timeout: 60_000, retry: 1 },
  );

  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    itNeeds(
      'nginx',
      restartAvailable,
      `${signal} in the middle of a run: the harness stops nginx, the instances and the client, and removes its namespace and temp directory`,
      async () => {
        const dirsBefore = tempDirs();
        const child = spawn(process.execPath, [harness, '--rounds=10', '--strategies=finwait', '--modes=handoff', '--configs=default', '--rate=100', '--connections=8'], { stdio: ['ignore', 'pipe', 'pipe'] });
        let stderr = '';
        child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
        const exited = once(child, 'exit');
        let started: number[] = [];
        try {
          // Mid-run: nginx, both instances and the client are running.
          started = await waitFor(
            'nginx, two instances and the client running',
            () => {
              const all = descendants(child.pid!);
              const names = all.map(command);
              const ready = names.some((c) => /nginx: master/.test(c)) && names.filter((c) => c.includes('restart-instance.mjs')).length >= 2 && names.some((c) => c.includes('restart-client.mjs'));
              return ready ? all : undefined;
            },
            20_000,
          );
          const nginxWorkers = started.flatMap((pid) => (/nginx: master/.test(command(pid)) ? descendants(pid) : []));
          child.kill(signal);
          const [code, got] = await exited;
          expect({ code, got }).toEqual({ code: null, got: signal });
          expect(stderr).toContain(`${signal}: stopping nginx, the instances and the client`);
          // (A pid still alive under another command was reused by an unrelated process.)
          expect([...started, ...nginxWorkers].filter(alive).map(command).filter((c) => /nginx|restart-(instance|client)/.test(c))).toEqual([]);
          expect(namespacesOf(child.pid!)).toEqual([]);
          expect([...tempDirs()].filter((d) => !dirsBefore.has(d))).toEqual([]);
        } finally {
          if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
          for (const pid of started.filter(alive)) process.kill(pid, 'SIGKILL');
        }
      },
      60_000,
    );
  }
});
