// A node:http server restarted on one port behind a proxy with no request lost: start the new
// version while the old one still runs (both listen on the port, SO_REUSEPORT), then send the old
// one SIGTERM. The old one stops accepting, finishes what is in flight with `Connection: close`,
// and hands its idle keep-alive connections to the new one open, so a request the proxy sends on
// one of them as the restart runs is served, not cut by a FIN. The summary line says how many
// went over; the exit code says whether the shutdown was clean.
// Environment: PORT (default 3000; 0 picks one), HOST (default 127.0.0.1).
import http from 'node:http';
import { gracefulShutdown, listenReusePort } from 'finwait';

const server = http.createServer((req, res) => res.end(`served by ${process.pid}\n`));
// Longer than the proxy's upstream keep-alive (nginx: 60 s), so that Node never closes an idle
// connection the proxy is about to reuse.
server.keepAliveTimeout = 65_000;

// No pre-stop delay: the new version listens already.
gracefulShutdown(server, { preStopDelay: 0, timeout: 10_000 });

const { port } = await listenReusePort(server, {
  port: Number(process.env.PORT ?? 3000),
  host: process.env.HOST ?? '127.0.0.1',
  adoptConnections: true,
});
console.log(`listening on ${port}`);
