/**
 * TCP states by their Linux kernel names, and the one mapping between their numbers and names.
 *
 * The numbers are Linux's `enum` in `include/net/tcp_states.h`: the value of `tcpi_state` in
 * `struct tcp_info` and of `idiag_state` in sock_diag. Nothing else in finwait hard-codes them.
 * @see tcp(7)
 */

/** Names indexed by the kernel's state number (index 0 is unused by the kernel). */
const NAMES = [
  undefined,
  'ESTABLISHED',
  'SYN_SENT',
  'SYN_RECV',
  'FIN_WAIT1',
  'FIN_WAIT2',
  'TIME_WAIT',
  'CLOSE',
  'CLOSE_WAIT',
  'LAST_ACK',
  'LISTEN',
  'CLOSING',
  'NEW_SYN_RECV',
  'BOUND_INACTIVE',
] as const;

/** A TCP state as the Linux kernel names it (`'FIN_WAIT2'`, `'CLOSE_WAIT'`, ...). */
export type TcpState = Exclude<(typeof NAMES)[number], undefined>;

/** Every TCP state name, in the kernel's numeric order. */
export const TCP_STATES: readonly TcpState[] = Object.freeze(
  NAMES.filter((name): name is TcpState => name !== undefined),
);

const NUMBERS: ReadonlyMap<string, number> = new Map(
  NAMES.flatMap((name, n) => (name === undefined ? [] : [[name, n] as [string, number]])),
);

/**
 * The name of a kernel state number, or `undefined` for a number this table does not know (a
 * future kernel): never mapped to a wrong state.
 */
export function stateName(n: number): TcpState | undefined {
  return NAMES[n];
}

/** The kernel's number for a state name, or `undefined` if the name is not a TCP state. */
export function stateNumber(name: string): number | undefined {
  return NUMBERS.get(name);
}

/** The kernel's bit mask of `states` (bit n for state number n, as sock_diag's `idiag_states`); names that are no kernel state add nothing. */
export function stateMask(states: Iterable<string>): number {
  let mask = 0;
  for (const s of states) {
    const n = NUMBERS.get(s);
    if (n !== undefined) mask |= 1 << n;
  }
  return mask;
}

/** True if `value` is one of the kernel's TCP state names. */
export function isTcpState(value: unknown): value is TcpState {
  return typeof value === 'string' && NUMBERS.has(value);
}
