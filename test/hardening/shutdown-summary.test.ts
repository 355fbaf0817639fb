/** The shutdown's summary line names connections whose work was interrupted (no RST, but cut). */
import { expect, it } from 'vitest';
import { summaryLine, type ShutdownReport } from '../../src/shutdown';

it('names interrupted and destroyed connections in the summary line', () => {
  const report = {
    trigger: 'SIGTERM',
    preStop: 0,
    handoff: { otherListeners: 0, migrateReq: true, migrated: 0, migrationFailed: 0 },
    server: {
      totals: { graceful: 3, interrupted: 1, handedOff: 0, resetSent: 0, resetReceived: 0, destroyed: 1, total: 5 },
      duration: 12,
    },
    duration: 13,
    clean: false,
    exitCode: 1,
  } as unknown as ShutdownReport;
  const line = summaryLine(report);
  expect(line).toContain('closed 5 connections');
  expect(line).toContain('1 interrupted (no RST, but the application');
  expect(line).toContain('1 destroyed (not reset, not graceful)');
  expect(line).toMatch(/not clean|exit code 1/);
});
