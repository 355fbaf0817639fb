// gracefulShutdown() under close-with-grace: close-with-grace owns the signals (and uncaught
// errors, and its own overall delay); finwait closes the connections and says whether that was
// clean. A shutdown that was not clean throws, so close-with-grace exits with code 1.
// Environment: PORT (default 3000).
import http from 'node:http';
import closeWithGrace from 'close-with-grace';
import { gracefulShutdown } from 'finwait';

const server = http.createServer((req, res) => res.end('hello\n'));
const shutdown = gracefulShutdown(server, { signals: [], exit: false, readinessPath: '/readyz' });

closeWithGrace({ delay: 15_000 }, async ({ signal, err }) => {
  if (err) console.error(err);
  const report = await shutdown.begin(signal ?? (err ? 'error' : 'exit'));
  if (!report.clean) throw new Error('the shutdown was not clean');
});

server.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
  console.log(`listening on ${server.address().port}`);
});
