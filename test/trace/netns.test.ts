/**
 * NamespaceIndex: network namespaces by cookie, as kernel events name them. A path it knows for a
 * namespace can name another one later (a /run/netns name made again): what it opens for a
 * cookie is checked to be that namespace.
 */
import { execFileSync } from 'node:child_process';
import { describe, expect } from 'vitest';
import { native } from '../../src/binding';
import { cookieHex } from '../../src/diag';
import { NamespaceIndex } from '../../src/trace/netns';
import { CAP_SYS_ADMIN, hasCapability, itNeeds, type Availability } from '../helpers';

function netnsAvailable(): Availability {
  if (!hasCapability(CAP_SYS_ADMIN)) return { ok: false, reason: 'this process lacks CAP_SYS_ADMIN (not root)' };
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
    return { ok: true };
  } catch {
    return { ok: false, reason: 'the ip command (iproute2) is not installed' };
  }
}

describe('NamespaceIndex.withFd()', () => {
  itNeeds('root and the ip command (ip netns)', netnsAvailable, 'opens the namespace with the cookie asked for, never another one made since under the same name', async () => {
    const name = `finwait-netns-${process.pid}`;
    const ip = (...args: string[]): void => void execFileSync('ip', args, { stdio: 'ignore' });
    const index = new NamespaceIndex();
    const opened = (cookie: string): string => index.withFd(cookie, 'home', (fd) => cookieHex(native().netnsCookie(fd!)));
    ip('netns', 'add', name);
    try {
      const first = index.cookieOfName(name)!;
      expect(first).toMatch(/^[0-9a-f]{16}$/);
      expect(opened(first)).toBe(first);
      // The name made again: another namespace behind the same path.
      ip('netns', 'del', name);
      ip('netns', 'add', name);
      const second = index.cookieOfName(name)!;
      expect(second).not.toBe(first);
      expect(() => opened(first)).toThrow(`no network namespace with cookie ${first} was found`);
      expect(opened(second)).toBe(second);
      // This thread's own namespace needs no fd.
      expect(index.withFd('home', 'home', (fd) => fd)).toBe(null);
    } finally {
      ip('netns', 'del', name);
    }
  });
});
