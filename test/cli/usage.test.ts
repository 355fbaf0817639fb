/** Usage errors (exit 2, a message on stderr) and --help, from the built bin. */
import { describe, expect, it } from 'vitest';
import { finwait } from './run';

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
    [['demo', '--help'], /scenarios \(default: normal\):\n {2}normal/],
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
});
