// A node:http server shut down the way Kubernetes expects. On SIGTERM (or SIGINT) readiness
// fails at once (503 on /readyz while /livez stays 200), the server keeps serving for a pre-stop
// delay while endpoints update, then closeServer() closes every connection by its deadline and
// the process exits: code 0 when the shutdown was clean. A second signal forces it.
// Environment: PORT (default 3000), PRE_STOP_DELAY ms (default 5000), SLOW_MS for /slow.
import http from 'node:http';
import { gracefulShutdown } from 'finwait';

const slowMs = Number(process.env.SLOW_MS ?? 2000);
const server = http.createServer((req, res) => {
  if (req.url === '/slow') setTimeout(() => res.end('slow\n'), slowMs);
  else res.end('hello\n');
});

gracefulShutdown(server, {
  preStopDelay: Number(process.env.PRE_STOP_DELAY ?? 5000),
  timeout: 10_000,
  readinessPath: '/readyz',
  livenessPath: '/livez',
});

server.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
  console.log(`listening on ${server.address().port}`);
});
