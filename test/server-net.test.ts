/**
 * closeServer() on a plain net.Server: the application's own protocol. An application that takes
 * its connections' shutdownSignal() is told and closes them itself (no FIN under it; the deadline
 * as the backstop, like Go's RegisterOnShutdown); one that does not is closed by closeServer()
 * once quiet for the drain window, an answer it may still have owed then is reported (interrupted,
 * never graceful), and a write it makes after our FIN is reported, never taken for an RST.
 */
import { describe, expect, it } from 'vitest';
import net from 'node:net';
import { once } from 'node:events';
import { closeServer, shutdownSignal } from '../src/index';
import { waitFor } from './helpers';

async function listening(server: net.Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as net.AddressInfo).port;
}

/** Everything a client received, and how its connection ended. */
function collect(socket: net.Socket): { text: () => string; ended: Promise<string> } {
  let text = '';
  socket.on('data', (d: Buffer) => (text += d.toString('latin1')));
  const ended = new Promise<string>((resolve) => {
    socket.once('end', () => resolve('end'));
    socket.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
  });
  return { text: () => text, ended };
}

describe('closeServer (net), the application told through shutdownSignal()', () => {
  it('a reply due 300 ms after the shutdown began is delivered, then the application ends the connection: no FIN under it', async () => {
    let requests = 0;
    const server = net.createServer((socket) => {
      const signal = shutdownSignal(socket);
      let pending = 0;
      socket.on('data', (d: Buffer) => {
        requests++;
        pending++;
        // A slow reply: its connection must stay open until it has gone.
        setTimeout(() => {
          socket.write(`reply to ${d.toString().trim()}\n`);
          if (--pending === 0 && signal.aborted) socket.end('bye\n');
        }, 300);
      });
      signal.addEventListener('abort', () => {
        if (pending === 0) socket.end('bye\n');
      });
    });
    const port = await listening(server);
    const client = net.connect(port, '127.0.0.1');
    await once(client, 'connect');
    const seen = collect(client);
    client.write('q1\n');
    await waitFor('the request read by the application', () => (requests === 1 ? true : undefined));
    const report = await closeServer(server, { timeout: 5000 });
    expect(await seen.ended).toBe('end');
    expect(seen.text()).toBe('reply to q1\nbye\n');
    expect(report.connections).toHaveLength(1);
    expect(report.connections[0]).toMatchObject({ protocol: 'net', outcome: 'graceful', told: true, closedByApplication: true, applicationDone: true });
    expect(report.duration).toBeGreaterThanOrEqual(250);
    client.destroy();
  });

  it('an application that takes the signal and never closes: reset at the deadline, and the report says it did not close', async () => {
    const server = net.createServer((socket) => {
      shutdownSignal(socket); // taken, and ignored
    });
    const port = await listening(server);
    const client = net.connect(port, '127.0.0.1');
    await once(client, 'connect');
    const seen = collect(client);
    await waitFor('accepted', () => ((server as unknown as { _connections: number })._connections === 1 ? true : undefined));
    const report = await closeServer(server, { timeout: 300 });
    expect(await seen.ended).toBe('ECONNRESET');
    expect(report.connections[0]).toMatchObject({ protocol: 'net', outcome: 'reset-sent', reason: 'deadline', told: true, closedByApplication: false, applicationDone: false });
  });

  it('the server-wide signal: one handler closes every connection (Go-style RegisterOnShutdown)', async () => {
    const open = new Set<net.Socket>();
    const server = net.createServer((socket) => {
      open.add(socket);
      socket.once('close', () => open.delete(socket));
    });
    shutdownSignal(server).addEventListener('abort', () => {
      for (const socket of open) socket.end('goodbye\n');
    });
    const port = await listening(server);
    const clients = await Promise.all(
      [1, 2, 3].map(async () => {
        const c = net.connect(port, '127.0.0.1');
        await once(c, 'connect');
        return { c, seen: collect(c) };
      }),
    );
    await waitFor('3 accepted', () => (open.size === 3 ? true : undefined));
    const report = await closeServer(server, { timeout: 5000 });
    for (const { c, seen } of clients) {
      expect(await seen.ended).toBe('end');
      expect(seen.text()).toBe('goodbye\n');
      c.destroy();
    }
    expect(report.totals).toMatchObject({ graceful: 3, total: 3 });
    expect(report.connections.every((c) => c.told)).toBe(true);
  });
});

describe('closeServer (net), an application that does not listen for the shutdown', () => {
  /** A server answering each line `delay` ms later, unaware of the shutdown; what became of each late write. */
  function slowReplies(delay: number): { server: net.Server; writes: (string | undefined)[] } {
    const writes: (string | undefined)[] = [];
    const server = net.createServer((socket) => {
      socket.on('error', () => {});
      socket.on('data', (d: Buffer) => {
        setTimeout(() => {
          if (socket.destroyed) {
            writes.push('destroyed');
            return;
          }
          socket.write(`reply to ${d.toString().trim()}\n`, (error) => writes.push((error as NodeJS.ErrnoException | null | undefined)?.code ?? 'written'));
        }, delay);
      });
    });
    return { server, writes };
  }

  it('a reply due 300 ms after the request goes out before the FIN: the connection is closed once quiet for the drain window, graceful', async () => {
    const { server, writes } = slowReplies(300);
    const port = await listening(server);
    const client = net.connect(port, '127.0.0.1');
    await once(client, 'connect');
    const seen = collect(client);
    client.write('q1\n');
    await waitFor('accepted', () => ((server as unknown as { _connections: number })._connections === 1 ? true : undefined));
    const report = await closeServer(server, { timeout: 5000, drainWindow: 600 });
    expect(await seen.ended).toBe('end');
    expect(seen.text()).toBe('reply to q1\n');
    expect(writes).toEqual(['written']);
    expect(report.connections[0]).toMatchObject({ protocol: 'net', outcome: 'graceful', told: false, requestsUnanswered: 0, applicationDone: true });
    // The FIN waited for the reply (300 ms) and then for the window of quiet after it.
    expect(report.duration).toBeGreaterThanOrEqual(850);
    client.destroy();
  });

  it('a reply due 1 s after the request, past the drain window: FIN once quiet for the window, the reply is lost, and the report says interrupted with the answer owed, never graceful', async () => {
    const { server, writes } = slowReplies(1000);
    const port = await listening(server);
    const client = net.connect(port, '127.0.0.1');
    await once(client, 'connect');
    const seen = collect(client);
    client.write('q1\n');
    await waitFor('accepted', () => ((server as unknown as { _connections: number })._connections === 1 ? true : undefined));
    const report = await closeServer(server, { timeout: 5000, drainWindow: 200 });
    expect(await seen.ended).toBe('end'); // our FIN, and nothing before it
    expect(seen.text()).toBe('');
    expect(report.connections[0]).toMatchObject({ protocol: 'net', outcome: 'interrupted', told: false, requestsUnanswered: 1, applicationDone: false });
    expect(report.totals).toMatchObject({ graceful: 0, interrupted: 1, handedOff: 0, resetSent: 0 });
    // The application's reply, when it comes, finds the connection gone.
    await waitFor("the application's late write", () => (writes.length === 1 ? true : undefined), 3000);
    expect(writes[0]).not.toBe('written');
    client.destroy();
  });

  it('an echo connection whose last request was answered: closed once quiet for the window, graceful', async () => {
    const server = net.createServer((socket) => socket.on('data', (d: Buffer) => socket.write(d)));
    const port = await listening(server);
    const client = net.connect(port, '127.0.0.1');
    await once(client, 'connect');
    const seen = collect(client);
    client.write('ping');
    await waitFor('the echo', () => (seen.text() === 'ping' ? true : undefined));
    const report = await closeServer(server, { timeout: 5000, drainWindow: 100 });
    expect(await seen.ended).toBe('end');
    expect(report.connections[0]).toMatchObject({ protocol: 'net', outcome: 'graceful', told: false, requestsUnanswered: 0, applicationDone: true });
    client.destroy();
  });

  it('is closed by closeServer (FIN); a write it makes after that FIN is refused by Node and reported (interrupted), never as an RST', async () => {
    const server = net.createServer((socket) => {
      socket.on('data', (d: Buffer) => socket.write(d)); // an echo server, unaware of the shutdown
      socket.on('error', () => {}); // ERR_STREAM_WRITE_AFTER_END
    });
    const port = await listening(server);
    // The client keeps talking after our FIN (it does not answer it by itself).
    const client = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true });
    await once(client, 'connect');
    const seen = collect(client);
    await waitFor('accepted', () => ((server as unknown as { _connections: number })._connections === 1 ? true : undefined));
    // Written as soon as the client reads our FIN ('end'), not after polling for CLOSE_WAIT: the
    // close ends once the connection was quiet 20 ms after the FIN, and a poll's delay under load
    // let it end first (graceful, the write never came).
    client.once('end', () => client.write('echo me'));
    const report = await closeServer(server, { timeout: 5000 });
    client.end();
    expect(await seen.ended).toBe('end'); // a FIN, not an RST
    expect(seen.text()).toBe('');
    expect(report.connections[0]).toMatchObject({
      protocol: 'net',
      outcome: 'interrupted',
      reason: 'closed-elsewhere',
      told: false,
      applicationDone: false,
      error: { code: 'ERR_STREAM_WRITE_AFTER_END' },
    });
    expect(report.connections[0]!.states.map((s) => s.state)).not.toContain('CLOSED');
    expect(report.totals).toMatchObject({ resetSent: 0, interrupted: 1 });
    client.destroy();
  });
});
