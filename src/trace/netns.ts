/**
 * Network namespaces by cookie (`SO_NETNS_COOKIE`, what a kernel event names a socket's namespace
 * by): the named ones in /run/netns and those of running processes, found by a scan of /proc that
 * runs at most once a second, each namespace opened once (by its inode) to read its cookie.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { native } from '../binding';
import { cookieHex } from '../diag';

export interface NamespaceRef {
  /** Its name in /run/netns, else `pid N` (a process inside it). */
  name: string;
  /** A path that opens it while it exists. */
  path: string;
}

const RESCAN_MS = 1000;

/** A namespace file's key in the cache of cookies: its inode number and its path (both may be reused). */
function fileKey(ino: number, file: string): string {
  return `${ino}\0${file}`;
}

/** This thread's network namespace's cookie (16 hex digits). */
export function homeNetns(): string {
  return cookieHex(native().netnsCookie());
}

export class NamespaceIndex {
  #byCookie = new Map<string, NamespaceRef>();
  /** Every name found, by cookie, also after its namespace is gone (a report may come later). */
  readonly #names = new Map<string, string>();
  /**
   * Cookies by path and inode: the kernel reuses a namespace's inode number once it is gone, so
   * an inode alone could name a new namespace by an old one's cookie.
   */
  #cookieByFile = new Map<string, string>();
  #scannedAt = -Infinity;
  readonly #run: string;
  readonly #proc: string;

  constructor(run = '/run/netns', proc = '/proc') {
    this.#run = run;
    this.#proc = proc;
  }

  /**
   * The namespace with this cookie: /run/netns is looked through again whenever a cookie is not
   * known (cheap: only new entries are opened), the processes' namespaces at most once a second.
   */
  find(cookie: string, now = performance.now()): NamespaceRef | undefined {
    const known = this.#byCookie.get(cookie);
    if (known !== undefined && fs.existsSync(known.path)) return known;
    this.#scan(false);
    const named = this.#byCookie.get(cookie);
    if (named !== undefined || now - this.#scannedAt < RESCAN_MS) return named;
    this.#scannedAt = now;
    this.#scan(true);
    return this.#byCookie.get(cookie);
  }

  /** The name found for this cookie, while the namespace lived (see `find()`), even if it is gone now. */
  nameOf(cookie: string): string | undefined {
    return this.#names.get(cookie) ?? this.find(cookie)?.name;
  }

  /**
   * Calls `fn` with an fd of the namespace with this cookie, open for the call (`null` for
   * `home`, this thread's own, which needs none). The namespace opened is checked to be that one:
   * a path known for it may name another by now (a /run/netns name made again, a pid reused).
   * Throws when no such namespace is found.
   */
  withFd<T>(cookie: string, home: string, fn: (nsFd: number | null) => T): T {
    if (cookie === home) return fn(null);
    for (let tries = 0; tries < 2; tries++) {
      const ref = this.find(cookie);
      if (ref === undefined) break;
      const fd = fs.openSync(ref.path, 'r');
      try {
        if (cookieHex(native().netnsCookie(fd)) === cookie) return fn(fd);
        // Another namespace behind that path now (its inode number reused, so the cookie read
        // for it was taken for this one's): forgotten, and looked for again.
        this.#cookieByFile.delete(fileKey(fs.fstatSync(fd).ino, ref.path));
      } finally {
        fs.closeSync(fd);
      }
      this.#byCookie.delete(cookie);
    }
    throw new Error(`no network namespace with cookie ${cookie} was found`);
  }

  /** The cookie of the namespace named `name` in /run/netns. */
  cookieOfName(name: string): string | undefined {
    if (name.includes('/') || name === '.' || name === '..') return undefined;
    return this.#cookieOf(path.join(this.#run, name));
  }

  #cookieOf(file: string): string | undefined {
    let ino: number;
    try {
      ino = fs.statSync(file).ino;
    } catch {
      return undefined;
    }
    const key = fileKey(ino, file);
    const known = this.#cookieByFile.get(key);
    if (known !== undefined) return known;
    let fd: number | undefined;
    try {
      fd = fs.openSync(file, 'r');
      const cookie = cookieHex(native().netnsCookie(fd));
      this.#cookieByFile.set(key, cookie);
      return cookie;
    } catch {
      return undefined;
    } finally {
      if (fd !== undefined) fs.closeSync(fd);
    }
  }

  #scan(processes: boolean): void {
    // Namespaces come and go (a lab's, a container's): what is not there now is forgotten.
    if (this.#cookieByFile.size > 65536) this.#cookieByFile.clear();
    const next = new Map<string, NamespaceRef>();
    const add = (file: string, name: string): void => {
      const cookie = this.#cookieOf(file);
      if (cookie === undefined || next.has(cookie)) return;
      next.set(cookie, { name, path: file });
      if (this.#names.size > 4096) this.#names.clear();
      this.#names.set(cookie, name);
    };
    for (const name of list(this.#run)) add(path.join(this.#run, name), name);
    if (processes) {
      for (const pid of list(this.#proc)) if (/^\d+$/.test(pid)) add(path.join(this.#proc, pid, 'ns', 'net'), `pid ${pid}`);
    } else {
      // Keep what the last process scan found while its process lives.
      for (const [cookie, ref] of this.#byCookie) if (!next.has(cookie) && ref.name.startsWith('pid ') && fs.existsSync(ref.path)) next.set(cookie, ref);
    }
    this.#byCookie = next;
  }
}

function list(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}
