/**
 * Gateways run inside the topology's gateway namespace: dualsocks (the project's
 * main.ts) and Dante (danted, an independent SOCKS5 implementation used as a
 * stand-in and cross-check across the same topology).
 */
import { ADDR, isListening, type Proc, type Topology } from "./topology.ts";

export const MAIN_TS = new URL("../../main.ts", import.meta.url).pathname;

export type FamilyPolicy = "auto" | "prefer-ipv6" | "prefer-ipv4" | "ipv6-only" | "ipv4-only";

/** Connect timeout configured in every dualsocks gateway of the suite. */
export const CONNECT_TIMEOUT_MS = 5000;
export const HAPPY_EYEBALLS_DELAY_MS = 250;

export interface Gateway {
  kind: "dualsocks" | "dante";
  label: string;
  port: number;
  proc: Proc;
  /** SOCKS endpoint for the IPv4-only client: "192.0.2.1:PORT". */
  proxy4: string;
  /** SOCKS endpoint for the IPv6-only client: "[2001:db8:1::1]:PORT". */
  proxy6: string;
}

/** The permissions the gateway is documented to need (besides the config path). */
export function documentedFlags(cfg: string): string[] {
  return ["--allow-net", `--allow-read=${cfg}`];
}

/**
 * Extra permission flags passed on top of the documented ones. Empty: the
 * gateway must run with exactly what its documentation says. (Early versions
 * died at config load because npm:yaml reads process.env.LOG_TOKENS; the step
 * "gateway starts with the documented permissions" guards against that.)
 */
export const EXTRA_GATEWAY_FLAGS: string[] = [];

export interface DualsocksOptions {
  port: number;
  family?: FamilyPolicy;
  /** Replace the permission flags entirely (default: documented + EXTRA_GATEWAY_FLAGS). */
  flags?: (cfg: string) => string[];
  readyTimeoutMs?: number;
  /** `outbound:` source addresses (BIND listens on them when no live relay names one). */
  outbound?: { ipv4?: string; ipv6?: string };
}

export function dualsocksConfig(
  port: number,
  family: FamilyPolicy,
  outbound?: { ipv4?: string; ipv6?: string },
): string {
  const out = outbound
    ? [
      "outbound:",
      ...(outbound.ipv4 ? [`  ipv4: ${outbound.ipv4}`] : []),
      ...(outbound.ipv6 ? [`  ipv6: "${outbound.ipv6}"`] : []),
    ]
    : [];
  return [
    `listen: ["[${ADDR.gw6}]:${port}", "${ADDR.gw4}:${port}"]`,
    // The testbed's clients are other hosts, and no users are configured.
    "allow_open_relay: true",
    ...out,
    "resolver:",
    `  family: ${family}`,
    `  nameservers: ["${ADDR.dns4}:53", "[${ADDR.dns6}]:53"]`,
    `  happy_eyeballs_delay: ${HAPPY_EYEBALLS_DELAY_MS}ms`,
    `timeouts: { connect: ${CONNECT_TIMEOUT_MS / 1000}s }`,
    "log: { format: json, level: info }",
    "",
  ].join("\n");
}

export async function startDualsocks(topo: Topology, opts: DualsocksOptions): Promise<Gateway> {
  const family = opts.family ?? "auto";
  const cfg = `${topo.tmpDir}/dualsocks-${opts.port}.yaml`;
  await Deno.writeTextFile(cfg, dualsocksConfig(opts.port, family, opts.outbound));
  const flags = opts.flags ? opts.flags(cfg) : [...documentedFlags(cfg), ...EXTRA_GATEWAY_FLAGS];
  const label = `dualsocks(${family}, port ${opts.port}${opts.outbound ? ", outbound" : ""})`;
  const proc = topo.spawn(label, "gw", [
    "deno",
    "run",
    "--cached-only",
    ...flags,
    MAIN_TS,
    "--config",
    cfg,
  ]);
  await proc.waitFor(
    "'listening on' and both listen sockets",
    async () =>
      proc.log.includes("listening on") &&
      await isListening(topo.ns.gw, "tcp", ADDR.gw4, opts.port) &&
      await isListening(topo.ns.gw, "tcp", ADDR.gw6, opts.port),
    opts.readyTimeoutMs ?? 30_000,
  );
  return {
    kind: "dualsocks",
    label,
    port: opts.port,
    proc,
    proxy4: `${ADDR.gw4}:${opts.port}`,
    proxy6: `[${ADDR.gw6}]:${opts.port}`,
  };
}

/** One session record from the gateway's JSON log. */
export interface SessionLog {
  id?: number;
  type?: string;
  client?: string;
  destination?: string;
  resolved?: string;
  reply?: string;
  reason?: string;
  [k: string]: unknown;
}

/** Session records (JSON log lines with a `reply` property) in `log`. */
export function sessionLogs(log: string): SessionLog[] {
  const out: SessionLog[] = [];
  for (const line of log.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      const rec = JSON.parse(line);
      const p = rec?.properties;
      if (p && typeof p === "object" && "reply" in p) out.push(p as SessionLog);
    } catch { /* not JSON */ }
  }
  return out;
}

export async function startDante(topo: Topology, port: number): Promise<Gateway> {
  const cfg = `${topo.tmpDir}/danted-${port}.conf`;
  await Deno.writeTextFile(
    cfg,
    [
      "logoutput: stderr",
      `internal: ${ADDR.gw4} port = ${port}`,
      `internal: ${ADDR.gw6} port = ${port}`,
      `external: ${ADDR.gwToD4}`,
      `external: ${ADDR.gwToD6}`,
      "external.rotation: route",
      "clientmethod: none",
      "socksmethod: none",
      "user.privileged: root",
      "user.unprivileged: nobody",
      "client pass { from: 0/0 to: 0/0 log: error }",
      "client pass { from: ::/0 to: ::/0 log: error }",
      "socks pass { from: 0/0 to: 0/0 log: connect error }",
      "socks pass { from: ::/0 to: ::/0 log: connect error }",
      "",
    ].join("\n"),
  );
  const label = `danted(port ${port})`;
  // Dante resolves with the system resolver: /etc/netns/<gw>/resolv.conf -> dnsmasq.
  const proc = topo.spawn(label, "gw", ["danted", "-f", cfg, "-N", "1"]);
  await proc.waitFor(
    "both listen sockets",
    async () =>
      await isListening(topo.ns.gw, "tcp", ADDR.gw4, port) &&
      await isListening(topo.ns.gw, "tcp", ADDR.gw6, port),
    15_000,
  );
  return {
    kind: "dante",
    label,
    port,
    proc,
    proxy4: `${ADDR.gw4}:${port}`,
    proxy6: `[${ADDR.gw6}]:${port}`,
  };
}
