/**
 * The pure SOCKS4 and SOCKS4a codec: bytes in, typed values out, no I/O.
 *
 * SOCKS4 (Ying-Da Lee's "SOCKS: A protocol for TCP proxy across firewalls")
 * carries an IPv4 destination; its 4A extension lets the client send a name
 * instead (DSTIP `0.0.0.x` with `x` non-zero, then the name after USERID),
 * which the gateway resolves, so an IPv4-only client can reach an IPv6-only
 * name (RFC 3089 type B).
 *
 * The `decode*` functions follow `codec.ts`: `null` when more bytes are
 * needed, `{ value, length }` for a whole message, or a
 * {@linkcode ProtocolError} when the bytes cannot be valid. Its `reply` is a
 * SOCKS5 reply code (as everywhere in the pipeline); {@linkcode socks4ReplyCode}
 * turns it into SOCKS4's.
 *
 * SOCKS4 replies carry only an IPv4 address. {@linkcode encodeSocks4Reply}
 * sends an IPv6 address as `0.0.0.0`: the SOCKS4 document defines a BIND
 * reply's DSTIP of 0 as "use the SOCKS server's address", so a BIND whose
 * listener is IPv6 still tells the client its port, and the client uses the
 * address it reached the gateway at. The second BIND reply (the peer that
 * connected) gives an IPv6 peer's port with DSTIP `0.0.0.0` likewise.
 *
 * @module
 */

import { formatIPv4, normalizeIp, parseIPv4 } from "./address.ts";
import { type Decoded, ProtocolError } from "./codec.ts";
import { Reply } from "./constants.ts";

/** The SOCKS4 request version byte (VN). */
export const SOCKS4_VERSION = 4;
/** The SOCKS4 reply version byte (VN): replies carry 0, not 4. */
export const SOCKS4_REPLY_VERSION = 0;
/** The longest USERID and SOCKS4a name accepted, in bytes (without the NUL). */
export const SOCKS4_MAX_FIELD_BYTES = 255;

/** SOCKS4 request commands (CD). */
export const Socks4Command = {
  /** Open a TCP connection to the destination. */
  CONNECT: 0x01,
  /** Accept one inbound TCP connection from the destination. */
  BIND: 0x02,
} as const;

/** SOCKS4 reply codes (CD of a reply). */
export const Socks4Reply = {
  /** Request granted. */
  GRANTED: 0x5a,
  /** Request rejected or failed. */
  REJECTED: 0x5b,
  /** Rejected: the server cannot reach the client's identd. */
  IDENTD_UNREACHABLE: 0x5c,
  /** Rejected: the client program and identd report different user-ids. */
  USERID_MISMATCH: 0x5d,
} as const;

/** A SOCKS4 or SOCKS4a request. */
export interface Socks4Request {
  /** The command byte (CD); see {@linkcode Socks4Command}. Others are not a decoding error. */
  command: number;
  /** DSTIP as a dotted quad, or the SOCKS4a name. */
  hostname: string;
  /** DSTPORT. */
  port: number;
  /** USERID (UTF-8), possibly empty. */
  userId: string;
  /** True when the request used the 4A extension (a name rather than DSTIP). */
  socks4a: boolean;
}

/** A SOCKS4 reply. */
export interface Socks4ReplyMessage {
  /** The reply code; see {@linkcode Socks4Reply}. */
  reply: number;
  /** DSTIP: an IPv4 literal (an IPv6 address is sent as `0.0.0.0`, see the module doc). */
  hostname: string;
  /** DSTPORT. */
  port: number;
}

const utf8Strict = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const utf8Encoder = new TextEncoder();

function hex(n: number): string {
  return `0x${n.toString(16).padStart(2, "0")}`;
}

/**
 * Finds the NUL ending a field that starts at `start`: its index, `-1` when
 * more bytes are needed, or a throw once more than 255 bytes came without it.
 */
function fieldEnd(buf: Uint8Array, start: number, what: string): number {
  const limit = Math.min(buf.length, start + SOCKS4_MAX_FIELD_BYTES + 1);
  for (let i = start; i < limit; i++) if (buf[i] === 0) return i;
  if (buf.length > start + SOCKS4_MAX_FIELD_BYTES) {
    throw new ProtocolError(
      "too-long",
      `SOCKS4 request: expected a ${what} of at most ${SOCKS4_MAX_FIELD_BYTES} bytes ` +
        `ended by NUL, found ${buf.length - start} bytes without one`,
      Reply.GENERAL_FAILURE,
    );
  }
  return -1;
}

/**
 * Decodes a SOCKS4 or SOCKS4a request
 * `VN CD DSTPORT DSTIP USERID NUL [NAME NUL]`. USERID and the name are
 * bounded to 255 bytes (an error as soon as the 256th byte is not the NUL),
 * must be UTF-8, and the name must not be empty. An unknown CD is not a
 * decoding error: the server answers it with 0x5B.
 *
 * @example
 * ```ts
 * import { decodeSocks4Request } from "./socks4.ts";
 * const bytes = Uint8Array.of(4, 1, 0, 80, 0, 0, 0, 1, 0, ...new TextEncoder().encode("v6only.test"), 0);
 * decodeSocks4Request(bytes)?.value;
 * // { command: 1, hostname: "v6only.test", port: 80, userId: "", socks4a: true }
 * ```
 */
export function decodeSocks4Request(buf: Uint8Array): Decoded<Socks4Request> | null {
  if (buf.length < 1) return null;
  if (buf[0] !== SOCKS4_VERSION) {
    throw new ProtocolError(
      "version",
      `SOCKS4 request: expected version ${hex(SOCKS4_VERSION)}, found ${hex(buf[0])}`,
    );
  }
  if (buf.length < 8) {
    // Even before USERID, nothing can be wrong: every CD, port and address decodes.
    return null;
  }
  const userEnd = fieldEnd(buf, 8, "USERID");
  if (userEnd < 0) return null;
  let userId: string;
  try {
    userId = utf8Strict.decode(buf.subarray(8, userEnd));
  } catch {
    throw new ProtocolError(
      "credentials-encoding",
      "SOCKS4 request: expected a USERID in UTF-8, found invalid bytes",
      Reply.GENERAL_FAILURE,
    );
  }
  const command = buf[1];
  const port = (buf[2] << 8) | buf[3];
  const socks4a = buf[4] === 0 && buf[5] === 0 && buf[6] === 0 && buf[7] !== 0;
  if (!socks4a) {
    const hostname = formatIPv4(buf.subarray(4, 8));
    return { value: { command, hostname, port, userId, socks4a }, length: userEnd + 1 };
  }
  const nameStart = userEnd + 1;
  const nameEnd = fieldEnd(buf, nameStart, "SOCKS4a domain name");
  if (nameEnd < 0) return null;
  if (nameEnd === nameStart) {
    throw new ProtocolError(
      "empty-domain",
      "SOCKS4a request: expected a domain name of 1 to 255 bytes, found an empty one",
      Reply.GENERAL_FAILURE,
    );
  }
  let hostname: string;
  try {
    hostname = utf8Strict.decode(buf.subarray(nameStart, nameEnd));
  } catch {
    throw new ProtocolError(
      "domain-encoding",
      "SOCKS4a request: expected a domain name in UTF-8, found invalid bytes",
      Reply.GENERAL_FAILURE,
    );
  }
  return { value: { command, hostname, port, userId, socks4a }, length: nameEnd + 1 };
}

function encodeField(text: string, what: string, min: number): Uint8Array {
  const bytes = utf8Encoder.encode(text);
  if (bytes.length < min || bytes.length > SOCKS4_MAX_FIELD_BYTES || bytes.includes(0)) {
    throw new RangeError(
      `SOCKS4 request: expected a ${what} of ${min} to ${SOCKS4_MAX_FIELD_BYTES} bytes ` +
        `without NUL, found ${bytes.length} bytes${bytes.includes(0) ? " with a NUL" : ""}`,
    );
  }
  return bytes;
}

function checkPort(port: number): void {
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(`expected a port from 0 to 65535, found ${port}`);
  }
}

/**
 * Encodes a SOCKS4 request, or a SOCKS4a one when `hostname` is not an IPv4
 * literal (DSTIP `0.0.0.1`, the name after USERID). An IPv6 literal cannot
 * be sent (SOCKS5 can); `socks4a` is ignored.
 *
 * @example
 * ```ts
 * import { encodeSocks4Request } from "./socks4.ts";
 * encodeSocks4Request({ command: 1, hostname: "192.0.2.1", port: 80, userId: "alice" });
 * encodeSocks4Request({ command: 1, hostname: "v6only.test", port: 80, userId: "" });
 * ```
 */
export function encodeSocks4Request(
  request: Omit<Socks4Request, "socks4a"> & { socks4a?: boolean },
): Uint8Array {
  checkPort(request.port);
  const user = encodeField(request.userId, "USERID", 0);
  const v4 = parseIPv4(request.hostname);
  if (!v4 && normalizeIp(request.hostname)) {
    throw new TypeError(
      `SOCKS4 request: expected an IPv4 address or a name, found IPv6 "${request.hostname}"`,
    );
  }
  const name = v4 ? undefined : encodeField(request.hostname, "SOCKS4a domain name", 1);
  const out = new Uint8Array(8 + user.length + 1 + (name ? name.length + 1 : 0));
  out[0] = SOCKS4_VERSION;
  out[1] = request.command;
  out[2] = request.port >> 8;
  out[3] = request.port & 0xff;
  out.set(v4 ?? Uint8Array.of(0, 0, 0, 1), 4);
  out.set(user, 8);
  if (name) out.set(name, 8 + user.length + 1);
  return out;
}

/**
 * The 4 DSTIP bytes a reply can carry for `hostname`: an IPv4 literal (an
 * IPv4-mapped IPv6 one too) as it is, any other IPv6 address as `0.0.0.0`.
 */
function replyAddress(hostname: string): Uint8Array {
  const ip = normalizeIp(hostname);
  if (!ip) {
    throw new TypeError(`SOCKS4 reply: expected an IP address, found "${hostname}"`);
  }
  return ip.family === 4 ? parseIPv4(ip.host)! : new Uint8Array(4);
}

/**
 * Encodes a reply `VN=0 CD DSTPORT DSTIP`. An IPv6 `hostname` is sent as
 * `0.0.0.0` with its port (SOCKS4 cannot carry it; for BIND, 0 means "the
 * SOCKS server's address").
 *
 * @example
 * ```ts
 * import { encodeSocks4Reply, Socks4Reply } from "./socks4.ts";
 * encodeSocks4Reply({ reply: Socks4Reply.GRANTED, hostname: "192.0.2.1", port: 1080 });
 * // Uint8Array [0, 0x5a, 4, 56, 192, 0, 2, 1]
 * ```
 */
export function encodeSocks4Reply(reply: Socks4ReplyMessage): Uint8Array {
  checkPort(reply.port);
  const out = new Uint8Array(8);
  out[0] = SOCKS4_REPLY_VERSION;
  out[1] = reply.reply;
  out[2] = reply.port >> 8;
  out[3] = reply.port & 0xff;
  out.set(replyAddress(reply.hostname), 4);
  return out;
}

/**
 * Decodes a reply `VN=0 CD DSTPORT DSTIP` (for clients and tests).
 *
 * @example
 * ```ts
 * import { decodeSocks4Reply } from "./socks4.ts";
 * decodeSocks4Reply(Uint8Array.of(0, 0x5a, 0, 0, 0, 0, 0, 0))?.value;
 * // { reply: 0x5a, hostname: "0.0.0.0", port: 0 }
 * ```
 */
export function decodeSocks4Reply(buf: Uint8Array): Decoded<Socks4ReplyMessage> | null {
  if (buf.length < 1) return null;
  if (buf[0] !== SOCKS4_REPLY_VERSION) {
    throw new ProtocolError(
      "version",
      `SOCKS4 reply: expected version ${hex(SOCKS4_REPLY_VERSION)}, found ${hex(buf[0])}`,
    );
  }
  if (buf.length < 8) return null;
  return {
    value: {
      reply: buf[1],
      hostname: formatIPv4(buf.subarray(4, 8)),
      port: (buf[2] << 8) | buf[3],
    },
    length: 8,
  };
}

/**
 * The SOCKS4 reply code for a SOCKS5 one (the pipeline's `Reply`): success
 * is 0x5A (granted), every failure 0x5B (rejected or failed): SOCKS4 has no
 * finer codes, and 0x5C/0x5D are about identd, which dualsocks does not use.
 *
 * @example
 * ```ts
 * import { socks4ReplyCode } from "./socks4.ts";
 * import { Reply } from "./constants.ts";
 * socks4ReplyCode(Reply.SUCCEEDED); // 0x5a
 * socks4ReplyCode(Reply.HOST_UNREACHABLE); // 0x5b
 * ```
 */
export function socks4ReplyCode(socks5Reply: number): number {
  return socks5Reply === Reply.SUCCEEDED ? Socks4Reply.GRANTED : Socks4Reply.REJECTED;
}

const REPLY_TEXT: Record<number, string> = {
  [Socks4Reply.GRANTED]: "request granted",
  [Socks4Reply.REJECTED]: "request rejected or failed",
  [Socks4Reply.IDENTD_UNREACHABLE]: "request rejected: cannot connect to identd on the client",
  [Socks4Reply.USERID_MISMATCH]:
    "request rejected: the client and identd report different user-ids",
};

/**
 * The SOCKS4 meaning of a reply code, e.g. `0x5b` -> `"request rejected or failed"`.
 *
 * @example
 * ```ts
 * import { socks4ReplyText } from "./socks4.ts";
 * socks4ReplyText(0x5a); // "request granted"
 * ```
 */
export function socks4ReplyText(code: number): string {
  return REPLY_TEXT[code] ?? `unassigned SOCKS4 reply code ${hex(code)}`;
}
