/** Usage errors (exit 2, a message on stderr), --help, --version and spelling, from the built bin. */
import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { finwait } from './run';

const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string };

describe.concurrent('finwait usage', () => {
  it.each([
    [[], /a command is needed/, 'finwait --help'],
    [['frob'], /unknown command 'frob'/, 'finwait --help'],
    [['demo', 'bogus'], /unknown scenario 'bogus' \(scenarios: normal, three-way, simultaneous/, 'finwait demo --help'],
    [['demo', 'normal', 'reset'], /one scenario at a time/, 'finwait demo --help'],
    [['demo', '--frob'], /Unknown option '--frob'/, 'finwait demo --help'],
    [['demo', '--svg'], /argument missing/, 'finwait demo --help'],
    [['ss', '--state', 'nope'], /unknown state 'nope'/, 'finwait ss --help'],
    [['ss', '--state', ''], /--state needs state names/, 'finwait ss --help'],
    [['ss', '--state', 'listen,,time-wait'], /--state needs state names/, 'finwait ss --help'],
    [['ss', '--port', '70000'], /--port needs an integer 0-65535/, 'finwait ss --help'],
    [['ss', '--port', 'x'], /--port needs an integer/, 'finwait ss --help'],
    [['ss', 'extra'], /unexpected argument 'extra'/, 'finwait ss --help'],
    [['ss', '--watch'], /--watch needs a terminal: stdout is not a TTY/, 'finwait ss --help'],
    [['ss', '--watch', '--json'], /do not go together/, 'finwait ss --help'],
    [['--version', 'demo'], /--version takes no arguments, got 'demo'/, 'finwait --help'],
  ])('%j: usage message on stderr, exit 2', async (args, message, more) => {
    const { code, stdout, stderr } = await finwait(args as string[]);
    expect(code).toBe(2);
    expect(stdout).toBe('');
    expect(stderr).toMatch(message);
    expect(stderr).toMatch(/\nusage: finwait /);
    expect(stderr).toContain(`see '${more}'`);
  });

  it.each([
    [['--help'], /^finwait: see how TCP connections end/],
    [['-h'], /commands:\n {2}demo \[scenario\]/],
    [['help', 'ss'], /^finwait ss: /],
    [['demo', '--help'], /scenarios \(default: normal; any case, - or _\):\n {2}normal/],
    [['ss', '-h'], /--time-wait-pile N/],
  ])('%j prints help on stdout, exit 0', async (args, text) => {
    const { code, stdout, stderr } = await finwait(args);
    expect(code).toBe(0);
    expect(stderr).toBe('');
    expect(stdout).toMatch(text);
  });

  it('demo --help lists every scenario and says which need the lab', async () => {
    const { stdout } = await finwait(['demo', '--help']);
    for (const name of ['normal', 'three-way', 'half-close', 'reset', 'unread-data', 'fin-wait2-timeout', 'time-wait']) {
      expect(stdout).toMatch(new RegExp(`^  ${name} +\\S.*(?<!\\[needs the lab\\])$`, 'm'));
    }
    for (const name of ['simultaneous', 'lost-ack']) expect(stdout).toMatch(new RegExp(`^  ${name} .*\\[needs the lab\\]$`, 'm'));
  });

  it.each([['--version'], ['-V']])('%s prints the version from package.json, exit 0', async (flag) => {
    expect(pkg.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(await finwait([flag])).toEqual({ code: 0, stdout: `${pkg.version}\n`, stderr: '' });
  });

  it('--help mentions --version', async () => {
    expect((await finwait(['--help'])).stdout).toMatch(/^ {2}-V, --version +the version of finwait$/m);
  });

  it.each([['NORMAL'], ['Reset'], ['THREE_WAY'], ['fin_wait_2_timeout'], ['SIMULTANEOUS']])(
    'demo %s: scenario names in any case, _ for -, as state names; messages use the scenario\'s own name',
    async (name) => {
      const { code, stdout, stderr } = await finwait(['demo', name, '--loopback', '--json']);
      const canonical = name.toLowerCase().replace(/_/g, '-').replace('fin-wait-2', 'fin-wait2');
      if (canonical === 'simultaneous') {
        expect(code).toBe(3);
        expect(stderr).toMatch(/^finwait demo simultaneous: needs the lab: /);
        expect(JSON.parse(stdout)).toMatchObject({ scenario: 'simultaneous', shown: null });
      } else {
        expect(stderr).toBe('');
        expect(code).toBe(0);
        expect(JSON.parse(stdout)).toMatchObject({ scenario: canonical, path: 'loopback' });
      }
    },
  );

  it.each([
    ['a missing directory', (dir: string) => path.join(dir, 'missing', 'out.svg'), (dir: string) => `cannot write it: there is no directory ${path.join(dir, 'missing')} (ENOENT)`],
    ['a directory', (dir: string) => dir, () => 'cannot write it: it is a directory (EISDIR)'],
    ['a file as the directory', (dir: string) => path.join(dir, 'file', 'out.svg'), (dir: string) => `cannot write it: ${path.join(dir, 'file')} is not a directory (ENOTDIR)`],
  ])('--svg into %s: the error once, before the scenario runs, exit 1', async (_, target, why) => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-svg-'));
    try {
      fs.writeFileSync(path.join(dir, 'file'), '');
      const file = target(dir);
      const { code, stdout, stderr } = await finwait(['demo', 'reset', '--loopback', '--svg', file]);
      expect(stderr).toBe(`finwait: --svg ${file}: ${why(dir)}\n`);
      expect(code).toBe(1);
      expect(stdout).toBe(''); // the scenario did not run
      expect(fs.readdirSync(dir)).toEqual(['file']);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
