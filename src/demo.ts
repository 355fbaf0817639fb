/**
 * `npm start`: a real TCP close between two sockets on loopback, both ends watched, printed as
 * one timeline of the kernel states each end passed through and the calls that moved them.
 */
import net from 'node:net';
import { once } from 'node:events';
import { performance } from 'node:perf_hooks';
import { closeWrite } from './close-write';
import { findSocket } from './diag';
import { watch } from './lifecycle/watch';
import type { HistoryEntry } from './lifecycle/fsm';

interface Line {
  at: number;
  side: 'client' | 'server';
  text: string;
}

const useColor = process.stdout.isTTY && !process.env.NO_COLOR;
const dim = (s: string): string => (useColor ? `\x1b[2m${s}\x1b[22m` : s);
const bold = (s: string): string => (useColor ? `\x1b[1m${s}\x1b[22m` : s);

function describeEntry(h: HistoryEntry): string {
  const how = h.source === 'inferred' ? dim('(inferred: too brief to see)') : dim(`(${h.source})`);
  return `${bold(h.state.padEnd(12))} ${how}`;
}

async function main(): Promise<void> {
  const actions: Line[] = [];
  const t0 = performance.now();
  const act = (side: Line['side'], text: string): void => {
    actions.push({ at: performance.now(), side, text: `> ${text}` });
  };

  const server = net.createServer({ allowHalfOpen: true }).listen(0, '127.0.0.1');
  await once(server, 'listening');
  const accepted = once(server, 'connection') as Promise<[net.Socket]>;
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  const active = watch(client);
  act('client', 'connect()');
  const [peer] = await accepted;
  await once(client, 'connect').catch(() => undefined);
  const passive = watch(peer);
  const tuple = {
    local: { address: client.localAddress!, port: client.localPort! },
    remote: { address: client.remoteAddress!, port: client.remotePort! },
  };

  peer.on('data', () => undefined);
  const reply = new Promise<string>((resolve) => {
    let text = '';
    client.on('data', (chunk: Buffer) => (text += chunk.toString()));
    client.on('end', () => resolve(text));
  });
  act('client', "write('request'), then closeWrite(): FIN after the data");
  client.write('request');
  await closeWrite(client);
  act('client', 'closeWrite() resolved: the kernel shows our FIN acknowledged');
  await passive.until('CLOSE_WAIT');
  act('server', "'end' seen: half-closed, the server can still send");
  peer.end('response after the FIN');
  act('server', "end('response after the FIN'): data, then FIN");
  const received = await reply;
  act('client', `read ${JSON.stringify(received)}, then end-of-file`);
  await active.until('TIME_WAIT');
  const serverResult = await passive.done;
  server.close();

  const lines: Line[] = [
    ...active.history.map((h) => ({ at: h.at, side: 'client' as const, text: describeEntry(h) })),
    ...passive.history.map((h) => ({ at: h.at, side: 'server' as const, text: describeEntry(h) })),
    ...actions,
  ].sort((a, b) => a.at - b.at);

  const width = 44;
  console.log(bold('finwait: a real TCP close on loopback, as both kernels saw it'));
  console.log(`client ${tuple.local.address}:${tuple.local.port} closes first; server ${tuple.remote.address}:${tuple.remote.port}\n`);
  console.log(`${'time (ms)'.padStart(9)}  ${'client'.padEnd(width)}server`);
  for (const line of lines) {
    const time = (line.at - t0).toFixed(3).padStart(9);
    const cell = line.side === 'client' ? line.text : '';
    const right = line.side === 'server' ? line.text : '';
    // Pad by visible length (colour codes are invisible).
    const visible = cell.replace(/\x1b\[[0-9;]*m/g, '').length;
    console.log(`${time}  ${cell}${' '.repeat(Math.max(1, width - visible))}${right}`);
  }
  const timeWait = findSocket(tuple);
  console.log();
  console.log(`server: ${serverResult.outcome}, ${serverResult.role} close; the kernel has forgotten its socket.`);
  console.log(
    `client: active close; its socket stays in ${timeWait?.state ?? 'TIME_WAIT'} for another ` +
      `${((timeWait?.timer.expiresMs ?? 0) / 1000).toFixed(1)} s (sock_diag timer), which no fd can show.`,
  );
  client.destroy();
}

main().catch((error: unknown) => {
  console.error('finwait demo failed:', error);
  process.exitCode = 1;
});
