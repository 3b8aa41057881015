/**
 * The YAML configuration file: schema, defaults, and a validator that walks
 * the YAML syntax tree so that every error names the file, the key path, the
 * line and column, what was expected and what was found:
 *
 * ```text
 * dualsocks.yaml:4:5: listen[1]: expected HOST:PORT with an IP literal host (IPv6 in brackets), found "::1:1080"
 * ```
 *
 * Every key is optional. A key written with no value (`outbound:` or `~`)
 * means "use the default". Unknown keys and duplicate keys are errors at
 * every level.
 *
 * @module
 */

import {
  type Document,
  isAlias,
  isMap,
  isScalar,
  isSeq,
  LineCounter,
  parseDocument,
  type Scalar,
  stringify,
  type YAMLSeq,
} from "yaml";
import {
  isLoopback,
  joinHostPort,
  normalizeIp,
  parseIPv6,
  splitHostPort,
  unbracket,
} from "../protocol/address.ts";
import {
  compileRules,
  RULE_LIST_FIELDS,
  type RuleConfig,
  type RuleListField,
} from "../policy/rules.ts";

import type { FamilyPolicy } from "../server/resolver.ts";
import type { BandwidthLimit } from "../policy/bandwidth.ts";
import type { Protocol } from "../server/session.ts";
import type { RouteConfig } from "../server/routes.ts";
import { parseGateway, redactGatewayUrl } from "../client/address.ts";
import { parsePasswordHash } from "../policy/password.ts";
import type { SessionLimit } from "../policy/limits.ts";
export type { FamilyPolicy };
export type { Protocol };

/**
 * A host and port; the host is a normalized IP literal without brackets.
 *
 * @example
 * ```ts
 * import type { HostPort } from "./config.ts";
 * const hp: HostPort = { host: "::1", port: 1080 };
 * ```
 */
export interface HostPort {
  /** Normalized IP literal, no brackets. */
  host: string;
  /** Port number 0-65535. */
  port: number;
}

/** A listen address, with the protocols served there when it names its own. */
export interface ListenEntry extends HostPort {
  /** The protocols of this listener; absent: the file's `protocols`. */
  protocols?: Protocol[];
}

/**
 * A configured user: `password` in clear, or `passwordHash` (the file's
 * `password_hash`, made by `dualsocks hash-password`); exactly one.
 *
 * @example
 * ```ts
 * import type { ConfigUser } from "./config.ts";
 * const u: ConfigUser = { username: "alice", passwordHash: "$scrypt$ln=15,r=8,p=1$..." };
 * ```
 */
export interface ConfigUser {
  /** The user name. */
  username: string;
  /** The password in clear. */
  password?: string;
  /** A salted scrypt hash of the password. */
  passwordHash?: string;
}

/**
 * The `lockout:` section: milliseconds for the durations.
 *
 * @example
 * ```ts
 * import type { LockoutConfig } from "./config.ts";
 * const l: LockoutConfig = { threshold: 10, delay: 200, maxDelay: 5000, duration: 900_000 };
 * ```
 */
export interface LockoutConfig {
  /** Failures that lock a client out; 0 = no lockout. */
  threshold?: number;
  /** The delay after the first failure (doubling). */
  delay?: number;
  /** The largest delay. */
  maxDelay?: number;
  /** How long a lockout lasts (and failures are remembered). */
  duration?: number;
  /** IPv6 clients are counted by this prefix. */
  ipv6Prefix?: number;
}

/**
 * The effective configuration. All durations are in milliseconds.
 *
 * @example
 * ```ts
 * import { type Config, DEFAULT_CONFIG } from "./config.ts";
 * const config: Config = structuredClone(DEFAULT_CONFIG);
 * config.limits.maxSessions = 16;
 * ```
 */
export interface Config {
  /** Addresses to listen on. */
  listen: ListenEntry[];
  /** The protocols every listener serves unless its entry names its own. */
  protocols: Protocol[];
  /** RFC 1929 accounts; when non-empty, authentication is required. */
  users: ConfigUser[];
  /** Name resolution. */
  resolver: {
    family: FamilyPolicy;
    /** Empty means the system resolver. */
    nameservers: HostPort[];
    /** Milliseconds. */
    happyEyeballsDelay: number;
  };
  /** Optional source address per destination family. */
  outbound: { ipv4?: string; ipv6?: string };
  /** Milliseconds; `idle` 0 means never. */
  timeouts: { handshake: number; connect: number; idle: number };
  /** Resource limits; `perClient` and `perUser` absent unless set. */
  limits: {
    maxSessions: number;
    maxHandshakes: number;
    perClient?: SessionLimit;
    perUser?: SessionLimit;
    /** Bytes a second (and burst bytes) per client address and per user, each direction. */
    bandwidth?: { perClient?: BandwidthLimit; perUser?: BandwidthLimit };
  };
  /** Serve clients beyond loopback with no users and no `from:` rules (absent unless set). */
  allowOpenRelay?: boolean;
  /** Failed-login lockout (absent = the defaults; `threshold: 0` turns it off). */
  lockout?: LockoutConfig;
  /** Access rules, see `src/policy/rules.ts`. */
  rules: RuleConfig[];
  /**
   * Milliseconds to let sessions finish on shutdown; `drainDelay` (absent =
   * 0): how long readiness is 503 while the listeners still accept.
   */
  shutdown: { grace: number; drainDelay?: number };
  /** Logging. */
  log: {
    format: "text" | "json";
    level: "debug" | "info" | "warning" | "error";
  };
  /**
   * The admin HTTP API: `listen` is `null` when disabled; `token` (absent
   * unless set) is the bearer token, required when `listen` is not loopback.
   */
  admin: { listen: HostPort | null; token?: string };
  /** Gateway-side chaining: destinations routed through upstream gateways. */
  routes: RouteConfig[];
  /** BIND: how long to wait for the peer (ms), and whether only the named peer may connect. */
  bind: { acceptTimeout: number; strictPeer: boolean };
  /**
   * UDP ASSOCIATE: addresses to advertise instead of the relay's own (NAT),
   * the relay port range, and how long resolved names are reused (ms).
   */
  udp: {
    advertise: { ipv4?: string; ipv6?: string };
    portRange?: [number, number];
    nameCacheTtl: number;
  };
  /** The PROXY protocol from these balancers (CIDRs); absent = off. */
  proxyProtocol?: { trusted: string[] };
  /** Bind listeners with SO_REUSEPORT (needs `--unstable-net`); absent = off. */
  reusePort?: boolean;
  /** This instance's name in the admin API; absent = `HOSTNAME/PID` (or `PID`). */
  instanceName?: string;
}

function deepFreeze<T>(value: T): T {
  if (typeof value === "object" && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}

/**
 * The configuration used when the file sets nothing (deeply frozen; use
 * `structuredClone` to get a mutable copy).
 *
 * @example
 * ```ts
 * import { DEFAULT_CONFIG } from "./config.ts";
 * DEFAULT_CONFIG.listen; // [{ host: "::1", port: 1080 }, { host: "127.0.0.1", port: 1080 }]
 * ```
 */
export const DEFAULT_CONFIG: Config = deepFreeze<Config>({
  listen: [{ host: "::1", port: 1080 }, { host: "127.0.0.1", port: 1080 }],
  protocols: ["socks5", "socks4", "http"],
  users: [],
  resolver: { family: "auto", nameservers: [], happyEyeballsDelay: 250 },
  outbound: {},
  timeouts: { handshake: 10_000, connect: 10_000, idle: 300_000 },
  limits: { maxSessions: 8192, maxHandshakes: 32 },
  rules: [],
  shutdown: { grace: 10_000 },
  log: { format: "text", level: "info" },
  admin: { listen: { host: "127.0.0.1", port: 9080 } },
  routes: [],
  bind: { acceptTimeout: 60_000, strictPeer: true },
  udp: { advertise: {}, nameCacheTtl: 30_000 },
});

/**
 * A configuration error with its location. The message reads
 * `FILE:LINE:COLUMN: PATH: expected EXPECTED, found FOUND` (or a more
 * specific sentence such as `unknown key; expected one of ...`).
 *
 * @example
 * ```ts
 * import { ConfigError, parseConfig } from "./config.ts";
 * try {
 *   parseConfig("limits:\n  max_sessions: many\n", { file: "dualsocks.yaml" });
 * } catch (e) {
 *   if (e instanceof ConfigError) console.error(e.message, e.path, e.line);
 * }
 * ```
 */
export class ConfigError extends Error {
  /** The configuration file name as given. */
  file: string;
  /** Key path such as `listen[1]` or `timeouts.idle`; empty for the whole file. */
  path: string;
  /** 1-based line, when known. */
  line?: number;
  /** 1-based column, when known. */
  column?: number;
  /** What was expected. */
  expected: string;
  /** What was found. */
  found: string;

  /**
   * Builds the error. `detail` replaces the default `expected X, found Y`
   * after the location; `message` replaces the whole message.
   */
  constructor(init: {
    file: string;
    path: string;
    line?: number;
    column?: number;
    expected: string;
    found: string;
    detail?: string;
    message?: string;
  }) {
    const where = init.line === undefined ? init.file : `${init.file}:${init.line}:${init.column}`;
    const detail = init.detail ??
      `expected ${init.expected}, found ${init.found}`;
    super(
      init.message ?? `${where}: ${init.path ? `${init.path}: ` : ""}${detail}`,
    );
    this.name = "ConfigError";
    this.file = init.file;
    this.path = init.path;
    if (init.line !== undefined) this.line = init.line;
    if (init.column !== undefined) this.column = init.column;
    this.expected = init.expected;
    this.found = init.found;
  }
}

// ---------------------------------------------------------------------------
// Scalars shared with the CLI.

const HOST_PORT_EXPECTED = "HOST:PORT with an IP literal host (IPv6 in brackets)";
const NAMESERVER_EXPECTED =
  "an IP literal with an optional :PORT from 1 to 65535 (IPv6 in brackets when a port is given)";

function tryHostPort(text: string, defaultPort?: number): HostPort | null {
  const t = text.trim();
  if (defaultPort !== undefined) {
    const bare = normalizeIp(t);
    if (bare) return { host: bare.host, port: defaultPort };
  }
  const hp = splitHostPort(t);
  const ip = hp && normalizeIp(hp.host);
  return ip ? { host: ip.host, port: hp.port } : null;
}

/**
 * Parses `HOST:PORT` where HOST is an IP literal (IPv6 in brackets) and PORT
 * is 0-65535. With `defaultPort`, a bare IP literal (IPv6 with or without
 * brackets) is accepted too. The host is normalized (`[::ffff:127.0.0.1]`
 * becomes `127.0.0.1`). Throws a `TypeError` `expected HOST:PORT ..., found
 * "..."` otherwise; suitable for the `--listen` CLI flag.
 *
 * @example
 * ```ts
 * import { parseHostPort } from "./config.ts";
 * parseHostPort("[::1]:1080"); // { host: "::1", port: 1080 }
 * parseHostPort("192.0.2.53", { defaultPort: 53 }); // { host: "192.0.2.53", port: 53 }
 * ```
 */
export function parseHostPort(
  text: string,
  options: { defaultPort?: number } = {},
): HostPort {
  const hp = typeof text === "string" ? tryHostPort(text, options.defaultPort) : null;
  if (hp) return hp;
  const expected = options.defaultPort === undefined ? HOST_PORT_EXPECTED : NAMESERVER_EXPECTED;
  throw new TypeError(`expected ${expected}, found ${JSON.stringify(text)}`);
}

/** Largest duration accepted: setTimeout's limit (about 24.8 days). */
const MAX_DURATION_MS = 2 ** 31 - 1;
const DURATION_PART = /(\d+(?:\.\d+)?)(ms|h|m|s)/y;
const UNIT_MS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/**
 * Converts a duration to whole milliseconds: a non-negative number of
 * seconds (`1.5`), a numeric string of seconds (`"10"`), or a string with
 * units `ms`, `s`, `m`, `h`, possibly combined (`"250ms"`, `"1m30s"`).
 * Returns `null` for anything else, including values above 2^31-1 ms (which
 * timers cannot represent).
 *
 * @example
 * ```ts
 * import { parseDuration } from "./config.ts";
 * parseDuration("250ms"); // 250
 * parseDuration(1.5); // 1500
 * parseDuration("soon"); // null
 * ```
 */
export function parseDuration(value: unknown): number | null {
  let ms: number;
  if (typeof value === "number") {
    ms = value * 1000;
  } else if (typeof value === "string") {
    const text = value.trim();
    if (/^\d+(?:\.\d+)?$/.test(text)) {
      ms = Number(text) * 1000;
    } else {
      ms = 0;
      let end = 0;
      DURATION_PART.lastIndex = 0;
      for (let m; (m = DURATION_PART.exec(text)) !== null;) {
        ms += Number(m[1]) * UNIT_MS[m[2]];
        end = DURATION_PART.lastIndex;
      }
      if (end === 0 || end !== text.length) return null;
    }
  } else {
    return null;
  }
  if (!Number.isFinite(ms) || ms < 0) return null;
  ms = Math.round(ms);
  return ms <= MAX_DURATION_MS ? ms : null;
}

function formatDuration(ms: number): string {
  for (
    const [unit, size] of [["h", 3_600_000], ["m", 60_000], [
      "s",
      1000,
    ]] as const
  ) {
    if (ms !== 0 && ms % size === 0) return `${ms / size}${unit}`;
  }
  return `${ms}ms`;
}

// ---------------------------------------------------------------------------
// The validator: a table of checks walking the YAML AST.

/** A yaml node (Scalar, YAMLMap, YAMLSeq, Alias), or null for no value. */
type Node = unknown;

interface Walk {
  file: string;
  doc: Document;
  lines: LineCounter;
  /** Users named in rules, checked against `users` once both are known. */
  ruleUsers: { name: string; node: Node; path: string }[];
}

/**
 * A check turns a node into a value, or throws a ConfigError. `expected`
 * describes a valid value, for "missing key" errors.
 */
type Check = ((w: Walk, node: Node, path: string, def: unknown) => unknown) & {
  expected?: string;
};

function errorAt(
  w: Walk,
  node: Node,
  path: string,
  expected: string,
  found: string,
  detail?: string,
): ConfigError {
  const offset = (node as { range?: number[] } | null)?.range?.[0];
  const pos = typeof offset === "number" ? w.lines.linePos(offset) : undefined;
  return new ConfigError({
    file: w.file,
    path,
    line: pos?.line,
    column: pos?.col,
    expected,
    found,
    detail,
  });
}

function describeNode(node: Node): string {
  if (isMap(node)) return node.items.length ? "a mapping" : "an empty mapping";
  if (isSeq(node)) return node.items.length ? "a list" : "an empty list";
  if (!isScalar(node)) return "nothing";
  const v = node.value;
  if (typeof v === "string") {
    return JSON.stringify(v.length > 80 ? `${v.slice(0, 77)}...` : v);
  }
  return v === null ? "null" : String(v);
}

function fail(w: Walk, node: Node, path: string, expected: string): never {
  throw errorAt(w, node, path, expected, describeNode(node));
}

/** A scalar check built from a converter that returns `null` when invalid. */
function scalar(
  expected: string,
  convert: (v: unknown) => unknown,
  found = describeNode,
): Check {
  const check: Check = (w, node, path) => {
    const v = isScalar(node) ? convert(node.value) : null;
    if (v === null || v === undefined) {
      throw errorAt(w, node, path, expected, found(node));
    }
    return v;
  };
  return Object.assign(check, { expected });
}

const oneOf = (...values: string[]): Check =>
  scalar(
    values.length === 2 ? `${values[0]} or ${values[1]}` : `one of ${values.join(", ")}`,
    (v) => values.includes(v as string) ? v : null,
  );

const bytes = (s: string) => new TextEncoder().encode(s).length;
const text255 = (what: string, secret = false): Check =>
  scalar(
    `${what} of 1-255 UTF-8 bytes`,
    (v) => typeof v === "string" && bytes(v) >= 1 && bytes(v) <= 255 ? v : null,
    // Never echo a password back into logs.
    secret
      ? (n) =>
        isScalar(n) && typeof n.value === "string"
          ? `a string of ${bytes(n.value)} bytes`
          : isScalar(n)
          ? `a ${n.value === null ? "null" : typeof n.value} value`
          : describeNode(n)
      : describeNode,
  );

/** What check-config and `/api/v1/config` print instead of a password. */
const REDACTED = "<redacted>";
/** What they print instead of the admin token. */
const REDACTED_TOKEN = "<redacted-token>";

/**
 * `check` that also refuses `placeholder`: a file saved from check-config's
 * output would otherwise give every user, or the admin API, a secret that
 * anyone can read in this source.
 */
const notPlaceholder = (check: Check, placeholder: string, what: string): Check =>
  Object.assign((w: Walk, node: Node, path: string, def: unknown) => {
    const v = check(w, node, path, def);
    if (v === placeholder) {
      throw errorAt(
        w,
        node,
        path,
        `${what} of your own`,
        `the placeholder ${placeholder}, which check-config and /api/v1/config print in its place`,
      );
    }
    return v;
  }, { expected: check.expected });

const DURATION_EXPECTED =
  "a duration such as 250ms, 10s, 5m, 1h or a number of seconds, at most 596h";
const duration = (positive: boolean): Check =>
  scalar(
    positive ? `a positive ${DURATION_EXPECTED.slice(2)}` : DURATION_EXPECTED,
    (v) => {
      const ms = parseDuration(v);
      return ms === null || (positive && ms === 0) ? null : ms;
    },
  );

const positiveInt = scalar(
  "a positive integer",
  (v) => Number.isSafeInteger(v) && (v as number) > 0 ? v : null,
);

const nonNegativeInt = scalar(
  "a whole number, 0 or more",
  (v) => Number.isSafeInteger(v) && (v as number) >= 0 ? v : null,
);

const hostPort = (defaultPort?: number): Check =>
  scalar(
    defaultPort === undefined ? HOST_PORT_EXPECTED : NAMESERVER_EXPECTED,
    (v) => {
      const hp = typeof v === "string" ? tryHostPort(v, defaultPort) : null;
      // A nameserver on port 0 would fail every lookup at run time.
      return hp && defaultPort !== undefined && hp.port === 0 ? null : hp;
    },
  );

const ipLiteral = (family: 4 | 6): Check =>
  scalar(
    family === 4 ? "an IPv4 literal such as 192.0.2.10" : "an IPv6 literal such as 2001:db8::10",
    (v) => {
      if (typeof v !== "string") return null;
      const t = v.trim();
      const ip = normalizeIp(t);
      // An IPv4-mapped IPv6 address is not a usable IPv6 source address.
      if (family === 6 && !parseIPv6(unbracket(t))) return null;
      return ip && ip.family === family ? ip.host : null;
    },
  );

function resolve(w: Walk, node: Node, path: string): Node {
  if (!isAlias(node)) return node;
  const target = node.resolve(w.doc);
  if (target) return target;
  throw errorAt(
    w,
    node,
    path,
    "an alias to an anchor defined earlier",
    `*${node.source}`,
    `unknown alias *${node.source}; expected an anchor (&${node.source}) defined earlier`,
  );
}

function isEmpty(node: Node): boolean {
  return node === null || node === undefined ||
    (isScalar(node) && node.value === null);
}

/** A list whose items all pass `item`. */
function list(
  item: Check,
  what: string,
  options: { nonEmpty?: boolean; unique?: (v: unknown) => string | null } = {},
): Check {
  const expected = `a${options.nonEmpty ? " non-empty" : ""} list of ${what}`;
  return (w, node, path) => {
    if (!isSeq(node) || (options.nonEmpty && node.items.length === 0)) {
      fail(w, node, path, expected);
    }
    const seen = new Map<string, number>();
    return node.items.map((n, i) => {
      const p = `${path}[${i}]`;
      const itemNode = resolve(w, n, p);
      const value = item(w, itemNode, p, undefined);
      const key = options.unique?.(value);
      if (key) {
        if (seen.has(key)) {
          throw errorAt(
            w,
            n,
            p,
            "no duplicates",
            JSON.stringify(key),
            `duplicate ${JSON.stringify(key)}; already given as ${path}[${seen.get(key)}]`,
          );
        }
        seen.set(key, i);
      }
      return value;
    });
  };
}

type Field = [camel: string, check: Check, required?: "required"];

/** A mapping with a fixed set of keys; absent or empty keys take defaults. */
function mapping(fields: Record<string, Field>): Check {
  const names = Object.keys(fields);
  const expected = `a mapping with keys ${names.join(", ")}`;
  return (w, node, path, def) => {
    if (!isMap(node)) fail(w, node, path, expected);
    const defaults = (def ?? {}) as Record<string, unknown>;
    const values = new Map<string, unknown>();
    const seen = new Map<string, Scalar>();
    for (const pair of node.items) {
      const key = pair.key;
      if (!isScalar(key) || typeof key.value !== "string") {
        fail(w, key ?? node, path, `a key name (one of ${names.join(", ")})`);
      }
      const name = key.value as string;
      const p = path ? `${path}.${name}` : name;
      if (seen.has(name)) {
        const first = w.lines.linePos(seen.get(name)!.range![0]);
        throw errorAt(
          w,
          key,
          p,
          "each key once",
          JSON.stringify(name),
          `duplicate key; first given at line ${first.line}, column ${first.col}`,
        );
      }
      seen.set(name, key);
      if (!Object.hasOwn(fields, name)) {
        throw errorAt(
          w,
          key,
          p,
          `one of ${names.join(", ")}`,
          JSON.stringify(name),
          `unknown key; expected one of ${names.join(", ")}`,
        );
      }
      const [camel, check] = fields[name];
      const value = resolve(w, pair.value, p);
      if (!isEmpty(value)) {
        values.set(camel, check(w, value, p, defaults[camel]));
      }
    }
    const out: Record<string, unknown> = {};
    for (const [name, [camel, check, required]] of Object.entries(fields)) {
      if (values.has(camel)) out[camel] = values.get(camel);
      else if (required) {
        const p = path ? `${path}.${name}` : name;
        const want = check.expected ?? "a value";
        throw errorAt(
          w,
          seen.get(name) ?? node,
          p,
          want,
          "nothing",
          `required key is missing or empty; expected ${want}`,
        );
      } else if (defaults[camel] !== undefined) {
        out[camel] = structuredClone(defaults[camel]);
      }
    }
    return out;
  };
}

const ruleList = (field: RuleListField): Check => {
  const { expected, valid } = RULE_LIST_FIELDS[field];
  const item = scalar(expected, (v) => valid(v) ? v : null);
  const check = list(item, `items, each ${expected}`, { nonEmpty: true });
  if (field !== "users") return check;
  return (w, node, path, def) => {
    const names = check(w, node, path, def) as string[];
    names.forEach((name, i) =>
      w.ruleUsers.push({
        name,
        node: (node as YAMLSeq).items[i],
        path: `${path}[${i}]`,
      })
    );
    return names;
  };
};

const ADMIN_LISTEN_EXPECTED = `${HOST_PORT_EXPECTED}, or off`;
const adminListen: Check = Object.assign(
  (w: Walk, node: Node, path: string) => {
    if (isScalar(node) && (node.value === "off" || node.value === false)) return null;
    const hp = isScalar(node) && typeof node.value === "string" ? tryHostPort(node.value) : null;
    if (!hp) fail(w, node, path, ADMIN_LISTEN_EXPECTED);
    return hp;
  },
  { expected: ADMIN_LISTEN_EXPECTED },
);

const TOKEN_EXPECTED = "a token of 16-4096 printable ASCII characters without spaces";
const adminToken = scalar(
  TOKEN_EXPECTED,
  (v) => typeof v === "string" && /^[\x21-\x7e]{16,4096}$/.test(v) ? v : null,
  // Never echo a secret back into logs.
  (n) =>
    isScalar(n) && typeof n.value === "string"
      ? `a string of ${n.value.length} characters${
        /^[\x21-\x7e]*$/.test(n.value) ? "" : " with spaces or non-ASCII characters"
      }`
      : isScalar(n)
      ? `a ${n.value === null ? "null" : typeof n.value} value`
      : describeNode(n),
);

export { isLoopback } from "../protocol/address.ts";

const RULE: Check = mapping({
  action: ["action", oneOf("allow", "deny"), "required"],
  from: ["from", ruleList("from")],
  to: ["to", ruleList("to")],
  ports: ["ports", ruleList("ports")],
  commands: ["commands", ruleList("commands")],
  users: ["users", ruleList("users")],
});

const boolean = scalar("true or false", (v) => typeof v === "boolean" ? v : null);

const gatewayUrl = scalar(
  "a gateway URL such as socks5://[user:pass@]HOST:PORT",
  (v) => {
    if (typeof v !== "string") return null;
    try {
      parseGateway(v);
      return v;
    } catch {
      return null;
    }
  },
  (n) =>
    isScalar(n) && typeof n.value === "string"
      ? JSON.stringify(redactGatewayUrl(n.value))
      : describeNode(n),
);

const portRange = scalar(
  'a port range "LOW-HIGH" with 1 <= LOW <= HIGH <= 65535',
  (v) => {
    const m = typeof v === "string" ? /^(\d{1,5})-(\d{1,5})$/.exec(v.trim()) : null;
    if (!m) return null;
    const [lo, hi] = [Number(m[1]), Number(m[2])];
    return lo >= 1 && lo <= hi && hi <= 65535 ? [lo, hi] : null;
  },
);

const ROUTE: Check = mapping({
  to: ["to", ruleList("to")],
  ports: ["ports", ruleList("ports")],
  from: ["from", ruleList("from")],
  users: ["users", ruleList("users")],
  via: ["via", list(gatewayUrl, "gateway URLs", { nonEmpty: true }), "required"],
});

const hostPortKey = (v: unknown) => {
  const hp = v as HostPort;
  return hp.port === 0 ? null : joinHostPort(hp.host, hp.port);
};

const PROTOCOL_LIST = list(oneOf("socks5", "socks4", "http"), "protocols", {
  nonEmpty: true,
  unique: (v) => v as string,
});

const LISTEN_ENTRY_EXPECTED = `${HOST_PORT_EXPECTED}, or a mapping with address and protocols`;
const LISTEN_MAPPING = mapping({
  address: ["address", hostPort(), "required"],
  protocols: ["protocols", PROTOCOL_LIST],
});
/** A listen entry: `HOST:PORT`, or `{ address: HOST:PORT, protocols: [...] }`. */
const listenEntry: Check = Object.assign(
  (w: Walk, node: Node, path: string) => {
    if (!isMap(node)) return hostPort()(w, node, path, undefined);
    const { address, protocols } = LISTEN_MAPPING(w, node, path, {}) as {
      address: HostPort;
      protocols?: Protocol[];
    };
    return protocols ? { ...address, protocols } : address;
  },
  { expected: LISTEN_ENTRY_EXPECTED },
);

const instanceName = scalar(
  "an instance name of 1-128 printable ASCII characters without spaces",
  (v) => typeof v === "string" && /^[\x21-\x7e]{1,128}$/.test(v) ? v : null,
);

const PASSWORD_HASH_EXPECTED =
  'a password hash "$scrypt$ln=N,r=N,p=N$SALT$HASH" within the cost limits ' +
  "(dualsocks hash-password prints one)";
const passwordHashCheck = scalar(
  PASSWORD_HASH_EXPECTED,
  (v) => {
    if (typeof v !== "string") return null;
    try {
      parsePasswordHash(v);
      return v;
    } catch {
      return null;
    }
  },
  (n) =>
    isScalar(n) && typeof n.value === "string"
      ? `a string of ${n.value.length} characters`
      : describeNode(n),
);
const nonNegativeNumber = scalar(
  "a number, 0 or more",
  (v) => typeof v === "number" && Number.isFinite(v) && v >= 0 ? v : null,
);
const SESSION_LIMIT: Check = mapping({
  sessions: ["sessions", nonNegativeInt],
  rate: ["rate", nonNegativeNumber],
  burst: ["burst", nonNegativeInt],
});
const positiveNumber = scalar(
  "a number above 0 (bytes a second)",
  (v) => typeof v === "number" && Number.isFinite(v) && v > 0 ? v : null,
);
const BANDWIDTH: Check = mapping({
  rate: ["rate", positiveNumber, "required"],
  burst: ["burst", positiveInt],
});
const IPV6_PREFIX = scalar(
  "a prefix length from 32 to 128",
  (v) => Number.isInteger(v) && (v as number) >= 32 && (v as number) <= 128 ? v : null,
);

const CONFIG: Check = mapping({
  listen: [
    "listen",
    list(listenEntry, LISTEN_ENTRY_EXPECTED, {
      nonEmpty: true,
      unique: hostPortKey,
    }),
  ],
  protocols: ["protocols", PROTOCOL_LIST],
  users: [
    "users",
    list(
      mapping({
        username: ["username", text255("a user name"), "required"],
        password: [
          "password",
          notPlaceholder(text255("a password", true), REDACTED, "a password"),
        ],
        password_hash: ["passwordHash", passwordHashCheck],
      }),
      "users (username and password or password_hash)",
      { unique: (v) => (v as { username: string }).username },
    ),
  ],
  resolver: [
    "resolver",
    mapping({
      family: [
        "family",
        oneOf("auto", "prefer-ipv6", "prefer-ipv4", "ipv6-only", "ipv4-only"),
      ],
      nameservers: [
        "nameservers",
        list(hostPort(53), "IP literals with optional :PORT", {
          unique: hostPortKey,
        }),
      ],
      happy_eyeballs_delay: ["happyEyeballsDelay", duration(false)],
    }),
  ],
  outbound: [
    "outbound",
    mapping({
      ipv4: ["ipv4", ipLiteral(4)],
      ipv6: ["ipv6", ipLiteral(6)],
    }),
  ],
  timeouts: [
    "timeouts",
    mapping({
      handshake: ["handshake", duration(true)],
      connect: ["connect", duration(true)],
      idle: ["idle", duration(false)],
    }),
  ],
  limits: [
    "limits",
    mapping({
      max_sessions: ["maxSessions", positiveInt],
      max_handshakes: ["maxHandshakes", nonNegativeInt],
      per_client: ["perClient", SESSION_LIMIT],
      per_user: ["perUser", SESSION_LIMIT],
      bandwidth: [
        "bandwidth",
        mapping({ per_client: ["perClient", BANDWIDTH], per_user: ["perUser", BANDWIDTH] }),
      ],
    }),
  ],
  allow_open_relay: ["allowOpenRelay", boolean],
  lockout: [
    "lockout",
    mapping({
      threshold: ["threshold", nonNegativeInt],
      delay: ["delay", duration(false)],
      max_delay: ["maxDelay", duration(false)],
      duration: ["duration", duration(true)],
      ipv6_prefix: ["ipv6Prefix", IPV6_PREFIX],
    }),
  ],
  rules: ["rules", list(RULE, "rules (mappings with an action)")],
  shutdown: [
    "shutdown",
    mapping({
      grace: ["grace", duration(false)],
      drain_delay: ["drainDelay", duration(false)],
    }),
  ],
  log: [
    "log",
    mapping({
      format: ["format", oneOf("text", "json")],
      level: ["level", oneOf("debug", "info", "warning", "error")],
    }),
  ],
  admin: [
    "admin",
    mapping({
      listen: ["listen", adminListen],
      token: ["token", notPlaceholder(adminToken, REDACTED_TOKEN, "a token")],
    }),
  ],
  routes: ["routes", list(ROUTE, "routes (mappings with via)")],
  bind: [
    "bind",
    mapping({
      accept_timeout: ["acceptTimeout", duration(true)],
      strict_peer: ["strictPeer", boolean],
    }),
  ],
  udp: [
    "udp",
    mapping({
      advertise: [
        "advertise",
        mapping({ ipv4: ["ipv4", ipLiteral(4)], ipv6: ["ipv6", ipLiteral(6)] }),
      ],
      port_range: ["portRange", portRange],
      name_cache_ttl: ["nameCacheTtl", duration(false)],
    }),
  ],
  proxy_protocol: [
    "proxyProtocol",
    mapping({ trusted: ["trusted", ruleList("from"), "required"] }),
  ],
  reuse_port: ["reusePort", boolean],
  instance_name: ["instanceName", instanceName],
});

/**
 * Parses and validates configuration text. `options.file` is only used in
 * error messages. An empty document yields the defaults.
 * Throws {@linkcode ConfigError} for YAML syntax errors, duplicate or unknown
 * keys, and invalid values.
 *
 * @example
 * ```ts
 * import { parseConfig } from "./config.ts";
 * const config = parseConfig(
 *   'listen: ["[::]:1080"]\ntimeouts:\n  idle: 0\n',
 *   { file: "dualsocks.yaml" },
 * );
 * config.listen; // [{ host: "::", port: 1080 }]
 * config.timeouts.idle; // 0
 * ```
 */
export function parseConfig(text: string, options: { file: string }): Config {
  const lines = new LineCounter();
  // The yaml package reads process.env.LOG_TOKENS / LOG_STREAM (debug
  // switches) while parsing, which under Deno needs --allow-env or prompts.
  // Hide the environment for this synchronous call so that reading a
  // config file never requires env permission.
  const env = process.env;
  let doc: Document;
  try {
    process.env = {};
    doc = parseDocument(text, {
      lineCounter: lines,
      prettyErrors: false,
      uniqueKeys: false, // reported by the walk, with the key path
    });
  } finally {
    process.env = env;
  }
  const w: Walk = { file: options.file, doc, lines, ruleUsers: [] };
  const syntax = doc.errors[0];
  if (syntax) {
    const pos = lines.linePos(syntax.pos[0]);
    throw new ConfigError({
      file: options.file,
      path: "",
      line: pos.line,
      column: pos.col,
      expected: "valid YAML",
      found: syntax.message,
      detail: `invalid YAML: ${syntax.message}${
        syntax.code === "BAD_ALIAS" ? ' (write "*" in quotes)' : ""
      }`,
    });
  }
  const top = resolve(w, doc.contents, "");
  if (isEmpty(top)) return structuredClone(DEFAULT_CONFIG);
  if (!isMap(top)) {
    throw errorAt(
      w,
      top,
      "",
      "a mapping of settings at the top level",
      describeNode(top),
    );
  }
  const config = CONFIG(w, top, "", DEFAULT_CONFIG) as Config;
  config.users.forEach((u, i) => {
    if ((u.password === undefined) !== (u.passwordHash === undefined)) return;
    const section = isMap(top) ? resolve(w, top.get("users", true), "users") : null;
    const node = isSeq(section) ? section.items[i] as Node : top;
    const neither = u.password === undefined;
    throw errorAt(
      w,
      node,
      neither ? `users[${i}].password` : `users[${i}]`,
      "a password or a password_hash",
      neither ? "nothing" : "both",
      neither
        ? "required key is missing or empty; expected a password or a password_hash"
        : "expected a password or a password_hash, found both",
    );
  });
  const known = new Set(config.users.map((u) => u.username));
  for (const u of w.ruleUsers) {
    if (!known.has(u.name)) {
      const expected = known.size
        ? `one of the configured users (${[...known].join(", ")})`
        : "a configured user, but no users are configured";
      throw errorAt(
        w,
        u.node,
        u.path,
        expected,
        JSON.stringify(u.name),
        `unknown user ${JSON.stringify(u.name)}; expected ${expected}`,
      );
    }
  }
  const admin = config.admin;
  if (admin.listen && !isLoopback(admin.listen.host) && admin.token === undefined) {
    const section = isMap(top) ? resolve(w, top.get("admin", true), "admin") : null;
    const listenNode = isMap(section) ? section.get("listen", true) : section;
    const address = joinHostPort(admin.listen.host, admin.listen.port);
    throw errorAt(
      w,
      listenNode ?? top,
      "admin.token",
      TOKEN_EXPECTED,
      "nothing",
      `required when admin.listen (${address}) is not a loopback address; expected ${TOKEN_EXPECTED}`,
    );
  }
  try {
    compileRules(config.rules); // safety net: every check above should cover it
  } catch (e) {
    throw errorAt(w, top, "rules", "valid rules", String(e), String(e));
  }
  return config;
}

/**
 * Reads and parses a configuration file. Throws {@linkcode ConfigError}:
 * `cannot read config file X: not found`, a message telling to run with
 * `--allow-read=X` when permission is missing, or any parse error.
 *
 * @example
 * ```ts ignore
 * import { loadConfig } from "./config.ts";
 * const config = await loadConfig("dualsocks.yaml");
 * ```
 */
export async function loadConfig(path: string): Promise<Config> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    let reason = e instanceof Error ? e.message : String(e);
    if (e instanceof Deno.errors.NotFound) reason = "not found";
    else if (
      e instanceof Deno.errors.NotCapable ||
      e instanceof Deno.errors.PermissionDenied
    ) {
      reason = `the process lacks read permission; run with --allow-read=${path}`;
    }
    throw new ConfigError({
      file: path,
      path: "",
      expected: "a readable file",
      found: reason,
      message: `cannot read config file ${path}: ${reason}`,
    });
  }
  return parseConfig(text, { file: path });
}

/**
 * Renders a configuration as YAML with the file's snake_case keys, every
 * setting explicit, durations with units, passwords replaced by
 * `<redacted>` and the admin token by `<redacted-token>`. Parsing the result
 * gives the same configuration back once real secrets replace those
 * placeholders: a file that still holds one is refused, so that a saved
 * copy of this output cannot start a gateway with secrets anyone can know.
 *
 * @example
 * ```ts
 * import { DEFAULT_CONFIG, formatConfig } from "./config.ts";
 * console.log(formatConfig(DEFAULT_CONFIG));
 * ```
 */
export function formatConfig(config: Config): string {
  return `# dualsocks effective configuration (passwords and token redacted)\n${
    stringify(configDocument(config), { lineWidth: 0 })
  }`;
}

/**
 * A configuration as the file would write it: snake_case keys, every
 * setting explicit, durations with units, and secrets replaced (passwords by
 * `<redacted>`, the admin token by `<redacted-token>`; a file holding either
 * placeholder is refused). Plain data: serialize it as YAML (that is
 * {@linkcode formatConfig}) or JSON (which YAML also reads).
 *
 * @example
 * ```ts
 * import { configDocument, DEFAULT_CONFIG } from "./config.ts";
 * const doc = configDocument(DEFAULT_CONFIG);
 * doc.timeouts; // { handshake: "10s", connect: "10s", idle: "5m" }
 * ```
 */
export function configDocument(config: Config): ConfigDocument {
  const hp = (list: HostPort[]) => list.map((h) => joinHostPort(h.host, h.port));
  return {
    listen: config.listen.map((l) => {
      const address = joinHostPort(l.host, l.port);
      return l.protocols ? { address, protocols: [...l.protocols] } : address;
    }),
    protocols: [...config.protocols],
    users: config.users.map((u) =>
      u.passwordHash === undefined
        ? { username: u.username, password: REDACTED }
        : { username: u.username, password_hash: REDACTED }
    ),
    resolver: {
      family: config.resolver.family,
      nameservers: hp(config.resolver.nameservers),
      happy_eyeballs_delay: formatDuration(config.resolver.happyEyeballsDelay),
    },
    outbound: { ...config.outbound },
    timeouts: {
      handshake: formatDuration(config.timeouts.handshake),
      connect: formatDuration(config.timeouts.connect),
      idle: formatDuration(config.timeouts.idle),
    },
    limits: {
      max_sessions: config.limits.maxSessions,
      max_handshakes: config.limits.maxHandshakes,
      ...(config.limits.perClient ? { per_client: { ...config.limits.perClient } } : {}),
      ...(config.limits.perUser ? { per_user: { ...config.limits.perUser } } : {}),
      ...(config.limits.bandwidth
        ? {
          bandwidth: {
            ...(config.limits.bandwidth.perClient
              ? { per_client: { ...config.limits.bandwidth.perClient } }
              : {}),
            ...(config.limits.bandwidth.perUser
              ? { per_user: { ...config.limits.bandwidth.perUser } }
              : {}),
          },
        }
        : {}),
    },
    ...(config.allowOpenRelay === undefined ? {} : { allow_open_relay: config.allowOpenRelay }),
    ...(config.lockout === undefined ? {} : { lockout: lockoutDocument(config.lockout) }),
    rules: config.rules.map((r) => ({ ...r })),
    shutdown: {
      grace: formatDuration(config.shutdown.grace),
      ...(config.shutdown.drainDelay === undefined
        ? {}
        : { drain_delay: formatDuration(config.shutdown.drainDelay) }),
    },
    log: { ...config.log },
    admin: {
      listen: config.admin.listen
        ? joinHostPort(config.admin.listen.host, config.admin.listen.port)
        : "off",
      ...(config.admin.token === undefined ? {} : { token: REDACTED_TOKEN }),
    },
    routes: config.routes.map((r) => ({ ...r, via: r.via.map(redactGatewayUrl) })),
    bind: {
      accept_timeout: formatDuration(config.bind.acceptTimeout),
      strict_peer: config.bind.strictPeer,
    },
    udp: {
      advertise: { ...config.udp.advertise },
      ...(config.udp.portRange ? { port_range: config.udp.portRange.join("-") } : {}),
      name_cache_ttl: formatDuration(config.udp.nameCacheTtl),
    },
    ...(config.proxyProtocol
      ? { proxy_protocol: { trusted: [...config.proxyProtocol.trusted] } }
      : {}),
    ...(config.reusePort === undefined ? {} : { reuse_port: config.reusePort }),
    ...(config.instanceName === undefined ? {} : { instance_name: config.instanceName }),
  };
}

function lockoutDocument(l: LockoutConfig): NonNullable<ConfigDocument["lockout"]> {
  const out: NonNullable<ConfigDocument["lockout"]> = {};
  if (l.threshold !== undefined) out.threshold = l.threshold;
  if (l.delay !== undefined) out.delay = formatDuration(l.delay);
  if (l.maxDelay !== undefined) out.max_delay = formatDuration(l.maxDelay);
  if (l.duration !== undefined) out.duration = formatDuration(l.duration);
  if (l.ipv6Prefix !== undefined) out.ipv6_prefix = l.ipv6Prefix;
  return out;
}

/**
 * The shape {@linkcode configDocument} returns: the file's keys and value
 * formats.
 *
 * @example
 * ```ts
 * import { configDocument, type ConfigDocument, DEFAULT_CONFIG } from "./config.ts";
 * const doc: ConfigDocument = configDocument(DEFAULT_CONFIG);
 * doc.admin.listen; // "127.0.0.1:9080"
 * ```
 */
export interface ConfigDocument {
  /** `HOST:PORT` strings, or mappings for listeners with their own protocols. */
  listen: (string | { address: string; protocols: Protocol[] })[];
  /** The protocols of listeners that name none. */
  protocols: Protocol[];
  /** Users, passwords and hashes redacted. */
  users: ({ username: string; password: string } | { username: string; password_hash: string })[];
  /** Name resolution. */
  resolver: { family: FamilyPolicy; nameservers: string[]; happy_eyeballs_delay: string };
  /** Source addresses. */
  outbound: { ipv4?: string; ipv6?: string };
  /** Durations with units. */
  timeouts: { handshake: string; connect: string; idle: string };
  /** Resource limits. */
  limits: {
    max_sessions: number;
    max_handshakes: number;
    per_client?: SessionLimit;
    per_user?: SessionLimit;
    bandwidth?: { per_client?: BandwidthLimit; per_user?: BandwidthLimit };
  };
  /** Open relay knowingly, when set. */
  allow_open_relay?: boolean;
  /** The lockout settings given. */
  lockout?: {
    threshold?: number;
    delay?: string;
    max_delay?: string;
    duration?: string;
    ipv6_prefix?: number;
  };
  /** Access rules. */
  rules: RuleConfig[];
  /** Shutdown grace period and drain delay. */
  shutdown: { grace: string; drain_delay?: string };
  /** Logging. */
  log: Config["log"];
  /** The admin API: `"off"` or `HOST:PORT`; the token redacted. */
  admin: { listen: string; token?: string };
  /** Routes, with passwords in gateway URLs redacted. */
  routes: RouteConfig[];
  /** BIND settings. */
  bind: { accept_timeout: string; strict_peer: boolean };
  /** UDP ASSOCIATE settings. */
  udp: { advertise: { ipv4?: string; ipv6?: string }; port_range?: string; name_cache_ttl: string };
  /** PROXY protocol settings, when on. */
  proxy_protocol?: { trusted: string[] };
  /** SO_REUSEPORT on the listeners, when set. */
  reuse_port?: boolean;
  /** The instance name, when set. */
  instance_name?: string;
}
