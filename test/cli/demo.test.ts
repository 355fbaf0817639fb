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
import { CAP_NET_ADMIN, CAP_SYS_ADMIN, canBecome, hasCapability, type Availability } from '../helpers';
import { assertWellFormedXml, BIN, finwait } from './run';

const NOBODY = 65534;

/** Sets modes so that every user can read `dir` and everything in it (a mkdtemp directory is 0700). */
function readableByAll(dir: string): void {
  fs.chmodSync(dir, 0o755);
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const file = path.join(dir, entry.name);
    if (entry.isDirectory()) readableByAll(file);
    else fs.chmodSync(file, fs.statSync(file).mode & 0o111 ? 0o755 : 0o644);
  }
}

/** The first directory above `dir` that other users cannot pass through (no o+x), or `undefined`. */
function closedAncestor(dir: string): string | undefined {
  for (let up = path.dirname(dir); ; up = path.dirname(up)) {
    const stat = fs.statSync(up);
    if (!(stat.mode & 0o001) && stat.uid !== NOBODY) return up;
    if (up === path.dirname(up)) return undefined;
  }
}

/**
 * What the bin needs to run, as an installed package has it: package.json, dist/, the addon's
 * binary and node-gyp-build, copied into a new mkdtemp directory that every user can read. The
 * checkout itself may be private (a clone in a mode-0700 directory under /root). The caller
 * removes it.
 */
function copyForAnyUser(): { dir: string; bin: string; env: NodeJS.ProcessEnv } {
  const root = path.join(path.dirname(BIN), '..', '..');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-nobody-'));
  try {
    fs.cpSync(path.join(root, 'package.json'), path.join(dir, 'package.json'));
    fs.cpSync(path.join(root, 'dist'), path.join(dir, 'dist'), { recursive: true });
    for (const build of ['Release', 'Debug']) {
      const from = path.join(root, 'build', build);
      if (!fs.existsSync(from)) continue;
      for (const name of fs.readdirSync(from).filter((n) => n.endsWith('.node'))) {
        fs.cpSync(path.join(from, name), path.join(dir, 'build', build, name));
      }
    }
    if (fs.existsSync(path.join(root, 'prebuilds'))) fs.cpSync(path.join(root, 'prebuilds'), path.join(dir, 'prebuilds'), { recursive: true });
    const gypBuild = path.dirname(require.resolve('node-gyp-build/package.json', { paths: [root] }));
    fs.cpSync(gypBuild, path.join(dir, 'node_modules', 'node-gyp-build'), { recursive: true });
    const env: NodeJS.ProcessEnv = { ...process.env, HOME: dir };
    if (process.env.FINWAIT_NATIVE) {
      // A custom build chosen for this run: the copy uses it too.
      env.FINWAIT_NATIVE = path.join(dir, 'override.node');
      fs.cpSync(path.resolve(process.env.FINWAIT_NATIVE), env.FINWAIT_NATIVE);
    }
    readableByAll(dir);
    return { dir, bin: path.join(dir, 'dist', 'cli', 'main.js'), env };
  } catch (error) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw error;
  }
}

/**
 * How this test runs the bin without the lab's privileges (CAP_NET_ADMIN, CAP_SYS_ADMIN): as it is
 * when this process lacks them; as nobody when it can become nobody (root); with every capability
 * dropped when it cannot (uid 0 of a user namespace made by `unshare -r` maps only itself, so
 * setresuid(65534) fails there); or why not.
 */
function unprivileged(): Availability & { how?: 'as-is' | 'nobody' | 'no-capabilities' } {
  if (process.platform !== 'linux') return { ok: false, reason: `Linux only (this is ${process.platform})` };
  if (!hasCapability(CAP_NET_ADMIN) && !hasCapability(CAP_SYS_ADMIN)) return { ok: true, how: 'as-is' };
  const nobody = canBecome(NOBODY);
  if (nobody.ok) return { ok: true, how: 'nobody' };
  try {
    execFileSync('setpriv', ['--bounding-set=-all', '--inh-caps=-all', 'true'], { stdio: 'pipe' });
    return { ok: true, how: 'no-capabilities' };
  } catch (error) {
    return { ok: false, reason: `cannot become nobody (${nobody.reason}) nor drop capabilities with setpriv (${(error as Error).message})` };
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
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-demo-svg-'));
    const file = path.join(dir, 'reset.svg');
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
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  // As a user without CAP_NET_ADMIN would run it: no lab, so loopback without being asked, and the
  // lab-only scenarios say why they cannot run. As nobody (uid 65534) from a copy every user can
  // read when this process can become nobody; see unprivileged() for the other ways.
  it("without the lab's privileges: loopback by itself; lab-only scenarios exit 3 and say what is missing", (ctx) => {
    // A skip is a failure under CI=true, as for every test that needs something of the machine.
    const skip = (why: string): void => {
      if (process.env.CI === 'true') throw new Error(`cannot run under CI=true: ${why}`);
      ctx.skip(why);
    };
    const way = unprivileged();
    if (!way.ok) return skip(`cannot run without privileges here: ${way.reason}`);
    let copy: ReturnType<typeof copyForAnyUser> | undefined;
    try {
      let run: (scenario: string) => string[];
      let env: NodeJS.ProcessEnv = process.env;
      if (way.how === 'nobody') {
        copy = copyForAnyUser();
        const closed = closedAncestor(copy.dir);
        if (closed) return skip(`uid ${NOBODY} cannot reach ${copy.dir}: ${closed} is closed to other users (set TMPDIR to a directory they can pass through)`);
        env = copy.env;
        const bin = copy.bin;
        run = (scenario) => ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', process.execPath, bin, 'demo', scenario];
      } else if (way.how === 'no-capabilities') {
        run = (scenario) => ['setpriv', '--bounding-set=-all', '--inh-caps=-all', process.execPath, BIN, 'demo', scenario];
      } else {
        run = (scenario) => [process.execPath, BIN, 'demo', scenario];
      }
      const cwd = copy?.dir;
      const exec = (scenario: string): string => {
        const [file, ...args] = run(scenario);
        return execFileSync(file!, args, { encoding: 'utf8', stdio: 'pipe', env, cwd, timeout: 20_000 });
      };
      const normal = exec('normal');
      expect(normal.split('\n')[1]).toBe('path: loopback');
      expect(normal).toContain(NO_SEGMENTS);
      let failed: { status: number; stderr: string } | undefined;
      try {
        exec('simultaneous');
      } catch (error) {
        failed = error as { status: number; stderr: string };
      }
      expect(failed?.status).toBe(3);
      expect(failed?.stderr).toMatch(/is not available here: it needs CAP_NET_ADMIN and CAP_SYS_ADMIN/);
    } finally {
      if (copy) fs.rmSync(copy.dir, { recursive: true, force: true });
    }
  });

  it('npm start runs finwait demo', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8'));
    expect(pkg.scripts.start).toBe('node dist/cli/main.js demo');
    expect(pkg.bin).toEqual({ finwait: 'dist/cli/main.js' });
    expect(fs.readFileSync(path.join(__dirname, '..', '..', 'dist', 'cli', 'main.js'), 'utf8')).toMatch(/^#!\/usr\/bin\/env node\n/);
  });
});
