/**
 * Session admission limits per key (a client address or a user name):
 * how many sessions may be open at once, and how many may start per second
 * (a token bucket: `rate` new sessions a second, up to `burst` at once).
 *
 * Pure counters: the caller calls {@linkcode SessionLimiter.admit} when a
 * session starts (and, when it returns `null`, exactly one
 * {@linkcode SessionLimiter.release} when that session ends). The clock is
 * injected for tests.
 *
 * Memory is bounded: a key with no open session is only a rate budget,
 * and past `maxKeys` keys the least recently seen of those are forgotten
 * (forgetting one gives that key a full budget again, the mildest error).
 * Keys with open sessions are kept, and there are never more of them than
 * the gateway's `limits.max_sessions`.
 *
 * @module
 */

/**
 * The limits for one key; an omitted or 0 field is no limit.
 *
 * @example
 * ```ts
 * import type { SessionLimit } from "./limits.ts";
 * const perClient: SessionLimit = { sessions: 64, rate: 20, burst: 40 };
 * ```
 */
export interface SessionLimit {
  /** Sessions open at once. */
  sessions?: number;
  /** New sessions per second, on average. */
  rate?: number;
  /** New sessions at once when the budget is full; default `max(1, rate)`. */
  burst?: number;
}

/**
 * The settings of a {@linkcode SessionLimiter}.
 *
 * @example
 * ```ts
 * import type { SessionLimiterOptions } from "./limits.ts";
 * const options: SessionLimiterOptions = {
 *   what: "user",
 *   setting: "limits.per_user",
 *   limit: { sessions: 4 },
 *   limitFor: (user) => user === "batch" ? { sessions: 100 } : undefined,
 * };
 * ```
 */
export interface SessionLimiterOptions {
  /** What a key is, for messages: `client` or `user`. */
  what: string;
  /** The configuration setting the limits come from, for messages. */
  setting: string;
  /** The limits of every key without its own. */
  limit: SessionLimit;
  /** A key's own limits, replacing `limit` for it. */
  limitFor?: (key: string) => SessionLimit | undefined;
  /** Keys kept without open sessions; default 10 000. */
  maxKeys?: number;
  /** The clock, in ms; default `Date.now`. */
  now?: () => number;
}

interface Entry {
  active: number;
  tokens: number;
  updated: number;
}

function checkLimit(where: string, limit: SessionLimit): void {
  for (const field of ["sessions", "rate", "burst"] as const) {
    const v = limit[field];
    if (v !== undefined && (!Number.isFinite(v) || v < 0)) {
      throw new RangeError(`${where}.${field}: expected a number >= 0, found ${v}`);
    }
  }
}

/**
 * Concurrent-session and session-rate limits per key.
 *
 * @example
 * ```ts
 * import { SessionLimiter } from "./limits.ts";
 * const limiter = new SessionLimiter({
 *   what: "client",
 *   setting: "limits.per_client",
 *   limit: { sessions: 1 },
 * });
 * limiter.admit("192.0.2.1"); // null: admitted
 * limiter.admit("192.0.2.1"); // "client 192.0.2.1: expected at most 1 open session ..."
 * limiter.release("192.0.2.1");
 * limiter.admit("192.0.2.1"); // null
 * ```
 */
export class SessionLimiter {
  readonly #options: SessionLimiterOptions;
  readonly #maxKeys: number;
  readonly #now: () => number;
  #entries = new Map<string, Entry>();

  /** Creates the limiter; throws a `RangeError` for a negative or non-numeric limit. */
  constructor(options: SessionLimiterOptions) {
    checkLimit(options.setting, options.limit);
    this.#options = options;
    this.#maxKeys = Math.max(1, options.maxKeys ?? 10_000);
    this.#now = options.now ?? Date.now;
  }

  /** Whether any key can be limited at all: a limiter that cannot is skipped. */
  get active(): boolean {
    const l = this.#options.limit;
    return Boolean(l.sessions || l.rate) || this.#options.limitFor !== undefined;
  }

  #limit(key: string): SessionLimit {
    const own = this.#options.limitFor?.(key);
    if (own) checkLimit(`${this.#options.setting} (${key})`, own);
    return own ?? this.#options.limit;
  }

  /**
   * Admits a new session for `key`, or returns why not (a sentence naming
   * the setting). When admitted, the session counts as open until
   * {@linkcode SessionLimiter.release}.
   */
  admit(key: string): string | null {
    const limit = this.#limit(key);
    const now = this.#now();
    let e = this.#entries.get(key);
    if (e) this.#entries.delete(key); // re-inserted: most recently seen last
    const burst = limit.burst || Math.max(1, limit.rate ?? 0);
    e ??= { active: 0, tokens: burst, updated: now };
    if (limit.rate) {
      e.tokens = Math.min(burst, e.tokens + (now - e.updated) / 1000 * limit.rate);
    }
    e.updated = now;
    const { what, setting } = this.#options;
    let reason: string | null = null;
    if (limit.sessions && e.active >= limit.sessions) {
      reason = `${what} ${key}: expected at most ${limit.sessions} open ` +
        `session${limit.sessions === 1 ? "" : "s"} (${setting}.sessions), found ${e.active} open`;
    } else if (limit.rate && e.tokens < 1) {
      reason = `${what} ${key}: expected at most ${limit.rate} new sessions a second ` +
        `(${setting}.rate, burst ${burst}), found more`;
    } else {
      if (limit.rate) e.tokens -= 1;
      e.active++;
    }
    this.#entries.set(key, e);
    this.#evict();
    return reason;
  }

  /** Ends one session admitted for `key`. */
  release(key: string): void {
    const e = this.#entries.get(key);
    if (e && e.active > 0) e.active--;
  }

  /** Sessions open for `key`. */
  open(key: string): number {
    return this.#entries.get(key)?.active ?? 0;
  }

  /** Keys kept now (open sessions or a rate budget in use). */
  get size(): number {
    return this.#entries.size;
  }

  #evict(): void {
    if (this.#entries.size <= this.#maxKeys) return;
    for (const [key, e] of this.#entries) {
      if (e.active === 0) {
        this.#entries.delete(key);
        if (this.#entries.size <= this.#maxKeys) return;
      }
    }
  }
}
