/**
 * Issue 14 end to end: from the IPv6-only client namespace, unmodified code
 * under `socksify` reaches IPv4-only services by name, each seen by the
 * gateway (its session log: type C, the name as destination) and by the
 * destination (the gateway's IPv4 address as peer):
 *
 * - a plain `fetch()` (d4's HTTP server),
 * - a `WebSocket` echo (apps_dest_server.ts in d4),
 * - the npm `pg` driver against a real PostgreSQL server in d4, running a query,
 * - a `node:https` request with a certificate for the name, checked.
 *
 * And the library's `connect({ hostname, port })` through Dante, through a
 * chain across families (Dante on IPv6, then dualsocks on IPv4), with the
 * typed error for a name nobody resolves.
 *
 * Needs root, iproute2, dnsmasq, danted, openssl, runuser and PostgreSQL's
 * server binaries (/usr/lib/postgresql/N/bin); skipped otherwise, unless
 * DUALSOCKS_REQUIRE_NETNS=1.
 */
import {
  ADDR,
  checkNetnsSupport,
  isListening,
  must,
  NAMES,
  type NetnsSupport,
  type RunResult,
  testbedTest,
  type Topology,
} from "./topology.ts";
import { type Gateway, MAIN_TS, startDante, startDualsocks } from "./gateways.ts";
import {
  CaseError,
  expectPeer,
  expectSessionType,
  GW_ADDR_TOWARD,
  type PeerRecord,
  step,
} from "./cases.ts";

const HERE = new URL(".", import.meta.url).pathname;
const CLIENT = `${HERE}socksify_apps_client.ts`;
const APPS_SERVER = `${HERE}apps_dest_server.ts`;
const WS_PORT = 8080;
const TLS_PORT = 8443;
const PG_PORT = 5432;

async function postgresBin(): Promise<string | null> {
  try {
    const versions: string[] = [];
    for await (const e of Deno.readDir("/usr/lib/postgresql")) versions.push(e.name);
    versions.sort((a, b) => Number(b) - Number(a));
    for (const v of versions) {
      const bin = `/usr/lib/postgresql/${v}/bin`;
      try {
        await Deno.stat(`${bin}/postgres`);
        await Deno.stat(`${bin}/initdb`);
        return bin;
      } catch { /* next */ }
    }
  } catch { /* none */ }
  return null;
}

const PG_BIN = await postgresBin();

async function support(): Promise<NetnsSupport> {
  const s = await checkNetnsSupport(["dnsmasq", "danted", "openssl", "runuser", "deno"]);
  if (!s.ok) return s;
  if (!PG_BIN) {
    return {
      ok: false,
      reason:
        "needs PostgreSQL's server binaries (Debian package postgresql) under /usr/lib/postgresql/N/bin",
    };
  }
  return s;
}

const SUPPORT = await support();
const NAME =
  "netns e2e: socksify from the IPv6-only client: fetch, WebSocket, npm pg, node:https and connect({ hostname }) reach IPv4-only services";

function fail(msg: string, r?: RunResult): never {
  throw new CaseError(
    r
      ? `${msg}\n  exit ${r.code}${
        r.timedOut ? " (timed out)" : ""
      }\n  stdout: ${r.stdout.trim()}\n  stderr: ${r.stderr.trim()}`
      : msg,
  );
}

function lastJson(r: RunResult): Record<string, unknown> {
  const line = r.stdout.trim().split("\n").pop() ?? "";
  try {
    return JSON.parse(line);
  } catch {
    fail("expected a JSON line from the client script", r);
  }
}

/** A CA and a certificate for NAMES.v4 signed by it, in `dir`. */
async function makeCerts(dir: string): Promise<{ ca: string; cert: string; key: string }> {
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  await must(null, [
    "openssl",
    "req",
    "-x509",
    ...ec,
    "-keyout",
    `${dir}/ca.key`,
    "-out",
    `${dir}/ca.crt`,
    "-subj",
    "/CN=dualsocks netns test CA",
    "-days",
    "2",
  ]);
  await must(null, [
    "openssl",
    "req",
    ...ec,
    "-keyout",
    `${dir}/leaf.key`,
    "-out",
    `${dir}/leaf.csr`,
    "-subj",
    `/CN=${NAMES.v4}`,
  ]);
  await Deno.writeTextFile(
    `${dir}/leaf.ext`,
    `subjectAltName=DNS:${NAMES.v4}\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n`,
  );
  await must(null, [
    "openssl",
    "x509",
    "-req",
    "-in",
    `${dir}/leaf.csr`,
    "-CA",
    `${dir}/ca.crt`,
    "-CAkey",
    `${dir}/ca.key`,
    "-CAcreateserial",
    "-out",
    `${dir}/leaf.crt`,
    "-days",
    "2",
    "-extfile",
    `${dir}/leaf.ext`,
  ]);
  return { ca: `${dir}/ca.crt`, cert: `${dir}/leaf.crt`, key: `${dir}/leaf.key` };
}

/** A PostgreSQL cluster owned by `nobody`, listening on d4's address only, trusting the gateway's link. */
async function startPostgres(topo: Topology): Promise<void> {
  const dir = `${topo.tmpDir}/pg`;
  await Deno.chmod(topo.tmpDir, 0o711); // nobody traverses to its own directory, reads nothing else
  await Deno.mkdir(dir, { mode: 0o700 });
  await must(null, ["chown", "nobody", dir]);
  await must(null, [
    "runuser",
    "-u",
    "nobody",
    "--",
    `${PG_BIN}/initdb`,
    "-D",
    dir,
    "-U",
    "dstest",
    "--auth=trust",
    "-E",
    "UTF8",
    "--no-sync",
  ], { timeoutMs: 60_000 });
  await Deno.writeTextFile(`${dir}/pg_hba.conf`, `host all all ${GW_ADDR_TOWARD.d4}/32 trust\n`, {
    append: true,
  });
  const p = topo.spawn("postgres-d4", "d4", [
    "runuser",
    "-u",
    "nobody",
    "--",
    `${PG_BIN}/postgres`,
    "-D",
    dir,
    "-h",
    ADDR.d4,
    "-p",
    String(PG_PORT),
    "-k",
    dir,
    "-c",
    "fsync=off",
  ]);
  await p.waitFor(
    "postgres listening",
    () => isListening(topo.ns.d4, "tcp", ADDR.d4, PG_PORT),
    30_000,
  );
}

async function caseApps(topo: Topology, gw: Gateway, ca: string) {
  const via = `socks5://${gw.proxy6}`; // a bracketed IPv6 literal: fine through the door
  const ctx = `type C: c6 socksify(${via}) apps -> ${NAMES.v4}`;
  const mark = gw.proc.log.length;
  const r = await topo.exec("c6", [
    "deno",
    "run",
    "--cached-only",
    "--allow-net",
    "--allow-env",
    `--allow-read`,
    "--allow-sys",
    CLIENT,
    "apps",
    via,
    NAMES.v4,
    ca,
  ], { timeoutMs: 40_000 });
  const out = lastJson(r);
  if (!r.success || out.ok !== true) fail(`${ctx} failed`, r);
  const gwIp = GW_ADDR_TOWARD.d4;
  expectPeer(out.fetch as PeerRecord, "d4", `${ctx}: fetch()`);
  if (out.ws !== `d4 ${gwIp}: hello over socks`) {
    fail(
      `${ctx}: WebSocket echo ${JSON.stringify(out.ws)}, expected "d4 ${gwIp}: hello over socks"`,
      r,
    );
  }
  const row = out.pg as { peer: string; answer: number; version: string };
  if (row?.peer !== `${gwIp}/32` || row.answer !== 42) {
    fail(`${ctx}: pg query answered ${JSON.stringify(row)}, expected peer ${gwIp}/32 and 42`, r);
  }
  expectPeer(out.https as PeerRecord, "d4", `${ctx}: node:https`);
  const seen: string[] = [];
  for (const port of [80, WS_PORT, PG_PORT, TLS_PORT]) {
    const s = await expectSessionType(gw, mark, "c6", `${NAMES.v4}:${port}`, "C");
    seen.push(`${s.destination} -> ${s.resolved} (${s.type})`);
  }
  console.log(
    `  ${ctx}: fetch, WebSocket, pg (${
      row.version.split(" ").slice(0, 2).join(" ")
    }: inet_client_addr ${row.peer}), node:https; gateway: ${seen.join(", ")}`,
  );
}

async function caseLib(topo: Topology, label: string, via: string[], firstGw: Gateway | null) {
  const ctx = `c6 connect({ hostname: "${NAMES.v4}", port: 80 }) via ${label}`;
  const mark = firstGw?.proc.log.length ?? 0;
  const r = await topo.exec("c6", [
    "deno",
    "run",
    "--cached-only",
    "--allow-net",
    "--allow-env",
    "--allow-read",
    "--allow-sys",
    CLIENT,
    "lib",
    NAMES.v4,
    ...via,
  ], { timeoutMs: 40_000 });
  const out = lastJson(r);
  if (!r.success || out.ok !== true) fail(`${ctx} failed`, r);
  expectPeer(out.peer as PeerRecord, "d4", ctx);
  const err = out.error as { name: string; reply: number | null; message: string } | null;
  if (err?.name !== "SocksReplyError" || err.reply !== 4) {
    fail(
      `${ctx}: nxdomain.test should fail with SocksReplyError reply 4 (host unreachable), got ${
        JSON.stringify(err)
      }`,
      r,
    );
  }
  let chain = "";
  if (firstGw) {
    // The first hop (dualsocks, reached over IPv6) carried c6 to the next
    // gateway's IPv4 address: a type C relay.
    const next = via[1].slice("socks5://".length);
    const s = await expectSessionType(firstGw, mark, "c6", next, "C");
    chain = `; first hop logged ${s.destination} (${s.type})`;
  }
  console.log(
    `  ${ctx}: via ${(out.via as string[]).join(" -> ")}; d4 saw ${
      (out.peer as PeerRecord).peer
    }${chain}; nxdomain.test: ${err.message}`,
  );
}

testbedTest(NAME, SUPPORT, async (t, topo) => {
  const certs = await makeCerts(topo.tmpDir);
  const apps = topo.spawn("apps-d4", "d4", [
    "deno",
    "run",
    "--cached-only",
    "--allow-net",
    `--allow-read=${certs.cert},${certs.key}`,
    APPS_SERVER,
    "d4",
    ADDR.d4,
    String(WS_PORT),
    String(TLS_PORT),
    certs.cert,
    certs.key,
  ]);
  await apps.waitFor(
    "apps servers",
    async () =>
      await isListening(topo.ns.d4, "tcp", ADDR.d4, WS_PORT) &&
      await isListening(topo.ns.d4, "tcp", ADDR.d4, TLS_PORT),
    30_000,
  );
  await startPostgres(topo);
  const gw = await startDualsocks(topo, { port: 1080 });
  const dante = await startDante(topo, 1090);
  await step(
    t,
    "type C: unmodified fetch, WebSocket, npm pg and node:https under socksify reach d4 by name",
    60_000,
    () => caseApps(topo, gw, certs.ca),
  );
  await step(
    t,
    "connect({ hostname, port }) through Dante",
    45_000,
    () => caseLib(topo, "Dante", [`socks5://${dante.proxy6}`], null),
  );
  await step(
    t,
    "connect({ hostname, port }) through a chain across families: dualsocks on IPv6, then Dante on IPv4",
    45_000,
    () =>
      caseLib(topo, "dualsocks [IPv6] -> Dante [IPv4]", [
        `socks5://${gw.proxy6}`,
        `socks5://${dante.proxy4}`,
      ], gw),
  );
}, { cache: [MAIN_TS, CLIENT, APPS_SERVER] });
