/**
 * Opening a SOCKS session: the first gateway's TCP connection and the
 * handshake with the whole chain, honouring `signal` and `timeout`; and
 * client failover (issue 16): a hop may list alternative gateways, a
 * gateway that refuses, times out or fails the handshake is skipped and
 * remembered as down for a short time, and when every choice failed the
 * error names each gateway and why.
 *
 * @module
 */

import { BufferedReader } from "../io/buffered_reader.ts";
import type { SocksReply } from "../protocol/codec.ts";
import {
  formatTarget,
  parseHops,
  parseTarget,
  type SocksGateway,
  type SocksTarget,
  type SocksTargetInit,
  type SocksVia,
} from "./address.ts";
import {
  AllGatewaysFailedError,
  GatewayUnreachableError,
  SocksAuthError,
  SocksClosedError,
  SocksProtocolError,
  SocksReplyError,
  SocksTimeoutError,
  UnmappedFakeAddressError,
} from "./errors.ts";
import type { FakeDns } from "./fake_dns.ts";
import { type HandshakeProgress, negotiate, type RequestSpec } from "./handshake.ts";

// The original, captured before `socksify` can replace it.
const denoConnect = Deno.connect;

/** How long a failed gateway is skipped by default, in milliseconds. */
export const DEFAULT_DOWN_FOR_MS = 30_000;

/** Options of {@linkcode open} (and so of `connect`, `bind`, `udpAssociate`). */
export interface DialOptions {
  /**
   * The gateway URL, or the chain of hops in traversal order:
   * `socks5://[user:password@]host[:port]` (`socks5h://` is accepted and
   * means the same: target names are always resolved by the gateway, never
   * locally). IPv6 hosts go in brackets. The port defaults to 1080. A hop
   * may be a list of alternative gateways: they are tried in order, those
   * that failed recently last (see `downFor`).
   *
   * @example
   * ```ts
   * const via = [
   *   ["socks5://[2001:db8::1]:1080", "socks5://[2001:db8::2]:1080"], // either of two
   *   "socks5://user:pass@192.0.2.7:1080", // then this one
   * ];
   * ```
   */
  via: SocksVia;
  /** Aborts the attempt (until the handshake is complete); rejects with the signal's reason. */
  signal?: AbortSignal;
  /**
   * The deadline, in milliseconds, for reaching the first gateway and
   * completing the handshake with the whole chain. With alternatives, each
   * attempt (one choice of gateway per hop) gets this deadline. None by
   * default.
   */
  timeout?: number;
  /**
   * How long, in milliseconds, a gateway that failed (refused, unreachable,
   * timed out, closed or garbled the handshake, refused the login) is tried
   * only after its alternatives. Shared by the whole process; 0 does not
   * remember failures.
   *
   * @default {30000}
   */
  downFor?: number;
  /**
   * The mapping table of fake addresses: when the target host is one of its
   * fake addresses, the mapped name is sent instead (and the entry is pinned
   * for the life of the connection). An unmapped fake address fails with
   * {@linkcode UnmappedFakeAddressError} before any connection is made.
   */
  fakeDns?: FakeDns;
}

/** @internal A finished handshake on a raw connection. */
export interface Opened {
  conn: Deno.TcpConn;
  reader: BufferedReader;
  reply: SocksReply;
  target: SocksTarget;
  gateways: SocksGateway[];
  release?: () => void;
}

/** Gateways that failed recently: display -> until when (performance.now()). */
const down = new Map<string, number>();

function isDown(gw: SocksGateway, now: number): boolean {
  const until = down.get(gw.display);
  if (until === undefined) return false;
  if (until > now) return true;
  down.delete(gw.display);
  return false;
}

/**
 * Forgets every gateway remembered as down (for tests, or after a network
 * change).
 *
 * @example
 * ```ts
 * import { resetGatewayHealth } from "./dial.ts";
 * resetGatewayHealth();
 * ```
 */
export function resetGatewayHealth(): void {
  down.clear();
}

/**
 * The gateways currently remembered as down, as `HOST:PORT`.
 *
 * @example
 * ```ts
 * import { gatewaysDown } from "./dial.ts";
 * gatewaysDown(); // [] when nothing failed lately
 * ```
 */
export function gatewaysDown(): string[] {
  const now = performance.now();
  return [...down.keys()].filter((k) => down.get(k)! > now);
}

/** Alternatives in trying order: up ones as listed, then down ones as listed. */
function order(alternatives: SocksGateway[]): SocksGateway[] {
  const now = performance.now();
  const up = alternatives.filter((g) => !isDown(g, now));
  return [...up, ...alternatives.filter((g) => !up.includes(g))];
}

/**
 * Which hop's gateway a failure is due to, or -1 when it is not a gateway's
 * fault (the last gateway could not reach the target, a local error).
 */
function blame(err: unknown, hops: number): number {
  if (err instanceof GatewayUnreachableError) return 0;
  if (err instanceof SocksReplyError) return err.hop < hops - 1 ? err.hop + 1 : -1;
  if (
    err instanceof SocksTimeoutError || err instanceof SocksClosedError ||
    err instanceof SocksProtocolError || err instanceof SocksAuthError
  ) {
    return err.hop;
  }
  return -1;
}

/**
 * @internal Resolves the fake address, then opens the chain (with failover
 * among each hop's alternatives).
 */
export async function open(
  target: SocksTargetInit,
  options: DialOptions,
  spec?: RequestSpec,
): Promise<Opened> {
  const hops = parseHops(options.via);
  let t = parseTarget(target, { allowPortZero: spec?.allowPortZero });
  const targetText = formatTarget(t);
  options.signal?.throwIfAborted();
  if (options.timeout !== undefined && !(options.timeout > 0)) {
    throw new RangeError(
      `timeout: expected a positive number of milliseconds, found ${options.timeout}`,
    );
  }
  const downFor = options.downFor ?? DEFAULT_DOWN_FOR_MS;
  if (!(downFor >= 0)) {
    throw new RangeError(`downFor: expected milliseconds (0 or more), found ${options.downFor}`);
  }

  let release: (() => void) | undefined;
  const fakeDns = options.fakeDns;
  if (fakeDns?.isFake(t.host)) {
    const name = fakeDns.reverse(t.host);
    if (name === undefined) {
      throw new UnmappedFakeAddressError(t.host, {
        gateway: hops[0][0].display,
        target: targetText,
      });
    }
    release = fakeDns.pin(t.host);
    t = { host: name, port: t.port };
  }

  const ordered = hops.map(order);
  const choice = hops.map(() => 0);
  const failures: { hop: number; gateway: string; error: unknown }[] = [];
  try {
    while (true) {
      const chain = ordered.map((alts, i) => alts[choice[i]]);
      try {
        const opened = await attempt(t, chain, options, spec);
        for (const gw of chain) down.delete(gw.display);
        return { ...opened, release };
      } catch (err) {
        if (options.signal?.aborted) throw err;
        const hop = blame(err, chain.length);
        if (hop < 0) throw err;
        if (downFor > 0) down.set(chain[hop].display, performance.now() + downFor);
        failures.push({ hop, gateway: chain[hop].display, error: err });
        if (++choice[hop] < ordered[hop].length) continue;
        if (failures.length === 1) throw err; // no alternative was listed: the plain error
        throw new AllGatewaysFailedError(failures, { target: formatTarget(t) });
      }
    }
  } catch (err) {
    release?.();
    throw err;
  }
}

/** One try: the first gateway of `gateways`, then the handshake with all. */
async function attempt(
  t: SocksTarget,
  gateways: SocksGateway[],
  options: DialOptions,
  spec?: RequestSpec,
): Promise<Omit<Opened, "release">> {
  const first = gateways[0];
  const controller = new AbortController();
  const progress: HandshakeProgress = { hop: 0 };
  let timer: ReturnType<typeof setTimeout> | undefined;
  let timedOut = false;
  const onUserAbort = () => controller.abort(options.signal!.reason);
  options.signal?.addEventListener("abort", onUserAbort, { once: true });
  if (options.timeout !== undefined) {
    timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, options.timeout);
  }
  const abortError = (): unknown => {
    if (!timedOut) return options.signal?.reason ?? controller.signal.reason;
    const gw = gateways[progress.hop];
    return new SocksTimeoutError(
      `no complete SOCKS handshake within ${options.timeout} ms: gateway ${gw.display} (hop ${
        progress.hop + 1
      } of ${gateways.length}) had not answered for ${formatTarget(t)}`,
      {
        gateway: gw.display,
        target: formatTarget(t),
        hop: progress.hop,
        timeout: options.timeout!,
      },
    );
  };

  try {
    let conn: Deno.TcpConn;
    try {
      conn = await denoConnect({
        hostname: first.host,
        port: first.port,
        signal: controller.signal,
      });
    } catch (err) {
      if (controller.signal.aborted) throw abortError();
      throw new GatewayUnreachableError(
        `could not reach gateway ${first.display} (for ${formatTarget(t)}): ${
          err instanceof Error ? err.message : String(err)
        }`,
        { gateway: first.display, target: formatTarget(t), cause: err },
      );
    }
    const c = conn;
    const onAbort = () => {
      try {
        c.close();
      } catch {
        // already closed
      }
    };
    controller.signal.addEventListener("abort", onAbort, { once: true });
    // An abort or timeout that landed while the connect was resolving fired
    // before the listener was there: close now, or the handshake below could
    // wait forever on a silent gateway and the socket would be left open.
    if (controller.signal.aborted) onAbort();
    const reader = new BufferedReader(c);
    try {
      const reply = await negotiate(c, reader, { gateways, target: t, spec }, progress);
      if (controller.signal.aborted) throw abortError();
      return { conn: c, reader, reply, target: t, gateways };
    } catch (err) {
      onAbort();
      throw controller.signal.aborted ? abortError() : err;
    } finally {
      controller.signal.removeEventListener("abort", onAbort);
    }
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener("abort", onUserAbort);
  }
}
