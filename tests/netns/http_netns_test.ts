/**
 * The HTTP proxy front door between single-family namespaces (topology.ts):
 * curl forwarding and CONNECT from the IPv4-only client to the IPv6-only
 * destination (type B) and from the IPv6-only client to the IPv4-only one
 * (type C); Chromium headless with --proxy-server in the IPv4-only client
 * loading a page from the IPv6-only destination (type B, names resolved only
 * by the gateway); and apt-get update + apt-get download in the IPv6-only client
 * namespace, through the gateway's HTTP proxy, from a small Debian-format
 * repository served on the IPv4-only side by name (v4only.test, resolved by
 * the gateway). Skipped without root/netns, failed with
 * DUALSOCKS_REQUIRE_NETNS=1.
 */
import { ADDR, checkNetnsSupport, must, NAMES, sha256Hex, testbedTest } from "./topology.ts";
import { type Gateway, sessionLogs, startDualsocks } from "./gateways.ts";
import {
  CaseError,
  type Client,
  curl,
  type Dest,
  expectPeer,
  expectSessionType,
  parsePeer,
  step,
  url,
} from "./cases.ts";

const HERE = new URL(".", import.meta.url).pathname;
const SUPPORT = await checkNetnsSupport([
  "dnsmasq",
  "curl",
  "deno",
  "apt-get",
  "apt-ftparchive",
  "dpkg-deb",
  "chromium",
]);
const NAME =
  "netns e2e: HTTP proxy front door (curl forward/CONNECT, apt-get from an IPv6-only host)";
const PORT = 1090;
const REPO_PORT = 8080;

function httpProxy(gw: Gateway, client: Client): string {
  return client === "c4" ? `http://${ADDR.gw4}:${gw.port}` : `http://[${ADDR.gw6}]:${gw.port}`;
}

/** A one-package flat repository: hello-dualsocks_1.0_all.deb, Packages, Release. */
async function buildRepo(dir: string): Promise<{ root: string; debSha: string }> {
  const pkg = `${dir}/pkg`;
  await Deno.mkdir(`${pkg}/DEBIAN`, { recursive: true });
  await Deno.mkdir(`${pkg}/usr/share/doc/hello-dualsocks`, { recursive: true });
  await Deno.writeTextFile(
    `${pkg}/DEBIAN/control`,
    "Package: hello-dualsocks\nVersion: 1.0\nArchitecture: all\nMaintainer: t <t@example.test>\n" +
      "Description: a test package served through the gateway\n",
  );
  await Deno.writeTextFile(
    `${pkg}/usr/share/doc/hello-dualsocks/README`,
    "RFC 3089\n".repeat(5000),
  );
  const root = `${dir}/repo`;
  await Deno.mkdir(root, { recursive: true });
  await must(null, [
    "dpkg-deb",
    "--root-owner-group",
    "--build",
    pkg,
    `${root}/hello-dualsocks_1.0_all.deb`,
  ]);
  // apt-ftparchive works on the current directory.
  await Deno.writeTextFile(
    `${root}/Packages`,
    await must(null, ["sh", "-c", `cd '${root}' && apt-ftparchive packages .`]),
  );
  await Deno.writeTextFile(
    `${root}/Release`,
    await must(null, ["sh", "-c", `cd '${root}' && apt-ftparchive release .`]),
  );
  return {
    root,
    debSha: await sha256Hex(await Deno.readFile(`${root}/hello-dualsocks_1.0_all.deb`)),
  };
}

testbedTest(NAME, SUPPORT, async (t, topo) => {
  const gw = await startDualsocks(topo, { port: PORT });
  const cases: [Client, Dest, string, string][] = [
    ["c4", "d6", NAMES.v6, "B"],
    ["c6", "d4", NAMES.v4, "C"],
  ];
  for (const [client, dest, host, type] of cases) {
    for (const tunnel of [false, true]) {
      const how = tunnel ? "CONNECT" : "forward";
      await step(
        t,
        `type ${type}: ${client} curl ${how} ${url(host)} via ${httpProxy(gw, client)}`,
        30_000,
        async () => {
          const mark = gw.proc.log.length;
          const r = await curl(topo, client, [
            ...(tunnel ? ["--proxytunnel"] : []),
            "--proxy",
            httpProxy(gw, client),
            url(host),
          ]);
          if (!r.success) throw new CaseError(`curl failed: ${r.stderr}`);
          expectPeer(parsePeer(r.stdout, r), dest, `${client} ${how}`);
          const s = await expectSessionType(gw, mark, client, `${host}:80`, type);
          if (s.protocol !== "http") {
            throw new CaseError(`expected protocol http: ${JSON.stringify(s)}`);
          }
        },
      );
    }
  }
  await step(
    t,
    "type B: Chromium headless in c4 (IPv4 only) loads a page from v6only.test via --proxy-server",
    60_000,
    async () => {
      const mark = gw.proc.log.length;
      const profile = await Deno.makeTempDir({ dir: topo.tmpDir, prefix: "chromium-" });
      const r = await topo.exec("c4", [
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        `--user-data-dir=${profile}`,
        `--proxy-server=${httpProxy(gw, "c4")}`,
        // Chromium resolves nothing itself: the name goes to the proxy.
        `--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE ${ADDR.gw4}`,
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-default-apps",
        "--no-first-run",
        "--no-pings",
        "--disable-quic",
        "--disable-domain-reliability",
        "--dump-dom",
        url(NAMES.v6),
      ], { timeoutMs: 50_000 });
      const m = /\{[^<]*"server"[^<]*\}/.exec(r.stdout);
      if (!r.success || !m) {
        throw new CaseError(
          `chromium --dump-dom: exit ${r.code}\n${r.stdout}\n${r.stderr.slice(-2000)}`,
        );
      }
      expectPeer(parsePeer(m[0].replaceAll("&quot;", '"'), r), "d6", "chromium");
      const s = await expectSessionType(gw, mark, "c4", `${NAMES.v6}:80`, "B");
      if (s.protocol !== "http") {
        throw new CaseError(`expected protocol http: ${JSON.stringify(s)}`);
      }
    },
  );
  await step(
    t,
    "apt-get update and apt-get download in c6 (IPv6 only) from v4only.test through the HTTP proxy",
    90_000,
    async () => {
      const { root, debSha } = await buildRepo(topo.tmpDir);
      const repo = topo.spawn("repo", "d4", [
        "deno",
        "run",
        "--cached-only",
        "--no-config",
        "--allow-net",
        `--allow-read=${root}`,
        `${HERE}http_repo_server.ts`,
        root,
        ADDR.d4,
        String(REPO_PORT),
      ]);
      await repo.waitFor(
        "the repository server",
        () => repo.log.includes("repo listening"),
        30_000,
      );
      const apt = `${topo.tmpDir}/apt`;
      for (
        const d of ["state/lists/partial", "cache/archives/partial", "download", "etc/none"]
      ) {
        await Deno.mkdir(`${apt}/${d}`, { recursive: true });
      }
      await Deno.writeTextFile(`${apt}/status`, "");
      await Deno.writeTextFile(
        `${apt}/etc/sources.list`,
        `deb [trusted=yes] http://${NAMES.v4}:${REPO_PORT}/ ./\n`,
      );
      // Only this file: no apt.conf.d of the host (APT_CONFIG is read first, it moves the rest).
      await Deno.writeTextFile(
        `${apt}/apt.conf`,
        [
          `Dir::Etc::main "/dev/null";`,
          `Dir::Etc::parts "${apt}/etc/none";`,
          `Dir::Etc::sourcelist "${apt}/etc/sources.list";`,
          `Dir::Etc::sourceparts "${apt}/etc/none";`,
          `Dir::State "${apt}/state";`,
          `Dir::State::status "${apt}/status";`,
          `Dir::Cache "${apt}/cache";`,
          `Acquire::http::Proxy "http://${NAMES.gateway}:${gw.port}/";`,
          `Acquire::Languages "none";`,
          `Acquire::Retries "0";`,
          `APT::Sandbox::User "root";`,
          `Debug::NoLocking "true";`,
          "",
        ].join("\n"),
      );
      const env = { APT_CONFIG: `${apt}/apt.conf` };
      const mark = gw.proc.log.length;
      const update = await topo.exec("c6", ["apt-get", "-q", "update"], {
        env,
        timeoutMs: 60_000,
      });
      if (!update.success || /^(W|E|Err):/m.test(update.stdout + update.stderr)) {
        throw new CaseError(`apt-get update: ${update.stdout}\n${update.stderr}`);
      }
      const dl = await topo.exec("c6", [
        "sh",
        "-c",
        `cd '${apt}/download' && apt-get -q download hello-dualsocks`,
      ], {
        env,
        timeoutMs: 60_000,
      });
      if (!dl.success) throw new CaseError(`apt-get download: ${dl.stdout}\n${dl.stderr}`);
      const got = await sha256Hex(
        await Deno.readFile(`${apt}/download/hello-dualsocks_1.0_all.deb`),
      );
      if (got !== debSha) {
        throw new CaseError(`downloaded .deb sha256 ${got}, expected ${debSha}`);
      }
      // Every request went through the gateway, as HTTP, type C (IPv6 client, IPv4 repository).
      if (
        !/repo: GET \/hello-dualsocks_1.0_all.deb from 198\.51\.100\.1 via 1\.1 dualsocks/.test(
          repo.log,
        )
      ) {
        throw new CaseError(`the repository did not see the gateway's request:\n${repo.log}`);
      }
      // The session lines come when apt's connections close, through the buffered log sink:
      // one session at least for each of the two apt-get runs.
      const httpSessions = () =>
        sessionLogs(gw.proc.log.slice(mark)).filter((s) => s.protocol === "http");
      await gw.proc.waitFor("the apt sessions' log lines", () => httpSessions().length >= 2);
      const recs = httpSessions();
      if (
        recs.length === 0 ||
        recs.some((s) => s.type !== "C" || s.destination !== `${NAMES.v4}:${REPO_PORT}`)
      ) {
        throw new CaseError(
          `expected http sessions of type C to ${NAMES.v4}: ${JSON.stringify(recs)}`,
        );
      }
      await repo.stop();
    },
  );
});
