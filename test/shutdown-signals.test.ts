/**
 * The examples in examples/ as real processes getting real signals: the pre-stop delay with
 * readiness 503 and liveness 200, the summary line, the exit code of a clean shutdown and of a
 * forced one (a second SIGTERM), close-with-grace owning the signals, Express and Fastify, and a
 * rolling restart on one port (the idle connection handed to the new version).
 * Every process started here is killed in `finally` if it is still running.
 */
import { describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import { once } from 'node:events';
import { waitFor } from './helpers';

const examples = path.join(__dirname, '..', 'examples');

interface Example {
  proc: ChildProcess;
  port: number;
  stdout: () => string;
  stderr: () => string;
  /** Resolves with the exit code (or the signal's name). */
  exited: Promise<number | string>;
}

/** Runs examples/`file` with `env` and waits for its "listening on PORT" line. */
async function start(file: string, env: Record<string, string>): Promise<Example> {
  const proc = spawn(process.execPath, [path.join(examples, file)], {
    cwd: path.join(__dirname, '..'),
    env: { ...process.env, PORT: '0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = once(proc, 'exit').then(([code, signal]) => (code ?? signal) as number | string);
  const port = await Promise.race([
    waitFor(`${file} listening`, () => {
      const match = /listening on (\d+)/.exec(out);
      return match ? Number(match[1]) : undefined;
    }, 15_000),
    exited.then((code) => Promise.reject(new Error(`${file} exited (${code}) before listening: ${err}`))),
  ]);
  return { proc, port, stdout: () => out, stderr: () => err, exited };
}

function stop(example: Example | undefined): void {
  if (example && example.proc.exitCode === null && example.proc.signalCode === null) example.proc.kill('SIGKILL');
}

/** One GET on a new connection: [status, body], or the error's code; `onConnect` once it is connected. */
function get(port: number, path: string, onConnect?: () => void): Promise<[number, string] | string> {
  return new Promise((resolve) => {
    const req = http.get({ port, host: '127.0.0.1', path, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => resolve([res.statusCode!, body]));
      res.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    });
    req.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
    if (onConnect) req.once('socket', (socket) => socket.once('connect', onConnect));
  });
}

/** Polls /readyz until it answers 503 (the shutdown began). */
async function until503(port: number): Promise<void> {
  for (;;) {
    const reply = await get(port, '/readyz');
    if (Array.isArray(reply) && reply[0] === 503) return;
    if (!Array.isArray(reply) || reply[0] !== 200) throw new Error(`/readyz answered ${JSON.stringify(reply)}`);
  }
}

describe('examples/rolling-restart.mjs as two processes on one port', () => {
  it('the new version starts, the old one gets SIGTERM: its idle keep-alive connection goes over open, and the next request on it is served by the new one', async () => {
    let old: Example | undefined;
    let next: Example | undefined;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    /** One GET on the agent's one connection: the body and the client's local port. */
    const request = (port: number): Promise<{ body: string; localPort: number }> =>
      new Promise((resolve, reject) => {
        http
          .get({ port, host: '127.0.0.1', agent }, (res) => {
            const localPort = res.socket.localPort ?? 0;
            let body = '';
            res.setEncoding('utf8').on('data', (d: string) => (body += d));
            res.on('end', () => resolve({ body, localPort }));
          })
          .on('error', reject);
      });
    try {
      old = await start('rolling-restart.mjs', {});
      const first = await request(old.port);
      expect(first.body).toBe(`served by ${old.proc.pid}\n`);
      next = await start('rolling-restart.mjs', { PORT: String(old.port) });
      expect(next.port).toBe(old.port);
      old.proc.kill('SIGTERM');
      expect(await old.exited).toBe(0);
      expect(old.stderr()).toMatch(/closed or handed off 1 connection in \d+ ms \(0 graceful, 0 reset sent, 0 reset by the peer, 1 handed off open to the next instance\).*; clean, exit code 0/);
      const second = await request(old.port);
      expect(second).toEqual({ body: `served by ${next.proc.pid}\n`, localPort: first.localPort });
    } finally {
      agent.destroy();
      stop(old);
      stop(next);
    }
  });
});

describe('examples/graceful-shutdown.mjs as a process', () => {
  it('SIGTERM: /readyz 503 and /livez 200 while it keeps serving, then exit code 0 and one summary line', async () => {
    let example: Example | undefined;
    try {
      example = await start('graceful-shutdown.mjs', { PRE_STOP_DELAY: '1500' });
      const { port } = example;
      expect(await get(port, '/readyz')).toEqual([200, 'ready\n']);
      example.proc.kill('SIGTERM');
      await until503(port);
      expect(await get(port, '/livez')).toEqual([200, 'alive\n']);
      expect(await get(port, '/')).toEqual([200, 'hello\n']);
      expect(await example.exited).toBe(0);
      const lines = example.stderr().trim().split('\n');
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/^finwait: shutdown on SIGTERM: served \d+ ms more, then closed \d+ connections? in \d+ ms \(.*0 reset sent.*\); clean, exit code 0$/);
    } finally {
      stop(example);
    }
  });

  it('a second SIGTERM forces: the response in flight is reset, exit code 1', async () => {
    let example: Example | undefined;
    try {
      example = await start('graceful-shutdown.mjs', { PRE_STOP_DELAY: '60000', SLOW_MS: '60000' });
      const { port } = example;
      // Connected before the signal: the server, still accepting through the pre-stop delay,
      // takes it and its request, which the application holds for 60 s.
      let connected = false;
      const slow = get(port, '/slow', () => (connected = true));
      await waitFor('the /slow connection made', () => (connected ? true : undefined));
      example.proc.kill('SIGTERM');
      await until503(port);
      example.proc.kill('SIGTERM');
      expect(await example.exited).toBe(1);
      expect(await slow).toBe('ECONNRESET');
      expect(example.stderr()).toMatch(/^finwait: shutdown on SIGTERM, forced by SIGTERM: served \d+ ms more, then closed \d+ connections? in \d+ ms \(.*[1-9]\d* reset sent.*\); not clean, exit code 1\n$/);
    } finally {
      stop(example);
    }
  });
});

describe('the other examples as processes', () => {
  it('close-with-grace owns the signals: SIGINT, finwait closes, exit code 0', async () => {
    let example: Example | undefined;
    try {
      example = await start('close-with-grace.mjs', {});
      expect(await get(example.port, '/')).toEqual([200, 'hello\n']);
      example.proc.kill('SIGINT');
      expect(await example.exited).toBe(0);
      expect(example.stderr()).toMatch(/^finwait: shutdown on SIGINT: .*; clean, exit code 0\n$/);
    } finally {
      stop(example);
    }
  });

  it('Express: SIGTERM, /readyz 503 during the delay, exit code 0', async () => {
    let example: Example | undefined;
    try {
      example = await start('express.mjs', { PRE_STOP_DELAY: '1500' });
      expect(await get(example.port, '/')).toEqual([200, 'hello\n']);
      example.proc.kill('SIGTERM');
      await until503(example.port);
      expect(await example.exited).toBe(0);
      expect(example.stderr()).toMatch(/; clean, exit code 0\n$/);
    } finally {
      stop(example);
    }
  });

  it("Fastify: SIGTERM, the connections closed, then its onClose hooks, exit code 0", async () => {
    let example: Example | undefined;
    try {
      example = await start('fastify.mjs', { PRE_STOP_DELAY: '0' });
      expect(await get(example.port, '/')).toEqual([200, 'hello\n']);
      example.proc.kill('SIGTERM');
      expect(await example.exited).toBe(0);
      expect(example.stdout()).toContain('onClose: the database would close here');
      expect(example.stderr()).toMatch(/; clean, exit code 0\n$/);
    } finally {
      stop(example);
    }
  });
});
