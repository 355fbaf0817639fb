// Express: gracefulShutdown() takes the server app.listen() returns. The health paths are
// answered before Express sees the request.
// Environment: PORT (default 3000), PRE_STOP_DELAY ms (default 5000).
import express from 'express';
import { gracefulShutdown } from 'finwait';

const app = express();
app.get('/', (req, res) => res.send('hello\n'));

const server = app.listen(Number(process.env.PORT ?? 3000), '127.0.0.1', () => {
  console.log(`listening on ${server.address().port}`);
});
gracefulShutdown(server, {
  preStopDelay: Number(process.env.PRE_STOP_DELAY ?? 5000),
  readinessPath: '/readyz',
  livenessPath: '/livez',
});
