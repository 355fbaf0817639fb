/**
 * watch()'s back-ends: which one follows a connection, how to force one, what happens where one
 * cannot run, what the destroy multicast does in the kernel (its group joined only while it has
 * something to report, every orphan's end reported by a message), and what the BPF stream's
 * records say (how an orphan ended: an RST received, a kill). The watch() suite itself runs once
 * per back-end: watch.test.ts on the one chosen here, watch.bpf.test.ts, watch.multicast.test.ts
 * and watch.poll.test.ts on each.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync, spawnSync } from 'node:child_process';
import { closeWrite, reset, setLinger2, tcpState, watch } from '../../src/index';
import { native } from '../../src/binding';
import { socketTuple, findSocket, sockets } from '../../src/diag';
import { pollerStatus, watcherOf, type Lifecycle } from '../../src/lifecycle/watch';
import { destroyMulticastStatus } from '../../src/lifecycle/sources/destroy-multicast';
import { bpfStatus } from '../../src/lifecycle/sources/bpf';
import { stateChangesUnavailable } from '../../src/bpf';
import { BPF, bpfAvailable, canBecome, itNeeds, pair, waitFor, type Availability, type Pair } from '../helpers';

const dist = path.join(__dirname, '..', '..', 'dist', 'index.js');
const NETLINK_SOCK_DIAG = 4;

let p: Pair | undefined;
afterEach(async () => {
  await p?.close();
  p = undefined;
  delete process.env.FINWAIT_WATCH_BACKEND;
});

/** Whether a bound NETLINK_SOCK_DIAG socket can be made here (what the destroy multicast needs). */
function multicastAvailable(): Availability {
  try {
    new (native().SockDiagEventsSocket!)(null, 0).close();
    return { ok: true };
  } catch (error) {
    return { ok: false, reason: (error as Error).message };
  }
}

/** The destroy groups (a bit mask, group n at bit n - 1) the netlink socket `fd` is joined to, from /proc/net/netlink; `undefined` once it is closed. */
function groupsOf(inode: number): number | undefined {
  for (const line of fs.readFileSync('/proc/net/netlink', 'utf8').split('\n').slice(1)) {
    const cols = line.trim().split(/\s+/);
    if (Number(cols[1]) === NETLINK_SOCK_DIAG && Number(cols[9]) === inode) return Number.parseInt(cols[3]!, 16);
  }
  return undefined;
}

/** Waits until nothing is watched: the poller stopped, the destroy multicast's listeners and the BPF stream closed. */
async function idle(): Promise<void> {
  await waitFor('nothing watched', () =>
    pollerStatus().watched === 0 && destroyMulticastStatus().listeners.length === 0 && !bpfStatus().open ? true : undefined,
  );
}

/** Ends a watched connection with an RST from `p.client` (no TIME_WAIT left to follow): nothing more to watch. */
async function ended(lc: Lifecycle, p: Pair): Promise<void> {
  p.server.on('error', () => {});
  reset(p.client);
  expect(await lc.done).toMatchObject({ outcome: 'reset-sent' });
}

/**
 * An orphan that lasts: a's FIN waits in FIN_WAIT1 behind more bytes than the paused peer's
 * window takes, and Node closes a's fd. Ends (reset-received) when `p.server` is destroyed.
 */
async function orphanInFinWait1(p: Pair): Promise<void> {
  p.client.on('error', () => {});
  p.client.write(Buffer.alloc(8 * 1024 * 1024));
  p.client.end();
  await waitFor('bytes unsent in the kernel', () => (tcpState(p.client) === 'ESTABLISHED' && p.server.readableLength === 0 ? true : undefined));
  const tuple = socketTuple(p.client)!;
  p.client.destroy();
  await waitFor('the orphan in FIN_WAIT1', () => (findSocket(tuple)?.state === 'FIN_WAIT1' ? true : undefined));
}

/** Replaces a function of the addon for the length of `fn` (to make the kernel's refusals happen). */
async function replacing<K extends 'SockDiagEventsSocket' | 'sockDiagJoin' | 'sockDiagReadEvents' | 'BpfStateChanges'>(
  name: K,
  replacement: NonNullable<ReturnType<typeof native>[K]>,
  fn: () => Promise<void>,
): Promise<void> {
  const addon = native() as unknown as Record<string, unknown>;
  const original = addon[name];
  addon[name] = replacement;
  try {
    await fn();
  } finally {
    addon[name] = original;
  }
}

function errnoError(syscall: string, code: string, errno: number): Error {
  return Object.assign(new Error(`${syscall} ${code}`), { code, errno: -errno, syscall });
}

describe('choosing a back-end', () => {
  itNeeds(BPF, bpfAvailable, 'the BPF stream where it can run, and the lifecycle says so', async () => {
    p = await pair();
    const lc = watch(p.client);
    expect(lc.backend).toEqual({ name: 'bpf' });
    await ended(lc, p);
  });

  itNeeds('the sock_diag destroy multicast', multicastAvailable, 'else the destroy multicast, with the reason the BPF stream cannot run; forced, without one', async () => {
    p = await pair();
    const lc = watch(p.client);
    const why = stateChangesUnavailable();
    expect(lc.backend).toEqual(why === undefined ? { name: 'bpf' } : { name: 'destroy-multicast', reason: `bpf: ${why}` });
    process.env.FINWAIT_WATCH_BACKEND = 'destroy-multicast';
    expect(watch(p.server).backend).toEqual({ name: 'destroy-multicast' });
    await ended(lc, p);
  });

  itNeeds('a user to become (uid 65534)', () => canBecome(65534), 'no privilege needed: a plain user (uid 65534) gets the destroy multicast, and its messages', async () => {
    const script = `
      const net = require('node:net');
      const { watch } = require(${JSON.stringify(dist)});
      const { destroyMulticastStatus } = require(${JSON.stringify(path.join(path.dirname(dist), 'lifecycle', 'sources', 'destroy-multicast.js'))});
      const server = net.createServer({ pauseOnConnect: true }, (s) => {
        s.on('error', () => {});
        // c's FIN waits behind unsent bytes: Node closes c's fd with an orphan in FIN_WAIT1 left.
        setTimeout(() => { c.destroy(); setTimeout(() => s.destroy(), 100); }, 100);
      });
      let c;
      server.listen(0, '127.0.0.1', () => {
        c = net.connect(server.address().port, '127.0.0.1', () => {
          const lc = watch(c);
          c.on('error', () => {});
          c.write(Buffer.alloc(8 << 20));
          c.end();
          lc.done.then((r) => {
            console.log(JSON.stringify({ backend: lc.backend, outcome: r.outcome, matched: destroyMulticastStatus().matched }));
            process.exit(0);
          });
        });
      });`;
    const child = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, '-e', script], { encoding: 'utf8', timeout: 15_000 });
    expect(child.stderr).toBe('');
    // The peer's RST ended the orphan; its message said so. No BPF for a plain user: the reason says why.
    expect(JSON.parse(child.stdout)).toEqual({
      backend: { name: 'destroy-multicast', reason: expect.stringMatching(/^bpf: TCP state changes need CAP_BPF and CAP_PERFMON, or root/) },
      outcome: 'reset-received',
      matched: 1,
    });
  });

  it('FINWAIT_WATCH_BACKEND forces one (poll, with the reason); a name that is not a back-end is refused', async () => {
    p = await pair();
    process.env.FINWAIT_WATCH_BACKEND = 'poll';
    const lc = watch(p.client);
    expect(lc.backend).toEqual({ name: 'poll', reason: 'FINWAIT_WATCH_BACKEND or setWatchBackend() asked for it' });
    process.env.FINWAIT_WATCH_BACKEND = 'ebpf';
    expect(() => watch(p!.server)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE', message: expect.stringContaining('FINWAIT_WATCH_BACKEND') }));
    await ended(lc, p);
  });

  it('a netlink socket the kernel refuses: the poller follows, with the reason, and nothing throws', async () => {
    await idle();
    process.env.FINWAIT_WATCH_BACKEND = 'destroy-multicast';
    await replacing('SockDiagEventsSocket', function refused() {
      throw errnoError('bind', 'EPERM', 1);
    } as never, async () => {
      p = await pair();
      const lc = watch(p.client);
      expect(lc.backend).toEqual({ name: 'poll', reason: 'destroy-multicast: bind EPERM' });
      await ended(lc, p!);
    });
  });

  it('a group join the kernel refuses: that socket falls back to the poller with the reason, and is followed on', async () => {
    await idle();
    process.env.FINWAIT_WATCH_BACKEND = 'destroy-multicast';
    await replacing('sockDiagJoin', () => {
      throw errnoError('setsockopt', 'EPERM', 1);
    }, async () => {
      p = await pair({ server: { pauseOnConnect: true } });
      const lc = watch(p.client);
      expect(lc.backend).toEqual({ name: 'destroy-multicast' });
      await orphanInFinWait1(p); // its fd closed with an orphan left: the join comes then, and fails
      expect(lc.backend).toEqual({ name: 'poll', reason: 'destroy-multicast: setsockopt EPERM' });
      p.server.destroy();
      expect(await lc.done).toMatchObject({ outcome: 'reset-received' });
    });
  });
});

describe('the destroy multicast', () => {
  // Forced: where the BPF stream can run, it would be chosen.
  beforeEach(() => {
    process.env.FINWAIT_WATCH_BACKEND = 'destroy-multicast';
  });

  itNeeds('the sock_diag destroy multicast', multicastAvailable, 'joins the group only while an orphan is followed, and closes its socket when nothing is watched', async () => {
    await idle();
    p = await pair({ server: { pauseOnConnect: true } });
    const other = await pair();
    const lc = watch(p.client);
    const bystander = watch(other.client);
    const [listener] = destroyMulticastStatus().listeners;
    const inode = fs.fstatSync(listener!.fd).ino;
    // Made to see that it can be, and not joined: nothing followed needs it yet.
    expect(groupsOf(inode)).toBe(0);
    await orphanInFinWait1(p); // an orphan: followed, the IPv4 group joined
    expect(groupsOf(inode)).toBe(0b1);
    p.server.destroy(); // the peer's RST ends the orphan: its message, and the group is left
    expect(await lc.done).toMatchObject({ outcome: 'reset-received' });
    expect(groupsOf(inode)).toBe(0); // left, while something is still watched
    other.client.on('error', () => {});
    reset(other.server);
    expect(await bystander.done).toMatchObject({ outcome: 'reset-received' });
    await other.close();
    await idle();
    expect(groupsOf(inode)).toBeUndefined(); // nothing watched: closed
  });

  itNeeds('the sock_diag destroy multicast', multicastAvailable, "an orphan's end comes from its message (the only look before it would be a 5 s safety net)", async () => {
    p = await pair({ server: { pauseOnConnect: true } });
    const lc = watch(p.client);
    expect(lc.backend.name).toBe('destroy-multicast');
    await orphanInFinWait1(p);
    const before = destroyMulticastStatus().matched;
    const started = performance.now();
    p.server.destroy(); // unread bytes: the server's kernel answers with RST, which ends the orphan
    const result = await lc.done;
    expect(result).toMatchObject({ outcome: 'reset-received' });
    expect(destroyMulticastStatus().matched).toBeGreaterThan(before);
    expect(result.history.at(-1)!.at - started).toBeLessThan(2000);
  });

  itNeeds('the sock_diag destroy multicast', multicastAvailable, 'messages lost (ENOBUFS): the sockets it followed are looked up at once, and polled from then on', async () => {
    p = await pair({ server: { pauseOnConnect: true } });
    const lc = watch(p.client);
    await orphanInFinWait1(p);
    const read = native().sockDiagReadEvents!;
    let first = true;
    await replacing('sockDiagReadEvents', (fd, buffer, lengths) => {
      if (!first) return read(fd, buffer, lengths);
      first = false;
      return -105; // -ENOBUFS
    }, async () => {
      const lost = destroyMulticastStatus().lost;
      p!.server.destroy(); // the peer's RST ends the orphan: its message is "lost"
      expect(await lc.done).toMatchObject({ outcome: 'reset-received' });
      expect(destroyMulticastStatus().lost).toBe(lost + 1);
      expect(lc.backend).toEqual({ name: 'poll', reason: expect.stringContaining('ENOBUFS') });
    });
  });

  itNeeds('the sock_diag destroy multicast', multicastAvailable, 'a read that fails: the listener is closed, what it followed is looked up and polled, nothing throws', async () => {
    p = await pair({ server: { pauseOnConnect: true } });
    const lc = watch(p.client);
    await orphanInFinWait1(p);
    const listeners = destroyMulticastStatus().listeners.length;
    await replacing('sockDiagReadEvents', () => {
      throw errnoError('recvmmsg', 'EIO', 5);
    }, async () => {
      p!.server.destroy(); // the orphan's message makes the socket readable: the read fails
      expect(await lc.done).toMatchObject({ outcome: 'reset-received' });
      expect(lc.backend).toEqual({ name: 'poll', reason: 'destroy-multicast: reading its socket failed (recvmmsg EIO), so it is polled' });
      expect(destroyMulticastStatus().listeners.length).toBe(listeners - 1);
    });
  });

  itNeeds('the sock_diag destroy multicast', multicastAvailable, 'a Worker terminated while its destroy multicast is busy ends the Worker, never the process, and leaves no socket joined (5 runs)', async () => {
    const script = `
      const { Worker } = require('node:worker_threads');
      const worker = new Worker(\`
        const net = require('node:net');
        const { watch } = require(${JSON.stringify(dist)});
        const { parentPort } = require('node:worker_threads');
        const server = net.createServer({ allowHalfOpen: true }, (s) => { s.resume(); s.on('end', () => s.end()); });
        server.listen(0, '127.0.0.1', () => {
          const next = () => {
            // Closed in ESTABLISHED: an orphan is left, followed, and its message comes.
            const c = net.connect(server.address().port, '127.0.0.1', () => { watch(c); c.destroy(); });
            c.on('close', next);
          };
          for (let i = 0; i < 20; i++) next(); // a destroy message after every close, without end
          parentPort.postMessage('busy');
        });
      \`, { eval: true });
      // The destroy groups this process's sock_diag sockets are still joined to: none once the
      // Worker is gone (a joined socket left behind would cost a message per socket freed).
      const fs = require('node:fs');
      const joined = () => {
        const inodes = new Set();
        for (const fd of fs.readdirSync('/proc/self/fd')) {
          try { const m = /socket:\\[(\\d+)\\]/.exec(fs.readlinkSync('/proc/self/fd/' + fd)); if (m) inodes.add(Number(m[1])); } catch {}
        }
        return fs.readFileSync('/proc/net/netlink', 'utf8').split('\\n').slice(1).map((l) => l.trim().split(/\\s+/))
          .filter((c) => c[1] === '4' && inodes.has(Number(c[9])) && c[3] !== '00000000').length;
      };
      worker.once('message', () => setTimeout(() => worker.terminate().then((code) => console.log('terminated', code, 'joined', joined())), 300));
      worker.on('error', (e) => { console.log('worker error', e.message); process.exitCode = 1; });
    `;
    for (let run = 0; run < 5; run++) {
      const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30_000 });
      expect({ run, status: child.status, signal: child.signal, stderr: child.stderr.slice(0, 500) }).toEqual({ run, status: 0, signal: null, stderr: '' });
      expect(child.stdout).toBe('terminated 1 joined 0\n');
    }
  }, 60_000);
});

describe('the BPF stream', () => {
  // Forced: the choice itself is tested above.
  beforeEach(() => {
    process.env.FINWAIT_WATCH_BACKEND = 'bpf';
  });

  itNeeds(BPF, bpfAvailable, "an orphan's end comes from its record, and sk_err says the RST was received", async () => {
    await idle();
    p = await pair({ server: { pauseOnConnect: true } });
    const lc = watch(p.client);
    expect(lc.backend).toEqual({ name: 'bpf' });
    expect(bpfStatus().open).toBe(false); // opened for the first orphan, not before
    await orphanInFinWait1(p);
    expect(bpfStatus()).toMatchObject({ open: true, following: 1 });
    const before = bpfStatus().matched;
    const started = performance.now();
    p.server.destroy(); // unread bytes: the server's kernel answers with RST, which ends the orphan
    const result = await lc.done;
    expect(result).toMatchObject({ outcome: 'reset-received', anomalies: [] });
    expect(result.history.at(-1)).toMatchObject({ state: 'CLOSED', event: 'rst-received', source: 'event' });
    expect(bpfStatus()).toMatchObject({ matched: before + 1, following: 0 });
    expect(result.history.at(-1)!.at - started).toBeLessThan(2000);
    await p.close();
    p = undefined;
    await idle(); // nothing watched: the stream is closed
  });

  itNeeds(BPF, bpfAvailable, "filtered in the kernel: the stream reads the records of the sockets it follows and no other's", async () => {
    p = await pair({ server: { pauseOnConnect: true } });
    const lc = watch(p.client);
    await orphanInFinWait1(p);
    const before = bpfStatus();
    // Connections nobody watches open and close meanwhile (and other processes' on this host): no record reaches the stream.
    for (let i = 0; i < 5; i++) {
      const other = await pair();
      other.server.on('end', () => other.server.end());
      other.server.resume();
      other.client.resume();
      other.client.end();
      await waitFor('the other connection closed', () => (other.client.destroyed && other.server.destroyed ? true : undefined));
    }
    p.server.destroy();
    expect(await lc.done).toMatchObject({ outcome: 'reset-received', anomalies: [] });
    const after = bpfStatus();
    expect({ records: after.records - before.records, matched: after.matched - before.matched }).toEqual({ records: 1, matched: 1 });
  });

  itNeeds(BPF, bpfAvailable, "an orphan's hand-over to TIME_WAIT after the peer's FIN (its record's SOCK_DONE): TIME_WAIT from the record, next looked up when its 60 s run out", async () => {
    const q = (p = await pair({ server: { allowHalfOpen: true } }));
    const lc = watch(q.client);
    const { localPort } = q.client;
    q.server.resume();
    await closeWrite(q.client);
    await lc.until('FIN_WAIT2', { timeout: 5000 });
    // A FIN_WAIT2 timer above TIME_WAIT's 60 s keeps the orphan a full socket, so the peer's FIN
    // reaches it (not a FIN_WAIT2 timewait socket) and its hand-over to TIME_WAIT makes a record.
    expect(setLinger2(q.client, 120)).toBe(120);
    q.client.destroy();
    await waitFor('the orphan', () => (sockets({ states: ['FIN_WAIT2'] }).some((e) => e.local.port === localPort) ? true : undefined));
    const cookie = watcherOf(lc)!.cookie!;
    q.server.end();
    const entry = await lc.until('TIME_WAIT', { timeout: 5000 });
    expect(entry).toMatchObject({ source: 'event' });
    expect(lc.history.map((h) => h.state)).toEqual(['ESTABLISHED', 'FIN_WAIT1', 'FIN_WAIT2', 'TIME_WAIT']);
    // The kernel has it in TIME_WAIT indeed; no lookup is due before its timer runs out.
    expect(sockets({ states: ['TIME_WAIT'] }).some((e) => e.cookie === cookie)).toBe(true);
    expect(watcherOf(lc)!.due - entry.at).toBeGreaterThanOrEqual(60_000);
    expect(lc.state).toBe('TIME_WAIT');
    // Ended here, so that nothing stays watched: the TIME_WAIT killed, and looked at now.
    execFileSync('ss', ['-K', '-t', 'state', 'time-wait', `( sport = :${localPort} )`], { stdio: 'ignore' });
    watcherOf(lc)!.lookNow();
    expect(await lc.done).toMatchObject({ outcome: 'graceful', anomalies: [] });
  });

  itNeeds(BPF, bpfAvailable, 'an orphan killed with ss -K (sk_err ECONNABORTED) sent an RST from this end: reset-sent, at once', async () => {
    p = await pair({ server: { pauseOnConnect: true } });
    const lc = watch(p.client);
    const { localPort } = p.client;
    await orphanInFinWait1(p);
    const before = bpfStatus().matched;
    execFileSync('ss', ['-K', '-t', 'state', 'fin-wait-1', `( sport = :${localPort} )`], { stdio: 'ignore' });
    const result = await lc.done;
    expect(result).toMatchObject({ outcome: 'reset-sent', anomalies: [] });
    expect(result.history.at(-1)).toMatchObject({ state: 'CLOSED', event: 'rst-sent', source: 'event' });
    expect(bpfStatus().matched).toBe(before + 1);
    // The peer got that RST: its next read says so.
    p.server.on('error', () => {});
    p.server.resume();
    await waitFor("the peer's socket reset", () => (p!.server.destroyed ? true : undefined));
  });

  itNeeds(BPF, bpfAvailable, 'a stream that cannot be opened when the first orphan comes: that socket goes to the destroy multicast, with the reason', async () => {
    await idle();
    await replacing('BpfStateChanges', function refused() {
      throw errnoError('bpf', 'EPERM', 1);
    } as never, async () => {
      p = await pair({ server: { pauseOnConnect: true } });
      const lc = watch(p.client);
      expect(lc.backend).toEqual({ name: 'bpf' });
      const matched = destroyMulticastStatus().matched;
      await orphanInFinWait1(p);
      expect(lc.backend).toEqual({ name: 'destroy-multicast', reason: expect.stringMatching(/^bpf: TCP state changes need CAP_BPF.*bpf EPERM$/) });
      p.server.destroy();
      expect(await lc.done).toMatchObject({ outcome: 'reset-received' });
      expect(destroyMulticastStatus().matched).toBe(matched + 1);
    });
  });

  itNeeds(BPF, bpfAvailable, 'records lost (the ring buffer was full): the sockets it followed are looked up, and polled from then on', async () => {
    await idle();
    const Original = native().BpfStateChanges!;
    let dropping = false;
    let dropped = 0;
    // The kernel's loss, made to happen: records read while `dropping` are thrown away and counted lost.
    class Lossy extends (Original as unknown as new (ringBytes: number, closeOnly: boolean) => { read(b: Uint8Array): number; lost(): number }) {
      read(buffer: Uint8Array): number {
        const count = super.read(buffer);
        if (!dropping) return count;
        dropped += count;
        return 0;
      }
      lost(): number {
        return super.lost() + dropped;
      }
    }
    await replacing('BpfStateChanges', Lossy as never, async () => {
      p = await pair({ server: { pauseOnConnect: true } });
      const lc = watch(p.client);
      const tuple = socketTuple(p.client)!;
      await orphanInFinWait1(p);
      const lost = bpfStatus().lost;
      dropping = true;
      p.server.destroy(); // the peer's RST ends the orphan: its record is "lost"
      await waitFor('the orphan gone', () => (findSocket(tuple) === undefined && dropped > 0 ? true : undefined));
      dropping = false;
      // Any later record shows the loss: a bystander's end.
      const other = await pair();
      other.server.on('error', () => {});
      reset(other.client);
      expect(await lc.done).toMatchObject({ outcome: 'reset-received' });
      expect(bpfStatus().lost).toBe(lost + 1);
      expect(lc.backend).toEqual({ name: 'poll', reason: 'bpf: state changes were lost (the ring buffer was full), so it is polled' });
      await other.close();
    });
  });
});

describe('the BPF stream in a Worker', () => {
  // The Worker is terminated while its stream is open, not while connections open and close:
  // on Node 26 a Worker terminated while a close hook is inside a native call that makes an
  // object (getLinger) can abort the process from the addon (an exception node-addon-api cannot
  // throw into a terminating environment), whatever the back-end.
  itNeeds(BPF, bpfAvailable, 'a Worker terminated while its stream follows orphans ends the Worker, never the process, and leaves no BPF program or ring open (3 runs)', async () => {
    const script = `
      const { Worker } = require('node:worker_threads');
      const worker = new Worker(\`
        const net = require('node:net');
        const { watch } = require(${JSON.stringify(dist)});
        const { bpfStatus } = require(${JSON.stringify(path.join(path.dirname(dist), 'lifecycle', 'sources', 'bpf.js'))});
        const { parentPort } = require('node:worker_threads');
        // The server never reads: each client's FIN waits behind unsent bytes, in an orphan its stream follows.
        const server = net.createServer({ pauseOnConnect: true }, (s) => s.on('error', () => {}));
        server.listen(0, '127.0.0.1', () => {
          for (let i = 0; i < 5; i++) {
            const c = net.connect(server.address().port, '127.0.0.1', () => {
              watch(c);
              c.on('error', () => {});
              c.write(Buffer.alloc(8 << 20));
              c.end();
              setTimeout(() => c.destroy(), 100);
            });
          }
          const check = setInterval(() => {
            if (bpfStatus().following === 5) { clearInterval(check); parentPort.postMessage('following'); }
          }, 10);
        });
      \`, { eval: true, env: { ...process.env, FINWAIT_WATCH_BACKEND: 'bpf' } });
      // This process's BPF objects (program, link, ring map): anon inodes named bpf-*.
      const fs = require('node:fs');
      const bpfFds = () => fs.readdirSync('/proc/self/fd').filter((fd) => {
        try { return fs.readlinkSync('/proc/self/fd/' + fd).startsWith('anon_inode:bpf'); } catch { return false; }
      }).length;
      worker.once('message', () => {
        const open = bpfFds() > 0;
        worker.terminate().then((code) => console.log('open', open, 'terminated', code, 'bpf fds', bpfFds()));
      });
      worker.on('error', (e) => { console.log('worker error', e.message); process.exitCode = 1; });
    `;
    for (let run = 0; run < 3; run++) {
      const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30_000 });
      expect({ run, status: child.status, signal: child.signal, stderr: child.stderr.slice(0, 500) }).toEqual({ run, status: 0, signal: null, stderr: '' });
      expect(child.stdout).toBe('open true terminated 1 bpf fds 0\n');
    }
  }, 60_000);
});
