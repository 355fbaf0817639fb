// Fastify: gracefulShutdown() closes the connections of fastify.server, then fastify.close()
// runs the application's onClose hooks (its own server.close() finds nothing left to close).
// Environment: PORT (default 3000), PRE_STOP_DELAY ms (default 5000).
import Fastify from 'fastify';
import { gracefulShutdown } from 'finwait';

const fastify = Fastify();
fastify.get('/', async () => 'hello\n');
fastify.addHook('onClose', async () => console.log('onClose: the database would close here'));

await fastify.listen({ port: Number(process.env.PORT ?? 3000), host: '127.0.0.1' });
console.log(`listening on ${fastify.server.address().port}`);
gracefulShutdown(fastify.server, {
  preStopDelay: Number(process.env.PRE_STOP_DELAY ?? 5000),
  readinessPath: '/readyz',
  livenessPath: '/livez',
  onShutdown: () => fastify.close(),
});
