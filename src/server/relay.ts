/**
 * The byte relay: two pumps, one per direction, each reading into a pooled
 * buffer and writing it out before reading again (backpressure comes for
 * free: a slow reader stops the writer, which stops the reads). Buffers are
 * sized by the traffic: a quiet connection holds a 512-byte buffer, one that
 * keeps filling its buffer moves up to 16, 64 and 256 KiB, and back down
 * when reads get small. FIN is forwarded as FIN. The relay never closes the
 * sockets itself: it asks its owner to, once, on failure, and calls back
 * once both directions have ended (no promise is held per relay).
 *
 * Bandwidth limits are optional, per direction: a list of
 * {@linkcode TokenBucket}s (per user, per client address; shared between
 * sessions) that every chunk is taken from before it is written, waiting as
 * long as the slowest bucket says. A limited direction keeps its buffer at
 * most as large as the smallest burst, so that one chunk never puts a bucket
 * deep into debt. A relay without limits takes the same path as before the
 * feature, plus one check per chunk.
 *
 * @module
 */

import type { RelayConn } from "./dialer.ts";
import { takeAll, type TokenBucket } from "../policy/bandwidth.ts";
import { giveBuffer, takeBuffer, TIERS } from "../io/buffer_pool.ts";

/** Counters a relay updates while it runs, shared with its session. */
export interface RelayStats {
  /** Bytes from the client to the destination. */
  bytesUp: number;
  /** Bytes from the destination to the client. */
  bytesDown: number;
  /** Set on every chunk; the idle sweeper clears it. */
  active: boolean;
}

/**
 * Bandwidth limits of one relay, per direction: every chunk is taken from
 * every bucket of its direction. Empty or missing lists are no limit.
 *
 * @example
 * ```ts
 * import { TokenBucket } from "../policy/bandwidth.ts";
 * import type { RelayLimits } from "./relay.ts";
 * const alice = new TokenBucket({ rate: 1_000_000 }); // shared by alice's sessions
 * const limits: RelayLimits = { up: [alice], down: [alice] };
 * ```
 */
export interface RelayLimits {
  /** Buckets for client-to-destination bytes. */
  up?: readonly TokenBucket[];
  /** Buckets for destination-to-client bytes. */
  down?: readonly TokenBucket[];
}

/** The largest tier whose buffer fits in the smallest burst of `buckets` (at least tier 0). */
function maxTierFor(buckets: readonly TokenBucket[]): number {
  let burst = Infinity;
  for (const b of buckets) burst = Math.min(burst, b.burst);
  let tier = 0;
  while (tier < TIERS.length - 1 && TIERS[tier + 1] <= burst) tier++;
  return tier;
}

/**
 * Shared by the two pumps of one relay: counts the directions that have
 * ended and calls back once both have. Callbacks, not promises: an idle
 * relay then holds no promise chain (promises, reactions and their closures
 * were a third of an idle relay's heap).
 */
class RelayState {
  readonly stats: RelayStats;
  /** Directions that have reached EOF. */
  ended = 0;
  /** Directions that have finished, by EOF or by error. */
  finished = 0;
  reason = "done";
  #options: RelayOptions;
  // Fields, not an array literal (see ClientAddr in session.ts).
  up?: Pump;
  down?: Pump;

  constructor(options: RelayOptions) {
    this.stats = options.stats;
    this.#options = options;
  }

  /** One direction is over (`error` when it failed). */
  finish(error?: unknown): void {
    if (error !== undefined && this.reason === "done") {
      this.reason = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
      this.#options.fail(this.reason);
      if (this.#options.limits !== undefined) {
        this.up?.stop(error);
        this.down?.stop(error);
      }
    }
    if (++this.finished === 2) this.#options.onEnd(this.reason);
  }
}

/**
 * One direction of a relay, as a chain of callbacks rather than an async
 * function: an idle relay then holds no suspended generator frames, which
 * matters when thousands of them sit quiet.
 */
class Pump {
  #src: RelayConn;
  #dst: RelayConn;
  #state: RelayState;
  #up: boolean;
  #tier = 0;
  #buf = takeBuffer(0);
  #small = 0; // consecutive reads that used under a quarter of the buffer
  #n = 0;
  #off = 0;
  #maxTier: number = TIERS.length - 1;
  /** Set only on a limited direction. */
  #limit: readonly TokenBucket[] | undefined;
  /** The pending wait of a limited direction, if any. */
  #timer: ReturnType<typeof setTimeout> | undefined;
  #over = false;
  /** Whether the pending I/O is the write (else the read). */
  #writing = false;

  constructor(
    src: RelayConn,
    dst: RelayConn,
    state: RelayState,
    up: boolean,
    limit: readonly TokenBucket[] | undefined,
  ) {
    this.#src = src;
    this.#dst = dst;
    this.#state = state;
    this.#up = up;
    if (limit !== undefined && limit.length > 0) {
      this.#limit = limit;
      this.#maxTier = maxTierFor(limit);
    }
  }

  #read(): void {
    this.#writing = false;
    this.#src.read(this.#buf).then(this.#next, this.#onError);
  }

  /**
   * The one fulfilment callback of both the pending read and the pending
   * write (one I/O is pending at a time): a closure per pump is 56 bytes of
   * every idle relay.
   */
  #next = (n: number | null): void => {
    if (this.#writing) this.#wrote(n!);
    else this.#got(n);
  };

  #got(n: number | null): void {
    if (n === null) return this.#end();
    const stats = this.#state.stats;
    stats.active = true;
    if (this.#up) stats.bytesUp += n;
    else stats.bytesDown += n;
    this.#n = n;
    this.#off = 0;
    if (this.#limit !== undefined) return this.#throttle(n);
    this.#write();
  }

  /** A limited direction: takes `n` bytes from its buckets, and writes when they allow. */
  #throttle(n: number): void {
    const wait = takeAll(this.#limit!, n, performance.now());
    if (wait <= 0) return this.#write();
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#write();
    }, wait);
  }

  /** Ends a wait for bandwidth (the relay failed): the direction ends with `error`. */
  stop(error: unknown): void {
    if (this.#timer === undefined) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#onError(error);
  }

  #write(): void {
    const buf = this.#buf;
    const chunk = this.#off === 0 && this.#n === buf.length
      ? buf
      : buf.subarray(this.#off, this.#n);
    this.#writing = true;
    this.#dst.write(chunk).then(this.#next, this.#onError);
  }

  #wrote(written: number): void {
    this.#off += written;
    if (this.#off < this.#n) return this.#write();
    // Size the buffer to the traffic: up a tier when a read filled it, down
    // after two reads that used under a quarter of it.
    const size = this.#buf.length;
    if (this.#n === size && this.#tier < this.#maxTier) {
      giveBuffer(this.#tier, this.#buf);
      this.#buf = takeBuffer(++this.#tier);
      this.#small = 0;
    } else if (this.#tier > 0 && this.#n < size >> 2 && ++this.#small >= 2) {
      giveBuffer(this.#tier, this.#buf);
      this.#buf = takeBuffer(--this.#tier);
      this.#small = 0;
    }
    this.#read();
  }

  #onError = (error: unknown): void => {
    this.#release();
    this.#done(error ?? new Error("the relay failed"));
  };

  /** Starts the first read. */
  start(): void {
    this.#read();
  }

  /** Tells the relay this direction is over, once. */
  #done(error?: unknown): void {
    if (this.#over) return;
    this.#over = true;
    this.#state.finish(error);
  }

  #release(): void {
    giveBuffer(this.#tier, this.#buf);
    this.#buf = EMPTY;
  }

  #end(): void {
    this.#release();
    // The first direction to end half-closes the other socket; the second
    // needs no shutdown(2): the sockets are closed right after, which sends FIN.
    if (++this.#state.ended === 1) {
      this.#dst.closeWrite().then(() => this.#done(), () => this.#done());
    } else this.#done();
  }
}

const EMPTY = new Uint8Array(0);

/**
 * What {@linkcode startRelay} needs besides the two connections.
 *
 * @example
 * ```ts ignore
 * import type { RelayOptions } from "./relay.ts";
 * const options: RelayOptions = {
 *   stats: { bytesUp: 0, bytesDown: 0, active: false },
 *   fail: () => { client.close(); target.close(); },
 *   onEnd: (reason) => console.log("relay over:", reason),
 * };
 * ```
 */
export interface RelayOptions {
  /** Counters the relay updates. */
  stats: RelayStats;
  /** Called once, on the first failure: must close both connections. */
  fail: (reason: string) => void;
  /** Bandwidth limits per direction. */
  limits?: RelayLimits;
  /** Called once, when both directions have ended: `"done"`, or the first error. */
  onEnd: (reason: string) => void;
}

/**
 * Relays between `client` and `target` until both directions have ended, or
 * until one fails, in which case `options.fail` is called (once) and must
 * close both connections so that the other direction ends too. Then calls
 * `options.onEnd` with a close reason: `"done"` when both sides closed
 * cleanly, else the first error. With `limits`, each direction is held to
 * its buckets (see {@linkcode RelayLimits}); a failure also ends a
 * direction that is waiting for bandwidth. The gateway's sessions use this
 * form: it keeps no promise per relay.
 *
 * @example
 * ```ts ignore
 * import { startRelay } from "./relay.ts";
 * startRelay(clientConn, targetConn, {
 *   stats: { bytesUp: 0, bytesDown: 0, active: false },
 *   fail: () => { clientConn.close(); targetConn.close(); },
 *   onEnd: (reason) => console.log(reason),
 * });
 * ```
 */
export function startRelay(client: RelayConn, target: RelayConn, options: RelayOptions): void {
  const state = new RelayState(options);
  const up = new Pump(client, target, state, true, options.limits?.up);
  const down = new Pump(target, client, state, false, options.limits?.down);
  state.up = up;
  state.down = down;
  up.start();
  down.start();
}

/**
 * {@linkcode startRelay} as a promise: resolves to the close reason once
 * both directions have ended. Never rejects.
 *
 * @example
 * ```ts ignore
 * import { relay } from "./relay.ts";
 * const stats = { bytesUp: 0, bytesDown: 0, active: false };
 * const reason = await relay(clientConn, targetConn, stats, () => {
 *   clientConn.close();
 *   targetConn.close();
 * });
 * ```
 *
 * @example With a download limit shared by every session of a user
 * ```ts ignore
 * import { relay } from "./relay.ts";
 * import { TokenBucket } from "../policy/bandwidth.ts";
 * const alice = new TokenBucket({ rate: 1_000_000, burst: 64 * 1024 });
 * await relay(clientConn, targetConn, stats, close, { down: [alice] });
 * ```
 */
export function relay(
  client: RelayConn,
  target: RelayConn,
  stats: RelayStats,
  fail: (reason: string) => void,
  limits?: RelayLimits,
): Promise<string> {
  return new Promise((onEnd) => startRelay(client, target, { stats, fail, limits, onEnd }));
}
