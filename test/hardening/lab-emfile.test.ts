/**
 * The lab out of file descriptors (EMFILE): `labAvailable()` answers `{ ok: false, reason }`
 * instead of throwing, and a `createLab()` that fails at any step leaves no namespace and no fd
 * behind. Each run is a child process with a low fd limit that fills its own fd table: before the
 * call, with 0, 1, 2, ... fds left free; and during the call, as each `ip` child the lab waits
 * for ends (told by wrapping `child_process.execFile`), as if another part of the program had
 * taken every fd at that moment.
 */
import { expect } from 'vitest';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { itNeedsLab } from '../testing/helpers';

const dist = path.join(__dirname, '..', '..', 'dist', 'testing', 'index.js');
const pexecFile = promisify(execFile);

const prelude = `
  const fs = require('node:fs');
  const childProcess = require('node:child_process');
  const fdCount = () => fs.readdirSync('/proc/self/fd').length;
  const namespaces = () => fs.readdirSync('/run/netns').filter((n) => n.startsWith('finwait-' + process.pid + '-'));
  /** Opens fds until EMFILE, then closes \`free\` of them: the fds to close later. */
  function fill(free) {
    const filler = [];
    try {
      for (;;) filler.push(fs.openSync('/dev/null', 'r'));
    } catch (e) {
      if (e.code !== 'EMFILE') throw e;
    }
    for (const fd of filler.splice(filler.length - free)) fs.closeSync(fd);
    return filler;
  }
  const t = require(${JSON.stringify(dist)});
  async function attempt() {
    try {
      const lab = await t.createLab();
      return { lab, outcome: 'created' };
    } catch (e) {
      return { outcome: { code: e.code, message: e.message } };
    }
  }`;

/** Fills the fd table before the call, leaving 0 to 64 free. */
const before = `${prelude}
  (async () => {
    await (await t.createLab()).close(); // made once per process: the addon, libuv's child-process signal pipes
    const start = fdCount();
    const results = [];
    for (let free = 0; free <= 64; free++) {
      const filler = fill(free);
      let available;
      try {
        available = t.labAvailable();
      } catch (e) {
        available = { threw: e.code };
      }
      const { lab, outcome } = await attempt();
      for (const fd of filler) fs.closeSync(fd);
      await lab?.close();
      results.push({ free, available, outcome, fdsLeft: fdCount() - start, namespacesLeft: namespaces() });
    }
    console.log(JSON.stringify(results));
  })().catch((e) => { console.error(e); process.exit(1); });`;

/** Fills the fd table (0 to 24 left free) as an \`ip\` child ends: every step after it runs out. */
const during = `${prelude}
  let strike;
  const realExecFile = childProcess.execFile;
  childProcess.execFile = function (file, args, options, callback) {
    const stage = args[0] === '-batch' ? 'add' : args[0] === '-n' ? 'configure' : 'other';
    return realExecFile.call(this, file, args, options, (...results) => {
      if (strike && !strike.filler && strike.stage === stage) {
        strike.namespaces = namespaces().length;
        strike.filler = fill(strike.free);
      }
      callback(...results);
    });
  };
  (async () => {
    await (await t.createLab()).close();
    const start = fdCount();
    const results = [];
    for (const stage of ['add', 'configure']) {
      for (let free = 0; free <= 24; free++) {
        strike = { stage, free };
        const { lab, outcome } = await attempt();
        for (const fd of strike.filler ?? []) fs.closeSync(fd);
        await lab?.close();
        results.push({ stage, free, struck: strike.filler !== undefined, namespacesThen: strike.namespaces, outcome, fdsLeft: fdCount() - start, namespacesLeft: namespaces() });
        strike = undefined;
      }
    }
    console.log(JSON.stringify(results));
  })().catch((e) => { console.error(e); process.exit(1); });`;

type Outcome = 'created' | { code: string; message: string };

/** Runs `script` with at most 256 fds; its JSON line. */
async function runLimited<T>(script: string): Promise<T> {
  const { stdout } = await pexecFile('prlimit', ['--nofile=256:256', process.execPath, '-e', script], { timeout: 120_000 });
  return JSON.parse(stdout) as T;
}

const unavailable = { code: 'ERR_FINWAIT_LAB_UNAVAILABLE', message: expect.stringMatching(/out of file descriptors/) };

itNeedsLab('out of fds before createLab(): labAvailable() says why instead of throwing, and nothing is left behind', async () => {
  const results = await runLimited<Array<{ free: number; available: { ok: boolean } | { threw: string }; outcome: Outcome; fdsLeft: number; namespacesLeft: string[] }>>(before);
  expect(results.filter((r) => r.fdsLeft !== 0 || r.namespacesLeft.length > 0)).toEqual([]);
  expect(results.filter((r) => 'threw' in r.available)).toEqual([]);
  expect(results[0].available).toEqual({ ok: false, reason: expect.stringMatching(/out of file descriptors/) });
  for (const { outcome } of results) if (outcome !== 'created') expect(outcome).toEqual(unavailable);
  // It works once there are enough, and whenever labAvailable() said it would.
  expect(results.at(-1)!.outcome).toBe('created');
  for (const { available, outcome } of results) if ('ok' in available && available.ok) expect(outcome).toBe('created');
}, 150_000);

itNeedsLab('out of fds while createLab() runs, at every step: it fails with a coded error and deletes its namespaces, closing every fd', async () => {
  const results = await runLimited<Array<{ stage: string; free: number; struck: boolean; namespacesThen: number; outcome: Outcome; fdsLeft: number; namespacesLeft: string[] }>>(during);
  expect(results.filter((r) => r.fdsLeft !== 0 || r.namespacesLeft.length > 0)).toEqual([]);
  expect(results.filter((r) => !r.struck)).toEqual([]);
  for (const { outcome } of results) if (outcome !== 'created') expect(outcome).toEqual(unavailable);
  // It failed half-way, with its namespaces made, for every number of fds left up to what configuring needs.
  const midway = results.filter((r) => r.stage === 'add' && r.namespacesThen === 2 && r.outcome !== 'created');
  expect(midway.map((r) => r.free)).toEqual(results.filter((r) => r.stage === 'add' && r.outcome !== 'created').map((r) => r.free));
  expect(midway.length).toBeGreaterThan(16);
}, 150_000);
