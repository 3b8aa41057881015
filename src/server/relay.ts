/**
 * The byte relay: two pumps, one per direction, each reading into a pooled
 * buffer and writing it out before reading again (backpressure comes for
 * free: a slow reader stops the writer, which stops the reads). Buffers are
 * sized by the traffic: a quiet connection holds a 1 KiB buffer, one that
 * keeps filling its buffer moves up to 16, 64 and 256 KiB, and back down
 * when reads get small. FIN is forwarded as FIN. The relay never closes the
 * sockets itself: it asks its owner to, once, on failure, and returns when
 * both directions have ended.
 *
 * @module
 */

import type { RelayConn } from "./dialer.ts";

/** Buffer sizes, smallest first. */
const TIERS = [1024, 16 * 1024, 64 * 1024, 256 * 1024] as const;
/** Free buffers kept per tier (the largest tier keeps fewest). */
const KEEP = [4096, 512, 64, 16] as const;
const pools: Uint8Array[][] = TIERS.map(() => []);

function take(tier: number): Uint8Array {
  return pools[tier].pop() ?? new Uint8Array(TIERS[tier]);
}

function give(tier: number, buf: Uint8Array): void {
  if (pools[tier].length < KEEP[tier]) pools[tier].push(buf);
}

/** Counters a relay updates while it runs, shared with its session. */
export interface RelayStats {
  /** Bytes from the client to the destination. */
  bytesUp: number;
  /** Bytes from the destination to the client. */
  bytesDown: number;
  /** Set on every chunk; the idle sweeper clears it. */
  active: boolean;
}

/** Shared by the two pumps of one relay. */
interface RelayState {
  stats: RelayStats;
  /** Directions that have reached EOF. */
  ended: number;
}

/**
 * One direction of a relay, as a chain of callbacks rather than an async
 * function: an idle relay then holds no suspended generator frames, which
 * matters when thousands of them sit quiet.
 */
class Pump {
  readonly done: Promise<void>;
  #src: RelayConn;
  #dst: RelayConn;
  #state: RelayState;
  #up: boolean;
  #tier = 0;
  #buf = take(0);
  #small = 0; // consecutive reads that used under a quarter of the buffer
  #n = 0;
  #off = 0;
  #resolve!: () => void;
  #reject!: (error: unknown) => void;

  constructor(src: RelayConn, dst: RelayConn, state: RelayState, up: boolean) {
    this.#src = src;
    this.#dst = dst;
    this.#state = state;
    this.#up = up;
    this.done = new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    this.#read();
  }

  #read(): void {
    this.#src.read(this.#buf).then(this.#onRead, this.#onError);
  }

  #onRead = (n: number | null): void => {
    if (n === null) return this.#end();
    const stats = this.#state.stats;
    stats.active = true;
    if (this.#up) stats.bytesUp += n;
    else stats.bytesDown += n;
    this.#n = n;
    this.#off = 0;
    this.#write();
  };

  #write(): void {
    const buf = this.#buf;
    const chunk = this.#off === 0 && this.#n === buf.length
      ? buf
      : buf.subarray(this.#off, this.#n);
    this.#dst.write(chunk).then(this.#onWrite, this.#onError);
  }

  #onWrite = (written: number): void => {
    this.#off += written;
    if (this.#off < this.#n) return this.#write();
    // Size the buffer to the traffic: up a tier when a read filled it, down
    // after two reads that used under a quarter of it.
    const size = this.#buf.length;
    if (this.#n === size && this.#tier < TIERS.length - 1) {
      give(this.#tier, this.#buf);
      this.#buf = take(++this.#tier);
      this.#small = 0;
    } else if (this.#tier > 0 && this.#n < size >> 2 && ++this.#small >= 2) {
      give(this.#tier, this.#buf);
      this.#buf = take(--this.#tier);
      this.#small = 0;
    }
    this.#read();
  };

  #onError = (error: unknown): void => {
    this.#release();
    this.#reject(error);
  };

  #release(): void {
    give(this.#tier, this.#buf);
    this.#buf = EMPTY;
  }

  #end(): void {
    this.#release();
    // The first direction to end half-closes the other socket; the second
    // needs no shutdown(2): the sockets are closed right after, which sends FIN.
    if (++this.#state.ended === 1) {
      this.#dst.closeWrite().then(this.#resolve, this.#resolve);
    } else this.#resolve();
  }
}

const EMPTY = new Uint8Array(0);

/**
 * Relays between `client` and `target` until both directions have ended, or
 * until one fails, in which case `fail` is called (once) and must close
 * both connections so that the other direction ends too. Resolves to a
 * close reason: `"done"` when both sides closed cleanly, else the first
 * error. Never rejects.
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
 */
export function relay(
  client: RelayConn,
  target: RelayConn,
  stats: RelayStats,
  fail: (reason: string) => void,
): Promise<string> {
  let reason = "done";
  const state: RelayState = { stats, ended: 0 };
  const onError = (error: unknown) => {
    if (reason !== "done") return;
    reason = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    fail(reason);
  };
  return Promise.all([
    new Pump(client, target, state, true).done.catch(onError),
    new Pump(target, client, state, false).done.catch(onError),
  ]).then(() => reason);
}
