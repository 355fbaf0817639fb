/**
 * Who owns a lab's namespaces, in a way any process that sees /run/netns can check, whatever its
 * PID namespace and without trusting pids: the owner keeps an abstract Unix socket named
 * `@finwait-lab` bound inside each of its lab's namespaces for the lab's life. An abstract name
 * belongs to its network namespace (whoever enters the namespace sees it), and the kernel frees it
 * when the socket's last fd closes: when the lab closes, when its process ends however it ends,
 * and when the Worker that made the lab ends (the socket is a Node handle, closed with the
 * Worker's environment). The socket is close-on-exec: no child process inherits it.
 *
 * A sweeper claims a namespace by binding the same name in it: EADDRINUSE says the owner lives;
 * success makes the sweeper its owner until it has deleted it. An owner binds its name right after
 * `ip netns add`; a sweeper that came in between wins, and the owner, finding the name taken or
 * the namespace gone, starts again with new names.
 * @see unix(7) abstract sockets
 */
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { debuglog } from 'node:util';
import { native } from '../binding';
import { abstractSockaddr } from '../sockaddr';
import { deleteNamespaces, LAB_NETNS_NAME, NETNS_DIR } from './netns';

/** The abstract socket name an owner binds in each of its namespaces (`ss -xl -N NAME` shows `@finwait-lab`). */
export const OWNER_SOCKET = 'finwait-lab';
const debug = debuglog('finwait');

/** Names of namespaces this process is making now and has not claimed yet: its own sweeps leave them alone. */
const making = new Set<string>();

/**
 * Closes a socket the addon made, through a Node handle: in a Worker, `fs.closeSync()` of an fd
 * Node did not open warns ("closed but not opened in unmanaged mode").
 */
export function closeSocket(fd: number): void {
  new net.Socket({ fd, readable: false, writable: false }).destroy();
}

/**
 * Binds the owner's name in the namespace `nsFd`: the bound socket's fd, or `undefined` when the
 * name is taken (by a live owner, or by another sweeper). Other errors are thrown.
 */
function claim(nsFd: number): number | undefined {
  const fd = native().netnsSocket(nsFd, native().constants.AF_UNIX, native().constants.SOCK_STREAM);
  try {
    native().bind(fd, abstractSockaddr(OWNER_SOCKET));
    return fd;
  } catch (error) {
    closeSocket(fd);
    if ((error as NodeJS.ErrnoException).code === 'EADDRINUSE') return undefined;
    throw error;
  }
}

/** Marks namespaces this process is about to make (`ip netns add`), until `claimNew()` or `abandon()`. */
export function makingNamespaces(names: readonly string[]): void {
  for (const name of names) making.add(name);
}

/** Forgets names marked by `makingNamespaces()`. */
export function abandon(names: readonly string[]): void {
  for (const name of names) making.delete(name);
}

/**
 * Claims the namespace NAME this process has just made: an open fd of the namespace and the
 * claimed socket's fd, or `undefined` when a sweeper came first (the name is taken, or no longer
 * names this namespace). Other errors (EMFILE) are thrown; nothing stays open then.
 */
export function claimNew(name: string): { nsFd: number; ownerFd: number } | undefined {
  making.delete(name);
  const file = path.join(NETNS_DIR, name);
  let nsFd: number;
  try {
    nsFd = fs.openSync(file, 'r');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  let ownerFd: number | undefined;
  try {
    try {
      ownerFd = claim(nsFd);
    } catch (error) {
      // A sweeper deleting the namespace unmounts it first: opened in between, the file is no
      // namespace any more, and entering it fails with EINVAL.
      if ((error as NodeJS.ErrnoException).code !== 'EINVAL') throw error;
      debug('claimNew: %s is no namespace any more: swept as it was made', name);
    }
    // A sweeper deletes a namespace before it lets go of its claim: claimed now, the namespace
    // must still be the one at its name.
    if (ownerFd !== undefined && sameFile(fs.fstatSync(nsFd), file)) return { nsFd, ownerFd };
  } catch (error) {
    if (ownerFd !== undefined) closeSocket(ownerFd);
    fs.closeSync(nsFd);
    throw error;
  }
  if (ownerFd !== undefined) closeSocket(ownerFd);
  fs.closeSync(nsFd);
  return undefined;
}

function sameFile(stat: fs.Stats, file: string): boolean {
  try {
    const now = fs.statSync(file);
    return now.dev === stat.dev && now.ino === stat.ino;
  } catch {
    return false;
  }
}

/**
 * Holds a claimed socket for the lab's life: a listening Node server on it (it accepts nothing it
 * keeps), unref'd, so that it closes with the process or the Worker. Close the server to let go.
 */
export async function hold(ownerFd: number): Promise<net.Server> {
  const server = net.createServer((socket) => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // The handle takes the fd now; if listen(2) fails, Node closes the handle and so the fd.
    server.listen({ fd: ownerFd }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server.unref();
}

/**
 * Deletes lab namespaces whose owner is gone (a killed process, a terminated Worker), judged by
 * the owner's socket alone, with one `ip` process. Best effort: a namespace that cannot be
 * entered (not a namespace yet) or deleted is left for a later sweep.
 */
export async function sweepStaleLabs(): Promise<void> {
  let names: string[];
  try {
    names = fs.readdirSync(NETNS_DIR).filter((name) => LAB_NETNS_NAME.test(name) && !making.has(name));
  } catch {
    return;
  }
  const claims: number[] = [];
  const stale: string[] = [];
  try {
    for (const name of names) {
      let nsFd: number;
      try {
        nsFd = fs.openSync(path.join(NETNS_DIR, name), 'r');
      } catch {
        continue; // deleted meanwhile
      }
      try {
        const fd = claim(nsFd);
        if (fd !== undefined) {
          claims.push(fd);
          stale.push(name);
        }
      } catch {
        // Not a namespace (`ip netns add` is still making it), or this process cannot enter it.
      } finally {
        fs.closeSync(nsFd);
      }
    }
    // Deleted while claimed: no one else can take them in between.
    if (stale.length > 0) {
      debug('lab sweep: deleting %s (no owner)', stale.join(' '));
      await deleteNamespaces(stale).catch((error: unknown) => debug('lab sweep: %s', (error as Error).message));
    }
  } finally {
    for (const fd of claims) closeSocket(fd);
  }
}
