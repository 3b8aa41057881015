/**
 * Bandwidth limits: a token bucket of bytes (`rate` bytes a second, up to
 * `burst` bytes at once), pure and clock-injected, that the relay asks
 * before it forwards a chunk. One bucket may be shared by every session of
 * a user or of a client address: each chunk is taken from every bucket that
 * applies, and the relay waits for the slowest.
 *
 * The bucket may go into debt: a chunk larger than what is left is taken
 * whole and the caller is told how long to wait before sending it, so that
 * the long-run rate is `rate` whatever the chunk sizes, and nothing
 * fragments a read to fit the budget.
 *
 * @module
 */

/**
 * The settings of a {@linkcode TokenBucket}.
 *
 * @example
 * ```ts
 * import type { BandwidthLimit } from "./bandwidth.ts";
 * const perUser: BandwidthLimit = { rate: 1_000_000, burst: 256 * 1024 };
 * ```
 */
export interface BandwidthLimit {
  /** Bytes a second, on average; more than 0. */
  rate: number;
  /** Bytes that may go at once when the bucket is full; default `max(64 KiB, rate / 10)`. */
  burst?: number;
}

/**
 * A byte budget that refills at `rate` bytes a second up to `burst` bytes.
 * No timers inside: {@linkcode TokenBucket.take} says how long to wait.
 *
 * @example
 * ```ts
 * import { TokenBucket } from "./bandwidth.ts";
 * const bucket = new TokenBucket({ rate: 1000, burst: 500 }, 0);
 * bucket.take(500, 0); // 0: within the burst
 * bucket.take(250, 0); // 250: 250 bytes of debt at 1000 bytes/s
 * ```
 */
export class TokenBucket {
  /** Bytes a second. */
  readonly rate: number;
  /** The most bytes the bucket holds. */
  readonly burst: number;
  #tokens: number;
  #last: number;

  /**
   * A full bucket; `now` is the clock in milliseconds (default `performance.now()`).
   *
   * @example
   * ```ts
   * import { TokenBucket } from "./bandwidth.ts";
   * const bucket = new TokenBucket({ rate: 2 * 1024 * 1024 });
   * ```
   */
  constructor(limit: BandwidthLimit, now: number = performance.now()) {
    const { rate } = limit;
    if (!(Number.isFinite(rate) && rate > 0)) {
      throw new RangeError(`bandwidth rate: expected bytes per second above 0, found ${rate}`);
    }
    const burst = limit.burst ?? Math.max(64 * 1024, rate / 10);
    if (!(Number.isFinite(burst) && burst >= 1)) {
      throw new RangeError(`bandwidth burst: expected at least 1 byte, found ${burst}`);
    }
    this.rate = rate;
    this.burst = burst;
    this.#tokens = burst;
    this.#last = now;
  }

  /**
   * Takes `n` bytes at time `now` (milliseconds) and returns how many
   * milliseconds the caller must wait before sending them: 0 when the
   * budget covered them. The bytes are taken either way (the budget may go
   * below 0), so callers that share the bucket queue up behind each other.
   *
   * @example
   * ```ts
   * import { TokenBucket } from "./bandwidth.ts";
   * const bucket = new TokenBucket({ rate: 1000, burst: 1000 }, 0);
   * bucket.take(3000, 0); // 2000 ms: the burst covered 1000 bytes
   * ```
   */
  take(n: number, now: number): number {
    this.#refill(now);
    this.#tokens -= n;
    return this.#tokens >= 0 ? 0 : (-this.#tokens * 1000) / this.rate;
  }

  /**
   * The bytes available at `now` (negative while in debt).
   *
   * @example
   * ```ts
   * import { TokenBucket } from "./bandwidth.ts";
   * const bucket = new TokenBucket({ rate: 1000, burst: 100 }, 0);
   * bucket.take(300, 0);
   * bucket.available(100); // -100
   * ```
   */
  available(now: number): number {
    this.#refill(now);
    return this.#tokens;
  }

  #refill(now: number): void {
    const elapsed = now - this.#last;
    if (elapsed <= 0) return; // a clock that went back refills nothing
    this.#last = now;
    this.#tokens = Math.min(this.burst, this.#tokens + (elapsed * this.rate) / 1000);
  }
}

/**
 * Takes `n` bytes from every bucket and returns the longest wait among
 * them, in milliseconds (0 when all had budget).
 *
 * @example
 * ```ts
 * import { takeAll, TokenBucket } from "./bandwidth.ts";
 * const user = new TokenBucket({ rate: 1000, burst: 1000 }, 0);
 * const client = new TokenBucket({ rate: 500, burst: 500 }, 0);
 * takeAll([user, client], 1000, 0); // 1000: the client's bucket is the slower
 * ```
 */
export function takeAll(buckets: readonly TokenBucket[], n: number, now: number): number {
  let wait = 0;
  for (let i = 0; i < buckets.length; i++) {
    const w = buckets[i].take(n, now);
    if (w > wait) wait = w;
  }
  return wait;
}

/**
 * Buckets by key (a user name, a client address), created on first use
 * with the key's limit, so that every session of a key shares one bucket.
 * A key is forgotten when no session holds it: call
 * {@linkcode BandwidthBuckets.acquire} when a session starts and the
 * returned release function when it ends.
 *
 * @example
 * ```ts
 * import { BandwidthBuckets } from "./bandwidth.ts";
 * const perUser = new BandwidthBuckets(() => ({ rate: 1_000_000 }));
 * const held = perUser.acquire("alice");
 * // relay(client, target, stats, fail, { down: held ? [held.bucket] : [] });
 * held?.release();
 * ```
 */
export class BandwidthBuckets {
  #limitFor: (key: string) => BandwidthLimit | undefined;
  #buckets = new Map<string, { bucket: TokenBucket; users: number }>();

  /** `limitFor` gives a key's limit, or `undefined` for no limit. */
  constructor(limitFor: (key: string) => BandwidthLimit | undefined) {
    this.#limitFor = limitFor;
  }

  /** Keys with a bucket held by a session. */
  get size(): number {
    return this.#buckets.size;
  }

  /**
   * The bucket for `key`, shared with the other sessions of `key`, and the
   * function to call once when the session ends; `null` when `key` has no
   * limit.
   */
  acquire(
    key: string,
    now: number = performance.now(),
  ): { bucket: TokenBucket; release: () => void } | null {
    let entry = this.#buckets.get(key);
    if (!entry) {
      const limit = this.#limitFor(key);
      if (!limit) return null;
      entry = { bucket: new TokenBucket(limit, now), users: 0 };
      this.#buckets.set(key, entry);
    }
    entry.users++;
    const held = entry;
    let released = false;
    return {
      bucket: held.bucket,
      release: () => {
        if (released) return;
        released = true;
        if (--held.users === 0 && this.#buckets.get(key) === held) this.#buckets.delete(key);
      },
    };
  }
}
