/**
 * Bandwidth limits per client address and per user: one token bucket per
 * key and direction, shared by all of that key's sessions, handed to the
 * relay. A session of a key without a limit gets no bucket, and a relay
 * without buckets takes the relay's unlimited path.
 *
 * @module
 */

import { BandwidthBuckets, type BandwidthLimit, type TokenBucket } from "../policy/bandwidth.ts";
import type { RelayLimits } from "./relay.ts";

/** Bandwidth limits, each applied to each direction separately (bytes per second). */
export interface BandwidthOptions {
  /** Every client address's sessions together. */
  perClient?: BandwidthLimit;
  /** Every user's sessions together (authenticated sessions only). */
  perUser?: BandwidthLimit;
}

/** What one session holds: its buckets, and the release to call when it ends. */
export interface Shaped {
  /** For the relay. */
  limits: RelayLimits;
  /** Gives the buckets back (once). */
  release(): void;
}

/**
 * The buckets of one gateway.
 *
 * @example
 * ```ts
 * import { Shaping } from "./shaping.ts";
 * const shaping = new Shaping({ perUser: { rate: 1_000_000 } });
 * const held = shaping.acquire("192.0.2.7", "alice");
 * held?.release();
 * ```
 */
export class Shaping {
  #clientUp?: BandwidthBuckets;
  #clientDown?: BandwidthBuckets;
  #userUp?: BandwidthBuckets;
  #userDown?: BandwidthBuckets;

  /** Creates the bucket tables for the limits given. */
  constructor(options: BandwidthOptions) {
    const { perClient, perUser } = options;
    if (perClient) {
      this.#clientUp = new BandwidthBuckets(() => perClient);
      this.#clientDown = new BandwidthBuckets(() => perClient);
    }
    if (perUser) {
      this.#userUp = new BandwidthBuckets(() => perUser);
      this.#userDown = new BandwidthBuckets(() => perUser);
    }
  }

  /** The buckets for a session of `client` (and `user`), or `undefined` when none applies. */
  acquire(client: string, user?: string): Shaped | undefined {
    const held = [
      this.#clientUp?.acquire(client),
      this.#clientDown?.acquire(client),
      user === undefined ? null : this.#userUp?.acquire(user),
      user === undefined ? null : this.#userDown?.acquire(user),
    ];
    const up: TokenBucket[] = [];
    const down: TokenBucket[] = [];
    held.forEach((h, i) => {
      if (h) (i % 2 === 0 ? up : down).push(h.bucket);
    });
    if (up.length === 0 && down.length === 0) return undefined;
    return {
      limits: { up, down },
      release: () => {
        for (const h of held) h?.release();
      },
    };
  }
}
