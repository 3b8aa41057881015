/**
 * The pure PROXY protocol codec (HAProxy's proxy-protocol.txt), versions 1
 * (one text line) and 2 (binary): bytes in, typed values out, no I/O.
 *
 * A load balancer or another proxy in front of the gateway sends this
 * header first on each connection to say who the real client is. As in
 * `codec.ts`, {@linkcode decodeProxyHeader} returns `null` when more bytes
 * are needed, `{ value, length }` once a whole header is there, or throws a
 * {@linkcode ProtocolError} as soon as the bytes cannot be a valid header
 * (kind `version` when they are not a PROXY header at all, `too-long` past
 * the size bounds, `address-type` for an address or family that is not of
 * the announced form, `reserved` for any other field that breaks the
 * syntax). {@linkcode sniffProxyHeader} tells early whether the bytes can be
 * a header.
 *
 * What the value means, as the specification says: `command: "local"` (a
 * v2 LOCAL, or a v1 `UNKNOWN` line) carries no addresses, and the receiver
 * uses the connection's own endpoints; so does a v2 PROXY header whose
 * family or transport this codec does not carry (AF_UNSPEC, AF_UNIX,
 * DGRAM: the "fall back to UNSPEC mode" the specification allows).
 * TLVs are checked to tile the rest of the header exactly and are skipped.
 *
 * @module
 */

import { formatIPv4, formatIPv6, parseIPv4, parseIPv6 } from "./address.ts";
import { type Decoded, ProtocolError } from "./codec.ts";

/** An endpoint named by a PROXY header, in Deno's shape (IPv6 without brackets). */
export interface ProxyAddress {
  /** An IPv4 literal, or an IPv6 literal in RFC 5952 form. */
  hostname: string;
  /** The TCP port, 0 to 65535. */
  port: number;
}

/** A decoded PROXY protocol header. */
export interface ProxyHeader {
  /** The protocol version the header used. */
  version: 1 | 2;
  /**
   * `"proxy"`: `source` and `destination` are the original connection's,
   * when present; `"local"`: the connection stands for itself.
   */
  command: "proxy" | "local";
  /** The original client. */
  source?: ProxyAddress;
  /** The address the original client connected to. */
  destination?: ProxyAddress;
}

/** Options for {@linkcode decodeProxyHeader}. */
export interface ProxyDecodeOptions {
  /**
   * The longest v2 header accepted, in bytes (16 plus the length field):
   * addresses and TLVs together. Default {@linkcode PROXY_V2_DEFAULT_MAX_BYTES}.
   */
  maxLength?: number;
}

/** One v2 TLV to encode (type 0x00-0xff, value up to 65535 bytes). */
export interface ProxyTlv {
  /** The TLV type, e.g. 0x04 for PP2_TYPE_NOOP. */
  type: number;
  /** The value bytes. */
  value: Uint8Array;
}

/** Options for {@linkcode encodeProxyHeaderV2}. */
export interface ProxyEncodeOptions {
  /** TLVs to append after the addresses. */
  tlvs?: readonly ProxyTlv[];
}

/** The 12-byte signature that starts every v2 header. */
export const PROXY_V2_SIGNATURE: Uint8Array = Uint8Array.of(
  0x0d,
  0x0a,
  0x0d,
  0x0a,
  0x00,
  0x0d,
  0x0a,
  0x51,
  0x55,
  0x49,
  0x54,
  0x0a,
);
/** The longest v1 line, CRLF included (the specification's worst case). */
export const PROXY_V1_MAX_BYTES = 107;
/** The default bound on a v2 header (16-byte head, addresses, TLVs). */
export const PROXY_V2_DEFAULT_MAX_BYTES = 2048;

const V1_PREFIX = Uint8Array.from("PROXY ", (c) => c.charCodeAt(0));
const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
/** The announced v1 protocols: "TCP4 ", "TCP6 ", or "UNKNOWN" then SP or CRLF. */
const V1_PROTOCOLS = ["TCP4 ", "TCP6 ", "UNKNOWN"];
/** v2 address block sizes by family nibble (AF_UNSPEC, AF_INET, AF_INET6, AF_UNIX). */
const V2_ADDRESS_BYTES = [0, 12, 36, 216];

const latin1 = new TextDecoder("latin1");

function hex(n: number): string {
  return `0x${n.toString(16).padStart(2, "0")}`;
}

function syntax(message: string): ProtocolError {
  return new ProtocolError("reserved", `PROXY header: ${message}`);
}

/** Bytes as text for an error message: printable ASCII as is, the rest escaped. */
function shown(bytes: Uint8Array): string {
  let out = "";
  for (const b of bytes.subarray(0, 24)) {
    out += b >= 0x20 && b < 0x7f && b !== 0x22
      ? String.fromCharCode(b)
      : `\\x${b.toString(16).padStart(2, "0")}`;
  }
  return `"${out}${bytes.length > 24 ? "..." : ""}"`;
}

/**
 * Which PROXY header the bytes start: `1` ("PROXY "), `2` (the v2
 * signature), `"none"` as soon as a byte differs from both (the connection
 * does not start with a PROXY header), or `null` while the bytes so far are
 * a prefix of either.
 *
 * @example
 * ```ts
 * import { sniffProxyHeader } from "./proxy_protocol.ts";
 * sniffProxyHeader(new TextEncoder().encode("PROXY TCP4 ")); // 1
 * sniffProxyHeader(new TextEncoder().encode("PRO")); // null
 * sniffProxyHeader(Uint8Array.of(5, 1, 0)); // "none"
 * ```
 */
export function sniffProxyHeader(buf: Uint8Array): 1 | 2 | "none" | null {
  if (buf.length === 0) return null;
  const signature = buf[0] === PROXY_V2_SIGNATURE[0] ? PROXY_V2_SIGNATURE : V1_PREFIX;
  const n = Math.min(buf.length, signature.length);
  for (let i = 0; i < n; i++) if (buf[i] !== signature[i]) return "none";
  if (n < signature.length) return null;
  return signature === V1_PREFIX ? 1 : 2;
}

/**
 * Decodes a PROXY protocol header (v1 or v2) at the start of `buf`. The
 * v1 line is at most 107 bytes with exact single spaces, canonical ports
 * (no leading zeros) and addresses of the announced family; a v2 header is
 * bounded by `options.maxLength`, its address block and TLVs must fit its
 * length field exactly.
 *
 * @example
 * ```ts
 * import { decodeProxyHeader } from "./proxy_protocol.ts";
 * const line = new TextEncoder().encode("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
 * decodeProxyHeader(line)?.value;
 * // { version: 1, command: "proxy",
 * //   source: { hostname: "192.168.0.1", port: 56324 },
 * //   destination: { hostname: "192.168.0.11", port: 443 } }
 * ```
 */
export function decodeProxyHeader(
  buf: Uint8Array,
  options: ProxyDecodeOptions = {},
): Decoded<ProxyHeader> | null {
  const version = sniffProxyHeader(buf);
  if (version === null) return null;
  if (version === "none") {
    throw new ProtocolError(
      "version",
      `PROXY header: expected "PROXY " or the v2 signature, found ${shown(buf)}`,
    );
  }
  return version === 1 ? decodeV1(buf) : decodeV2(buf, options);
}

function decodeV1(buf: Uint8Array): Decoded<ProxyHeader> | null {
  // Find the CRLF within 107 bytes, rejecting early what cannot lead to a valid line.
  const limit = Math.min(buf.length, PROXY_V1_MAX_BYTES);
  const start = V1_PREFIX.length;
  let end = -1; // the CR of the CRLF, once found
  let scanned = limit; // the line's bytes seen so far, CR excluded
  for (let i = start; i < limit; i++) {
    const b = buf[i];
    if (b === LF) throw syntax(`expected CRLF to end the v1 line, found a lone LF at byte ${i}`);
    if (b === CR) {
      scanned = i;
      if (i + 1 >= buf.length) break; // the LF may follow
      if (buf[i + 1] !== LF) {
        throw syntax(`expected CRLF to end the v1 line, found a lone CR at byte ${i}`);
      }
      end = i;
      break;
    }
  }
  if (end < 0 ? buf.length >= PROXY_V1_MAX_BYTES : end + 2 > PROXY_V1_MAX_BYTES) {
    throw new ProtocolError(
      "too-long",
      `PROXY header: expected a v1 line of at most ${PROXY_V1_MAX_BYTES} bytes ending in ` +
        `CRLF, found ${end < 0 ? `${buf.length} bytes without one` : `${end + 2} bytes`}`,
    );
  }
  checkV1Protocol(buf, scanned);
  if (end < 0) return null;
  const length = end + 2;
  const line = latin1.decode(buf.subarray(start, end));
  if (line.startsWith("UNKNOWN")) {
    // "the receiver must ignore anything presented before the CRLF"
    return { value: { version: 1, command: "local" }, length };
  }
  const fields = line.split(" ");
  if (fields[0] !== "TCP4" && fields[0] !== "TCP6") throw badProtocol(buf.subarray(start, end));
  if (fields.length !== 5) {
    throw syntax(
      `expected "PROXY ${fields[0]} SOURCE DESTINATION SPORT DPORT" with single spaces, ` +
        `found ${shown(buf.subarray(0, end))}`,
    );
  }
  const [protocol, src, dst, sport, dport] = fields;
  const family = protocol === "TCP4" ? 4 : 6;
  return {
    value: {
      version: 1,
      command: "proxy",
      source: { hostname: v1Address(src, family, "source"), port: v1Port(sport, "source") },
      destination: {
        hostname: v1Address(dst, family, "destination"),
        port: v1Port(dport, "destination"),
      },
    },
    length,
  };
}

function badProtocol(found: Uint8Array): ProtocolError {
  return syntax(`expected "TCP4", "TCP6" or "UNKNOWN" after "PROXY ", found ${shown(found)}`);
}

/** Checks the protocol word and, for TCP4/TCP6, the characters of the line so far. */
function checkV1Protocol(buf: Uint8Array, end: number): void {
  const start = V1_PREFIX.length;
  const word = latin1.decode(buf.subarray(start, Math.min(end, start + 7)));
  const known = V1_PROTOCOLS.find((p) => p.startsWith(word) || word.startsWith(p));
  const unknownThenMore = word === "UNKNOWN" && end > start + 7 && buf[start + 7] !== SP;
  if (!known || unknownThenMore) throw badProtocol(buf.subarray(start, end));
  if (known === "UNKNOWN") return;
  for (let i = start + 5; i < end; i++) {
    const b = buf[i];
    const ok = b === SP || b === 0x2e || b === 0x3a || (b >= 0x30 && b <= 0x39) ||
      (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);
    if (!ok) {
      throw syntax(`expected addresses and ports in a ${known.trim()} line, found byte ${hex(b)}`);
    }
  }
}

function v1Address(text: string, family: 4 | 6, what: string): string {
  const bytes = family === 4 ? parseIPv4(text) : text.includes(":") ? parseIPv6(text) : null;
  if (!bytes) {
    throw new ProtocolError(
      "address-type",
      `PROXY header: expected an IPv${family} ${what} address, found "${text}"`,
    );
  }
  return family === 4 ? formatIPv4(bytes) : formatIPv6(bytes);
}

function v1Port(text: string, what: string): number {
  if (!/^(?:0|[1-9][0-9]{0,4})$/.test(text) || Number(text) > 65535) {
    throw syntax(`expected a ${what} port from 0 to 65535 without leading zeros, found "${text}"`);
  }
  return Number(text);
}

function decodeV2(buf: Uint8Array, options: ProxyDecodeOptions): Decoded<ProxyHeader> | null {
  if (buf.length < 13) return null;
  const verCmd = buf[12];
  if (verCmd >> 4 !== 2) {
    throw new ProtocolError(
      "version",
      `PROXY header: expected v2 version nibble 0x2, found ${hex(verCmd >> 4)}`,
    );
  }
  const cmd = verCmd & 0x0f;
  if (cmd > 1) {
    throw syntax(`expected v2 command LOCAL (0x0) or PROXY (0x1), found ${hex(cmd)}`);
  }
  if (buf.length < 14) return null;
  const famByte = buf[13];
  const family = famByte >> 4;
  const transport = famByte & 0x0f;
  if (family > 3 || transport > 2) {
    throw new ProtocolError(
      "address-type",
      `PROXY header: expected a v2 family 0x0-0x3 and transport 0x0-0x2, found ${hex(famByte)}`,
    );
  }
  if (buf.length < 16) return null;
  const declared = (buf[14] << 8) | buf[15];
  const length = 16 + declared;
  const max = options.maxLength ?? PROXY_V2_DEFAULT_MAX_BYTES;
  if (length > max) {
    throw new ProtocolError(
      "too-long",
      `PROXY header: expected a v2 header of at most ${max} bytes, found a length field of ` +
        `${declared} (${length} bytes)`,
    );
  }
  if (cmd === 0) {
    // LOCAL: "discard the protocol block including the family".
    if (buf.length < length) return null;
    return { value: { version: 2, command: "local" }, length };
  }
  const addressBytes = transport === 0 ? 0 : V2_ADDRESS_BYTES[family];
  if (declared < addressBytes) {
    throw new ProtocolError(
      "address-type",
      `PROXY header: expected at least ${addressBytes} address bytes for family ${hex(famByte)}, ` +
        `found a length field of ${declared}`,
    );
  }
  if (buf.length < length) return null;
  // An UNSPEC family or transport has no defined address size: its block is opaque.
  if (addressBytes > 0) checkTlvs(buf.subarray(16 + addressBytes, length));
  if ((family !== 1 && family !== 2) || transport !== 1) {
    // AF_UNSPEC, AF_UNIX, DGRAM or UNSPEC transport: the UNSPEC fallback.
    return { value: { version: 2, command: "proxy" }, length };
  }
  const size = family === 1 ? 4 : 16;
  const format = family === 1 ? formatIPv4 : formatIPv6;
  const ports = 16 + 2 * size;
  return {
    value: {
      version: 2,
      command: "proxy",
      source: {
        hostname: format(buf.subarray(16, 16 + size)),
        port: (buf[ports] << 8) | buf[ports + 1],
      },
      destination: {
        hostname: format(buf.subarray(16 + size, ports)),
        port: (buf[ports + 2] << 8) | buf[ports + 3],
      },
    },
    length,
  };
}

/** Checks that TLVs (type, 16-bit length, value) tile `block` exactly. */
function checkTlvs(block: Uint8Array): void {
  let at = 0;
  while (at < block.length) {
    if (block.length - at < 3) {
      throw syntax(
        `expected a TLV of at least 3 bytes after the addresses, found ${block.length - at}`,
      );
    }
    const size = (block[at + 1] << 8) | block[at + 2];
    if (at + 3 + size > block.length) {
      throw syntax(
        `expected TLV ${hex(block[at])} of ${size} bytes to fit the header, found ` +
          `${block.length - at - 3} bytes left`,
      );
    }
    at += 3 + size;
  }
}

/** The family and bytes of both endpoints, checked to be IP literals of one family. */
function endpoints(
  header: Omit<ProxyHeader, "version">,
): { family: 4 | 6; src: Uint8Array; dst: Uint8Array } | undefined {
  if (header.command === "local") return undefined;
  const { source, destination } = header;
  if (!source || !destination) {
    if (source || destination) {
      throw new TypeError("PROXY header: expected both source and destination, found only one");
    }
    return undefined;
  }
  for (const a of [source, destination]) {
    if (!Number.isInteger(a.port) || a.port < 0 || a.port > 65535) {
      throw new RangeError(`PROXY header: expected a port from 0 to 65535, found ${a.port}`);
    }
  }
  const src4 = parseIPv4(source.hostname);
  const dst4 = parseIPv4(destination.hostname);
  const src = src4 ?? parseIPv6(source.hostname);
  const dst = dst4 ?? parseIPv6(destination.hostname);
  if (!src || !dst || (src4 === null) !== (dst4 === null)) {
    throw new TypeError(
      `PROXY header: expected two IP addresses of one family, found "${source.hostname}" ` +
        `and "${destination.hostname}"`,
    );
  }
  return { family: src4 ? 4 : 6, src, dst };
}

/**
 * Encodes a v1 line. `"local"`, or `"proxy"` without addresses, is
 * `PROXY UNKNOWN\r\n`; otherwise both addresses must be IP literals of one
 * family (IPv6 is written in RFC 5952 form).
 *
 * @example
 * ```ts
 * import { encodeProxyHeaderV1 } from "./proxy_protocol.ts";
 * encodeProxyHeaderV1({
 *   command: "proxy",
 *   source: { hostname: "2001:db8::1", port: 40000 },
 *   destination: { hostname: "2001:db8::2", port: 1080 },
 * }); // "PROXY TCP6 2001:db8::1 2001:db8::2 40000 1080\r\n" as bytes
 * ```
 */
export function encodeProxyHeaderV1(header: Omit<ProxyHeader, "version">): Uint8Array {
  const e = endpoints(header);
  if (!e) return new TextEncoder().encode("PROXY UNKNOWN\r\n");
  const format = e.family === 4 ? formatIPv4 : formatIPv6;
  const line = `PROXY TCP${e.family} ${format(e.src)} ${format(e.dst)} ` +
    `${header.source!.port} ${header.destination!.port}\r\n`;
  return new TextEncoder().encode(line);
}

/**
 * Encodes a v2 header: LOCAL with AF_UNSPEC, or PROXY with TCP over IPv4 or
 * IPv6 (AF_UNSPEC when there are no addresses), then `options.tlvs`.
 *
 * @example
 * ```ts
 * import { encodeProxyHeaderV2 } from "./proxy_protocol.ts";
 * encodeProxyHeaderV2({
 *   command: "proxy",
 *   source: { hostname: "192.0.2.1", port: 40000 },
 *   destination: { hostname: "198.51.100.1", port: 1080 },
 * }).length; // 28
 * ```
 */
export function encodeProxyHeaderV2(
  header: Omit<ProxyHeader, "version">,
  options: ProxyEncodeOptions = {},
): Uint8Array {
  const e = endpoints(header);
  const tlvs = options.tlvs ?? [];
  const addressBytes = e ? V2_ADDRESS_BYTES[e.family === 4 ? 1 : 2] : 0;
  let declared = addressBytes;
  for (const t of tlvs) {
    if (!Number.isInteger(t.type) || t.type < 0 || t.type > 255 || t.value.length > 65535) {
      throw new RangeError(
        `PROXY header: expected a TLV type 0-255 and at most 65535 value bytes, found type ` +
          `${t.type} with ${t.value.length} bytes`,
      );
    }
    declared += 3 + t.value.length;
  }
  if (declared > 65535) {
    throw new RangeError(
      `PROXY header: expected at most 65535 bytes after the head, found ${declared}`,
    );
  }
  const out = new Uint8Array(16 + declared);
  out.set(PROXY_V2_SIGNATURE, 0);
  out[12] = header.command === "local" ? 0x20 : 0x21;
  out[13] = e ? (e.family === 4 ? 0x11 : 0x21) : 0x00;
  out[14] = declared >> 8;
  out[15] = declared & 0xff;
  let at = 16;
  if (e) {
    out.set(e.src, at);
    out.set(e.dst, at + e.src.length);
    at += 2 * e.src.length;
    for (const port of [header.source!.port, header.destination!.port]) {
      out[at++] = port >> 8;
      out[at++] = port & 0xff;
    }
  }
  for (const t of tlvs) {
    out[at] = t.type;
    out[at + 1] = t.value.length >> 8;
    out[at + 2] = t.value.length & 0xff;
    out.set(t.value, at + 3);
    at += 3 + t.value.length;
  }
  return out;
}
