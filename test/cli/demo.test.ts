/**
 * `finwait demo --loopback`, run as a user would: every loopback scenario on real sockets, JSON, SVG,
 * lab-only exits; and without the lab's privileges, loopback by itself. The lab runs are in
 * `demo-lab.test.ts`.
 */
import { describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { assertWellFormedXml, BIN, finwait } from './run';

function hasSetpriv(): boolean {
  try {
    execFileSync('setpriv', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

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
    const { code, stdout, stderr } = await finwait(['demo', 'normal', '--loopback']);
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
    expect(stdout.split('\n')[1]).toBe('path: loopback');
    expect(stdout).not.toContain('<SEQ=');
    expect(stdout).not.toMatch(/\x1b\[/); // stdout is not a TTY
  });

  it('with no scenario runs normal', async () => {
    const { code, stdout } = await finwait(['demo', '--loopback']);
    expect(code).toBe(0);
    expect(stdout).toMatch(/^finwait demo normal: /);
  });

  it('three-way: B closes on the FIN; the note says what the states show and no more', async () => {
    const { code, stdout } = await finwait(['demo', 'three-way', '--loopback']);
    expect(code).toBe(0);
    const { a, b } = columns(stdout);
    expect(states(a)).toEqual(expect.arrayContaining(['ESTABLISHED', 'FIN_WAIT1', 'TIME_WAIT']));
    expect(states(b)).toEqual(expect.arrayContaining(['CLOSE_WAIT', 'LAST_ACK', 'CLOSED']));
    if (a.includes('FIN_WAIT2 (fd)')) expect(stdout).toContain('A was seen in FIN_WAIT2');
    else expect(stdout).toMatch(/without being seen in FIN_WAIT2.*not proof/);
  });

  it('half-close: A reads all of B\'s data in FIN_WAIT2', async () => {
    const { code, stdout } = await finwait(['demo', 'half-close', '--loopback']);
    expect(code).toBe(0);
    expect(stdout).toContain('(read: first bytes, in FIN_WAIT2)');
    expect(stdout).toContain('(read 262144 bytes after its own FIN, then end-of-file)');
    expect(states(columns(stdout).b)).toEqual(expect.arrayContaining(['CLOSE_WAIT', 'LAST_ACK', 'CLOSED']));
  });

  it('reset: RST, ECONNRESET at B, no TIME_WAIT', async () => {
    const { code, stdout } = await finwait(['demo', 'reset', '--loopback']);
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
    const { code, stdout } = await finwait(['demo', 'unread-data', '--loopback']);
    expect(code).toBe(0);
    expect(stdout).toMatch(/\(close: destroy\(\) with \d+ bytes unread\)/);
    expect(stdout).toContain('TCP A: reset-sent');
    expect(stdout).toContain('TCP B: reset-received');
    expect(stdout).toContain('TCP A: server (accepted)');
  });

  it('fin-wait2-timeout: the orphan times out after TCP_LINGER2 = 1 s; B stays in CLOSE_WAIT', async () => {
    const { code, stdout } = await finwait(['demo', 'fin-wait2-timeout', '--loopback']);
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
    const { code, stdout } = await finwait(['demo', 'time-wait', '--loopback']);
    expect(code).toBe(0);
    expect(columns(stdout).a).toContain('TIME_WAIT (sock_diag)');
    expect(stdout).toMatch(/A is in TIME_WAIT with a timewait timer of (5\d|60)\.\d s \(sock_diag\); inode 0/);
  });

  it.each([
    ['simultaneous', /both FINs must cross on the wire/],
    ['lost-ack', /the last ACK must be lost/],
  ])('%s with --loopback: needs the lab, a clear message, exit code 3, no drawing', async (name, why) => {
    const { code, stdout, stderr } = await finwait(['demo', name, '--loopback']);
    expect(code).toBe(3);
    expect(stdout).toBe('');
    expect(stderr).toMatch(new RegExp(`^finwait demo ${name}: needs the lab: `));
    expect(stderr).toMatch(why);
    expect(stderr).toContain('was not used: --loopback was given');
    const json = await finwait(['demo', name, '--json', '--loopback']);
    expect(json.code).toBe(3);
    expect(JSON.parse(json.stdout)).toMatchObject({ scenario: name, needs: 'lab', shown: null, unavailable: '--loopback was given' });
  });

  it('--json: the scenario, both histories, outcome and role per end, and the notes', async () => {
    const { code, stdout } = await finwait(['demo', 'normal', '--json', '--loopback']);
    expect(code).toBe(0);
    const json = JSON.parse(stdout);
    expect(json.scenario).toBe('normal');
    expect(json.path).toBe('loopback');
    expect(json.shown).toEqual({ states: true, segments: false });
    expect(json.ends.a).toMatchObject({ name: 'TCP A', label: 'client', outcome: 'graceful', role: 'active', finished: false, sockDiag: { state: 'TIME_WAIT', inode: 0 } });
    expect(json.ends.b).toMatchObject({ name: 'TCP B', outcome: 'graceful', role: 'passive', finished: true, sockDiag: null });
    expect(json.ends.a.history.map((h: { state: string }) => h.state)).toEqual(expect.arrayContaining(['FIN_WAIT2', 'TIME_WAIT']));
    // B's fd read CLOSE after LAST_ACK (CLOSED inferred at once), or Node closed it first and
    // sock_diag no longer had the 4-tuple.
    const [beforeLast, last] = json.ends.b.history.slice(-2);
    expect(last).toMatchObject({ state: 'CLOSED', source: beforeLast.state === 'CLOSE' ? 'inferred' : 'diag' });
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
      const { code, stdout, stderr } = await finwait(['demo', 'reset', '--svg', file, '--loopback']);
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

  // As a user without CAP_NET_ADMIN would run it: no lab, so loopback without being asked, and the
  // lab-only scenarios say why they cannot run. Needs root to drop to nobody.
  const asNobody = process.getuid?.() === 0 && hasSetpriv();
  it.skipIf(!asNobody)('without the lab\'s privileges: loopback by itself; lab-only scenarios exit 3 and say what is missing', async () => {
    const nobody = ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, BIN, 'demo'];
    const normal = execFileSync('setpriv', [...nobody, 'normal'], { encoding: 'utf8', env: { ...process.env, HOME: os.tmpdir() } });
    expect(normal.split('\n')[1]).toBe('path: loopback');
    expect(normal).toContain(NO_SEGMENTS);
    let failed: { status: number; stderr: string } | undefined;
    try {
      execFileSync('setpriv', [...nobody, 'simultaneous'], { encoding: 'utf8', stdio: 'pipe' });
    } catch (error) {
      failed = error as { status: number; stderr: string };
    }
    expect(failed?.status).toBe(3);
    expect(failed?.stderr).toMatch(/is not available here: it needs CAP_NET_ADMIN and CAP_SYS_ADMIN/);
  });

  it('npm start runs finwait demo', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8'));
    expect(pkg.scripts.start).toBe('node dist/cli/main.js demo');
    expect(pkg.bin).toEqual({ finwait: 'dist/cli/main.js' });
    expect(fs.readFileSync(path.join(__dirname, '..', '..', 'dist', 'cli', 'main.js'), 'utf8')).toMatch(/^#!\/usr\/bin\/env node\n/);
  });
});
