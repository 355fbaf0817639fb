/**
 * Named network namespaces (`ip netns`, so `ip netns exec NAME ...` and `ss -N NAME` reach them
 * while a lab runs), what the lab needs to create them, and commands run inside them.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { codedError, type CodedError } from '../errors';

/** Where `ip netns add` puts the namespaces it names. */
export const NETNS_DIR = '/run/netns';
/** Prefix of the lab's namespace names. */
export const NETNS_PREFIX = 'finwait-';
/**
 * A lab namespace's name, `finwait-<pid>-<12 hex digits>-a` (or `-b`): the pid is for people
 * reading `ip netns list`; the 48 random bits make the name unique across PID namespaces, which
 * may share /run/netns and count pids from 1 each. Nothing is judged by the pid.
 */
export const LAB_NETNS_NAME = /^finwait-\d+-[0-9a-f]{12}-[ab]$/;

/** The names of a new lab's two namespaces, and its random part (12 hex digits). */
export function labNetnsNames(): { a: string; b: string; id: string } {
  const id = randomBytes(6).toString('hex');
  const prefix = `${NETNS_PREFIX}${process.pid}-${id}`;
  return { a: `${prefix}-a`, b: `${prefix}-b`, id };
}

/**
 * File descriptors one `ip` child takes from this process while it starts, with room to spare:
 * its three pipes and libuv's exec-error pipe, and in a fresh process the SIGCHLD pipes (9 at
 * most, measured).
 */
export const SPAWN_FDS = 16;
/**
 * File descriptors `createLab()` needs free: a reserve for deleting its namespaces if it fails
 * (`SPAWN_FDS`), its own six (two namespaces, two owner's sockets, two TUN devices), the pipes of
 * the two `ip` children that configure the namespaces at once (three each), room to start the
 * second (`SPAWN_FDS`), and a few for the sweep.
 */
export const LAB_FDS = 2 * SPAWN_FDS + 16;

/** The error behind `error` (itself, or a `cause`) that says this process (EMFILE) or the system (ENFILE) has no fd left. */
export function outOfFds(error: unknown): NodeJS.ErrnoException | undefined {
  for (let e = error, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EMFILE' || code === 'ENFILE') return e;
  }
  return undefined;
}

/** The lab's reason for being unavailable when no file descriptor is left. */
export function outOfFdsReason(error: NodeJS.ErrnoException): string {
  const who = error.code === 'ENFILE' ? 'the system is' : 'this process is';
  return `${who} out of file descriptors (${error.message}); the lab needs about ${LAB_FDS} free`;
}

/** Opens `count` fds (of /dev/null), or throws EMFILE (ENFILE) with none left open. */
function openFds(count: number): number[] {
  const fds: number[] = [];
  try {
    while (fds.length < count) fds.push(fs.openSync(os.devNull, 'r'));
  } catch (error) {
    for (const fd of fds) fs.closeSync(fd);
    throw error;
  }
  return fds;
}

/**
 * Throws EMFILE (or ENFILE) unless `count` more file descriptors can be opened now. Checked right
 * before each child process, in the same synchronous run: a spawn that fails with EMFILE half-way
 * leaves the pipes it had made open for the life of the process.
 */
export function checkFdHeadroom(count = SPAWN_FDS): void {
  for (const fd of openFds(count)) fs.closeSync(fd);
}

/**
 * Holds `count` file descriptors until the returned function is called: room kept for a child
 * process that must run even if everything else took the rest (deleting namespaces after a
 * failure). Throws EMFILE (ENFILE) with nothing held.
 */
export function reserveFds(count = SPAWN_FDS): () => void {
  let fds = openFds(count);
  return () => {
    for (const fd of fds) fs.closeSync(fd);
    fds = [];
  };
}

const CAP_NET_ADMIN = 12;
const CAP_SYS_ADMIN = 21;

/** The lab's error when it cannot run here: `code` `'ERR_FINWAIT_LAB_UNAVAILABLE'`. */
export function labUnavailable(reason: string, cause?: unknown): CodedError {
  const error = codedError('ERR_FINWAIT_LAB_UNAVAILABLE', `The finwait lab is unavailable: ${reason}`);
  if (cause !== undefined) error.cause = cause;
  return error;
}

function hasCommand(command: string): boolean {
  const dirs = (process.env.PATH ?? '').split(path.delimiter).concat(['/usr/sbin', '/sbin']);
  return dirs.some((dir) => {
    try {
      fs.accessSync(path.join(dir, command), fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** The effective capability bits of this process (`CapEff` in /proc/self/status). */
function effectiveCapabilities(): bigint {
  const status = fs.readFileSync('/proc/self/status', 'utf8');
  const hex = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1];
  return hex === undefined ? 0n : BigInt(`0x${hex}`);
}

/**
 * Why the lab cannot run in this process, or `undefined` when it can. Cheap: no namespace is made.
 * Throws EMFILE (ENFILE) when it cannot tell for lack of file descriptors.
 */
export function missingForLab(): string | undefined {
  if (process.platform !== 'linux') return `it needs Linux network namespaces (this is ${process.platform})`;
  const caps = effectiveCapabilities();
  const missing = [
    (caps >> BigInt(CAP_NET_ADMIN)) & 1n ? undefined : 'CAP_NET_ADMIN',
    (caps >> BigInt(CAP_SYS_ADMIN)) & 1n ? undefined : 'CAP_SYS_ADMIN',
  ].filter((c) => c !== undefined);
  if (missing.length > 0) return `it needs ${missing.join(' and ')} (run as root)`;
  try {
    fs.closeSync(fs.openSync('/dev/net/tun', fs.constants.O_RDWR));
  } catch (error) {
    if (outOfFds(error)) throw error;
    return `/dev/net/tun cannot be opened (${(error as NodeJS.ErrnoException).code})`;
  }
  if (!hasCommand('ip')) return 'the ip command (iproute2) is not installed';
  return undefined;
}

/**
 * Runs `file args` with `input` on stdin; rejects with its stderr in the message, or with EMFILE
 * (nothing spawned) when this process has not `SPAWN_FDS` fds free.
 */
export function run(file: string, args: readonly string[], input = ''): Promise<string> {
  return new Promise((resolve, reject) => {
    checkFdHeadroom(); // thrown here, the promise rejects and nothing was spawned
    const child = execFile(file, args, { encoding: 'utf8' }, (error, stdout, stderr) => {
      if (error) {
        // One line: ip's own lines joined ('mount --make-shared /run/netns failed: ...; Command failed -:1').
        const detail = (stderr.trim() || error.message).replace(/\s*\n\s*/g, '; ');
        reject(Object.assign(new Error(`${file} ${args.join(' ')}: ${detail}`, { cause: error }), { stderr }));
      } else {
        resolve(stdout);
      }
    });
    // A child that exits without reading its input makes the write fail with EPIPE: its exit
    // status and stderr say what went wrong, so that error is not the one to report.
    child.stdin?.on('error', () => {});
    child.stdin?.end(input);
  });
}

/** Creates the named namespaces with one `ip` process. */
export async function addNamespaces(names: readonly string[]): Promise<void> {
  await run('ip', ['-batch', '-'], names.map((n) => `netns add ${n}\n`).join(''));
}

/**
 * Deletes the named namespaces that exist, with one `ip` process; the kernel frees each once its
 * last fd or socket is gone. A namespace someone else deleted meanwhile is not an error.
 */
export async function deleteNamespaces(names: readonly string[]): Promise<void> {
  const existing = names.filter(namespaceExists);
  if (existing.length === 0) return;
  try {
    await run('ip', ['-force', '-batch', '-'], existing.map((n) => `netns del ${n}\n`).join(''));
  } catch (error) {
    if (existing.some(namespaceExists)) throw error;
  }
}

/** Whether `/run/netns/NAME` exists. */
export function namespaceExists(name: string): boolean {
  return fs.existsSync(path.join(NETNS_DIR, name));
}

/** Moves each network device into the named namespace, renamed there, with one `ip` process. */
export async function moveDevices(moves: ReadonlyArray<{ device: string; netns: string; name: string }>): Promise<void> {
  await run('ip', ['-batch', '-'], moves.map((m) => `link set ${m.device} netns ${m.netns} name ${m.name}\n`).join(''));
}

/** Runs `ip -n NAME -batch -` with `commands`, one per line. */
export async function ipIn(name: string, commands: readonly string[]): Promise<void> {
  await run('ip', ['-n', name, '-batch', '-'], commands.map((c) => `${c}\n`).join(''));
}

/**
 * Applies an nftables ruleset inside the namespace with one `nft -f -` (one transaction: all
 * rules or none).
 */
export async function nftIn(name: string, rules: string): Promise<void> {
  if (!hasCommand('nft')) throw labUnavailable('the nft command (nftables) is not installed');
  try {
    await run('ip', ['netns', 'exec', name, 'nft', '-f', '-'], rules.endsWith('\n') ? rules : `${rules}\n`);
  } catch (error) {
    // nft's own message (a syntax error, an unknown table) is in it, with a code to tell it apart.
    throw Object.assign(error as Error, { code: 'ERR_FINWAIT_NFT' });
  }
}
