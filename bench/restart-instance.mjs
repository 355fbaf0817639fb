// One instance of the application behind nginx in the rolling-restart benchmark
// (bench/restart.mjs): the handlers of bench/shutdown-app.mjs (GET /get, POST /post read in full
// and answered 201) on one port, shut down on SIGTERM by one strategy. Started by the parent with
// one IPC message { strategy, host, port, mode, deadline }; answers { type: 'ready' } once it
// listens, { type: 'ready', error } if it cannot. Mode 'handoff' listens with SO_REUSEPORT
// (finwait's listenReusePort(), whatever the strategy) so that the next instance can listen on the
// port before this one stops; mode 'gap' listens plainly, so the next one can only start once this
// one has closed its listener. Ends as the strategy ends it (exit code 0; 0 or 1 for finwait,
// which says whether the shutdown was clean; by the signal for terminus, which re-raises it).
import { createRequire } from 'node:module';
import { createApp } from './shutdown-app.mjs';

const require = createRequire(import.meta.url);

/** Above nginx's upstream keepalive_timeout (60 s), so that an idle connection is never closed by Node under nginx's feet between restarts. */
const KEEP_ALIVE_TIMEOUT_MS = 65_000;

const strategies = {
  // server.close(), then closeAllConnections() at the deadline.
  node(server, deadline) {
    process.once('SIGTERM', () => {
      const timer = setTimeout(() => server.closeAllConnections(), deadline);
      server.close(() => {
        clearTimeout(timer);
        process.exit(0);
      });
    });
  },
  'http-terminator'(server, deadline) {
    const terminator = require('http-terminator').createHttpTerminator({ server, gracefulTerminationTimeout: deadline });
    process.once('SIGTERM', async () => {
      await terminator.terminate();
      process.exit(0);
    });
  },
  stoppable(server, deadline) {
    require('stoppable')(server, deadline);
    process.once('SIGTERM', () => server.stop(() => process.exit(0)));
  },
  // terminus's defaults beyond the deadline: stoppable underneath, then the signal re-raised.
  terminus(server, deadline) {
    require('@godaddy/terminus').createTerminus(server, { signals: ['SIGTERM'], timeout: deadline });
  },
  // The shutdown helper: no pre-stop delay (nginx is not told about restarts), closeServer() with
  // the deadline, the summary line on stderr, exit code 0 when clean.
  finwait(server, deadline, finwait) {
    finwait.gracefulShutdown(server, { signals: ['SIGTERM'], timeout: deadline });
  },
};

process.once('message', async (config) => {
  const finwait = require(config.finwaitModule ?? '../dist/index.js');
  const { server } = createApp();
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  strategies[config.strategy](server, config.deadline, finwait);
  try {
    // finwait's own shutdown also hands its idle keep-alive connections to the next instance.
    if (config.mode === 'handoff') await finwait.listenReusePort(server, { port: config.port, host: config.host, adoptConnections: config.strategy === 'finwait' });
    else await new Promise((resolve, reject) => server.once('error', reject).listen(config.port, config.host, resolve));
  } catch (error) {
    process.send({ type: 'ready', error: `${error.code ?? ''} ${error.message}` }, () => process.exit(2));
    return;
  }
  process.send({ type: 'ready' });
});
// The parent is gone (it was killed, or it ended without stopping this instance): go too.
process.on('disconnect', () => process.exit(3));
