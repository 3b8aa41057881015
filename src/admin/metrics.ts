/**
 * What the admin API reports about a running gateway: a JSON snapshot of its
 * counters (for the status page and scripts) and the same numbers in the
 * Prometheus text exposition format (version 0.0.4).
 *
 * Byte and relay counters add the live sessions to the closed ones at the
 * moment of the scrape. A session that closes moves its bytes from "live" to
 * "closed" in one synchronous step, so the sums never go backwards.
 *
 * @module
 */

import { joinHostPort } from "../protocol/address.ts";
import { replyText } from "../protocol/constants.ts";
import type { Gateway, SessionInfo } from "../server/gateway.ts";
import type { Protocol, RelayType } from "../server/session.ts";
import type { CommandName, Histogram } from "../server/stats.ts";

const TYPES: readonly RelayType[] = ["A", "B", "C", "D"];
const COMMANDS: readonly CommandName[] = ["connect", "bind", "udp", "other"];
/** Commands that can become relays, always listed in `dualsocks_relays_active`. */
const RELAY_COMMANDS: readonly string[] = ["connect", "bind", "udp"];
const PHASES = ["handshake", "connect", "relay"] as const;

/** Counters of one RFC 3089 relay type. */
export interface TypeSnapshot {
  /** Relays established since start (closed and live). */
  total: number;
  /** Relays running now. */
  active: number;
  /** Bytes client -> destination (closed and live relays). */
  bytesUp: number;
  /** Bytes destination -> client (closed and live relays). */
  bytesDown: number;
}

/**
 * A consistent snapshot of a gateway's counters, as `GET /api/v1/stats`
 * returns it.
 *
 * @example
 * ```ts ignore
 * import { gatewaySnapshot } from "./metrics.ts";
 * const snap = gatewaySnapshot(gateway);
 * console.log(snap.types.C.bytesDown, snap.sessions.active);
 * ```
 */
export interface GatewaySnapshot {
  /** When the snapshot was taken, ms since the epoch. */
  time: number;
  /** When the gateway started, ms since the epoch. */
  startedAt: number;
  /** `true` while shutting down (readiness is 503). */
  draining: boolean;
  /** Which gateway this is, e.g. `gw1/4242` (several may share a port or a balancer). */
  instance: string;
  /** The bound listen addresses, `HOST:PORT`. */
  listen: string[];
  /** Client connections. */
  sessions: {
    /** Accepted since start. */
    total: number;
    /** Closed at once: session limit reached or shutting down. */
    rejected: number;
    /** Times accepting waited for the handshake limit. */
    acceptsHeld: number;
    /** Failed accepts (clients that reset before being accepted, fd exhaustion). */
    acceptErrors: number;
    /** Live now. */
    active: number;
    /** Live now, by phase. */
    byPhase: { handshake: number; connect: number; relay: number };
  };
  /** Requests read, by command. */
  requests: Record<CommandName, number>;
  /** Sessions by front door (`other`: an unknown or disabled protocol). */
  protocols: Record<Protocol | "other", number>;
  /** Relays and bytes by RFC 3089 type. */
  types: Record<RelayType, TypeSnapshot>;
  /** Bytes of every type, each way. */
  bytes: { up: number; down: number };
  /** Replies sent, by reply code. */
  replies: Record<string, number>;
  /** Failed RFC 1929 logins. */
  authFailures: number;
  /** Requests denied by the rules. */
  ruleDenials: number;
  /** Name lookups made by the gateway, and how many failed. */
  dns: { lookups: number; failures: number };
  /** UDP ASSOCIATE datagrams. */
  udp: { fromClients: number; toClients: number; dropped: number };
}

function snapshotFrom(gateway: Gateway, live: SessionInfo[]): GatewaySnapshot {
  const st = gateway.stats;
  const types = {} as Record<RelayType, TypeSnapshot>;
  for (const t of TYPES) {
    types[t] = {
      total: st.relaysByType[t],
      active: 0,
      bytesUp: st.bytesByType[t].up,
      bytesDown: st.bytesByType[t].down,
    };
  }
  const byPhase = { handshake: 0, connect: 0, relay: 0 };
  for (const s of live) {
    if (s.phase in byPhase) byPhase[s.phase as keyof typeof byPhase]++;
    if (!s.type) continue;
    const t = types[s.type];
    t.total++;
    t.active++;
    t.bytesUp += s.bytesUp;
    t.bytesDown += s.bytesDown;
  }
  const replies: Record<string, number> = {};
  for (const [code, n] of Object.entries(st.replies)) replies[code] = n;
  return {
    time: Date.now(),
    startedAt: gateway.startedAt,
    draining: gateway.draining,
    instance: gateway.instance,
    listen: gateway.addrs.map((a) => joinHostPort(a.hostname, a.port)),
    sessions: {
      total: st.sessionsTotal,
      rejected: st.sessionsRejected,
      acceptsHeld: st.acceptsHeld,
      acceptErrors: st.acceptErrors,
      active: live.length,
      byPhase,
    },
    requests: { ...st.sessionsByCommand },
    protocols: { ...st.sessionsByProtocol },
    types,
    bytes: {
      up: TYPES.reduce((n, t) => n + types[t].bytesUp, 0),
      down: TYPES.reduce((n, t) => n + types[t].bytesDown, 0),
    },
    replies,
    authFailures: st.authFailures,
    ruleDenials: st.ruleDenials,
    dns: { lookups: st.dnsLookups, failures: st.dnsFailures },
    udp: { ...st.udp },
  };
}

/**
 * Takes a consistent snapshot of a gateway's counters: closed sessions from
 * `gateway.stats` plus the live ones, read in one synchronous step.
 *
 * @example
 * ```ts ignore
 * import { serve } from "../server/gateway.ts";
 * import { gatewaySnapshot } from "./metrics.ts";
 * const gateway = serve({ listen: ["127.0.0.1:0"] });
 * gatewaySnapshot(gateway).sessions.active; // 0
 * await gateway.shutdown();
 * ```
 */
export function gatewaySnapshot(gateway: Gateway): GatewaySnapshot {
  return snapshotFrom(gateway, gateway.sessions());
}

/** Escapes a label value: backslash, double quote and newline. */
function label(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function labels(pairs: Record<string, string>): string {
  const parts = Object.entries(pairs).map(([k, v]) => `${k}="${label(v)}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
}

/** A number as Prometheus writes it. */
function num(n: number): string {
  if (n === Infinity) return "+Inf";
  if (n === -Infinity) return "-Inf";
  if (Number.isNaN(n)) return "NaN";
  return String(n);
}

class Exposition {
  #lines: string[] = [];

  family(name: string, type: "counter" | "gauge" | "histogram", help: string): this {
    this.#lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    return this;
  }

  /** A family with a single unlabelled sample. */
  single(name: string, type: "counter" | "gauge", help: string, value: number): this {
    return this.family(name, type, help).sample(name, value);
  }

  sample(name: string, value: number, pairs: Record<string, string> = {}): this {
    this.#lines.push(`${name}${labels(pairs)} ${num(value)}`);
    return this;
  }

  histogram(name: string, help: string, h: Histogram): this {
    this.family(name, "histogram", help);
    let cumulative = 0;
    h.bounds.forEach((bound, i) => {
      cumulative += h.counts[i];
      this.sample(`${name}_bucket`, cumulative, { le: num(bound) });
    });
    this.sample(`${name}_bucket`, h.count, { le: "+Inf" });
    this.sample(`${name}_sum`, h.sum);
    this.sample(`${name}_count`, h.count);
    return this;
  }

  toString(): string {
    return `${this.#lines.join("\n")}\n`;
  }
}

/** The media type of {@linkcode renderMetrics}' output. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/**
 * Renders a gateway's counters in the Prometheus text format, every metric
 * prefixed `dualsocks_`:
 *
 * | metric | type | labels |
 * | ------ | ---- | ------ |
 * | `dualsocks_sessions_total` | counter | |
 * | `dualsocks_sessions_rejected_total` | counter | |
 * | `dualsocks_accepts_held_total` | counter | |
 * | `dualsocks_accept_errors_total` | counter | |
 * | `dualsocks_sessions_active` | gauge | `phase` |
 * | `dualsocks_requests_total` | counter | `command` |
 * | `dualsocks_protocol_sessions_total` | counter | `protocol` (socks5, socks4, http, other) |
 * | `dualsocks_relays_total` | counter | `type` (A-D) |
 * | `dualsocks_relays_active` | gauge | `command`, `type` |
 * | `dualsocks_relayed_bytes_total` | counter | `type`, `direction` (up, down) |
 * | `dualsocks_handshake_duration_seconds` | histogram | |
 * | `dualsocks_connect_duration_seconds` | histogram | |
 * | `dualsocks_replies_total` | counter | `code`, `reply` |
 * | `dualsocks_auth_failures_total` | counter | |
 * | `dualsocks_proxy_headers_total` | counter | `result` (accepted, rejected) |
 * | `dualsocks_rule_denials_total` | counter | |
 * | `dualsocks_dns_lookups_total`, `dualsocks_dns_failures_total` | counter | |
 * | `dualsocks_udp_datagrams_total` | counter | `direction` (from_client, to_client) |
 * | `dualsocks_udp_datagrams_dropped_total` | counter | |
 * | `dualsocks_draining`, `dualsocks_listeners`, `dualsocks_start_time_seconds` | gauge | |
 * | `dualsocks_instance_info` | gauge (always 1) | `instance` |
 *
 * @example
 * ```ts ignore
 * import { renderMetrics } from "./metrics.ts";
 * const text = renderMetrics(gateway);
 * text.includes('dualsocks_relays_total{type="C"}'); // true
 * ```
 */
export function renderMetrics(gateway: Gateway): string {
  const live = gateway.sessions();
  const snap = snapshotFrom(gateway, live);
  const st = gateway.stats;
  const out = new Exposition();

  out.single(
    "dualsocks_sessions_total",
    "counter",
    "Client connections accepted.",
    snap.sessions.total,
  );
  out.single(
    "dualsocks_sessions_rejected_total",
    "counter",
    "Client connections closed at once: session limit reached or shutting down.",
    snap.sessions.rejected,
  );
  out.single(
    "dualsocks_accepts_held_total",
    "counter",
    "Times accepting waited because limits.max_handshakes handshakes were under way.",
    snap.sessions.acceptsHeld,
  );
  out.single(
    "dualsocks_accept_errors_total",
    "counter",
    "Failed accepts: clients that reset before being accepted, or errors such as EMFILE.",
    snap.sessions.acceptErrors,
  );
  out.family("dualsocks_sessions_active", "gauge", "Live sessions, by phase.");
  for (const phase of PHASES) {
    out.sample("dualsocks_sessions_active", snap.sessions.byPhase[phase], { phase });
  }

  out.family("dualsocks_requests_total", "counter", "SOCKS requests read, by command.");
  for (const command of COMMANDS) {
    out.sample("dualsocks_requests_total", snap.requests[command], { command });
  }

  out.family(
    "dualsocks_protocol_sessions_total",
    "counter",
    "Sessions by the protocol of their first byte (other: unknown or not enabled).",
  );
  for (const [protocol, n] of Object.entries(snap.protocols)) {
    out.sample("dualsocks_protocol_sessions_total", n, { protocol });
  }

  out.family("dualsocks_relays_total", "counter", "Relays established, by RFC 3089 type.");
  for (const type of TYPES) out.sample("dualsocks_relays_total", snap.types[type].total, { type });

  const grid = new Map<string, number>();
  for (const command of RELAY_COMMANDS) {
    for (const type of TYPES) grid.set(`${command} ${type}`, 0);
  }
  for (const s of live) {
    if (!s.type) continue;
    const key = `${s.command ?? "other"} ${s.type}`;
    grid.set(key, (grid.get(key) ?? 0) + 1);
  }
  out.family(
    "dualsocks_relays_active",
    "gauge",
    "Relays running now, by command and RFC 3089 type.",
  );
  for (const [key, n] of grid) {
    const [command, type] = key.split(" ");
    out.sample("dualsocks_relays_active", n, { command, type });
  }

  out.family(
    "dualsocks_relayed_bytes_total",
    "counter",
    "Bytes relayed, by RFC 3089 type and direction (up: client to destination).",
  );
  for (const type of TYPES) {
    out.sample("dualsocks_relayed_bytes_total", snap.types[type].bytesUp, {
      type,
      direction: "up",
    });
    out.sample("dualsocks_relayed_bytes_total", snap.types[type].bytesDown, {
      type,
      direction: "down",
    });
  }

  out.histogram(
    "dualsocks_handshake_duration_seconds",
    "From accept to a complete SOCKS request.",
    st.handshakeSeconds,
  );
  out.histogram(
    "dualsocks_connect_duration_seconds",
    "From a complete request to a connected destination, name resolution included.",
    st.connectSeconds,
  );

  out.family("dualsocks_replies_total", "counter", "SOCKS replies sent, by reply code.");
  const codes = new Set([0, 1, 2, 3, 4, 5, 6, 7, 8, ...Object.keys(snap.replies).map(Number)]);
  for (const code of [...codes].sort((a, b) => a - b)) {
    out.sample("dualsocks_replies_total", snap.replies[code] ?? 0, {
      code: String(code),
      reply: replyText(code),
    });
  }

  out.single(
    "dualsocks_auth_failures_total",
    "counter",
    "Failed RFC 1929 logins.",
    snap.authFailures,
  );
  out.family(
    "dualsocks_proxy_headers_total",
    "counter",
    "PROXY protocol headers applied, and connections closed over one (malformed, missing, untrusted).",
  );
  for (const result of ["accepted", "rejected"] as const) {
    out.sample("dualsocks_proxy_headers_total", st.proxyHeaders[result], { result });
  }
  out.single(
    "dualsocks_rule_denials_total",
    "counter",
    "Requests denied by the rules.",
    snap.ruleDenials,
  );
  const safety = gateway.safety;
  out.single(
    "dualsocks_protected_refusals_total",
    "counter",
    "Clients beyond loopback refused by protected mode (no users, no rules naming clients).",
    safety?.stats.protectedRefusals ?? 0,
  );
  out.family(
    "dualsocks_unwanted_destinations_total",
    "counter",
    "Destinations refused by default, by category (metadata, link-local, multicast...).",
  );
  for (const category of ["metadata", "link-local", "multicast", "broadcast", "unspecified"]) {
    out.sample(
      "dualsocks_unwanted_destinations_total",
      safety?.stats.unwantedDestinations[category] ?? 0,
      { category },
    );
  }
  out.single(
    "dualsocks_loop_refusals_total",
    "counter",
    "Requests refused because their destination is one of the gateway's own listening sockets.",
    safety?.stats.loopRefusals ?? 0,
  );
  out.single(
    "dualsocks_lockouts_total",
    "counter",
    "Clients locked out after repeated failed logins.",
    safety?.lockout?.lockoutsTotal ?? 0,
  );
  out.single(
    "dualsocks_locked_clients",
    "gauge",
    "Clients locked out now.",
    safety?.lockout?.lockedCount ?? 0,
  );
  out.single(
    "dualsocks_locked_out_attempts_total",
    "counter",
    "Login attempts refused unchecked: locked out, or too many waiting.",
    safety?.stats.lockedOutAttempts ?? 0,
  );
  out.family(
    "dualsocks_limit_refusals_total",
    "counter",
    "Sessions refused by a per-client or per-user limit.",
  )
    .sample("dualsocks_limit_refusals_total", safety?.stats.limitRefusals.client ?? 0, {
      kind: "client",
    })
    .sample("dualsocks_limit_refusals_total", safety?.stats.limitRefusals.user ?? 0, {
      kind: "user",
    });
  out.single(
    "dualsocks_dns_lookups_total",
    "counter",
    "Name lookups made by the gateway.",
    snap.dns.lookups,
  );
  out.single(
    "dualsocks_dns_failures_total",
    "counter",
    "Name lookups that failed.",
    snap.dns.failures,
  );
  out.family(
    "dualsocks_udp_datagrams_total",
    "counter",
    "UDP ASSOCIATE datagrams relayed, by direction.",
  )
    .sample("dualsocks_udp_datagrams_total", snap.udp.fromClients, { direction: "from_client" })
    .sample("dualsocks_udp_datagrams_total", snap.udp.toClients, { direction: "to_client" });
  out.single(
    "dualsocks_udp_datagrams_dropped_total",
    "counter",
    "UDP ASSOCIATE datagrams dropped: malformed, fragmented or from a wrong source.",
    snap.udp.dropped,
  );

  out.single(
    "dualsocks_draining",
    "gauge",
    "1 while shutting down, else 0.",
    snap.draining ? 1 : 0,
  );
  out.single("dualsocks_listeners", "gauge", "Bound SOCKS listen addresses.", snap.listen.length);
  out.single(
    "dualsocks_start_time_seconds",
    "gauge",
    "Start time, seconds since the epoch.",
    snap.startedAt / 1000,
  );
  out.family("dualsocks_instance_info", "gauge", "Always 1; the instance label names this gateway.")
    .sample("dualsocks_instance_info", 1, { instance: snap.instance });
  return out.toString();
}
