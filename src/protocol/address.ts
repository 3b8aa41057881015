/**
 * Pure IP address helpers: parse and format IPv4/IPv6 literals, detect
 * families, unmap IPv4-mapped IPv6 addresses, and match CIDR prefixes.
 * No I/O and no DNS: a string that is not a literal is simply not an address.
 *
 * @module
 */

/** An IP address family. */
export type Family = 4 | 6;

/**
 * Parses a dotted-quad IPv4 literal into its 4 bytes, or returns `null` when
 * the string is not one.
 *
 * @example
 * ```ts
 * import { parseIPv4 } from "./address.ts";
 * parseIPv4("192.0.2.1"); // Uint8Array [192, 0, 2, 1]
 * ```
 */
export function parseIPv4(text: string): Uint8Array | null {
  const out = new Uint8Array(4);
  return scanIPv4(text, out) ? out : null;
}

/**
 * A dotted-quad IPv4 literal as an unsigned 32-bit number, or -1 when the
 * string is not one: {@linkcode parseIPv4} without allocating.
 *
 * @example
 * ```ts
 * import { ipv4Number } from "./address.ts";
 * ipv4Number("192.0.2.1") >>> 24; // 192
 * ipv4Number("example.test"); // -1
 * ```
 */
export function ipv4Number(text: string): number {
  const len = text.length;
  if (len < 7 || len > 15) return -1;
  let parts = 0;
  let value = 0;
  let digits = 0;
  let out = 0;
  for (let i = 0; i <= len; i++) {
    const c = i < len ? text.charCodeAt(i) : 46; // a virtual "." at the end
    if (c === 46) {
      if (digits === 0 || parts > 3) return -1;
      out = out * 256 + value;
      parts++;
      value = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && value === 0) return -1; // a leading zero
      value = value * 10 + (c - 48);
      if (++digits > 3 || value > 255) return -1;
    } else return -1;
  }
  return parts === 4 ? out : -1;
}

/**
 * The dotted-quad scanner behind {@linkcode parseIPv4}: writes the bytes to
 * `out` when given. A string it accepts is already canonical (no leading
 * zeros, no spaces), so callers that only need to know can skip the bytes.
 */
function scanIPv4(text: string, out?: Uint8Array): boolean {
  // A hand-written scanner: this runs several times per session.
  const len = text.length;
  if (len < 7 || len > 15) return false;
  let part = 0;
  let value = 0;
  let digits = 0;
  for (let i = 0; i <= len; i++) {
    const c = i < len ? text.charCodeAt(i) : 46; // a virtual "." at the end
    if (c === 46) {
      if (digits === 0 || part > 3) return false;
      if (out) out[part] = value;
      part++;
      value = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits > 0 && value === 0) return false; // a leading zero
      value = value * 10 + (c - 48);
      if (++digits > 3 || value > 255) return false;
    } else return false;
  }
  return part === 4;
}

/**
 * Parses an IPv6 literal (with `::` compression and an optional embedded
 * IPv4 tail, without brackets or zone) into its 16 bytes, or returns `null`.
 */
export function parseIPv6(text: string): Uint8Array | null {
  if (text.length < 2 || text.length > 45 || text.includes("%")) return null;
  const out = new Uint8Array(16);
  let head = text;
  let tail4: Uint8Array | null = null;
  const lastColon = text.lastIndexOf(":");
  if (lastColon >= 0 && text.indexOf(".", lastColon) > 0) {
    tail4 = parseIPv4(text.slice(lastColon + 1));
    if (!tail4) return null;
    head = text.slice(0, lastColon + 1) + "0:0";
  }
  const halves = head.split("::");
  if (halves.length > 2) return null;
  const parseGroups = (s: string): number[] | null => {
    if (s === "") return [];
    const groups = s.split(":");
    const values: number[] = [];
    for (const g of groups) {
      if (!/^[0-9a-fA-F]{1,4}$/.test(g)) return null;
      values.push(parseInt(g, 16));
    }
    return values;
  };
  const left = parseGroups(halves[0]);
  const right = halves.length === 2 ? parseGroups(halves[1]) : [];
  if (!left || !right) return null;
  const total = left.length + right.length;
  if (halves.length === 1 ? total !== 8 : total > 7) return null;
  const groups = [...left, ...new Array(8 - total).fill(0), ...right];
  for (let i = 0; i < 8; i++) {
    out[i * 2] = groups[i] >> 8;
    out[i * 2 + 1] = groups[i] & 0xff;
  }
  if (tail4) out.set(tail4, 12);
  return out;
}

/** Formats 4 bytes as a dotted-quad IPv4 address. */
export function formatIPv4(bytes: Uint8Array): string {
  return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
}

/**
 * Formats 16 bytes as an IPv6 address in the canonical text form of
 * RFC 5952 (lower case, longest run of two or more zero groups as `::`).
 */
export function formatIPv6(bytes: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i] << 8) | bytes[i + 1]);
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (g: number[]) => g.map((n) => n.toString(16)).join(":");
  if (bestStart < 0) return hex(groups);
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLen))}`;
}

/** Strips one pair of surrounding brackets: `[::1]` -> `::1`. */
export function unbracket(host: string): string {
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}

/**
 * Returns the family of an IP literal (brackets allowed), or `null` when the
 * text is a name rather than a literal.
 *
 * @example
 * ```ts
 * import { ipFamily } from "./address.ts";
 * ipFamily("[2001:db8::1]"); // 6
 * ipFamily("example.test"); // null
 * ```
 */
export function ipFamily(host: string): Family | null {
  const h = unbracket(host);
  if (scanIPv4(h)) return 4;
  if (parseIPv6(h)) return 6;
  return null;
}

/**
 * Normalizes an IP literal: brackets removed, IPv6 in canonical form, and an
 * IPv4-mapped IPv6 address (`::ffff:192.0.2.1`) turned into plain IPv4.
 * Returns `null` for a name.
 */
export function normalizeIp(host: string): { host: string; family: Family } | null {
  const h = unbracket(host);
  // An accepted dotted quad is canonical as it stands: no bytes, no new string.
  if (scanIPv4(h)) return { host: h, family: 4 };
  const v6 = parseIPv6(h);
  if (!v6) return null;
  if (isIPv4Mapped(v6)) return { host: formatIPv4(v6.subarray(12)), family: 4 };
  return { host: formatIPv6(v6), family: 6 };
}

/** True when 16 bytes are an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`). */
export function isIPv4Mapped(bytes: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (bytes[i] !== 0) return false;
  return bytes[10] === 0xff && bytes[11] === 0xff;
}

/** A parsed CIDR prefix such as `192.0.2.0/24` or `2001:db8::/32`. */
export interface Cidr {
  /** The address family of the prefix. */
  family: Family;
  /** The network bytes (4 or 16). */
  bytes: Uint8Array;
  /** The prefix length in bits. */
  prefix: number;
}

/**
 * Parses `ADDRESS/LEN` (or a bare address, meaning a host prefix) into a
 * {@linkcode Cidr}, or returns `null` when it is not one. An IPv4-mapped
 * prefix of 96 bits or more (`::ffff:10.0.0.0/104`) is the IPv4 CIDR it
 * stands for (`10.0.0.0/8`), as {@linkcode normalizeIp} makes a mapped
 * address the IPv4 address.
 */
export function parseCidr(text: string): Cidr | null {
  const slash = text.indexOf("/");
  const addr = slash < 0 ? text : text.slice(0, slash);
  const v4 = parseIPv4(addr);
  const bytes = v4 ?? parseIPv6(unbracket(addr));
  if (!bytes) return null;
  const max = bytes.length * 8;
  let prefix = max;
  if (slash >= 0) {
    const p = text.slice(slash + 1);
    if (!/^\d{1,3}$/.test(p) || Number(p) > max) return null;
    prefix = Number(p);
  }
  if (
    !v4 && prefix >= 96 && bytes[10] === 0xff && bytes[11] === 0xff &&
    bytes.subarray(0, 10).every((b) => b === 0)
  ) {
    return { family: 4, bytes: bytes.slice(12), prefix: prefix - 96 };
  }
  return { family: v4 ? 4 : 6, bytes, prefix };
}

/** True when the IP literal `host` lies inside `cidr`. */
export function cidrContains(cidr: Cidr, host: string): boolean {
  const n = normalizeIp(host);
  if (!n || n.family !== cidr.family) return false;
  const bytes = n.family === 4 ? parseIPv4(n.host)! : parseIPv6(n.host)!;
  let bits = cidr.prefix;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((bytes[i] & mask) !== (cidr.bytes[i] & mask)) return false;
  }
  return true;
}

/**
 * Splits `HOST:PORT` (IPv6 hosts in brackets) into its parts, or returns
 * `null` when the text does not have that shape or the port is out of range.
 *
 * @example
 * ```ts
 * import { splitHostPort } from "./address.ts";
 * splitHostPort("[::1]:1080"); // { host: "::1", port: 1080 }
 * ```
 */
export function splitHostPort(
  text: string,
): { host: string; port: number } | null {
  let host: string;
  let portText: string;
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close < 0 || text[close + 1] !== ":") return null;
    host = text.slice(1, close);
    if (!parseIPv6(host)) return null;
    portText = text.slice(close + 2);
  } else {
    const colon = text.lastIndexOf(":");
    if (colon <= 0) return null;
    host = text.slice(0, colon);
    if (host.includes(":")) return null; // an unbracketed IPv6 address
    portText = text.slice(colon + 1);
  }
  if (!/^\d{1,5}$/.test(portText) || Number(portText) > 65535) return null;
  return { host, port: Number(portText) };
}

/** Formats a host and port as `HOST:PORT`, bracketing IPv6 hosts. */
export function joinHostPort(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * Whether `host` (an IP literal) is a loopback address: `127.0.0.0/8` or
 * `::1` (IPv4-mapped forms included). Anything else, the wildcard addresses
 * `0.0.0.0` and `::` included, reaches beyond this host.
 *
 * @example
 * ```ts
 * import { isLoopback } from "./address.ts";
 * isLoopback("127.0.0.1"); // true
 * isLoopback("[::1]"); // true
 * isLoopback("0.0.0.0"); // false
 * ```
 */
export function isLoopback(host: string): boolean {
  const ip = normalizeIp(host);
  return ip !== null && isLoopbackIp(ip);
}

/**
 * {@linkcode isLoopback} for an address already returned by
 * {@linkcode normalizeIp}: no parsing again.
 *
 * @example
 * ```ts
 * import { isLoopbackIp, normalizeIp } from "./address.ts";
 * isLoopbackIp(normalizeIp("::ffff:127.0.0.1")!); // true
 * ```
 */
export function isLoopbackIp(ip: { host: string; family: Family }): boolean {
  return ip.family === 4 ? ip.host.startsWith("127.") : ip.host === "::1";
}
