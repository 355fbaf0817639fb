/**
 * `finwait ss` on a busy host's table: 150,000 TIME_WAIT sockets (`tcp_max_tw_buckets` is 131,072
 * by default) to one remote endpoint, through the pure analysis and rendering (the benchmark
 * `bench/ss.mjs` times the whole command on real sockets against `ss -tanp`). Before: grouping
 * copied the pile on every insert (25,000 sockets 4.2 s, 60,000 39.7 s) and rendering passed
 * every row to `Math.max(...)` ('Maximum call stack size exceeded' at ~125,000).
 */
import { describe, expect, it } from 'vitest';
import type { SocketEntry, TcpState } from '../../src/index';
import { jsonText } from '../../src/cli/escape';
import { analyse, renderSs, ssJson, ssJsonPieces, ssPieces, type SsSocket } from '../../src/cli/ss';
import type { Owners } from '../../src/processes';

const NO_OWNERS: Owners = { byInode: new Map(), scanned: 0, unreadable: 0 };

function entry(state: TcpState, local: [string, number], remote: [string, number], inode = 0, expiresMs = 0): SocketEntry {
  return {
    family: local[0].includes(':') ? 6 : 4,
    local: { address: local[0], port: local[1] },
    remote: { address: remote[0], port: remote[1] },
    state,
    timer: { kind: expiresMs > 0 ? 'timewait' : 'off', expiresMs, retransmits: 0 },
    recvQ: 0,
    sendQ: 0,
    inode,
    uid: 0,
    cookie: '0000000000000000',
  };
}

describe('finwait ss on 150,000 sockets', () => {
  const count = 150_000;
  // Kernel order is hash order: shuffled, 20 local addresses with ~7,500 ports each, one remote.
  const entries: SocketEntry[] = [];
  for (let i = 0; i < count; i++) {
    const j = (i * 7919) % count;
    entries.push(entry('TIME_WAIT', [`127.0.0.${2 + (j % 20)}`, 1024 + Math.floor(j / 20)], ['127.0.0.1', 443], 0, 60_000 - (j % 60_000)));
  }

  it('one pile of 150,000 flagged, every row drawn, JSON for every socket, neither in one string', { timeout: 60_000 }, () => {
    const report = analyse(entries, NO_OWNERS);
    expect(report.counts).toEqual({ TIME_WAIT: count });
    expect(report.flags).toHaveLength(1);
    expect(report.flags[0]!.message).toContain(`TIME_WAIT pile: ${count} sockets to 127.0.0.1:443 (over 1000)`);
    expect(report.flags[0]!.sockets).toHaveLength(count);

    const text = renderSs(report);
    const rows = text.split('\n').filter((line) => line.startsWith('!  TIME_WAIT'));
    expect(rows).toHaveLength(count);
    expect(rows[0]).toMatch(/^! {2}TIME_WAIT {2}127\.0\.0\.10:1024 {2}127\.0\.0\.1:443 {2}timewait \d+\.\d s/);
    expect(rows.at(-1)).toMatch(/^! {2}TIME_WAIT {2}127\.0\.0\.9:8523 /); // addresses in code-unit order
    // The flags come before the rows.
    expect(text.indexOf('flags (1):')).toBeLessThan(text.indexOf('   State'));

    // What the CLI writes: pieces of ~100 KB (text) and ~1 MB (JSON), never the whole table at once.
    const pieces = [...ssPieces(report)];
    expect(pieces.join('\n')).toBe(text);
    expect(Math.max(...pieces.map((piece) => piece.length))).toBeLessThan(200_000);
    const jsonPieces = [...ssJsonPieces(report)];
    expect(Math.max(...jsonPieces.slice(0, -1).map((piece) => piece.length))).toBeLessThan(2_000_000);
    expect(jsonPieces.at(-1)!.length).toBeLessThan(16 * count); // the flags, with the pile's 150,000 indexes
    const json = JSON.parse(jsonPieces.join('')) as { total: number; sockets: unknown[] };
    expect(json.total).toBe(count);
    expect(json.sockets).toHaveLength(count);
    expect(json.sockets[0]).toEqual(JSON.parse(JSON.stringify((ssJson(report) as { sockets: unknown[] }).sockets[0])));
  });

  it('--summary on the same table: counts and the flag, no rows', { timeout: 60_000 }, () => {
    const text = renderSs(analyse(entries, NO_OWNERS), undefined, Infinity, { summary: true });
    expect(text.split('\n').length).toBeLessThan(10);
    expect(text).toContain(`TIME_WAIT ${count}`);
    expect(text).toContain(`TIME_WAIT pile: ${count} sockets`);
  });
});

describe('finwait ss: the order of the table', () => {
  it('close states first, then by local port, remote port, local and remote address, as a comparator sort gives it', () => {
    // Few ports and addresses, so that many sockets tie on the first keys.
    const states: TcpState[] = ['ESTABLISHED', 'TIME_WAIT', 'CLOSE_WAIT', 'FIN_WAIT2', 'LISTEN', 'LAST_ACK', 'SYN_SENT'];
    const addresses = ['10.0.0.1', '10.0.0.10', '10.0.0.2', '::1', 'fe80::1', '2001:db8::5', '127.0.0.1'];
    let seed = 1;
    const random = (n: number): number => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const entries = Array.from({ length: 5000 }, (_, i) =>
      entry(states[random(states.length)]!, [addresses[random(addresses.length)]!, random(40)], [addresses[random(addresses.length)]!, random(40)], i + 1),
    );
    const order = ['CLOSE_WAIT', 'FIN_WAIT2', 'FIN_WAIT1', 'LAST_ACK', 'CLOSING', 'TIME_WAIT', 'ESTABLISHED', 'SYN_SENT', 'SYN_RECV', 'NEW_SYN_RECV', 'LISTEN', 'CLOSE', 'BOUND_INACTIVE'];
    const text = (x: string, y: string): number => (x < y ? -1 : x > y ? 1 : 0);
    const expected = entries
      .map((e, i) => ({ e, i }))
      .sort(
        ({ e: x, i: a }, { e: y, i: b }) =>
          order.indexOf(x.state) - order.indexOf(y.state) ||
          x.local.port - y.local.port ||
          x.remote.port - y.remote.port ||
          text(x.local.address, y.local.address) ||
          text(x.remote.address, y.remote.address) ||
          a - b,
      )
      .map(({ e }) => e.inode);
    const report = analyse(entries, NO_OWNERS);
    expect(report.sockets.map((s: SsSocket) => s.inode)).toEqual(expected);
    // Each flag's sockets are positions in that order.
    for (const f of report.flags) for (const p of f.sockets) expect(report.sockets[p]!.flags).toEqual([f.kind]);
    // --json in pieces is the same text as the whole, across piece boundaries (2,048 sockets).
    expect([...ssJsonPieces(report)].join('')).toBe(jsonText(ssJson(report)));
    expect([...ssJsonPieces(report, { summary: true })].join('')).toBe(jsonText(ssJson(report, { summary: true })));
    expect([...ssJsonPieces(analyse([], NO_OWNERS))].join('')).toBe(jsonText(ssJson(analyse([], NO_OWNERS))));
  });
});
