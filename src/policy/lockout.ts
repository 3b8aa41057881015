/**
 * Brute-force protection for logins: failed logins from one client are
 * slowed by a growing delay and, past a threshold, locked out for a while.
 *
 * How a client is counted:
 * - IPv4 clients by address (IPv4-mapped IPv6 is IPv4); IPv6 clients by
 *   their /64 by default (`ipv6Prefix`), because one host usually holds a
 *   whole /64 and could otherwise try from 2^64 addresses. The price: hosts
 *   that share a /64 share their failures.
 * - Before an attempt is checked, {@linkcode LoginLockout.begin} gives it a
 *   slot: after `n` failures, attempts are spaced `baseDelay * 2^(n-1)` ms
 *   apart (capped at `maxDelay`), sequential or parallel alike. An attempt
 *   whose slot lies more than `maxDelay` ahead (a flood of parallel tries)
 *   is refused at once without checking the password (`busy`).
 * - At `threshold` failures the client is locked out for `lockout` ms: its
 *   attempts are refused without checking the password (answer them like a
 *   wrong one). The lock ends by itself and the count starts again.
 * - A success resets the client; failures are forgotten `window` ms after
 *   the last one.
 *
 * Memory is bounded however many addresses try: at most `maxEntries`
 * clients with failures and at most `maxEntries` locked clients are kept
 * (the defaults: 10 000 each, a few MiB at most); past that, the least
 * recently failed (or the earliest locked) entry is dropped. Locked clients
 * are kept apart, so a flood of new addresses evicts other failing clients
 * first, not the locks.
 *
 * Pure: no timers, no I/O; the clock is injected for tests.
 *
 * @module
 */

import { formatIPv6, parseIPv6 } from "../protocol/address.ts";
import { unwrapIp } from "./destinations.ts";

/**
 * The settings of a {@linkcode LoginLockout}; every field is optional.
 *
 * @example
 * ```ts
 * import type { LockoutOptions } from "./lockout.ts";
 * const strict: LockoutOptions = { threshold: 5, lockout: 3_600_000 };
 * ```
 */
export interface LockoutOptions {
  /** The delay after the first failure, in ms; default 200. */
  baseDelay?: number;
  /** The largest delay, in ms; default 5000. */
  maxDelay?: number;
  /** Failures that lock a client out; default 10. */
  threshold?: number;
  /** How long a lockout lasts, in ms; default 15 minutes. */
  lockout?: number;
  /** Failures are forgotten this long after the last one, in ms; default 15 minutes. */
  window?: number;
  /** The most clients kept with failures, and the most kept locked; default 10 000. */
  maxEntries?: number;
  /** The prefix length that groups IPv6 clients; default 64, 128 = by address. */
  ipv6Prefix?: number;
  /** The clock, in ms; default `Date.now`. */
  now?: () => number;
}

/**
 * What {@linkcode LoginLockout.begin} says about an attempt: go ahead after
 * `wait` ms, or refuse it without checking (`locked` until `until`, or
 * `busy` with earlier attempts still waiting).
 *
 * @example
 * ```ts
 * import type { LoginGate } from "./lockout.ts";
 * const gate: LoginGate = { refused: false, wait: 0 };
 * ```
 */
export type LoginGate =
  | { refused: false; wait: number }
  | { refused: "locked" | "busy"; until: number };

/**
 * The outcome of a failed login, from {@linkcode LoginLockout.fail}.
 *
 * @example
 * ```ts
 * import type { LoginFailure } from "./lockout.ts";
 * const f: LoginFailure = { key: "192.0.2.1", failures: 3, locked: false, justLocked: false };
 * ```
 */
export interface LoginFailure {
  /** The client key the failure counted for (an address, or an IPv6 prefix). */
  key: string;
  /** Failures counted so far. */
  failures: number;
  /** Whether the client is now locked out. */
  locked: boolean;
  /** Whether this failure locked it: log it once. */
  justLocked: boolean;
}

/**
 * One client in {@linkcode LoginLockout.snapshot}, for the admin API.
 *
 * @example
 * ```ts
 * import type { LockoutEntry } from "./lockout.ts";
 * const e: LockoutEntry = {
 *   client: "2001:db8:1:2::/64",
 *   failures: 10,
 *   lastFailure: 0,
 *   lockedUntil: 900_000,
 * };
 * ```
 */
export interface LockoutEntry {
  /** The client key: an IPv4 address, an IPv6 address or prefix. */
  client: string;
  /** Failures counted. */
  failures: number;
  /** When the last failure happened (the clock's ms). */
  lastFailure: number;
  /** When the lockout ends, or `null` when not locked. */
  lockedUntil: number | null;
}

/**
 * The key a client address is counted under: the IPv4 address (IPv4-mapped
 * and other IPv6 forms of an IPv4 address unwrapped), or the IPv6 address
 * cut to `ipv6Prefix` bits and written as a prefix (`2001:db8:1:2::/64`);
 * 128 keeps the whole IPv6 address. Anything else is its own key.
 *
 * @example
 * ```ts
 * import { clientKey } from "./lockout.ts";
 * clientKey("::ffff:192.0.2.1", 64); // "192.0.2.1"
 * clientKey("2001:db8:1:2:3:4:5:6", 64); // "2001:db8:1:2::/64"
 * clientKey("2001:db8::6", 128); // "2001:db8::6"
 * ```
 */
export function clientKey(address: string, ipv6Prefix: number): string {
  const ip = unwrapIp(address);
  if (!ip) return address;
  if (ip.family === 4 || ipv6Prefix >= 128) return ip.host;
  const b = parseIPv6(ip.host)!;
  for (let i = 0; i < 16; i++) {
    const bits = ipv6Prefix - i * 8;
    b[i] &= bits >= 8 ? 0xff : bits <= 0 ? 0 : (0xff << (8 - bits)) & 0xff;
  }
  return `${formatIPv6(b)}/${ipv6Prefix}`;
}

interface Entry {
  failures: number;
  lastFailure: number;
  nextSlot: number;
  lockedUntil: number;
}

function positive(name: string, value: number | undefined, fallback: number): number {
  const v = value ?? fallback;
  if (!Number.isFinite(v) || v < 0) {
    throw new RangeError(`lockout.${name}: expected a number >= 0, found ${v}`);
  }
  return v;
}

/**
 * Failed-login accounting per client, bounded in memory.
 *
 * @example
 * ```ts
 * import { LoginLockout } from "./lockout.ts";
 * let now = 0;
 * const lockout = new LoginLockout({ threshold: 3, now: () => now });
 * for (let i = 0; i < 3; i++) {
 *   const gate = lockout.begin("192.0.2.7");
 *   if (!gate.refused) now += gate.wait; // wait, check the password: wrong
 *   lockout.fail("192.0.2.7");
 * }
 * lockout.begin("192.0.2.7").refused; // "locked"
 * lockout.begin("192.0.2.8").refused; // false
 * ```
 */
export class LoginLockout {
  readonly #baseDelay: number;
  readonly #maxDelay: number;
  readonly #threshold: number;
  readonly #lockout: number;
  readonly #window: number;
  readonly #maxEntries: number;
  readonly #prefix: number;
  readonly #now: () => number;
  #failing = new Map<string, Entry>();
  #locked = new Map<string, Entry>();
  #lockouts = 0;

  /** Creates the accounting; throws a `RangeError` for a setting out of range. */
  constructor(options: LockoutOptions = {}) {
    this.#baseDelay = positive("baseDelay", options.baseDelay, 200);
    this.#maxDelay = Math.max(this.#baseDelay, positive("maxDelay", options.maxDelay, 5000));
    this.#threshold = positive("threshold", options.threshold, 10);
    this.#lockout = positive("lockout", options.lockout, 15 * 60_000);
    this.#window = positive("window", options.window, 15 * 60_000);
    this.#maxEntries = Math.max(1, Math.floor(positive("maxEntries", options.maxEntries, 10_000)));
    const prefix = options.ipv6Prefix ?? 64;
    if (!Number.isInteger(prefix) || prefix < 32 || prefix > 128) {
      throw new RangeError(`lockout.ipv6Prefix: expected an integer 32-128, found ${prefix}`);
    }
    this.#prefix = prefix;
    this.#now = options.now ?? Date.now;
  }

  /**
   * The key a client address counts under: {@linkcode clientKey} with this
   * accounting's `ipv6Prefix`.
   */
  key(address: string): string {
    return clientKey(address, this.#prefix);
  }

  /** The live entry for `key`, after dropping what has expired. */
  #entry(key: string, now: number): Entry | undefined {
    const locked = this.#locked.get(key);
    if (locked) {
      if (now < locked.lockedUntil) return locked;
      this.#locked.delete(key);
      return undefined;
    }
    const e = this.#failing.get(key);
    if (e && now - e.lastFailure >= this.#window) {
      this.#failing.delete(key);
      return undefined;
    }
    return e;
  }

  #delay(failures: number): number {
    if (failures <= 0) return 0;
    return Math.min(this.#maxDelay, this.#baseDelay * 2 ** Math.min(failures - 1, 40));
  }

  /**
   * Call before checking a password from `address`: whether to check it,
   * and after how many ms. Reserves the attempt's slot.
   */
  begin(address: string): LoginGate {
    const now = this.#now();
    const e = this.#entry(this.key(address), now);
    if (!e) return { refused: false, wait: 0 };
    if (e.lockedUntil > now) return { refused: "locked", until: e.lockedUntil };
    const slot = Math.max(now, e.nextSlot);
    if (slot - now > this.#maxDelay) return { refused: "busy", until: slot };
    e.nextSlot = slot + this.#delay(e.failures);
    return { refused: false, wait: slot - now };
  }

  /** Records a failed login from `address`. */
  fail(address: string): LoginFailure {
    const now = this.#now();
    const key = this.key(address);
    let e = this.#entry(key, now);
    if (e && e.lockedUntil > now) {
      return { key, failures: e.failures, locked: true, justLocked: false };
    }
    if (e) this.#failing.delete(key); // re-inserted below: most recent last
    e ??= { failures: 0, lastFailure: now, nextSlot: now, lockedUntil: 0 };
    e.failures++;
    e.lastFailure = now;
    e.nextSlot = Math.max(e.nextSlot, now + this.#delay(e.failures));
    if (e.failures >= this.#threshold) {
      e.lockedUntil = now + this.#lockout;
      this.#lockouts++;
      this.#insert(this.#locked, key, e);
      return { key, failures: e.failures, locked: true, justLocked: true };
    }
    this.#insert(this.#failing, key, e);
    return { key, failures: e.failures, locked: false, justLocked: false };
  }

  #insert(map: Map<string, Entry>, key: string, e: Entry): void {
    map.set(key, e);
    while (map.size > this.#maxEntries) map.delete(map.keys().next().value!);
  }

  /** Records a successful login from `address`: its failures are forgotten. */
  succeed(address: string): void {
    this.#failing.delete(this.key(address));
  }

  /** The clients locked out now. */
  get lockedCount(): number {
    this.#prune(this.#now());
    return this.#locked.size;
  }

  /** Lockouts since this accounting was made. */
  get lockoutsTotal(): number {
    return this.#lockouts;
  }

  #prune(now: number): void {
    for (const [key, e] of this.#locked) {
      if (e.lockedUntil > now) break; // inserted in lock order, same duration
      this.#locked.delete(key);
    }
  }

  /** Every client with failures or a lock, locked ones first, for the admin API. */
  snapshot(): LockoutEntry[] {
    const now = this.#now();
    this.#prune(now);
    const out: LockoutEntry[] = [];
    for (const [client, e] of this.#locked) {
      out.push({
        client,
        failures: e.failures,
        lastFailure: e.lastFailure,
        lockedUntil: e.lockedUntil,
      });
    }
    for (const [client, e] of this.#failing) {
      if (now - e.lastFailure >= this.#window) continue;
      out.push({ client, failures: e.failures, lastFailure: e.lastFailure, lockedUntil: null });
    }
    return out;
  }
}
