/**
 * The byte relay: two pumps, one per direction, each reading into a pooled
 * buffer and writing it out before reading again (backpressure comes for
 * free: a slow reader stops the writer, which stops the reads). A quiet
 * connection holds a small buffer; one that fills its buffer gets a large
 * one. FIN is forwarded as FIN; both sockets are closed at the end.
 *
 * @module
 */

import type { RelayConn } from "./dialer.ts";

const SMALL = 16 * 1024;
const LARGE = 256 * 1024;

/** Free buffers by size, so that relays do not allocate per connection or chunk. */
class BufferPool {
  #free: Uint8Array[] = [];
  readonly size: number;
  readonly max: number;
  constructor(size: number, max: number) {
    this.size = size;
    this.max = max;
  }
  get(): Uint8Array {
    return this.#free.pop() ?? new Uint8Array(this.size);
  }
  put(buf: Uint8Array): void {
    if (this.#free.length < this.max) this.#free.push(buf);
  }
}

const small = new BufferPool(SMALL, 512);
const large = new BufferPool(LARGE, 16);

function release(buf: Uint8Array): void {
  (buf.length === LARGE ? large : small).put(buf);
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

async function pump(
  src: RelayConn,
  dst: RelayConn,
  stats: RelayStats,
  up: boolean,
): Promise<void> {
  let buf = small.get();
  try {
    while (true) {
      const n = await src.read(buf);
      if (n === null) break;
      stats.active = true;
      if (up) stats.bytesUp += n;
      else stats.bytesDown += n;
      let off = 0;
      while (off < n) {
        off += await dst.write(off === 0 && n === buf.length ? buf : buf.subarray(off, n));
      }
      if (n === buf.length && buf.length === SMALL) {
        small.put(buf);
        buf = large.get();
      } else if (n < SMALL / 2 && buf.length === LARGE) {
        large.put(buf);
        buf = small.get();
      }
    }
  } finally {
    release(buf);
  }
  // A peer that already reset makes shutdown(2) fail; the other pump reports it.
  await dst.closeWrite().catch(() => {});
}

function closeQuietly(conn: RelayConn): void {
  try {
    conn.close();
  } catch { /* already closed */ }
}

/**
 * Relays between `client` and `target` until both directions have ended, or
 * until one fails. Resolves to a close reason (`"done"` when both sides
 * closed cleanly, else the first error's message). Never rejects; both
 * connections are closed when it resolves.
 *
 * @example
 * ```ts
 * import { relay } from "./relay.ts";
 * // const reason = await relay(clientConn, targetConn, { bytesUp: 0, bytesDown: 0, active: false });
 * ```
 */
export async function relay(
  client: RelayConn,
  target: RelayConn,
  stats: RelayStats,
): Promise<string> {
  let reason = "done";
  const fail = (error: unknown) => {
    if (reason === "done") {
      reason = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
    }
    closeQuietly(client);
    closeQuietly(target);
  };
  await Promise.all([
    pump(client, target, stats, true).catch(fail),
    pump(target, client, stats, false).catch(fail),
  ]);
  closeQuietly(client);
  closeQuietly(target);
  return reason;
}
