/**
 * Runs the built `finwait` bin as a user would (also inside a fresh network namespace), and a tiny
 * XML well-formedness check.
 */
import { execFile, spawnSync } from 'node:child_process';
import path from 'node:path';
import type { Availability } from '../helpers';

export const BIN = path.join(__dirname, '..', '..', 'dist', 'cli', 'main.js');

export interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** A command that runs node, e.g. `['unshare', '-n']`; it must exec node, so that a kill reaches it. */
  prefix?: readonly string[];
  /** Killed after this many ms, and the promise rejects saying so (default 20 s). */
  timeout?: number;
}

/**
 * `node dist/cli/main.js ...args`, without colour (stdout is a pipe anyway). Rejects if the process
 * had to be killed (it hung) or could not start.
 */
export function finwait(args: string[], env: NodeJS.ProcessEnv = {}, options: RunOptions = {}): Promise<Ran> {
  const { prefix = [], timeout = 20_000 } = options;
  const [file, ...rest] = [...prefix, process.execPath, BIN, ...args];
  return new Promise((resolve, reject) => {
    execFile(file!, rest, { timeout, maxBuffer: 256 * 1024 * 1024, env: { ...process.env, ...env } }, (error, stdout, stderr) => {
      if (error && typeof error.code !== 'number') {
        const why = error.killed ? `still running after ${timeout} ms, killed (${error.signal})` : error.message;
        return reject(new Error(`finwait ${args.join(' ')}: ${why}\nstdout: ${stdout}\nstderr: ${stderr}`, { cause: error }));
      }
      resolve({ code: error ? (error.code as number) : 0, stdout, stderr });
    });
  });
}

let netns: (Availability & { prefix?: string[] }) | undefined;

/**
 * How to run a command in a fresh network namespace, where only `lo` exists and it is down:
 * `unshare -n` (root, or uid 0 of a user namespace with its capabilities), else `unshare -rn` (an
 * unprivileged user, where user namespaces are allowed); or why neither works. Asked once.
 */
export function freshNetns(): Availability & { prefix?: string[] } {
  if (netns) return netns;
  const failures: string[] = [];
  for (const prefix of [['unshare', '-n'], ['unshare', '-rn']]) {
    const probe = spawnSync(prefix[0]!, [...prefix.slice(1), 'true'], { encoding: 'utf8' });
    if (probe.status === 0) return (netns = { ok: true, prefix });
    failures.push(`${prefix.join(' ')}: ${probe.error?.message ?? probe.stderr.trim()}`);
  }
  return (netns = { ok: false, reason: `no network namespace can be made here (${failures.join('; ')})` });
}

/**
 * Throws unless `xml` is well-formed: one root element, every tag closed in order, attributes
 * quoted, no stray `<` or `&` in text. Enough to catch broken escaping and nesting.
 */
export function assertWellFormedXml(xml: string): void {
  let rest = xml.replace(/^<\?xml[^?]*\?>\s*/, '');
  const stack: string[] = [];
  let roots = 0;
  const entity = /^&(amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);/;
  const checkText = (text: string): void => {
    if (text.includes('<') || text.includes('>')) throw new Error(`stray angle bracket in ${JSON.stringify(text.slice(0, 60))}`);
    for (let i = text.indexOf('&'); i >= 0; i = text.indexOf('&', i + 1)) {
      if (!entity.test(text.slice(i))) throw new Error(`bad entity at ${JSON.stringify(text.slice(i, i + 20))}`);
    }
  };
  while (rest.length > 0) {
    const lt = rest.indexOf('<');
    if (lt < 0) {
      if (rest.trim()) {
        if (stack.length === 0) throw new Error('text after the root element');
        checkText(rest);
      }
      break;
    }
    const text = rest.slice(0, lt);
    if (text.trim() && stack.length === 0) throw new Error(`text outside the root: ${JSON.stringify(text.slice(0, 40))}`);
    checkText(text);
    rest = rest.slice(lt);
    const tag = /^<(\/?)([A-Za-z_][\w:.-]*)((?:\s+[\w:.-]+\s*=\s*(?:"[^"<]*"|'[^'<]*'))*)\s*(\/?)>/.exec(rest);
    if (!tag) throw new Error(`malformed tag at ${JSON.stringify(rest.slice(0, 60))}`);
    const [whole, closing, name, attrs, selfClosing] = tag;
    for (const [, , value] of attrs!.matchAll(/\s+[\w:.-]+\s*=\s*("([^"]*)"|'([^']*)')/g)) checkText(value ?? '');
    if (closing) {
      const open = stack.pop();
      if (open !== name) throw new Error(`</${name}> closes <${open}>`);
    } else if (!selfClosing) {
      if (stack.length === 0) roots++;
      stack.push(name!);
    } else if (stack.length === 0) roots++;
    rest = rest.slice(whole.length);
  }
  if (stack.length > 0) throw new Error(`unclosed <${stack.join('>, <')}>`);
  if (roots !== 1) throw new Error(`${roots} root elements`);
}
