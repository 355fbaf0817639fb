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
import path from 'node:path';
import { threadId } from 'node:worker_threads';
import { native } from '../binding';
import { invalidArgType, outOfRange } from '../errors';
import { Host } from './host';
import { addNamespaces, deleteNamespaces, ipIn, labUnavailable, missingForLab, NETNS_DIR, NETNS_PREFIX, sweepStaleNamespaces } from './netns';
import { Wire } from './wire';

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
   * Destroys every socket and server the hosts made, stops the wire, closes the TUN devices and
   * deletes both namespaces. Idempotent; call it in `finally`.
   */
  close(): Promise<void>;
}

/** Whether the lab can run in this process, and if not, why (for tests to skip with a reason). */
export type LabAvailability = { ok: true } | { ok: false; reason: string };

/** The device name in both namespaces. */
export const WIRE_DEVICE = 'wire0';
const ADDRESSES = { a: '10.77.0.1', b: '10.77.0.2' } as const;
const PREFIX_LENGTH = 24;

let labs = 0;

/**
 * Whether `createLab()` can work here: Linux, CAP_NET_ADMIN and CAP_SYS_ADMIN (root),
 * /dev/net/tun, the `ip` command and the addon. Cheap: nothing is created.
 */
export function labAvailable(): LabAvailability {
  const reason = missingForLab();
  if (reason !== undefined) return { ok: false, reason };
  try {
    if (!native().constants.supported) return { ok: false, reason: `the addon has no back-end for ${process.platform}` };
  } catch (error) {
    return { ok: false, reason: `the addon did not load (${(error as Error).message})` };
  }
  return { ok: true };
}

/**
 * Creates a lab. Rejects with `ERR_FINWAIT_LAB_UNAVAILABLE` saying what is missing (privileges,
 * /dev/net/tun, `ip`), and cleans up whatever it made if a step fails half-way.
 */
export async function createLab(options: LabOptions = {}): Promise<Lab> {
  if (options === null || typeof options !== 'object') throw invalidArgType('options', 'of type object', options);
  const { mtu = 1500 } = options;
  if (typeof mtu !== 'number') throw invalidArgType('options.mtu', 'of type number', mtu);
  if (!Number.isInteger(mtu) || mtu < 576 || mtu > 65535) throw outOfRange('options.mtu', 'an integer >= 576 and <= 65535', mtu);
  const availability = labAvailable();
  if (!availability.ok) throw labUnavailable(availability.reason);
  sweepStaleNamespaces();

  // Unique among this process's threads too: each worker has its own count.
  const id = `${process.pid}-${threadId}-${labs++}`;
  const names = { a: `${NETNS_PREFIX}${id}-a`, b: `${NETNS_PREFIX}${id}-b` };
  const fds: number[] = [];
  const cleanup = async (): Promise<void> => {
    for (const fd of fds.splice(0)) fs.closeSync(fd);
    await deleteNamespaces([names.a, names.b]);
  };
  try {
    try {
      await addNamespaces([names.a, names.b]);
    } catch (error) {
      throw labUnavailable(`ip netns add failed (${(error as Error).message})`, error);
    }
    const { IFF_TUN, IFF_NO_PI } = native().constants;
    const open = (side: 'a' | 'b'): { nsFd: number; tunFd: number } => {
      const nsFd = fs.openSync(path.join(NETNS_DIR, names[side]), 'r');
      fds.push(nsFd);
      // The device is made in the namespace /dev/net/tun was opened in.
      const tunFd = native().netnsOpen(nsFd, '/dev/net/tun', fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
      fds.push(tunFd);
      native().tunSetIff(tunFd, WIRE_DEVICE, IFF_TUN | IFF_NO_PI);
      return { nsFd, tunFd };
    };
    const ends = { a: open('a'), b: open('b') };
    try {
      await Promise.all(
        (['a', 'b'] as const).map((side) =>
          ipIn(names[side], [
            'link set lo up',
            `link set ${WIRE_DEVICE} mtu ${mtu}`,
            `addr add ${ADDRESSES[side]}/${PREFIX_LENGTH} dev ${WIRE_DEVICE}`,
            `link set ${WIRE_DEVICE} up`,
          ]),
        ),
      );
    } catch (error) {
      throw labUnavailable(`configuring the namespaces failed (${(error as Error).message})`, error);
    }
    const wire = new Wire({ a: ends.a.tunFd, b: ends.b.tunFd });
    const a = new Host('a', ADDRESSES.a, names.a, ends.a.nsFd);
    const b = new Host('b', ADDRESSES.b, names.b, ends.b.nsFd);
    a.peer = b;
    b.peer = a;
    let closing: Promise<void> | undefined;
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
    await cleanup().catch(() => {});
    throw error;
  }
}
