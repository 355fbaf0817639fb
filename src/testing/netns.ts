/**
 * Named network namespaces (`ip netns`, so `ip netns exec NAME ...` and `ss -N NAME` reach them
 * while a lab runs), what the lab needs to create them, and commands run inside them.
 */
import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { codedError, type CodedError } from '../errors';

/** Where `ip netns add` puts the namespaces it names. */
export const NETNS_DIR = '/run/netns';
/** Prefix of the lab's namespace names: `finwait-<pid>-<threadId>-<n>-a`. */
export const NETNS_PREFIX = 'finwait-';

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

/** Why the lab cannot run in this process, or `undefined` when it can. Cheap: no namespace is made. */
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
    return `/dev/net/tun cannot be opened (${(error as NodeJS.ErrnoException).code})`;
  }
  if (!hasCommand('ip')) return 'the ip command (iproute2) is not installed';
  return undefined;
}

/** Runs `file args` with `input` on stdin; rejects with its stderr in the message. */
export function run(file: string, args: readonly string[], input = ''): Promise<string> {
  return new Promise((resolve, reject) => {
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

/** Deletes the named namespaces that exist, with one `ip` process; the kernel frees each once its last socket is gone. */
export async function deleteNamespaces(names: readonly string[]): Promise<void> {
  const existing = names.filter((n) => fs.existsSync(path.join(NETNS_DIR, n)));
  if (existing.length > 0) await run('ip', ['-force', '-batch', '-'], existing.map((n) => `netns del ${n}\n`).join(''));
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

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Clock ticks per second of /proc/PID/stat's times (USER_HZ: 100 on every Linux port Node runs on). */
const USER_HZ = 100;
/** Slack for comparing a namespace's ctime with a process's start (both to ~10 ms). */
const CLOCK_SLACK_MS = 100;

/** When process `pid` started, in ms since the epoch (from /proc), or `undefined` if unknown. */
function processStart(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command's closing parenthesis start at field 3; starttime is field 22.
    const ticks = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
    const uptime = Number(fs.readFileSync('/proc/uptime', 'utf8').split(' ')[0]);
    const start = Date.now() - uptime * 1000 + (ticks / USER_HZ) * 1000;
    return Number.isFinite(start) ? start : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Whether the lab namespace `name` was left by a process that is gone: its pid (from the name)
 * is not alive, or is alive but started after the namespace was made (the pid was reused, as
 * pids are from 1 again in a new container, including this process's own pid).
 */
function isStale(name: string): boolean {
  const pid = /^finwait-(\d+)-\d+-\d+-[ab]$/.exec(name)?.[1];
  if (pid === undefined) return false;
  if (Number(pid) !== process.pid && !pidAlive(Number(pid))) return true;
  const started = processStart(Number(pid));
  if (started === undefined) return false;
  try {
    return fs.statSync(path.join(NETNS_DIR, name)).ctimeMs < started - CLOCK_SLACK_MS;
  } catch {
    return false;
  }
}

/**
 * Deletes lab namespaces left by processes that died before their lab's `close()` (a killed test
 * run), recognised by the pid in their name and, for a pid in use again, by the namespace being
 * older than its process. Best effort: errors are ignored.
 */
export function sweepStaleNamespaces(): void {
  let names: string[];
  try {
    names = fs.readdirSync(NETNS_DIR);
  } catch {
    return;
  }
  const stale = names.filter(isStale);
  if (stale.length === 0) return;
  try {
    execFileSync('ip', ['-force', '-batch', '-'], { input: stale.map((n) => `netns del ${n}\n`).join(''), stdio: ['pipe', 'ignore', 'ignore'] });
  } catch {
    // Someone else is deleting them too, or cannot: not this lab's business.
  }
}
