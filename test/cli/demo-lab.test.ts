/**
 * `finwait demo` in the lab, run as a user would: every scenario between two network namespaces,
 * with the segments the wire logged drawn as RFC 793 arrows; `--json` and `--svg` with segments.
 * Skipped with the reason where the lab cannot run, failed under CI=true (the rule of
 * test/testing/helpers.ts).
 */
import { describe, expect } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { itNeedsLab } from '../testing/helpers';
import { assertWellFormedXml, finwait, type Ran } from './run';

const LAB_PATH = 'path: lab (two network namespaces, userspace wire)';

/** A CLI test that needs the lab (the CLI makes its own). */
const itLab = itNeedsLab;

/** Runs a lab scenario and checks it ran in the lab. */
async function demo(args: string[]): Promise<Ran> {
  const ran = await finwait(['demo', ...args]);
  expect(ran.stderr).toBe('');
  expect(ran.code).toBe(0);
  return ran;
}

interface Arrow {
  from: 'a' | 'b';
  /** `<SEQ=…><ACK=…><CTL=…>` */
  label: string;
  /** `'pass'` unless the ladder tags it (`[drop]`, `[hold]`, `[release]`). */
  verdict: string;
  line: number;
}

/** The segment arrows of the ladder, top to bottom. */
function arrows(stdout: string): Arrow[] {
  const found: Arrow[] = [];
  stdout.split('\n').forEach((line, i) => {
    const m = /(-->|<--|\.\.\.|X--) (<SEQ=\S+>) (-->|<--|\.\.\.|--X)(?:\s+\[(\w+)\])?$/.exec(line);
    if (!m) return;
    const from = [m[1], m[3]].some((e) => e === '-->' || e === '--X') ? 'a' : 'b';
    found.push({ from, label: m[2]!, verdict: m[4] ?? 'pass', line: i });
  });
  return found;
}

const text = (list: Arrow[]): string[] => list.map((a) => `${a.from} ${a.label}${a.verdict === 'pass' ? '' : ` ${a.verdict}`}`);

/** The arrows after the three-way handshake. */
function afterHandshake(list: Arrow[]): Arrow[] {
  expect(text(list.slice(0, 3))).toEqual(['a <SEQ=0><CTL=SYN>', 'b <SEQ=0><ACK=1><CTL=SYN,ACK>', 'a <SEQ=1><ACK=1><CTL=ACK>']);
  return list.slice(3);
}

/** TCP A's (left) and TCP B's (right) state cells, as `STATE (source)`, with their line numbers. */
function columns(stdout: string): { a: [string, number][]; b: [string, number][] } {
  const lines = stdout.split('\n');
  const header = lines.findIndex((l) => l.includes('time ms'));
  const bAt = lines[header]!.indexOf('TCP B');
  const a: [string, number][] = [];
  const b: [string, number][] = [];
  for (let i = header + 1; i < lines.length && lines[i]!.trim() !== ''; i++) {
    const line = lines[i]!;
    if (line.includes('<SEQ=')) continue;
    const left = line.slice(12, bAt).trim();
    const right = line.slice(bAt).trim();
    if (/^[A-Z_0-9]+!? \(/.test(left)) a.push([left, i]);
    if (/^[A-Z_0-9]+!? \(/.test(right)) b.push([right, i]);
  }
  return { a, b };
}

const states = (cells: [string, number][]) => cells.map(([c]) => c.split(' ')[0]);
const lineOf = (cells: [string, number][], cell: string) => cells.find(([c]) => c === cell)?.[1] ?? -1;

describe.concurrent('finwait demo in the lab', () => {
  itLab("normal: figure 13's four segments, A's FIN first, A's last ACK last, between the states they cause", async () => {
    const { stdout } = await demo(['normal']);
    expect(stdout.split('\n')[1]).toBe(LAB_PATH);
    expect(stdout).toMatch(/^TCP A: client 10\.77\.0\.1:\d+ -> 10\.77\.0\.2:80$/m);
    const close = afterHandshake(arrows(stdout));
    expect(text(close)).toEqual([
      'a <SEQ=1><ACK=1><CTL=FIN,ACK>',
      'b <SEQ=1><ACK=2><CTL=ACK>',
      'b <SEQ=1><ACK=2><CTL=FIN,ACK>',
      'a <SEQ=2><ACK=2><CTL=ACK>',
    ]);
    expect(stdout).toContain('--> <SEQ=1><ACK=1><CTL=FIN,ACK> -->');
    expect(stdout).toContain('<-- <SEQ=1><ACK=2><CTL=FIN,ACK> <--');
    const { a, b } = columns(stdout);
    expect(states(a)).toEqual(expect.arrayContaining(['ESTABLISHED', 'FIN_WAIT1', 'FIN_WAIT2', 'TIME_WAIT']));
    expect(states(b)).toEqual(expect.arrayContaining(['ESTABLISHED', 'CLOSE_WAIT', 'LAST_ACK', 'CLOSED']));
    // B's ACK of A's FIN comes before A is in FIN_WAIT2, and B's FIN before A leaves it.
    expect(close[1]!.line).toBeLessThan(lineOf(a, 'FIN_WAIT2 (fd)'));
    expect(close[2]!.line).toBeGreaterThan(lineOf(a, 'FIN_WAIT2 (fd)'));
    expect(a.map(([c]) => c)).toContain('TIME_WAIT (sock_diag)');
    expect(stdout).toMatch(/\(2MSL timer: (5\d|60)\.\d s left \(sock_diag\)\)/);
    expect(stdout).toContain('TCP A: graceful, active close; still TIME_WAIT in sock_diag');
    expect(stdout).toContain('TCP B: graceful, passive close; the kernel has forgotten the connection');
    expect(stdout).toContain("the wire carried figure 13's four segments");
    expect(stdout).toMatch(/^note: states: watch\(\) on each end's fd and its events; the sock_diag rows come from each lab host's findSocket\(\)/m);
    expect(stdout).not.toContain('segments: not shown');
  });

  itLab("three-way: B's ACK of A's FIN dropped until B closed, so FIN, FIN+ACK, ACK and no FIN_WAIT2", async () => {
    const { stdout } = await demo(['three-way']);
    const close = afterHandshake(arrows(stdout));
    expect(text(close.filter((x) => x.verdict !== 'drop'))).toEqual([
      'a <SEQ=1><ACK=1><CTL=FIN,ACK>',
      'b <SEQ=1><ACK=2><CTL=FIN,ACK>',
      'a <SEQ=2><ACK=2><CTL=ACK>',
    ]);
    for (const dropped of close.filter((x) => x.verdict === 'drop')) expect(`${dropped.from} ${dropped.label}`).toBe('b <SEQ=1><ACK=2><CTL=ACK>');
    const { a } = columns(stdout);
    expect(states(a)).not.toContain('FIN_WAIT2');
    expect(states(a)).toEqual(expect.arrayContaining(['FIN_WAIT1', 'TIME_WAIT']));
    expect(stdout).toContain('A went from FIN_WAIT1 straight to TIME_WAIT, FIN_WAIT2 skipped');
  });

  itLab('simultaneous: two FINs cross on the wire, both ends through CLOSING to TIME_WAIT (figure 14)', async () => {
    const { stdout } = await demo(['simultaneous']);
    const close = afterHandshake(arrows(stdout));
    const step = (i: number) => text(close.slice(i, i + 2)).sort();
    expect(close).toHaveLength(8);
    expect(step(0)).toEqual(['a <SEQ=1><ACK=1><CTL=FIN,ACK> hold', 'b <SEQ=1><ACK=1><CTL=FIN,ACK> hold']);
    expect(step(2)).toEqual(['a <SEQ=1><ACK=1><CTL=FIN,ACK> release', 'b <SEQ=1><ACK=1><CTL=FIN,ACK> release']);
    expect(step(4)).toEqual(['a <SEQ=2><ACK=2><CTL=ACK> hold', 'b <SEQ=2><ACK=2><CTL=ACK> hold']);
    expect(step(6)).toEqual(['a <SEQ=2><ACK=2><CTL=ACK> release', 'b <SEQ=2><ACK=2><CTL=ACK> release']);
    // Drawn as in figure 14: a held FIN stops at "...", a released one leaves from "...".
    expect(stdout).toContain('--> <SEQ=1><ACK=1><CTL=FIN,ACK> ...');
    expect(stdout).toContain('... <SEQ=1><ACK=1><CTL=FIN,ACK> <--');
    expect(stdout).toContain('... <SEQ=1><ACK=1><CTL=FIN,ACK> -->');
    expect(stdout).toContain('<-- <SEQ=1><ACK=1><CTL=FIN,ACK> ...');
    const { a, b } = columns(stdout);
    for (const side of [a, b]) {
      expect(side.map(([c]) => c)).toEqual(expect.arrayContaining(['FIN_WAIT1 (fd)', 'CLOSING (fd)', 'TIME_WAIT (sock_diag)']));
      // CLOSING after the FINs crossed, before the ACKs did.
      expect(lineOf(side, 'CLOSING (fd)')).toBeGreaterThan(close[3]!.line);
      expect(lineOf(side, 'CLOSING (fd)')).toBeLessThan(close[6]!.line);
    }
    expect(stdout).toContain('TCP A: graceful, simultaneous close; still TIME_WAIT in sock_diag');
    expect(stdout).toContain('TCP B: graceful, simultaneous close; still TIME_WAIT in sock_diag');
  });

  itLab('half-close: B sends data from CLOSE_WAIT, A reads it in FIN_WAIT2 and acknowledges it', async () => {
    const { stdout } = await demo(['half-close']);
    const close = afterHandshake(arrows(stdout));
    expect(text(close.slice(0, 2))).toEqual(['a <SEQ=1><ACK=1><CTL=FIN,ACK>', 'b <SEQ=1><ACK=2><CTL=ACK>']);
    const data = close.filter((x) => x.from === 'b' && x.label.includes('<DATA='));
    expect(data[0]!.label).toBe('<SEQ=1><ACK=2><CTL=ACK><DATA=1448>');
    expect(new Set(data.map((x) => x.label)).size).toBeGreaterThanOrEqual(6);
    expect(close.some((x) => x.from === 'a' && x.label === '<SEQ=2><ACK=8194><CTL=ACK>')).toBe(true);
    expect(close.find((x) => x.from === 'b' && x.label.includes('FIN'))!.label).toBe('<SEQ=8193><ACK=2><CTL=FIN,ACK>');
    expect(stdout).toContain('(read: first bytes, in FIN_WAIT2)');
    expect(stdout).toContain('(read 8192 bytes after its own FIN, then end-of-file)');
  });

  itLab('reset: A sends RST, not FIN; ECONNRESET at B; no TIME_WAIT in either namespace', async () => {
    const { stdout } = await demo(['reset']);
    const close = afterHandshake(arrows(stdout));
    expect(text(close)).toEqual(['a <SEQ=1><ACK=1><CTL=RST,ACK>']);
    expect(stdout).toContain("('error' ECONNRESET)");
    expect(stdout).toContain('TCP A: reset-sent');
    expect(stdout).toContain('TCP B: reset-received');
    expect(states(columns(stdout).a)).not.toContain('TIME_WAIT');
    expect(stdout).toContain("no TIME_WAIT on either side: neither host's sock_diag has this connection");
  });

  itLab('unread-data: B\'s bytes reach A, A closes without reading them: RST', async () => {
    const { stdout } = await demo(['unread-data']);
    expect(stdout).toMatch(/^TCP A: server \(accepted\) 10\.77\.0\.1:80 -> 10\.77\.0\.2:\d+$/m);
    const list = arrows(stdout);
    expect(text(list.slice(0, 3))).toEqual(['b <SEQ=0><CTL=SYN>', 'a <SEQ=0><ACK=1><CTL=SYN,ACK>', 'b <SEQ=1><ACK=1><CTL=ACK>']);
    const close = list.slice(3);
    expect(text(close)).toContain('b <SEQ=1><ACK=1><CTL=PSH,ACK><DATA=33>');
    expect(text(close).at(-1)).toBe('a <SEQ=1><ACK=34><CTL=RST,ACK>');
    expect(close.some((x) => x.label.includes('FIN'))).toBe(false);
    expect(stdout).toContain('TCP A: reset-sent');
    expect(stdout).toContain('TCP B: reset-received');
  });

  itLab("fin-wait2-timeout: A's orphan FIN_WAIT2 in host a's sock_diag, gone after 1 s, nothing on the wire", async () => {
    const { stdout } = await demo(['fin-wait2-timeout']);
    const close = afterHandshake(arrows(stdout));
    expect(text(close)).toEqual(['a <SEQ=1><ACK=1><CTL=FIN,ACK>', 'b <SEQ=1><ACK=2><CTL=ACK>']);
    const { a, b } = columns(stdout);
    expect(states(a)).toEqual(['ESTABLISHED', 'FIN_WAIT1', 'FIN_WAIT2', 'CLOSED']);
    expect(stdout).toMatch(/\(orphan in sock_diag: FIN_WAIT2, timewait timer (1\.0|0\.\d) s, inode 0\)/);
    expect(stdout).toContain('TCP A: timed-out, active close');
    expect(states(b).at(-1)).toBe('CLOSE_WAIT');
    expect(stdout).toMatch(/TCP B: not closed, passive close; still CLOSE_WAIT in sock_diag: no timer; fd open \(inode \d+\)/);
    const closedAt = Number(stdout.split('\n').find((l) => l.includes('CLOSED (sock_diag)'))!.trim().split(/\s+/)[0]);
    expect(closedAt).toBeGreaterThanOrEqual(1000);
    expect(stdout).toContain('nothing went on the wire after A closed its fd');
  });

  itLab("time-wait: A's TIME_WAIT in host a's sock_diag, with its 60 s timer and inode 0", async () => {
    const { stdout } = await demo(['time-wait']);
    // B closes as soon as it sees A's FIN: usually FIN, FIN+ACK, ACK; when B's delayed ACK of the
    // FIN goes out before B's own FIN, a pure ACK comes between (both are real closes).
    const seen = text(afterHandshake(arrows(stdout)));
    expect([
      ['a <SEQ=1><ACK=1><CTL=FIN,ACK>', 'b <SEQ=1><ACK=2><CTL=FIN,ACK>', 'a <SEQ=2><ACK=2><CTL=ACK>'],
      ['a <SEQ=1><ACK=1><CTL=FIN,ACK>', 'b <SEQ=1><ACK=2><CTL=ACK>', 'b <SEQ=1><ACK=2><CTL=FIN,ACK>', 'a <SEQ=2><ACK=2><CTL=ACK>'],
    ]).toContainEqual(seen);
    expect(columns(stdout).a.map(([c]) => c)).toContain('TIME_WAIT (sock_diag)');
    expect(stdout).toMatch(/A is in TIME_WAIT with a timewait timer of (5\d|60)\.\d s \(sock_diag in host a's namespace\); inode 0/);
  });

  itLab("lost-ack: A's ACKs dropped, B retransmits its FIN from LAST_ACK, then the wire passes again", async () => {
    const { stdout } = await demo(['lost-ack']);
    const close = afterHandshake(arrows(stdout));
    const bFins = close.filter((x) => x.from === 'b' && x.label === '<SEQ=1><ACK=2><CTL=FIN,ACK>');
    expect(bFins.length).toBeGreaterThanOrEqual(3); // the FIN and at least two retransmissions
    // A acknowledges every FIN; the wire drops those ACKs until it has read B's fourth FIN. It
    // reads on this process's event loop, so on a loaded machine it may read several FINs at
    // once and let more than one ACK through: drops first, then passes, never the other way.
    const aAcks = close.filter((x) => x.from === 'a' && x.label === '<SEQ=2><ACK=2><CTL=ACK>');
    expect(aAcks).toHaveLength(bFins.length);
    expect(aAcks.map((x) => x.verdict).join(' ')).toMatch(/^(drop )+pass( pass)*$/);
    expect(stdout).toContain('--> <SEQ=2><ACK=2><CTL=ACK> --X');
    const { a, b } = columns(stdout);
    expect(b.map(([c]) => c)).toContain('LAST_ACK (fd)');
    expect(lineOf(b, 'LAST_ACK (fd)')).toBeLessThan(bFins[1]!.line);
    expect(states(b).at(-1)).toBe('CLOSED');
    expect(a.map(([c]) => c)).toContain('TIME_WAIT (sock_diag)');
    expect(stdout).toMatch(/\(FIN sent again \((RTO|tail-loss probe)\): tcp_info retransmits \d, backoff \d, rto \d+ ms\)/);
    expect(stdout).toMatch(/\(FIN sent again \(RTO\): tcp_info retransmits [1-9], backoff [1-9], rto \d+ ms\)/);
    expect(stdout).toContain('TCP B: graceful, passive close; the kernel has forgotten the connection');
  });

  itLab('--json: path lab, the segments on the histories\' clock, shown.segments true', async () => {
    const { stdout } = await demo(['normal', '--json']);
    const json = JSON.parse(stdout);
    expect(json.path).toBe('lab');
    expect(json.shown).toEqual({ states: true, segments: true });
    expect(json.notes.some((n: string) => n.startsWith('segments: not shown'))).toBe(false);
    const segments = json.segments as { at: number; from: string; flags: string; relSeq: number; relAck: number | null; len: number; verdict: string; seq: number; ack: number }[];
    expect(segments.map((s) => `${s.from} ${s.flags} ${s.relSeq} ${s.relAck}`)).toEqual([
      'a SYN 0 null',
      'b SYN,ACK 0 1',
      'a ACK 1 1',
      'a FIN,ACK 1 1',
      'b ACK 1 2',
      'b FIN,ACK 1 2',
      'a ACK 2 2',
    ]);
    for (const s of segments) {
      expect(s).toMatchObject({ len: 0, verdict: 'pass' });
      expect(Number.isInteger(s.seq) && Number.isInteger(s.ack)).toBe(true);
    }
    // One clock: the segments sit between the states they cause, in ms from the start.
    const ats = segments.map((s) => s.at);
    expect(ats).toEqual([...ats].sort((x, y) => x - y));
    expect(ats[0]).toBeGreaterThan(0);
    const at = (end: 'a' | 'b', state: string) => json.ends[end].history.find((h: { state: string }) => h.state === state).at as number;
    expect(segments[3]!.at).toBeGreaterThanOrEqual(at('a', 'ESTABLISHED') - 5);
    expect(segments[4]!.at).toBeLessThanOrEqual(at('a', 'FIN_WAIT2'));
    expect(segments[5]!.at).toBeGreaterThanOrEqual(at('b', 'CLOSE_WAIT'));
    expect(json.ends.a).toMatchObject({ outcome: 'graceful', role: 'active', sockDiag: { state: 'TIME_WAIT', inode: 0 } });
    expect(json.ends.b).toMatchObject({ outcome: 'graceful', role: 'passive', finished: true });
  });

  itLab('--svg FILE: a well-formed SVG with the segment arrows, held ones drawn short', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-demo-lab-svg-'));
    const file = path.join(dir, 'simultaneous.svg');
    try {
      const { code, stdout, stderr } = await finwait(['demo', 'simultaneous', '--svg', file]);
      expect(code).toBe(0);
      expect(stdout).toContain(LAB_PATH);
      expect(stderr).toBe(`svg: written to ${file}\n`);
      const svg = fs.readFileSync(file, 'utf8');
      assertWellFormedXml(svg);
      expect(svg).toContain('&lt;SEQ=1&gt;&lt;ACK=1&gt;&lt;CTL=FIN,ACK&gt; [hold]');
      expect(svg).toContain('&lt;SEQ=2&gt;&lt;ACK=2&gt;&lt;CTL=ACK&gt; [release]');
      expect(svg.match(/marker-end="url\(#arrow\)"/g)!.length).toBeGreaterThanOrEqual(3 + 4);
      expect(svg).toContain('class="segment held"');
      expect(svg).toContain(LAB_PATH);
      for (const state of ['CLOSING', 'TIME_WAIT']) expect(svg).toContain(state);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  itLab('a sock_diag look that fails mid-run (EMFILE): exit 1 with the error, and the lab\'s namespaces are deleted', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-demo-fail-'));
    const preload = path.join(dir, 'fail.cjs');
    const pidFile = path.join(dir, 'pid');
    // The CLI's own host.findSocket(), failing from its second call on (the first look after a segment).
    try {
      fs.writeFileSync(
        preload,
        `require('node:fs').writeFileSync(${JSON.stringify(pidFile)}, String(process.pid));
         const { Host } = require(${JSON.stringify(path.join(__dirname, '..', '..', 'dist', 'testing', 'host.js'))});
         const real = Host.prototype.findSocket;
         let calls = 0;
         Host.prototype.findSocket = function (tuple) {
           if (++calls > 1) throw Object.assign(new Error('socket EMFILE'), { code: 'EMFILE', syscall: 'socket' });
           return real.call(this, tuple);
         };`,
      );
      const { code, stderr } = await finwait(['demo', 'time-wait'], { NODE_OPTIONS: `--require ${preload}` });
      expect(code).toBe(1);
      expect(stderr).toBe('finwait: socket EMFILE\n'); // the code once: the message has it
      const pid = fs.readFileSync(pidFile, 'utf8');
      expect(fs.readdirSync('/run/netns').filter((n) => n.startsWith(`finwait-${pid}-`))).toEqual([]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
