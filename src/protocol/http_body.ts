/**
 * HTTP/1.1 message body framing (RFC 9112 section 6 and 7.1), pure: which
 * bytes after a head are its body, so a proxy can stream them through
 * unchanged without buffering a whole body.
 *
 * @module
 */

import {
  headerTokens,
  headerValues,
  HttpError,
  type HttpRequestHead,
  type HttpResponseHead,
} from "./http.ts";

/**
 * How a message's body is delimited: no body, a `Content-Length`, chunked
 * transfer coding, or (responses only) everything until the server closes.
 */
export type BodyFraming =
  | { kind: "none" }
  | { kind: "length"; length: number }
  | { kind: "chunked" }
  | { kind: "close" };

/** Codings a request may carry before its final `chunked` (passed through unchanged). */
const KNOWN_CODINGS = new Set(["gzip", "x-gzip", "deflate", "compress", "x-compress"]);

function contentLength(
  headers: HttpRequestHead["headers"],
  what: string,
  status: number,
): number | null {
  const values = headerValues(headers, "content-length");
  if (values.length === 0) return null;
  // "42, 42" and repeated fields are one length if they agree (RFC 9110 8.6).
  const parts = values.flatMap((v) => v.split(",").map((p) => p.trim()));
  for (const p of parts) {
    if (!/^\d{1,15}$/.test(p)) {
      throw new HttpError(
        status,
        `${what}: expected Content-Length digits, found ${JSON.stringify(p)}`,
      );
    }
  }
  const lengths = new Set(parts.map(Number));
  if (lengths.size !== 1) {
    throw new HttpError(
      status,
      `${what}: expected one Content-Length, found conflicting ${[...lengths].join(", ")}`,
    );
  }
  return [...lengths][0];
}

/**
 * The body framing of a request (RFC 9112 6.3). A request with both
 * `Transfer-Encoding` and `Content-Length`, with a bad or conflicting
 * `Content-Length`, whose codings do not end in `chunked` exactly once, or an
 * HTTP/1.0 request with `Transfer-Encoding`, is 400; a coding this proxy does
 * not know, 501.
 *
 * @example
 * ```ts
 * import { requestFraming } from "./http_body.ts";
 * requestFraming({ version: "1.1", headers: [["Content-Length", "5"]] }); // { kind: "length", length: 5 }
 * requestFraming({ version: "1.1", headers: [] }); // { kind: "none" }
 * ```
 */
export function requestFraming(head: Pick<HttpRequestHead, "version" | "headers">): BodyFraming {
  const what = "request";
  const te = headerTokens(head.headers, "transfer-encoding");
  const hasTe = headerValues(head.headers, "transfer-encoding").length > 0;
  const length = contentLength(head.headers, what, 400);
  if (hasTe) {
    if (length !== null) {
      throw new HttpError(400, `${what}: expected Transfer-Encoding or Content-Length, found both`);
    }
    if (head.version === "1.0") {
      throw new HttpError(
        400,
        `${what}: expected no Transfer-Encoding in HTTP/1.0, found ${te.join(", ")}`,
      );
    }
    const codings = te.map((t) => t.split(";")[0].trim());
    if (codings.at(-1) !== "chunked" || codings.indexOf("chunked") !== codings.length - 1) {
      throw new HttpError(
        400,
        `${what}: expected Transfer-Encoding to end in chunked (once), found ${
          JSON.stringify(te.join(", "))
        }`,
      );
    }
    const unknown = codings.slice(0, -1).find((c) => !KNOWN_CODINGS.has(c));
    if (unknown !== undefined) {
      throw new HttpError(
        501,
        `${what}: expected a known transfer coding, found ${JSON.stringify(unknown)}`,
      );
    }
    return { kind: "chunked" };
  }
  if (length === null || length === 0) return { kind: "none" };
  return { kind: "length", length };
}

/**
 * The body framing of a response to `method` (RFC 9112 6.3): none for HEAD,
 * 1xx, 204, 304 and a 2xx to CONNECT; chunked when the final transfer coding
 * is chunked (an HTTP/1.1 response only), otherwise with a
 * `Transfer-Encoding`, until the close; then `Content-Length`; and without
 * either, until the close. A bad or conflicting `Content-Length` is 502.
 *
 * @example
 * ```ts
 * import { responseFraming } from "./http_body.ts";
 * responseFraming({ version: "1.1", status: 200, headers: [["Transfer-Encoding", "chunked"]] }, "GET");
 * // { kind: "chunked" }
 * responseFraming({ version: "1.1", status: 200, headers: [] }, "HEAD"); // { kind: "none" }
 * ```
 */
export function responseFraming(
  head: Pick<HttpResponseHead, "version" | "status" | "headers">,
  method: string,
): BodyFraming {
  const { status } = head;
  if (method === "HEAD" || status < 200 || status === 204 || status === 304) {
    return { kind: "none" };
  }
  if (method === "CONNECT" && status < 300) return { kind: "none" };
  if (headerValues(head.headers, "transfer-encoding").length > 0) {
    const te = headerTokens(head.headers, "transfer-encoding");
    const last = te.at(-1)?.split(";")[0].trim();
    return head.version === "1.1" && last === "chunked" ? { kind: "chunked" } : { kind: "close" };
  }
  const length = contentLength(head.headers, "response", 502);
  if (length === null) return { kind: "close" };
  return length === 0 ? { kind: "none" } : { kind: "length", length };
}

/** Limits of a {@linkcode ChunkedScanner}. */
export interface ChunkedOptions {
  /** The longest chunk-size line, extensions included (default 4 KiB). */
  maxLineBytes?: number;
  /** The most bytes of trailer fields (default 16 KiB). */
  maxTrailerBytes?: number;
  /** The status of the errors thrown: 400 for a request body (default), 502 for a response's. */
  errorStatus?: number;
}

const State = {
  Size: 0,
  Ext: 1,
  SizeLf: 2,
  Data: 3,
  DataCr: 4,
  DataLf: 5,
  Trailer: 6,
  TrailerLf: 7,
  Done: 8,
} as const;
type State = (typeof State)[keyof typeof State];

function hexValue(b: number): number {
  if (b >= 0x30 && b <= 0x39) return b - 0x30;
  if (b >= 0x41 && b <= 0x46) return b - 0x37;
  if (b >= 0x61 && b <= 0x66) return b - 0x57;
  return -1;
}

/**
 * An incremental chunked-body scanner: feed it the bytes as they arrive
 * ({@linkcode ChunkedScanner.scan}); it says how many belong to the body, so
 * they can be streamed through unchanged, and when the body (last chunk and
 * trailer section) ended ({@linkcode ChunkedScanner.done}). Chunk-size,
 * chunk-data and trailer lines must end in CRLF: the bytes go on unchanged to
 * a peer that may not accept a bare LF, and both must agree where the body
 * ends. Malformed sizes or lines, and lines or trailers over their limits,
 * throw {@linkcode HttpError}.
 *
 * @example
 * ```ts
 * import { ChunkedScanner } from "./http_body.ts";
 * const s = new ChunkedScanner();
 * const bytes = new TextEncoder().encode("3\r\nabc\r\n0\r\n\r\nGET ");
 * s.scan(bytes); // 15: the body; "GET " is the next request
 * s.done; // true
 * ```
 */
export class ChunkedScanner {
  #state: State = State.Size;
  #remaining = 0;
  #digits = 0;
  #sawDigit = false;
  #lineBytes = 0;
  #trailerBytes = 0;
  #maxLine: number;
  #maxTrailer: number;
  #status: number;

  /** Creates a scanner at the start of a body. */
  constructor(options: ChunkedOptions = {}) {
    this.#maxLine = options.maxLineBytes ?? 4096;
    this.#maxTrailer = options.maxTrailerBytes ?? 16 * 1024;
    this.#status = options.errorStatus ?? 400;
  }

  /** True once the whole body, trailers and final CRLF included, has been scanned. */
  get done(): boolean {
    return this.#state === State.Done;
  }

  #fail(expected: string, b: number): never {
    const found = b >= 0x21 && b <= 0x7e
      ? `"${String.fromCharCode(b)}"`
      : `byte 0x${b.toString(16)}`;
    throw new HttpError(this.#status, `chunked body: expected ${expected}, found ${found}`);
  }

  #line(): void {
    if (++this.#lineBytes > this.#maxLine) {
      throw new HttpError(
        this.#status,
        `chunked body: expected a chunk-size line of at most ${this.#maxLine} bytes, found more`,
      );
    }
  }

  #trailer(): void {
    if (++this.#trailerBytes > this.#maxTrailer) {
      throw new HttpError(
        this.#status,
        `chunked body: expected at most ${this.#maxTrailer} bytes of trailers, found more`,
      );
    }
  }

  /**
   * Scans the next bytes of the stream; returns how many of them belong to
   * the body: all of them until the body ends within `buf`, then the count
   * up to its end (what follows is the next message). 0 once done.
   * `onData(start, end)` is told where chunk data lies in `buf` (to take the
   * body out of its framing).
   */
  scan(buf: Uint8Array, onData?: (start: number, end: number) => void): number {
    let i = 0;
    while (i < buf.length && this.#state !== State.Done) {
      const b = buf[i];
      switch (this.#state) {
        case State.Size: {
          const h = hexValue(b);
          if (h >= 0) {
            this.#line();
            this.#sawDigit = true;
            // Leading zeros count toward the line's bound, not the size's.
            if ((this.#remaining > 0 || h > 0) && ++this.#digits > 13) {
              this.#fail("a chunk size of at most 13 hex digits", b);
            }
            this.#remaining = this.#remaining * 16 + h;
          } else if (!this.#sawDigit) {
            this.#fail("a hex chunk size", b);
          } else if (b === 0x3b || b === 0x20 || b === 0x09) {
            this.#line();
            this.#state = State.Ext;
          } else if (b === 0x0d) {
            this.#state = State.SizeLf;
          } else {
            this.#fail('a hex digit, ";" or CRLF after the chunk size', b);
          }
          i++;
          break;
        }
        case State.Ext:
          if (b === 0x0d) this.#state = State.SizeLf;
          else if (b !== 0x09 && (b < 0x20 || b === 0x7f)) this.#fail("a chunk extension", b);
          else this.#line();
          i++;
          break;
        case State.SizeLf:
          if (b !== 0x0a) this.#fail("LF after CR in a chunk-size line", b);
          i++;
          this.#lineBytes = 0;
          this.#digits = 0;
          this.#sawDigit = false;
          this.#state = this.#remaining === 0 ? State.Trailer : State.Data;
          break;
        case State.Data: {
          const n = Math.min(this.#remaining, buf.length - i);
          onData?.(i, i + n);
          i += n;
          this.#remaining -= n;
          if (this.#remaining === 0) this.#state = State.DataCr;
          break;
        }
        case State.DataCr:
          if (b !== 0x0d) this.#fail("CRLF after the chunk data", b);
          this.#state = State.DataLf;
          i++;
          break;
        case State.DataLf:
          if (b !== 0x0a) this.#fail("CRLF after the chunk data", b);
          this.#state = State.Size;
          i++;
          break;
        case State.Trailer:
          // At a line start: CR is the end of the trailer section (or a CRLF ends a field).
          if (b === 0x0d) {
            this.#trailer();
            this.#state = State.TrailerLf;
          } else if (b !== 0x09 && (b < 0x20 || b === 0x7f)) {
            this.#fail("a trailer field or CRLF", b);
          } else {
            this.#trailer();
            this.#lineBytes++;
          }
          i++;
          break;
        case State.TrailerLf:
          if (b !== 0x0a) this.#fail("LF after CR in the trailer section", b);
          this.#trailer();
          this.#state = this.#lineBytes === 0 ? State.Done : State.Trailer;
          this.#lineBytes = 0;
          i++;
          break;
      }
    }
    return i;
  }
}
