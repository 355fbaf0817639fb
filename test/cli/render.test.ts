/** The renderers as pure functions: layout, text ladder, SVG, JSON, flags of `finwait ss`; no sockets. */
import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { HistoryEntry } from '../../src/lifecycle/fsm';
import type { SocketEntry } from '../../src/diag';
import { ctlOf, diagramJson, layout, NO_SEGMENTS_NOTE, rowTime, segmentLabel, type Diagram, type Segment } from '../../src/cli/diagram';
import { renderLadder } from '../../src/cli/ladder';
import { renderSvg } from '../../src/cli/svg';
import { analyse, renderSs, ssJson } from '../../src/cli/ss';
import { socketOwners } from '../../src/processes';
import { ansi, plain, styleFor } from '../../src/cli/style';
import { assertWellFormedXml } from './run';

const h = (state: HistoryEntry['state'], at: number, source: HistoryEntry['source'], event?: HistoryEntry['event']): HistoryEntry =>
  event ? { state, at, source, event } : { state, at, source };

/** Figure 13 as a watcher would record it, at t0 = 100. */
const figure13: Diagram = {
  scenario: 'normal',
  title: 'normal close (RFC 793 figure 13)',
  path: 'loopback',
  t0: 100,
  a: {
    label: 'client',
    local: { address: '127.0.0.1', port: 40000 },
    remote: { address: '127.0.0.1', port: 8080 },
    history: [h('ESTABLISHED', 101, 'kernel'), h('FIN_WAIT1', 102, 'kernel', 'close'), h('FIN_WAIT2', 103, 'kernel', 'ack-of-fin'), h('CLOSE', 104.5, 'kernel'), h('TIME_WAIT', 105, 'diag', 'fin')],
    finished: false,
    diag: { state: 'TIME_WAIT', timer: { kind: 'timewait', expiresMs: 59_900, retransmits: 0 }, inode: 0, at: 106 },
  },
  b: {
    label: 'server (accepted)',
    local: { address: '127.0.0.1', port: 8080 },
    remote: { address: '127.0.0.1', port: 40000 },
    history: [h('ESTABLISHED', 101, 'kernel'), h('CLOSE_WAIT', 102.5, 'kernel', 'fin'), h('LAST_ACK', 104, 'inferred', 'close'), h('CLOSE', 104, 'kernel'), h('CLOSED', 104.8, 'diag', 'ack-of-fin')],
    finished: true,
  },
  actions: [
    { at: 101.5, side: 'a', text: 'close: closeWrite()' },
    { at: 103.5, side: 'b', text: 'close: end()' },
  ],
  notes: ['a note'],
};

const seg = (at: number, from: 'a' | 'b', flags: string, relSeq: number, relAck: number, verdict = 'pass'): Segment => ({
  at,
  from,
  flags,
  seq: relSeq + 1000,
  ack: relAck + 5000,
  relSeq,
  relAck,
  len: 0,
  verdict,
});

const withSegments: Diagram = {
  ...figure13,
  path: 'lab',
  segments: [
    seg(101.9, 'a', 'F.', 1, 1),
    seg(102.9, 'b', '.', 1, 2),
    seg(103.9, 'b', 'F.', 1, 2),
    seg(104.2, 'a', '.', 2, 2, 'drop'),
    seg(104.3, 'a', '.', 2, 2),
  ],
};

describe('layout', () => {
  it('puts both ends seen at one instant on one row, and orders rows by time', () => {
    const rows = layout(figure13);
    expect(rows[0]).toMatchObject({ at: 101, a: { kind: 'state' }, b: { kind: 'state' } });
    const ats = rows.map((r) => r.at);
    expect(ats).toEqual([...ats].sort((x, y) => x - y));
  });

  it('draws an inferred state after what its side did in between, and shows its time as an upper bound', () => {
    const rows = layout(figure13);
    const close = rows.findIndex((r) => r.b?.kind === 'action');
    const lastAck = rows.findIndex((r) => r.b?.kind === 'state' && r.b.entry.state === 'LAST_ACK');
    expect(lastAck).toBe(close + 1);
    expect(rowTime(rows[lastAck]!, 100)).toBe('≤4.000');
    expect(rowTime(rows[0]!, 100)).toBe('1.000');
  });

  it('adds the sock_diag timer of an end the kernel still has, like "(2 MSL)" in figure 13', () => {
    const rows = layout(figure13);
    expect(rows.at(-1)).toMatchObject({ a: { kind: 'action', text: '2MSL timer: 59.9 s left (sock_diag)' } });
  });

  it('gives each segment a row of its own', () => {
    const rows = layout(withSegments);
    expect(rows.filter((r) => r.segment)).toHaveLength(5);
    expect(rows.filter((r) => r.segment).every((r) => r.a === undefined && r.b === undefined)).toBe(true);
  });
});

describe('segments', () => {
  it.each([
    ['F.', 'FIN,ACK'],
    ['S', 'SYN'],
    ['S.', 'SYN,ACK'],
    ['R.', 'RST,ACK'],
    ['P.', 'PSH,ACK'],
    ['.', 'ACK'],
    ['fin ack', 'FIN,ACK'],
    ['ACK|FIN', 'FIN,ACK'],
  ])('CTL of %j is %s', (flags, ctl) => {
    expect(ctlOf(flags)).toBe(ctl);
  });

  it('are labelled as in RFC 793, with relative numbers and data length', () => {
    expect(segmentLabel(seg(0, 'a', 'F.', 100, 300))).toBe('<SEQ=100><ACK=300><CTL=FIN,ACK>');
    expect(segmentLabel({ ...seg(0, 'a', 'P.', 1, 1), len: 5 })).toBe('<SEQ=1><ACK=1><CTL=PSH,ACK><DATA=5>');
  });

  it('have no <ACK=…> without the ACK bit, and absolute numbers where the wire never saw the ISN', () => {
    expect(segmentLabel({ ...seg(0, 'a', 'SYN', 0, 0), relAck: undefined })).toBe('<SEQ=0><CTL=SYN>');
    expect(segmentLabel({ ...seg(0, 'a', 'ACK', 0, 0), relSeq: undefined, relAck: undefined, seq: 77, ack: 88 })).toBe('<SEQ=77><ACK=88><CTL=ACK>');
  });
});

describe('renderLadder', () => {
  const text = renderLadder(figure13);
  const lines = text.split('\n');
  const lineOf = (needle: string) => lines.findIndex((l) => l.includes(needle));

  it("draws A's states down the left and B's down the right, time going down", () => {
    expect(lineOf('FIN_WAIT1')).toBeLessThan(lineOf('FIN_WAIT2'));
    expect(lineOf('FIN_WAIT2')).toBeLessThan(lineOf('TIME_WAIT (sock_diag)'));
    expect(lineOf('CLOSE_WAIT')).toBeLessThan(lineOf('LAST_ACK'));
    const bColumn = lines[lineOf('TCP A  ') >= 0 ? lineOf('TCP A  ') : lineOf('time ms')]!.indexOf('TCP B');
    expect(lines[lineOf('CLOSE_WAIT')]!.indexOf('CLOSE_WAIT')).toBe(bColumn);
    expect(lines[lineOf('FIN_WAIT1')]!.indexOf('FIN_WAIT1')).toBeLessThan(bColumn);
    expect(lines[lineOf('(close: closeWrite())')]).toMatch(/^\s+1\.500 {2}\(close: closeWrite\(\)\)$/);
  });

  it('marks how each state was seen, and says segments are not shown and why', () => {
    expect(text).toContain('LAST_ACK (inferred)');
    expect(text).toContain('CLOSE_WAIT (fd)');
    expect(text).toContain(NO_SEGMENTS_NOTE);
    expect(text).toContain('note: a note');
    expect(text).toContain('TCP A: graceful, active close; still TIME_WAIT in sock_diag: timewait timer, 59.9 s left; no fd');
    expect(text).toContain('TCP B: graceful, passive close; the kernel has forgotten the connection');
    expect(text).not.toMatch(/\x1b\[/);
  });

  it('draws segments as arrows between the ends when the lab gives them', () => {
    const drawn = renderLadder(withSegments);
    expect(drawn).toContain('--> <SEQ=1><ACK=1><CTL=FIN,ACK> -->');
    expect(drawn).toContain('<-- <SEQ=1><ACK=2><CTL=ACK> <--');
    expect(drawn).toMatch(/--> <SEQ=2><ACK=2><CTL=ACK> --X\s+\[drop\]/);
    expect(drawn).not.toContain(NO_SEGMENTS_NOTE);
    expect(drawn).toContain("segments: the lab wire's log");
    expect(drawn).toContain('[drop] X: lost on the wire');
  });

  it('says which path the run took, on the line after the title', () => {
    expect(text.split('\n')[1]).toBe('path: loopback');
    expect(renderLadder(withSegments).split('\n')[1]).toBe('path: lab (two network namespaces, userspace wire)');
  });

  it('draws held segments as in figure 14: "..." where they wait, and from "..." when released', () => {
    const crossing: Diagram = {
      ...withSegments,
      segments: [seg(101.9, 'a', 'F.', 1, 1, 'hold'), seg(102, 'b', 'F.', 1, 1, 'hold'), seg(102.1, 'a', 'F.', 1, 1, 'release'), seg(102.2, 'b', 'F.', 1, 1, 'release')],
    };
    const drawn = renderLadder(crossing);
    expect(drawn).toMatch(/--> <SEQ=1><ACK=1><CTL=FIN,ACK> \.\.\.\s+\[hold\]/);
    expect(drawn).toMatch(/\.\.\. <SEQ=1><ACK=1><CTL=FIN,ACK> <--\s+\[hold\]/);
    expect(drawn).toMatch(/\.\.\. <SEQ=1><ACK=1><CTL=FIN,ACK> -->\s+\[release\]/);
    expect(drawn).toMatch(/<-- <SEQ=1><ACK=1><CTL=FIN,ACK> \.\.\.\s+\[release\]/);
    expect(drawn).toContain('[hold] ...: held on the wire');
    const svg = renderSvg(crossing);
    assertWellFormedXml(svg);
    expect(svg.match(/class="segment held"/g)).toHaveLength(4);
  });

  it('colours only with a colour style', () => {
    expect(renderLadder(figure13, ansi)).toMatch(/\x1b\[1mFIN_WAIT1\x1b\[22m/);
    expect(styleFor({ isTTY: true }, {})).toBe(ansi);
    expect(styleFor({ isTTY: true }, { NO_COLOR: '1' })).toBe(plain);
    expect(styleFor({ isTTY: false }, {})).toBe(plain);
    expect(styleFor({}, {})).toBe(plain);
  });
});

describe('renderSvg', () => {
  it.each([
    ['states only', figure13],
    ['with segments', withSegments],
  ])('is a well-formed SVG document (%s) holding the states', (_, diagram) => {
    const svg = renderSvg(diagram);
    assertWellFormedXml(svg);
    expect(svg).toMatch(/^<\?xml version="1\.0" encoding="UTF-8"\?>\n<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
    for (const state of ['ESTABLISHED', 'FIN_WAIT1', 'FIN_WAIT2', 'TIME_WAIT', 'CLOSE_WAIT', 'LAST_ACK', 'CLOSED']) expect(svg).toContain(state);
  });

  it('escapes the segment labels, and a real XML parser agrees it is well-formed', () => {
    const svg = renderSvg(withSegments);
    expect(svg).toContain('&lt;SEQ=1&gt;&lt;ACK=1&gt;&lt;CTL=FIN,ACK&gt;');
    expect(svg).toContain('marker-end="url(#arrow)"');
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-render-'));
    const file = path.join(dir, 'ladder.svg');
    fs.writeFileSync(file, svg);
    try {
      execFileSync('python3', ['-c', 'import sys, xml.dom.minidom; xml.dom.minidom.parse(sys.argv[1])', file], { stdio: 'pipe' });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error; // no python3: the check above stands
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('diagramJson', () => {
  it('has both histories with times from the start, outcome and role per end, and the notes', () => {
    const json = diagramJson(figure13) as any;
    expect(json.scenario).toBe('normal');
    expect(json.path).toBe('loopback');
    expect(json.ends.a).toMatchObject({ name: 'TCP A', outcome: 'graceful', role: 'active', finished: false, sockDiag: { state: 'TIME_WAIT', inode: 0 } });
    expect(json.ends.b).toMatchObject({ name: 'TCP B', outcome: 'graceful', role: 'passive', finished: true, sockDiag: null });
    expect(json.ends.a.history[0]).toEqual({ state: 'ESTABLISHED', at: 1, source: 'kernel' });
    expect(json.ends.b.history.map((e: HistoryEntry) => e.state)).toEqual(['ESTABLISHED', 'CLOSE_WAIT', 'LAST_ACK', 'CLOSE', 'CLOSED']);
    expect(json.segments).toBeNull();
    expect(json.shown).toEqual({ states: true, segments: false });
    expect(json.notes).toEqual(['a note', NO_SEGMENTS_NOTE]);
    const lab = diagramJson({ ...withSegments, segments: [{ ...seg(100.5, 'a', 'SYN', 0, 0), relAck: undefined }, ...withSegments.segments!] }) as any;
    expect(lab.path).toBe('lab');
    expect(lab.shown).toEqual({ states: true, segments: true });
    expect(lab.segments[0]).toEqual({ at: 0.5, from: 'a', flags: 'SYN', seq: 1000, ack: 5000, relSeq: 0, relAck: null, len: 0, verdict: 'pass' });
    expect(lab.segments[1]).toMatchObject({ at: 1.9, from: 'a', relSeq: 1 });
    expect(lab.notes).toEqual(['a note']);
  });
});

describe('finwait ss, analysed', () => {
  const entry = (state: SocketEntry['state'], local: number, remote: string, inode: number, timer: SocketEntry['timer']['kind'] = 'off'): SocketEntry => {
    const [address, port] = remote.split(':');
    const made = {
      family: 4 as const,
      local: { address: '10.0.0.2', port: local },
      remote: { address: address!, port: Number(port) },
      state,
      timer: { kind: timer, expiresMs: timer === 'off' ? 0 : 30_000, retransmits: 0 },
      recvQ: 0,
      sendQ: 0,
      inode,
      uid: 1000,
      cookie: (local * 65536 + inode).toString(16).padStart(16, '0'),
    };
    return made as SocketEntry;
  };
  const entries = [
    entry('ESTABLISHED', 5000, '10.0.0.9:443', 11),
    entry('TIME_WAIT', 5001, '10.0.0.1:443', 0, 'timewait'),
    entry('TIME_WAIT', 5002, '10.0.0.1:443', 0, 'timewait'),
    entry('TIME_WAIT', 5003, '10.0.0.1:443', 0, 'timewait'),
    entry('TIME_WAIT', 5004, '10.0.0.7:80', 0, 'timewait'),
    entry('CLOSE_WAIT', 8080, '10.0.0.3:6000', 12),
    entry('FIN_WAIT2', 8080, '10.0.0.4:6001', 13),
    entry('FIN_WAIT2', 8080, '10.0.0.5:6002', 0, 'timewait'),
  ];
  const owners = {
    byInode: new Map([[12, [{ pid: 42, command: 'node server.js' }]], [13, [{ pid: 42, command: 'node server.js' }]]]),
    scanned: 10,
    unreadable: 0,
  };
  const report = analyse(entries, owners, { timeWaitPile: 2 });

  it('counts per state and lists the close states first', () => {
    expect(report.counts).toEqual({ ESTABLISHED: 1, FIN_WAIT2: 2, TIME_WAIT: 4, CLOSE_WAIT: 1 });
    expect(report.sockets.map((s) => s.state)).toEqual(['CLOSE_WAIT', 'FIN_WAIT2', 'FIN_WAIT2', 'TIME_WAIT', 'TIME_WAIT', 'TIME_WAIT', 'TIME_WAIT', 'ESTABLISHED']);
  });

  it('flags CLOSE_WAIT with its process, FIN_WAIT2 held by an fd (no timer), and a TIME_WAIT pile per remote endpoint', () => {
    expect(report.flags.map((f) => f.kind)).toEqual(['close-wait', 'fin-wait2-no-timer', 'time-wait-pile']);
    expect(report.flags[0]!.message).toContain('held by pid 42 (node server.js)');
    expect(report.flags[2]!.message).toContain('3 sockets to 10.0.0.1:443 (over 2)');
    const orphan = report.sockets.find((s) => s.state === 'FIN_WAIT2' && s.inode === 0)!;
    expect(orphan.flags).toEqual([]); // an orphan's FIN_WAIT2 has a timer: it ends by itself
    expect(report.sockets.find((s) => s.remote.address === '10.0.0.7')!.flags).toEqual([]);
  });

  it('renders a table with the owner, the flags, and what /proc could not show', () => {
    const text = renderSs(report);
    expect(text).toMatch(/^! +CLOSE_WAIT +10\.0\.0\.2:8080 +10\.0\.0\.3:6000 +- +0 +0 +pid 42 \(node server\.js\)$/m);
    expect(text).toMatch(/TIME_WAIT .*timewait 30\.0 s .*- \(TIME_WAIT: no process\)/);
    expect(text).toContain('flags (3):');
    const unreadable = renderSs(analyse(entries, { ...owners, unreadable: 3 }));
    expect(unreadable).toContain("3 processes' fds are not readable by this user");
    expect(renderSs(analyse(entries, { byInode: new Map(), scanned: 0, unreadable: 0, error: '/proc not readable (EACCES)' }))).toContain(
      'processes: not shown: /proc not readable (EACCES)',
    );
    expect((ssJson(report) as any).sockets[0].process).toEqual({ pid: 42, command: 'node server.js' });
  });

  it('finds socket owners through <proc>/<pid>/fd links', () => {
    const proc = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-proc-'));
    try {
      fs.mkdirSync(path.join(proc, '77', 'fd'), { recursive: true });
      fs.writeFileSync(path.join(proc, '77', 'cmdline'), 'node\0server.js\0');
      fs.symlinkSync('socket:[4242]', path.join(proc, '77', 'fd', '3'));
      fs.symlinkSync('/dev/null', path.join(proc, '77', 'fd', '4'));
      fs.mkdirSync(path.join(proc, 'self'));
      const found = socketOwners(undefined, proc);
      expect(found.byInode.get(4242)).toEqual([{ pid: 77, command: 'node server.js' }]);
      expect(found.scanned).toBe(1);
      expect(socketOwners(new Set([1]), proc).byInode.size).toBe(0);
      expect(socketOwners(undefined, path.join(proc, 'missing')).error).toMatch(/not readable \(ENOENT\)/);
    } finally {
      fs.rmSync(proc, { recursive: true, force: true });
    }
  });
});
