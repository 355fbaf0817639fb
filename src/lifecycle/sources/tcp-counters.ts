/**
 * The kernel's count of RSTs sent in a network namespace (`Tcp: OutRsts` of /proc/net/snmp, per
 * namespace), as evidence of who reset an orphan. An orphan with our FIN sent (FIN_WAIT1,
 * FIN_WAIT2, CLOSING) that receives new data answers it with an RST and is gone; one that
 * receives the peer's RST is gone without sending anything; sock_diag shows the two alike (gone),
 * and a FIN_WAIT2 orphan is a timewait socket, which sends no destroy message either. Only this
 * count tells them apart: it rises with an RST this end sent, and not with one it received.
 * It counts the whole namespace: an RST another socket sent at the same moment is taken for this
 * one's (a namespace of its own, like a lab host's, has none).
 */
import fs from 'node:fs';
import { debuglog } from 'node:util';
import { native } from '../../binding';

const debug = debuglog('finwait');

const text = Buffer.alloc(8192);
/** The column of OutRsts in the `Tcp:` lines, found on first read. */
let column = -1;

/**
 * An open /proc/net/snmp of the network namespace `nsFd` is in (read again from its start each
 * time: a proc file is made anew on every read), `undefined` where it cannot be opened there.
 */
export function openCounters(nsFd: number | null): number | undefined {
  try {
    // /proc/thread-self: the namespace of the calling thread, which netnsOpen moves for the open.
    return nsFd === null ? fs.openSync('/proc/thread-self/net/snmp', 'r') : native().netnsOpen(nsFd, '/proc/thread-self/net/snmp', fs.constants.O_RDONLY);
  } catch (error) {
    debug('tcp counters: %s', (error as Error).message);
    return undefined;
  }
}

/** `Tcp: OutRsts` read from `fd` (see `openCounters()`), `undefined` if it cannot be read. */
export function rstsSent(fd: number | undefined): number | undefined {
  if (fd === undefined) return undefined;
  try {
    const length = fs.readSync(fd, text, 0, text.length, 0);
    const lines = text.toString('latin1', 0, length).split('\n');
    const at = lines.findIndex((line) => line.startsWith('Tcp: '));
    if (at < 0 || at + 1 >= lines.length) return undefined;
    if (column < 0) column = lines[at]!.split(' ').indexOf('OutRsts');
    const value = Number(lines[at + 1]!.split(' ')[column]);
    return column > 0 && Number.isFinite(value) ? value : undefined;
  } catch (error) {
    debug('tcp counters: %s', (error as Error).message);
    return undefined;
  }
}
