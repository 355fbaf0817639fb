/** What the trace tests share. */
import type net from 'node:net';
import { native } from '../../src/binding';
import { fdOf } from '../../src/testing/index';
import { cookieKeyOf } from '../../src/diag';
import type { ConnectionEnd, CookieKey } from '../../src/trace/ends';
import { checkOptions, startTrace, type InternalTrace, type TraceOptions } from '../../src/trace/trace';

/** A trace that follows only the sockets given to `follow()`, the ends it reports, and how many connections it forgot after a loss. */
export interface OwnTrace {
  trace: InternalTrace;
  ends: ConnectionEnd[];
  forgotten(): number;
  follow(...sockets: net.Socket[]): void;
}

/** Starts an `OwnTrace`: the test's own connections, none of the host's other ones. */
export function ownTrace(options: TraceOptions): OwnTrace {
  const ends: ConnectionEnd[] = [];
  const ours = new Set<CookieKey>();
  let forgotten = 0;
  const trace = startTrace((end) => ends.push(end), checkOptions(options), {
    onForgotten: (n) => (forgotten += n),
    only: (key) => ours.has(key),
  });
  return {
    trace,
    ends,
    forgotten: () => forgotten,
    follow(...sockets) {
      for (const socket of sockets) ours.add(cookieKeyOf(native().socketCookie(fdOf(socket))));
    },
  };
}
