/**
 * Counters and latency histograms the gateway keeps since it started, for
 * logs, the admin API and Prometheus. Updated once per session event, never
 * per relayed chunk.
 *
 * @module
 */

import type { Protocol, RelayType } from "./session.ts";

/** A cumulative histogram with fixed upper bounds, in seconds. */
export interface Histogram {
  /** Upper bounds of the buckets, ascending (the `+Inf` bucket is implied). */
  readonly bounds: readonly number[];
  /** Observations per bucket (not cumulative); one more entry for `+Inf`. */
  readonly counts: number[];
  /** Sum of all observations. */
  sum: number;
  /** Number of observations. */
  count: number;
}

/** Latency buckets from 0.5 ms to 10 s. */
const LATENCY_BOUNDS = [
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
  5,
  10,
];

/** Creates an empty latency histogram. */
export function newHistogram(bounds: readonly number[] = LATENCY_BOUNDS): Histogram {
  return { bounds, counts: new Array(bounds.length + 1).fill(0), sum: 0, count: 0 };
}

/** Records one observation of `seconds`. */
export function observe(h: Histogram, seconds: number): void {
  let i = 0;
  while (i < h.bounds.length && seconds > h.bounds[i]) i++;
  h.counts[i]++;
  h.sum += seconds;
  h.count++;
}

/** Session commands, as counted. */
export type CommandName = "connect" | "bind" | "udp" | "other";

/** Counters since start. */
export interface GatewayStats {
  /** Sessions accepted. */
  sessionsTotal: number;
  /** Clients closed at once because `maxSessions` was reached or the gateway was stopping. */
  sessionsRejected: number;
  /**
   * Times the accept loop waited because `maxHandshakes` handshakes were
   * under way (the next clients stayed in the kernel's accept queue).
   */
  acceptsHeld: number;
  /**
   * Failed accepts: mostly clients that reset their connection while it
   * waited in the accept queue, else errors such as running out of file
   * descriptors.
   */
  acceptErrors: number;
  /** Sessions by the protocol of their first byte (`other`: unknown or not enabled). */
  sessionsByProtocol: Record<Protocol | "other", number>;
  /** Sessions whose request was read, by command. */
  sessionsByCommand: Record<CommandName, number>;
  /** Relays that were established, by RFC 3089 type. */
  relaysByType: Record<RelayType, number>;
  /** Bytes of closed sessions, by type: `up` is client -> destination. */
  bytesByType: Record<RelayType, { up: number; down: number }>;
  /** Replies sent, by reply code (0 = succeeded). */
  replies: Record<number, number>;
  /** Failed RFC 1929 logins. */
  authFailures: number;
  /** PROXY protocol headers applied, and connections closed over one (bad, missing, untrusted). */
  proxyHeaders: { accepted: number; rejected: number };
  /** Requests denied by the rules. */
  ruleDenials: number;
  /** Name lookups made by the gateway. */
  dnsLookups: number;
  /** Name lookups that failed. */
  dnsFailures: number;
  /** UDP ASSOCIATE datagrams: relayed each way, and dropped (malformed, fragmented, wrong source). */
  udp: { fromClients: number; toClients: number; dropped: number };
  /** Accept to complete request, seconds. */
  handshakeSeconds: Histogram;
  /** Complete request to connected (resolution included), seconds. */
  connectSeconds: Histogram;
}

/** Creates zeroed statistics. */
export function newStats(): GatewayStats {
  return {
    sessionsTotal: 0,
    sessionsRejected: 0,
    acceptsHeld: 0,
    acceptErrors: 0,
    sessionsByProtocol: { socks5: 0, socks4: 0, http: 0, other: 0 },
    sessionsByCommand: { connect: 0, bind: 0, udp: 0, other: 0 },
    relaysByType: { A: 0, B: 0, C: 0, D: 0 },
    bytesByType: {
      A: { up: 0, down: 0 },
      B: { up: 0, down: 0 },
      C: { up: 0, down: 0 },
      D: { up: 0, down: 0 },
    },
    replies: {},
    authFailures: 0,
    proxyHeaders: { accepted: 0, rejected: 0 },
    ruleDenials: 0,
    dnsLookups: 0,
    dnsFailures: 0,
    udp: { fromClients: 0, toClients: 0, dropped: 0 },
    handshakeSeconds: newHistogram(),
    connectSeconds: newHistogram(),
  };
}
