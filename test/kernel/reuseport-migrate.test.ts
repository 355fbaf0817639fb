/**
 * What the kernel does with a closing listener's connections when another listener shares its
 * port (SO_REUSEPORT), with `net.ipv4.tcp_migrate_req` 0 (the default) and 1 (Linux 5.14+, per
 * network namespace): the facts the same-port handoff (src/handoff.ts) stands on. Between two
 * real kernels: the listeners in host b's namespace, the clients in host a's, over the wire.
 */
import { describe, expect } from 'vitest';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { once } from 'node:events';
import { native } from '../../src/binding';
import { migrationCounters } from '../../src/handoff';
import { tcpState } from '../../src/index';
import { isPureAck, waitUntil, type Host, type Lab } from '../../src/testing/index';
import { sockaddr } from '../../src/sockaddr';
import { itLab } from './helpers';

const PORT = 80;

/** An fd of the host's network namespace, for the addon's calls made inside it; closed by `run`. */
async function inNamespace<T>(host: Host, run: (nsFd: number) => Promise<T>): Promise<T> {
  const nsFd = fs.openSync(path.join('/run/netns', host.netns), 'r');
  try {
    return await run(nsFd);
  } finally {
    fs.closeSync(nsFd);
  }
}

/** A SO_REUSEPORT socket made in the host's namespace, bound to every address on `port`. */
function reusePortSocket(nsFd: number, port: number): number {
  const fd = native().reusePortSocket(native().constants.AF_INET, nsFd);
  native().bind(fd, sockaddr('0.0.0.0', port));
  return fd;
}

/** A listener nobody accepts from (listen(2) on the raw fd): what connects stays in its accept queue. */
function queueOnlyListener(nsFd: number, port: number): { close(): void } {
  const fd = reusePortSocket(nsFd, port);
  native().listen(fd, 16);
  return { close: () => fs.closeSync(fd) };
}

/** A Node server accepting on a SO_REUSEPORT listener of the host; every accepted socket is kept. */
async function acceptingListener(nsFd: number, port: number): Promise<{ server: net.Server; accepted: net.Socket[]; close(): Promise<void> }> {
  const server = net.createServer();
  const accepted: net.Socket[] = [];
  server.on('connection', (socket: net.Socket) => accepted.push(socket));
  server.listen({ fd: reusePortSocket(nsFd, port) });
  await once(server, 'listening');
  return {
    server,
    accepted,
    async close() {
      for (const socket of accepted) socket.destroy();
      if (server.listening) await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** The host namespace's TCPMigrateReqSuccess / Failure (its /proc/net/netstat, opened from inside it). */
function counters(nsFd: number): { migrated: number; failed: number } {
  const fd = native().netnsOpen(nsFd, '/proc/thread-self/net/netstat', fs.constants.O_RDONLY);
  try {
    return migrationCounters(fs.readFileSync(fd, 'utf8'));
  } finally {
    fs.closeSync(fd);
  }
}

/** The listening sockets of the host on `port`, each with its accept queue (`recvQ`). */
function listeners(host: Host): number[] {
  return host.sockets({ states: ['LISTEN'], localPort: PORT }).map((s) => s.recvQ);
}

/**
 * Three clients connected to a listener nobody accepts from, each having sent one line; then a
 * second listener joins the port, accepting, and the first one closes.
 */
async function closeWithQueuedConnections(lab: Lab, nsFd: number): Promise<{ clients: net.Socket[]; second: Awaited<ReturnType<typeof acceptingListener>> }> {
  const first = queueOnlyListener(nsFd, PORT);
  const clients: net.Socket[] = [];
  for (let i = 0; i < 3; i++) {
    const client = await lab.a.connect(PORT);
    client.on('error', () => {}); // the RST, when there is one, is asserted through the kernel's state
    client.write(`hello ${i}\n`);
    clients.push(client);
  }
  await waitUntil('three connections in the accept queue', () => listeners(lab.b).join() === '3');
  const second = await acceptingListener(nsFd, PORT);
  expect(listeners(lab.b).sort()).toEqual([0, 3]);
  expect(second.accepted).toEqual([]); // the group's new member has none of the queued connections
  first.close();
  return { clients, second };
}

describe('SO_REUSEPORT: a listener closing while another shares its port', () => {
  itLab('tcp_migrate_req=0: the connections in its accept queue are reset; the other listener takes only new ones', async (lab) => {
    await inNamespace(lab.b, async (nsFd) => {
      expect(lab.b.sysctl('net.ipv4.tcp_migrate_req', 0)).toBe('0');
      const before = counters(nsFd);
      const { clients, second } = await closeWithQueuedConnections(lab, nsFd);
      try {
        // Each queued connection is reset by b: the client's kernel shows CLOSE, having received RST.
        await waitUntil('every queued client reset', () => clients.every((c) => c.destroyed || tcpState(c) === 'CLOSE'));
        const resets = lab.wire.log.filter((e) => e.from === 'b' && e.flags.includes('RST'));
        expect(new Set(resets.map((e) => e.dst.port)).size).toBe(3);
        expect(second.accepted).toEqual([]);
        expect(counters(nsFd)).toEqual(before);
        // The port still listens: a new connection goes to the remaining listener.
        const late = await lab.a.connect(PORT);
        await waitUntil('the new connection accepted by the remaining listener', () => (second.accepted.length === 1 ? true : undefined));
        expect(tcpState(late)).toBe('ESTABLISHED');
      } finally {
        await second.close();
      }
    });
  });

  itLab('tcp_migrate_req=1: they move to the other listener with the bytes they carried, and TCPMigrateReqSuccess counts them', async (lab) => {
    await inNamespace(lab.b, async (nsFd) => {
      expect(lab.b.sysctl('net.ipv4.tcp_migrate_req', 1)).toBe('1');
      const before = counters(nsFd);
      const { clients, second } = await closeWithQueuedConnections(lab, nsFd);
      try {
        await waitUntil('the three queued connections accepted by the other listener', () => (second.accepted.length === 3 ? true : undefined));
        const lines = await Promise.all(second.accepted.map((s) => once(s, 'data').then(([d]) => String(d))));
        expect(lines.sort()).toEqual(['hello 0\n', 'hello 1\n', 'hello 2\n']);
        expect(clients.map((c) => tcpState(c))).toEqual(['ESTABLISHED', 'ESTABLISHED', 'ESTABLISHED']);
        expect(lab.wire.log.filter((e) => e.flags.includes('RST'))).toEqual([]);
        const after = counters(nsFd);
        expect({ migrated: after.migrated - before.migrated, failed: after.failed - before.failed }).toEqual({ migrated: 3, failed: 0 });
        // Both ways: the accepted end answers and the client reads it.
        const reply = once(clients[0]!, 'data');
        second.accepted[0]!.write('bye\n');
        expect(String((await reply)[0])).toBe('bye\n');
      } finally {
        await second.close();
      }
    });
  });

  for (const migrate of [0, 1] as const) {
    itLab(`a handshake in progress (SYN_RECV) when its listener closes: tcp_migrate_req=${migrate} ${migrate ? 'completes it on the other listener' : 'answers its final ACK with RST'}`, async (lab) => {
      await inNamespace(lab.b, async (nsFd) => {
        lab.b.sysctl('net.ipv4.tcp_migrate_req', migrate);
        const first = await acceptingListener(nsFd, PORT);
        let second: Awaited<ReturnType<typeof acceptingListener>> | undefined;
        try {
          // The client's last ACK of the handshake is held: b keeps a request socket in SYN_RECV
          // (the client, which got the SYN-ACK, is already ESTABLISHED).
          lab.wire.hold((s) => s.from === 'a' && isPureAck(s));
          const client = await lab.a.connect(PORT);
          client.on('error', () => {});
          await waitUntil("b's request socket in SYN_RECV", () => (lab.b.sockets({ states: ['SYN_RECV'], localPort: PORT }).length === 1 ? true : undefined));
          second = await acceptingListener(nsFd, PORT);
          await new Promise((resolve) => first.server.close(resolve));
          lab.wire.pass();
          lab.wire.release();
          if (migrate) {
            await waitUntil('the handshake completed on the other listener', () => (second!.accepted.length === 1 ? true : undefined));
            expect(second.accepted[0]!.remotePort).toBe(client.localPort);
            expect(tcpState(client)).toBe('ESTABLISHED');
          } else {
            await waitUntil("b's RST", () => (lab.wire.log.some((e) => e.from === 'b' && e.flags.includes('RST')) ? true : undefined));
            await waitUntil('the client reset', () => client.destroyed || tcpState(client) === 'CLOSE');
            expect(second.accepted).toEqual([]);
          }
          expect(first.accepted).toEqual([]);
        } finally {
          await first.close();
          await second?.close();
        }
      });
    });
  }
});
