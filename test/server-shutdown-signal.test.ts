/** shutdownSignal(): what it accepts, when it aborts, and its errors; closeServer()'s argument errors. */
import { describe, expect, it } from 'vitest';
import dgram from 'node:dgram';
import { EventEmitter, once } from 'node:events';
import http from 'node:http';
import http2 from 'node:http2';
import net from 'node:net';
import { closeServer, shutdownSignal } from '../src/index';
import { waitFor } from './helpers';

describe('shutdownSignal()', () => {
  it('aborts when closeServer() begins, with an AbortError; asked during the shutdown it is aborted at once; a later listen() starts fresh', async () => {
    let seenInHandler: AbortSignal | undefined;
    const server = http.createServer((req, res) => {
      seenInHandler = shutdownSignal(req);
      res.end('ok');
    });
    const serverSignal = shutdownSignal(server);
    expect(serverSignal).toBeInstanceOf(AbortSignal);
    expect(shutdownSignal(server)).toBe(serverSignal); // one per server
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as net.AddressInfo;
    const client = net.connect(port, '127.0.0.1');
    await once(client, 'connect');
    client.write('GET / HTTP/1.1\r\nhost: x\r\n\r\n');
    await waitFor('the request handled', () => seenInHandler);
    expect(seenInHandler!.aborted).toBe(false);
    const order: string[] = [];
    serverSignal.addEventListener('abort', () => {
      order.push('server');
      // Asked while the shutdown runs: aborted already.
      expect(shutdownSignal(server).aborted).toBe(true);
    });
    seenInHandler!.addEventListener('abort', () => order.push('connection'));
    const closing = closeServer(server, { drainWindow: 10 });
    await closing;
    expect(order.sort()).toEqual(['connection', 'server']);
    expect(serverSignal.reason).toMatchObject({ name: 'AbortError', code: 'ABORT_ERR' });
    expect(() => serverSignal.throwIfAborted()).toThrow(expect.objectContaining({ code: 'ABORT_ERR' }));
    client.destroy();
    // The same server listening again has a fresh signal.
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    expect(shutdownSignal(server).aborted).toBe(false);
    await closeServer(server);
  });

  it('accepts a server, an accepted socket, an HTTP/1.1 request or response, an HTTP/2 session, stream or compat request', async () => {
    const server = http2.createServer();
    const got: AbortSignal[] = [];
    server.on('request', (req, res) => {
      got.push(shutdownSignal(req), shutdownSignal(res), shutdownSignal(req.stream), shutdownSignal(req.stream.session!));
      res.end('ok');
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const client = http2.connect(`http://127.0.0.1:${(server.address() as net.AddressInfo).port}`);
    client.on('error', () => {});
    const req = client.request({ ':path': '/' });
    req.resume();
    await once(req, 'close');
    // All four name the same connection: one signal.
    expect(new Set(got).size).toBe(1);
    expect(() => shutdownSignal(client)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    await closeServer(server);
    expect(got[0]!.aborted).toBe(true);
    client.destroy();
  });

  it('refuses what is not a server, a connection, a request or a stream, with codes', async () => {
    expect(() => shutdownSignal(42 as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => shutdownSignal({} as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_TYPE' }));
    expect(() => shutdownSignal(new EventEmitter() as never)).toThrow(/Received an instance of EventEmitter/);
    // A client socket belongs to no server.
    const server = net.createServer();
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    await once(client, 'connect');
    expect(() => shutdownSignal(client)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG_VALUE' }));
    client.destroy();
    await closeServer(server);
  });
});

describe('closeServer() argument errors', () => {
  it('names what it got for an unknown server kind, and codes bad options', async () => {
    const udp = dgram.createSocket('udp4');
    await expect(closeServer(udp as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE', message: expect.stringContaining('Received an instance of Socket') });
    udp.close();
    await expect(closeServer(new EventEmitter() as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE', message: expect.stringContaining('EventEmitter') });
    const server = net.createServer();
    await expect(closeServer(server, { drainWindow: -1 })).rejects.toMatchObject({ code: 'ERR_OUT_OF_RANGE' });
    await expect(closeServer(server, { timeout: Number.NaN })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    await expect(closeServer(server, { signal: 'stop' as never })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    await expect(closeServer(server, null as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG_TYPE' });
    await expect(closeServer(server, { signal: AbortSignal.abort() })).rejects.toMatchObject({ code: 'ABORT_ERR' });
  });
});
