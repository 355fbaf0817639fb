// The far end of the benchmark's connections: accepts and holds them without reading.
import net from 'node:net';

const held = [];
const server = net.createServer({ pauseOnConnect: true }, (socket) => held.push(socket));
server.listen({ port: 0, host: '127.0.0.1', backlog: 4096 }, () => process.send({ port: server.address().port }));
process.on('disconnect', () => process.exit(0));
