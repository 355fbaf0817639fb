/** The finwait/vitest matchers' types, added to vitest's Assertion as vitest documents. */
import type { FinwaitMatchers } from '../src/vitest';

declare module 'vitest' {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any, @typescript-eslint/no-empty-object-type
  interface Assertion<T = any> extends FinwaitMatchers<T> {}
}
