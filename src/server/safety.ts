/**
 * Safe when exposed: the gateway's defences, shared by every front door
 * through the request pipeline in `session.ts`.
 *
 * - Protected mode: a gateway with no authentication, no rules that name
 *   clients (`from:`) and no `allowOpenRelay` serves only loopback clients;
 *   the rest get the protocol's refusal (SOCKS5 2, SOCKS4 0x5B, HTTP 403).
 * - Destinations nobody means to reach (`src/policy/destinations.ts`) are
 *   refused for every client unless a rule allows them by an explicit CIDR.
 * - Loops: a destination that is one of the gateway's own listening sockets
 *   (by any of its addresses; the host's addresses behind a wildcard
 *   listener) is refused.
 * - Brute force: failed logins per client are slowed and locked out
 *   (`src/policy/lockout.ts`).
 * - Limits: sessions open at once and new sessions a second, per client
 *   address and per user (`src/policy/limits.ts`).
 *
 * @module
 */

import { setTimeout as sleep } from "node:timers/promises";
import { isLoopback, joinHostPort } from "../protocol/address.ts";
import type { User } from "../policy/auth.ts";
import { Reply } from "../protocol/constants.ts";
import { allowedExplicitly, inspectDestination, unwrapIp } from "../policy/destinations.ts";
import { clientKey, type LockoutOptions, LoginLockout } from "../policy/lockout.ts";
import { type SessionLimit, SessionLimiter } from "../policy/limits.ts";
import type { RuleConfig, RuleDecision } from "../policy/rules.ts";
import type { GatewayLogger } from "../log.ts";
import { GatewayError } from "./errors.ts";

/**
 * The safety settings of {@linkcode ServeOptions}; every field is optional.
 *
 * @example
 * ```ts
 * import type { SafetyOptions } from "./safety.ts";
 * const options: SafetyOptions = {
 *   allowOpenRelay: false,
 *   lockout: { threshold: 10 },
 *   perClient: { sessions: 64, rate: 20 },
 *   perUser: { sessions: 16 },
 * };
 * ```
 */
export interface SafetyOptions {
  /** Serve clients beyond loopback with no authentication and no `from:` rules. Default false. */
  allowOpenRelay?: boolean;
  /** Brute-force protection; `false` turns it off. Default on (see `LockoutOptions`). */
  lockout?: LockoutOptions | false;
  /** Limits per client address (IPv6 by /64, as the lockout). */
  perClient?: SessionLimit;
  /** Limits per user; `users` gives a user its own. */
  perUser?: SessionLimit & { users?: Record<string, SessionLimit> };
}

/**
 * The counters of the defences, for metrics and the admin API.
 *
 * @example
 * ```ts
 * import type { SafetyStats } from "./safety.ts";
 * const s: SafetyStats = {
 *   protectedRefusals: 0,
 *   unwantedDestinations: {},
 *   loopRefusals: 0,
 *   lockedOutAttempts: 0,
 *   limitRefusals: { client: 0, user: 0 },
 * };
 * ```
 */
export interface SafetyStats {
  /** Clients refused by protected mode. */
  protectedRefusals: number;
  /** Destinations refused by category (`metadata`, `link-local`...). */
  unwantedDestinations: Record<string, number>;
  /** Destinations refused because they are the gateway itself. */
  loopRefusals: number;
  /** Login attempts refused unchecked (locked out, or a flood of them). */
  lockedOutAttempts: number;
  /** Sessions refused by a limit, per kind. */
  limitRefusals: { client: number; user: number };
}

/**
 * What {@linkcode Safety} needs about the session in question (a `Session`
 * has all of it).
 *
 * @example
 * ```ts
 * import type { SafetySubject } from "./safety.ts";
 * const who: SafetySubject = {
 *   client: { transport: "tcp", hostname: "192.0.2.7", port: 40000 },
 *   clientLoopback: false,
 * };
 * ```
 */
export interface SafetySubject {
  /** The client's address (after a PROXY header). */
  client: Deno.NetAddr;
  /** Whether the client is on this host's loopback. */
  clientLoopback: boolean;
  /** The user, once logged in. */
  user?: string;
}

const WILDCARDS = new Set(["0.0.0.0", "::"]);
/**
 * How long the list of own addresses is reused: a reload's new listeners,
 * or a new interface address, are protected against loops within a second.
 */
const OWN_TTL = 1000;

/**
 * The defences of one gateway. Counters and lockouts live as long as the
 * gateway; {@linkcode Safety.configure} applies a reload's settings (the
 * lockout's counts are kept when its settings stay; the limiters start
 * afresh). A gateway makes its own: read it as `gateway.safety`.
 *
 * @example
 * ```ts ignore
 * import { serve } from "@dualsocks/dualsocks";
 * const gateway = serve({ listen: ["[::]:1080"], safety: { allowOpenRelay: false } });
 * gateway.safety?.protectedMode; // true: no users, no rules with from:
 * gateway.safety?.lockouts(); // the clients locked out now
 * ```
 */
export class Safety {
  /** The counters, for metrics. */
  readonly stats: SafetyStats = {
    protectedRefusals: 0,
    unwantedDestinations: {},
    loopRefusals: 0,
    lockedOutAttempts: 0,
    limitRefusals: { client: 0, user: 0 },
  };
  /** Failed logins per client; absent when the lockout is off. */
  lockout?: LoginLockout;
  #log: GatewayLogger;
  #protected = false;
  #protectedWhy = "";
  #lastWarning = -Infinity;
  #clientLimits?: SessionLimiter;
  #userLimits?: SessionLimiter;
  #listening: () => readonly Deno.NetAddr[];
  #own?: { at: number; set: Set<string>; ports: Set<number> };
  #interfacesDenied = false;

  /** Made by the gateway: its logger, and its listening sockets now. */
  constructor(log: GatewayLogger, listening: () => readonly Deno.NetAddr[]) {
    this.#log = log;
    this.#listening = listening;
  }

  /**
   * Applies settings: whether protected mode holds (no authenticator, no
   * `from:` rule, no `allowOpenRelay`), the lockout and the limits. The
   * lockout and limiters keep their counts when their settings stay.
   */
  configure(
    options: SafetyOptions,
    facts: { authenticated: boolean; rules?: readonly RuleConfig[] | "hook" },
  ): void {
    const namesClients = facts.rules === "hook" ||
      (facts.rules ?? []).some((r) => r.from !== undefined);
    this.#protected = !facts.authenticated && !namesClients && !options.allowOpenRelay;
    this.#protectedWhy = "protected mode: no users and no rules with from: are configured, so " +
      "only loopback clients are served; to serve other hosts, configure users, rules with " +
      "from: naming the clients, or allow_open_relay: true to run an open relay knowingly";
    if (options.lockout === false) this.lockout = undefined;
    else if (!this.lockout || JSON.stringify(options.lockout ?? {}) !== this.#lockoutKey) {
      this.lockout = new LoginLockout(options.lockout ?? {});
      this.#lockoutKey = JSON.stringify(options.lockout ?? {});
    }
    const per = options.perClient;
    this.#clientLimits = per && (per.sessions || per.rate)
      ? new SessionLimiter({ what: "client", setting: "limits.per_client", limit: per })
      : undefined;
    const pu = options.perUser;
    const own = pu?.users;
    this.#userLimits = pu && (pu.sessions || pu.rate || own)
      ? new SessionLimiter({
        what: "user",
        setting: "limits.per_user",
        limit: { sessions: pu.sessions, rate: pu.rate, burst: pu.burst },
        limitFor: own ? (user) => Object.hasOwn(own, user) ? own[user] : undefined : undefined,
      })
      : undefined;
  }
  #lockoutKey = "";

  /**
   * The startup explanations, logged once: protected mode when some
   * listener reaches beyond loopback, and users whose password is in clear.
   */
  explain(listening: readonly Deno.NetAddr[], users?: readonly User[]): void {
    const exposed = listening.filter((a) => !isLoopback(a.hostname));
    if (this.#protected && exposed.length > 0) {
      this.#log.warn("{addrs}: {why}", {
        addrs: exposed.map((a) => joinHostPort(a.hostname, a.port)).join(" "),
        why: this.#protectedWhy,
      });
    }
    const clear = (users ?? []).filter((u) => u.password !== undefined).map((u) => u.username);
    if (clear.length > 0) {
      this.#log.warn(
        "users {users}: password in clear in the configuration; store a password_hash " +
          "instead (dualsocks hash-password prints one)",
        { users: clear.join(", ") },
      );
    }
  }

  /**
   * The clients with failed logins or locked out now, locked first, times as
   * ISO 8601 strings: what `GET /api/v1/lockouts` shows.
   */
  lockouts(): {
    client: string;
    failures: number;
    lastFailure: string;
    lockedUntil: string | null;
  }[] {
    return (this.lockout?.snapshot() ?? []).map((e) => ({
      client: e.client,
      failures: e.failures,
      lastFailure: new Date(e.lastFailure).toISOString(),
      lockedUntil: e.lockedUntil === null ? null : new Date(e.lockedUntil).toISOString(),
    }));
  }

  /** Whether protected mode holds. */
  get protectedMode(): boolean {
    return this.#protected;
  }

  /** The startup explanation of protected mode, when it holds. */
  get protectedExplanation(): string {
    return this.#protectedWhy;
  }

  /**
   * Refuses a client beyond loopback in protected mode: throws a
   * {@linkcode GatewayError} (reply 2) and warns at most once a minute.
   */
  checkClient(s: SafetySubject): void {
    if (!this.#protected || s.clientLoopback) return;
    this.stats.protectedRefusals++;
    const now = performance.now();
    if (now - this.#lastWarning >= 60_000) {
      this.#lastWarning = now;
      this.#log.warn("refused client {client}: {why}", {
        client: s.client.hostname,
        why: this.#protectedWhy,
      });
    }
    throw new GatewayError(
      Reply.NOT_ALLOWED,
      `client ${s.client.hostname} refused by protected mode (set users, rules with from:, ` +
        `or allow_open_relay: true)`,
    );
  }

  /**
   * Why the gateway refuses to connect to `host` (an IP literal), or `null`:
   * one of its own listening sockets, or a destination nobody means to reach
   * that the rule behind `options.decision` (among `options.rules`) does not
   * allow explicitly.
   */
  refusal(
    host: string,
    port: number,
    options: { rules?: readonly RuleConfig[]; decision?: RuleDecision } = {},
  ): GatewayError | null {
    const { rules, decision } = options;
    const ip = inspectDestination(host);
    if (!ip) return null;
    const own = this.#ownSet();
    // The port first: most destinations are on no port the gateway listens on.
    if (own.ports.has(port) && own.set.has(`${ip.host}|${port}`)) {
      this.stats.loopRefusals++;
      return new GatewayError(
        Reply.NOT_ALLOWED,
        `${joinHostPort(ip.host, port)} is this gateway's own listening socket: a loop, refused`,
      );
    }
    const unwanted = ip.unwanted;
    if (!unwanted) return null;
    if (rules && decision && allowedExplicitly(rules, decision, ip.host)) return null;
    const c = this.stats.unwantedDestinations;
    c[unwanted.category] = (c[unwanted.category] ?? 0) + 1;
    return new GatewayError(Reply.NOT_ALLOWED, unwanted.reason);
  }

  /** The listening sockets as `host|port` keys (wildcards expanded to the host's addresses), and their ports. */
  #ownSet(): { set: Set<string>; ports: Set<number> } {
    // Date.now(), not performance.now(): no call out of V8 on every request.
    const now = Date.now();
    if (this.#own && now - this.#own.at < OWN_TTL && now >= this.#own.at) return this.#own;
    const addrs = this.#listening();
    const set = new Set<string>();
    const ports = new Set(addrs.map((a) => a.port));
    let hosts: string[] | undefined;
    for (const a of addrs) {
      const ip = unwrapIp(a.hostname);
      if (!ip) continue;
      if (!WILDCARDS.has(ip.host)) {
        set.add(`${ip.host}|${a.port}`);
        continue;
      }
      hosts ??= this.#hostAddresses();
      // A [::] listener takes IPv4 too on a dual-stack host: all of them.
      for (const h of hosts) {
        if (ip.host === "::" || !h.includes(":")) set.add(`${h}|${a.port}`);
      }
    }
    this.#own = { at: now, set, ports };
    return this.#own;
  }

  #hostAddresses(): string[] {
    const out = ["127.0.0.1", "::1"];
    try {
      // Query first: calling without the grant would prompt on a terminal.
      const grant = Deno.permissions.querySync({ name: "sys", kind: "networkInterfaces" });
      if (grant.state !== "granted") throw new Error("no --allow-sys=networkInterfaces");
      for (const i of Deno.networkInterfaces()) {
        const ip = unwrapIp(i.address);
        if (ip) out.push(ip.host);
      }
    } catch (error) {
      if (!this.#interfacesDenied) {
        this.#interfacesDenied = true;
        this.#log.warn(
          "cannot list this host's addresses ({error}): loop protection behind a wildcard " +
            "listener covers loopback only; grant --allow-sys=networkInterfaces",
          { error: (error as Error).message },
        );
      }
    }
    return out;
  }

  /**
   * A login under the lockout: waits the client's slot (bounded by
   * `signal`), runs `check`, and records the outcome. An attempt refused
   * unchecked (`locked`, or `busy` with a flood of attempts waiting) resolves
   * like a wrong password, with why.
   */
  async login(
    s: SafetySubject,
    signal: AbortSignal,
    check: () => Promise<boolean>,
  ): Promise<{ ok: boolean; refused?: string }> {
    const l = this.lockout;
    if (!l) return { ok: await check() };
    const address = s.client.hostname;
    const gate = l.begin(address);
    if (gate.refused) {
      this.stats.lockedOutAttempts++;
      return {
        ok: false,
        refused: gate.refused === "locked"
          ? `client ${l.key(address)} is locked out after repeated failed logins, until ${
            new Date(gate.until).toISOString()
          }`
          : `client ${l.key(address)} has too many logins waiting`,
      };
    }
    if (gate.wait > 0) await sleep(gate.wait, undefined, { signal });
    const ok = await check();
    if (ok) l.succeed(address);
    else {
      const f = l.fail(address);
      if (f.justLocked) {
        this.#log.warn("client {client} locked out after {failures} failed logins", {
          client: f.key,
          failures: f.failures,
        });
      }
    }
    return { ok };
  }

  /** The key a client counts under for the lockout and the per-client limits. */
  clientKey(s: SafetySubject): string {
    return clientKey(s.client.hostname, 64);
  }

  /** Admits a session for its client (call once, before the request); throws when over a limit. */
  admitClient(s: SafetySubject & { limitKeys?: string[] }): void {
    this.#admit(this.#clientLimits, "client", this.clientKey(s), s);
  }

  /** Admits a session for its user once logged in; throws when over a limit. */
  admitUser(s: SafetySubject & { limitKeys?: string[] }): void {
    if (s.user !== undefined) this.#admit(this.#userLimits, "user", s.user, s);
  }

  #admit(
    limiter: SessionLimiter | undefined,
    kind: "client" | "user",
    key: string,
    s: SafetySubject & { limitKeys?: string[] },
  ): void {
    if (!limiter) return;
    const why = limiter.admit(key);
    if (why) {
      this.stats.limitRefusals[kind]++;
      this.#log.warn("session refused: {why}", { why });
      throw new GatewayError(Reply.NOT_ALLOWED, why);
    }
    (s.limitKeys ??= []).push(`${kind}\u0000${key}`);
  }

  /** Releases what a session held; call once when it ends. */
  release(s: { limitKeys?: string[] }): void {
    for (const k of s.limitKeys ?? []) {
      const [kind, key] = k.split("\u0000");
      (kind === "client" ? this.#clientLimits : this.#userLimits)?.release(key);
    }
    s.limitKeys = undefined;
  }
}
