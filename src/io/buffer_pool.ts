/**
 * Pooled byte buffers for the session path, in size tiers. Allocating a
 * typed array of more than a few dozen bytes costs a backing store outside
 * V8's heap (malloc, and work for the collector when it dies); thousands of
 * sessions a second each need a few. The smallest tier is cut from slabs:
 * one allocation per 256 buffers.
 *
 * A buffer taken must be given back at most once, and only when nothing
 * (a pending read, a write) still uses it.
 *
 * @module
 */

/** Buffer sizes, smallest first. */
export const TIERS = [512, 16 * 1024, 64 * 1024, 256 * 1024] as const;
/** Free buffers kept per tier (the largest tier keeps fewest). */
const KEEP = [8192, 512, 64, 16] as const;
const pools: Uint8Array<ArrayBuffer>[][] = TIERS.map(() => []);
/** Smallest buffers are cut from slabs of this many. */
const SLAB = 256;

/**
 * A buffer of `TIERS[tier]` bytes, from the pool when it has one. Its
 * contents are whatever its last user left.
 *
 * @example
 * ```ts
 * import { giveBuffer, takeBuffer } from "./buffer_pool.ts";
 * const buf = takeBuffer(0); // 512 bytes
 * giveBuffer(0, buf); // once done with it
 * ```
 */
export function takeBuffer(tier: number): Uint8Array<ArrayBuffer> {
  const buf = pools[tier].pop();
  if (buf) return buf;
  if (tier !== 0) return new Uint8Array(TIERS[tier]);
  const size = TIERS[0];
  const slab = new ArrayBuffer(size * SLAB);
  for (let i = 1; i < SLAB; i++) pools[0].push(new Uint8Array(slab, i * size, size));
  return new Uint8Array(slab, 0, size);
}

/**
 * Gives back a buffer taken with {@linkcode takeBuffer} from the same tier.
 *
 * @example
 * ```ts
 * import { giveBuffer, takeBuffer } from "./buffer_pool.ts";
 * giveBuffer(1, takeBuffer(1));
 * ```
 */
export function giveBuffer(tier: number, buf: Uint8Array<ArrayBuffer>): void {
  if (pools[tier].length < KEEP[tier]) pools[tier].push(buf);
}
