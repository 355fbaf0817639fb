/**
 * The lab: two fresh network namespaces, hosts `a` and `b`, whose only link is a wire this
 * process relays packet by packet, so that two real Linux TCP stacks can be driven through any
 * close sequence deterministically (hold both FINs, release them together, ...).
 *
 * Each namespace has `lo` up and one TUN device, `wire0`: 10.77.0.1/24 in `a`, 10.77.0.2/24 in
 * `b`. The addresses are the same in every lab; labs never share a namespace, so any number can
 * run at once, in one process or many.
 */
import fs from 'node:fs';
import type net from 'node:net';
import { debuglog } from 'node:util';
import { isMainThread } from 'node:worker_threads';
import { native } from '../binding';
import { invalidArgType, outOfRange } from '../errors';
import { Host } from './host';
import {
  addNamespaces,
  checkFdHeadroom,
  deleteNamespaces,
  ipIn,
  LAB_FDS,
  labNetnsNames,
  labUnavailable,
  missingForLab,
  moveDevices,
  outOfFds,
  outOfFdsReason,
  reserveFds,
} from './netns';
import { abandon, claimNew, closeSocket, hold, makingNamespaces, sweepStaleLabs } from './owner';
import { Wire } from './wire';

const debug = debuglog('finwait');

/** Options of `createLab()`. */
export interface LabOptions {
  /** MTU of the wire's devices, bytes (default 1500); segments are at most MTU − 40 bytes of payload. */
  mtu?: number;
}

/** A running lab. */
export interface Lab {
  /** Host `a`, 10.77.0.1. */
  readonly a: Host;
  /** Host `b`, 10.77.0.2. */
  readonly b: Host;
  /** The only link between them. */
  readonly wire: Wire;
  /**
   * Destroys every socket and server the hosts made, stops the wire, closes the TUN devices,
   * deletes both namespaces, then closes its owner's sockets. Idempotent; call it in `finally`.
   * If deleting fails (no fd left for `ip`), it rejects, and the next `createLab()` deletes them.
   */
  close(): Promise<void>;
}

/** Whether the lab can run in this process, and if not, why (for tests to skip with a reason). */
export type LabAvailability = { ok: true } | { ok: false; reason: string };

/** The device name in both namespaces. */
export const WIRE_DEVICE = 'wire0';
const ADDRESSES = { a: '10.77.0.1', b: '10.77.0.2' } as const;
const PREFIX_LENGTH = 24;

/**
 * Whether `createLab()` can work here: Linux, CAP_NET_ADMIN and CAP_SYS_ADMIN (root),
 * /dev/net/tun, the `ip` command, the addon, and about 50 free file descriptors. Cheap: nothing
 * is created. Never throws: out of file descriptors, it answers why.
 */
export function labAvailable(): LabAvailability {
  try {
    const reason = missingForLab();
    if (reason !== undefined) return { ok: false, reason };
    checkFdHeadroom(LAB_FDS);
  } catch (error) {
    const cause = outOfFds(error);
    if (cause) return { ok: false, reason: outOfFdsReason(cause) };
    return { ok: false, reason: `its requirements could not be checked (${(error as Error).message})` };
  }
  try {
    if (!native().constants.supported) return { ok: false, reason: `the addon has no back-end for ${process.platform}` };
  } catch (error) {
    return { ok: false, reason: `the addon did not load (${(error as Error).message})` };
  }
  return { ok: true };
}

/** Times `createLab()` starts again when another process's sweep took its namespaces as they were made. */
const ATTEMPTS = 5;

/**
 * Creates a lab. Rejects with `ERR_FINWAIT_LAB_UNAVAILABLE` saying what is missing (privileges,
 * /dev/net/tun, `ip`, free file descriptors), and deletes whatever it made if a step fails
 * half-way: it keeps file descriptors in reserve for that until the lab runs. First deletes the
 * lab namespaces whose owner is gone (a killed process, a terminated Worker): each lab's owner
 * holds a socket in its namespaces for the lab's life, and only a namespace without one is swept.
 */
export async function createLab(options: LabOptions = {}): Promise<Lab> {
  if (options === null || typeof options !== 'object') throw invalidArgType('options', 'of type object', options);
  const { mtu = 1500 } = options;
  if (typeof mtu !== 'number') throw invalidArgType('options.mtu', 'of type number', mtu);
  if (!Number.isInteger(mtu) || mtu < 576 || mtu > 65535) throw outOfRange('options.mtu', 'an integer >= 576 and <= 65535', mtu);
  const availability = labAvailable();
  if (!availability.ok) throw labUnavailable(availability.reason);
  await sweepStaleLabs();
  for (let attempt = 1; attempt <= ATTEMPTS; attempt++) {
    const lab = await makeLab(mtu);
    if (lab !== undefined) return lab;
  }
  throw labUnavailable(`another process deleted its namespaces as they were made, ${ATTEMPTS} times in a row`);
}

/** A lab, or `undefined` when another process's sweep took its namespaces before it could claim them. */
async function makeLab(mtu: number): Promise<Lab | undefined> {
  const names = labNetnsNames();
  let release: (() => void) | undefined;
  const fds: number[] = []; // namespaces and TUN devices
  const sockets: number[] = []; // claimed owner's sockets, not yet held by a server
  const owners: net.Server[] = [];
  const cleanup = async (): Promise<void> => {
    release?.(); // room for the `ip` that deletes the namespaces
    release = undefined;
    abandon([names.a, names.b]);
    for (const fd of fds.splice(0)) fs.closeSync(fd);
    for (const fd of sockets.splice(0)) closeSocket(fd);
    try {
      await deleteNamespaces([names.a, names.b]);
    } finally {
      // Let go only now: until they are deleted, no sweep may take them.
      for (const owner of owners.splice(0)) owner.close();
    }
  };
  try {
    release = reserveFds();
    makingNamespaces([names.a, names.b]);
    try {
      await addNamespaces([names.a, names.b]);
    } catch (error) {
      throw labUnavailable(`ip netns add failed (${(error as Error).message})`, error);
    }
    const take = (name: string): ReturnType<typeof claimNew> => {
      const claimed = claimNew(name);
      if (claimed !== undefined) {
        fds.push(claimed.nsFd);
        sockets.push(claimed.ownerFd);
      }
      return claimed;
    };
    const claimedA = take(names.a);
    const claimedB = take(names.b);
    if (claimedA === undefined || claimedB === undefined) {
      debug('createLab: another process swept %s and %s as they were made; starting again', names.a, names.b);
      await cleanup();
      return undefined;
    }
    const claimed = { a: claimedA, b: claimedB };
    for (const { ownerFd } of [claimedA, claimedB]) {
      sockets.splice(sockets.indexOf(ownerFd), 1); // the server owns it from now on, even if listen fails
      owners.push(await hold(ownerFd));
    }
    // A TUN device is made in the namespace /dev/net/tun was opened in. In the main thread the
    // addon opens it inside the lab namespace. In a Worker, Node opens it here, under a name unique
    // in this namespace, and one `ip` moves each device into its lab namespace as wire0 (20 to 40 ms
    // more): an fd Node opened is one Node closes when the Worker ends (its trackUnmanagedFds, on
    // by default), where the addon's would stay open for the life of the process and keep both
    // namespaces, and their devices, alive in the kernel.
    const { IFF_TUN, IFF_NO_PI } = native().constants;
    const flags = fs.constants.O_RDWR | fs.constants.O_NONBLOCK;
    const moved = !isMainThread;
    const open = (side: 'a' | 'b'): { nsFd: number; tunFd: number; device: string } => {
      const { nsFd } = claimed[side];
      const tunFd = moved ? fs.openSync('/dev/net/tun', flags) : native().netnsOpen(nsFd, '/dev/net/tun', flags);
      fds.push(tunFd);
      const device = native().tunSetIff(tunFd, moved ? `fw${names.id}${side}` : WIRE_DEVICE, IFF_TUN | IFF_NO_PI);
      return { nsFd, tunFd, device };
    };
    const ends = { a: open('a'), b: open('b') };
    if (moved) {
      try {
        await moveDevices([
          { device: ends.a.device, netns: names.a, name: WIRE_DEVICE },
          { device: ends.b.device, netns: names.b, name: WIRE_DEVICE },
        ]);
      } catch (error) {
        throw labUnavailable(`moving the TUN devices into the namespaces failed (${(error as Error).message})`, error);
      }
    }
    // Both at once, and both ended before going on: a failure never leaves the other child running.
    const configured = await Promise.allSettled(
      (['a', 'b'] as const).map((side) =>
        ipIn(names[side], [
          'link set lo up',
          `link set ${WIRE_DEVICE} mtu ${mtu}`,
          `addr add ${ADDRESSES[side]}/${PREFIX_LENGTH} dev ${WIRE_DEVICE}`,
          `link set ${WIRE_DEVICE} up`,
        ]),
      ),
    );
    for (const result of configured) {
      if (result.status === 'rejected') {
        const error = result.reason as Error;
        throw labUnavailable(`configuring the namespaces failed (${error.message})`, error);
      }
    }
    const wire = new Wire({ a: ends.a.tunFd, b: ends.b.tunFd });
    const a = new Host('a', ADDRESSES.a, names.a, ends.a.nsFd);
    const b = new Host('b', ADDRESSES.b, names.b, ends.b.nsFd);
    a.peer = b;
    b.peer = a;
    let closing: Promise<void> | undefined;
    release();
    release = undefined;
    return {
      a,
      b,
      wire,
      close() {
        closing ??= (async () => {
          a.closeAll();
          b.closeAll();
          wire.close();
          await cleanup();
        })();
        return closing;
      },
    };
  } catch (error) {
    const noFds = outOfFds(error);
    const failure = noFds ? labUnavailable(outOfFdsReason(noFds), error) : (error as Error);
    try {
      await cleanup();
    } catch (cleanupError) {
      // Its namespaces' owner's sockets are closed all the same: the next createLab() deletes them.
      failure.message += `; deleting its namespaces failed too (${(cleanupError as Error).message}), the next createLab() will`;
    }
    throw failure;
  }
}
