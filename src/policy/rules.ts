/**
 * Access rules: an ordered list of allow/deny rules, compiled once into a
 * fast matcher.
 *
 * Semantics:
 * - Rules are tried in order and the **first match wins**.
 * - A field that is omitted matches everything; a rule with only `action`
 *   matches every request.
 * - With no rules at all every request is allowed; when rules exist and none
 *   matches, the request is denied.
 * - `to` entries are either CIDRs or names. **Name entries apply to the
 *   requested name only and never match an IP-literal destination; CIDR
 *   entries apply to literal destinations only and never match a name.** The
 *   gateway re-checks the addresses a name resolves to by calling the same
 *   matcher again with the resolved IP as `destination.host`.
 *   Use {@linkcode combineDecisions} to merge the two verdicts: the result
 *   is first-match over rules whose name entries match the requested name
 *   or whose CIDR entries match the resolved address.
 * - `"*"` in `to` matches any destination, name or literal.
 * - `".test"` matches `test` itself and every name under it; `"example.test"`
 *   matches exactly that name. Names compare case-insensitively and a
 *   trailing dot is ignored.
 * - Client addresses that are IPv4-mapped IPv6 (`::ffff:192.0.2.1`) match
 *   IPv4 CIDRs; an IPv4-mapped CIDR (`::ffff:10.0.0.0/104`) is treated as the
 *   IPv4 CIDR it denotes. `::/0` matches IPv6 addresses only.
 * - Users compare exactly (RFC 1929 names are opaque bytes); a rule with
 *   `users` never matches an unauthenticated request.
 * - An empty list (`from: []`) is rejected rather than silently matching
 *   nothing.
 *
 * @module
 */

import { ipv4Number, parseCidr, parseIPv6, unbracket } from "../protocol/address.ts";

/**
 * A SOCKS5 command a rule can restrict.
 *
 * @example
 * ```ts
 * import type { RuleCommand } from "./rules.ts";
 * const c: RuleCommand = "connect";
 * ```
 */
export type RuleCommand = "connect" | "bind" | "udp";

/**
 * One access rule, as written in the configuration file.
 *
 * @example
 * ```ts
 * import type { RuleConfig } from "./rules.ts";
 * const rule: RuleConfig = {
 *   action: "allow",
 *   from: ["127.0.0.0/8", "::1/128"],
 *   to: [".example.test", "2001:db8::/32"],
 *   ports: [443, "8000-8080"],
 *   commands: ["connect"],
 *   users: ["alice"],
 * };
 * ```
 */
export interface RuleConfig {
  /** What to do with a request that matches. */
  action: "allow" | "deny";
  /** Client CIDRs such as `127.0.0.0/8` or `2001:db8::/32`. */
  from?: string[];
  /** Destination CIDRs or names: `example.test`, `.test` (suffix), `*`. */
  to?: string[];
  /** Destination ports: `443` or ranges `"8000-8080"`. */
  ports?: (number | string)[];
  /** SOCKS5 commands. */
  commands?: RuleCommand[];
  /** Authenticated user names (RFC 1929). */
  users?: string[];
}

/**
 * The facts a rule is matched against.
 *
 * @example
 * ```ts
 * import type { RuleContext } from "./rules.ts";
 * const ctx: RuleContext = {
 *   client: { host: "::1", port: 50000 },
 *   user: "alice",
 *   command: "connect",
 *   destination: { host: "example.test", port: 443 },
 * };
 * ```
 */
export interface RuleContext {
  /** The client's address (an IP literal). */
  client: { host: string; port: number };
  /** The authenticated user, if any. */
  user?: string;
  /** The SOCKS5 command. */
  command: RuleCommand;
  /** The destination: an IP literal (brackets allowed) or a name. */
  destination: { host: string; port: number };
}

/**
 * The outcome of matching: the action and the index of the matching rule,
 * or no index when the default applied.
 *
 * @example
 * ```ts
 * import type { RuleDecision } from "./rules.ts";
 * const d: RuleDecision = { action: "deny", rule: 2 };
 * ```
 */
export type RuleDecision = { action: "allow" | "deny"; rule?: number };

// ---------------------------------------------------------------------------
// Item parsers, shared with the config validator.

interface V4Net {
  v6: false;
  net: number;
  mask: number;
}
interface V6Net {
  v6: true;
  net: Uint32Array;
  mask: Uint32Array;
}
type Net = V4Net | V6Net;
type Target =
  | { kind: "net"; net: Net }
  | { kind: "exact"; name: string }
  | { kind: "suffix"; name: string }
  | { kind: "any" };

const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;
const PORT_RANGE = /^(\d{1,5})(?:\s*-\s*(\d{1,5}))?$/;
const utf8 = new TextEncoder();

function maskWord(bits: number): number {
  return bits <= 0 ? 0 : bits >= 32 ? -1 : ~0 << (32 - bits);
}

function parseNet(text: unknown): Net | null {
  if (typeof text !== "string") return null;
  const c = parseCidr(text.trim());
  if (!c) return null;
  const b = c.bytes;
  // parseCidr already turned an IPv4-mapped prefix into its IPv4 CIDR.
  if (c.family === 4) {
    const mask = maskWord(c.prefix);
    const raw = (b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3];
    return { v6: false, net: raw & mask, mask };
  }
  const net = new Uint32Array(4);
  const mask = new Uint32Array(4);
  for (let w = 0; w < 4; w++) {
    mask[w] = maskWord(c.prefix - w * 32);
    net[w] = ((b[w * 4] << 24) | (b[w * 4 + 1] << 16) | (b[w * 4 + 2] << 8) |
      b[w * 4 + 3]) & mask[w];
  }
  return { v6: true, net, mask };
}

function parseName(text: string): string | null {
  let name = text.toLowerCase();
  if (name.endsWith(".")) name = name.slice(0, -1);
  if (name === "" || name.length > 253) return null;
  const labels = name.split(".");
  if (!labels.every((l) => LABEL.test(l))) return null;
  // A last label of digits only is a mistyped IP address, not a name.
  return /^\d+$/.test(labels[labels.length - 1]) ? null : name;
}

function parseTarget(item: unknown): Target | null {
  if (typeof item !== "string") return null;
  const text = item.trim();
  if (text === "*") return { kind: "any" };
  const net = parseNet(text);
  if (net) return { kind: "net", net };
  if (text.includes("/") || text.includes(":")) return null;
  if (text.startsWith(".")) {
    const name = parseName(text.slice(1));
    return name ? { kind: "suffix", name } : null;
  }
  const name = parseName(text);
  return name ? { kind: "exact", name } : null;
}

function parsePorts(item: unknown): [number, number] | null {
  if (typeof item === "number") {
    return Number.isInteger(item) && item >= 0 && item <= 65535 ? [item, item] : null;
  }
  if (typeof item !== "string") return null;
  const m = PORT_RANGE.exec(item.trim());
  if (!m) return null;
  const lo = Number(m[1]);
  const hi = m[2] === undefined ? lo : Number(m[2]);
  return lo <= hi && hi <= 65535 ? [lo, hi] : null;
}

const COMMAND_BITS: Record<RuleCommand, number> = {
  connect: 1,
  bind: 2,
  udp: 4,
};

function parseCommand(item: unknown): RuleCommand | null {
  return typeof item === "string" && Object.hasOwn(COMMAND_BITS, item) ? item as RuleCommand : null;
}

function parseUser(item: unknown): string | null {
  if (typeof item !== "string") return null;
  const n = utf8.encode(item).length;
  return n >= 1 && n <= 255 ? item : null;
}

/** The list-valued fields of a {@linkcode RuleConfig}. */
export type RuleListField = "from" | "to" | "ports" | "commands" | "users";

/**
 * How each list field of a rule is validated: `expected` describes a valid
 * item for error messages and `valid` tells whether one item is acceptable.
 * {@linkcode compileRules} and the config validator share this table.
 *
 * @example
 * ```ts
 * import { RULE_LIST_FIELDS } from "./rules.ts";
 * RULE_LIST_FIELDS.ports.valid("8000-8080"); // true
 * RULE_LIST_FIELDS.from.valid("example.test"); // false
 * ```
 */
export const RULE_LIST_FIELDS: Readonly<
  Record<RuleListField, { expected: string; valid(item: unknown): boolean }>
> = Object.freeze({
  from: {
    expected: "a CIDR such as 192.0.2.0/24 or 2001:db8::/32",
    valid: (i: unknown) => parseNet(i) !== null,
  },
  to: {
    expected:
      'a CIDR such as 192.0.2.0/24, a name such as example.test, a suffix such as .test, or "*"',
    valid: (i: unknown) => parseTarget(i) !== null,
  },
  ports: {
    expected: 'a port 0-65535 or a range such as "8000-8080"',
    valid: (i: unknown) => parsePorts(i) !== null,
  },
  commands: {
    expected: "one of connect, bind, udp",
    valid: (i: unknown) => parseCommand(i) !== null,
  },
  users: {
    expected: "a user name of 1-255 UTF-8 bytes",
    valid: (i: unknown) => parseUser(i) !== null,
  },
});

/** The actions a rule may take. */
const ACTIONS = ["allow", "deny"];

// ---------------------------------------------------------------------------
// Compilation.

interface NetSet {
  v4: Int32Array; // pairs: net, mask
  v6: Uint32Array[]; // net words then mask words (8 each)
}

interface Compiled {
  decision: RuleDecision;
  from?: NetSet;
  to?: {
    any: boolean;
    nets: NetSet;
    exact: Set<string>;
    suffix: Set<string>;
  };
  ports?: Int32Array; // pairs: lo, hi
  commands: number; // bit mask
  users?: Set<string>;
}

interface Ip {
  v4: number;
  v6: Uint32Array | null;
}

function toNetSet(nets: Net[]): NetSet {
  const v4: number[] = [];
  const v6: Uint32Array[] = [];
  for (const n of nets) {
    if (n.v6) {
      const w = new Uint32Array(8);
      w.set(n.net);
      w.set(n.mask, 4);
      v6.push(w);
    } else v4.push(n.net, n.mask);
  }
  return { v4: Int32Array.from(v4), v6 };
}

function netSetHas(set: NetSet, ip: Ip): boolean {
  if (ip.v6 === null) {
    const a = set.v4;
    for (let i = 0; i < a.length; i += 2) {
      if ((ip.v4 & a[i + 1]) === a[i]) return true;
    }
    return false;
  }
  const w = ip.v6;
  outer: for (const n of set.v6) {
    for (let i = 0; i < 4; i++) {
      if (((w[i] & n[i + 4]) >>> 0) !== n[i]) continue outer;
    }
    return true;
  }
  return false;
}

/** Parses an IP literal once per call; `null` for a name. */
function ipOf(host: string): Ip | null {
  const h = unbracket(host);
  const n4 = ipv4Number(h);
  if (n4 >= 0) return { v4: n4 | 0, v6: null }; // as a signed 32-bit number, like the masks
  const b = parseIPv6(h);
  if (!b) return null;
  const words = new Uint32Array(4);
  for (let w = 0; w < 4; w++) {
    words[w] = (b[w * 4] << 24) | (b[w * 4 + 1] << 16) | (b[w * 4 + 2] << 8) |
      b[w * 4 + 3];
  }
  if (words[0] === 0 && words[1] === 0 && words[2] === 0xffff) {
    return { v4: words[3] | 0, v6: null };
  }
  return { v4: 0, v6: words };
}

/** The name and every parent domain: `a.b.c` -> `a.b.c`, `b.c`, `c`. */
function nameSuffixes(host: string): string[] {
  let name = host.toLowerCase();
  if (name.endsWith(".")) name = name.slice(0, -1);
  const out = [name];
  for (let i = name.indexOf("."); i >= 0; i = name.indexOf(".", i + 1)) {
    out.push(name.slice(i + 1));
  }
  return out;
}

function describe(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) return "a list";
  if (value === null) return "null";
  return typeof value === "object" ? "an object" : String(value);
}

function compileOne(rule: RuleConfig, index: number): Compiled {
  const at = `rules[${index}]`;
  const bad = (field: string, expected: string, found: unknown): never => {
    throw new TypeError(
      `${at}${field}: expected ${expected}, found ${describe(found)}`,
    );
  };
  if (typeof rule !== "object" || rule === null || Array.isArray(rule)) {
    bad("", "a rule object", rule);
  }
  for (const key of Object.keys(rule)) {
    if (key !== "action" && !Object.hasOwn(RULE_LIST_FIELDS, key)) {
      throw new TypeError(
        `${at}.${key}: unknown field; expected one of action, ${
          Object.keys(RULE_LIST_FIELDS).join(", ")
        }`,
      );
    }
  }
  if (!ACTIONS.includes(rule.action)) {
    bad(".action", "allow or deny", rule.action);
  }
  const list = <T>(field: RuleListField, parse: (i: unknown) => T | null) => {
    const items: unknown = rule[field];
    if (items === undefined) return undefined;
    if (!Array.isArray(items) || items.length === 0) {
      bad(
        `.${field}`,
        `a non-empty list of ${RULE_LIST_FIELDS[field].expected}`,
        items,
      );
    }
    return (items as unknown[]).map((item, i) =>
      parse(item) ??
        bad(`.${field}[${i}]`, RULE_LIST_FIELDS[field].expected, item)
    );
  };
  const from = list("from", parseNet);
  const to = list("to", parseTarget);
  const ports = list("ports", parsePorts);
  const commands = list("commands", parseCommand);
  const users = list("users", parseUser);
  const compiled: Compiled = {
    decision: Object.freeze({ action: rule.action, rule: index }),
    commands: commands ? commands.reduce((m, c) => m | COMMAND_BITS[c], 0) : 7,
  };
  if (from) compiled.from = toNetSet(from);
  if (to) {
    const pick = <K extends Target["kind"]>(k: K) =>
      to.filter((t): t is Extract<Target, { kind: K }> => t.kind === k);
    compiled.to = {
      any: pick("any").length > 0,
      nets: toNetSet(pick("net").map((t) => t.net)),
      exact: new Set(pick("exact").map((t) => t.name)),
      suffix: new Set(pick("suffix").map((t) => t.name)),
    };
  }
  if (ports) compiled.ports = Int32Array.from(ports.flat());
  if (users) compiled.users = new Set(users);
  return compiled;
}

const ALLOW_DEFAULT: RuleDecision = Object.freeze({ action: "allow" });
const DENY_DEFAULT: RuleDecision = Object.freeze({ action: "deny" });

/**
 * Compiles rules into a matcher. All parsing happens here; the returned
 * function only parses the request's own addresses, once per call. It
 * returns frozen decision objects shared between calls.
 *
 * Throws a `TypeError` naming the rule index and field
 * (`rules[2].ports[0]: expected ..., found ...`) for an invalid rule.
 *
 * @example
 * ```ts
 * import { compileRules } from "./rules.ts";
 * const check = compileRules([
 *   { action: "deny", to: ["127.0.0.0/8", "::1/128"] },
 *   { action: "allow", from: ["2001:db8::/32"], to: [".example.test"], ports: [443] },
 * ]);
 * check({
 *   client: { host: "2001:db8::7", port: 40000 },
 *   command: "connect",
 *   destination: { host: "www.example.test", port: 443 },
 * }); // { action: "allow", rule: 1 }
 * ```
 */
export function compileRules(
  rules: RuleConfig[],
): (ctx: RuleContext) => RuleDecision {
  if (!Array.isArray(rules)) {
    throw new TypeError(
      `rules: expected a list of rules, found ${describe(rules)}`,
    );
  }
  if (rules.length === 0) return () => ALLOW_DEFAULT;
  const compiled = rules.map(compileOne);
  return (ctx: RuleContext): RuleDecision => {
    let client: Ip | null | undefined;
    let dest: Ip | null | undefined;
    let names: string[] | undefined;
    const bit = COMMAND_BITS[ctx.command] ?? 0;
    const port = ctx.destination.port;
    for (const r of compiled) {
      if ((r.commands & bit) === 0) continue;
      if (r.users && (ctx.user === undefined || !r.users.has(ctx.user))) {
        continue;
      }
      if (r.ports) {
        let hit = false;
        for (let i = 0; i < r.ports.length && !hit; i += 2) {
          hit = port >= r.ports[i] && port <= r.ports[i + 1];
        }
        if (!hit) continue;
      }
      if (r.from) {
        if (client === undefined) client = ipOf(ctx.client.host);
        if (client === null || !netSetHas(r.from, client)) continue;
      }
      if (r.to && !r.to.any) {
        if (dest === undefined) dest = ipOf(ctx.destination.host);
        if (dest !== null) {
          if (!netSetHas(r.to.nets, dest)) continue;
        } else {
          names ??= nameSuffixes(ctx.destination.host);
          const t = r.to;
          let hit = t.exact.has(names[0]);
          for (let i = 0; i < names.length && !hit; i++) {
            hit = t.suffix.has(names[i]);
          }
          if (!hit) continue;
        }
      }
      return r.decision;
    }
    return DENY_DEFAULT;
  };
}

/**
 * Merges the decision for a requested name with the decision for one of its
 * resolved addresses: the one from the earlier rule wins, and when neither
 * matched a rule the (shared) default applies. This makes
 * `[{ action: "allow", to: [".example.test"] }]` allow the addresses
 * `www.example.test` resolves to, while `[{ action: "deny", to:
 * ["127.0.0.0/8"] }, { action: "allow", to: [".example.test"] }]` still
 * refuses a name that resolves to 127.0.0.1. Call the matcher for the name
 * first; a name whose decision is a default deny may still be allowed by
 * an address rule (`[{ action: "allow", to: ["10.0.0.0/8"] }]`), so resolve
 * it before refusing.
 *
 * @example
 * ```ts
 * import { combineDecisions, compileRules, type RuleContext } from "./rules.ts";
 * const check = compileRules([{ action: "allow", to: [".example.test"] }]);
 * const base: Omit<RuleContext, "destination"> = {
 *   client: { host: "::1", port: 40000 },
 *   command: "connect",
 * };
 * const byName = check({ ...base, destination: { host: "www.example.test", port: 443 } });
 * const byAddress = check({ ...base, destination: { host: "192.0.2.8", port: 443 } });
 * combineDecisions(byName, byAddress); // { action: "allow", rule: 0 }
 * ```
 */
export function combineDecisions(
  byName: RuleDecision,
  byAddress: RuleDecision,
): RuleDecision {
  if (byAddress.rule === undefined) return byName;
  if (byName.rule === undefined) return byAddress;
  return byName.rule <= byAddress.rule ? byName : byAddress;
}
