/**
 * A connected pair of ordinary `net.Socket`s over loopback, for tests on real kernel sockets.
 */
import net from 'node:net';
import { once } from 'node:events';
import { invalidArgType } from '../errors';

/** Options of `connectPair()`; each applies to both ends. */
export interface PairOptions {
  /** Loopback address to listen and connect on: `'127.0.0.1'` (default) or `'::1'`. */
  host?: string;
  /**
   * Keep each end open for writing after it reads the peer's FIN (Node's `allowHalfOpen`), so
   * that CLOSE_WAIT and half-closes can be seen. Default `false`, as in Node.
   */
  allowHalfOpen?: boolean;
  /**
   * Do not read on either end until `resume()` (Node's `pauseOnConnect` for the server end; the
   * client end is paused before its connect completes): data and FINs stay in the kernel's
   * receive queue, and Node neither reads EOF nor closes the fd on its own.
   */
  pauseOnConnect?: boolean;
}

/** Two connected sockets. */
export interface SocketPair {
  /** The end that connected. */
  client: net.Socket;
  /** The end that was accepted. */
  server: net.Socket;
  /** Destroys both ends (no RST is forced: `destroy()` closes the fds) and the listener. */
  close(): Promise<void>;
}

/**
 * A connected loopback pair of real kernel sockets: a listener on an ephemeral port, one
 * connection accepted, then the listener closed (the accepted socket lives on).
 */
export async function connectPair(options: PairOptions = {}): Promise<SocketPair> {
  if (options === null || typeof options !== 'object') throw invalidArgType('options', 'of type object', options);
  const { host = '127.0.0.1', allowHalfOpen = false, pauseOnConnect = false } = options;
  if (typeof host !== 'string' || net.isIP(host) === 0) throw invalidArgType('options.host', "an IP address ('127.0.0.1' or '::1')", host);
  if (typeof allowHalfOpen !== 'boolean') throw invalidArgType('options.allowHalfOpen', 'of type boolean', allowHalfOpen);
  if (typeof pauseOnConnect !== 'boolean') {
    throw invalidArgType('options.pauseOnConnect', 'of type boolean', pauseOnConnect);
  }
  const listener = net.createServer({ allowHalfOpen, pauseOnConnect });
  try {
    listener.listen(0, host);
    await once(listener, 'listening');
    const { port } = listener.address() as net.AddressInfo;
    const accepted = once(listener, 'connection') as Promise<[net.Socket]>;
    const client = new net.Socket({ allowHalfOpen });
    // Paused before the connect completes, Node never starts reading it (net.js afterConnect).
    if (pauseOnConnect) client.pause();
    client.connect(port, host);
    try {
      await once(client, 'connect');
    } catch (error) {
      client.destroy();
      throw error;
    }
    const [server] = await accepted;
    return {
      client,
      server,
      async close() {
        client.destroy();
        server.destroy();
      },
    };
  } finally {
    listener.close();
  }
}
