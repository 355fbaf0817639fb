// Types of bench/shutdown-app.mjs, for test/shutdown-load.test.ts.
import type http from 'node:http';
import type net from 'node:net';

export declare const WORKLOAD: {
  getBytes: number;
  postBytes: number;
  uploadBytes: number;
  uploadChunk: number;
  uploadChunkMs: number;
  slowMs: number;
};

export interface AppLog {
  /** Request ids (the client's x-request-id) in the order the app received them. */
  received: string[];
  /** Request ids whose response the app finished (res 'finish'). */
  finished: string[];
}

export interface AppConnections {
  accepted: number;
  open: Set<net.Socket>;
  lastClosedAt: number;
}

export declare function createApp(options?: { slowMs?: number; getBytes?: number; keepAliveTimeout?: number; tls?: { key: Buffer; cert: Buffer } }): {
  server: http.Server;
  log: AppLog;
  connections: AppConnections;
};

export interface Strategy {
  label: string;
  setup(server: http.Server, deadline: number): void;
  shutdown(server: http.Server, deadline: number): Promise<unknown>;
}

export declare function strategies(deps: { finwait: unknown; createHttpTerminator: unknown; stoppable: unknown }): Record<'node' | 'http-terminator' | 'stoppable' | 'finwait' | 'node-idle', Strategy>;

export declare function whenAllClosed(server: http.Server, connections: AppConnections): Promise<number>;
