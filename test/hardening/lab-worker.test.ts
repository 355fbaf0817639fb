/**
 * A lab whose Worker ends without closing it (terminated while its wire is busy, or exiting on its
 * own) leaves nothing for the life of the process: what the lab holds in this process ends with
 * the Worker (no fd of a TUN device or a namespace stays open, so the kernel frees the namespaces
 * and their devices), and the next createLab() deletes the namespaces' names, whose owner is gone.
 * Each run is a child process, so an abort fails the test instead of killing the runner.
 */
import { expect } from 'vitest';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { itNeedsLab } from '../testing/helpers';

const dist = path.join(__dirname, '..', '..', 'dist', 'testing', 'index.js');
const pexecFile = promisify(execFile);

/**
 * `how`: 'terminate' (from the parent while the wire is busy), 'exit' (process.exit() in the
 * Worker), or 'close' (the Worker closes its lab, then ends: the case that must not need a sweep).
 */
const script = (how: 'terminate' | 'exit' | 'close'): string => `
  const { Worker } = require('node:worker_threads');
  const { once } = require('node:events');
  const fs = require('node:fs');
  const t = require(${JSON.stringify(dist)});
  /** What this process's fds are: 'net:[4026532...]', '/dev/net/tun', 'socket:[...]', ... */
  const targets = () => fs.readdirSync('/proc/self/fd').flatMap((fd) => { try { return [fs.readlinkSync('/proc/self/fd/' + fd)]; } catch { return []; } });
  const exists = (name) => fs.existsSync('/run/netns/' + name);
  (async () => {
    await (await t.createLab()).close(); // made once per process: the addon, libuv's child-process signal pipes
    const before = targets();
    const worker = new Worker(\`
      const t = require(${JSON.stringify(dist)});
      const { parentPort } = require('node:worker_threads');
      (async () => {
        const lab = await t.createLab();
        const server = await lab.b.listen(80);
        server.on('connection', (s) => s.on('data', (d) => s.write(d)));
        const c = await lab.a.connect(80);
        const chunk = Buffer.alloc(64 * 1024, 1);
        c.on('data', () => c.write(chunk)); // every echo sends 64 KiB more: the wire never idles
        c.write(chunk);
        parentPort.postMessage([lab.a.netns, lab.b.netns]);
        ${how === 'exit' ? "c.once('data', () => process.exit(0));" : ''}
        ${how === 'close' ? "c.once('data', () => lab.close());" : ''}
      })();
    \`, { eval: true });
    const [names] = await once(worker, 'message');
    const code = ${how === 'terminate' ? 'await worker.terminate()' : "(await once(worker, 'exit'))[0]"};
    const atExit = names.filter(exists);
    const lab = await t.createLab();
    await lab.close();
    const after = targets();
    const left = after.filter((target) => !before.includes(target) || after.filter((x) => x === target).length > before.filter((x) => x === target).length);
    console.log(JSON.stringify({ code, atExit, namesLeft: names.filter(exists), fdsLeft: [...new Set(left)] }));
  })().catch((e) => { console.error(e); process.exit(1); });`;

for (const how of ['terminate', 'exit'] as const) {
  itNeedsLab(`a lab in a Worker that ends without closing it (${how === 'terminate' ? 'terminate() while its wire is busy' : 'process.exit() in the Worker'}) leaves no fd, and the next createLab() deletes its namespaces`, async () => {
    const { stdout, stderr } = await pexecFile(process.execPath, ['-e', script(how)], { timeout: 60_000 });
    expect(stderr).toBe('');
    const result = JSON.parse(stdout) as { code: number; atExit: string[]; namesLeft: string[]; fdsLeft: string[] };
    expect(result.code).toBe(how === 'terminate' ? 1 : 0);
    expect(result.atExit).toHaveLength(2); // a Worker that is gone runs no `ip netns del`
    expect(result.namesLeft).toEqual([]);
    expect(result.fdsLeft).toEqual([]);
  }, 90_000);
}

itNeedsLab('a lab a Worker closes leaves nothing, and closing it there warns of nothing', async () => {
  const { stdout, stderr } = await pexecFile(process.execPath, ['-e', script('close')], { timeout: 60_000 });
  expect(stderr).toBe(''); // no "File descriptor N closed but not opened in unmanaged mode"
  const result = JSON.parse(stdout) as { code: number; atExit: string[]; namesLeft: string[]; fdsLeft: string[] };
  expect(result).toEqual({ code: 0, atExit: [], namesLeft: [], fdsLeft: [] });
}, 90_000);
