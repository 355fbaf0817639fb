// The load of the rolling-restart benchmark (bench/restart.mjs): `connections` keep-alive clients
// of nginx, together sending about `rate` requests per second, alternating GET /get and POST /post
// with a `postBytes` body; each request classified by what the client saw. Bounded: it stops on
// { type: 'stop' } or after `maxMs`, whichever comes first, then sends { type: 'results' } and
// exits. { type: 'warm' } once `warmup` requests succeeded.
// Config: { host, port, connections, rate, postBytes, timeoutMs, warmup, maxMs }.
import http from 'node:http';
import { performance } from 'node:perf_hooks';

/** What the client saw: 'ok' (2xx), 'status-502'..., 'reset', 'timeout', 'truncated', 'refused', 'other'. */
function classify(error) {
  if (error.code === 'ETIMEDOUT' || error.message === 'timeout') return 'timeout';
  if (error.code === 'ECONNRESET') return 'reset';
  if (error.code === 'ECONNREFUSED') return 'refused';
  return 'other';
}

function once(agent, options, body, timeoutMs) {
  return new Promise((resolve) => {
    const req = http.request({ ...options, agent }, (res) => {
      let bytes = 0;
      res.on('data', (chunk) => (bytes += chunk.length));
      res.on('end', () => resolve(res.statusCode >= 200 && res.statusCode < 300 ? 'ok' : `status-${res.statusCode}`));
      res.on('aborted', () => resolve('truncated'));
      res.on('error', () => resolve('truncated'));
    });
    req.setTimeout(timeoutMs, () => req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' })));
    req.on('error', (error) => resolve(classify(error)));
    req.end(body);
  });
}

process.once('message', (config) => {
  const { host, port, connections, rate, postBytes, timeoutMs, warmup, maxMs } = config;
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
  const body = Buffer.alloc(postBytes, 'p');
  const counts = { get: {}, post: {} };
  const failures = []; // the first ones, with when (ms since the start)
  const started = performance.now();
  let ok = 0;
  let warm = false;
  let running = true;
  const every = (connections * 1000) / rate; // ms between two requests of one loop

  const loop = async (i) => {
    let next = performance.now() + (every * i) / connections; // spread the loops over one period
    for (let n = i; running; n++) {
      const wait = next - performance.now();
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
      if (!running) break;
      // The next one a period later, or now when this loop is late: no burst after a slow request.
      next = Math.max(next + every, performance.now());
      const kind = n % 2 === 0 ? 'get' : 'post';
      const options =
        kind === 'get'
          ? { host, port, path: '/get', method: 'GET' }
          : { host, port, path: '/post', method: 'POST', headers: { 'content-type': 'application/octet-stream', 'content-length': postBytes } };
      const outcome = await once(agent, options, kind === 'post' ? body : undefined, timeoutMs);
      counts[kind][outcome] = (counts[kind][outcome] ?? 0) + 1;
      if (outcome === 'ok') {
        ok++;
        if (!warm && ok >= warmup) {
          warm = true;
          process.send({ type: 'warm' });
        }
      } else if (failures.length < 20) {
        failures.push({ at: Math.round(performance.now() - started), kind, outcome });
      }
    }
  };
  const loops = Array.from({ length: connections }, (_, i) => loop(i));

  let stopping;
  const stop = () => {
    stopping ??= (async () => {
      running = false;
      clearTimeout(bound);
      await Promise.all(loops);
      agent.destroy();
      process.send({ type: 'results', counts, failures, ms: performance.now() - started }, () => process.exit(0));
    })();
  };
  const bound = setTimeout(stop, maxMs);
  process.on('message', (m) => {
    if (m.type === 'stop') stop();
  });
});
process.on('disconnect', () => process.exit(0));
