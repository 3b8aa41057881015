/**
 * The pure HTTP/1.x proxy codec (RFC 9110, RFC 9112): request and response
 * heads. Bytes in, values out, no I/O. Message bodies are framed by
 * `http_body.ts`; what the proxy sends (forwarded fields, its own answers,
 * Basic credentials, the status table) is in `http_message.ts`.
 *
 * The `decode*` functions follow the codec convention of `codec.ts`: `null`
 * when more bytes are needed, `{ value, length }` when a whole head is there
 * (`length` stops at its end, so pipelined requests stay in the buffer), or a
 * thrown {@linkcode HttpError} carrying the status to answer with.
 *
 * Field values are kept as Latin-1 strings (one char per byte), so a head
 * that is decoded and encoded again carries the same bytes (`obs-text`
 * included).
 *
 * @module
 */

import type { Decoded } from "./codec.ts";
import { parseIPv6 } from "./address.ts";

const REASONS: Record<number, string> = {
  100: "Continue",
  101: "Switching Protocols",
  200: "OK",
  204: "No Content",
  304: "Not Modified",
  400: "Bad Request",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  407: "Proxy Authentication Required",
  408: "Request Timeout",
  411: "Length Required",
  413: "Content Too Large",
  414: "URI Too Long",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
};

/**
 * The standard reason phrase of a status code (`""` when unknown).
 *
 * @example
 * ```ts
 * import { reasonPhrase } from "./http.ts";
 * reasonPhrase(407); // "Proxy Authentication Required"
 * ```
 */
export function reasonPhrase(status: number): string {
  return REASONS[status] ?? "";
}

/**
 * Thrown when bytes cannot be a valid HTTP message. `status` is what a proxy
 * answers with (400, 414, 431, 501, 505 for a client's request; 502 for an
 * upstream's response), `reason` its phrase; the message says what was
 * expected and what was found.
 *
 * @example
 * ```ts
 * import { HttpError } from "./http.ts";
 * const e = new HttpError(431, "request head: expected at most 100 header fields, found 101");
 * e.reason; // "Request Header Fields Too Large"
 * ```
 */
export class HttpError extends Error {
  /** The HTTP status code to answer with. */
  readonly status: number;
  /** The status's reason phrase. */
  readonly reason: string;
  /** Creates the error. */
  constructor(status: number, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "HttpError";
    this.status = status;
    this.reason = reasonPhrase(status);
  }
}

/** One header field line: the name as sent, and the value without surrounding whitespace. */
export type HttpHeader = [name: string, value: string];

/** A host and port, in Deno's shape (IPv6 without brackets, names in lower case). */
export interface HostPort {
  /** A name, an IPv4 literal, or an IPv6 literal without brackets. */
  hostname: string;
  /** The port, 1 to 65535. */
  port: number;
}

/**
 * The request-target form (RFC 9112 section 3.2): `authority` (CONNECT),
 * `absolute` (a request to a proxy), `origin` (a request to a server: not
 * for a proxy), `asterisk` (`OPTIONS *`: not for a proxy either).
 */
export type TargetForm = "authority" | "absolute" | "origin" | "asterisk";

/** A decoded request head. */
export interface HttpRequestHead {
  /** The method, case-sensitive as sent (`"GET"`, `"CONNECT"`). */
  method: string;
  /** The request-target exactly as sent. */
  target: string;
  /** The HTTP version. */
  version: "1.0" | "1.1";
  /** The header field lines in order, names as sent. */
  headers: HttpHeader[];
  /** The form of the target. */
  form: TargetForm;
  /** Where the request goes: from the target (authority/absolute form), else `null`. */
  destination: HostPort | null;
  /**
   * The authority to send as `Host` upstream: the absolute-form target's
   * (which wins over a `Host` field, RFC 9112 3.2.2), CONNECT's target, or
   * the `Host` field's value for the other forms (`""` when absent).
   */
  authority: string;
  /** The origin-form target to forward (`/path?query`; `*` for `OPTIONS`; `""` for CONNECT). */
  path: string;
}

/** A decoded response head. */
export interface HttpResponseHead {
  /** The HTTP version. */
  version: "1.0" | "1.1";
  /** The status code, 100 to 999. */
  status: number;
  /** The reason phrase as sent (may be empty). */
  reason: string;
  /** The header field lines in order, names as sent. */
  headers: HttpHeader[];
}

/** Limits for {@linkcode decodeRequestHead} and {@linkcode decodeResponseHead}. */
export interface HeadOptions {
  /** The most bytes a head may have, its final empty line included (default 32 KiB): beyond, 431. */
  maxHeaderBytes?: number;
  /** The most header field lines (default 100): beyond, 431. */
  maxHeaders?: number;
  /** The longest request line (default 8 KiB): beyond, 414. */
  maxRequestLineBytes?: number;
}

/** Default {@linkcode HeadOptions.maxHeaderBytes}. */
export const MAX_HEADER_BYTES = 32 * 1024;
/** Default {@linkcode HeadOptions.maxHeaders}. */
export const MAX_HEADERS = 100;
/** Default {@linkcode HeadOptions.maxRequestLineBytes}. */
export const MAX_REQUEST_LINE_BYTES = 8 * 1024;

const LF = 0x0a;
const CR = 0x0d;
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// Field values: visible characters, SP, HTAB and obs-text; no other control.
// deno-lint-ignore no-control-regex
const BAD_VALUE = /[\x00-\x08\x0a-\x1f\x7f]/;
const VISIBLE = /^[\x21-\x7e]+$/;
const REG_NAME = /^[A-Za-z0-9._-]{1,255}$/;

function latin1(buf: Uint8Array, start: number, end: number): string {
  let s = "";
  for (let i = start; i < end; i += 8192) {
    s += String.fromCharCode(...buf.subarray(i, Math.min(end, i + 8192)));
  }
  return s;
}

function show(text: string): string {
  return JSON.stringify(text.length > 60 ? `${text.slice(0, 60)}...` : text);
}

interface Frame {
  lines: string[];
  length: number;
}

/**
 * Finds a head at the start of `buf`: skips empty lines before it (RFC 9112
 * 2.2), checks the first line as soon as it is whole (`first`), then looks
 * for the empty line that ends the head within the byte limit.
 */
function frame(
  buf: Uint8Array,
  opts: HeadOptions,
  what: string,
  bad: number,
  first: (line: string) => void,
): Frame | null {
  const maxBytes = opts.maxHeaderBytes ?? MAX_HEADER_BYTES;
  const maxLine = opts.maxRequestLineBytes ?? MAX_REQUEST_LINE_BYTES;
  let start = 0;
  while (
    start < buf.length && (buf[start] === LF || (buf[start] === CR && buf[start + 1] === LF))
  ) {
    start += buf[start] === LF ? 1 : 2;
    if (start > maxBytes) {
      throw new HttpError(
        bad === 400 ? 431 : bad,
        `${what}: expected a head, found ${start} bytes of empty lines`,
      );
    }
  }
  const firstEnd = buf.indexOf(LF, start);
  const lineLimit = Math.min(maxLine, maxBytes);
  if (firstEnd < 0 || firstEnd - start > lineLimit) {
    if (buf.length - start > lineLimit) {
      throw new HttpError(
        bad === 400 ? 414 : bad,
        `${what}: expected a first line of at most ${lineLimit} bytes, found more`,
      );
    }
    return null;
  }
  first(line(buf, start, firstEnd, what, bad));
  // The head ends at LF (CR) LF; scan no further than the limit allows.
  const stop = Math.min(buf.length, start + maxBytes);
  let end = -1;
  for (let i = firstEnd; i < stop; i = buf.indexOf(LF, i + 1)) {
    if (i < 0) break;
    if (buf[i + 1] === LF) {
      end = i + 2;
      break;
    }
    if (buf[i + 1] === CR && buf[i + 2] === LF) {
      end = i + 3;
      break;
    }
  }
  if (end < 0 || end - start > maxBytes) {
    if (buf.length - start >= maxBytes) {
      throw new HttpError(
        bad === 400 ? 431 : bad,
        `${what}: expected the end of the head within ${maxBytes} bytes, found none`,
      );
    }
    return null;
  }
  const lines: string[] = [];
  let at = firstEnd + 1;
  const maxHeaders = opts.maxHeaders ?? MAX_HEADERS;
  while (true) {
    const lf = buf.indexOf(LF, at);
    if (lf === at || (lf === at + 1 && buf[at] === CR)) break;
    if (lines.length === maxHeaders) {
      throw new HttpError(
        bad === 400 ? 431 : bad,
        `${what}: expected at most ${maxHeaders} header fields, found more`,
      );
    }
    lines.push(line(buf, at, lf, what, bad));
    at = lf + 1;
  }
  return { lines: [latin1(buf, start, firstEnd).replace(/\r$/, ""), ...lines], length: end };
}

/** One line without its LF and a CR before it; a NUL or another CR is an error. */
function line(buf: Uint8Array, start: number, lf: number, what: string, bad: number): string {
  const end = lf > start && buf[lf - 1] === CR ? lf - 1 : lf;
  for (let i = start; i < end; i++) {
    if (buf[i] === CR || buf[i] === 0) {
      throw new HttpError(
        bad,
        `${what}: expected no ${
          buf[i] === 0 ? "NUL" : "bare CR"
        } in a line, found one at byte ${i}`,
      );
    }
  }
  return latin1(buf, start, end);
}

function parseHeaders(lines: string[], what: string, bad: number): HttpHeader[] {
  const headers: HttpHeader[] = [];
  for (const l of lines) {
    if (l[0] === " " || l[0] === "\t") {
      throw new HttpError(
        bad,
        `${what}: expected a header field, found obsolete line folding ${show(l)}`,
      );
    }
    const colon = l.indexOf(":");
    if (colon < 0) {
      throw new HttpError(bad, `${what}: expected "name: value", found ${show(l)}`);
    }
    const name = l.slice(0, colon);
    if (/[ \t]$/.test(name)) {
      throw new HttpError(
        bad,
        `${what}: expected no whitespace before the colon, found ${show(l)}`,
      );
    }
    if (!TOKEN.test(name)) {
      throw new HttpError(bad, `${what}: expected a field name token, found ${show(name)}`);
    }
    const value = l.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, "");
    if (BAD_VALUE.test(value)) {
      throw new HttpError(bad, `${what}: expected no control characters in ${name}, found some`);
    }
    headers.push([name, value]);
  }
  return headers;
}

/**
 * The values of every field named `name` (case-insensitive), in order.
 *
 * @example
 * ```ts
 * import { headerValues } from "./http.ts";
 * headerValues([["Via", "1.1 a"], ["via", "1.1 b"]], "VIA"); // ["1.1 a", "1.1 b"]
 * ```
 */
export function headerValues(headers: readonly HttpHeader[], name: string): string[] {
  const lower = name.toLowerCase();
  return headers.filter(([n]) => n.toLowerCase() === lower).map(([, v]) => v);
}

/**
 * The comma-separated list elements of every field named `name`, lower-cased,
 * empty elements dropped (RFC 9110 5.6.1).
 *
 * @example
 * ```ts
 * import { headerTokens } from "./http.ts";
 * headerTokens([["Connection", "Keep-Alive, , Upgrade"]], "connection"); // ["keep-alive", "upgrade"]
 * ```
 */
export function headerTokens(headers: readonly HttpHeader[], name: string): string[] {
  return headerValues(headers, name).flatMap((v) =>
    v.split(",").map((t) => t.trim().toLowerCase()).filter((t) => t !== "")
  );
}

function parseVersion(text: string, what: string, bad: number): "1.0" | "1.1" {
  if (text === "HTTP/1.1" || text === "HTTP/1.0") return text === "HTTP/1.1" ? "1.1" : "1.0";
  if (/^HTTP\/\d\.\d$/.test(text) || /^HTTP\/\d$/.test(text)) {
    throw new HttpError(
      bad === 400 ? 505 : bad,
      `${what}: expected HTTP/1.0 or HTTP/1.1, found ${show(text)}`,
    );
  }
  throw new HttpError(bad, `${what}: expected an HTTP version like HTTP/1.1, found ${show(text)}`);
}

/**
 * Parses `host[:port]` (IPv6 in brackets, no zone) as used in an authority;
 * `defaultPort` `null` makes the port required. Returns `null` when invalid.
 */
function parseAuthority(text: string, defaultPort: number | null): HostPort | null {
  let host: string;
  let rest: string;
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close < 0) return null;
    host = text.slice(1, close);
    if (!parseIPv6(host)) return null;
    rest = text.slice(close + 1);
  } else {
    const colon = text.indexOf(":");
    host = colon < 0 ? text : text.slice(0, colon);
    rest = colon < 0 ? "" : text.slice(colon);
    if (!REG_NAME.test(host)) return null;
    host = host.toLowerCase();
  }
  let port: number;
  if (rest === "" || rest === ":") {
    if (defaultPort === null) return null;
    port = defaultPort;
  } else {
    if (!/^:\d{1,5}$/.test(rest)) return null;
    port = Number(rest.slice(1));
    if (port < 1 || port > 65535) return null;
  }
  return { hostname: host, port };
}

interface Target {
  form: TargetForm;
  destination: HostPort | null;
  authority: string;
  path: string;
}

function parseTarget(method: string, target: string): Target {
  const what = "request line";
  if (method === "CONNECT") {
    const destination = parseAuthority(target, null);
    if (!destination) {
      throw new HttpError(
        400,
        `${what}: expected CONNECT host:port (port 1 to 65535, IPv6 in brackets), found ${
          show(target)
        }`,
      );
    }
    return { form: "authority", destination, authority: target, path: "" };
  }
  if (target.startsWith("/")) {
    return { form: "origin", destination: null, authority: "", path: target };
  }
  if (target === "*") return { form: "asterisk", destination: null, authority: "", path: "*" };
  const scheme = /^([A-Za-z][A-Za-z0-9+.-]*):\/\//.exec(target);
  if (!scheme) {
    throw new HttpError(400, `${what}: expected an absolute http:// URI, found ${show(target)}`);
  }
  if (scheme[1].toLowerCase() !== "http") {
    // The client wants the proxy to speak TLS (or FTP...) to the origin: not
    // done here; CONNECT tunnels https.
    throw new HttpError(
      501,
      `${what}: expected an http:// URI (use CONNECT for https), found scheme ${show(scheme[1])}`,
    );
  }
  const afterScheme = target.slice(scheme[0].length);
  const cut = afterScheme.search(/[/?#]/);
  const authority = cut < 0 ? afterScheme : afterScheme.slice(0, cut);
  let path = cut < 0 ? "" : afterScheme.slice(cut);
  if (authority.includes("@")) {
    throw new HttpError(400, `${what}: expected no user information in an http URI, found some`);
  }
  const destination = parseAuthority(authority, 80);
  if (!destination) {
    throw new HttpError(
      400,
      `${what}: expected http://host[:port]/ (port 1 to 65535), found ${show(target)}`,
    );
  }
  const hash = path.indexOf("#");
  if (hash >= 0) path = path.slice(0, hash);
  if (path === "") path = method === "OPTIONS" ? "*" : "/";
  else if (path.startsWith("?")) path = `/${path}`;
  return { form: "absolute", destination, authority, path };
}

/**
 * Decodes a request head: the request line and header fields up to the
 * empty line. CRLF and bare LF line ends are accepted; obsolete line
 * folding, whitespace before a colon, invalid tokens, NUL or CR in a line
 * are 400; a head over `maxHeaderBytes` without its end (thrown as soon as
 * the buffer passes the limit), or more than `maxHeaders` fields, 431; a
 * request line over `maxRequestLineBytes`, 414; HTTP versions other than
 * 1.0 and 1.1, 505; an `https://` or other non-http absolute URI, 501 (this
 * proxy does not originate TLS: CONNECT does https).
 *
 * The target decides the destination: CONNECT's authority-form (port
 * required) or an absolute `http://` URI (default port 80, whose authority
 * wins over `Host`, RFC 9112 3.2.2). Origin-form and `*` decode with
 * `destination: null` (a proxy answers them 400). `Host` must appear at most
 * once and be a valid authority; HTTP/1.1 origin-form requests need it.
 *
 * @example
 * ```ts
 * import { decodeRequestHead } from "./http.ts";
 * const bytes = new TextEncoder().encode("GET http://v6only.test/a?b HTTP/1.1\r\nHost: v6only.test\r\n\r\n");
 * const head = decodeRequestHead(bytes)!.value;
 * head.destination; // { hostname: "v6only.test", port: 80 }
 * head.path; // "/a?b"
 * ```
 */
export function decodeRequestHead(
  buf: Uint8Array,
  options: HeadOptions = {},
): Decoded<HttpRequestHead> | null {
  const what = "request head";
  let parts: string[] = [];
  const f = frame(buf, options, what, 400, (l) => {
    parts = l.split(" ");
    if (parts.length !== 3 || !parts[0] || !parts[1]) {
      throw new HttpError(400, `request line: expected "METHOD target HTTP/1.1", found ${show(l)}`);
    }
    if (!TOKEN.test(parts[0])) {
      throw new HttpError(400, `request line: expected a method token, found ${show(parts[0])}`);
    }
    if (!VISIBLE.test(parts[1])) {
      throw new HttpError(
        400,
        `request line: expected a target of visible ASCII, found ${show(parts[1])}`,
      );
    }
    parseVersion(parts[2], "request line", 400);
  });
  if (!f) return null;
  const [method, target, versionText] = parts;
  const version = parseVersion(versionText, "request line", 400);
  const headers = parseHeaders(f.lines.slice(1), what, 400);
  const t = parseTarget(method, target);
  const hosts = headerValues(headers, "host");
  if (hosts.length > 1) {
    throw new HttpError(400, `${what}: expected at most one Host field, found ${hosts.length}`);
  }
  if (hosts.length === 1 && hosts[0] !== "" && !parseAuthority(hosts[0], 80)) {
    throw new HttpError(400, `${what}: expected Host to be host[:port], found ${show(hosts[0])}`);
  }
  if (t.form === "origin" || t.form === "asterisk") {
    if (version === "1.1" && hosts.length === 0) {
      throw new HttpError(400, `${what}: expected a Host field in an HTTP/1.1 request, found none`);
    }
    t.authority = hosts[0] ?? "";
  }
  return { value: { method, target, version, headers, ...t }, length: f.length };
}

/**
 * Decodes a response head (status line and header fields). Malformed or
 * oversized heads throw {@linkcode HttpError} with status 502, the answer a
 * proxy gives its client for a broken upstream.
 *
 * @example
 * ```ts
 * import { decodeResponseHead } from "./http.ts";
 * const bytes = new TextEncoder().encode("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
 * decodeResponseHead(bytes)!.value.status; // 404
 * ```
 */
export function decodeResponseHead(
  buf: Uint8Array,
  options: HeadOptions = {},
): Decoded<HttpResponseHead> | null {
  const what = "response head";
  let m: RegExpExecArray | null = null;
  const f = frame(buf, options, what, 502, (l) => {
    m = /^(HTTP\/[^ ]*) ([0-9]{3})(?: (.*))?$/.exec(l);
    if (!m) {
      throw new HttpError(502, `status line: expected "HTTP/1.1 200 OK", found ${show(l)}`);
    }
    parseVersion(m[1], "status line", 502);
    if (Number(m[2]) < 100) {
      throw new HttpError(502, `status line: expected a status from 100 to 999, found ${m[2]}`);
    }
  });
  if (!f || !m) return null;
  const [, versionText, status, reason] = m as RegExpExecArray;
  const version = parseVersion(versionText, "status line", 502);
  if (reason !== undefined && BAD_VALUE.test(reason)) {
    throw new HttpError(
      502,
      "status line: expected no control characters in the reason, found some",
    );
  }
  const headers = parseHeaders(f.lines.slice(1), what, 502);
  return {
    value: { version, status: Number(status), reason: reason ?? "", headers },
    length: f.length,
  };
}
