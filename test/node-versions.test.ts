/**
 * The same answers on every supported Node (20, 22, 24, 26) where Node itself reports the same
 * kernel events differently, and the Node internals finwait relies on, checked on the running Node
 * (CI runs this file on each version).
 */
import { afterEach, describe, expect, it } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import { closeServer, closeWrite, gracefulClose, queues, tcpState, trackConnections, watch } from '../src/index';
import { INTERNALS_WARNING } from '../src/node-internals';
import { pair, waitFor, type Pair } from './helpers';

const major = Number(process.versions.node.split('.')[0]);
let p: Pair | undefined;
afterEach(async () => {
  await p?.close();
  p = undefined;
});

/**
 * The client resets the connection while 5 bytes it sent sit unread in the server's kernel (the
 * server paused) and 4 bytes the server sent sit unread in the client's: close(2) with unread
 * data sends RST. Resolves once the server's fd reads CLOSE.
 */
async function resetWithQueuedData(before?: (pr: Pair) => void): Promise<Pair> {
  const pr = await pair({ server: { pauseOnConnect: true, allowHalfOpen: true } });
  before?.(pr);
  pr.client.pause();
  pr.client.on('error', () => {});
  pr.client.write('hello');
  pr.server.write('data');
  await waitFor('the bytes queued unread and acknowledged on both ends', () => {
    const server = queues(pr.server);
    return server.unread === 5 && server.unacked === 0 && queues(pr.client).unread === 4 ? true : undefined;
  });
  pr.client.destroy();
  await waitFor("the server's fd in CLOSE", () => (tcpState(pr.server) === 'CLOSE' ? true : undefined));
  return pr;
}

describe('an RST that follows data not yet read', () => {
  it(`Node ${major} reports it as ${major >= 24 ? "the data, then 'error' ECONNRESET" : "the data, then 'end'"}`, async () => {
    p = await resetWithQueuedData();
    const events: string[] = [];
    p.server.on('data', (chunk: Buffer) => events.push(`data ${chunk}`));
    p.server.on('end', () => events.push('end'));
    p.server.on('error', (error: NodeJS.ErrnoException) => events.push(`error ${error.code}`));
    p.server.resume();
    await waitFor("Node's report", () => (events.some((e) => e === 'end' || e.startsWith('error')) ? true : undefined));
    expect(events).toEqual(['data hello', major >= 24 ? 'error ECONNRESET' : 'end']);
  });

  it("gracefulClose() calls it 'reset-received' on every Node", async () => {
    p = await resetWithQueuedData();
    const report = await gracefulClose(p.server, { timeout: 2000 });
    expect(report).toMatchObject({ outcome: 'reset-received', reason: 'peer-reset', error: { code: 'ECONNRESET' } });
    expect(report.bytesDiscarded).toBe(5);
  });

  it("watch() calls it 'reset-received' on every Node, also while gracefulClose() closes the socket", async () => {
    let lifecycle: ReturnType<typeof watch> | undefined;
    p = await resetWithQueuedData((pr) => (lifecycle = watch(pr.server)));
    const report = await gracefulClose(p.server, { timeout: 2000 });
    expect(report.outcome).toBe('reset-received');
    const result = await lifecycle!.done;
    expect(result.outcome).toBe('reset-received');
  });

  it("watch() alone calls it 'reset-received' on every Node", async () => {
    let lifecycle: ReturnType<typeof watch> | undefined;
    p = await resetWithQueuedData((pr) => (lifecycle = watch(pr.server)));
    p.server.on('error', () => {});
    p.server.on('end', () => p!.server.destroy());
    p.server.resume();
    expect((await lifecycle!.done).outcome).toBe('reset-received');
  });
});

describe('closeWrite() on a socket destroyed before its FIN', () => {
  it('rejects with ERR_SOCKET_CLOSED on every Node (22 and later fail the queued write with ECANCELED)', async () => {
    p = await pair({ server: { pauseOnConnect: true } });
    p.client.on('error', () => {});
    p.client.write(Buffer.alloc(8 * 1024 * 1024));
    const closing = closeWrite(p.client);
    p.client.destroy();
    const error = await closing.catch((e: Error) => e);
    expect(error).toMatchObject({ code: 'ERR_SOCKET_CLOSED' });
    if (major >= 22) expect((error as Error).cause).toMatchObject({ code: 'ECANCELED' });
  });
});

describe('Node internals finwait relies on, on this Node', () => {
  it('net.Socket#_handle.fd: a number on a connected socket', async () => {
    p = await pair();
    const handle = (p.client as unknown as { _handle?: { fd?: unknown } })._handle;
    expect(handle && 'fd' in handle).toBe(true);
    expect(typeof handle!.fd).toBe('number');
  });

  it("http.Server's connection list and the parser's listener names are there, so closeServer() needs no warning", async () => {
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => warnings.push(warning);
    process.on('warning', onWarning);
    let seen: { symbol: boolean; data: string[]; end: string[] } | undefined;
    const server = http.createServer((req, res) => {
      const symbol = Object.getOwnPropertySymbols(server).some((s) => s.description === 'http.server.connections');
      seen = {
        symbol,
        data: req.socket.listeners('data').map((l) => l.name),
        end: req.socket.listeners('end').map((l) => l.name),
      };
      res.end('ok');
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const agent = new http.Agent({ keepAlive: true });
    try {
      await new Promise<void>((resolve, reject) => {
        http
          .get({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', agent }, (res) => {
            res.resume();
            res.on('end', resolve);
          })
          .on('error', reject);
      });
      expect(seen).toEqual({
        symbol: true,
        data: expect.arrayContaining(['bound socketOnData']),
        end: expect.arrayContaining(['bound socketOnEnd']),
      });
      // The idle keep-alive connection is found through the list and detached from the parser.
      const report = await closeServer(server, { timeout: 2000, drainWindow: 10 });
      expect(report.totals.total).toBe(1);
      await new Promise((resolve) => setImmediate(resolve));
      expect(warnings.filter((w) => (w as { code?: string }).code === INTERNALS_WARNING)).toEqual([]);
    } finally {
      process.off('warning', onWarning);
      agent.destroy();
      server.close();
    }
  });

  it('a Node without the connection list or the listener names: closeServer() says so in a coded warning, and still closes what it can', async () => {
    const warnings: Error[] = [];
    const onWarning = (warning: Error) => warnings.push(warning);
    process.on('warning', onWarning);
    const server = http.createServer((req, res) => {
      // What a Node without these internals would look like: no list, listeners renamed.
      for (const event of ['data', 'end'] as const) {
        for (const listener of req.socket.listeners(event)) {
          if (listener.name.startsWith('bound socketOn')) {
            req.socket.removeListener(event, listener as () => void);
            const renamed = (...args: unknown[]) => (listener as (...a: unknown[]) => void)(...args);
            req.socket.on(event, renamed);
          }
        }
      }
      const symbol = Object.getOwnPropertySymbols(server).find((s) => s.description === 'http.server.connections')!;
      delete (server as unknown as Record<symbol, unknown>)[symbol];
      closing = closeServer(server, { timeout: 2000 });
      // Ended once closeServer() has closed the listener, after which it takes in every connection
      // it knows of (synchronously): the response is in flight then.
      const end = (): void => void (server.listening ? setImmediate(end) : res.end('done'));
      end();
    });
    let closing: ReturnType<typeof closeServer> | undefined;
    trackConnections(server); // what still finds the connection without Node's list
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const body = await new Promise<string>((resolve, reject) => {
        http
          .get({ port: (server.address() as net.AddressInfo).port, host: '127.0.0.1', agent: false }, (res) => {
            let text = '';
            res.on('data', (chunk: Buffer) => (text += chunk));
            res.on('end', () => resolve(text));
          })
          .on('error', reject);
      });
      expect(body).toBe('done');
      const report = await closing!;
      expect(report.totals).toMatchObject({ graceful: 1, total: 1 });
      await new Promise((resolve) => setImmediate(resolve));
      const ours = warnings.filter((w) => (w as { code?: string }).code === INTERNALS_WARNING).map((w) => w.message);
      expect(ours).toEqual([
        expect.stringMatching(/lacks http\.Server's connection list .*untracked/),
        expect.stringMatching(/lacks the HTTP server's socket listeners .*parsed/),
      ]);
    } finally {
      process.off('warning', onWarning);
      server.close();
    }
  });
});
