/**
 * The HTTP/2 part of `closeServer()`: a session is told the server is going away before anything
 * is closed, its streams in flight complete, new streams are refused the way HTTP/2 clients expect
 * (REFUSED_STREAM, safe to retry), and only then does Node end the connection, which
 * `closeServer()` closes as it closes every other (a lingering close, RST only at the deadline).
 *
 * The steps follow RFC 9113 §6.8: a first GOAWAY with the last stream id 2^31-1 (shutdown notice:
 * the client opens no new stream once it sees it), a PING whose answer shows that the client has
 * read the notice (streams that arrived before it are served), then for one more PING's round
 * trip new streams are refused with RST_STREAM REFUSED_STREAM (so the report counts them), and
 * once the streams in flight are done, `session.close()` sends the final GOAWAY with the last
 * stream id processed and Node ends the connection. A client that answers the notice with its own
 * GOAWAY (as Node's does) is not waited for.
 */
import http2 from 'node:http2';
import { missingInternal } from './node-internals';
import { openStreams } from './server-connections';

const { NGHTTP2_NO_ERROR, NGHTTP2_REFUSED_STREAM } = http2.constants;
const MAX_STREAM_ID = 2 ** 31 - 1;

/** What became of a session's streams from the start of the shutdown. */
export interface StreamCounts {
  /** Streams that ended normally (no RST_STREAM): in flight at the start, or opened before the client saw the GOAWAY. */
  completed: number;
  /** New streams refused with RST_STREAM REFUSED_STREAM after the client had been told (it may retry them elsewhere). */
  refused: number;
  /** Streams that ended with an RST_STREAM (cancelled by the client, or an error), or were cut at the deadline. */
  reset: number;
}

type StreamListener = (this: http2.ServerHttp2Session, stream: http2.ServerHttp2Stream, ...rest: unknown[]) => void;

/** One session's shutdown; see the module comment. */
export class SessionClose {
  readonly streams: StreamCounts = { completed: 0, refused: 0, reset: 0 };
  /** Streams served that began after the shutdown started. */
  requestsDuringShutdown = 0;
  private readonly open = new Set<http2.ServerHttp2Stream>();
  private refusing = false;
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
    this.session.once('goaway', () => this.startRefusing(true));
    try {
      this.session.goaway(NGHTTP2_NO_ERROR, MAX_STREAM_ID);
    } catch {
      return this.startRefusing(true); // the session is closing already
    }
    this.roundTrip((answered) => this.startRefusing(!answered));
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

  /**
   * One round trip after the notice: what the client opens now, it opened before it had read the
   * notice (Node's client sends a request it had queued after its PING answer). Such streams are
   * refused, and counted, for one more round trip; then the final GOAWAY, once nothing is in flight.
   * Without that second round trip they would arrive after the final GOAWAY, be dropped unseen by
   * nghttp2, and be refused all the same, but without the report knowing.
   */
  private startRefusing(peerDone: boolean): void {
    if (this.pastDeadline) return;
    if (!this.refusing) {
      this.refusing = true;
      // A second round trip only for a peer that answers PINGs and still has its side open.
      if (!peerDone) return this.roundTrip(() => this.readyToClose());
    }
    this.readyToClose();
  }

  private readyToClose(): void {
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
   * Puts finwait before Node's own 'stream' listener of the session (`sessionOnStream`, which
   * hands the stream to the server): a stream is served, or refused before the application sees it.
   */
  private interceptNewStreams(): void {
    const session = this.session;
    const original = session.listeners('stream').find((l) => (l as { name?: string }).name === 'sessionOnStream') as StreamListener | undefined;
    if (!original) {
      missingInternal(
        "the HTTP/2 session's stream listener (sessionOnStream)",
        'closeServer() serves every stream that arrives during the shutdown instead of refusing those opened after the GOAWAY',
      );
      session.prependListener('stream', (stream: http2.ServerHttp2Stream) => {
        this.requestsDuringShutdown++;
        this.follow(stream);
      });
      return;
    }
    session.removeListener('stream', original as (...args: unknown[]) => void);
    const close = this;
    session.prependListener('stream', function (this: http2.ServerHttp2Session, stream: http2.ServerHttp2Stream, ...rest: unknown[]) {
      if (close.refusing) {
        close.streams.refused++;
        stream.close(NGHTTP2_REFUSED_STREAM);
        return;
      }
      close.requestsDuringShutdown++;
      close.follow(stream);
      original.call(this, stream, ...rest);
    });
  }
}
