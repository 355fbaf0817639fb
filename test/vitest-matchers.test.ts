/** The `finwait/vitest` matchers, on real sockets: passing, failing with readable messages, negated. */
import { describe, expect, it } from 'vitest';
import { once } from 'node:events';
import { matchers } from '../src/vitest';
import { watch } from '../src/index';
import { pair } from './helpers';

expect.extend(matchers);

/** The message of the assertion error `fn` throws. */
function failure(fn: () => void): string {
  try {
    fn();
  } catch (error) {
    return (error as Error).message;
  }
  throw new Error('the assertion passed');
}

describe('toBeInTcpState', () => {
  it('passes on the state the kernel shows, fails saying what it shows instead', async () => {
    const p = await pair({ server: { allowHalfOpen: true } });
    try {
      expect(p.client).toBeInTcpState('ESTABLISHED');
      expect(p.client).toBeInTcpState(['FIN_WAIT2', 'ESTABLISHED']);
      expect(p.client).not.toBeInTcpState('CLOSE_WAIT');
      const message = failure(() => expect(p.client).toBeInTcpState('FIN_WAIT2'));
      expect(message).toMatch(/expected socket 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:\d+ to be in FIN_WAIT2, but the kernel shows ESTABLISHED/);
      expect(failure(() => expect(p.client).not.toBeInTcpState('ESTABLISHED'))).toMatch(/not to be in ESTABLISHED/);
      p.client.end();
      await once(p.server.resume(), 'end');
      expect(p.server).toBeInTcpState('CLOSE_WAIT');
    } finally {
      await p.close();
    }
  });

  it('fails on what is not a socket or fd, and on a misspelt state, also under .not', async () => {
    const code = (fn: () => void): string | undefined => {
      try {
        fn();
      } catch (error) {
        return (error as { code?: string }).code;
      }
      return undefined;
    };
    expect(code(() => expect(-1).toBeInTcpState('ESTABLISHED'))).toBe('ERR_OUT_OF_RANGE');
    expect(code(() => expect('x').not.toBeInTcpState('ESTABLISHED'))).toBe('ERR_INVALID_ARG_TYPE');
    const p = await pair();
    try {
      expect(code(() => expect(p.client).not.toBeInTcpState('ESTABLSHED' as never))).toBe('ERR_OUT_OF_RANGE');
      expect(code(() => expect(p.client).not.toBeInTcpState([]))).toBe('ERR_OUT_OF_RANGE');
      const lc = watch(p.client);
      expect(code(() => expect(lc).not.toHaveSeenStates('ESTABLISHED' as never))).toBe('ERR_INVALID_ARG_TYPE');
      expect(code(() => expect(lc).not.toHaveSeenStates(['TIME-WAIT' as never]))).toBe('ERR_OUT_OF_RANGE');
      // A socket Node closed is in no state: a failure that says so, and .not passes.
      p.client.destroy();
      expect(failure(() => expect(p.client).toBeInTcpState('ESTABLISHED'))).toMatch(/could not be read: .*ERR_SOCKET_CLOSED/);
      expect(p.client).not.toBeInTcpState('ESTABLISHED');
    } finally {
      await p.close();
    }
  });
});

describe('toHaveSeenStates', () => {
  it('checks the order of a watched connection, and shows the history when it fails', async () => {
    const p = await pair({ server: { allowHalfOpen: true } });
    try {
      const lc = watch(p.client);
      p.client.end();
      await lc.until('FIN_WAIT2');
      expect(lc).toHaveSeenStates(['ESTABLISHED', 'FIN_WAIT2']);
      expect(lc).toBeInTcpState('FIN_WAIT2');
      expect(lc).not.toHaveSeenStates(['CLOSE_WAIT']);
      const message = failure(() => expect(lc).toHaveSeenStates(['FIN_WAIT2', 'ESTABLISHED']));
      expect(message).toMatch(/ESTABLISHED was not seen after FIN_WAIT2:\nESTABLISHED \((kernel|event)\) -> FIN_WAIT1 \(\w+\) -> FIN_WAIT2 \(kernel\)/);
      // The socket a watcher follows stands for its Lifecycle, even once Node closed it.
      expect(p.client).toHaveSeenStates(['ESTABLISHED', 'FIN_WAIT2']);
      p.client.destroy();
      await once(p.client, 'close');
      expect(p.client).toHaveSeenStates(['ESTABLISHED', 'FIN_WAIT2']);
      expect(p.client).not.toHaveSeenStates(['CLOSE_WAIT']);
    } finally {
      await p.close();
    }
  });

  it('refuses a socket never watched, saying to watch it before the close, also under .not', async () => {
    const thrown = (fn: () => void): { code?: string; message: string } => {
      try {
        fn();
      } catch (error) {
        return error as { code?: string; message: string };
      }
      throw new Error('the assertion passed');
    };
    const p = await pair();
    try {
      const open = thrown(() => expect(p.server).not.toHaveSeenStates(['ESTABLISHED']));
      expect(open.code).toBe('ERR_INVALID_ARG_TYPE');
      expect(open.message).toMatch(/watch\(socket\) made while the socket was open .*was never watched, so it has no history/);
      p.server.destroy();
      await once(p.server, 'close');
      // What the issue met: `expect(watch(socket))` on a closed socket throws in watch() itself.
      expect(() => watch(p.server)).toThrow(/Socket is closed/);
      const closed = thrown(() => expect(p.server).toHaveSeenStates(['ESTABLISHED']));
      expect(closed.code).toBe('ERR_INVALID_ARG_TYPE');
      expect(closed.message).toMatch(/it is closed now, so watch\(\) can no longer start on it/);
      expect(thrown(() => expect('x').not.toHaveSeenStates(['ESTABLISHED'])).code).toBe('ERR_INVALID_ARG_TYPE');
    } finally {
      await p.close();
    }
  });
});
