/**
 * gracefulShutdown() out of file descriptors: what its report observes of the handoff cannot be
 * read, and says so (-1); the shutdown still ends with a report, never an unhandled rejection
 * (begin() rejected with EMFILE before, and with signals that crashed the process).
 */
import { expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import path from 'node:path';

const dist = path.join(__dirname, '..', '..', 'dist', 'index.js');

it('begin() with no file descriptor left resolves, with the handoff unknown (-1)', () => {
  const script = `
    const http = require('node:http');
    const fs = require('node:fs');
    const finwait = require(${JSON.stringify(dist)});
    const server = http.createServer((req, res) => res.end('ok'));
    server.listen(0, '127.0.0.1', () => {
      const shutdown = finwait.gracefulShutdown(server, { signals: [], exit: false, log: false });
      const held = [];
      try { for (;;) held.push(fs.openSync('/dev/null', 'r')); } catch (error) { if (error.code !== 'EMFILE') throw error; }
      shutdown.begin('test').then((report) => {
        for (const fd of held) fs.closeSync(fd);
        console.log(JSON.stringify({ handoff: report.handoff, clean: report.clean, exitCode: report.exitCode }));
        server.close();
      });
    });
    process.on('unhandledRejection', (error) => { console.log('unhandled ' + error.code); process.exit(2); });
  `;
  const child = spawnSync('prlimit', ['--nofile=128', process.execPath, '-e', script], { encoding: 'utf8', timeout: 20_000 });
  expect(child.stderr).toBe('');
  expect(child.status).toBe(0);
  const result = JSON.parse(child.stdout) as { handoff: object; clean: boolean; exitCode: number };
  // migrateReq could not be read either: undefined, so absent from the JSON.
  expect(result.handoff).toEqual({ otherListeners: -1, migrated: -1, migrationFailed: -1 });
  expect(result.exitCode).toBe(result.clean ? 0 : 1);
});
