/**
 * What took over each ended connection's 4-tuple (a timewait socket in TIME_WAIT or FIN_WAIT2, or
 * nothing), looked up in batches: the ends that need a look within one turn of the event loop are
 * asked for in one exact sock_diag lookup per network namespace (32 requests per sendmsg), through
 * a netlink socket kept open for this thread's namespace. A look per end, each with a socket of
 * its own, cost ~50 µs; in a batch it costs a few.
 */
import { native } from '../binding';
import { DIAG_MSG_LEN, ID_RECORD, isMiss, recordOf, replyAt, sameTuple } from '../diag';
import type { ConnectionEnd, Successor } from './ends';
import type { NamespaceIndex } from './netns';
import { timeWaitOverflows } from '../tcp-counters';

/** A looked-up end: its successor, and for `'none'`, whether its namespace's TIME_WAIT table ever overflowed. */
export type Looked = (end: ConnectionEnd, successor: Successor, overflowed: boolean | undefined) => void;

/** Queues ends and answers them in batches, one turn later. */
export class SuccessorLookup {
  readonly #home: string;
  readonly #namespaces: NamespaceIndex;
  readonly #done: Looked;
  #queue: ConnectionEnd[] = [];
  #scheduled = false;
  #closed = false;
  /** The netlink socket for this thread's namespace, made on first use. */
  #homeSocket = -1;

  constructor(home: string, namespaces: NamespaceIndex, done: Looked) {
    this.#home = home;
    this.#namespaces = namespaces;
    this.#done = done;
  }

  add(end: ConnectionEnd): void {
    if (this.#closed) return;
    this.#queue.push(end);
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => this.#flush());
  }

  close(): void {
    this.#closed = true;
    this.#queue = [];
    if (this.#homeSocket >= 0) native().closeFd(this.#homeSocket);
    this.#homeSocket = -1;
  }

  #flush(): void {
    this.#scheduled = false;
    if (this.#closed) return;
    const queue = this.#queue;
    this.#queue = [];
    const byNetns = new Map<string, ConnectionEnd[]>();
    for (const end of queue) {
      // An address the kernel cleared (an RST) has nothing to look up.
      if (end.remote.port === 0) {
        this.#done(end, undefined, undefined);
        continue;
      }
      const key = end.netns ?? this.#home;
      let list = byNetns.get(key);
      if (list === undefined) byNetns.set(key, (list = []));
      list.push(end);
    }
    for (const [netns, ends] of byNetns) this.#lookUp(netns, ends);
  }

  #lookUp(netns: string, ends: ConnectionEnd[]): void {
    let successors: Successor[] | undefined;
    let overflowed: number | undefined;
    try {
      this.#namespaces.withFd(netns, this.#home, (nsFd) => {
        successors = this.#find(nsFd, ends);
        if (successors.includes('none')) overflowed = timeWaitOverflows(nsFd);
      });
    } catch {
      // Gone, or not searchable: nothing is claimed of these ends.
      successors = undefined;
    }
    ends.forEach((end, i) => {
      const successor = successors?.[i];
      this.#done(end, successor, successor === 'none' && overflowed !== undefined ? overflowed > 0 : undefined);
    });
  }

  #find(nsFd: number | null, ends: ConnectionEnd[]): Successor[] {
    const n = native();
    const requests = new Uint8Array(ends.length * ID_RECORD);
    ends.forEach((end, i) => requests.set(recordOf({ local: end.local, remote: end.remote }, end.family === 6), i * ID_RECORD));
    const replies = new Uint8Array(ends.length * DIAG_MSG_LEN);
    const status = new Int32Array(ends.length);
    let nl: number;
    if (nsFd === null) {
      if (this.#homeSocket < 0) this.#homeSocket = n.sockDiagSocket(null);
      nl = this.#homeSocket;
    } else {
      nl = n.sockDiagSocket(nsFd);
    }
    try {
      n.sockDiagFind(nl, requests, replies, status);
    } finally {
      if (nl !== this.#homeSocket) n.closeFd(nl);
    }
    const view = new DataView(replies.buffer);
    return ends.map((_, i): Successor => {
      if (status[i] !== 1) {
        if (isMiss(status[i]!)) return 'none';
        return undefined;
      }
      // Without a match the kernel can answer with the listener of the local address.
      if (!sameTuple(requests, i, replies, i)) return 'none';
      const { state } = replyAt(view, i);
      return state === 'TIME_WAIT' || state === 'FIN_WAIT2' ? state : 'none';
    });
  }
}
