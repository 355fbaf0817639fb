/**
 * The pure close-lifecycle model, exhaustively: every (state, event) for `next`, every ordered
 * pair of states for `isLegal`, `completePath` and `observe`, and the RFC 793 / RFC 1122 close
 * sequences as a watcher would see them. The oracles here are written independently of
 * src/lifecycle/fsm.ts: a table by hand from the RFCs and the kernel rows of test/kernel/, and a
 * brute-force search over every path instead of a breadth-first one.
 */
import { describe, it, expect } from 'vitest';
import { TCP_STATES } from '../../src/states';
import {
  changesOf,
  CLOSE_EVENTS,
  FD_CLOSE_MEANS,
  LIFECYCLE_STATES,
  TRANSITIONS,
  completePath,
  createModel,
  isAbortive,
  isLegal,
  next,
  observe,
  outcomeOf,
  replay,
  roleOf,
} from '../../src/lifecycle/fsm';
import type {
  CloseEvent,
  CloseModel,
  LifecycleState,
  Observation,
  Path,
  Source,
  StateChange,
} from '../../src/lifecycle/fsm';

// --- Oracles -----------------------------------------------------------------------------------

const STATES: LifecycleState[] = [...TCP_STATES, 'CLOSED'];
const EVENTS: CloseEvent[] = [
  'close',
  'fin',
  'ack-of-fin',
  'fin-ack',
  '2msl',
  'fin-wait2-timeout',
  'rst-sent',
  'rst-received',
  'timeout',
  'syn',
  'syn-ack',
  'ack-of-syn',
];
const ABORTIVE = new Set<CloseEvent>(['rst-sent', 'rst-received', 'timeout', 'fin-wait2-timeout']);

const X = 'CLOSED';
/** RST either way, or the kernel giving up (RFC 793 §3.9 "If the RST bit is set", user timeout). */
const AB = { 'rst-received': X, 'rst-sent': X, timeout: X } as const;

/** By hand from RFC 793 §3.2/§3.5/§3.9, RFC 1122 §4.2.2.13 and what Linux does (the kernel rows of test/kernel/). */
const TABLE: Partial<Record<LifecycleState, Partial<Record<CloseEvent, LifecycleState>>>> = {
  SYN_SENT: { 'syn-ack': 'ESTABLISHED', syn: 'SYN_RECV', close: X, 'rst-received': X, timeout: X },
  SYN_RECV: { 'ack-of-syn': 'ESTABLISHED', fin: 'CLOSE_WAIT', close: 'FIN_WAIT1', ...AB },
  NEW_SYN_RECV: { 'ack-of-syn': 'ESTABLISHED', 'rst-received': X, timeout: X },
  LISTEN: { close: X },
  ESTABLISHED: { close: 'FIN_WAIT1', fin: 'CLOSE_WAIT', ...AB },
  FIN_WAIT1: { 'ack-of-fin': 'FIN_WAIT2', fin: 'CLOSING', 'fin-ack': 'TIME_WAIT', ...AB },
  FIN_WAIT2: { fin: 'TIME_WAIT', 'fin-wait2-timeout': X, ...AB },
  CLOSING: { 'ack-of-fin': 'TIME_WAIT', ...AB },
  TIME_WAIT: { '2msl': X, 'rst-received': X },
  CLOSE_WAIT: { close: 'LAST_ACK', ...AB },
  LAST_ACK: { 'ack-of-fin': X, ...AB },
};

/** Every path from `from`, as lists of indices into TRANSITIONS (the graph must be acyclic). */
function allPaths(from: LifecycleState, seen: LifecycleState[] = [from]): number[][] {
  const paths: number[][] = [[]];
  TRANSITIONS.forEach((t, i) => {
    if (t.from !== from) return;
    if (seen.includes(t.to)) throw new Error(`cycle through ${t.to}`);
    for (const rest of allPaths(t.to, [...seen, t.to])) paths.push([i, ...rest]);
  });
  return paths;
}

function compareBy(keys: (p: number[]) => number[]) {
  return (a: number[], b: number[]): number => {
    const ka = keys(a);
    const kb = keys(b);
    for (let i = 0; i < Math.min(ka.length, kb.length); i++) {
      if (ka[i] !== kb[i]) return ka[i]! - kb[i]!;
    }
    return ka.length - kb.length;
  };
}
const abortiveSteps = (p: number[]): number =>
  p.filter((i) => ABORTIVE.has(TRANSITIONS[i]!.event)).length;

function asPath(from: LifecycleState, p: number[] | undefined): Path | undefined {
  if (p === undefined) return undefined;
  return {
    path: [from, ...p.map((i) => TRANSITIONS[i]!.to)],
    events: p.map((i) => TRANSITIONS[i]!.event),
  };
}

/** The documented rule: fewest abortive steps, then fewest steps, then first in table order. */
function oraclePath(from: LifecycleState, to: LifecycleState): Path | undefined {
  const endsAt = (p: number[]) => (p.length === 0 ? from : TRANSITIONS[p[p.length - 1]!]!.to) === to;
  const best = allPaths(from)
    .filter(endsAt)
    .sort(compareBy((p) => [abortiveSteps(p), p.length, ...p]))[0];
  return asPath(from, best);
}

/** Where an observed event is placed: graceful steps, then one step that matches the event. */
function oracleEventPath(from: LifecycleState, event: CloseEvent): Path | undefined {
  const fitting = (e: CloseEvent) =>
    e === event || (e === 'fin-ack' && (event === 'fin' || event === 'ack-of-fin'));
  const best = allPaths(from)
    .filter((p) => p.length > 0 && fitting(TRANSITIONS[p[p.length - 1]!]!.event))
    .filter((p) => p.slice(0, -1).every((i) => !ABORTIVE.has(TRANSITIONS[i]!.event)))
    .sort(compareBy((p) => [p.length, ...p]))[0];
  return asPath(from, best);
}

// --- Helpers -----------------------------------------------------------------------------------

const k = (state: LifecycleState, at: number): Observation => ({ state, at, source: 'kernel' });
const d = (state: LifecycleState, at: number): Observation => ({ state, at, source: 'diag' });
const ev = (event: CloseEvent, at: number): Observation => ({ event, at, source: 'event' });

/** A history as `STATE/source/event` strings, `!` marking an anomaly. */
const trail = (m: CloseModel): string[] =>
  m.history.map((h) => `${h.state}/${h.source}/${h.event ?? '-'}${h.anomaly ? '!' : ''}`);

const roleOfModel = (m: CloseModel) => roleOf(m.history.map((h) => h.state));

// --- The graph ---------------------------------------------------------------------------------

describe('the graph', () => {
  it('lists every state and event', () => {
    expect([...LIFECYCLE_STATES]).toEqual(STATES);
    expect([...CLOSE_EVENTS].sort()).toEqual([...EVENTS].sort());
    expect(FD_CLOSE_MEANS).toEqual(['TIME_WAIT', 'CLOSED']);
    for (const e of EVENTS) expect(isAbortive(e), e).toBe(ABORTIVE.has(e));
  });

  it('holds exactly the hand-written table, one target per (state, event)', () => {
    const fromTable = Object.entries(TABLE).flatMap(([from, row]) =>
      Object.entries(row).map(([event, to]) => `${from} ${event} ${to}`),
    );
    const fromCode = TRANSITIONS.map((t) => `${t.from} ${t.event} ${t.to}`);
    expect(new Set(fromCode).size).toBe(fromCode.length);
    expect([...fromCode].sort()).toEqual(fromTable.sort());
    expect(Object.isFrozen(TRANSITIONS)).toBe(true);
    expect(Object.isFrozen(TRANSITIONS[0])).toBe(true);
  });

  it('is acyclic, abortive steps all end in CLOSED, and CLOSE, CLOSED, BOUND_INACTIVE are inert', () => {
    for (const s of STATES) expect(() => allPaths(s), s).not.toThrow();
    for (const t of TRANSITIONS.filter((t) => ABORTIVE.has(t.event))) expect(t.to).toBe('CLOSED');
    const inert = ['CLOSE', 'CLOSED', 'BOUND_INACTIVE'];
    expect(TRANSITIONS.filter((t) => inert.includes(t.from))).toEqual([]);
    expect(TRANSITIONS.filter((t) => t.to === 'CLOSE' || t.to === 'BOUND_INACTIVE')).toEqual([]);
  });

  it('lets every synchronized state reach CLOSED without an RST or a timeout', () => {
    const synchronized = [
      'ESTABLISHED', 'FIN_WAIT1', 'FIN_WAIT2', 'CLOSE_WAIT', 'CLOSING', 'LAST_ACK', 'TIME_WAIT',
    ] as const;
    for (const s of synchronized) {
      const p = completePath(s, 'CLOSED');
      expect(p, s).toBeDefined();
      expect(p!.events.filter((e) => ABORTIVE.has(e)), s).toEqual([]);
    }
  });

  describe.each(STATES)('next(%s, event)', (state) => {
    it('follows the table for every event', () => {
      for (const event of EVENTS) {
        expect(next(state, event), `${state} ${event}`).toBe(TABLE[state]?.[event]);
      }
    });
  });

  describe.each(STATES)('from %s', (from) => {
    it('isLegal agrees with the table for every target', () => {
      for (const to of STATES) {
        const expected = from === to || Object.values(TABLE[from] ?? {}).includes(to);
        expect(isLegal(from, to), `${from} → ${to}`).toBe(expected);
      }
    });

    it('completePath agrees with the brute-force oracle for every target', () => {
      for (const to of STATES) {
        expect(completePath(from, to), `${from} → ${to}`).toEqual(oraclePath(from, to));
      }
    });
  });

  it.each<[LifecycleState, LifecycleState, LifecycleState[], CloseEvent[]]>([
    ['ESTABLISHED', 'FIN_WAIT2', ['ESTABLISHED', 'FIN_WAIT1', 'FIN_WAIT2'], ['close', 'ack-of-fin']],
    ['ESTABLISHED', 'LAST_ACK', ['ESTABLISHED', 'CLOSE_WAIT', 'LAST_ACK'], ['fin', 'close']],
    ['FIN_WAIT1', 'TIME_WAIT', ['FIN_WAIT1', 'TIME_WAIT'], ['fin-ack']],
    ['ESTABLISHED', 'TIME_WAIT', ['ESTABLISHED', 'FIN_WAIT1', 'TIME_WAIT'], ['close', 'fin-ack']],
    ['ESTABLISHED', 'CLOSING', ['ESTABLISHED', 'FIN_WAIT1', 'CLOSING'], ['close', 'fin']],
    // ties: the passive close wins over the active one; the RST never wins
    ['ESTABLISHED', 'CLOSED', ['ESTABLISHED', 'CLOSE_WAIT', 'LAST_ACK', 'CLOSED'], ['fin', 'close', 'ack-of-fin']],
    ['FIN_WAIT2', 'CLOSED', ['FIN_WAIT2', 'TIME_WAIT', 'CLOSED'], ['fin', '2msl']],
    ['CLOSING', 'CLOSED', ['CLOSING', 'TIME_WAIT', 'CLOSED'], ['ack-of-fin', '2msl']],
    ['SYN_SENT', 'CLOSE_WAIT', ['SYN_SENT', 'ESTABLISHED', 'CLOSE_WAIT'], ['syn-ack', 'fin']],
    ['TIME_WAIT', 'TIME_WAIT', ['TIME_WAIT'], []],
  ])('completePath(%s, %s) is the expected RFC path', (from, to, path, events) => {
    expect(completePath(from, to)).toEqual({ path, events });
  });

  it.each<[LifecycleState, LifecycleState]>([
    ['TIME_WAIT', 'ESTABLISHED'],
    ['CLOSE_WAIT', 'FIN_WAIT2'],
    ['FIN_WAIT2', 'CLOSE_WAIT'],
    ['LAST_ACK', 'TIME_WAIT'],
    ['CLOSED', 'TIME_WAIT'],
    ['ESTABLISHED', 'SYN_SENT'],
    ['FIN_WAIT2', 'CLOSE'],
  ])('completePath(%s, %s) is undefined', (from, to) => {
    expect(completePath(from, to)).toBeUndefined();
    expect(isLegal(from, to)).toBe(false);
  });
});

// --- Role and outcome --------------------------------------------------------------------------

describe('roleOf and outcomeOf', () => {
  it.each<[string, LifecycleState[], ReturnType<typeof roleOf>]>([
    ['active, 4 segments', ['ESTABLISHED', 'FIN_WAIT1', 'FIN_WAIT2', 'TIME_WAIT', 'CLOSED'], 'active'],
    ['active, 3 segments', ['ESTABLISHED', 'FIN_WAIT1', 'TIME_WAIT'], 'active'],
    ['active, only TIME_WAIT seen', ['TIME_WAIT'], 'active'],
    ['passive', ['ESTABLISHED', 'CLOSE_WAIT', 'LAST_ACK', 'CLOSED'], 'passive'],
    ['simultaneous', ['ESTABLISHED', 'FIN_WAIT1', 'CLOSING', 'TIME_WAIT'], 'simultaneous'],
    ['reset in ESTABLISHED', ['ESTABLISHED', 'CLOSED'], undefined],
    ['not closing', ['SYN_SENT', 'ESTABLISHED'], undefined],
    ['nothing', [], undefined],
    ['anomalous: the first close state decides', ['ESTABLISHED', 'CLOSE_WAIT', 'FIN_WAIT2'], 'passive'],
  ])('%s', (_name, states, role) => {
    expect(roleOf(states)).toBe(role);
  });

  const steps = (p: Path) =>
    p.path.map((state, i) => ({ state, ...(i > 0 ? { event: p.events[i - 1]! } : {}) }));
  const walk = (states: LifecycleState[], events: CloseEvent[]): Path => ({ path: states, events });

  it.each<[string, Path, ReturnType<typeof outcomeOf>]>([
    ['half-closed, still open', completePath('ESTABLISHED', 'FIN_WAIT2')!, undefined],
    ['peer half-closed', completePath('ESTABLISHED', 'CLOSE_WAIT')!, undefined],
    ['LAST_ACK still waiting', completePath('ESTABLISHED', 'LAST_ACK')!, undefined],
    ['active: TIME_WAIT is the end of the handshake', completePath('ESTABLISHED', 'TIME_WAIT')!, 'graceful'],
    ['passive: the ACK of our FIN in LAST_ACK', completePath('ESTABLISHED', 'CLOSED')!, 'graceful'],
    ['simultaneous', completePath('ESTABLISHED', 'CLOSING')!, undefined],
    ['reset sent', walk(['ESTABLISHED', 'CLOSED'], ['rst-sent']), 'reset-sent'],
    ['reset received', walk(['ESTABLISHED', 'CLOSED'], ['rst-received']), 'reset-received'],
    ['unread data at close', walk(['ESTABLISHED', 'CLOSE_WAIT', 'CLOSED'], ['fin', 'rst-sent']), 'reset-sent'],
    ['reset in FIN_WAIT2', walk(['FIN_WAIT1', 'FIN_WAIT2', 'CLOSED'], ['ack-of-fin', 'rst-received']), 'reset-received'],
    ['RST in TIME_WAIT stays graceful', walk(['FIN_WAIT2', 'TIME_WAIT', 'CLOSED'], ['fin', 'rst-received']), 'graceful'],
    ['orphaned FIN_WAIT2 expired', walk(['FIN_WAIT2', 'CLOSED'], ['fin-wait2-timeout']), 'timed-out'],
    ['retransmissions gave up', walk(['ESTABLISHED', 'CLOSED'], ['timeout']), 'timed-out'],
    ['connect refused', walk(['SYN_SENT', 'CLOSED'], ['rst-received']), 'reset-received'],
    ['connect dropped', walk(['SYN_SENT', 'CLOSED'], ['close']), undefined],
  ])('%s', (_name, path, outcome) => {
    expect(outcomeOf(steps(path))).toBe(outcome);
  });
});

// --- The reducer: RFC sequences as a watcher sees them -----------------------------------------

describe('observe: RFC close sequences', () => {
  it('4-segment close, active side (fig. 13 left): fd FIN_WAIT2 then CLOSE, diag TIME_WAIT, gone', () => {
    let m = replay([k('ESTABLISHED', 0), k('FIN_WAIT2', 10)]);
    expect(trail(m)).toEqual(['ESTABLISHED/kernel/-', 'FIN_WAIT1/inferred/close', 'FIN_WAIT2/kernel/ack-of-fin']);
    expect(m.history[1]!.at).toBe(10);
    expect(outcomeOf(m.history)).toBeUndefined();
    m = replay([k('CLOSE', 20)], m);
    expect(m.state).toBe('CLOSE');
    expect(m.settled).toBe('FIN_WAIT2');
    expect(outcomeOf(m.history)).toBeUndefined(); // TIME_WAIT or a reset: not known yet
    m = replay([d('TIME_WAIT', 21), k('CLOSE', 22), d('CLOSED', 60_021)], m);
    expect(trail(m)).toEqual([
      'ESTABLISHED/kernel/-',
      'FIN_WAIT1/inferred/close',
      'FIN_WAIT2/kernel/ack-of-fin',
      'CLOSE/kernel/-',
      'TIME_WAIT/diag/fin',
      'CLOSED/diag/2msl',
    ]);
    expect(roleOfModel(m)).toBe('active');
    expect(outcomeOf(m.history)).toBe('graceful');
    expect(m.anomalies).toEqual([]);
  });

  it('4-segment close, passive side (fig. 13 right): CLOSE_WAIT, LAST_ACK by diag, gone', () => {
    const m = replay([k('ESTABLISHED', 0), k('CLOSE_WAIT', 5), d('LAST_ACK', 9), d('CLOSED', 12)]);
    expect(trail(m)).toEqual([
      'ESTABLISHED/kernel/-',
      'CLOSE_WAIT/kernel/fin',
      'LAST_ACK/diag/close',
      'CLOSED/diag/ack-of-fin',
    ]);
    expect(roleOfModel(m)).toBe('passive');
    expect(outcomeOf(m.history)).toBe('graceful');
  });

  it('3-segment close, active side: FIN_WAIT1 → TIME_WAIT on one FIN+ACK', () => {
    const m = replay([k('ESTABLISHED', 0), k('FIN_WAIT1', 1), k('CLOSE', 4), d('TIME_WAIT', 5)]);
    expect(trail(m)).toEqual([
      'ESTABLISHED/kernel/-',
      'FIN_WAIT1/kernel/close',
      'CLOSE/kernel/-',
      'TIME_WAIT/diag/fin-ack',
    ]);
    expect(roleOfModel(m)).toBe('active');
    expect(outcomeOf(m.history)).toBe('graceful');
  });

  it('3-segment close with FIN_WAIT1 missed: inferred before the fd read CLOSE, at its time', () => {
    const m = replay([k('ESTABLISHED', 0), k('CLOSE', 7), d('TIME_WAIT', 8)]);
    expect(trail(m)).toEqual([
      'ESTABLISHED/kernel/-',
      'FIN_WAIT1/inferred/close',
      'CLOSE/kernel/-',
      'TIME_WAIT/diag/fin-ack',
    ]);
    expect(m.history.map((h) => h.at)).toEqual([0, 7, 7, 8]);
    expect(outcomeOf(m.history)).toBe('graceful');
  });

  it('passive close with CLOSE_WAIT and LAST_ACK both missed (Node ends at once)', () => {
    const step1 = observe(replay([k('ESTABLISHED', 0), k('CLOSE', 3)]), d('CLOSED', 6));
    const m = step1.model;
    expect(trail(m)).toEqual([
      'ESTABLISHED/kernel/-',
      'CLOSE_WAIT/inferred/fin',
      'LAST_ACK/inferred/close',
      'CLOSE/kernel/-',
      'CLOSED/diag/ack-of-fin',
    ]);
    expect(step1.entries.map((e) => e.state)).toEqual(['CLOSE_WAIT', 'LAST_ACK', 'CLOSED']);
    expect(roleOfModel(m)).toBe('passive');
    expect(outcomeOf(m.history)).toBe('graceful');
  });

  it('simultaneous close (fig. 14): CLOSING, then TIME_WAIT', () => {
    const m = replay([k('ESTABLISHED', 0), k('CLOSING', 2), k('CLOSE', 3), d('TIME_WAIT', 3)]);
    expect(trail(m)).toEqual([
      'ESTABLISHED/kernel/-',
      'FIN_WAIT1/inferred/close',
      'CLOSING/kernel/fin',
      'CLOSE/kernel/-',
      'TIME_WAIT/diag/ack-of-fin',
    ]);
    expect(roleOfModel(m)).toBe('simultaneous');
    expect(outcomeOf(m.history)).toBe('graceful');
  });

  it('half-close (RFC 1122 4.2.2.13): both sides stay put, no timer, no outcome', () => {
    const a = replay([k('ESTABLISHED', 0), k('FIN_WAIT2', 1), k('FIN_WAIT2', 5_000)]);
    const b = replay([k('ESTABLISHED', 0), k('CLOSE_WAIT', 1), k('CLOSE_WAIT', 5_000)]);
    expect(a.state).toBe('FIN_WAIT2');
    expect(b.state).toBe('CLOSE_WAIT');
    expect(a.history).toHaveLength(3);
    expect(b.history).toHaveLength(2);
    expect([roleOfModel(a), roleOfModel(b)]).toEqual(['active', 'passive']);
    expect([outcomeOf(a.history), outcomeOf(b.history)]).toEqual([undefined, undefined]);
  });

  it('reset sent (SO_LINGER {1,0}) and received on the other side', () => {
    const a = replay([k('ESTABLISHED', 0), ev('rst-sent', 1)]);
    expect(trail(a)).toEqual(['ESTABLISHED/kernel/-', 'CLOSED/event/rst-sent']);
    expect(outcomeOf(a.history)).toBe('reset-sent');
    expect(roleOfModel(a)).toBeUndefined();
    // B: the fd reads CLOSE before Node reports ECONNRESET; the event resolves the CLOSE.
    const b = replay([k('ESTABLISHED', 0), k('CLOSE', 1), ev('rst-received', 2), d('CLOSED', 3)]);
    expect(trail(b)).toEqual(['ESTABLISHED/kernel/-', 'CLOSE/kernel/-', 'CLOSED/event/rst-received']);
    expect(outcomeOf(b.history)).toBe('reset-received');
    expect(b.anomalies).toEqual([]);
  });

  it('close with unread data sends RST (kernel row 5): reset-sent, even from CLOSE_WAIT', () => {
    const b = replay([k('ESTABLISHED', 0), k('CLOSE_WAIT', 1), ev('rst-sent', 2)]);
    expect(trail(b)).toEqual(['ESTABLISHED/kernel/-', 'CLOSE_WAIT/kernel/fin', 'CLOSED/event/rst-sent']);
    expect(roleOfModel(b)).toBe('passive');
    expect(outcomeOf(b.history)).toBe('reset-sent');
    // A had half-closed: its fd reads CLOSE after FIN_WAIT2, and the RST is not a TIME_WAIT.
    const a = replay([k('FIN_WAIT2', 0), k('CLOSE', 2), ev('rst-received', 3)]);
    expect(trail(a)).toEqual(['FIN_WAIT2/kernel/-', 'CLOSE/kernel/-', 'CLOSED/event/rst-received']);
    expect(outcomeOf(a.history)).toBe('reset-received');
  });

  it('orphaned FIN_WAIT2 timeout (kernel row 8), reported as an event', () => {
    const m = replay([d('FIN_WAIT2', 0), ev('fin-wait2-timeout', 1020)]);
    expect(trail(m)).toEqual(['FIN_WAIT2/diag/-', 'CLOSED/event/fin-wait2-timeout']);
    expect(outcomeOf(m.history)).toBe('timed-out');
    // Without the event, a vanished FIN_WAIT2 is inferred to have gone through TIME_WAIT.
    const guessed = replay([d('FIN_WAIT2', 0), d('CLOSED', 1020)]);
    expect(trail(guessed)).toEqual(['FIN_WAIT2/diag/-', 'TIME_WAIT/inferred/fin', 'CLOSED/diag/2msl']);
  });

  it('connection refused: SYN_SENT, then RST', () => {
    const m = replay([k('SYN_SENT', 0), ev('rst-received', 1)]);
    expect(trail(m)).toEqual(['SYN_SENT/kernel/-', 'CLOSED/event/rst-received']);
    expect(outcomeOf(m.history)).toBe('reset-received');
  });
});

describe('observe: events', () => {
  it('an event already on the path is a confirmation and changes nothing', () => {
    // FIN_WAIT1 → TIME_WAIT took 'fin-ack': Node's late 'end' ('fin') is already on the path.
    const m = replay([k('FIN_WAIT1', 0), d('TIME_WAIT', 1)]);
    for (const e of ['fin', 'ack-of-fin', 'fin-ack'] as const) {
      const step = observe(m, ev(e, 2));
      expect(step.model, e).toBe(m);
      expect(step.entries, e).toEqual([]);
    }
    // An inferred step is confirmed too.
    const inferred = replay([k('ESTABLISHED', 0), k('FIN_WAIT2', 1)]);
    expect(observe(inferred, ev('close', 2)).model).toBe(inferred);
    // But 'close' is not on the first path (FIN_WAIT1 was the first thing seen): it cannot
    // happen after TIME_WAIT.
    expect(observe(m, ev('close', 2)).anomaly).toMatchObject({ from: 'TIME_WAIT', event: 'close' });
  });

  it('an event ahead of polling moves the model, marked as an event', () => {
    const m = replay([k('ESTABLISHED', 0), ev('close', 1), k('FIN_WAIT1', 2), k('CLOSE', 3), d('TIME_WAIT', 4)]);
    expect(trail(m)).toEqual([
      'ESTABLISHED/kernel/-',
      'FIN_WAIT1/event/close',
      'CLOSE/kernel/-',
      'TIME_WAIT/diag/fin-ack',
    ]);
  });

  it("Node's 'end' ('fin') in FIN_WAIT1 is taken as the 3-segment FIN+ACK", () => {
    const m = replay([k('FIN_WAIT1', 0), ev('fin', 1)]);
    expect(trail(m)).toEqual(['FIN_WAIT1/kernel/-', 'TIME_WAIT/event/fin-ack']);
  });

  it('events that do not resolve an unresolved CLOSE go before it, inferred, at its time', () => {
    let m = replay([k('ESTABLISHED', 0), k('CLOSE', 5), ev('fin', 6)]);
    expect(m.state).toBe('CLOSE');
    expect(m.settled).toBe('CLOSE_WAIT');
    expect(trail(m)).toEqual(['ESTABLISHED/kernel/-', 'CLOSE_WAIT/inferred/fin', 'CLOSE/kernel/-']);
    expect(m.history[1]!.at).toBe(5);
    m = replay([ev('close', 7), d('CLOSED', 8)], m);
    expect(trail(m)).toEqual([
      'ESTABLISHED/kernel/-',
      'CLOSE_WAIT/inferred/fin',
      'LAST_ACK/inferred/close',
      'CLOSE/kernel/-',
      'CLOSED/diag/ack-of-fin',
    ]);
    expect(m.history.map((h) => h.at)).toEqual([0, 5, 5, 5, 8]);
  });

  describe.each(STATES.filter((s) => s !== 'CLOSE'))('after %s', (state) => {
    it('every event is placed on the shortest fitting path, or is an anomaly', () => {
      for (const event of EVENTS) {
        const before = replay([k(state, 0)]);
        const step = observe(before, ev(event, 1));
        const p = oracleEventPath(state, event);
        if (p === undefined) {
          const expected = { from: state, event, at: 1, source: 'event' };
          expect(step.anomaly, `${state} ${event}`).toMatchObject(expected);
          expect(step.model.history).toBe(before.history);
          expect(step.model.state).toBe(state);
          continue;
        }
        expect(step.anomaly).toBeUndefined();
        expect(step.model.history.map((h) => h.state), `${state} ${event}`).toEqual(p.path);
        expect(step.entries.map((h) => h.event)).toEqual(p.events);
        const sources: Source[] = step.entries.map((h) => h.source);
        expect(sources).toEqual([...p.events.slice(1).map(() => 'inferred'), 'event']);
      }
    });
  });
});

// --- The reducer: exhaustive pairs -------------------------------------------------------------

describe('observe: every ordered pair of observed states', () => {
  describe.each(STATES)('first %s', (a) => {
    it('then every state: the oracle path with inferred steps, or an anomaly kept in the history', () => {
      for (const b of STATES) {
        const what = `${a} → ${b}`;
        const first = replay([k(a, 0)]);
        const step = observe(first, d(b, 1));
        const m = step.model;
        if (a === b || (b === 'CLOSE' && FD_CLOSE_MEANS.includes(a))) {
          expect(m, what).toBe(first);
          continue;
        }
        const closeFollows = FD_CLOSE_MEANS.some((x) => x === a || oraclePath(a, x) !== undefined);
        let legal = oraclePath(a, b) !== undefined;
        if (a === 'CLOSE') legal = FD_CLOSE_MEANS.includes(b);
        if (b === 'CLOSE') legal = closeFollows;
        if (!legal) {
          expect(trail(m), what).toEqual([trail(first)[0], `${b}/diag/-!`]);
          expect(step.anomaly, what).toMatchObject({ from: a, state: b, at: 1, source: 'diag' });
          expect(m.anomalies, what).toEqual([step.anomaly]);
          expect(m.state, what).toBe(b); // trust the kernel and go on from there
          continue;
        }
        expect(step.anomaly, what).toBeUndefined();
        if (b === 'CLOSE' && oraclePath(a, 'TIME_WAIT') === undefined) {
          // No TIME_WAIT can follow: the fd's CLOSE is CLOSED, by the graceful path.
          const p = oraclePath(a, 'CLOSED')!;
          const inferred = p.path.slice(1, -1).map((s, i) => `${s}/inferred/${p.events[i]}`);
          expect(trail(m), what).toEqual([trail(first)[0], ...inferred, 'CLOSE/diag/-', `CLOSED/inferred/${p.events.at(-1)}`]);
          expect(step.entries.map((h) => h.state), what).toEqual([...p.path.slice(1, -1), 'CLOSE', 'CLOSED']);
          expect(m.state, what).toBe('CLOSED');
          continue;
        }
        expect(m.state, what).toBe(b);
        if (a === 'CLOSE' || b === 'CLOSE') {
          expect(trail(m), what).toEqual([trail(first)[0], `${b}/diag/-`]);
          continue;
        }
        const p = oraclePath(a, b)!;
        expect(m.history.map((h) => h.state), what).toEqual(p.path);
        expect(step.entries.map((h) => h.event), what).toEqual(p.events);
        const sources = [...p.events.slice(1).map(() => 'inferred'), 'diag'];
        expect(step.entries.map((h) => h.source), what).toEqual(sources);
        expect(step.entries.every((h) => h.at === 1), what).toBe(true);
      }
    });
  });

  // The states after which an fd's CLOSE is left unresolved: TIME_WAIT or CLOSED lies ahead.
  const beforeClose = STATES.filter(
    (s) => s !== 'CLOSE' && !FD_CLOSE_MEANS.includes(s) && FD_CLOSE_MEANS.some((x) => oraclePath(s, x)),
  );

  it('leaves exactly the expected states to resolve an fd CLOSE after', () => {
    expect(beforeClose.sort()).toEqual(
      [
        'ESTABLISHED', 'SYN_SENT', 'SYN_RECV', 'FIN_WAIT1', 'FIN_WAIT2', 'CLOSE_WAIT', 'LAST_ACK',
        'LISTEN', 'CLOSING', 'NEW_SYN_RECV',
      ].sort(),
    );
  });

  // Of those, the states from which no TIME_WAIT can follow: there the CLOSE means CLOSED at once.
  const closeMeansClosed = beforeClose.filter((s) => oraclePath(s, 'TIME_WAIT') === undefined);

  it('resolves an fd CLOSE at once after exactly CLOSE_WAIT, LAST_ACK and LISTEN', () => {
    expect(closeMeansClosed.sort()).toEqual(['CLOSE_WAIT', 'LAST_ACK', 'LISTEN'].sort());
    for (const a of closeMeansClosed) {
      const m = replay([k(a, 0), k('CLOSE', 1)]);
      const p = oraclePath(a, 'CLOSED')!;
      const inferred = p.path.slice(1, -1).map((s, i) => `${s}/inferred/${p.events[i]}`);
      expect(trail(m), a).toEqual([`${a}/kernel/-`, ...inferred, 'CLOSE/kernel/-', `CLOSED/inferred/${p.events.at(-1)}`]);
      expect(m.history.map((h) => h.at), a).toEqual([0, ...inferred.map(() => 1), 1, 1]);
      expect(m.anomalies, a).toEqual([]);
      // A later sock_diag miss confirms it; a TIME_WAIT would be an anomaly.
      expect(observe(m, d('CLOSED', 2)).model, a).toBe(m);
      expect(observe(m, d('TIME_WAIT', 2)).anomaly, a).toBeDefined();
    }
  });

  describe.each(beforeClose.filter((s) => !closeMeansClosed.includes(s)))('first %s, then the fd reads CLOSE', (a) => {
    it('TIME_WAIT or CLOSED resolves it with the path inserted before the CLOSE', () => {
      for (const b of FD_CLOSE_MEANS) {
        const what = `${a} → CLOSE → ${b}`;
        const m = replay([k(a, 0), k('CLOSE', 1), d(b, 2)]);
        const p = oraclePath(a, b);
        if (p === undefined) {
          expect(m.history.at(-1), what).toMatchObject({ state: b, anomaly: true });
          expect(m.anomalies.length, what).toBeGreaterThan(0);
          continue;
        }
        expect(m.anomalies, what).toEqual([]);
        const inferred = p.path.slice(1, -1).map((s, i) => `${s}/inferred/${p.events[i]}`);
        const resolving = `${b}/diag/${p.events.at(-1)}`;
        expect(trail(m), what).toEqual([`${a}/kernel/-`, ...inferred, 'CLOSE/kernel/-', resolving]);
        expect(m.history.map((h) => h.at), what).toEqual([0, ...inferred.map(() => 1), 1, 2]);
      }
    });
  });
});

describe('observe: anomalies and bookkeeping', () => {
  it.each<[string, Observation[], LifecycleState | undefined]>([
    ['TIME_WAIT → ESTABLISHED', [d('TIME_WAIT', 0), k('ESTABLISHED', 1)], 'ESTABLISHED'],
    ['CLOSE_WAIT → FIN_WAIT2', [k('CLOSE_WAIT', 0), k('FIN_WAIT2', 1)], 'FIN_WAIT2'],
    ['CLOSED → TIME_WAIT', [d('CLOSED', 0), d('TIME_WAIT', 1)], 'TIME_WAIT'],
    ['an fd CLOSE → ESTABLISHED', [k('FIN_WAIT2', 0), k('CLOSE', 1), k('ESTABLISHED', 2)], 'ESTABLISHED'],
    ['LAST_ACK, CLOSE, then TIME_WAIT', [k('LAST_ACK', 0), k('CLOSE', 1), d('TIME_WAIT', 2)], 'TIME_WAIT'],
    ['BOUND_INACTIVE → CLOSE', [d('BOUND_INACTIVE', 0), k('CLOSE', 1)], 'CLOSE'],
  ])('%s is flagged, kept, and the model goes on from it', (_name, observations, state) => {
    const m = replay(observations);
    const last = observations.at(-1)! as { state: LifecycleState; at: number; source: Source };
    expect(m.history.at(-1)).toEqual({ ...last, anomaly: true });
    expect(m.anomalies).toHaveLength(1);
    expect(m.anomalies[0]).toMatchObject({ state: last.state, at: last.at });
    expect(m.anomalies[0]!.reason).toMatch(new RegExp(`^${last.state} after `));
    expect(m.state).toBe(state);
  });

  it('an event that cannot happen is an anomaly and changes no state', () => {
    const base = replay([k('ESTABLISHED', 0), d('CLOSED', 1)]);
    const step = observe(base, ev('rst-received', 2)); // ECONNRESET reported too late
    expect(step.model.state).toBe('CLOSED');
    expect(step.model.history).toBe(base.history);
    expect(step.anomaly).toMatchObject({ from: 'CLOSED', event: 'rst-received', at: 2 });
    expect(step.model.anomalies).toEqual([step.anomaly]);
    const nothing = observe(createModel(), ev('rst-received', 0));
    expect(nothing.anomaly?.reason).toMatch(/after nothing/);
    expect(nothing.model.history).toEqual([]);
  });

  it('after an anomaly, events before it no longer confirm events after it', () => {
    const m = replay([
      k('ESTABLISHED', 0),
      k('CLOSE_WAIT', 1),
      d('TIME_WAIT', 2), // anomaly
      k('ESTABLISHED', 3), // anomaly
      ev('fin', 4), // not confirmed by the 'fin' before the anomalies
    ]);
    expect(trail(m).slice(-2)).toEqual(['ESTABLISHED/kernel/-!', 'CLOSE_WAIT/event/fin']);
  });

  it('an fd that reads CLOSE first (watch started late) takes TIME_WAIT or CLOSED as they come', () => {
    const m = replay([k('CLOSE', 0), d('TIME_WAIT', 1), d('CLOSED', 2)]);
    expect(trail(m)).toEqual(['CLOSE/kernel/-', 'TIME_WAIT/diag/-', 'CLOSED/diag/2msl']);
    expect(m.anomalies).toEqual([]);
    expect(outcomeOf(m.history)).toBe('graceful');
  });

  it('repeats and CLOSE read in TIME_WAIT return the very same model', () => {
    const m = replay([k('ESTABLISHED', 0), d('TIME_WAIT', 1)]);
    expect(observe(m, d('TIME_WAIT', 2)).model).toBe(m);
    expect(observe(m, k('CLOSE', 2)).model).toBe(m);
    const pending = replay([k('ESTABLISHED', 0), k('CLOSE', 1)]);
    expect(observe(pending, k('CLOSE', 2)).model).toBe(pending);
  });

  it('never mutates: every observation makes a new model, and old models stay as they were', () => {
    const empty = createModel();
    const one = observe(empty, k('ESTABLISHED', 0)).model;
    const oneHistory = [...one.history];
    const two = observe(one, k('FIN_WAIT2', 1)).model;
    const three = observe(two, k('ESTABLISHED', 2)).model; // an anomaly: a new anomalies list too
    expect(empty.history).toEqual([]);
    expect(Object.isFrozen(empty) && Object.isFrozen(empty.history)).toBe(true); // shared by all
    expect(one.history).toEqual(oneHistory);
    expect(two.history).toHaveLength(3);
    expect(two.history).not.toBe(one.history);
    expect(two.anomalies).toEqual([]);
    expect(three.anomalies).toHaveLength(1);
    expect(three.history).toHaveLength(4);
    expect(two.history).toHaveLength(3);
    expect(Object.isFrozen(completePath('ESTABLISHED', 'CLOSED')!.path)).toBe(true);
  });
});

describe('changesOf: the transitions a watcher emits', () => {
  /** Folds `observations` and collects the changes each one made, as a Lifecycle emits them. */
  function fold(observations: Observation[]): { model: CloseModel; changes: StateChange[]; first: StateChange[] } {
    let model = createModel();
    const changes: StateChange[] = [];
    let first: StateChange[] = [];
    observations.forEach((o, i) => {
      const step = observe(model, o);
      model = step.model;
      const made = changesOf(model.history, step.entries);
      if (i === 0) first = made;
      changes.push(...made);
    });
    return { model, changes, first };
  }
  const arrow = (c: StateChange) => `${c.from}->${c.entry.state}/${c.entry.source}`;

  it('the first state observed is where watching began, not a transition', () => {
    for (const a of STATES) {
      const step = observe(createModel(), k(a, 0));
      expect(step.entries.map((h) => h.state), a).toEqual([a]);
      expect(changesOf(step.model.history, step.entries), a).toEqual([]);
      const then = observe(step.model, ev('rst-received', 1));
      for (const c of changesOf(then.model.history, then.entries)) expect(c.from, a).toBe(a);
    }
  });

  it('the first transition leaves the first state observed; inferred steps chain', () => {
    const { changes } = fold([k('SYN_SENT', 0), k('ESTABLISHED', 1), k('FIN_WAIT2', 2)]);
    expect(changes.map(arrow)).toEqual([
      'SYN_SENT->ESTABLISHED/kernel',
      'ESTABLISHED->FIN_WAIT1/inferred',
      'FIN_WAIT1->FIN_WAIT2/kernel',
    ]);
  });

  it('a state inserted before an fd CLOSE follows the state before that CLOSE', () => {
    const { model, changes } = fold([k('ESTABLISHED', 0), k('CLOSE', 1), d('TIME_WAIT', 2)]);
    expect(trail(model)).toEqual(['ESTABLISHED/kernel/-', 'FIN_WAIT1/inferred/close', 'CLOSE/kernel/-', 'TIME_WAIT/diag/fin-ack']);
    expect(changes.map(arrow)).toEqual([
      'ESTABLISHED->CLOSE/kernel',
      'ESTABLISHED->FIN_WAIT1/inferred',
      'CLOSE->TIME_WAIT/diag',
    ]);
    // An fd that read CLOSE first: CLOSE is the first state, TIME_WAIT the first transition.
    expect(fold([k('CLOSE', 0), d('TIME_WAIT', 1)]).changes.map(arrow)).toEqual(['CLOSE->TIME_WAIT/diag']);
  });

  it('over every three observed states: one change per entry after the first, each from a real state', () => {
    for (const a of STATES) {
      for (const b of STATES) {
        for (const c of STATES) {
          const what = `${a} → ${b} → ${c}`;
          const { model, changes, first } = fold([k(a, 0), d(b, 1), k(c, 2), ev('rst-received', 3)]);
          expect(first, what).toEqual([]);
          expect(changes.map((x) => x.entry).sort((x, y) => model.history.indexOf(x) - model.history.indexOf(y)), what).toEqual(
            model.history.slice(1),
          );
          for (const x of changes) expect(LIFECYCLE_STATES, what).toContain(x.from);
          if (!model.history.some((h) => h.state === 'CLOSE')) {
            // Nothing was inserted: the changes, in order, are the history's consecutive pairs.
            expect(changes.map((x) => x.from), what).toEqual(model.history.slice(0, -1).map((h) => h.state));
          }
        }
      }
    }
  });
});
