/**
 * The HTTP/2 part of `closeServer()`: a session is told the server is going away before anything
 * is closed, its streams in flight complete, new streams are refused the way HTTP/2 clients expect
 * (REFUSED_STREAM, safe to retry), and only then does Node end the connection, which
 * `closeServer()` closes as it closes every other (a lingering close, RST only at the deadline).
 *
 * The steps follow RFC 9113 §6.8: a first GOAWAY with the last stream id 2^31-1 (shutdown notice:
 * the client opens no new stream once it sees it), a PING whose answer shows that every stream the
 * client opened before it saw the notice has arrived (those are served), then streams are refused,
 * and once the streams in flight are done, `session.close()` sends the final GOAWAY with the last
 * stream id processed and Node ends the connection.
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
  /** Whether a response was streaming (headers sent, not ended) when the shutdown began. */
  streaming = false;
  private readonly open = new Set<http2.ServerHttp2Stream>();
  private refusing = false;
  private finalGoaway = false;
  private pastDeadline = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(readonly session: http2.ServerHttp2Session) {}

  /**
   * Sends the shutdown notice and the PING; `roundTripMs` bounds the wait for its answer (a peer
   * that does not answer pings is refused new streams after it).
   */
  begin(roundTripMs: number): void {
    for (const stream of openStreams(this.session)) {
      if (stream.headersSent && !stream.writableEnded) this.streaming = true;
      this.follow(stream);
    }
    this.interceptNewStreams();
    const refuse = (): void => this.startRefusing();
    try {
      this.session.goaway(NGHTTP2_NO_ERROR, MAX_STREAM_ID);
      if (!this.session.ping(refuse)) refuse();
    } catch {
      refuse(); // the session is closing already
    }
    if (!this.refusing) this.timer = setTimeout(refuse, roundTripMs);
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

  /** One round trip after the notice: what the client opens now it opened knowing. */
  private startRefusing(): void {
    if (this.refusing) return;
    this.refusing = true;
    clearTimeout(this.timer);
    this.maybeClose();
  }

  /** The final GOAWAY once nothing is in flight: Node ends the connection after it. */
  private maybeClose(): void {
    if (!this.refusing || this.finalGoaway || this.open.size > 0 || this.pastDeadline) return;
    this.finalGoaway = true;
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
