/**
 * Node's side of a watched socket: its events (`'end'`, `'error'`, `'connect'`, and `'finish'`
 * and `'close'` where the handle could not be hooked), hooks on its handle's `shutdown` (this
 * end's FIN is about to go out) and `close` (the last look at the fd, just before Node closes it),
 * and what other finwait calls tell about it (`finwait:socket:observed`, `finwait:socket:fin`,
 * `finwait:socket:reset`). Most transitions of a socket whose fd Node holds are seen here.
 */
import diagnosticsChannel from 'node:diagnostics_channel';
import type net from 'node:net';
import { debuglog } from 'node:util';
import { constants, native } from '../../binding';
import { handleFd } from '../../fd';
import { FIN_CHANNEL, OBSERVED_CHANNEL, RESET_CHANNEL, socketErrorOf } from '../../ops';
import { stateMask, type TcpState } from '../../states';
import { stateOrThrow, TCP_INFO_BUFFER_SIZE, TCPI_DATA_SEGS_IN } from '../../tcp-info';
import type { CloseEvent, LifecycleState } from '../fsm';
import { AWAIT_MS, FAST_MS, arm, now, scheduleAt, scheduleOpen, wake } from '../schedule';
import {
  BEFORE_TIME_WAIT,
  byFd,
  FIN_SENT,
  kWatched,
  observeFd,
  readState,
  RESET_FROM,
  UNSYNCHRONIZED,
  type Watched,
  type WithWatcher,
} from '../watched';
import { identify, identifyBeforeFin, nameUnhooked, noteRstsAtClose, start } from './diag-follow';

const debug = debuglog('finwait');


/**
 * The fd Node holds for `w` now; notes a new one (the hooks, and the first look unless `look` is
 * false: 'connect' said ESTABLISHED).
 */
export function noteFd(w: Watched, fd: number, at: number, look = true): boolean {
  if (w.fd === fd) return false;
  if (w.fd >= 0 && byFd[w.fd] === w) byFd[w.fd] = undefined;
  const first = w.fd < 0;
  w.fd = fd;
  byFd[fd] = w;
  if (first) {
    hookHandle(w);
    if (w.phase === 'pending') w.phase = 'open';
    if (look) start(w, fd, at);
    nameUnhooked(w, fd, at);
    return true;
  }
  return false;
}

/** The fd is gone: from now on, sock_diag. */
export function toGone(w: Watched): void {
  if (w.phase === 'gone') return;
  w.phase = 'gone';
  w.step = FAST_MS;
  if (w.fd >= 0 && byFd[w.fd] === w) byFd[w.fd] = undefined;
  // Its fd is closed: the socket can be collected while the connection is followed (60 s of
  // TIME_WAIT); its listeners stay, and ignore an ended watcher.
  if (w.socket?.destroyed) w.socket = undefined;
}

/**
 * Hooks the socket's handle (false where it cannot: no handle yet, or hooked by someone else).
 * Its `shutdown` (Node's end()) names the connection before the FIN goes out and starts the fast
 * cadence. Its `close` takes a last look just before Node closes the fd: the kernel decides
 * between FIN and RST at that moment, on unread bytes and SO_LINGER {1, 0}. One native call
 * (none once the fd read CLOSE, which it reads for good): the state, and SO_LINGER, SIOCINQ and
 * TCP_LINGER2 only in a state where they decide.
 */
function hookHandle(w: Watched): boolean {
  if (w.hooked) return true;
  const socket = w.socket!;
  type Method = (...args: unknown[]) => unknown;
  const handle = (socket as unknown as { _handle?: { close?: Method; shutdown?: Method } | null })._handle;
  if (!handle || typeof handle.close !== 'function' || typeof handle.shutdown !== 'function') return false;
  if (Object.hasOwn(handle, 'close') || Object.hasOwn(handle, 'shutdown')) return false;
  w.hooked = true;
  const { close, shutdown } = handle;
  // Node's end() (its _final) calls shutdown just before libuv sends the FIN.
  handle.shutdown = function (this: unknown, ...args: unknown[]) {
    try {
      identifyBeforeFin(w, handleFd(socket));
    } catch (error) {
      debug('shutdown hook: %s', (error as Error).message);
    }
    closing(w);
    return shutdown.apply(this, args);
  };
  handle.close = function (this: unknown, ...args: unknown[]) {
    try {
      const fd = handleFd(socket);
      if (fd >= 0 && !w.ended) {
        let state: TcpState = 'CLOSE';
        // One call (none once the fd read CLOSE, which it reads for good): the state, and in a
        // synchronized state what decides the close with it (closeLook). A socket not named yet is
        // named if closing the fd leaves a connection to follow: an orphan (its FIN or RST goes
        // out now), or an fd's CLOSE the model cannot resolve alone. A CLOSE after LAST_ACK ends it here.
        if (!w.fdClose) {
          const at = now();
          (native().closeLook ?? closeLookByCalls)(fd, look, UNSYNCHRONIZED_MASK);
          observeFd(w, (state = stateOrThrow(look[0]!)), at);
          if (w.id === undefined && !w.ended && (state === 'CLOSE' || !UNSYNCHRONIZED.has(state))) state = identify(w, fd, at);
        }
        if (w.ended) return close.apply(this, args);
        let unread = 0;
        let linger0 = false;
        let linger2 = 0;
        // Synchronized only if closeLook found it so (a later read by identify() can only be
        // CLOSE), so the rest of `look` was read.
        if (!UNSYNCHRONIZED.has(state)) {
          // The connection outlives the fd (an orphan; or it is reset now): the event back-end,
          // if any, reports its end. An fd that reads CLOSE has no full socket left behind.
          if (w.id !== undefined) w.events?.follow(w, fd);
          linger0 = look[LOOK_ONOFF] !== 0 && look[LOOK_LINGER] === 0;
          if (!linger0) unread = look[LOOK_UNREAD]!;
          // In FIN_WAIT2, tcp_close() sends an RST instead of waiting when TCP_LINGER2 is negative.
          if (state === 'FIN_WAIT2' && !linger0 && unread === 0) linger2 = look[LOOK_LINGER2]!;
          // An orphan with our FIN sent answers new data with an RST: what it had received by now
          // tells, at its end, whether data came after (the destroy multicast gives its final
          // tcp_info; for a timewait socket that takes over, the namespace's count of RSTs sent).
          if (BEFORE_TIME_WAIT.has(state) && !linger0 && unread === 0 && linger2 >= 0) {
            noteRstsAtClose(w);
            if (w.awaiting && w.events?.finalTcpInfo) w.segsInAtClose = look[LOOK_SEGS_IN] === -1 ? undefined : look[LOOK_SEGS_IN]! >>> 0;
          }
        }
        w.closedWith = { state, unread, linger0, linger2 };
      }
    } catch (error) {
      debug('close hook: %s', (error as Error).message);
    }
    const result = close.apply(this, args);
    // The fd is closed now (libuv closes it at once; 'close' comes on a later turn, possibly after
    // a poll): what closing it did is known already.
    if (!w.ended) {
      closed(w);
      toGone(w);
      // An orphan an event back-end follows is looked at only by the safety net until its report.
      if (w.awaiting && !w.ended) {
        scheduleAt(w, now() + AWAIT_MS);
        arm();
      } else wake(w);
    }
    return result;
  };
  return true;
}

/**
 * What the close hook reads with `closeLook()`: tcpi_state, SO_LINGER's l_onoff and l_linger,
 * SIOCINQ, TCP_LINGER2, tcpi_data_segs_in (-1 where the kernel has none). One array for every socket:
 * the hook uses it before it returns.
 */
const look = new Int32Array(6);
const LOOK_ONOFF = 1;
const LOOK_LINGER = 2;
const LOOK_UNREAD = 3;
const LOOK_LINGER2 = 4;
const LOOK_SEGS_IN = 5;

const info = new Uint8Array(TCP_INFO_BUFFER_SIZE);

/** @internal The states where closing the fd sends nothing SO_LINGER, unread bytes or TCP_LINGER2 could change: closeLook reads only the state. */
export const UNSYNCHRONIZED_MASK = stateMask(UNSYNCHRONIZED);

/**
 * @internal closeLook() one call at a time, for an addon built before it had closeLook (a build/
 * left from an older checkout).
 */
export function closeLookByCalls(fd: number, out: Int32Array, stopStates: number): boolean {
  const n = native();
  const { IPPROTO_TCP, TCP_LINGER2, SIOCINQ } = constants();
  const length = n.tcpInfo(fd, info);
  out[0] = info[0]!;
  out[LOOK_SEGS_IN] = length >= TCPI_DATA_SEGS_IN + 4 ? new DataView(info.buffer).getInt32(TCPI_DATA_SEGS_IN, true) : -1;
  out.fill(0, 1, 5);
  if ((stopStates & (1 << out[0]!)) !== 0) return false;
  const { onoff, linger } = n.getLinger(fd);
  out[LOOK_ONOFF] = onoff;
  out[LOOK_LINGER] = linger;
  out[LOOK_UNREAD] = n.ioctlInt(fd, SIOCINQ);
  out[LOOK_LINGER2] = n.getIntOption(fd, IPPROTO_TCP, TCP_LINGER2);
  return true;
}

/** What closing the fd in `state` did, given what the close hook saw. */
export function closeEvent(w: Watched): CloseEvent | undefined {
  const seen = w.closedWith;
  if (!seen || seen.state === undefined) return undefined;
  const synchronized = !UNSYNCHRONIZED.has(seen.state);
  if (synchronized && (seen.linger0 || seen.unread > 0)) return 'rst-sent';
  if (seen.state === 'FIN_WAIT2' && seen.linger2 < 0) return 'rst-sent';
  if (seen.state === 'ESTABLISHED' || seen.state === 'CLOSE_WAIT') return 'close';
  return undefined;
}

function onEnd(this: net.Socket): void {
  // Node says 'end' for a FIN, and also for an RST that came while bytes were queued (libuv
  // treats the hang-up after a partial read as end-of-file): the kernel tells them apart.
  const w = (this as WithWatcher)[kWatched];
  if (!w || w.ended) return;
  const fd = handleFd(this);
  if (fd < 0) return;
  const { lifecycle } = w;
  try {
    const at = now();
    noteFd(w, fd, at);
    if (w.phase === 'open') w.phase = 'closing';
    const state = w.fdClose ? 'CLOSE' : readState(fd);
    // CLOSE after our FIN went out is TIME_WAIT; before it, only an RST ends a connection here.
    const finSent =
      this.writableFinished ||
      w.rawFin ||
      FIN_SENT.has(lifecycle.model().settled as LifecycleState);
    // After our FIN, CLOSE is TIME_WAIT unless an RST came: then ECONNRESET is pending (the
    // socket's error, taken once for every finwait caller). Node 24 and later emit it as 'error'.
    if (state === 'CLOSE' && (!finSent || socketErrorOf(this, fd) !== 0)) {
      lifecycle.observe({ event: 'rst-received', source: 'event', at });
    }
    observeFd(w, state, at);
  } catch (error) {
    debug('end: %s', (error as Error).message);
  }
  wake(w);
}

function onFinish(this: net.Socket): void {
  // Our FIN went out (Node's end() called shutdown(2)), where the handle could not be hooked.
  const w = (this as WithWatcher)[kWatched];
  if (w && !w.ended) closing(w);
}

/** This end's FIN is going out: FIN_WAIT1 or LAST_ACK, then whatever the peer does. Polled fast. */
function closing(w: Watched): void {
  if (w.ended) return;
  if (w.phase === 'open' || w.phase === 'pending') w.phase = 'closing';
  wake(w);
}

function onError(this: net.Socket, error: NodeJS.ErrnoException): void {
  const w = (this as WithWatcher)[kWatched];
  if (!w || w.ended) return;
  const event: CloseEvent | undefined =
    error.code === 'ECONNRESET' || error.code === 'EPIPE' || error.code === 'ECONNREFUSED'
      ? 'rst-received'
      : error.code === 'ETIMEDOUT'
        ? 'timeout'
        : undefined;
  if (event) w.lifecycle.observe({ event, source: 'event', at: now() });
  wake(w);
}

/** Records what closing the fd did (once), from what the close hook saw. */
function closed(w: Watched): void {
  const event = closeEvent(w);
  w.closedWith = undefined;
  if (event) w.lifecycle.observe({ event, source: 'event', at: now() });
}

function onClose(this: net.Socket): void {
  const w = (this as WithWatcher)[kWatched];
  if (!w || w.ended) return;
  closed(w);
  toGone(w);
  wake(w);
}

function onConnect(this: net.Socket): void {
  const w = (this as WithWatcher)[kWatched];
  if (!w || w.ended) return;
  // 'connect' means the handshake completed, a state polling may have missed.
  const at = now();
  w.lifecycle.observe({ state: 'ESTABLISHED', source: 'event', at });
  const fd = handleFd(this);
  try {
    // Watched while connecting: its fd, unless a poll noted it already.
    if (fd >= 0) noteFd(w, fd, at, false);
  } catch (error) {
    debug('connect: %s', (error as Error).message);
  }
  if (w.ended) return;
  scheduleOpen(w, at, true);
  arm();
}

/** The constructor of the last TCP handle seen: its name is not asked again (a getter call per socket). */
let tcpHandle: unknown;

/** The class of the socket's libuv handle (`'TCP'`, `'Pipe'`), `undefined` without one. */
export function socketHandleKind(socket: net.Socket): string | undefined {
  const handle = (socket as unknown as { _handle?: object | null })._handle;
  if (!handle) return undefined;
  const constructor = handle.constructor;
  if (constructor === tcpHandle) return 'TCP';
  const name = constructor.name;
  if (name === 'TCP') tcpHandle = constructor;
  return name;
}

/**
 * Listens to `w`'s socket: its events, and its handle's shutdown and close where they can be
 * hooked ('finish' and 'close' where they cannot); a socket without an fd yet also for 'connect'.
 */
export function listen(w: Watched, hasFd: boolean): void {
  const socket = w.socket!;
  socket.on('end', onEnd).on('error', onError);
  // This end's FIN and the fd's close are seen by the hooks on the handle (a connecting socket
  // has its handle already); 'finish' and 'close' only where they could not be set.
  if (!hookHandle(w)) socket.on('finish', onFinish).on('close', onClose);
  if (!hasFd) socket.on('connect', onConnect);
}

/** Stops listening to `w`'s socket, once its lifecycle ended. */
export function unlisten(w: Watched): void {
  // A destroyed socket emits nothing more that matters (the handlers ignore an ended watcher).
  if (w.socket && !w.socket.destroyed) {
    w.socket.off('end', onEnd).off('finish', onFinish).off('error', onError).off('close', onClose).off('connect', onConnect);
  }
}


/** States other finwait calls read on a watched socket's fd are observations too. */
diagnosticsChannel.subscribe(OBSERVED_CHANNEL, (message) => {
  const { fd, state } = message as { fd: number; state: TcpState };
  const w = byFd[fd];
  if (w?.socket && handleFd(w.socket) === fd && observeFd(w, state, now())) wake(w);
});

/** A FIN about to go out through `shutdown()`: the connection is named first. */
diagnosticsChannel.subscribe(FIN_CHANNEL, (message) => {
  const { fd } = message as { fd: number };
  const w = byFd[fd];
  if (!w?.socket || handleFd(w.socket) !== fd) return;
  try {
    identifyBeforeFin(w, fd);
  } catch (error) {
    debug('shutdown: %s', (error as Error).message);
  }
  // shutdown(2) follows at once: a CLOSE read at the peer's 'end' is then TIME_WAIT, not an RST.
  w.rawFin = true;
  closing(w);
});

/**
 * Follows the socket's resets done through `reset()` (SO_LINGER {1, 0}, then close): the kernel
 * sends an RST only from ESTABLISHED, CLOSE_WAIT, FIN_WAIT1, FIN_WAIT2 and SYN_RECV, or from
 * LAST_ACK and CLOSING with bytes still unsent (tcp_disconnect()); an fd that reads CLOSE (TIME_WAIT
 * began, which goes on) or SYN_SENT sends none.
 */
diagnosticsChannel.subscribe(RESET_CHANNEL, (message) => {
  const socket = (message as { socket: net.Socket }).socket;
  const w = (socket as WithWatcher)[kWatched];
  if (!w || w.ended) return;
  const at = now();
  const fd = handleFd(socket);
  let sendsRst = true;
  if (fd >= 0) {
    try {
      const state = readState(fd);
      observeFd(w, state, at);
      sendsRst = RESET_FROM.has(state) || ((state === 'LAST_ACK' || state === 'CLOSING') && native().ioctlInt(fd, constants().SIOCOUTQNSD) > 0);
    } catch (error) {
      debug('reset: %s', (error as Error).message);
    }
  }
  if (sendsRst) w.lifecycle.observe({ event: 'rst-sent', source: 'event', at });
});
