/**
 * Which process holds a socket: the socket's inode matched against `/proc/<pid>/fd/*`, whose
 * links read `socket:[<inode>]` (what `ss -p` does). Reading another user's `/proc/<pid>/fd`
 * needs root (or CAP_SYS_PTRACE); those processes are counted, not guessed.
 */
import fs from 'node:fs';
import path from 'node:path';

/**
 * The most of a command line kept, in bytes of `/proc/<pid>/cmdline`: a process chooses its own
 * command line (up to ~2 MB of arguments, or anything it writes over them), so only this much is
 * read, once per process, and its sockets share it.
 */
export const COMMAND_MAX_BYTES = 256;

/** What ends a command line cut at `COMMAND_MAX_BYTES`. */
export const TRUNCATED_MARK = '…[truncated]';

/** A process holding a socket. */
export interface Owner {
  pid: number;
  /** The command name (`/proc/<pid>/comm`, what `ss -p` shows); absent when it could not be read. */
  comm?: string;
  /**
   * The command line (`/proc/<pid>/cmdline`, arguments joined by spaces), at most
   * `COMMAND_MAX_BYTES` bytes of it; or the command name when it is empty.
   */
  command: string;
  /** Set when `command` was cut at `COMMAND_MAX_BYTES`: it then ends in `TRUNCATED_MARK`. */
  commandTruncated?: true;
}

/** Socket inodes and the processes holding them, and what could not be read. */
export interface Owners {
  byInode: Map<number, Owner[]>;
  /** Processes whose fds were read. */
  scanned: number;
  /** Processes whose fds could not be read (permission): their sockets show no owner. */
  unreadable: number;
  /** Set when `/proc` itself could not be read: no owner is known. */
  error?: string;
}

/** At most `max` bytes of `file` (and whether there was more), or undefined when it cannot be read. */
function readHead(file: string, max: number): { bytes: Buffer; more: boolean } | undefined {
  let fd: number | undefined;
  try {
    fd = fs.openSync(file, 'r');
    const buffer = Buffer.alloc(max + 1);
    let length = 0;
    // /proc files can return less than asked per read.
    for (let n = -1; n !== 0 && length < buffer.length; length += n) n = fs.readSync(fd, buffer, length, buffer.length - length, null);
    return { bytes: buffer.subarray(0, Math.min(length, max)), more: length > max };
  } catch {
    return undefined; // gone or not readable
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/** The process's command name and bounded command line, read once per process. */
function processOf(pid: number, dir: string): Owner {
  // The kernel keeps comm to 15 bytes; the bound is for a /proc that is not the kernel's.
  const commHead = readHead(path.join(dir, 'comm'), 64);
  const comm = commHead ? commHead.bytes.toString('utf8').replace(/\n$/, '') : undefined;
  const head = readHead(path.join(dir, 'cmdline'), COMMAND_MAX_BYTES);
  let command = '';
  if (head) {
    let text = head.bytes.toString('utf8');
    // A multi-byte character cut at the bound decodes as U+FFFD.
    if (head.more) text = text.replace(/\uFFFD$/, '');
    command = text.split('\0').filter(Boolean).join(' ');
    if (head.more && command) return { pid, ...(comm !== undefined ? { comm } : {}), command: command + TRUNCATED_MARK, commandTruncated: true };
  }
  return { pid, ...(comm !== undefined ? { comm } : {}), command: command || comm || '?' };
}

/**
 * The owners of the sockets whose inodes are in `wanted` (all sockets when omitted), from
 * `proc` (default `/proc`). Processes that exit during the scan are skipped.
 */
export function socketOwners(wanted?: ReadonlySet<number>, proc = '/proc'): Owners {
  const byInode = new Map<number, Owner[]>();
  let names: string[];
  try {
    names = fs.readdirSync(proc).filter((n) => /^\d+$/.test(n));
  } catch (error) {
    return { byInode, scanned: 0, unreadable: 0, error: `${proc} not readable (${(error as NodeJS.ErrnoException).code ?? 'error'})` };
  }
  let scanned = 0;
  let unreadable = 0;
  for (const name of names) {
    const dir = path.join(proc, name);
    let fds: string[];
    try {
      fds = fs.readdirSync(path.join(dir, 'fd'));
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'EACCES' || code === 'EPERM') unreadable++;
      continue;
    }
    scanned++;
    let owner: Owner | undefined;
    for (const fd of fds) {
      let link: string;
      try {
        link = fs.readlinkSync(path.join(dir, 'fd', fd));
      } catch {
        continue;
      }
      const match = /^socket:\[(\d+)\]$/.exec(link);
      if (!match) continue;
      const inode = Number(match[1]);
      if (inode === 0 || (wanted && !wanted.has(inode))) continue;
      owner ??= processOf(Number(name), dir);
      const owners = byInode.get(inode);
      // One process is scanned at a time, so its own duplicates (dup'ed fds) are the last entry.
      if (!owners) byInode.set(inode, [owner]);
      else if (owners[owners.length - 1] !== owner) owners.push(owner);
    }
  }
  return { byInode, scanned, unreadable };
}
