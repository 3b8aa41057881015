/**
 * What an HTTP proxy sends (RFC 9110, RFC 9112), pure: the header fields it
 * forwards, whether a connection stays open, encoded heads and the proxy's
 * own short answers, Basic `Proxy-Authorization` (RFC 7617), and the HTTP
 * status for a SOCKS5 reply code.
 *
 * @module
 */

import { Reply } from "./constants.ts";
import {
  headerTokens,
  headerValues,
  type HttpHeader,
  type HttpRequestHead,
  reasonPhrase,
} from "./http.ts";

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// deno-lint-ignore no-control-regex
const BAD_VALUE = /[\x00-\x08\x0a-\x1f\x7f]/;
const VISIBLE = /^[\x21-\x7e]+$/;

function show(text: string): string {
  return JSON.stringify(text.length > 60 ? `${text.slice(0, 60)}...` : text);
}

/** Fields a proxy never forwards (RFC 9110 7.6.1), besides those `Connection` names. */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authorization",
  "proxy-authenticate",
  "te",
  "trailer",
  "upgrade",
]);

/** Options of {@linkcode forwardHeaders}. */
export interface ForwardOptions {
  /** The version the message was received in, for `Via` (default "1.1"). */
  version?: "1.0" | "1.1";
  /** The `Via` pseudonym (default "dualsocks"). */
  via?: string;
  /** For a request: the `Host` to send (replaces every `Host` field, first). */
  host?: string;
  /** A `Connection` option to add, e.g. "close" to a client about to be closed. */
  connection?: "close" | "keep-alive";
}

/**
 * The header fields to forward: hop-by-hop fields removed (`Connection` and
 * what it names, `Keep-Alive`, `Proxy-Connection`, `Proxy-Authorization`,
 * `Proxy-Authenticate`, `TE`, `Trailer`, `Upgrade`), `Via` appended.
 * `Transfer-Encoding` is kept, since bodies are streamed through unchanged
 * (chunks and trailers as received); with it, a `Content-Length` is dropped
 * (RFC 9112 6.3: Transfer-Encoding overrides it).
 *
 * @example
 * ```ts
 * import { forwardHeaders } from "./http_message.ts";
 * forwardHeaders([["Host", "a.test"], ["Connection", "close, X-A"], ["X-A", "1"]], { host: "b.test" });
 * // [["Host", "b.test"], ["Via", "1.1 dualsocks"]]
 * ```
 */
export function forwardHeaders(
  headers: readonly HttpHeader[],
  options: ForwardOptions = {},
): HttpHeader[] {
  const named = new Set(headerTokens(headers, "connection"));
  const chunked = headerValues(headers, "transfer-encoding").length > 0;
  const out: HttpHeader[] = options.host === undefined ? [] : [["Host", options.host]];
  for (const [name, value] of headers) {
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || named.has(lower)) continue;
    if (options.host !== undefined && lower === "host") continue;
    if (chunked && lower === "content-length") continue;
    out.push([name, value]);
  }
  out.push(["Via", `${options.version ?? "1.1"} ${options.via ?? "dualsocks"}`]);
  if (options.connection) out.push(["Connection", options.connection]);
  return out;
}

/**
 * Whether the connection stays open after this message (RFC 9112 9.3):
 * HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with
 * `Connection: keep-alive`. `Proxy-Connection`, which old clients send to
 * proxies instead, counts the same.
 *
 * @example
 * ```ts
 * import { keepAlive } from "./http_message.ts";
 * keepAlive({ version: "1.0", headers: [["Connection", "keep-alive"]] }); // true
 * keepAlive({ version: "1.1", headers: [["Connection", "close"]] }); // false
 * ```
 */
export function keepAlive(head: Pick<HttpRequestHead, "version" | "headers">): boolean {
  const tokens = [
    ...headerTokens(head.headers, "connection"),
    ...headerTokens(head.headers, "proxy-connection"),
  ];
  if (tokens.includes("close")) return false;
  return head.version === "1.1" || tokens.includes("keep-alive");
}

const encoder = new TextEncoder();

function latin1Bytes(text: string): Uint8Array {
  const out = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c > 0xff) throw new TypeError(`expected Latin-1 header text, found U+${c.toString(16)}`);
    out[i] = c;
  }
  return out;
}

function encodeHead(first: string, headers: readonly HttpHeader[]): Uint8Array {
  let text = `${first}\r\n`;
  for (const [name, value] of headers) {
    if (!TOKEN.test(name) || BAD_VALUE.test(value)) {
      throw new TypeError(
        `expected a header token and a value without controls, found ${show(name)}`,
      );
    }
    text += `${name}: ${value}\r\n`;
  }
  return latin1Bytes(`${text}\r\n`);
}

/**
 * Encodes a request head for the upstream: origin-form request line, always
 * HTTP/1.1 (a proxy sends its own version, RFC 9110 6.2), then `headers`.
 *
 * @example
 * ```ts
 * import { encodeRequestHead } from "./http_message.ts";
 * encodeRequestHead({ method: "GET", path: "/", headers: [["Host", "v4only.test"]] });
 * // "GET / HTTP/1.1\r\nHost: v4only.test\r\n\r\n" as bytes
 * ```
 */
export function encodeRequestHead(
  head: { method: string; path: string; headers: readonly HttpHeader[] },
): Uint8Array {
  if (!TOKEN.test(head.method) || !VISIBLE.test(head.path)) {
    throw new TypeError(
      `expected a method token and a visible path, found ${show(head.method)} ${show(head.path)}`,
    );
  }
  return encodeHead(`${head.method} ${head.path} HTTP/1.1`, head.headers);
}

/**
 * Encodes a response head (HTTP/1.1 status line, then `headers`), e.g. an
 * upstream's response as forwarded.
 *
 * @example
 * ```ts
 * import { encodeResponseHead } from "./http_message.ts";
 * encodeResponseHead({ status: 200, reason: "OK", headers: [["Content-Length", "0"]] });
 * ```
 */
export function encodeResponseHead(
  head: { status: number; reason: string; headers: readonly HttpHeader[] },
): Uint8Array {
  if (
    !Number.isInteger(head.status) || head.status < 100 || head.status > 999 ||
    BAD_VALUE.test(head.reason)
  ) {
    throw new TypeError(
      `expected a status from 100 to 999 and a plain reason, found ${head.status}`,
    );
  }
  return encodeHead(`HTTP/1.1 ${head.status} ${head.reason}`, head.headers);
}

/** Options of {@linkcode encodeResponse}. */
export interface ResponseOptions {
  /** Extra fields (e.g. `Proxy-Authenticate`). */
  headers?: readonly HttpHeader[];
  /** A short text/plain body (UTF-8); a final newline is added. */
  body?: string;
  /** Adds `Connection: close` (the proxy closes after it). Default true. */
  close?: boolean;
  /** The reason phrase (default: the standard one). */
  reason?: string;
}

/**
 * Encodes one of the proxy's own answers, whole: status line, `headers`,
 * `Content-Type: text/plain` and `Content-Length` for the body,
 * `Connection: close` unless `close: false`.
 *
 * @example
 * ```ts
 * import { encodeResponse } from "./http_message.ts";
 * encodeResponse(502, { body: "cannot connect to v4only.test:80: connection refused" });
 * ```
 */
export function encodeResponse(status: number, options: ResponseOptions = {}): Uint8Array {
  const body = options.body === undefined ? new Uint8Array(0) : encoder.encode(`${options.body}\n`);
  const headers: HttpHeader[] = [...(options.headers ?? [])];
  if (options.body !== undefined) headers.push(["Content-Type", "text/plain; charset=utf-8"]);
  headers.push(["Content-Length", String(body.length)]);
  if (options.close ?? true) headers.push(["Connection", "close"]);
  const head = encodeResponseHead({
    status,
    reason: options.reason ?? reasonPhrase(status),
    headers,
  });
  const out = new Uint8Array(head.length + body.length);
  out.set(head, 0);
  out.set(body, head.length);
  return out;
}

const utf8Strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/**
 * The Basic credentials of a `Proxy-Authorization` value (RFC 7617, UTF-8),
 * or `null` when it is another scheme or malformed (bad base64, no colon,
 * not UTF-8).
 *
 * @example
 * ```ts
 * import { parseProxyAuthorization } from "./http_message.ts";
 * parseProxyAuthorization("Basic YWxpY2U6czNjcmV0"); // { username: "alice", password: "s3cret" }
 * ```
 */
export function parseProxyAuthorization(
  value: string,
): { username: string; password: string } | null {
  const m = /^basic +([A-Za-z0-9+/]+={0,2}) *$/i.exec(value);
  if (!m || m[1].length % 4 !== 0) return null;
  let text: string;
  try {
    const bin = atob(m[1]);
    const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    text = utf8Strict.decode(bytes);
  } catch {
    return null;
  }
  const colon = text.indexOf(":");
  if (colon < 0) return null;
  return { username: text.slice(0, colon), password: text.slice(colon + 1) };
}

/**
 * The HTTP status for a SOCKS5 reply code, beside the SOCKS5 reply table of
 * `src/server/errors.ts`:
 *
 * | reply | status |
 * |---|---|
 * | 0 succeeded | 200 |
 * | 2 not allowed | 403 |
 * | 1 general failure, 3 network unreachable, 4 host unreachable (also a name that does not resolve), 5 refused, 8 address type | 502 |
 * | 6 TTL expired, or any failure with `timeout: true` | 504 |
 * | 7 command not supported | 501 |
 *
 * A name that does not resolve is 502, not 504: the upstream (DNS) gave a
 * definite answer, nothing timed out. The gateway reports its connect
 * deadline as reply 4, so the caller says `timeout: true` for it.
 *
 * @example
 * ```ts
 * import { httpStatusFor } from "./http_message.ts";
 * httpStatusFor(2); // 403
 * httpStatusFor(4, { timeout: true }); // 504
 * ```
 */
export function httpStatusFor(reply: number, options: { timeout?: boolean } = {}): number {
  if (reply === Reply.SUCCEEDED) return 200;
  if (options.timeout || reply === Reply.TTL_EXPIRED) return 504;
  if (reply === Reply.NOT_ALLOWED) return 403;
  if (reply === Reply.COMMAND_NOT_SUPPORTED) return 501;
  return 502;
}
