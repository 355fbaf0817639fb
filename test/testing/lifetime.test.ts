/**
 * The wire's native poll handles and the process: a closed lab never keeps Node alive, a lab in a
 * worker thread does not stop the worker from exiting, and namespaces left by a process or a
 * worker that ended without close() are swept by the next lab.
 */
import { describe, expect } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { once } from 'node:events';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { Worker } from 'node:worker_threads';
import { createLab } from '../../src/testing/index';
import { itLab } from './helpers';

const dist = path.join(__dirname, '..', '..', 'dist', 'testing', 'index.js');
const pexecFile = promisify(execFile);

/** Creates a lab, carries one exchange a -> b over the wire, and prints the namespace names. */
const exchange = `
  const t = require(${JSON.stringify(dist)});
  const { once } = require('node:events');
  async function exchange() {
    const lab = await t.createLab();
    const server = await lab.b.listen(80);
    server.on('connection', (s) => s.end('hello'));
    const c = await lab.a.connect(80);
    const [data] = await once(c, 'data');
    return { lab, data: String(data), names: [lab.a.netns, lab.b.netns] };
  }`;

const exists = (name: string): boolean => fs.existsSync(path.join('/run/netns', name));

describe('lab lifetime', () => {
  itLab('a process exits on its own after lab.close(): closed polls keep nothing alive', async () => {
    const script = `${exchange}
      exchange().then(async ({ lab, data, names }) => { await lab.close(); console.log(JSON.stringify({ data, names })); });`;
    const { stdout } = await pexecFile(process.execPath, ['-e', script], { timeout: 10_000 });
    const { data, names } = JSON.parse(stdout) as { data: string; names: string[] };
    expect(data).toBe('hello');
    expect(names.filter(exists)).toEqual([]);
  });

  itLab('a process that never closes its lab still exits (the polls are unref\'d), and the next lab sweeps its namespaces', async () => {
    const script = `${exchange}
      exchange().then(({ lab, data, names }) => { lab.a.closeAll(); lab.b.closeAll(); console.log(JSON.stringify({ data, names })); });`;
    const { stdout } = await pexecFile(process.execPath, ['-e', script], { timeout: 10_000 });
    const { names } = JSON.parse(stdout) as { names: string[] };
    expect(names.filter(exists)).toEqual(names); // left behind by the dead process
    const next = await createLab();
    await next.close();
    expect(names.filter(exists)).toEqual([]);
  });

  itLab('in a Worker, the hosts print no fd warning: what the addon opened (sysctl files, sockets) it closes', async () => {
    const script = `
      const { Worker } = require('node:worker_threads');
      const worker = new Worker(\`${exchange.replace(/`/g, '\\`').replace(/\$\{/g, '\\${')}
        const { parentPort } = require('node:worker_threads');
        exchange().then(async ({ lab }) => {
          lab.a.sysctl('net.ipv4.tcp_fin_timeout', 30);
          await lab.b.listen(81, { recvBufferSize: 4096 });
          await lab.a.listen(81).catch(() => {});
          await lab.b.listen(80).catch((e) => e.code); // EADDRINUSE: the fd made for it is closed again
          const s = await lab.a.connect(81);
          await lab.a.waitForState(s, 'ESTABLISHED');
          const entry = lab.a.findSocket(s);
          await lab.close();
          parentPort.postMessage(entry.state);
        });
      \`, { eval: true });
      worker.on('message', (state) => console.log(state));
      worker.on('error', (e) => { console.log('error ' + e.message); process.exitCode = 1; });
    `;
    const { stdout, stderr } = await pexecFile(process.execPath, ['-e', script], { timeout: 20_000 });
    expect(stderr).not.toMatch(/closed but not opened/);
    expect(stderr).toBe('');
    expect(stdout).toBe('ESTABLISHED\n');
  });

  itLab('a worker thread with an open lab exits cleanly: its poll handles close with its environment, and the next lab sweeps its namespaces', async () => {
    const worker = new Worker(
      `${exchange}
      const { parentPort } = require('node:worker_threads');
      exchange().then(({ lab, data, names }) => { lab.a.closeAll(); lab.b.closeAll(); parentPort.postMessage({ data, names }); });`,
      { eval: true },
    );
    const [message] = (await once(worker, 'message')) as [{ data: string; names: string[] }];
    expect(message.data).toBe('hello');
    const [code] = await once(worker, 'exit');
    expect(code).toBe(0);
    // This process survived the worker's loop being closed, and the lab's owner's sockets closed
    // with it: the next lab sweeps the worker's namespaces.
    expect(message.names.filter(exists)).toEqual(message.names);
    const next = await createLab();
    await next.close();
    expect(message.names.filter(exists)).toEqual([]);
  });
});
