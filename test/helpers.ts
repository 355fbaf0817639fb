/** Helpers for tests on real loopback sockets: pairs, bounded waits on observed kernel facts. */
import net from 'node:net';
import { once } from 'node:events';

export interface Pair {
  client: net.Socket;
  server: net.Socket;
  listener: net.Server;
  /** Destroys both sockets and closes the listener. */
  close(): Promise<void>;
}

export interface PairOptions {
  host?: string;
  /** Options for the accepted (server) socket, e.g. `allowHalfOpen`, `pauseOnConnect`. */
  server?: net.ServerOpts;
  /** Options for the client socket, e.g. `allowHalfOpen`. */
  client?: Partial<net.TcpNetConnectOpts>;
}

/** A connected loopback pair of real kernel sockets. */
export async function pair(options: PairOptions = {}): Promise<Pair> {
  const host = options.host ?? '127.0.0.1';
  const listener = net.createServer(options.server ?? {});
  listener.listen(0, host);
  await once(listener, 'listening');
  const { port } = listener.address() as net.AddressInfo;
  const accepted = once(listener, 'connection') as Promise<[net.Socket]>;
  const client = net.connect({ ...options.client, port, host });
  await once(client, 'connect');
  const [server] = await accepted;
  return {
    client,
    server,
    listener,
    async close() {
      client.destroy();
      server.destroy();
      await new Promise<void>((resolve) => listener.close(() => resolve()));
    },
  };
}

/**
 * Polls `probe` until it returns something other than `undefined`, yielding to the event loop
 * between tries; fails after `timeoutMs` with `what` in the message. For waiting on kernel facts.
 */
export async function waitFor<T>(what: string, probe: () => T | undefined, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let delay = 0;
  for (;;) {
    const value = probe();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay + 1, 20);
  }
}

/** Resolves with the error the socket emits. */
export function nextError(socket: net.Socket): Promise<NodeJS.ErrnoException> {
  return new Promise((resolve) => socket.once('error', resolve));
}

/** Reads everything the socket sends until 'end' (or 'close'), as one Buffer. */
export function readAll(socket: net.Socket): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.once('end', () => resolve(Buffer.concat(chunks)));
    socket.once('error', reject);
  });
}
