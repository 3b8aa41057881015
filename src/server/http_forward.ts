/**
 * The forwarding half of the HTTP front door: one buffered input per
 * connection, and bodies streamed through by their framing (RFC 9112
 * section 6) in pieces of at most one buffer, never whole.
 *
 * @module
 */

import { BufferedReader } from "../io/buffered_reader.ts";
import type { Decoded } from "../protocol/codec.ts";
import { HttpError } from "../protocol/http.ts";
import { type BodyFraming, ChunkedScanner } from "../protocol/http_body.ts";
import { encodeResponse, httpStatusFor } from "../protocol/http_message.ts";
import type { RelayConn } from "./dialer.ts";
import { ConnectTimeoutError, describeError } from "./errors.ts";
import { writeAll } from "./session.ts";

/**
 * The largest buffer of an {@linkcode Input}: above any head under the
 * limits (32 KiB), and big reads for throughput. It starts at
 * {@linkcode INPUT_START_BYTES} and doubles when a read fills it, so an idle
 * keep-alive connection that only saw small messages stays small.
 */
export const INPUT_BYTES = 64 * 1024;
/** The first buffer size of an {@linkcode Input}. */
export const INPUT_START_BYTES = 4 * 1024;

/** Raised when a peer closes in the middle of a head or a body. */
export class CutShortError extends Error {
  /** Creates the error. */
  constructor(message: string) {
    super(message);
    this.name = "CutShortError";
  }
}

/**
 * A connection's reading side with one buffer: heads are decoded from it,
 * body bytes are handed out as views of it (valid until the next read).
 *
 * @example
 * ```ts ignore
 * const input = new Input(conn, reader.takeRest());
 * const head = await input.head(decodeRequestHead, "request head");
 * ```
 */
export class Input {
  #conn: Pick<RelayConn, "read">;
  #buf: Uint8Array;
  #start = 0;
  #end = 0;
  #grow = false;

  /** Reads `conn`, starting with the bytes already read from it (`initial`). */
  constructor(conn: Pick<RelayConn, "read">, initial: Uint8Array = new Uint8Array(0)) {
    this.#conn = conn;
    this.#buf = new Uint8Array(Math.max(INPUT_START_BYTES, initial.length));
    this.#buf.set(initial);
    this.#end = initial.length;
  }

  /** How many bytes are buffered. */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /** Reads more; `false` at EOF. */
  async #fill(): Promise<boolean> {
    if (this.#start === this.#end) this.#start = this.#end = 0;
    if (this.#grow || (this.#end === this.#buf.length && this.#start === 0)) {
      const next = new Uint8Array(Math.min(INPUT_BYTES, this.#buf.length * 2));
      if (next.length > this.#buf.length) {
        next.set(this.#buf.subarray(this.#start, this.#end));
        this.#end -= this.#start;
        this.#start = 0;
        this.#buf = next;
      }
      this.#grow = false;
    }
    if (this.#end === this.#buf.length) {
      this.#buf.copyWithin(0, this.#start, this.#end);
      this.#end -= this.#start;
      this.#start = 0;
    }
    const space = this.#buf.length - this.#end;
    const n = await this.#conn.read(this.#buf.subarray(this.#end));
    if (n === null) return false;
    this.#end += n;
    // A read that filled all the room: the traffic wants a bigger buffer.
    if (n === space && this.#buf.length < INPUT_BYTES) this.#grow = true;
    return true;
  }

  /**
   * Decodes one head; `null` when the peer closed before sending a byte of
   * it, {@linkcode CutShortError} when it closed in the middle.
   */
  async head<T>(decode: (buf: Uint8Array) => Decoded<T> | null, what: string): Promise<T | null> {
    while (true) {
      const view = this.#buf.subarray(this.#start, this.#end);
      const d = view.length > 0 ? decode(view) : null;
      if (d) {
        this.#start += d.length;
        return d.value;
      }
      if (!(await this.#fill())) {
        if (view.length === 0) return null;
        throw new CutShortError(`${what}: connection closed after ${view.length} bytes of it`);
      }
    }
  }

  /** The buffered bytes, reading when there are none; `null` at EOF. Consume what is used. */
  async some(): Promise<Uint8Array | null> {
    if (this.#start === this.#end && !(await this.#fill())) return null;
    return this.#buf.subarray(this.#start, this.#end);
  }

  /** Marks `n` bytes of {@linkcode Input.some}'s view as used. */
  consume(n: number): void {
    this.#start += n;
  }

  /** A copy of the buffered bytes, emptying the buffer (data sent ahead, e.g. after CONNECT). */
  rest(): Uint8Array {
    const out = this.#buf.slice(this.#start, this.#end);
    this.#start = this.#end = 0;
    return out;
  }
}

/** Options of {@linkcode streamBody}. */
export interface StreamOptions {
  /** Counts bytes written (the session's up or down counter) and marks activity. */
  count(n: number): void;
  /** The status of framing errors: 400 for a request body, 502 for a response's. */
  errorStatus: number;
  /** Write only the chunk data, not the chunked framing (to an HTTP/1.0 client). */
  dechunk?: boolean;
  /** Names the message in errors ("request body", "response body"). */
  what: string;
}

/**
 * Streams one body from `from` to `to` by its framing, piece by piece as it
 * arrives (chunked bodies unchanged: chunk lines, extensions and trailers
 * included, unless `dechunk`). Resolves when the body has ended; throws
 * {@linkcode CutShortError} when the sender closes before the end, and
 * {@linkcode HttpError} on malformed chunked framing.
 *
 * @example
 * ```ts ignore
 * await streamBody(input, upstream, { kind: "length", length: 5 }, options);
 * ```
 */
export async function streamBody(
  from: Input,
  to: RelayConn,
  framing: BodyFraming,
  options: StreamOptions,
): Promise<void> {
  if (framing.kind === "none") return;
  const scanner = framing.kind === "chunked"
    ? new ChunkedScanner({ errorStatus: options.errorStatus })
    : undefined;
  let remaining = framing.kind === "length" ? framing.length : Infinity;
  while (remaining > 0 && !scanner?.done) {
    const view = await from.some();
    if (view === null) {
      if (framing.kind === "close") return;
      throw new CutShortError(
        `${options.what}: connection closed before the end of the body` +
          (framing.kind === "length" ? ` (${remaining} of ${framing.length} bytes missing)` : ""),
      );
    }
    let n: number;
    if (scanner) {
      if (options.dechunk) {
        const spans: [number, number][] = [];
        n = scanner.scan(view, (a, b) => spans.push([a, b]));
        for (const [a, b] of spans) await writeAll(to, view.subarray(a, b));
        options.count(spans.reduce((sum, [a, b]) => sum + b - a, 0));
      } else {
        n = scanner.scan(view);
        await writeAll(to, view.subarray(0, n));
        options.count(n);
      }
    } else {
      n = Math.min(remaining, view.length);
      await writeAll(to, view.subarray(0, n));
      options.count(n);
      remaining -= n;
    }
    from.consume(n);
  }
}

/** True for errors a peer's message caused (answered with their status). */
export function isHttpError(error: unknown): error is HttpError {
  return error instanceof HttpError;
}

/**
 * The proxy's answer to a pipeline failure toward `dest`: the status from
 * the SOCKS5 reply code (`httpStatusFor`; 504 for the connect deadline) and
 * a text body naming the destination and the reason.
 *
 * @example
 * ```ts ignore
 * await writeAll(conn, failure(replyFor(error), error, "v4only.test:80"));
 * ```
 */
export function failure(code: number, error: unknown, dest: string): Uint8Array {
  const status = httpStatusFor(code, { timeout: error instanceof ConnectTimeoutError });
  const why = error === undefined ? `SOCKS5 reply ${code}` : describeError(error);
  return encodeResponse(status, { body: `dualsocks: cannot reach ${dest}: ${why}` });
}

/**
 * A {@linkcode BufferedReader} holding `bytes` (data sent ahead of a
 * tunnel), for the shared CONNECT command's `takeRest()`.
 *
 * @example
 * ```ts ignore
 * const reader = await readerOf(input.rest());
 * ```
 */
export async function readerOf(bytes: Uint8Array): Promise<BufferedReader> {
  let given = false;
  const reader = new BufferedReader({
    read(p) {
      if (given) return Promise.resolve(null);
      given = true;
      p.set(bytes);
      return Promise.resolve(bytes.length);
    },
  }, Math.max(1, bytes.length));
  if (bytes.length > 0) await reader.decode(() => ({ value: 0, length: 0 }), "early data");
  return reader;
}

/**
 * Closes a socket that another error path may have closed already.
 *
 * @example
 * ```ts ignore
 * closeQuietly(upstream);
 * ```
 */
export function closeQuietly(conn: { close(): void }): void {
  try {
    conn.close();
  } catch { /* already closed */ }
}
