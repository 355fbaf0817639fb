// Types of bench/restart.mjs, for test/handoff-nginx.test.ts.
export type Strategy = 'finwait' | 'node' | 'http-terminator' | 'stoppable' | 'terminus';
export type Mode = 'handoff' | 'gap';
export type Config = 'default' | 'max_fails=0';

export interface RestartOptions {
  rounds: number;
  strategies: Strategy[];
  modes: Mode[];
  configs: Config[];
  connections: number;
  rate: number;
  postBytes: number;
  deadline: number;
  pauseMs: number;
  warmup: number;
  tailMs: number;
  timeoutMs: number;
  migrateReq: number;
  path: 'auto' | 'netns' | 'loopback';
  onRun?: (run: RestartRun) => void;
}

export interface RestartRun {
  strategy: Strategy;
  mode: Mode;
  config: Config;
  migrateReq: number | undefined;
  netns: boolean;
  /** Per request kind, outcome ('ok', 'status-502', 'reset', 'timeout', ...) -> count. */
  client: { counts: Record<'get' | 'post', Record<string, number>>; failures: { at: number; kind: string; outcome: string }[]; ms: number };
  errorLog: { kinds: Record<string, number>; others: string[] };
  accessLog: { requests: number; retried: number };
  restarts: { exit: number | string; ms: number; totalMs: number; summary?: string }[];
  loadMs: number;
}

export type RestartResult = { skipped: string } | { options: RestartOptions; runs: RestartRun[]; nginx: string; seconds: number; skipped?: undefined };

export declare const STRATEGIES: Strategy[];
export declare const DEFAULTS: RestartOptions;
export declare function restartAvailable(): { ok: true } | { ok: false; reason: string };
export declare function nginxBinary(): string | undefined;
export declare function benchRestart(overrides?: Partial<RestartOptions>): Promise<RestartResult>;
export declare function formatRestart(result: RestartResult): string;
