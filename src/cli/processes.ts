/**
 * Which process holds a socket: the socket's inode matched against `/proc/<pid>/fd/*`, whose
 * links read `socket:[<inode>]` (what `ss -p` does). Reading another user's `/proc/<pid>/fd`
 * needs root (or CAP_SYS_PTRACE); those processes are counted, not guessed.
 */
import fs from 'node:fs';
import path from 'node:path';

/** A process holding a socket. */
export interface Owner {
  pid: number;
  /** The command line (`/proc/<pid>/cmdline`), or the command name when that is empty. */
  command: string;
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

function commandOf(dir: string): string {
  try {
    const cmdline = fs.readFileSync(path.join(dir, 'cmdline'), 'utf8').split('\0').filter(Boolean).join(' ');
    if (cmdline) return cmdline;
  } catch {
    // gone or not readable: fall back to comm
  }
  try {
    return fs.readFileSync(path.join(dir, 'comm'), 'utf8').trim();
  } catch {
    return '?';
  }
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
    let command: string | undefined;
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
      command ??= commandOf(dir);
      const owners = byInode.get(inode) ?? [];
      if (!owners.some((o) => o.pid === Number(name))) owners.push({ pid: Number(name), command });
      byInode.set(inode, owners);
    }
  }
  return { byInode, scanned, unreadable };
}
