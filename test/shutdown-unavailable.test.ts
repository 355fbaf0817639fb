/**
 * gracefulShutdown() and listenReusePort() where finwait's native part cannot be loaded (pointed
 * at a file that does not exist, as in test/unavailable.test.ts): the shutdown still closes
 * gracefully with what Node alone can do and does not claim a handoff it cannot see;
 * listenReusePort() uses Node's own option where Node has it, and otherwise throws the one ENOTSUP
 * every kernel call throws here.
 */
import { describe, expect, it } from 'vitest';
import http from 'node:http';
import net from 'node:net';
import { once } from 'node:events';
import * as finwait from '../src/index';
import { NODE_HAS_REUSE_PORT } from '../src/handoff';
import { withoutNativePart } from './helpers';

withoutNativePart();


describe('without the native part', () => {
  it(`listenReusePort() ${NODE_HAS_REUSE_PORT ? "uses Node's reusePort option" : 'throws the ENOTSUP of every kernel call'}`, async () => {
    const a = http.createServer();
    const b = http.createServer();
    try {
      if (!NODE_HAS_REUSE_PORT) {
        await expect(finwait.listenReusePort(a, { port: 0, host: '127.0.0.1' })).rejects.toBe(finwait.capabilities().error);
        expect(a.listening).toBe(false);
        return;
      }
      const { port } = await finwait.listenReusePort(a, { port: 0, host: '127.0.0.1' });
      await finwait.listenReusePort(b, { port, host: '127.0.0.1' });
      expect(b.listening).toBe(true);
    } finally {
      a.close();
      b.close();
    }
  });

  it('gracefulShutdown(): a kept-alive connection closes gracefully; the handoff is reported unknown (-1), not 0', async () => {
    const server = http.createServer((_req, res) => res.end('hello\n'));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as net.AddressInfo;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const lines: string[] = [];
    try {
      await new Promise<void>((resolve, reject) => {
        http.get({ port, host: '127.0.0.1', agent }, (res) => res.resume().on('end', resolve)).on('error', reject);
      });
      const report = await finwait.gracefulShutdown(server, { signals: [], exit: false, log: (l) => lines.push(l) }).begin('test');
      expect(report).toMatchObject({ clean: true, exitCode: 0, server: { kernelView: false, totals: { graceful: 1, total: 1 } } });
      expect(report.handoff.otherListeners).toBe(-1);
      expect(lines[0]).toMatch(/closed 1 connection in \d+ ms \(1 graceful, 0 reset sent, 0 reset by the peer\); clean, exit code 0$/);
    } finally {
      agent.destroy();
      server.close();
    }
  });
});
