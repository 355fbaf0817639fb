/**
 * traceConnections() on BPF when the kernel drops events (the reader fell behind a burst): the
 * connections whose end was among the lost are not followed for ever; after a loss the trace
 * forgets, within seconds, those the kernel no longer has. Runs alone (its burst of 2,000
 * connections would make other traces fall behind too, and theirs would count here).
 */
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect } from 'vitest';
import { tcpState } from '../../src/ops';
import type { ConnectionEnd } from '../../src/trace/ends';
import { checkOptions, RECONCILE, startTrace, type ConnectionTrace } from '../../src/trace/trace';
import { BPF, bpfAvailable, itNeeds, pair, waitFor } from '../helpers';
import { ownTrace } from './helpers';

let trace: ConnectionTrace | undefined;
afterEach(() => {
  trace?.close();
  trace = undefined;
});

describe('traceConnections() on BPF, events lost', () => {
  itNeeds(BPF, bpfAvailable, 'connections whose end was among the lost events are not followed for ever: forgotten once the kernel shows them gone', async () => {
    const ends: ConnectionEnd[] = [];
    let forgotten = 0;
    trace = startTrace((end) => ends.push(end), checkOptions({ source: 'bpf' }), { onForgotten: (n) => (forgotten += n) });
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-lost-'));
    const done = path.join(dir, 'done');
    // A child opens 1,000 connections and keeps them; on SIGUSR1 it floods the ring with 2,000
    // short connections to another port, closes the 1,000, and says so in a file.
    const script = `
      const fs = require('node:fs');
      const net = require('node:net');
      const listen = () => new Promise((r) => { const s = net.createServer((c) => c.on('data', () => {}).on('end', () => c.end())); s.listen(0, '127.0.0.1', () => r(s)); });
      const open = (port, n) => Promise.all(Array.from({ length: n }, () => new Promise((r) => { const c = net.connect(port, '127.0.0.1', () => r(c)); })));
      const closeAll = (list) => Promise.all(list.map((c) => new Promise((r) => { c.on('close', r); c.end(); })));
      (async () => {
        const server = await listen();
        const flood = await listen();
        const port = server.address().port;
        const kept = await open(port, 1000);
        process.on('SIGUSR1', async () => {
          for (let i = 0; i < 4; i++) await closeAll(await open(flood.address().port, 500));
          await closeAll(kept);
          fs.writeFileSync(${JSON.stringify(done)}, '');
          server.close();
          flood.close();
        });
        process.send(port);
      })();`;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
    try {
      const [port] = (await once(child, 'message')) as [number];
      // Both ends of (nearly) every kept connection followed (with whatever else runs on the host).
      await waitFor('the kept connections followed', () => (trace!.following >= 1800 ? true : undefined));
      const lostBefore = trace!.lost;
      const forgottenBefore = forgotten;
      // This event loop blocked (the ring is not read) while the child floods it and closes the kept ones.
      child.kill('SIGUSR1');
      const waited = spawnSync('sh', ['-c', `while [ ! -e '${done}' ]; do sleep 0.01; done`], { timeout: 30_000 });
      expect(waited.status).toBe(0);
      await waitFor('events lost', () => (trace!.lost > lostBefore ? true : undefined));
      // Most of the kept connections' ends were among the lost (they came after the flood): no
      // end was reported for them, yet they are forgotten, because the kernel no longer has them.
      await waitFor('the lost ends forgotten', () => (forgotten - forgottenBefore >= 1500 ? true : undefined), 15_000);
      const keptEnds = ends.filter((e) => e.local.port === port || e.remote.port === port).length;
      expect(keptEnds).toBeLessThanOrEqual(2000 - 1500);
    } finally {
      child.kill('SIGKILL');
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  itNeeds(BPF, bpfAvailable, 'an end still unread when the kernel is looked at ends its connection, with its whole path: it is not forgotten as lost', async () => {
    const own = ownTrace({ source: 'bpf' });
    const { trace: t, ends } = own;
    trace = t;
    // The server keeps its side open after the client's FIN (CLOSE_WAIT) until the reset.
    const { client, server, close } = await pair({ server: { allowHalfOpen: true } });
    try {
      own.follow(client, server);
      // Our FIN, the peer's ACK: both ends followed from ESTABLISHED once the trace read that, and
      // the client in FIN_WAIT2 (that record may still wait in the ring).
      client.end();
      await waitFor('both ends followed, the client in FIN_WAIT2', () => (t.following === 2 && tcpState(client) === 'FIN_WAIT2' ? true : undefined));
      // Reset, so both full sockets are freed now (the RST reaches the server within this call on
      // loopback), and their CLOSE records wait in the ring: this event loop has not read it since.
      client.resetAndDestroy();
      expect(t[RECONCILE]()).toBe(0);
      expect(own.forgotten()).toBe(0);
      expect(t.following).toBe(0);
      // The client's end from FIN_WAIT2 is settled by a look-up of what took over its 4-tuple
      // (nothing: it sent an RST), one turn later.
      await waitFor('both ends reported', () => (ends.length === 2 ? true : undefined));
      // Each end with every state the trace followed it through (one forgotten and seen again
      // would start at the state its CLOSE record left).
      const paths = ends.map((e) => e.path.join(' ')).sort();
      expect(paths).toEqual(['ESTABLISHED CLOSE_WAIT CLOSE', 'ESTABLISHED FIN_WAIT1 FIN_WAIT2 CLOSE']);
    } finally {
      await close();
    }
  });
});
