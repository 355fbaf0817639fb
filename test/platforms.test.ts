import { afterEach, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { closeWrite, reset, tcpInfo, tcpState } from '../src/index';
import { nextError, pair, waitFor, type Pair } from './helpers';

const fixtures = path.join(__dirname, 'fixtures');
let p: Pair | undefined;
afterEach(async () => {
  await p?.close();
  p = undefined;
});

describe('IPv6', () => {
  it('reads state and info, half-closes and resets over ::1', async () => {
    p = await pair({ host: '::1', server: { allowHalfOpen: true } });
    expect(p.client.remoteFamily).toBe('IPv6');
    expect(tcpInfo(p.client).state).toBe('ESTABLISHED');
    p.server.resume();
    await closeWrite(p.client);
    expect(tcpState(p.client)).toBe('FIN_WAIT2');
    expect(tcpState(p.server)).toBe('CLOSE_WAIT');
    const error = nextError(p.server);
    reset(p.client);
    p.server.write('x');
    expect((await error).code).toMatch(/^(ECONNRESET|EPIPE)$/);
  });
});

describe('TLS', () => {
  it('works on a tls.TLSSocket through its underlying fd', async () => {
    const server = tls.createServer({
      key: fs.readFileSync(path.join(fixtures, 'key.pem')),
      cert: fs.readFileSync(path.join(fixtures, 'cert.pem')),
      allowHalfOpen: true,
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as { port: number };
    const accepted = once(server, 'secureConnection') as Promise<[tls.TLSSocket]>;
    const client = tls.connect({ port, host: '127.0.0.1', ca: fs.readFileSync(path.join(fixtures, 'cert.pem')), servername: 'localhost' });
    await once(client, 'secureConnect');
    const [peer] = await accepted;
    try {
      expect(tcpState(client)).toBe('ESTABLISHED');
      expect(tcpInfo(peer).state).toBe('ESTABLISHED');
      peer.resume();
      await closeWrite(client);
      expect(tcpState(client)).toBe('FIN_WAIT2');
      const error = nextError(peer);
      reset(client);
      peer.write('x');
      expect((await error).code).toMatch(/^(ECONNRESET|EPIPE)$/);
    } finally {
      client.destroy();
      peer.destroy();
      server.close();
    }
  });
});

describe('worker_threads', () => {
  it('loads the addon in a worker and reads a socket there', async () => {
    const worker = new Worker(
      `
      const { parentPort } = require('node:worker_threads');
      const net = require('node:net');
      const finwait = require(${JSON.stringify(path.join(__dirname, '..', 'dist', 'index.js'))});
      const server = net.createServer((s) => s.resume()).listen(0, '127.0.0.1', () => {
        const c = net.connect(server.address().port, '127.0.0.1', () => {
          parentPort.postMessage(finwait.tcpInfo(c).state);
          c.destroy(); server.close();
        });
      });
      `,
      { eval: true },
    );
    const [state] = await once(worker, 'message');
    expect(state).toBe('ESTABLISHED');
    await waitFor('worker exit', () => (worker.threadId === -1 ? true : undefined));
  });
});
