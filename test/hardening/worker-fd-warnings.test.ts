/**
 * In a Worker, finwait closes the fds its addon made (netlink sockets, namespace fds) through the
 * addon, not with fs.closeSync(): Node warns "File descriptor N closed but not opened in unmanaged
 * mode" for an fd it did not open, on the user's stderr (findSocket() did, on every call).
 */
import { expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import path from 'node:path';

const dist = path.join(__dirname, '..', '..', 'dist', 'index.js');

it('findSocket(), sockets() and a watch() followed to its end print no fd warning in a Worker', () => {
  const script = `
    const { Worker } = require('node:worker_threads');
    const worker = new Worker(\`
      const net = require('node:net');
      const { parentPort } = require('node:worker_threads');
      const f = require(${JSON.stringify(dist)});
      f.findSocket({ local: { address: '127.0.0.1', port: 1 }, remote: { address: '127.0.0.1', port: 2 } });
      f.sockets({ states: ['LISTEN'] });
      const server = net.createServer({ allowHalfOpen: true }, (s) => {
        const lifecycle = f.watch(s);
        s.resume();
        s.on('end', () => s.end()); // the passive end: LAST_ACK, followed through sock_diag once Node closed it
        lifecycle.done.then((r) => { parentPort.postMessage(r.outcome); server.close(); });
      }).listen(0, '127.0.0.1', () => {
        const c = net.connect(server.address().port, '127.0.0.1', () => c.end());
        c.resume();
      });
    \`, { eval: true });
    worker.on('message', (outcome) => console.log(outcome));
    worker.on('error', (e) => { console.log('error ' + e.message); process.exitCode = 1; });
  `;
  const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 20_000 });
  expect(child.stderr).not.toMatch(/closed but not opened/);
  expect(child.stderr).toBe('');
  expect(child.stdout).toBe('graceful\n');
  expect(child.status).toBe(0);
});
