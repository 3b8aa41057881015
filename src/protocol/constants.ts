/**
 * SOCKS5 wire constants (RFC 1928, RFC 1929).
 *
 * @module
 */

/** The SOCKS protocol version byte. */
export const SOCKS_VERSION = 5;
/** The username/password sub-negotiation version byte (RFC 1929). */
export const USERPASS_VERSION = 1;

/** Authentication methods offered in the greeting (RFC 1928 section 3). */
export const Method = {
  /** No authentication required. */
  NO_AUTH: 0x00,
  /** GSSAPI (not implemented by dualsocks). */
  GSSAPI: 0x01,
  /** Username/password (RFC 1929). */
  USERPASS: 0x02,
  /** No acceptable methods: the server closes after sending it. */
  NO_ACCEPTABLE: 0xff,
} as const;

/** Request commands (RFC 1928 section 4). */
export const Command = {
  /** Open a TCP connection to the destination. */
  CONNECT: 0x01,
  /** Accept one inbound TCP connection for the client. */
  BIND: 0x02,
  /** Relay UDP datagrams for the client. */
  UDP_ASSOCIATE: 0x03,
} as const;

/** Address types (RFC 1928 section 5). */
export const AddressType = {
  /** A 4-byte IPv4 address. */
  IPV4: 0x01,
  /** A length-prefixed domain name. */
  DOMAIN: 0x03,
  /** A 16-byte IPv6 address. */
  IPV6: 0x04,
} as const;

/** Reply codes (RFC 1928 section 6). */
export const Reply = {
  /** Succeeded. */
  SUCCEEDED: 0x00,
  /** General SOCKS server failure. */
  GENERAL_FAILURE: 0x01,
  /** Connection not allowed by ruleset. */
  NOT_ALLOWED: 0x02,
  /** Network unreachable. */
  NETWORK_UNREACHABLE: 0x03,
  /** Host unreachable. */
  HOST_UNREACHABLE: 0x04,
  /** Connection refused. */
  CONNECTION_REFUSED: 0x05,
  /** TTL expired. */
  TTL_EXPIRED: 0x06,
  /** Command not supported. */
  COMMAND_NOT_SUPPORTED: 0x07,
  /** Address type not supported. */
  ADDRESS_TYPE_NOT_SUPPORTED: 0x08,
} as const;

/** A SOCKS5 reply code. */
export type ReplyCode = (typeof Reply)[keyof typeof Reply];

const REPLY_TEXT: Record<number, string> = {
  0: "succeeded",
  1: "general SOCKS server failure",
  2: "connection not allowed by ruleset",
  3: "network unreachable",
  4: "host unreachable",
  5: "connection refused",
  6: "TTL expired",
  7: "command not supported",
  8: "address type not supported",
};

/**
 * The RFC 1928 meaning of a reply code, e.g. `4` -> `"host unreachable"`.
 *
 * @example
 * ```ts
 * import { replyText } from "./constants.ts";
 * replyText(5); // "connection refused"
 * ```
 */
export function replyText(code: number): string {
  return REPLY_TEXT[code] ?? `unassigned reply code ${code}`;
}
