/**
 * The lab's sweep of namespaces left behind never deletes a live lab: /run/netns may be shared by
 * processes of several PID namespaces (containers), where pids are counted from 1 each, so a pid
 * in a namespace's name says nothing about its owner here. What counts is the owner's token in
 * the namespace itself; a namespace whose owner is truly gone is still swept.
 */
import { expect } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createLab } from '../../src/testing/index';
import { itNeedsLab } from '../testing/helpers';

const dist = path.join(__dirname, '..', '..', 'dist', 'testing', 'index.js');

/** Creates a lab, prints its pid and namespace names, and waits for ever without closing it. */
const holder = `
  require(${JSON.stringify(dist)}).createLab().then(
    (lab) => { console.log(JSON.stringify({ pid: process.pid, names: [lab.a.netns, lab.b.netns] })); setInterval(() => {}, 1 << 30); },
    (error) => { console.error(error); process.exit(1); });`;

const exists = (name: string): boolean => fs.existsSync(path.join('/run/netns', name));

/** A pid that no process of this PID namespace has now (so a judge by pid would call its owner dead). */
function freePid(): number {
  const max = Number(fs.readFileSync('/proc/sys/kernel/pid_max', 'utf8'));
  for (let pid = Math.min(max - 1, 1 << 20); pid > 1000; pid--) {
    if (!fs.existsSync(`/proc/${pid}`)) return pid;
  }
  throw new Error('no free pid found');
}

/** The first line the child prints, parsed; rejects with its stderr if it exits first. */
function firstLine<T>(child: ChildProcess): Promise<T> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    child.stderr!.on('data', (chunk: Buffer) => (err += String(chunk)));
    child.stdout!.on('data', (chunk: Buffer) => {
      out += String(chunk);
      const end = out.indexOf('\n');
      if (end >= 0) resolve(JSON.parse(out.slice(0, end)) as T);
    });
    child.once('exit', (code, signal) => reject(new Error(`the lab's owner exited (${code ?? signal}): ${err}`)));
  });
}

/** Resolves once the child and everything that shared its stdio (the whole PID namespace) is gone. */
function gone(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null) && child.stdout!.closed ? resolve() : child.once('close', () => resolve()));
}

itNeedsLab("a live lab of a process in another PID namespace is never swept, even when its pid is nobody's here; once its owner is killed it is", async () => {
  const pid = freePid();
  // `unshare --pid --fork`: a new PID namespace, same mount namespace (so the same /run/netns),
  // whose next pid is set so that the lab's owner gets `pid`, free in this PID namespace.
  const child = spawn(
    'unshare',
    ['--pid', '--fork', '--kill-child=SIGKILL', 'sh', '-c', `echo ${pid - 1} > /proc/sys/kernel/ns_last_pid || exit 3; "$0" -e "$1" & wait $!`, process.execPath, holder],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let names: string[] = [];
  try {
    const owner = await firstLine<{ pid: number; names: string[] }>(child);
    names = owner.names;
    expect(owner.pid).toBe(pid);
    expect(names.filter(exists)).toEqual(names);
    const lab = await createLab(); // sweeps what it judges stale
    await lab.close();
    expect(names.filter(exists)).toEqual(names);
    // Killed: it never closes its lab, and the kernel releases what it held.
    child.kill('SIGKILL');
    await gone(child);
    const next = await createLab();
    await next.close();
    expect(names.filter(exists)).toEqual([]);
  } finally {
    child.kill('SIGKILL');
    await gone(child);
    for (const name of names.filter(exists)) spawnSync('ip', ['netns', 'del', name]);
  }
});

itNeedsLab('labs created at once by several processes all succeed: no sweep takes a lab being made', async () => {
  const script = `
    require(${JSON.stringify(dist)}).createLab().then(async (lab) => {
      const names = [lab.a.netns, lab.b.netns];
      await lab.close();
      console.log(JSON.stringify(names));
    }, (error) => { console.error(error.message); process.exit(1); });`;
  const results = await Promise.all(
    [1, 2, 3, 4].map(
      () =>
        new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
          const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'pipe'] });
          let stdout = '';
          let stderr = '';
          child.stdout.on('data', (chunk: Buffer) => (stdout += String(chunk)));
          child.stderr.on('data', (chunk: Buffer) => (stderr += String(chunk)));
          child.once('close', (code) => resolve({ code, stdout, stderr }));
        }),
    ),
  );
  expect(results.map(({ code, stderr }) => ({ code, stderr }))).toEqual(results.map(() => ({ code: 0, stderr: '' })));
  const names = results.flatMap(({ stdout }) => JSON.parse(stdout) as string[]);
  expect(new Set(names).size).toBe(8);
  expect(names.filter(exists)).toEqual([]);
});
