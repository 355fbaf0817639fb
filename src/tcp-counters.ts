/**
 * The kernel's TCP counters of a network namespace (/proc/net/snmp and /proc/net/netstat, per
 * namespace), as evidence sock_diag cannot give:
 *
 * - `Tcp: OutRsts`, the RSTs sent, tells who reset an orphan. An orphan with our FIN sent
 *   (FIN_WAIT1, FIN_WAIT2, CLOSING) that receives new data answers it with an RST and is gone; one
 *   that receives the peer's RST is gone without sending anything; sock_diag shows the two alike
 *   (gone), and a FIN_WAIT2 orphan is a timewait socket, which sends no destroy message either.
 *   Only this count tells them apart: it rises with an RST this end sent, and not with one it
 *   received. It counts the whole namespace: an RST another socket sent at the same moment is
 *   taken for this one's (a namespace of its own, like a lab host's, has none).
 * - `TcpExt: TCPTimeWaitOverflow`: how often a TIME_WAIT could not be made because the
 *   namespace's `tcp_max_tw_buckets` were in use (a connection then ends with neither TIME_WAIT
 *   nor RST).
 */
import fs from 'node:fs';
import { debuglog } from 'node:util';
import { native } from './binding';

const debug = debuglog('finwait');

/** Which file: /proc/net/snmp (`Tcp:`) or /proc/net/netstat (`TcpExt:`). */
export type CountersFile = 'snmp' | 'netstat';

const text = Buffer.alloc(16384);
/** The column of each counter in its section's lines, found on first read (`Tcp OutRsts` -> 10). */
const columns = new Map<string, number>();

/**
 * An open /proc/net/`file` of the network namespace `nsFd` is in (read again from its start each
 * time: a proc file is made anew on every read), `undefined` where it cannot be opened there.
 * Close it with `closeCounters()`.
 */
export function openCounters(nsFd: number | null, file: CountersFile = 'snmp'): number | undefined {
  try {
    // /proc/thread-self: the namespace of the calling thread, which netnsOpen moves for the open.
    const at = `/proc/thread-self/net/${file}`;
    return nsFd === null ? fs.openSync(at, 'r') : native().netnsOpen(nsFd, at, fs.constants.O_RDONLY);
  } catch (error) {
    debug('tcp counters: %s', (error as Error).message);
    return undefined;
  }
}

/** Closes what `openCounters(nsFd, ...)` opened (the addon's fd in another namespace, Node's here). */
export function closeCounters(fd: number | undefined, nsFd: number | null): void {
  if (fd === undefined) return;
  if (nsFd === null) fs.closeSync(fd);
  else native().closeFd(fd);
}

/** The counter `name` of the `section:` lines of the file open at `fd`, `undefined` if it cannot be read. */
export function counter(fd: number | undefined, section: 'Tcp' | 'TcpExt', name: string): number | undefined {
  if (fd === undefined) return undefined;
  try {
    const length = fs.readSync(fd, text, 0, text.length, 0);
    const lines = text.toString('latin1', 0, length).split('\n');
    const at = lines.findIndex((line) => line.startsWith(`${section}: `));
    if (at < 0 || at + 1 >= lines.length) return undefined;
    const key = `${section} ${name}`;
    let column = columns.get(key);
    if (column === undefined) columns.set(key, (column = lines[at]!.split(' ').indexOf(name)));
    const value = Number(lines[at + 1]!.split(' ')[column]);
    return column > 0 && Number.isFinite(value) ? value : undefined;
  } catch (error) {
    debug('tcp counters: %s', (error as Error).message);
    return undefined;
  }
}

/** `Tcp: OutRsts` read from `fd` (see `openCounters()`), `undefined` if it cannot be read. */
export function rstsSent(fd: number | undefined): number | undefined {
  return counter(fd, 'Tcp', 'OutRsts');
}

/** `TcpExt: TCPTimeWaitOverflow` of the namespace `nsFd` is in (this thread's with `null`), `undefined` if it cannot be read. */
export function timeWaitOverflows(nsFd: number | null): number | undefined {
  const fd = openCounters(nsFd, 'netstat');
  try {
    return counter(fd, 'TcpExt', 'TCPTimeWaitOverflow');
  } finally {
    closeCounters(fd, nsFd);
  }
}
