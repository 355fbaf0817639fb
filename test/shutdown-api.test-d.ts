/** Type tests for gracefulShutdown() and the same-port handoff (vitest --typecheck). */
import { describe, expectTypeOf, it } from 'vitest';
import type net from 'node:net';
import * as finwait from '../src/index';
import type { GracefulShutdown, GracefulShutdownOptions, HandoffState, ServerCloseReport, ShutdownPhase, ShutdownReport } from '../src/index';

describe('gracefulShutdown() and listenReusePort() types', () => {
  it('gracefulShutdown', () => {
    expectTypeOf(finwait.gracefulShutdown).parameter(0).toEqualTypeOf<net.Server>();
    expectTypeOf(finwait.gracefulShutdown).parameter(1).toEqualTypeOf<GracefulShutdownOptions | undefined>();
    expectTypeOf(finwait.gracefulShutdown).returns.toEqualTypeOf<GracefulShutdown>();
    expectTypeOf<GracefulShutdown['begin']>().returns.toEqualTypeOf<Promise<ShutdownReport>>();
    expectTypeOf<GracefulShutdown['ready']>().toEqualTypeOf<boolean>();
    expectTypeOf<ShutdownPhase>().toEqualTypeOf<'serving' | 'pre-stop' | 'closing' | 'closed'>();
    expectTypeOf<GracefulShutdownOptions['signals']>().toEqualTypeOf<NodeJS.Signals[] | undefined>();
    expectTypeOf<ShutdownReport['server']>().toEqualTypeOf<ServerCloseReport | undefined>();
    expectTypeOf<ShutdownReport['exitCode']>().toEqualTypeOf<0 | 1>();
    // @ts-expect-error the readiness path is a string, not a boolean switch
    expectTypeOf<{ readinessPath: true }>().toMatchTypeOf<GracefulShutdownOptions>();
  });

  it('listenReusePort and tcpMigrateReq', () => {
    expectTypeOf(finwait.listenReusePort).returns.toEqualTypeOf<Promise<net.AddressInfo>>();
    expectTypeOf(finwait.tcpMigrateReq).returns.toEqualTypeOf<boolean | undefined>();
    expectTypeOf<HandoffState>().toEqualTypeOf<{ otherListeners: number; migrateReq: boolean | undefined }>();
  });
});
