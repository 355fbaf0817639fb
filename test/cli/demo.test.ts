/** `finwait demo`, run as a user would: every loopback scenario on real sockets, JSON, SVG, lab-only exits. */
import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { assertWellFormedXml, finwait } from './run';

const NO_SEGMENTS = 'segments: not shown — needs the lab (root or a user namespace); states only';

/** The rows of TCP A's (left) and TCP B's (right) columns, as `STATE (source)`. */
function columns(stdout: string): { a: string[]; b: string[] } {
  const lines = stdout.split('\n');
  const header = lines.find((l) => l.includes('time ms'))!;
  const bAt = header.indexOf('TCP B');
  const a: string[] = [];
  const b: string[] = [];
  for (const line of lines.slice(lines.indexOf(header) + 1)) {
    if (line.trim() === '') break;
    const left = line.slice(12, bAt).trim();
    const right = line.slice(bAt).trim();
    if (/^[A-Z_0-9]+!? \(/.test(left)) a.push(left);
    if (/^[A-Z_0-9]+!? \(/.test(right)) b.push(right);
  }
  return { a, b };
}

const states = (cells: string[]) => cells.map((c) => c.split(' ')[0]);

describe.concurrent('finwait demo on loopback', () => {
  it('normal: figure 13, A through FIN_WAIT2 to TIME_WAIT, B through CLOSE_WAIT and LAST_ACK', async () => {
    const { code, stdout, stderr } = await finwait(['demo', 'normal']);
    expect(stderr).toBe('');
    expect(code).toBe(0);
    const { a, b } = columns(stdout);
    expect(states(a)).toEqual(expect.arrayContaining(['ESTABLISHED', 'FIN_WAIT1', 'FIN_WAIT2', 'TIME_WAIT']));
    expect(a.indexOf('FIN_WAIT2 (fd)')).toBeGreaterThan(-1); // seen, not inferred: closeWrite() waited for it
    expect(a).toContain('TIME_WAIT (sock_diag)');
    expect(states(b)).toEqual(expect.arrayContaining(['ESTABLISHED', 'CLOSE_WAIT', 'LAST_ACK', 'CLOSED']));
    expect(states(a).indexOf('FIN_WAIT2')).toBeLessThan(states(a).indexOf('TIME_WAIT'));
    expect(stdout).toMatch(/\(2MSL timer: (5\d|60)\.\d s left \(sock_diag\)\)/);
    expect(stdout).toContain('TCP B: graceful, passive close; the kernel has forgotten the connection');
    expect(stdout).toContain('TCP A: graceful, active close; still TIME_WAIT in sock_diag');
    expect(stdout).toContain(NO_SEGMENTS);
    expect(stdout).not.toMatch(/\x1b\[/); // stdout is not a TTY
  });

  it('with no scenario runs normal', async () => {
    const { code, stdout } = await finwait(['demo']);
    expect(code).toBe(0);
    expect(stdout).toMatch(/^finwait demo normal: /);
  });

  it('three-way: B closes on the FIN; the note says what the states show and no more', async () => {
    const { code, stdout } = await finwait(['demo', 'three-way']);
    expect(code).toBe(0);
    const { a, b } = columns(stdout);
    expect(states(a)).toEqual(expect.arrayContaining(['ESTABLISHED', 'FIN_WAIT1', 'TIME_WAIT']));
    expect(states(b)).toEqual(expect.arrayContaining(['CLOSE_WAIT', 'LAST_ACK', 'CLOSED']));
    if (a.includes('FIN_WAIT2 (fd)')) expect(stdout).toContain('A was seen in FIN_WAIT2');
    else expect(stdout).toMatch(/without being seen in FIN_WAIT2.*not proof/);
  });

  it('half-close: A reads all of B\'s data in FIN_WAIT2', async () => {
    const { code, stdout } = await finwait(['demo', 'half-close']);
    expect(code).toBe(0);
    expect(stdout).toContain('(read: first bytes, in FIN_WAIT2)');
    expect(stdout).toContain('(read 262144 bytes after its own FIN, then end-of-file)');
    expect(states(columns(stdout).b)).toEqual(expect.arrayContaining(['CLOSE_WAIT', 'LAST_ACK', 'CLOSED']));
  });

  it('reset: RST, ECONNRESET at B, no TIME_WAIT', async () => {
    const { code, stdout } = await finwait(['demo', 'reset']);
    expect(code).toBe(0);
    const { a, b } = columns(stdout);
    expect(states(a)).not.toContain('TIME_WAIT');
    expect(states(a).at(-1)).toBe('CLOSED');
    expect(states(b).at(-1)).toBe('CLOSED');
    expect(stdout).toContain("('error' ECONNRESET)");
    expect(stdout).toContain('TCP A: reset-sent');
    expect(stdout).toContain('TCP B: reset-received');
    expect(stdout).toContain('no TIME_WAIT on either side');
  });

  it('unread-data: the closer had unread bytes, so RST', async () => {
    const { code, stdout } = await finwait(['demo', 'unread-data']);
    expect(code).toBe(0);
    expect(stdout).toMatch(/\(close: destroy\(\) with \d+ bytes unread\)/);
    expect(stdout).toContain('TCP A: reset-sent');
    expect(stdout).toContain('TCP B: reset-received');
    expect(stdout).toContain('TCP A: server (accepted)');
  });

  it('fin-wait2-timeout: the orphan times out after TCP_LINGER2 = 1 s; B stays in CLOSE_WAIT', async () => {
    const { code, stdout } = await finwait(['demo', 'fin-wait2-timeout']);
    expect(code).toBe(0);
    const { a, b } = columns(stdout);
    expect(states(a)).toEqual(['ESTABLISHED', 'FIN_WAIT1', 'FIN_WAIT2', 'CLOSED']);
    expect(states(a)).not.toContain('TIME_WAIT');
    expect(stdout).toMatch(/\(orphan in sock_diag: FIN_WAIT2, timewait timer (1\.0|0\.\d) s, inode 0\)/);
    expect(stdout).toContain('TCP A: timed-out, active close');
    expect(states(b).at(-1)).toBe('CLOSE_WAIT');
    expect(stdout).toContain('TCP B: not closed, passive close; still CLOSE_WAIT in sock_diag: no timer; fd open');
    const closedAt = Number(stdout.split('\n').find((l) => l.includes('CLOSED (sock_diag)'))!.trim().split(/\s+/)[0]);
    expect(closedAt).toBeGreaterThanOrEqual(1000);
  });

  it('time-wait: the TIME_WAIT entry with its sock_diag timer', async () => {
    const { code, stdout } = await finwait(['demo', 'time-wait']);
    expect(code).toBe(0);
    expect(columns(stdout).a).toContain('TIME_WAIT (sock_diag)');
    expect(stdout).toMatch(/A is in TIME_WAIT with a timewait timer of (5\d|60)\.\d s \(sock_diag\); inode 0/);
  });

  it.each([
    ['simultaneous', /both FINs must cross on the wire/],
    ['lost-ack', /the last ACK must be lost/],
  ])('%s needs the lab: a clear message, exit code 3, no drawing', async (name, why) => {
    const { code, stdout, stderr } = await finwait(['demo', name]);
    expect(code).toBe(3);
    expect(stdout).toBe('');
    expect(stderr).toMatch(new RegExp(`^finwait demo ${name}: needs the lab: `));
    expect(stderr).toMatch(why);
    const json = await finwait(['demo', name, '--json']);
    expect(json.code).toBe(3);
    expect(JSON.parse(json.stdout)).toMatchObject({ scenario: name, needs: 'lab', shown: null });
  });

  it('--json: the scenario, both histories, outcome and role per end, and the notes', async () => {
    const { code, stdout } = await finwait(['demo', 'normal', '--json']);
    expect(code).toBe(0);
    const json = JSON.parse(stdout);
    expect(json.scenario).toBe('normal');
    expect(json.ends.a).toMatchObject({ name: 'TCP A', label: 'client', outcome: 'graceful', role: 'active', finished: false, sockDiag: { state: 'TIME_WAIT', inode: 0 } });
    expect(json.ends.b).toMatchObject({ name: 'TCP B', outcome: 'graceful', role: 'passive', finished: true, sockDiag: null });
    expect(json.ends.a.history.map((h: { state: string }) => h.state)).toEqual(expect.arrayContaining(['FIN_WAIT2', 'TIME_WAIT']));
    expect(json.ends.b.history.at(-1)).toMatchObject({ state: 'CLOSED', source: 'diag' });
    for (const h of [...json.ends.a.history, ...json.ends.b.history]) {
      expect(h.at).toBeGreaterThanOrEqual(0);
      expect(['kernel', 'diag', 'event', 'inferred']).toContain(h.source);
    }
    expect(json.segments).toBeNull();
    expect(json.notes).toContain(NO_SEGMENTS);
    expect(json.actions.map((a: { side: string }) => a.side)).toEqual(expect.arrayContaining(['a', 'b']));
  });

  it('--svg FILE: a well-formed SVG with the states', async () => {
    const file = path.join(os.tmpdir(), `finwait-demo-${process.pid}.svg`);
    try {
      const { code, stdout, stderr } = await finwait(['demo', 'reset', '--svg', file]);
      expect(code).toBe(0);
      expect(stdout).toContain('finwait demo reset');
      expect(stderr).toBe(`svg: written to ${file}\n`);
      const svg = fs.readFileSync(file, 'utf8');
      assertWellFormedXml(svg);
      for (const state of ['ESTABLISHED', 'CLOSED']) expect(svg).toContain(state);
      expect(svg).toContain('reset-sent');
    } finally {
      fs.rmSync(file, { force: true });
    }
  });

  it('npm start runs finwait demo', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8'));
    expect(pkg.scripts.start).toBe('node dist/cli/main.js demo');
    expect(pkg.bin).toEqual({ finwait: 'dist/cli/main.js' });
    expect(fs.readFileSync(path.join(__dirname, '..', '..', 'dist', 'cli', 'main.js'), 'utf8')).toMatch(/^#!\/usr\/bin\/env node\n/);
  });
});
