/**
 * `gracefulShutdown()`: the steps a deployment needs around `closeServer()`. On SIGTERM or SIGINT
 * readiness turns false (a flag, and optionally 503 on a readiness path while liveness stays 200),
 * the server keeps serving for a pre-stop delay while load balancers and endpoint lists catch up,
 * then `closeServer()` closes every connection by its deadline; a second signal forces (what is
 * still open is reset at once). The final report is logged as one line (the whole report on
 * request), handed to the application, and the exit code says whether the shutdown was clean.
 */
import { constants as osConstants } from 'node:os';
import net from 'node:net';
import type http from 'node:http';
import { performance } from 'node:perf_hooks';
import { debuglog } from 'node:util';
import { timerAt, type TimerAt } from './timer-at';
import { codedError, checkTimerMs, invalidArgType } from './errors';
import { handoffState, migrationCounters, type HandoffState, type MigrationCounters } from './handoff';
import { closeServer, type ServerCloseReport } from './server';

const debug = debuglog('finwait');

/** Options of `gracefulShutdown()`. */
export interface GracefulShutdownOptions {
  /**
   * Signals that begin the shutdown; the next one of them forces it, and one more exits at once
   * (code 1). Default `['SIGTERM', 'SIGINT']`; `[]` for none (call `begin()` yourself, e.g. from
   * close-with-grace).
   */
  signals?: NodeJS.Signals[];
  /**
   * ms the server keeps serving, and accepting, after the signal (readiness already false) before
   * `closeServer()` begins: time for load balancers and Kubernetes endpoints to stop sending new
   * connections. Default 0.
   */
  preStopDelay?: number;
  /** `closeServer()`'s deadline: ms from the end of the pre-stop delay; default 10 000. */
  timeout?: number;
  /** `closeServer()`'s `drainWindow`; default its own (500 ms). */
  drainWindow?: number;
  /**
   * A path (`'/readyz'`) answered before the application sees the request: 200 while serving,
   * 503 from the signal on. For node:http, https and http2 servers and the frameworks on them.
   */
  readinessPath?: string;
  /** A path (`'/livez'`) answered 200 as long as the process runs, shutdown included. */
  livenessPath?: string;
  /**
   * Called with the final report once every connection is closed, before the process exits
   * (awaited): close the rest of the application here, e.g. `() => fastify.close()` for
   * Fastify's onClose hooks. If it throws, the exit code is 1.
   */
  onShutdown?: (report: ShutdownReport) => unknown;
  /** Where the one-line summary goes: a function taking the line, or `false`; default stderr. */
  log?: ((line: string) => void) | false;
  /** Also log the whole report, as JSON, after the summary line; default false. */
  logReport?: boolean;
  /** Exit the process once done, with the report's `exitCode`; default true. */
  exit?: boolean;
}

/** Where the shutdown is. */
export type ShutdownPhase = 'serving' | 'pre-stop' | 'closing' | 'closed';

/** What `gracefulShutdown()` did. */
export interface ShutdownReport {
  /** What began it: the signal's name, or the reason given to `begin()`. */
  trigger: string;
  /** What forced it (a second signal's name, or the reason given to `force()`): everything still open was reset at once. */
  forcedBy?: string;
  /** ms the server served after the trigger before `closeServer()` began (shorter than the pre-stop delay when forced). */
  preStop: number;
  /**
   * The listener's handoff, seen as `closeServer()` began: other listeners on the same address
   * and port (its SO_REUSEPORT group, see `listenReusePort()`), whether the kernel migrates the
   * accept queue to them, and the kernel's migration counters of this network namespace over the
   * close (other listeners of the namespace closing at the same time would count there too).
   * A count that could not be read is -1.
   */
  handoff: HandoffState & { migrated: number; migrationFailed: number };
  /** `closeServer()`'s report; absent if it threw (see `error`). */
  server?: ServerCloseReport;
  /** What `closeServer()` or `onShutdown` threw. */
  error?: Error;
  /** ms from the trigger until every connection was closed. */
  duration: number;
  /**
   * True when nothing went wrong that finwait saw: not forced, no error, no RST sent, no
   * connection destroyed and none interrupted (the application's work cut short without an RST),
   * and no connection left in the accept queue of a listener that closed without another to
   * migrate it to (`server.queuedAtClose`: the kernel reset those) nor a handshake under way at
   * that close (`server.handshakesAtClose`); a peer's own RST does not count.
   */
  clean: boolean;
  /** 0 when clean, 1 otherwise: the process's exit code with `exit: true`. */
  exitCode: 0 | 1;
}

/** The handle `gracefulShutdown()` returns. */
export interface GracefulShutdown {
  /** Whether the server should get new traffic: listening, and no shutdown begun. */
  readonly ready: boolean;
  readonly phase: ShutdownPhase;
  /**
   * Begins the shutdown as the first signal does (pre-stop delay, then `closeServer()`), with
   * `reason` as its trigger; resolves with the report. Later calls return the same promise.
   */
  begin(reason?: string): Promise<ShutdownReport>;
  /** Forces the shutdown as a second signal does (begun first if need be): what is open is reset now. */
  force(reason?: string): void;
  /** Removes the signal handlers and the health paths; the shutdown, if begun, goes on. */
  dispose(): void;
}

const DEFAULT_SIGNALS: NodeJS.Signals[] = ['SIGTERM', 'SIGINT'];

const UNKNOWN_COUNTERS: MigrationCounters = { migrated: -1, failed: -1 };

/** `read()`, or `fallback` if it throws: for what a report observes along the way. */
function observed<T>(read: () => T, fallback: T): T {
  try {
    return read();
  } catch (error) {
    debug('shutdown: %s', (error as Error).message);
    return fallback;
  }
}
const DEFAULT_TIMEOUT_MS = 10_000;

interface Settings {
  signals: NodeJS.Signals[];
  preStopDelay: number;
  timeout: number;
  drainWindow: number | undefined;
  readinessPath: string | undefined;
  livenessPath: string | undefined;
  onShutdown: ((report: ShutdownReport) => unknown) | undefined;
  log: ((line: string) => void) | undefined;
  logReport: boolean;
  exit: boolean;
}

function invalidValue(name: string, why: string, value: unknown): TypeError & { code: string } {
  return Object.assign(new TypeError(`The argument '${name}' ${why}. Received ${JSON.stringify(value)}`), { code: 'ERR_INVALID_ARG_VALUE' });
}

function checkPath(value: unknown, name: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'string') throw invalidArgType(name, 'of type string', value);
  if (!value.startsWith('/') || /[?#\s]/.test(value)) throw invalidValue(name, "must be a path starting with '/', without query or fragment", value);
  return value;
}

function checkBoolean(value: unknown, name: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw invalidArgType(name, 'of type boolean', value);
  return value;
}

function validate(options: unknown): Settings {
  if (options === null || typeof options !== 'object') throw invalidArgType('options', 'of type object', options);
  const o = options as GracefulShutdownOptions;
  const signals = o.signals ?? DEFAULT_SIGNALS;
  if (!Array.isArray(signals)) throw invalidArgType('options.signals', 'an array of signal names', signals);
  for (const signal of signals) {
    if (typeof signal !== 'string') throw invalidArgType('options.signals', 'an array of signal names', signal);
    if (!(signal in osConstants.signals)) throw codedError('ERR_UNKNOWN_SIGNAL', `Unknown signal: ${signal}`);
    if (signal === 'SIGKILL' || signal === 'SIGSTOP') throw invalidValue('options.signals', `cannot include ${signal}, which no process can catch`, signal);
  }
  const readinessPath = checkPath(o.readinessPath, 'options.readinessPath');
  const livenessPath = checkPath(o.livenessPath, 'options.livenessPath');
  if (readinessPath !== undefined && readinessPath === livenessPath) {
    throw invalidValue('options.livenessPath', 'must differ from options.readinessPath', livenessPath);
  }
  if (o.onShutdown !== undefined && typeof o.onShutdown !== 'function') throw invalidArgType('options.onShutdown', 'of type function', o.onShutdown);
  if (o.log !== undefined && o.log !== false && typeof o.log !== 'function') throw invalidArgType('options.log', 'a function or false', o.log);
  return {
    signals: [...new Set(signals)],
    preStopDelay: checkTimerMs(o.preStopDelay ?? 0, 'options.preStopDelay'),
    timeout: checkTimerMs(o.timeout ?? DEFAULT_TIMEOUT_MS, 'options.timeout'),
    drainWindow: o.drainWindow === undefined ? undefined : checkTimerMs(o.drainWindow, 'options.drainWindow'),
    readinessPath,
    livenessPath,
    onShutdown: o.onShutdown,
    log: o.log === false ? undefined : (o.log ?? ((line: string) => void process.stderr.write(`${line}\n`))),
    logReport: checkBoolean(o.logReport, 'options.logReport', false),
    exit: checkBoolean(o.exit, 'options.exit', true),
  };
}

/**
 * Shuts `server` down gracefully when the process is told to stop; see the module comment and
 * `GracefulShutdownOptions`. Works with node:http, https and http2 servers and the frameworks
 * built on them (Express: the server `app.listen()` returns; Fastify: `fastify.server`, with
 * `onShutdown: () => fastify.close()`), and with plain `net` servers (without the health paths).
 */
export function gracefulShutdown(server: net.Server, options: GracefulShutdownOptions = {}): GracefulShutdown {
  if (!(server instanceof net.Server)) throw invalidArgType('server', 'an instance of net.Server', server);
  const settings = validate(options);
  let phase: ShutdownPhase = 'serving';
  let trigger = '';
  let triggeredAt = 0;
  let forcedBy: string | undefined;
  let signalsSeen = 0;
  let preStopTimer: TimerAt | undefined;
  let startClosing: (() => void) | undefined;
  let result: Promise<ShutdownReport> | undefined;
  const abort = new AbortController();

  const health = settings.readinessPath !== undefined || settings.livenessPath !== undefined ? answerHealth(server, settings, () => handle.ready, () => phase) : undefined;

  const run = async (): Promise<ShutdownReport> => {
    debug('shutdown: %s, ready false, pre-stop %d ms', trigger, settings.preStopDelay);
    phase = 'pre-stop';
    if (settings.preStopDelay > 0 && !forcedBy) {
      await new Promise<void>((resolve) => {
        startClosing = resolve;
        // Served the whole delay, never ~2 ms less (timerAt()).
        preStopTimer = timerAt(triggeredAt + settings.preStopDelay, resolve);
      });
      preStopTimer?.clear();
    }
    phase = 'closing';
    const preStop = performance.now() - triggeredAt;
    debug('shutdown: closeServer(timeout %d ms) after %d ms', settings.timeout, preStop);
    // What the report says of the handoff is read before and after; a read that fails (out of
    // fds, say) makes it unknown (-1), never the shutdown fail.
    const handoff = observed(() => handoffState(server), { otherListeners: -1, migrateReq: undefined });
    const before = observed(() => migrationCounters(), UNKNOWN_COUNTERS);
    let serverReport: ServerCloseReport | undefined;
    let error: Error | undefined;
    try {
      const closing = closeServer(server, {
        timeout: settings.timeout,
        signal: abort.signal,
        ...(settings.drainWindow === undefined ? {} : { drainWindow: settings.drainWindow }),
      });
      // Forced before closeServer() began: it resets everything once the accept queue is taken in.
      if (forcedBy) abort.abort(forcedBy);
      serverReport = await closing;
    } catch (caught) {
      error = caught as Error;
    }
    const after = observed(() => migrationCounters(), UNKNOWN_COUNTERS);
    const known = before !== UNKNOWN_COUNTERS && after !== UNKNOWN_COUNTERS;
    phase = 'closed';
    const totals = serverReport?.totals;
    // Connections left in a drained accept queue when the listener closed were reset by the kernel,
    // and so is a client whose handshake was under way then, once its last ACK comes.
    const queueLost = serverReport?.acceptQueue === 'drained' && (serverReport.queuedAtClose > 0 || serverReport.handshakesAtClose > 0);
    const clean =
      !forcedBy && !error && totals !== undefined && totals.resetSent === 0 && totals.destroyed === 0 && totals.interrupted === 0 && !queueLost;
    const report: ShutdownReport = {
      trigger,
      ...(forcedBy ? { forcedBy } : {}),
      preStop,
      handoff: {
        ...handoff,
        migrated: known ? after.migrated - before.migrated : -1,
        migrationFailed: known ? after.failed - before.failed : -1,
      },
      ...(serverReport ? { server: serverReport } : {}),
      ...(error ? { error } : {}),
      duration: performance.now() - triggeredAt,
      clean,
      exitCode: clean ? 0 : 1,
    };
    settings.log?.(summaryLine(report));
    if (settings.logReport) settings.log?.(JSON.stringify(report, jsonSafe));
    if (settings.onShutdown) {
      try {
        await settings.onShutdown(report);
      } catch (caught) {
        report.error ??= caught as Error;
        report.clean = false;
        report.exitCode = 1;
        settings.log?.(`finwait: onShutdown threw: ${(caught as Error)?.stack ?? String(caught)}`);
      }
    }
    if (settings.exit) process.exit(report.exitCode);
    return report;
  };

  const begin = (reason = 'begin()'): Promise<ShutdownReport> => {
    if (result) return result;
    if (typeof reason !== 'string') throw invalidArgType('reason', 'of type string', reason);
    trigger = reason;
    triggeredAt = performance.now();
    result = run();
    return result;
  };

  const force = (reason = 'force()'): void => {
    if (typeof reason !== 'string') throw invalidArgType('reason', 'of type string', reason);
    if (forcedBy || phase === 'closed') return;
    forcedBy = reason;
    debug('shutdown: forced by %s in phase %s', reason, phase);
    if (!result) void begin(reason);
    else if (phase === 'pre-stop') startClosing?.();
    else if (phase === 'closing') abort.abort(reason);
  };

  const onSignal = (signal: NodeJS.Signals): void => {
    signalsSeen++;
    if (signalsSeen === 1) void begin(signal);
    else if (signalsSeen === 2) force(signal);
    else if (settings.exit) {
      settings.log?.(`finwait: ${signal} again during the shutdown: exiting now`);
      process.exit(1);
    }
  };
  for (const signal of settings.signals) process.on(signal, onSignal);

  const handle: GracefulShutdown = {
    get ready() {
      return phase === 'serving' && server.listening;
    },
    get phase() {
      return phase;
    },
    begin,
    force,
    dispose() {
      for (const signal of settings.signals) process.off(signal, onSignal);
      health?.remove();
    },
  };
  return handle;
}

/**
 * Answers the health paths before the application: through the server's `emit`, so that the
 * answer comes first whatever order the 'request' listeners were added in, and the application
 * never sees these requests.
 */
function answerHealth(server: net.Server, settings: Settings, ready: () => boolean, phase: () => ShutdownPhase): { remove(): void } {
  const own = Object.prototype.hasOwnProperty.call(server, 'emit');
  const emit = server.emit as (this: net.Server, event: string | symbol, ...args: unknown[]) => boolean;
  const wrapped = function (this: net.Server, event: string | symbol, ...args: unknown[]): boolean {
    if (event === 'request') {
      const [req, res] = args as [http.IncomingMessage, http.ServerResponse];
      const path = (req.url ?? '').split('?')[0];
      const readiness = path === settings.readinessPath;
      if (readiness || path === settings.livenessPath) {
        const ok = readiness ? ready() : true;
        const body = readiness ? (ok ? 'ready\n' : 'shutting down\n') : 'alive\n';
        // Once the shutdown has begun, the probe's connection is not kept for another request.
        if (phase() !== 'serving' && 'shouldKeepAlive' in res) res.shouldKeepAlive = false;
        res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
        res.end(body);
        return true;
      }
    }
    return emit.call(this, event, ...args);
  } as typeof server.emit;
  server.emit = wrapped;
  return {
    remove() {
      if (server.emit !== wrapped) return;
      if (own) server.emit = emit;
      else delete (server as { emit?: unknown }).emit;
    },
  };
}

/**
 * The report as one line: `finwait: shutdown on SIGTERM: served 5002 ms more, then closed 3
 * connections in 41 ms (3 graceful, 0 reset sent, 0 reset by the peer); clean, exit code 0`.
 */
export function summaryLine(report: ShutdownReport): string {
  let line = `finwait: shutdown on ${report.trigger}${report.forcedBy ? `, forced by ${report.forcedBy}` : ''}: served ${Math.round(report.preStop)} ms more`;
  const server = report.server;
  if (server) {
    const t = server.totals;
    const ends = [`${t.graceful} graceful`, `${t.resetSent} reset sent`, `${t.resetReceived} reset by the peer`];
    if (t.handedOff) ends.push(`${t.handedOff} handed off open to the next instance`);
    if (t.interrupted) ends.push(`${t.interrupted} interrupted (no RST, but the application's work did not complete)`);
    if (t.destroyed) ends.push(`${t.destroyed} destroyed (not reset, not graceful)`);
    line += `, then ${t.handedOff ? 'closed or handed off' : 'closed'} ${t.total} connection${t.total === 1 ? '' : 's'} in ${Math.round(server.duration)} ms (${ends.join(', ')})`;
    const waiting = `${server.queuedAtClose} connection${server.queuedAtClose === 1 ? '' : 's'}`;
    if (server.acceptQueue === 'migrated') line += `; accept queue left to the kernel to migrate (${server.queuedAtClose < 0 ? 'length unknown' : `${waiting} in it`} at the close)`;
    else if (server.acceptQueue === 'drained' && server.queuedAtClose > 0) line += `; ${waiting} still in the accept queue at the close (reset by the kernel)`;
    const handshakes = server.handshakesAtClose;
    if (server.acceptQueue === 'drained' && handshakes > 0) {
      line += `; ${handshakes} handshake${handshakes === 1 ? '' : 's'} still under way at the close (the client reset when its last ACK comes)`;
    }
  }
  if (report.error) line += `; error: ${report.error.message}`;
  const h = report.handoff;
  if (h.otherListeners > 0) {
    const migrate = h.migrateReq === undefined ? 'absent' : h.migrateReq ? '1' : '0';
    line += `; ${h.otherListeners} other listener${h.otherListeners === 1 ? '' : 's'} on the port (tcp_migrate_req ${migrate}: ${h.migrated} migrated, ${h.migrationFailed} not)`;
  }
  return `${line}; ${report.clean ? 'clean' : 'not clean'}, exit code ${report.exitCode}`;
}

/** JSON.stringify replacer: errors as their name, code and message; bigints as strings. */
function jsonSafe(_key: string, value: unknown): unknown {
  if (value instanceof Error) return { name: value.name, message: value.message, ...((value as { code?: unknown }).code !== undefined ? { code: (value as { code?: unknown }).code } : {}) };
  if (typeof value === 'bigint') return value.toString();
  return value;
}
