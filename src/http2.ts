/**
 * The HTTP/2 part of `closeServer()`: a session is told the server is going away before anything
 * is closed, its streams in flight complete, and only then does Node end the connection, which
 * `closeServer()` closes as it closes every other (a lingering close, RST only at the deadline).
 *
 * The steps follow RFC 9113 §6.8: a first GOAWAY with the last stream id 2^31-1 (shutdown notice:
 * the client opens no new stream once it sees it), a PING whose answer shows that the client has
 * read the notice, then, once the streams in flight are done, `session.close()` sends the final
 * GOAWAY with the last stream id processed and Node ends the connection. A client that answers
 * the notice with its own GOAWAY (as Node's does) is not waited for.
 *
 * A stream the client opens after the notice went out never reaches the server: Node's HTTP/2
 * layer (nghttp2) ignores every new stream once a GOAWAY was sent, whatever its last stream id
 * (Node 20 to 26). The client gets no answer on it until the final GOAWAY, whose last stream id
 * tells it the stream was not processed and may be retried (Node's client then fails it with
 * REFUSED_STREAM itself). The report cannot count such streams: the server never sees them.
 */
import http2 from 'node:http2';
import { openStreams } from './server-connections';

const { NGHTTP2_NO_ERROR } = http2.constants;
const MAX_STREAM_ID = 2 ** 31 - 1;

/** What became of a session's streams from the start of the shutdown. */
export interface StreamCounts {
  /** Streams that ended normally (no RST_STREAM): in flight at the start, or opened before the notice (the first GOAWAY) went out. */
  completed: number;
  /** Streams that ended with an RST_STREAM (cancelled by the client, or an error), or were cut at the deadline. */
  reset: number;
}


/** One session's shutdown; see the module comment. */
export class SessionClose {
  readonly streams: StreamCounts = { completed: 0, reset: 0 };
  /** Streams served that began after the shutdown started. */
  requestsDuringShutdown = 0;
  private readonly open = new Set<http2.ServerHttp2Stream>();
  private closable = false;
  private finalGoaway = false;
  private roundTripMs = 0;
  private pastDeadline = false;
  private timer: NodeJS.Timeout | undefined;

  /** `peerClosed()` says whether the peer has closed its side of the connection (its FIN came). */
  constructor(
    readonly session: http2.ServerHttp2Session,
    private readonly peerClosed: () => boolean,
  ) {}

  /**
   * Sends the shutdown notice and a PING; `roundTripMs` bounds each wait for a PING's answer (a
   * peer that does not answer pings, or closes its side instead, is not waited for).
   */
  begin(roundTripMs: number): void {
    this.roundTripMs = roundTripMs;
    for (const stream of openStreams(this.session)) this.follow(stream);
    this.interceptNewStreams();
    // The client's own GOAWAY (Node's client answers ours with one and closes its session): it
    // opens nothing more, and need not answer our PINGs.
    this.session.once('goaway', () => this.readyToClose());
    try {
      this.session.goaway(NGHTTP2_NO_ERROR, MAX_STREAM_ID);
    } catch {
      return this.readyToClose(); // the session is closing already
    }
    this.roundTrip(() => this.readyToClose());
  }

  /**
   * A PING, and `then(answered)` once it is answered, or cancelled, or not answered within
   * `roundTripMs`, or the peer closed its side of the connection meanwhile (Node's client destroys
   * an idle session when it reads the notice; Node's server session does not notice the peer's FIN
   * while it lives, so the kernel is asked).
   */
  private roundTrip(then: (answered: boolean) => void): void {
    let done = false;
    let look: NodeJS.Timeout | undefined;
    const once = (answered: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(this.timer);
      clearTimeout(look);
      then(answered);
    };
    try {
      if (!this.session.ping((error) => once(!error))) return once(false);
    } catch {
      return once(false);
    }
    this.timer = setTimeout(() => once(false), this.roundTripMs);
    let every = 2;
    const peerGone = (): void => {
      if (done) return;
      if (this.peerClosed()) return once(false);
      look = setTimeout(peerGone, every);
      every = Math.min(every * 2, 50);
    };
    look = setTimeout(peerGone, every);
  }

  /** At the deadline the connection is reset: every stream still open is cut. */
  atDeadline(): void {
    this.pastDeadline = true;
    clearTimeout(this.timer);
    this.streams.reset += this.open.size;
    this.open.clear();
  }

  /** Requests (streams) the application received and did not complete. */
  get unanswered(): number {
    return this.streams.reset + this.open.size;
  }

  private follow(stream: http2.ServerHttp2Stream): void {
    this.open.add(stream);
    stream.once('close', () => {
      if (!this.open.delete(stream) || this.pastDeadline) return;
      if (stream.rstCode === NGHTTP2_NO_ERROR) this.streams.completed++;
      else this.streams.reset++;
      this.maybeClose();
    });
  }

  /** The client was told (it answered the PING, or sent its own GOAWAY, or did not answer in time). */
  private readyToClose(): void {
    if (this.pastDeadline) return;
    this.closable = true;
    this.maybeClose();
  }

  /** The final GOAWAY once nothing is in flight: Node ends the connection after it. */
  private maybeClose(): void {
    if (!this.closable || this.finalGoaway || this.open.size > 0 || this.pastDeadline) return;
    this.finalGoaway = true;
    clearTimeout(this.timer);
    try {
      this.session.close();
    } catch {
      // destroyed meanwhile: its socket's 'close' says how it ended
    }
  }

  /**
   * Follows each stream that begins during the shutdown (before the notice went out: nghttp2
   * ignores those opened after it), counted as a request received during the shutdown.
   */
  private interceptNewStreams(): void {
    this.session.prependListener('stream', (stream: http2.ServerHttp2Stream) => {
      this.requestsDuringShutdown++;
      this.follow(stream);
    });
  }
}
