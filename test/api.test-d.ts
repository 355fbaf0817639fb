/** Type tests for the public API (vitest --typecheck): the names and shapes are a contract. */
import { describe, expectTypeOf, it } from 'vitest';
import type net from 'node:net';
import * as finwait from '../src/index';
import type { TcpInfo, TcpState, Queues, ErrnoError } from '../src/index';

describe('public types', () => {
  it('tcpInfo / tcpState / tcpStates / queues', () => {
    expectTypeOf(finwait.tcpInfo).parameter(0).toEqualTypeOf<net.Socket | number>();
    expectTypeOf(finwait.tcpInfo).returns.toEqualTypeOf<TcpInfo>();
    expectTypeOf<TcpInfo['state']>().toEqualTypeOf<TcpState>();
    expectTypeOf<TcpInfo['rtt']>().toEqualTypeOf<number>();
    expectTypeOf<TcpInfo['sndWnd']>().toEqualTypeOf<number | undefined>();
    expectTypeOf(finwait.tcpState).returns.toEqualTypeOf<TcpState>();
    expectTypeOf(finwait.tcpStates).returns.toEqualTypeOf<Array<TcpState | ErrnoError>>();
    expectTypeOf(finwait.queues).returns.toEqualTypeOf<Queues>();
    expectTypeOf<Queues>().toEqualTypeOf<{ unsent: number; unacked: number; unread: number }>();
  });

  it('state names are the kernel names', () => {
    expectTypeOf<'FIN_WAIT2'>().toMatchTypeOf<TcpState>();
    expectTypeOf<'CLOSE_WAIT'>().toMatchTypeOf<TcpState>();
    // @ts-expect-error BSD spelling is not a Linux state name
    expectTypeOf<'FIN_WAIT_2'>().toMatchTypeOf<TcpState>();
  });

  it('shutdown, closeWrite, reset, linger', () => {
    expectTypeOf(finwait.shutdown).parameter(1).toEqualTypeOf<'read' | 'write' | 'both'>();
    expectTypeOf(finwait.closeWrite).returns.toEqualTypeOf<Promise<void>>();
    expectTypeOf(finwait.closeWrite).parameter(0).toEqualTypeOf<net.Socket>();
    expectTypeOf(finwait.reset).parameter(0).toEqualTypeOf<net.Socket>();
    expectTypeOf(finwait.getLinger).returns.toEqualTypeOf<number | null>();
    expectTypeOf(finwait.setLinger).parameter(1).toEqualTypeOf<0 | null>();
    // @ts-expect-error a positive linger would block the event loop
    finwait.setLinger(0, 5);
  });

  it('option getter/setter pairs', () => {
    expectTypeOf(finwait.setUserTimeout).returns.toEqualTypeOf<number>();
    expectTypeOf(finwait.getKeepAlive).returns.toEqualTypeOf<boolean>();
    expectTypeOf(finwait.setKeepAlive).parameter(1).toEqualTypeOf<boolean>();
    expectTypeOf(finwait.getLinger2).returns.toEqualTypeOf<number>();
    expectTypeOf(finwait.setKeepCnt).returns.toEqualTypeOf<number>();
  });
});
