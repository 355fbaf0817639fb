/**
 * What the CLI echoes back reaches the terminal with its control characters escaped: a scenario,
 * state or port given on the command line, and an --svg file name, in usage errors, failures and
 * the "written to" line (`finwait ss` on other processes' strings: ss-hostile-process.test.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { finwait } from '../cli/run';

/** Any character a terminal would act on or hide: C0 but newline, DEL, C1, bidi controls, zero-width characters. */
const RAW_CONTROL = /[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]/;

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-escapes-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('the CLI escapes what it echoes', () => {
  it.each([
    [['demo', '\x1b]0;pwned\x07'], String.raw`unknown scenario '\x1b]0;pwned\x07'`],
    [['ss', '--port', '\u009b2J'], String.raw`--port needs an integer 0-65535, got '\x9b2J'`],
    [['ss', '--state', '\x1b[2J\u202e'], String.raw`unknown state '\x1b[2J\u202e'`],
    [['frob\x1b]52;c;cHduZWQ=\x07'], String.raw`unknown command 'frob\x1b]52;c;cHduZWQ=\x07'`],
  ])('usage error %j: the message escaped, exit 2', async (args, shown) => {
    const { code, stdout, stderr } = await finwait(args);
    expect(code).toBe(2);
    expect(stdout).toBe('');
    expect(stderr).not.toMatch(RAW_CONTROL);
    expect(stderr.split('\n')[0]!.startsWith(`finwait: ${shown}`)).toBe(true);
  });

  it.each([[['--help']], [['ss', '--help']], [['demo', '--help']]])('%j: the help has no control character', async (args) => {
    const { code, stdout } = await finwait(args);
    expect(code).toBe(0);
    expect(stdout).not.toMatch(RAW_CONTROL);
    if (args[0] === 'ss') expect(stdout).toContain(String.raw`escaped (ESC as \x1b)`);
  });

  it('an --svg file that cannot be written: its name escaped in the error, exit 1', async () => {
    const file = path.join(dir, 'missing', '\x1b]0;x\x07.svg');
    const { code, stdout, stderr } = await finwait(['demo', 'normal', '--loopback', '--svg', file]);
    expect(code).toBe(1);
    expect(stdout).toBe('');
    expect(stderr).not.toMatch(RAW_CONTROL);
    expect(stderr).toContain(String.raw`${path.join(dir, 'missing')}/\x1b]0;x\x07.svg: cannot write it: there is no directory`);
  });

  it("an --svg file written: its name escaped in 'svg: written to'", async () => {
    const file = path.join(dir, '\x1b[31mred\u009b0m.svg');
    const { code, stderr } = await finwait(['demo', 'reset', '--loopback', '--svg', file]);
    expect(code).toBe(0);
    expect(fs.existsSync(file)).toBe(true);
    expect(stderr).toBe(String.raw`svg: written to ${dir}/\x1b[31mred\x9b0m.svg` + '\n');
  });
});

describe('visible() and jsonText()', () => {
  it('writes every control, format and separator character as an escape, and leaves printable text of any script alone', async () => {
    const { visible, visibleLines, jsonText } = await import('../../src/cli/escape');
    expect(visible('a\x1b[2Jb\x07\x00\x7f\u0085\u009b\u00ad\u200b\u200d\u202e\u2066\u2028\ufeff\u{e0041}\t\n')).toBe(
      String.raw`a\x1b[2Jb\x07\x00\x7f\x85\x9b\xad\u200b\u200d\u202e\u2066\u2028\ufeff\u{e0041}\x09\x0a`,
    );
    expect(visible('café 日本語 ünïcode — ok')).toBe('café 日本語 ünïcode — ok');
    expect(visibleLines('one\x1b[2J\ntwo\r')).toBe(String.raw`one\x1b[2J` + '\n' + String.raw`two\x0d`);
    const value = { s: 'a\x1b\u009b\u202e\u{e0041}\x7f"\\' };
    const json = jsonText(value);
    expect(json).not.toMatch(/[\x00-\x09\x0b-\x1f\x7f-\x9f\u202e]|\u{e0041}/u);
    expect(JSON.parse(json)).toEqual(value);
  });
});
