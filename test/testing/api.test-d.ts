/** Type tests for the public API of finwait/testing (vitest --typecheck). */
import { describe, expectTypeOf, it } from 'vitest';
import type net from 'node:net';
import * as t from '../../src/testing/index';
import type { Lab, LogEntry, TcpFlag, Verdict, WireSegment } from '../../src/testing/index';
import type { SocketEntry, SocketFilter, SocketTuple, TcpState } from '../../src/index';

describe('finwait/testing types', () => {
  it('connectPair and the waiters', () => {
    expectTypeOf(t.connectPair).returns.toEqualTypeOf<Promise<t.SocketPair>>();
    expectTypeOf<t.SocketPair['client']>().toEqualTypeOf<net.Socket>();
    expectTypeOf(t.waitForState).parameter(0).toEqualTypeOf<net.Socket | number>();
    expectTypeOf(t.waitForState).parameter(1).toEqualTypeOf<TcpState | readonly TcpState[]>();
    expectTypeOf(t.waitForState).returns.toEqualTypeOf<Promise<TcpState>>();
    // @ts-expect-error BSD spelling is not a Linux state name
    t.waitForState(0, 'FIN_WAIT_2');
  });

  it('the lab', () => {
    expectTypeOf(t.createLab).returns.toEqualTypeOf<Promise<Lab>>();
    expectTypeOf(t.labAvailable).returns.toEqualTypeOf<{ ok: true } | { ok: false; reason: string }>();
    expectTypeOf<Lab['a']['connect']>().returns.toEqualTypeOf<Promise<net.Socket>>();
    expectTypeOf<Lab['b']['listen']>().returns.toEqualTypeOf<Promise<net.Server>>();
    expectTypeOf<Lab['a']['sysctl']>().returns.toEqualTypeOf<string>();
    expectTypeOf<Lab['a']['nft']>().returns.toEqualTypeOf<Promise<void>>();
    // host.sockets() is synchronous and returns finwait's own sock_diag entries.
    expectTypeOf<Lab['a']['sockets']>().returns.toEqualTypeOf<SocketEntry[]>();
    expectTypeOf<Lab['a']['sockets']>().parameter(0).toEqualTypeOf<SocketFilter | undefined>();
    // host.findSocket() is one synchronous exact lookup, finwait's findSocket() inside the namespace.
    expectTypeOf<Lab['a']['findSocket']>().returns.toEqualTypeOf<SocketEntry | undefined>();
    expectTypeOf<Lab['a']['findSocket']>().parameter(0).toEqualTypeOf<SocketTuple | net.Socket>();
    // A socket handed back before it connects; a waiter on the host's sock_diag.
    expectTypeOf<Lab['a']['connectSocket']>().returns.toEqualTypeOf<net.Socket>();
    expectTypeOf<Lab['a']['waitForState']>().parameter(0).toEqualTypeOf<SocketTuple | net.Socket>();
    expectTypeOf<Lab['a']['waitForState']>().returns.toEqualTypeOf<Promise<TcpState>>();
    expectTypeOf<t.LabConnectOptions['signal']>().toEqualTypeOf<AbortSignal | undefined>();
    expectTypeOf<t.LabListenOptions['recvBufferSize']>().toEqualTypeOf<number | undefined>();
    expectTypeOf<t.LabConnectOptions['sendBufferSize']>().toEqualTypeOf<number | undefined>();
    expectTypeOf(t.fdOf).parameters.toEqualTypeOf<[socket: net.Socket]>();
    expectTypeOf(t.fdOf).returns.toEqualTypeOf<number>();
    expectTypeOf<t.LabSocket>().toEqualTypeOf<SocketEntry>();
    expectTypeOf<t.LabConnectOptions['reuseAddress']>().toEqualTypeOf<boolean | undefined>();
  });

  it('the wire and its log', () => {
    expectTypeOf<Lab['wire']['hold']>().parameter(0).toEqualTypeOf<((segment: WireSegment) => boolean) | undefined>();
    expectTypeOf<Lab['wire']['release']>().returns.toEqualTypeOf<number>();
    expectTypeOf<Lab['wire']['release']>().parameter(1).toEqualTypeOf<t.ReleaseOptions | undefined>();
    expectTypeOf<t.ReleaseOptions['count']>().toEqualTypeOf<number | undefined>();
    expectTypeOf<LogEntry['verdict']>().toEqualTypeOf<Verdict>();
    expectTypeOf<Verdict>().toEqualTypeOf<'pass' | 'drop' | 'hold' | 'release' | 'delay' | 'inject' | 'replay'>();
    expectTypeOf<Lab['wire']['inject']>().returns.toEqualTypeOf<LogEntry>();
    expectTypeOf<Lab['wire']['replay']>().parameters.toEqualTypeOf<[entry: LogEntry]>();
    expectTypeOf<Lab['wire']['delay']>().parameters.toEqualTypeOf<[ms: number, predicate?: (segment: WireSegment) => boolean]>();
    expectTypeOf<LogEntry['delayMs']>().toEqualTypeOf<number | undefined>();
    expectTypeOf<LogEntry['from']>().toEqualTypeOf<'a' | 'b'>();
    expectTypeOf<LogEntry['flags']>().toEqualTypeOf<TcpFlag[]>();
    expectTypeOf<LogEntry['relSeq']>().toEqualTypeOf<number | undefined>();
    expectTypeOf<LogEntry['at']>().toEqualTypeOf<number>();
  });
});
