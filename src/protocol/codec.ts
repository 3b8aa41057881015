/**
 * The pure SOCKS5 codec: bytes in, typed values out, no I/O.
 *
 * Every `decode*` function looks at the start of a buffer and returns
 * `null` when more bytes are needed, `{ value, length }` when a whole message
 * is there (`length` is how many bytes it used), or throws a
 * {@linkcode ProtocolError} when the bytes cannot be a valid message. This
 * makes them usable on a stream that delivers messages in arbitrary pieces.
 *
 * @module
 */

import { formatIPv4, formatIPv6, ipv4Number, normalizeIp, parseIPv6 } from "./address.ts";
import { AddressType, Reply, SOCKS_VERSION, USERPASS_VERSION } from "./constants.ts";

/** A SOCKS5 address: an IPv4 or IPv6 literal, or a domain name. */
export type SocksAddress =
  | { type: "ipv4"; host: string }
  | { type: "ipv6"; host: string }
  | { type: "domain"; host: string };

/** The client's method-selection greeting. */
export interface Greeting {
  /** The authentication methods the client offers. */
  methods: number[];
}

/** RFC 1929 username/password credentials. */
export interface Credentials {
  /** The user name (decoded as UTF-8). */
  username: string;
  /** The password (decoded as UTF-8). */
  password: string;
}

/** A SOCKS5 request (CONNECT, BIND or UDP ASSOCIATE). */
export interface SocksRequest {
  /** The command byte; see `Command`. */
  command: number;
  /** DST.ADDR. */
  address: SocksAddress;
  /** DST.PORT. */
  port: number;
}

/** A SOCKS5 reply. */
export interface SocksReply {
  /** The reply code; see `Reply`. */
  reply: number;
  /** BND.ADDR. */
  address: SocksAddress;
  /** BND.PORT. */
  port: number;
}

/** The header of a UDP ASSOCIATE datagram (RFC 1928 section 7). */
export interface UdpHeader {
  /** The fragment number; 0 for a whole datagram. */
  frag: number;
  /** DST.ADDR. */
  address: SocksAddress;
  /** DST.PORT. */
  port: number;
}

/** A decoded message and the number of bytes it occupied. */
export interface Decoded<T> {
  /** The decoded message. */
  value: T;
  /** How many bytes of the input the message used. */
  length: number;
}

/** What kind of malformation a {@linkcode ProtocolError} reports. */
export type ProtocolErrorKind =
  | "version"
  | "reserved"
  | "address-type"
  | "empty-domain"
  | "domain-encoding"
  | "credentials-encoding"
  | "too-long";

/**
 * Thrown when bytes cannot be a valid SOCKS5 message. `reply` is the reply
 * code a server should send before closing, when a reply makes sense.
 */
export class ProtocolError extends Error {
  /** What was wrong. */
  readonly kind: ProtocolErrorKind;
  /** The reply code to answer with, if any. */
  readonly reply?: number;
  /** Creates the error. */
  constructor(kind: ProtocolErrorKind, message: string, reply?: number) {
    super(message);
    this.name = "ProtocolError";
    this.kind = kind;
    this.reply = reply;
  }
}

// Strict, and a leading U+FEFF is part of the text: by default TextDecoder
// drops it, which made "\xEF\xBB\xBF" an empty domain name and let distinct
// byte strings decode to the same name or password.
const utf8Strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const utf8Encoder = new TextEncoder();

function hex(n: number): string {
  return `0x${n.toString(16).padStart(2, "0")}`;
}

function checkVersion(buf: Uint8Array, expected: number, what: string): void {
  if (buf[0] !== expected) {
    throw new ProtocolError(
      "version",
      `${what}: expected version ${hex(expected)}, found ${hex(buf[0])}`,
      what === "request" ? Reply.GENERAL_FAILURE : undefined,
    );
  }
}

/** Decodes the greeting `VER NMETHODS METHODS...`. */
export function decodeGreeting(buf: Uint8Array): Decoded<Greeting> | null {
  if (buf.length < 1) return null;
  checkVersion(buf, SOCKS_VERSION, "greeting");
  if (buf.length < 2) return null;
  const length = 2 + buf[1];
  if (buf.length < length) return null;
  return { value: { methods: Array.from(buf.subarray(2, length)) }, length };
}

/** Decodes the method selection reply `VER METHOD`. */
export function decodeMethodSelection(
  buf: Uint8Array,
): Decoded<number> | null {
  if (buf.length < 1) return null;
  checkVersion(buf, SOCKS_VERSION, "method selection");
  if (buf.length < 2) return null;
  return { value: buf[1], length: 2 };
}

/**
 * Decodes RFC 1929 credentials `VER ULEN UNAME PLEN PASSWD`. The name and
 * password must be UTF-8 (they are compared with configured strings): other
 * bytes throw a {@linkcode ProtocolError} of kind `credentials-encoding`,
 * rather than decode lossily so that different bytes compare equal.
 */
export function decodeCredentials(
  buf: Uint8Array,
): Decoded<Credentials> | null {
  if (buf.length < 1) return null;
  checkVersion(buf, USERPASS_VERSION, "username/password request");
  if (buf.length < 2) return null;
  const ulen = buf[1];
  if (buf.length < 3 + ulen) return null;
  const plen = buf[2 + ulen];
  const length = 3 + ulen + plen;
  if (buf.length < length) return null;
  let username: string;
  let password: string;
  try {
    username = utf8Strict.decode(buf.subarray(2, 2 + ulen));
    password = utf8Strict.decode(buf.subarray(3 + ulen, length));
  } catch {
    throw new ProtocolError(
      "credentials-encoding",
      "username/password request: expected a user name and password in UTF-8, found invalid bytes",
    );
  }
  return { value: { username, password }, length };
}

/** Decodes the RFC 1929 status reply `VER STATUS`; `true` means success. */
export function decodeAuthStatus(buf: Uint8Array): Decoded<boolean> | null {
  if (buf.length < 1) return null;
  checkVersion(buf, USERPASS_VERSION, "username/password status");
  if (buf.length < 2) return null;
  return { value: buf[1] === 0, length: 2 };
}

/**
 * Decodes `ATYP ADDR PORT` at `offset`. Returns the address, port and the
 * offset just past the port, or `null` when more bytes are needed.
 */
function decodeAddressPort(
  buf: Uint8Array,
  offset: number,
  what: string,
): { address: SocksAddress; port: number; end: number } | null {
  if (buf.length < offset + 1) return null;
  const atyp = buf[offset];
  let address: SocksAddress;
  let end: number;
  if (atyp === AddressType.IPV4) {
    end = offset + 1 + 4;
    if (buf.length < end + 2) return null;
    address = { type: "ipv4", host: formatIPv4(buf.subarray(offset + 1, end)) };
  } else if (atyp === AddressType.IPV6) {
    end = offset + 1 + 16;
    if (buf.length < end + 2) return null;
    address = { type: "ipv6", host: formatIPv6(buf.subarray(offset + 1, end)) };
  } else if (atyp === AddressType.DOMAIN) {
    if (buf.length < offset + 2) return null;
    const len = buf[offset + 1];
    if (len === 0) {
      throw new ProtocolError(
        "empty-domain",
        `${what}: expected a domain name of 1 to 255 bytes, found length 0`,
        Reply.GENERAL_FAILURE,
      );
    }
    end = offset + 2 + len;
    if (buf.length < end + 2) return null;
    let host: string;
    try {
      // Strict: a replacement character would change the name's length and meaning.
      host = utf8Strict.decode(buf.subarray(offset + 2, end));
    } catch {
      throw new ProtocolError(
        "domain-encoding",
        `${what}: expected a domain name in UTF-8, found invalid bytes`,
        Reply.GENERAL_FAILURE,
      );
    }
    address = { type: "domain", host };
  } else {
    throw new ProtocolError(
      "address-type",
      `${what}: expected address type 0x01, 0x03 or 0x04, found ${hex(atyp)}`,
      Reply.ADDRESS_TYPE_NOT_SUPPORTED,
    );
  }
  return { address, port: (buf[end] << 8) | buf[end + 1], end: end + 2 };
}

function decodeRequestOrReply(
  buf: Uint8Array,
  what: "request" | "reply",
): Decoded<{ code: number; address: SocksAddress; port: number }> | null {
  if (buf.length < 1) return null;
  checkVersion(buf, SOCKS_VERSION, what);
  if (buf.length < 3) return null;
  if (buf[2] !== 0) {
    throw new ProtocolError(
      "reserved",
      `${what}: expected reserved byte 0x00, found ${hex(buf[2])}`,
      what === "request" ? Reply.GENERAL_FAILURE : undefined,
    );
  }
  const ap = decodeAddressPort(buf, 3, what);
  if (!ap) return null;
  return {
    value: { code: buf[1], address: ap.address, port: ap.port },
    length: ap.end,
  };
}

/**
 * Decodes a request `VER CMD RSV ATYP DST.ADDR DST.PORT`. An unknown
 * command is not a decoding error: the server answers it with reply 7.
 *
 * @example
 * ```ts
 * import { decodeRequest } from "./codec.ts";
 * const bytes = new Uint8Array([5, 1, 0, 1, 192, 0, 2, 1, 0, 80]);
 * decodeRequest(bytes)?.value;
 * // { command: 1, address: { type: "ipv4", host: "192.0.2.1" }, port: 80 }
 * ```
 */
export function decodeRequest(buf: Uint8Array): Decoded<SocksRequest> | null {
  const d = decodeRequestOrReply(buf, "request");
  if (!d) return null;
  const { code, address, port } = d.value;
  return { value: { command: code, address, port }, length: d.length };
}

/** Decodes a reply `VER REP RSV ATYP BND.ADDR BND.PORT`. */
export function decodeReply(buf: Uint8Array): Decoded<SocksReply> | null {
  const d = decodeRequestOrReply(buf, "reply");
  if (!d) return null;
  const { code, address, port } = d.value;
  return { value: { reply: code, address, port }, length: d.length };
}

/**
 * Decodes the header of a UDP ASSOCIATE datagram. A datagram must arrive
 * whole, so a short one is an error rather than a request for more bytes.
 * `length` is the offset of the payload.
 */
export function decodeUdpHeader(buf: Uint8Array): Decoded<UdpHeader> {
  if (buf.length < 4 || buf[0] !== 0 || buf[1] !== 0) {
    throw new ProtocolError(
      buf.length < 4 ? "too-long" : "reserved",
      buf.length < 4
        ? `UDP datagram: expected at least 4 header bytes, found ${buf.length}`
        : "UDP datagram: expected reserved bytes 0x0000",
    );
  }
  const ap = decodeAddressPort(buf, 3, "UDP datagram");
  if (!ap) {
    throw new ProtocolError(
      "too-long",
      `UDP datagram: header truncated at ${buf.length} bytes`,
    );
  }
  return {
    value: { frag: buf[2], address: ap.address, port: ap.port },
    length: ap.end,
  };
}

/** Encodes a greeting offering `methods`. */
export function encodeGreeting(greeting: Greeting): Uint8Array {
  if (greeting.methods.length < 1 || greeting.methods.length > 255) {
    throw new RangeError(
      `greeting: expected 1 to 255 methods, found ${greeting.methods.length}`,
    );
  }
  return Uint8Array.of(SOCKS_VERSION, greeting.methods.length, ...greeting.methods);
}

/** Encodes the server's method selection `VER METHOD`. */
export function encodeMethodSelection(method: number): Uint8Array {
  return SELECTIONS[method] ?? Uint8Array.of(SOCKS_VERSION, method);
}

/** The common answers, made once (a write never changes its bytes). */
const SELECTIONS: Record<number, Uint8Array> = {
  [0x00]: Uint8Array.of(SOCKS_VERSION, 0x00),
  [0x02]: Uint8Array.of(SOCKS_VERSION, 0x02),
  [0xff]: Uint8Array.of(SOCKS_VERSION, 0xff),
};

/** Encodes RFC 1929 credentials. */
export function encodeCredentials(credentials: Credentials): Uint8Array {
  const u = utf8Encoder.encode(credentials.username);
  const p = utf8Encoder.encode(credentials.password);
  const bad = credentialLengths(credentials);
  if (bad) {
    throw new RangeError(
      `credentials: expected a user name and password of 1 to 255 bytes each, found ${bad[0]} and ${
        bad[1]
      }`,
    );
  }
  const out = new Uint8Array(3 + u.length + p.length);
  out[0] = USERPASS_VERSION;
  out[1] = u.length;
  out.set(u, 2);
  out[2 + u.length] = p.length;
  out.set(p, 3 + u.length);
  return out;
}

/**
 * The UTF-8 byte lengths of a user name and password that RFC 1929 cannot
 * carry (each must be 1 to 255 bytes), or `null` when both fit.
 *
 * @example
 * ```ts
 * import { credentialLengths } from "./codec.ts";
 * credentialLengths({ username: "alice", password: "" }); // [5, 0]
 * ```
 */
export function credentialLengths(credentials: Credentials): [number, number] | null {
  const u = utf8Encoder.encode(credentials.username).length;
  const p = utf8Encoder.encode(credentials.password).length;
  return u < 1 || u > 255 || p < 1 || p > 255 ? [u, p] : null;
}

/** Encodes the RFC 1929 status reply. */
export function encodeAuthStatus(ok: boolean): Uint8Array {
  return Uint8Array.of(USERPASS_VERSION, ok ? 0 : 1);
}

/**
 * Builds a {@linkcode SocksAddress} from a host string: IP literals (brackets
 * allowed, IPv4-mapped IPv6 unmapped) become `ipv4`/`ipv6`, anything else
 * `domain`.
 */
export function toSocksAddress(host: string): SocksAddress {
  const ip = normalizeIp(host);
  if (!ip) return { type: "domain", host };
  return { type: ip.family === 4 ? "ipv4" : "ipv6", host: ip.host };
}

function encodedAddressLength(address: SocksAddress): number {
  if (address.type === "ipv4") return 5;
  if (address.type === "ipv6") return 17;
  return 2 + utf8Encoder.encode(address.host).length;
}

function writeAddressPort(
  out: Uint8Array,
  offset: number,
  address: SocksAddress,
  port: number,
): number {
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(`expected a port from 0 to 65535, found ${port}`);
  }
  if (address.type === "ipv4") {
    // Every CONNECT reply names an IPv4 address: no byte array for it.
    const n = ipv4Number(address.host);
    if (n < 0) throw new TypeError(`expected an IPv4 address, found "${address.host}"`);
    out[offset++] = AddressType.IPV4;
    out[offset++] = n >>> 24;
    out[offset++] = (n >>> 16) & 0xff;
    out[offset++] = (n >>> 8) & 0xff;
    out[offset++] = n & 0xff;
  } else {
    let bytes: Uint8Array | null;
    if (address.type === "ipv6") {
      bytes = parseIPv6(address.host);
      if (!bytes) throw new TypeError(`expected an IPv6 address, found "${address.host}"`);
      out[offset++] = AddressType.IPV6;
    } else {
      bytes = utf8Encoder.encode(address.host);
      if (bytes.length < 1 || bytes.length > 255) {
        throw new RangeError(
          `expected a domain name of 1 to 255 bytes, found ${bytes.length}`,
        );
      }
      out[offset++] = AddressType.DOMAIN;
      out[offset++] = bytes.length;
    }
    out.set(bytes, offset);
    offset += bytes.length;
  }
  out[offset++] = port >> 8;
  out[offset++] = port & 0xff;
  return offset;
}

/**
 * Encodes a request.
 *
 * @example
 * ```ts
 * import { encodeRequest } from "./codec.ts";
 * encodeRequest({ command: 1, address: { type: "domain", host: "v4only.test" }, port: 80 });
 * ```
 */
export function encodeRequest(request: SocksRequest): Uint8Array {
  const out = new Uint8Array(3 + encodedAddressLength(request.address) + 2);
  out[0] = SOCKS_VERSION;
  out[1] = request.command;
  out[2] = 0;
  writeAddressPort(out, 3, request.address, request.port);
  return out;
}

/** Encodes a reply. */
export function encodeReply(reply: SocksReply): Uint8Array {
  const out = new Uint8Array(3 + encodedAddressLength(reply.address) + 2);
  out[0] = SOCKS_VERSION;
  out[1] = reply.reply;
  out[2] = 0;
  writeAddressPort(out, 3, reply.address, reply.port);
  return out;
}

/** Encodes a UDP datagram: header followed by `data`. */
export function encodeUdpDatagram(
  header: UdpHeader,
  data: Uint8Array,
): Uint8Array {
  const hl = 3 + encodedAddressLength(header.address) + 2;
  const out = new Uint8Array(hl + data.length);
  out[2] = header.frag;
  writeAddressPort(out, 3, header.address, header.port);
  out.set(data, hl);
  return out;
}
