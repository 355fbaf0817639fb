/**
 * An https connection still in its TLS handshake when closeServer() begins (connected, no
 * ClientHello yet): it gets the drain window to complete its handshake; if it does, it is served
 * like any HTTPS connection; if not, it is closed (FIN) and reported, and nothing lingers.
 */
import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import https from 'node:https';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { once } from 'node:events';
import { closeServer, findSocket } from '../src/index';
import { waitFor } from './helpers';

const fixtures = path.join(__dirname, 'fixtures');
const tlsOptions = { key: fs.readFileSync(path.join(fixtures, 'key.pem')), cert: fs.readFileSync(path.join(fixtures, 'cert.pem')) };

async function listening(server: net.Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return (server.address() as net.AddressInfo).port;
}

describe('closeServer, TLS connections in their handshake', () => {
  it('a connection that never sends its ClientHello is closed after the window (FIN) and reported; nothing stays open', async () => {
    const server = https.createServer(tlsOptions, (_req, res) => res.end('ok'));
    const port = await listening(server);
    const silent = net.connect(port, '127.0.0.1'); // answers our FIN with its own (allowHalfOpen false)
    const stubborn = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true }); // never closes
    await Promise.all([once(silent, 'connect'), once(stubborn, 'connect')]);
    await waitFor('both accepted', () => ((server as unknown as { _connections: number })._connections === 2 ? true : undefined));
    const ports = { silent: silent.localPort!, stubborn: stubborn.localPort! };
    const seen = [silent, stubborn].map((s) => new Promise<string>((resolve) => s.once('end', () => resolve('end')).once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'))));
    const report = await closeServer(server, { timeout: 5000, drainWindow: 100 });
    expect(await Promise.all(seen)).toEqual(['end', 'end']);
    expect(report.untracked).toBe(0);
    expect(report.totals).toEqual({ graceful: 2, interrupted: 0, handedOff: 0, resetSent: 0, resetReceived: 0, destroyed: 0, total: 2 });
    const byPort = new Map(report.connections.map((c) => [c.peer.port, c]));
    expect(byPort.get(ports.silent)).toMatchObject({ protocol: 'tls-handshake', outcome: 'graceful', reason: 'peer-fin', applicationDone: true });
    expect(byPort.get(ports.stubborn)).toMatchObject({ protocol: 'tls-handshake', outcome: 'graceful', reason: 'all-acknowledged' });
    expect(report.duration).toBeGreaterThanOrEqual(100); // they had the whole window (never cut short: timerAt())
    expect(report.duration).toBeLessThan(2000);
    expect(server.listening).toBe(false);
    // Nothing is left ESTABLISHED on the server's side: its end of the stubborn one waits in FIN_WAIT2.
    const tuple = { local: { address: '127.0.0.1', port }, remote: { address: '127.0.0.1', port: ports.stubborn } };
    expect(findSocket(tuple)?.state).toBe('FIN_WAIT2');
    silent.destroy();
    stubborn.destroy();
  });

  it('a handshake that completes during the window is served like any HTTPS connection (Connection: close)', async () => {
    const server = https.createServer(tlsOptions, (_req, res) => res.end('ok'));
    const port = await listening(server);
    const raw = net.connect(port, '127.0.0.1');
    await once(raw, 'connect');
    await waitFor('accepted', () => ((server as unknown as { _connections: number })._connections === 1 ? true : undefined));
    const closing = closeServer(server, { timeout: 5000, drainWindow: 2000 });
    // Only now the client begins its handshake, on the connection it opened before the shutdown.
    const secure = tls.connect({ socket: raw, rejectUnauthorized: false });
    await once(secure, 'secureConnect');
    let text = '';
    secure.on('data', (d: Buffer) => (text += d.toString('latin1')));
    const ended = once(secure, 'end');
    secure.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n');
    await ended;
    const report = await closing;
    expect(text).toMatch(/^HTTP\/1\.1 200/);
    expect(text.toLowerCase()).toContain('connection: close');
    expect(report.connections).toHaveLength(1);
    expect(report.connections[0]).toMatchObject({ protocol: 'http/1.1', outcome: 'graceful', requestsDuringShutdown: 1 });
    expect(report.duration).toBeLessThan(1500); // closed after its response, not at the window's end
    secure.destroy();
  });
});
