/**
 * Destinations nobody means to reach through a gateway: the cloud metadata
 * services, link-local networks, multicast and broadcast, and the
 * "this network" and unspecified addresses. The gateway refuses them for
 * every client unless a rule allows them by an explicit CIDR.
 *
 * | category      | addresses                                                   |
 * | ------------- | ----------------------------------------------------------- |
 * | `metadata`    | `169.254.169.254`, `fd00:ec2::254`, `100.100.100.200`       |
 * | `link-local`  | `169.254.0.0/16`, `fe80::/10`                               |
 * | `multicast`   | `224.0.0.0/4`, `ff00::/8`                                   |
 * | `broadcast`   | `255.255.255.255`                                           |
 * | `unspecified` | `0.0.0.0/8`, `::`                                           |
 *
 * (`100.100.100.200` is Alibaba Cloud's metadata service; the other clouds
 * use `169.254.169.254`, and AWS `fd00:ec2::254` over IPv6.)
 *
 * IPv6 forms that carry an IPv4 address are unwrapped before matching
 * ({@linkcode unwrapIp}): IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible
 * `::a.b.c.d` (deprecated, but still an address a stack may route),
 * NAT64's well-known prefix `64:ff9b::/96` (RFC 6052) and 6to4
 * `2002:AABB:CCDD::/48` (RFC 3056). So `[64:ff9b::a9fe:a9fe]` is the
 * metadata service seen through a NAT64. Not unwrapped: a NAT64 network-
 * specific prefix (the operator's own, whose length decides where the
 * IPv4 address sits) and Teredo (`2001::/32`, whose IPv4 is the Teredo
 * server's); neither can be recognised from the address alone.
 *
 * Pure: IP literals in, verdicts out, no I/O and no DNS.
 *
 * @module
 */

import {
  type Family,
  formatIPv4,
  formatIPv6,
  ipv4Number,
  parseCidr,
  parseIPv4,
  parseIPv6,
  unbracket,
} from "../protocol/address.ts";
import type { RuleConfig, RuleDecision } from "./rules.ts";

/**
 * Why a destination is refused by default.
 *
 * @example
 * ```ts
 * import type { UnwantedCategory } from "./destinations.ts";
 * const c: UnwantedCategory = "metadata";
 * ```
 */
export type UnwantedCategory =
  | "metadata"
  | "link-local"
  | "multicast"
  | "broadcast"
  | "unspecified";

/**
 * The verdict of {@linkcode classifyDestination} for an unwanted address.
 *
 * @example
 * ```ts
 * import { classifyDestination, type UnwantedDestination } from "./destinations.ts";
 * const v: UnwantedDestination | null = classifyDestination("169.254.169.254");
 * v?.category; // "metadata"
 * ```
 */
export interface UnwantedDestination {
  /** The category. */
  category: UnwantedCategory;
  /** The address that matched, after unwrapping: `169.254.169.254` for `::ffff:169.254.169.254`. */
  address: string;
  /** A sentence for logs and refusals: what the address is and how to allow it. */
  reason: string;
}

const DESCRIPTIONS: Record<UnwantedCategory, string> = {
  metadata: "a cloud metadata service",
  "link-local": "a link-local address",
  multicast: "a multicast address",
  broadcast: "the broadcast address",
  unspecified: 'an unspecified ("this network") address',
};

const METADATA_V4 = new Set(["169.254.169.254", "100.100.100.200"]);
const METADATA_V6 = new Set(["fd00:ec2::254"]);

function v4FromBytes(b: Uint8Array, at: number): Uint8Array {
  return b.slice(at, at + 4);
}

/**
 * The IPv4 address an IPv6 address carries, or `null`: IPv4-mapped
 * (`::ffff:0:0/96`), IPv4-compatible (`::/96` except `::` and `::1`),
 * NAT64 well-known (`64:ff9b::/96`) and 6to4 (`2002::/16`).
 */
function embedded(b: Uint8Array): Uint8Array | null {
  let zeros = 0;
  while (zeros < 12 && b[zeros] === 0) zeros++;
  if (zeros >= 10 && b[10] === 0xff && b[11] === 0xff) return v4FromBytes(b, 12);
  if (zeros === 12) {
    // :: and ::1 are IPv6's own unspecified and loopback addresses.
    const tail = (b[12] | b[13] | b[14]) === 0 && b[15] <= 1;
    return tail ? null : v4FromBytes(b, 12);
  }
  if (b[0] === 0x00 && b[1] === 0x64 && b[2] === 0xff && b[3] === 0x9b) {
    for (let i = 4; i < 12; i++) if (b[i] !== 0) return null;
    return v4FromBytes(b, 12);
  }
  if (b[0] === 0x20 && b[1] === 0x02) return v4FromBytes(b, 2);
  return null;
}

/**
 * Normalises an IP literal (brackets allowed) for policy checks: IPv6 in
 * canonical form, and any IPv6 form that carries an IPv4 address (mapped,
 * compatible, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) turned into that IPv4
 * address. `null` for a name. Use it before any address test a disguise
 * could dodge (`[::ffff:127.0.0.1]`, `[64:ff9b::7f00:1]`).
 *
 * @example
 * ```ts
 * import { unwrapIp } from "./destinations.ts";
 * unwrapIp("[64:ff9b::a9fe:a9fe]"); // { host: "169.254.169.254", family: 4 }
 * unwrapIp("2002:c000:201::1"); // { host: "192.0.2.1", family: 4 }
 * unwrapIp("2001:db8::1"); // { host: "2001:db8::1", family: 6 }
 * ```
 */
export function unwrapIp(host: string): { host: string; family: Family } | null {
  const ip = unwrap(host);
  return ip && { host: ip.host, family: ip.family };
}

/** {@linkcode unwrapIp} with the address's bytes (4 or 16). */
function unwrap(host: string): { host: string; family: Family; bytes: Uint8Array } | null {
  const h = unbracket(host);
  const v4 = parseIPv4(h);
  if (v4) return { host: h, family: 4, bytes: v4 };
  const v6 = h.includes(":") ? parseIPv6(h) : null;
  if (!v6) return null;
  const inner = embedded(v6);
  return inner
    ? { host: formatIPv4(inner), family: 4, bytes: inner }
    : { host: formatIPv6(v6), family: 6, bytes: v6 };
}

/** The category of an IPv4 address, from its text and its number. */
function categoryOfV4(host: string, n: number): UnwantedCategory | null {
  const a = n >>> 24;
  if (METADATA_V4.has(host)) return "metadata";
  if (a === 169 && ((n >>> 16) & 255) === 254) return "link-local";
  if (a >= 224 && a <= 239) return "multicast";
  if (n === 0xffffffff) return "broadcast";
  if (a === 0) return "unspecified";
  return null;
}

function categoryOf(
  ip: { host: string; family: Family; bytes: Uint8Array },
): UnwantedCategory | null {
  const b = ip.bytes;
  if (ip.family === 4) {
    return categoryOfV4(ip.host, ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0);
  }
  if (METADATA_V6.has(ip.host)) return "metadata";
  if (b[0] === 0xfe && (b[1] & 0xc0) === 0x80) return "link-local";
  if (b[0] === 0xff) return "multicast";
  if (ip.host === "::") return "unspecified";
  return null;
}

/**
 * Classifies an IP literal (brackets allowed) as a destination nobody
 * means to reach, or returns `null` for an ordinary address or a name
 * (check the addresses a name resolves to instead).
 *
 * @example
 * ```ts
 * import { classifyDestination } from "./destinations.ts";
 * classifyDestination("[::ffff:169.254.169.254]")?.category; // "metadata"
 * classifyDestination("fe80::1")?.category; // "link-local"
 * classifyDestination("192.0.2.1"); // null
 * ```
 */
export function classifyDestination(host: string): UnwantedDestination | null {
  const ip = unwrap(host);
  return ip && unwantedOf(ip, categoryOf(ip));
}

function unwantedOf(
  ip: { host: string; family: Family },
  category: UnwantedCategory | null,
): UnwantedDestination | null {
  if (!category) return null;
  const shown = ip.family === 6 ? `[${ip.host}]` : ip.host;
  return {
    category,
    address: ip.host,
    reason: `${shown} is ${DESCRIPTIONS[category]}, refused by default; ` +
      `to allow it, add a rule with action: allow and a to: CIDR that contains it`,
  };
}

/**
 * {@linkcode unwrapIp} and {@linkcode classifyDestination} in one pass,
 * for the check every request goes through: the address as policy sees it,
 * and why it is unwanted (`null` when it is an ordinary address). `null`
 * for a name.
 *
 * @example
 * ```ts
 * import { inspectDestination } from "./destinations.ts";
 * inspectDestination("[::ffff:169.254.169.254]")?.unwanted?.category; // "metadata"
 * inspectDestination("192.0.2.1"); // { host: "192.0.2.1", family: 4, unwanted: null }
 * ```
 */
export function inspectDestination(
  host: string,
): { host: string; family: Family; unwanted: UnwantedDestination | null } | null {
  // The common case first, without allocating: a plain dotted quad.
  const h = unbracket(host);
  const n = ipv4Number(h);
  if (n >= 0) {
    const ip = { host: h, family: 4 as const };
    return { ...ip, unwanted: unwantedOf(ip, categoryOfV4(h, n)) };
  }
  const ip = unwrap(host);
  return ip && { host: ip.host, family: ip.family, unwanted: unwantedOf(ip, categoryOf(ip)) };
}

/**
 * Whether the rule behind `decision` allows `host` explicitly: the decision
 * is an allow from a rule whose `to:` has a CIDR containing the address
 * (after {@linkcode unwrapIp}). A default allow, `to: ["*"]`, a `/0` or a
 * name does not count: an unwanted destination needs to be named on purpose.
 *
 * @example
 * ```ts
 * import { allowedExplicitly } from "./destinations.ts";
 * const rules = [{ action: "allow" as const, to: ["169.254.169.254/32"] }];
 * allowedExplicitly(rules, { action: "allow", rule: 0 }, "169.254.169.254"); // true
 * allowedExplicitly([{ action: "allow" }], { action: "allow", rule: 0 }, "169.254.169.254"); // false
 * ```
 */
export function allowedExplicitly(
  rules: readonly RuleConfig[],
  decision: RuleDecision,
  host: string,
): boolean {
  if (decision.action !== "allow" || decision.rule === undefined) return false;
  const ip = unwrap(host);
  const to = rules[decision.rule]?.to;
  if (!ip || !to) return false;
  const bytes = ip.bytes;
  return to.some((item) => {
    if (typeof item !== "string" || item.trim() === "*") return false;
    const c = parseCidr(item.trim());
    return c !== null && c.prefix > 0 && c.family === ip.family &&
      prefixMatch(c.bytes, bytes, c.prefix);
  });
}

function prefixMatch(net: Uint8Array, bytes: Uint8Array, prefix: number): boolean {
  for (let i = 0, bits = prefix; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((bytes[i] & mask) !== (net[i] & mask)) return false;
  }
  return true;
}
