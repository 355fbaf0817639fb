/**
 * Node.js internals finwait relies on, and what happens when a Node version lacks one. Each is
 * checked where it is used, on the running Node: a missing one is never skipped silently. Either
 * the call fails with a coded error (no fd: nothing to ask the kernel about), or it goes on with
 * less and says so once per process in a warning with code `FINWAIT_NODE_INTERNALS`.
 *
 * | internal | used by | if it is missing |
 * |---|---|---|
 * | `net.Socket#_handle.fd` | every kernel call on a socket | `ENOTSUP` |
 * | the `http.server.connections` symbol (Node >= 18.14) | closeServer() on http(s) servers | warning; only connections seen by `trackConnections()`, and those whose next request starts after the call, are closed; the rest are counted in `untracked` |
 * | listeners named `bound socketOnData` / `bound socketOnEnd` | closeServer() detaching the HTTP parser | warning; bytes arriving after the FIN may still be parsed as a request |
 * | a socket's timeout symbol and its `Timeout._idleStart` | closeServer(): how long a keep-alive connection has been idle | the connection gets the whole drain window |
 * | an HTTP/2 session's stream map (`state` symbol) | closeServer() on HTTP/2: streams in flight | warning |
 * | `tlsSocket._parent` | linking a TLS socket to its TCP socket | the TLS socket is closed as one |
 * | an HTTP/2 server's `sessions` symbol (Node >= 24) | finding sessions of a server listening before finwait loaded | only sessions seen since |
 */
import { debuglog } from 'node:util';

const debug = debuglog('finwait');

/** The code of the warning emitted when an internal is missing. */
export const INTERNALS_WARNING = 'FINWAIT_NODE_INTERNALS';

const warned = new Set<string>();

/** Says once per process that `internal` is missing on this Node and what finwait does without it. */
export function missingInternal(internal: string, consequence: string): void {
  debug('Node %s lacks %s: %s', process.version, internal, consequence);
  if (warned.has(internal)) return;
  warned.add(internal);
  process.emitWarning(`Node.js ${process.version} lacks ${internal}: ${consequence}`, { code: INTERNALS_WARNING });
}
