/**
 * Helpers for tests on real loopback sockets: pairs, bounded waits on observed kernel facts, and
 * the gate of tests that need privileges (root or a user namespace).
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { once } from 'node:events';
import { afterAll, beforeAll, it, vi } from 'vitest';
import { native } from '../src/binding';
import { stateChangesUnavailable } from '../src/bpf';
import { sockaddr } from '../src/sockaddr';

export interface Pair {
  client: net.Socket;
  server: net.Socket;
  listener: net.Server;
  /** Destroys both sockets and closes the listener. */
  close(): Promise<void>;
}

export interface PairOptions {
  host?: string;
  /** Options for the accepted (server) socket, e.g. `allowHalfOpen`, `pauseOnConnect`. */
  server?: net.ServerOpts;
  /** Options for the client socket, e.g. `allowHalfOpen`. */
  client?: Partial<net.TcpNetConnectOpts>;
}

/** A connected loopback pair of real kernel sockets. */
export async function pair(options: PairOptions = {}): Promise<Pair> {
  const host = options.host ?? '127.0.0.1';
  const listener = net.createServer(options.server ?? {});
  listener.listen(0, host);
  await once(listener, 'listening');
  const { port } = listener.address() as net.AddressInfo;
  const accepted = once(listener, 'connection') as Promise<[net.Socket]>;
  const client = net.connect({ ...options.client, port, host });
  await once(client, 'connect');
  const [server] = await accepted;
  return {
    client,
    server,
    listener,
    async close() {
      client.destroy();
      server.destroy();
      await new Promise<void>((resolve) => listener.close(() => resolve()));
    },
  };
}

/**
 * Polls `probe` until it returns something other than `undefined`, yielding to the event loop
 * between tries; fails after `timeoutMs` with `what` in the message. For waiting on kernel facts.
 */
export async function waitFor<T>(what: string, probe: () => T | undefined, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let delay = 0;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay + 1, 20);
  }
}

/** Resolves with the error the socket emits. */
export function nextError(socket: net.Socket): Promise<NodeJS.ErrnoException> {
  return new Promise((resolve) => socket.once('error', resolve));
}

/** Reads everything the socket sends until 'end' (or 'close'), as one Buffer. */
export function readAll(socket: net.Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.once('end', () => resolve(Buffer.concat(chunks)));
    socket.once('error', reject);
  });
}

/** Whether something a test needs is here, or why not. */
export type Availability = { ok: true } | { ok: false; reason: string };

/**
 * The privileged-test policy: a test that needs `what` (the lab, a network namespace) runs when it
 * is available, skips with the reason when not, except under CI=true, where it fails instead.
 */
export function privilegedGate(what: string, availability: Availability, env: NodeJS.ProcessEnv): { run: true } | { run: false; skip?: string; fail?: string } {
  if (availability.ok) return { run: true };
  if (env.CI === 'true') return { run: false, fail: `CI=true: a test that needs ${what} may not be skipped, and ${what} is unavailable: ${availability.reason}` };
  return { run: false, skip: `${what} is unavailable: ${availability.reason}` };
}

/** What the tests on the BPF state-change stream need, as itNeeds() names it. */
export const BPF = 'the BPF state-change stream (CAP_BPF + CAP_PERFMON, or root)';

/** Whether the BPF state-change stream can run here (CAP_BPF + CAP_PERFMON, or root; BTF): itNeeds()'s availability. */
export function bpfAvailable(): Availability {
  const why = stateChangesUnavailable();
  return why === undefined ? { ok: true } : { ok: false, reason: why };
}

/** A test that needs `what`: `availability()` is asked when the test runs (see `privilegedGate`). */
export function itNeeds(
  what: string,
  availability: () => Availability,
  name: string,
  fn: () => Promise<void>,
  options?: number | { timeout?: number; retry?: number },
): void {
  const { timeout, retry } = typeof options === 'number' ? { timeout: options, retry: undefined } : (options ?? {});
  it(
    name,
    { ...(timeout === undefined ? {} : { timeout }), ...(retry === undefined ? {} : { retry }) },
    async (ctx) => {
      const gate = privilegedGate(what, availability(), process.env);
      if (!gate.run) {
        if (gate.fail) throw new Error(gate.fail);
        ctx.skip(gate.skip);
      }
      await fn();
    },
  );
}

/** Whether `id` is inside one of the ranges of a `/proc/<pid>/uid_map` or `gid_map` (lines `inside outside count`). */
export function idMapped(map: string, id: number): boolean {
  return map.split('\n').some((line) => {
    const [inside, , count] = line.trim().split(/\s+/).map(Number);
    return inside !== undefined && count !== undefined && id >= inside && id < inside + count;
  });
}

/** Linux capability numbers (include/uapi/linux/capability.h), for hasCapability(). */
export const CAP_SETGID = 6;
export const CAP_SETUID = 7;
export const CAP_SETPCAP = 8;
export const CAP_NET_ADMIN = 12;
export const CAP_SYS_ADMIN = 21;
export const CAP_BPF = 39;

/** Whether this process has capability number `cap` in its effective set (`CapEff`, /proc/self/status). */
export function hasCapability(cap: number): boolean {
  const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(fs.readFileSync('/proc/self/status', 'utf8'))?.[1];
  return hex !== undefined && ((BigInt(`0x${hex}`) >> BigInt(cap)) & 1n) === 1n;
}

/** Whether any process may load BPF programs such as a socket filter (`kernel.unprivileged_bpf_disabled` is 0). */
export function unprivilegedBpf(): boolean {
  try {
    return fs.readFileSync('/proc/sys/kernel/unprivileged_bpf_disabled', 'utf8').trim() === '0';
  } catch {
    return false;
  }
}

/** Whether this process may load a BPF socket filter: CAP_BPF or CAP_SYS_ADMIN, or any process may. */
export function mayLoadBpf(): boolean {
  return hasCapability(CAP_BPF) || hasCapability(CAP_SYS_ADMIN) || unprivilegedBpf();
}

/** What the tests of closeServer()'s eBPF seal need, as itNeeds() names it. */
export const BPF_SEAL = 'an eBPF socket filter (CAP_BPF or CAP_SYS_ADMIN, or kernel.unprivileged_bpf_disabled = 0)';

/** Whether this process may load an eBPF socket filter: itNeeds()'s availability for BPF_SEAL. */
export function bpfSealAvailable(): Availability {
  return mayLoadBpf() ? { ok: true } : { ok: false, reason: 'no CAP_BPF or CAP_SYS_ADMIN, and kernel.unprivileged_bpf_disabled is not 0' };
}

/** What a test needs to seal with both filters, in time namespaces too, as itNeeds() names it. */
export const SEALS_AND_TIME_NAMESPACES = 'both socket filters and time namespaces (CAP_NET_ADMIN and CAP_SYS_ADMIN)';

/** Whether this process has CAP_NET_ADMIN (the classic filter) and CAP_SYS_ADMIN (`unshare --time`, the eBPF filter). */
export function sealsAndTimeNamespacesAvailable(): Availability {
  const missing = [hasCapability(CAP_NET_ADMIN) ? [] : ['CAP_NET_ADMIN'], hasCapability(CAP_SYS_ADMIN) ? [] : ['CAP_SYS_ADMIN']].flat();
  return missing.length === 0 ? { ok: true } : { ok: false, reason: `no ${missing.join(' or ')}` };
}

function hasSetpriv(): boolean {
  try {
    execFileSync('setpriv', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}


/**
 * Whether this process can run a command as uid and gid `id` (`setpriv --reuid=ID --regid=ID`):
 * it needs CAP_SETUID and CAP_SETGID, `id` mapped in its user namespace, and setpriv. uid 0 is not
 * enough: inside `unshare -r` uid 0 maps only itself, and setresuid(65534) fails there.
 */
export function canBecome(id: number): Availability {
  if (process.platform !== 'linux') return { ok: false, reason: `setpriv is Linux-only (this is ${process.platform})` };
  if (!hasCapability(CAP_SETUID) || !hasCapability(CAP_SETGID)) return { ok: false, reason: 'this process lacks CAP_SETUID and CAP_SETGID (not root)' };
  for (const kind of ['uid', 'gid'] as const) {
    const map = fs.readFileSync(`/proc/self/${kind}_map`, 'utf8');
    if (!idMapped(map, id)) {
      return { ok: false, reason: `${kind} ${id} is not mapped in this user namespace (/proc/self/${kind}_map: ${map.trim().replace(/\s+/g, ' ')})` };
    }
  }
  if (!hasSetpriv()) return { ok: false, reason: 'the setpriv command (util-linux) is not installed' };
  return { ok: true };
}

/**
 * Makes finwait's native part unavailable for this test file, as on a platform with no binary:
 * FINWAIT_NATIVE names a file that does not exist. The binding loads on first use, in the file's
 * own module instance, so call this at the top of the file.
 */
export function withoutNativePart(): void {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-no-native-'));
    vi.stubEnv('FINWAIT_NATIVE', path.join(dir, 'missing', 'finwait.node'));
  });
  afterAll(() => {
    vi.unstubAllEnvs();
    fs.rmSync(dir, { recursive: true, force: true });
  });
}

/**
 * Whether a listener can be sealed here as closeServer() seals it (`SealedListener` with a
 * deadline: a socket filter on a TCP socket, which Linux 6.18 allows with CAP_BPF, eBPF, or
 * CAP_NET_ADMIN, classic), tried on a listener of its own.
 */
export function sealAvailable(): Availability {
  const n = native();
  if (typeof n.SealedListener !== 'function') return { ok: false, reason: 'this build of the native part has no SealedListener' };
  const fd = n.reusePortSocket(n.constants.AF_INET);
  try {
    n.bind(fd, sockaddr('127.0.0.1', 0));
    n.listen(fd, 1);
    new n.SealedListener(fd, 1000).release();
    return { ok: true };
  } catch (error) {
    return { ok: false, reason: `a socket filter on a TCP socket was refused (${(error as NodeJS.ErrnoException).code}; Linux 6.18 needs CAP_BPF or CAP_NET_ADMIN for it)` };
  } finally {
    n.closeFd(fd);
  }
}
