/**
 * Protected mode across the testbed (topology.ts): an open `[::]` listener
 * with no users and no `from:` rules refuses the client namespaces (other
 * hosts) and serves a client on the gateway's own loopback; with users, or
 * with rules naming the clients, it serves both as configured. Skipped
 * without root/netns, failed with DUALSOCKS_REQUIRE_NETNS=1.
 */
import {
  ADDR,
  checkNetnsSupport,
  isListening,
  NAMES,
  testbedTest,
  type Topology,
} from "./topology.ts";
import { documentedFlags, MAIN_TS } from "./gateways.ts";
import { CaseError, type Client, curl, expectPeer, parsePeer, step, url } from "./cases.ts";

const SUPPORT = await checkNetnsSupport(["dnsmasq", "curl", "deno"]);
const NAME = "netns e2e: protected mode on an open [::] listener (no users, no from: rules)";

/** Starts dualsocks in the gateway namespace on `[::]:port` with `extra` config lines. */
async function startOpen(topo: Topology, port: number, extra: string[]) {
  const cfg = `${topo.tmpDir}/dualsocks-safety-${port}.yaml`;
  await Deno.writeTextFile(
    cfg,
    [
      `listen: ["[::]:${port}"]`,
      "resolver:",
      `  nameservers: ["${ADDR.dns4}:53", "[${ADDR.dns6}]:53"]`,
      "log: { format: json, level: info }",
      "admin: { listen: off }",
      ...extra,
      "",
    ].join("\n"),
  );
  const proc = topo.spawn(`dualsocks(safety, port ${port})`, "gw", [
    "deno",
    "run",
    "--cached-only",
    ...documentedFlags(cfg),
    MAIN_TS,
    "--config",
    cfg,
  ]);
  await proc.waitFor(
    "'listening on' and the wildcard socket",
    async () =>
      // ss shows a dual-stack [::] socket as *:PORT.
      proc.log.includes("listening on") && await isListening(topo.ns.gw, "tcp", "*", port),
    30_000,
  );
  return proc;
}

const proxyOf = (client: Client | "gw", port: number) =>
  client === "c4"
    ? `${ADDR.gw4}:${port}`
    : client === "c6"
    ? `[${ADDR.gw6}]:${port}`
    : `127.0.0.1:${port}`;

/** curl through the gateway from `who`, by name, as `login` when given. */
function through(topo: Topology, who: Client | "gw", port: number, login?: string) {
  const host = who === "c6" ? NAMES.v4 : NAMES.v6; // both types across families
  return curl(topo, who, [
    "--socks5-hostname",
    proxyOf(who, port),
    ...(login ? ["--proxy-user", login] : []),
    url(host),
  ]);
}

testbedTest(NAME, SUPPORT, async (t, topo) => {
  await step(
    t,
    "no users, no from: rules: remote clients refused, loopback served",
    60_000,
    async () => {
      const gw = await startOpen(topo, 1095, []);
      if (!/protected mode: .*allow_open_relay: true/.test(gw.log)) {
        throw new CaseError(`no startup explanation in the log:\n${gw.log}`);
      }
      for (const client of ["c4", "c6"] as const) {
        const r = await through(topo, client, 1095);
        // curl 97: the SOCKS5 server refused (reply 2, not allowed by ruleset).
        if (r.success || r.code !== 97) {
          throw new CaseError(
            `${client}: expected a refusal (curl 97), found exit ${r.code}: ${r.stdout}`,
          );
        }
      }
      const local = await through(topo, "gw", 1095);
      if (!local.success) throw new CaseError(`loopback client refused: ${local.stderr}`);
      expectPeer(parsePeer(local.stdout, local), "d6", "gw loopback");
      // Log lines may arrive after the answers: wait for the warning, then count.
      await gw.waitFor(
        "the protected-mode warning",
        () => gw.log.includes("refused client"),
        10_000,
      );
      const warnings = gw.log.split("\n").filter((l) => l.includes("refused client"));
      if (warnings.length !== 1) {
        throw new CaseError(`expected one warning a minute, found ${warnings.length}`);
      }
      await gw.stop();
    },
  );
  await step(t, "with users: every client that logs in is served", 60_000, async () => {
    const gw = await startOpen(topo, 1096, [
      "users:",
      "  - { username: alice, password: s3cret }",
    ]);
    for (const who of ["c4", "c6", "gw"] as const) {
      const r = await through(topo, who, 1096, "alice:s3cret");
      if (!r.success) throw new CaseError(`${who}: ${r.stderr}`);
      expectPeer(parsePeer(r.stdout, r), who === "c6" ? "d4" : "d6", who);
      const anonymous = await through(topo, who, 1096);
      if (anonymous.success) throw new CaseError(`${who}: served without a login`);
    }
    await gw.stop();
  });
  await step(t, "with from: rules: the clients they name are served", 60_000, async () => {
    const gw = await startOpen(topo, 1097, [
      "rules:",
      `  - { action: allow, from: ["${ADDR.c4}/32", "127.0.0.0/8"] }`,
    ]);
    const c4 = await through(topo, "c4", 1097);
    if (!c4.success) throw new CaseError(`c4: ${c4.stderr}`);
    expectPeer(parsePeer(c4.stdout, c4), "d6", "c4");
    const c6 = await through(topo, "c6", 1097);
    if (c6.success) throw new CaseError("c6 is not named by the rules, yet was served");
    const local = await through(topo, "gw", 1097);
    if (!local.success) throw new CaseError(`loopback: ${local.stderr}`);
    await gw.stop();
  });
});
