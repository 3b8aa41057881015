/**
 * Accept admission: how many sessions may be in their handshake at once.
 *
 * One event loop serves every session. When hundreds of clients connect at
 * once and all are accepted, every step of every handshake waits behind all
 * the others, in no particular order: the median handshake gets slower and
 * the slowest ones much slower. While the gateway is busy, leaving the
 * surplus in the kernel's accept queue (first in, first out) until a
 * handshake finishes serves clients in arrival order and keeps the loop's
 * work small.
 *
 * The gate must never hold clients back because of sessions that wait on the
 * network (a slow client, a distant destination, a client that sends
 * nothing): a handshake stops counting after {@linkcode IDLE_GRACE_MS} while
 * the process has CPU to spare, and after {@linkcode BUSY_GRACE_MS} while it
 * is busy. With the default limits, holding the gate shut takes an attacker
 * 32 new connections every 50 ms (640 a second), while filling the session
 * limit takes 1,024 connections per 10 s handshake timeout (about 100 a
 * second): the gate adds no cheaper attack. A gate that holds back too much
 * frees CPU, and so opens itself.
 *
 * @module
 */

import process from "node:process";

/** A handshake stops counting after this many ms while the CPU has room. */
export const IDLE_GRACE_MS = 5;
/** A handshake stops counting after this many ms while the gateway is busy. */
export const BUSY_GRACE_MS = 50;
/** Busy: the process used at least this share of one CPU over the last window. */
const BUSY_SHARE = 0.8;
/** How often (ms) the CPU share is sampled, at most. */
const SAMPLE_MS = 5;

/** CPU share of this process over the last sample window (1 = one CPU). */
class CpuMeter {
  #at = performance.now();
  #cpuUs = cpuMicros();
  #busy = false;

  busy(now: number): boolean {
    const wall = now - this.#at;
    if (wall >= SAMPLE_MS) {
      const cpu = cpuMicros();
      this.#busy = (cpu - this.#cpuUs) / 1000 >= BUSY_SHARE * wall;
      this.#at = now;
      this.#cpuUs = cpu;
    }
    return this.#busy;
  }
}

function cpuMicros(): number {
  const { user, system } = process.cpuUsage();
  return user + system;
}

/** Limits concurrent handshakes; see the module documentation. */
export class HandshakeGate {
  /** Sessions in their handshake that still count: id -> admit time. */
  #counted = new Map<number, number>();
  #waiters: (() => void)[] = [];
  /** One timer at a time wakes the waiters to look again. */
  #timer: ReturnType<typeof setTimeout> | undefined;
  #busy: (now: number) => boolean;
  #idleGrace: number;
  #busyGrace: number;
  /**
   * At most this many counted handshakes, plus one per further accept loop
   * (each loop passes the gate, then waits for its next client); 0 means no
   * limit.
   */
  limit: number;

  /**
   * `options` are for tests: `busy` replaces the CPU meter (whether the
   * gateway counts as busy at `performance.now()` time `now`), and the grace
   * times replace {@linkcode IDLE_GRACE_MS} and {@linkcode BUSY_GRACE_MS}.
   */
  constructor(
    limit: number,
    options: { busy?: (now: number) => boolean; idleGraceMs?: number; busyGraceMs?: number } = {},
  ) {
    this.limit = limit;
    this.#idleGrace = options.idleGraceMs ?? IDLE_GRACE_MS;
    this.#busyGrace = options.busyGraceMs ?? BUSY_GRACE_MS;
    if (options.busy) this.#busy = options.busy;
    else {
      const meter = new CpuMeter();
      this.#busy = (now) => meter.busy(now);
    }
  }

  /** `true` when a new session would have to wait (before expiring slow handshakes). */
  get shut(): boolean {
    return this.limit > 0 && this.#counted.size >= this.limit;
  }

  /** Handshakes that count against the limit now. */
  get size(): number {
    return this.#counted.size;
  }

  /**
   * Resolves when one more session may be accepted, or once `cancelled()`
   * is true after a {@linkcode HandshakeGate.wakeAll}: `true` when it had
   * to wait.
   */
  async ready(cancelled?: () => boolean): Promise<boolean> {
    let waited = false;
    while (this.limit > 0 && this.#counted.size >= this.limit && !cancelled?.()) {
      const now = performance.now();
      const grace = this.#busy(now) ? this.#busyGrace : this.#idleGrace;
      const next = this.#expire(now, grace);
      if (this.#counted.size < this.limit) return waited;
      if (this.#timer === undefined) {
        // Look again when the oldest would expire, and at least every sample
        // window, since the CPU share decides the grace time.
        this.#timer = setTimeout(() => {
          this.#timer = undefined;
          this.wakeAll();
        }, Math.min(next, SAMPLE_MS));
      }
      waited = true;
      await new Promise<void>((resolve) => this.#waiters.push(resolve));
    }
    return waited;
  }

  /** Counts a session that was just accepted. */
  admit(id: number): void {
    if (this.limit > 0) this.#counted.set(id, performance.now());
  }

  /** The session's handshake is over (replied, failed or ended): it stops counting. */
  release(id: number): void {
    if (this.#counted.delete(id)) this.wakeAll();
  }

  /** Wakes every waiter to look again (at its `cancelled`, when stopping). */
  wakeAll(): void {
    if (this.#waiters.length === 0) return;
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const wake of waiters) wake();
  }

  /** Stops counting handshakes older than `grace`; returns ms until the next would expire. */
  #expire(now: number, grace: number): number {
    // A Map iterates in insertion order: oldest admission first.
    for (const [id, at] of this.#counted) {
      const left = at + grace - now;
      if (left > 0) return Math.ceil(left);
      this.#counted.delete(id);
    }
    return grace;
  }
}
