/**
 * Test cases shared by the dualsocks and Dante variants of the netns suite.
 */
import {
  ADDR,
  BLOB_SIZE,
  NAMES,
  type Role,
  type RunResult,
  sha256Hex,
  type Topology,
} from "./topology.ts";
import { type Gateway, type SessionLog, sessionLogs } from "./gateways.ts";

const HERE = new URL(".", import.meta.url).pathname;
export const FETCH_CLIENT = `${HERE}fetch_client.ts`;

export type Client = "c4" | "c6";
export type Dest = "d4" | "d6";

export interface TypeCase {
  type: "A" | "B" | "C" | "D";
  client: Client;
  dest: Dest;
  name: string;
  literal: string;
}

/** RFC 3089 relay types: client family -> destination family. */
export const TYPES: TypeCase[] = [
  { type: "A", client: "c4", dest: "d4", name: NAMES.v4, literal: ADDR.d4 },
  { type: "B", client: "c4", dest: "d6", name: NAMES.v6, literal: ADDR.d6 },
  { type: "C", client: "c6", dest: "d4", name: NAMES.v4, literal: ADDR.d4 },
  { type: "D", client: "c6", dest: "d6", name: NAMES.v6, literal: ADDR.d6 },
];

export const CLIENT_ADDR: Record<Client, string> = { c4: ADDR.c4, c6: ADDR.c6 };
/** The gateway's address on each destination link: what the destination must see. */
export const GW_ADDR_TOWARD: Record<Dest, string> = { d4: ADDR.gwToD4, d6: ADDR.gwToD6 };

export function hostInUrl(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}

export function url(host: string, path = "/peer"): string {
  return `http://${hostInUrl(host)}${path}`;
}

export function proxyFor(gw: Gateway, client: Client): string {
  return client === "c4" ? gw.proxy4 : gw.proxy6;
}

export class CaseError extends Error {}

function fail(msg: string, r?: RunResult): never {
  throw new CaseError(
    r
      ? `${msg}\n  exit ${r.code}${
        r.timedOut ? " (timed out)" : ""
      }\n  stdout: ${r.stdout.trim()}\n  stderr: ${r.stderr.trim()}`
      : msg,
  );
}

/** Run a step body with a hard deadline. */
export async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, rej) =>
        timer = setTimeout(() => rej(new Error(`${what}: step timed out after ${ms} ms`)), ms)
      ),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export function step(
  t: Deno.TestContext,
  name: string,
  timeoutMs: number,
  fn: () => Promise<void>,
): Promise<boolean> {
  return t.step({
    name,
    fn: () => withTimeout(fn(), timeoutMs, name),
    sanitizeOps: false,
    sanitizeResources: false,
  });
}

export interface PeerRecord {
  server: string;
  peer: string;
  peerPort: number;
  local: string;
}

export function parsePeer(body: string, r?: RunResult): PeerRecord {
  try {
    const rec = JSON.parse(body);
    if (typeof rec?.server === "string" && typeof rec?.peer === "string") return rec;
  } catch { /* below */ }
  fail(`expected a /peer JSON record, got: ${JSON.stringify(body.slice(0, 300))}`, r);
}

/** The destination that answered must be `dest`, and its peer the gateway's address of that family. */
export function expectPeer(rec: PeerRecord, dest: Dest, ctx: string) {
  if (rec.server !== dest) {
    fail(`${ctx}: answered by ${rec.server}, expected ${dest} (${JSON.stringify(rec)})`);
  }
  if (rec.peer !== GW_ADDR_TOWARD[dest]) {
    fail(
      `${ctx}: ${dest} saw peer ${rec.peer}, expected the gateway's ${GW_ADDR_TOWARD[dest]} (${
        JSON.stringify(rec)
      })`,
    );
  }
}

export function curl(
  topo: Topology,
  role: Role,
  args: string[],
  timeoutMs = 25_000,
): Promise<RunResult> {
  return topo.exec(role, ["curl", "-sS", "--connect-timeout", "10", "--max-time", "20", ...args], {
    timeoutMs,
  });
}

/** GET /peer on `host` through the gateway; returns the destination's record. */
export async function curlPeer(
  topo: Topology,
  gw: Gateway,
  client: Client,
  mode: "--socks5-hostname" | "--socks5",
  host: string,
): Promise<PeerRecord> {
  const r = await curl(topo, client, [mode, proxyFor(gw, client), url(host)]);
  if (!r.success) {
    fail(`curl ${mode} ${proxyFor(gw, client)} ${url(host)} from ${client} failed`, r);
  }
  return parsePeer(r.stdout, r);
}

/**
 * Wait (bounded) for the dualsocks session record of a relay from `client` to
 * `destination` ("v4only.test:80", "[2001:db8:2::2]:80") logged after `mark`,
 * and check its A/B/C/D classification.
 */
export async function expectSessionType(
  gw: Gateway,
  mark: number,
  client: Client,
  destination: string,
  type: string,
): Promise<SessionLog> {
  if (gw.kind !== "dualsocks") throw new Error("session logs are a dualsocks feature");
  const clientPrefix = client === "c4" ? `${ADDR.c4}:` : `[${ADDR.c6}]:`;
  const deadline = performance.now() + 3000;
  while (true) {
    const recs = sessionLogs(gw.proc.log.slice(mark)).filter((s) =>
      s.destination === destination && typeof s.client === "string" &&
      s.client.startsWith(clientPrefix)
    );
    if (recs.length > 0) {
      const s = recs[recs.length - 1];
      if (s.type !== type) {
        fail(
          `gateway classified ${client} -> ${destination} as type ${s.type}, expected ${type}: ${
            JSON.stringify(s)
          }`,
        );
      }
      return s;
    }
    if (performance.now() > deadline) {
      fail(
        `no session record for ${client} -> ${destination} in the gateway log:\n${
          gw.proc.log.slice(mark).slice(-3000)
        }`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

// ---------------------------------------------------------------------------
// Cases

/** The clients truly have one family, cannot resolve the .test names, and cannot reach any destination. */
export async function caseIsolation(topo: Topology) {
  const sysctl = async (role: Role, key: string) =>
    (await topo.exec(role, ["cat", `/proc/sys/${key.replaceAll(".", "/")}`])).stdout.trim();
  // Families.
  if (await sysctl("c4", "net.ipv6.conf.all.disable_ipv6") !== "1") {
    fail("c4: IPv6 is not disabled");
  }
  const c4v6 = await topo.exec("c4", ["ip", "-6", "addr", "show"]);
  if (c4v6.stdout.trim() !== "") fail(`c4 has IPv6 addresses:\n${c4v6.stdout}`);
  const c6v4 = await topo.exec("c6", ["ip", "-4", "-o", "addr", "show"]);
  const c6v4Addrs = c6v4.stdout.split("\n").filter((l) =>
    l.includes("inet ") && !l.includes("inet 127.0.0.1/8")
  );
  if (c6v4Addrs.length) fail(`c6 has IPv4 addresses besides loopback:\n${c6v4Addrs.join("\n")}`);
  // Gateway relays at the socket level only.
  if (await sysctl("gw", "net.ipv4.ip_forward") !== "0") fail("gw: IPv4 forwarding is on");
  if (await sysctl("gw", "net.ipv6.conf.all.forwarding") !== "0") fail("gw: IPv6 forwarding is on");
  // No default route anywhere.
  for (const role of ["c4", "c6", "d4", "d6", "gw"] as const) {
    for (const fam of ["-4", "-6"]) {
      const r = await topo.exec(role, ["ip", fam, "route", "show", "default"]);
      if (r.stdout.trim()) fail(`${role} has a default route (${fam}): ${r.stdout}`);
    }
  }
  // Per-namespace /etc/hosts is bind-mounted by `ip netns exec`.
  const h6 = await topo.exec("c6", ["getent", "ahostsv6", NAMES.gateway]);
  if (!h6.success || !h6.stdout.includes(ADDR.gw6)) {
    fail(`c6 does not resolve ${NAMES.gateway} from its /etc/hosts`, h6);
  }

  // Positive control: the names resolve in the gateway namespace.
  for (
    const [name, want] of [[NAMES.v4, ADDR.d4], [NAMES.v6, ADDR.d6], [NAMES.dual, ADDR.d6]] as const
  ) {
    const r = await topo.exec("gw", ["getent", "ahosts", name]);
    if (!r.success || !r.stdout.includes(want)) fail(`gw cannot resolve ${name}`, r);
  }
  const dq = (role: Role, server: string, name: string, type: "A" | "AAAA") =>
    topo.exec(role, [
      "deno",
      "eval",
      "--cached-only",
      `const r = await Deno.resolveDns(${JSON.stringify(name)}, ${JSON.stringify(type)}, ` +
      `{ nameServer: { ipAddr: ${
        JSON.stringify(server)
      }, port: 53 }, signal: AbortSignal.timeout(3000) }); ` +
      `console.log(JSON.stringify(r));`,
    ], { timeoutMs: 15_000 });
  const ok = await dq("gw", ADDR.dns4, NAMES.dual, "AAAA");
  if (!ok.success || !ok.stdout.includes(ADDR.d6)) {
    fail("direct DNS query from gw to dnsmasq failed", ok);
  }

  // The clients cannot resolve the names: not with their system resolver...
  for (const client of ["c4", "c6"] as const) {
    for (const name of [NAMES.v4, NAMES.v6, NAMES.dual]) {
      const r = await topo.exec(client, ["getent", "ahosts", name]);
      if (r.success) fail(`${client} resolved ${name}: ${r.stdout}`);
    }
  }
  // ...nor by asking the gateway's DNS server directly (no route to it).
  for (const [client, server] of [["c4", ADDR.dns4], ["c6", ADDR.dns6]] as const) {
    const r = await dq(client, server, NAMES.v4, "A");
    if (r.success) fail(`${client} resolved ${NAMES.v4} by asking ${server}: ${r.stdout}`);
  }
  // The clients cannot reach any destination directly.
  for (
    const [client, host] of [["c4", ADDR.d4], ["c4", ADDR.d6], ["c6", ADDR.d4], [
      "c6",
      ADDR.d6,
    ]] as const
  ) {
    const r = await curl(topo, client, ["--connect-timeout", "3", url(host)], 10_000);
    if (r.success) fail(`${client} reached ${host} without the gateway: ${r.stdout}`);
  }
}

/** Types A-D, names delegated to the gateway (curl --socks5-hostname), and literals (curl --socks5). */
export async function caseCurlTypes(
  topo: Topology,
  gw: Gateway,
  mode: "--socks5-hostname" | "--socks5",
) {
  const errors: string[] = [];
  for (const c of TYPES) {
    const host = mode === "--socks5-hostname" ? c.name : c.literal;
    const ctx = `type ${c.type}: ${c.client} ${mode} ${proxyFor(gw, c.client)} -> ${host}`;
    try {
      const mark = gw.proc.log.length;
      const rec = await curlPeer(topo, gw, c.client, mode, host);
      expectPeer(rec, c.dest, ctx);
      if (gw.kind === "dualsocks") {
        await expectSessionType(gw, mark, c.client, `${hostInUrl(host)}:80`, c.type);
      }
      console.log(`  ${ctx}: ${rec.server} saw ${rec.peer}`);
    } catch (e) {
      errors.push(`${ctx}: ${(e as Error).message}`);
    }
  }
  if (errors.length) fail(errors.join("\n"));
}

/** Deno fetch with a socks5h:// proxy from each client namespace. */
export async function caseDenoFetch(topo: Topology, gw: Gateway) {
  const errors: string[] = [];
  for (const c of TYPES) {
    // Deno 2.9 cannot parse a bracketed IPv6 proxy host, so the IPv6-only
    // client names the gateway through its per-namespace /etc/hosts.
    const proxy = c.client === "c4"
      ? `socks5h://${gw.proxy4}`
      : `socks5h://${NAMES.gateway}:${gw.port}`;
    const ctx = `type ${c.type}: ${c.client} fetch(${url(c.name)}) via ${proxy}`;
    try {
      const mark = gw.proc.log.length;
      const r = await topo.exec(c.client, [
        "deno",
        "run",
        "--cached-only",
        "--allow-net",
        FETCH_CLIENT,
        proxy,
        url(c.name),
      ], { timeoutMs: 30_000 });
      if (!r.success) fail(`${ctx} failed`, r);
      const out = JSON.parse(r.stdout.trim().split("\n").pop()!);
      if (out.status !== 200) fail(`${ctx}: HTTP ${out.status}`, r);
      const rec = parsePeer(out.body, r);
      expectPeer(rec, c.dest, ctx);
      if (gw.kind === "dualsocks") {
        await expectSessionType(gw, mark, c.client, `${c.name}:80`, c.type);
      }
      console.log(`  ${ctx}: ${rec.server} saw ${rec.peer}`);
    } catch (e) {
      errors.push(`${ctx}: ${(e as Error).message}`);
    }
  }
  if (errors.length) fail(errors.join("\n"));
}

/** Informational: does Deno accept `socks5h://[IPv6]:port` yet? Never fails; prints what happened. */
export async function noteDenoBracketedProxy(topo: Topology, gw: Gateway): Promise<string> {
  const proxy = `socks5h://${gw.proxy6}`;
  const r = await topo.exec("c6", [
    "deno",
    "run",
    "--cached-only",
    "--allow-net",
    FETCH_CLIENT,
    proxy,
    url(NAMES.v6),
  ], { timeoutMs: 30_000 });
  const line = r.stdout.trim().split("\n").pop() ?? "";
  const note = r.success
    ? `Deno now accepts the bracketed IPv6 proxy URL ${proxy}`
    : `known Deno ${Deno.version.deno} limitation: ${proxy} fails: ${line}`;
  console.log(`  ${note}`);
  return note;
}

/**
 * proxychains4 with proxy_dns: a plain, unmodified `curl http://NAME/peer`. proxychains
 * hands curl a fake IPv4 address from 224.0.0.0/8 (its mapping table) and sends the
 * name to the gateway as DOMAINNAME: the RFC 3089 Socks Lib, in C.
 * proxychains-ng 4.16 accepts an IPv6 proxy address in [ProxyList].
 */
export async function caseProxychains(topo: Topology, gw: Gateway) {
  const errors: string[] = [];
  for (const c of TYPES) {
    const proxyLine = c.client === "c4"
      ? `socks5 ${ADDR.gw4} ${gw.port}`
      : `socks5 ${ADDR.gw6} ${gw.port}`;
    const conf = `${topo.tmpDir}/proxychains-${gw.port}-${c.client}.conf`;
    await Deno.writeTextFile(
      conf,
      [
        "strict_chain",
        "proxy_dns",
        "remote_dns_subnet 224",
        "tcp_read_time_out 15000",
        "tcp_connect_time_out 8000",
        "[ProxyList]",
        proxyLine,
        "",
      ].join("\n"),
    );
    const ctx = `type ${c.type}: ${c.client} proxychains4 [${proxyLine}] curl ${url(c.name)}`;
    try {
      const mark = gw.proc.log.length;
      const r = await topo.exec(c.client, [
        "proxychains4",
        "-f",
        conf,
        "curl",
        "-sS",
        "--max-time",
        "20",
        url(c.name),
      ], { timeoutMs: 30_000 });
      if (!r.success) fail(`${ctx} failed`, r);
      const rec = parsePeer(r.stdout, r);
      expectPeer(rec, c.dest, ctx);
      if (gw.kind === "dualsocks") {
        await expectSessionType(gw, mark, c.client, `${c.name}:80`, c.type);
      }
      console.log(`  ${ctx}: ${rec.server} saw ${rec.peer}`);
    } catch (e) {
      errors.push(`${ctx}: ${(e as Error).message}`);
    }
  }
  if (errors.length) fail(errors.join("\n"));
}

/** A 16 MiB download in each type, checked with sha256. */
export async function caseBigDownload(topo: Topology, gw: Gateway) {
  const errors: string[] = [];
  for (const c of TYPES) {
    const out = `${topo.tmpDir}/download-${gw.port}-${c.type}.bin`;
    const ctx = `type ${c.type}: ${c.client} -> ${c.name}/blob`;
    try {
      const r = await curl(topo, c.client, [
        "--socks5-hostname",
        proxyFor(gw, c.client),
        "-o",
        out,
        "-w",
        "%{size_download} %{speed_download}",
        url(c.name, "/blob"),
      ], 60_000);
      if (!r.success) fail(`${ctx} failed`, r);
      const data = await Deno.readFile(out);
      const sum = await sha256Hex(data);
      if (sum !== topo.blobSha256) {
        fail(
          `${ctx}: sha256 ${sum} (${data.length} bytes) != expected ${topo.blobSha256} (${BLOB_SIZE} bytes)`,
        );
      }
      const [, speed] = r.stdout.trim().split(" ");
      console.log(
        `  ${ctx}: ${data.length} bytes, sha256 ok, ${(Number(speed) / 1048576).toFixed(1)} MiB/s`,
      );
    } catch (e) {
      errors.push(`${ctx}: ${(e as Error).message}`);
    } finally {
      await Deno.remove(out).catch(() => {});
    }
  }
  if (errors.length) fail(errors.join("\n"));
}

/**
 * The client cases every gateway of the testbed must pass, dualsocks and
 * Dante alike: types A-D with curl (name delegated and literal), Deno fetch,
 * proxychains4 and a 16 MiB download, each as a step of `t`.
 */
export async function clientCaseSteps(
  t: Deno.TestContext,
  topo: Topology,
  gw: Gateway,
): Promise<void> {
  await step(
    t,
    "types A-D, name delegated: curl --socks5-hostname",
    60_000,
    () => caseCurlTypes(topo, gw, "--socks5-hostname"),
  );
  await step(
    t,
    "types A-D, literal addresses: curl --socks5",
    60_000,
    () => caseCurlTypes(topo, gw, "--socks5"),
  );
  await step(
    t,
    "types A-D: Deno fetch with a socks5h:// proxy from each client namespace",
    120_000,
    () => caseDenoFetch(topo, gw),
  );
  await step(
    t,
    "types A-D: proxychains4 proxy_dns (fake-IP name delegation), plain curl",
    60_000,
    () => caseProxychains(topo, gw),
  );
  await step(t, "types A-D: 16 MiB download, sha256", 180_000, () => caseBigDownload(topo, gw));
}
