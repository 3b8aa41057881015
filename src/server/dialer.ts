/**
 * Outbound connections: the dialer hook, the default dialer (`Deno.connect`,
 * or `node:net` when a source address is configured), and Happy Eyeballs v2
 * (RFC 8305) over an ordered address list.
 *
 * @module
 */

import { connect as nodeConnect, type Socket } from "node:net";
import type { Family } from "../protocol/address.ts";
import { normalizeIp } from "../protocol/address.ts";
import { raceConnection, type ResolvedAddress } from "./resolver.ts";

/**
 * The byte-stream shape the relay needs. `Deno.TcpConn` has it; so does the
 * connection returned by the Socks Lib client, so a dialer can chain to an
 * upstream gateway.
 */
export interface RelayConn {
  /** Reads into `p`; resolves to the byte count, or `null` at EOF. */
  read(p: Uint8Array): Promise<number | null>;
  /** Writes some of `p`; resolves to the byte count written. */
  write(p: Uint8Array): Promise<number>;
  /** Sends FIN: no more writes, reads go on. */
  closeWrite(): Promise<void>;
  /** Closes both directions and releases the socket. */
  close(): void;
  /** The local address of the socket. */
  readonly localAddr: Deno.Addr;
  /** The remote address of the socket. */
  readonly remoteAddr: Deno.Addr;
}

/** Where a dialer connects to: always an IP literal, never a name. */
export interface DialTarget {
  /** The IP literal (no brackets). */
  hostname: string;
  /** The port. */
  port: number;
  /** The family of `hostname`. */
  family: Family;
}

/** Options given to a {@linkcode Dialer}. */
export interface DialOptions {
  /** Aborted when the attempt lost the race, timed out, or the gateway stops. */
  signal: AbortSignal;
  /** The configured source address for this family, if any. */
  localAddress?: string;
}

/** The dialer hook: open one TCP connection to one address. */
export type Dialer = (
  target: DialTarget,
  options: DialOptions,
) => Promise<RelayConn>;

/**
 * The default dialer: `Deno.connect`, or `node:net` with `localAddress`
 * when a source address is configured for the target's family (`Deno.connect`
 * has no option to choose the local address).
 */
export async function defaultDialer(
  target: DialTarget,
  options: DialOptions,
): Promise<RelayConn> {
  if (options.localAddress) return await dialFrom(target, options);
  const conn = await Deno.connect({
    hostname: target.hostname,
    port: target.port,
    signal: options.signal,
  });
  conn.setNoDelay(true);
  return conn;
}

function dialFrom(target: DialTarget, options: DialOptions): Promise<RelayConn> {
  return new Promise((resolve, reject) => {
    const socket = nodeConnect({
      host: target.hostname,
      port: target.port,
      family: target.family,
      localAddress: options.localAddress,
      noDelay: true,
      // A destination's FIN ends only its direction: uploads go on.
      allowHalfOpen: true,
    });
    const onAbort = () => {
      socket.destroy();
      reject(options.signal.reason);
    };
    options.signal.addEventListener("abort", onAbort, { once: true });
    socket.once("error", (error) => {
      options.signal.removeEventListener("abort", onAbort);
      reject(error);
    });
    socket.once("connect", () => {
      options.signal.removeEventListener("abort", onAbort);
      resolve(new NodeSocketConn(socket));
    });
  });
}

function netAddr(host: string | undefined, port: number | undefined): Deno.NetAddr {
  const ip = normalizeIp(host ?? "");
  return { transport: "tcp", hostname: ip?.host ?? host ?? "", port: port ?? 0 };
}

/** Bytes a `node:net` connection may queue before its socket is paused. */
const HIGH_WATER = 512 * 1024;

/** Adapts a connected `node:net` socket to {@linkcode RelayConn}. */
class NodeSocketConn implements RelayConn {
  #socket: Socket;
  /** Chunks received and not yet read; the socket pauses above HIGH_WATER bytes. */
  #queue: Uint8Array[] = [];
  #queued = 0;
  #paused = false;
  #ended = false;
  #error: Error | null = null;
  #wake: (() => void) | null = null;
  readonly localAddr: Deno.NetAddr;
  readonly remoteAddr: Deno.NetAddr;

  constructor(socket: Socket) {
    this.#socket = socket;
    this.localAddr = netAddr(socket.localAddress, socket.localPort);
    this.remoteAddr = netAddr(socket.remoteAddress, socket.remotePort);
    socket.on("data", (chunk: Uint8Array) => {
      this.#queue.push(chunk);
      this.#queued += chunk.length;
      if (this.#queued > HIGH_WATER && !this.#paused) {
        this.#paused = true;
        socket.pause();
      }
      this.#notify();
    });
    socket.on("end", () => {
      this.#ended = true;
      this.#notify();
    });
    socket.on("error", (error) => {
      this.#error = error;
      this.#notify();
    });
    socket.on("close", () => {
      this.#ended = true;
      this.#notify();
    });
  }

  #notify() {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  async read(p: Uint8Array): Promise<number | null> {
    while (this.#queued === 0) {
      if (this.#error) throw this.#error;
      if (this.#ended) return null;
      await new Promise<void>((r) => (this.#wake = r));
    }
    // Copy as many queued chunks as fit: fewer reads, fewer relay turns.
    let n = 0;
    while (n < p.length && this.#queue.length > 0) {
      const chunk = this.#queue[0];
      const take = Math.min(chunk.length, p.length - n);
      p.set(take === chunk.length ? chunk : chunk.subarray(0, take), n);
      n += take;
      if (take === chunk.length) this.#queue.shift();
      else this.#queue[0] = chunk.subarray(take);
    }
    this.#queued -= n;
    if (this.#paused && this.#queued < HIGH_WATER / 2) {
      this.#paused = false;
      this.#socket.resume();
    }
    return n;
  }

  write(p: Uint8Array): Promise<number> {
    return new Promise((resolve, reject) => {
      this.#socket.write(p, (error) => (error ? reject(error) : resolve(p.length)));
    });
  }

  closeWrite(): Promise<void> {
    return new Promise((resolve) => this.#socket.end(resolve));
  }

  close(): void {
    this.#socket.destroy();
  }
}

/** Options for {@linkcode happyEyeballs}. */
export interface HappyEyeballsOptions {
  /** The dialer to use for each attempt. */
  dial: Dialer;
  /** Delay between attempt starts (RFC 8305 "Connection Attempt Delay"). */
  delay: number;
  /** Ends all attempts. */
  signal: AbortSignal;
  /** Source address per family. */
  localAddress?: { ipv4?: string; ipv6?: string };
}

/**
 * Connects to the first of `addresses` that answers. Attempts start in
 * order, `delay` ms apart or as soon as the previous one fails; the first
 * to connect wins and every other attempt is aborted (and closed if it
 * connects anyway). Rejects with an `AggregateError` of every attempt's
 * error when all fail.
 */
export function happyEyeballs(
  addresses: readonly ResolvedAddress[],
  port: number,
  options: HappyEyeballsOptions,
): Promise<RelayConn> {
  const { dial, delay, signal, localAddress } = options;
  if (addresses.length === 1) {
    // One address (an IP literal, most of the time): no race to run, but a
    // dialer that ignores its signal still cannot outlive the deadline.
    const [a] = addresses;
    const attempt = dial({ hostname: a.address, port, family: a.family }, {
      signal,
      localAddress: a.family === 4 ? localAddress?.ipv4 : localAddress?.ipv6,
    });
    // The default dialer gives its signal to the connect itself: no race needed.
    return dial === defaultDialer ? attempt : raceConnection(attempt, signal);
  }
  return new Promise((resolve, reject) => {
    const attempts: AbortController[] = [];
    const errors: unknown[] = [];
    let next = 0;
    let running = 0;
    let done = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const finish = (winner?: AbortController) => {
      done = true;
      clearTimeout(timer);
      signal.removeEventListener("abort", onAbort);
      for (const a of attempts) if (a !== winner) a.abort();
    };
    const onAbort = () => {
      if (done) return;
      finish();
      reject(signal.reason);
    };
    const start = () => {
      clearTimeout(timer);
      if (done || next >= addresses.length) return;
      const a = addresses[next++];
      const controller = new AbortController();
      attempts.push(controller);
      running++;
      dial(
        { hostname: a.address, port, family: a.family },
        {
          signal: controller.signal,
          localAddress: a.family === 4 ? localAddress?.ipv4 : localAddress?.ipv6,
        },
      ).then((conn) => {
        running--;
        if (done) {
          try {
            conn.close();
          } catch { /* already closed */ }
          return;
        }
        finish(controller);
        resolve(conn);
      }, (error) => {
        running--;
        errors.push(error);
        if (done) return;
        if (next < addresses.length) start();
        else if (running === 0) {
          finish();
          reject(new AggregateError(errors, "every connection attempt failed"));
        }
      });
      if (next < addresses.length) timer = setTimeout(start, delay);
    };
    if (signal.aborted) return reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    start();
  });
}
