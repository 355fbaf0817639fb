/**
 * A platform without a back-end: the addon built from addon/unsupported.cc (what binding.gyp
 * picks off Linux), loaded through FINWAIT_NATIVE, makes every public call throw ENOTSUP.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const root = path.join(__dirname, '..');
let dir: string | undefined;
let addon: string;

/**
 * Node's C headers (node_api.h, uv.h): the running Node's own where its prefix has them, else
 * a system Node's. N-API is versioned by NAPI_VERSION, so any Node 20+ headers build the same stub.
 */
function nodeHeaders(): string | undefined {
  const candidates = [
    path.join(path.dirname(fs.realpathSync(process.execPath)), '..', 'include', 'node'),
    '/usr/include/node',
    '/usr/local/include/node',
  ];
  return candidates.find((c) => fs.existsSync(path.join(c, 'node_api.h')) && fs.existsSync(path.join(c, 'uv.h')));
}

const headers = nodeHeaders();
const gate = headers ? undefined : `no Node C headers found (looked beside ${process.execPath} and in /usr/include/node)`;
if (gate && process.env.CI === 'true') throw new Error(`test/unsupported.test.ts cannot run under CI=true: ${gate}`);

beforeAll(() => {
  if (!headers) return;
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'finwait-unsupported-'));
  addon = path.join(dir, 'finwait.node');
  const napiInclude = require('node-addon-api').include_dir as string;
  execFileSync('g++', [
    '-std=c++17', '-shared', '-fPIC', '-o', addon,
    '-DNAPI_VERSION=8', '-DNODE_ADDON_API_DISABLE_DEPRECATED', '-DNAPI_CPP_EXCEPTIONS',
    `-I${headers}`, `-I${path.join(root, napiInclude)}`,
    ...['unsupported.cc', 'binding.cc', 'errors.cc'].map((f) => path.join(root, 'addon', f)),
  ]);
}, 60_000);

afterAll(() => {
  if (dir) fs.rmSync(dir, { recursive: true, force: true });
});

describe('a platform with no back-end', () => {
  it.skipIf(gate !== undefined)(`throws ENOTSUP from every call, never a wrong answer or another error${gate ? ` (skipped: ${gate})` : ''}`, () => {
    const script = `
      const net = require('node:net');
      const f = require(${JSON.stringify(path.join(root, 'dist', 'index.js'))});
      const server = net.createServer().listen(0, '127.0.0.1', () => {
        const c = net.connect(server.address().port, '127.0.0.1', async () => {
          const calls = {
            tcpInfo: () => f.tcpInfo(c), tcpState: () => f.tcpState(c), tcpStates: () => f.tcpStates([c]),
            queues: () => f.queues(c), shutdown: () => f.shutdown(c, 'write'), getLinger: () => f.getLinger(c),
            setLinger: () => f.setLinger(c, 0), reset: () => f.reset(c), getUserTimeout: () => f.getUserTimeout(c),
            setUserTimeout: () => f.setUserTimeout(c, 5), getLinger2: () => f.getLinger2(c), setLinger2: () => f.setLinger2(c, 1),
            getKeepAlive: () => f.getKeepAlive(c), setKeepAlive: () => f.setKeepAlive(c, true), getKeepIdle: () => f.getKeepIdle(c),
            setKeepIdle: () => f.setKeepIdle(c, 5), getKeepIntvl: () => f.getKeepIntvl(c), setKeepIntvl: () => f.setKeepIntvl(c, 5),
            getKeepCnt: () => f.getKeepCnt(c), setKeepCnt: () => f.setKeepCnt(c, 5), sockets: () => f.sockets(),
            findSocket: () => f.findSocket({ local: { address: '127.0.0.1', port: 1 }, remote: { address: '127.0.0.1', port: 2 } }),
            watch: () => f.watch(c), closeWrite: () => f.closeWrite(c),
          };
          const codes = {};
          for (const [name, call] of Object.entries(calls)) {
            try { await call(); codes[name] = 'no error'; } catch (e) { codes[name] = e.code; }
          }
          console.log(JSON.stringify(codes));
          // The stub loaded and said it has no back-end (not: a binary that failed to load).
          try { f.tcpState(c); } catch (e) { console.log(JSON.stringify(e.message)); }
          // Nothing was sent: the connection is still open both ways.
          server.once('connection', () => {});
          console.log(c.writableEnded ? 'ended' : 'open');
          c.destroy(); server.close();
        });
      });`;
    const out = execFileSync(process.execPath, ['-e', script], { env: { ...process.env, FINWAIT_NATIVE: addon }, encoding: 'utf8' });
    const codes = JSON.parse(out.split('\n')[0]!) as Record<string, string>;
    expect(Object.keys(codes)).toHaveLength(24);
    for (const [name, code] of Object.entries(codes)) expect(`${name}: ${code}`).toBe(`${name}: ENOTSUP`);
    expect(JSON.parse(out.split('\n')[1]!)).toMatch(/finwait has no back-end for linux yet$/);
    expect(out.split('\n')[2]).toBe('open'); // closeWrite refused before calling end()
  });
});
