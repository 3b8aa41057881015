/**
 * The same topology and client cases with Dante (danted), an independent SOCKS5
 * server, as the gateway: a cross-check of the topology, the clients and the
 * destinations that does not depend on dualsocks. Dante resolves names with the
 * system resolver, i.e. /etc/netns/<gw>/resolv.conf -> the suite's dnsmasq.
 * Skipped (one printed line) when danted is not installed, unless
 * DUALSOCKS_REQUIRE_NETNS=1.
 */
import { checkNetnsSupport, createTopology, ignoreUnlessSupported } from "./topology.ts";
import { startDante } from "./gateways.ts";
import { caseBigDownload, caseCurlTypes, caseDenoFetch, caseProxychains, step } from "./cases.ts";

const SUPPORT = await checkNetnsSupport([
  "danted",
  "dnsmasq",
  "curl",
  "proxychains4",
  "getent",
  "deno",
]);
const NAME = "netns e2e: Dante (independent SOCKS5 server) as the gateway, types A-D";

Deno.test({
  name: NAME,
  ignore: ignoreUnlessSupported(NAME, SUPPORT),
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    if (!SUPPORT.ok) {
      throw new Error(
        `DUALSOCKS_REQUIRE_NETNS=1 but the netns suite cannot run: ${SUPPORT.reason}`,
      );
    }
    const topo = await createTopology();
    try {
      const gw = await startDante(topo, 1080);
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
        "types A-D: Deno fetch with a socks5h:// proxy",
        120_000,
        () => caseDenoFetch(topo, gw),
      );
      await step(
        t,
        "types A-D: proxychains4 proxy_dns, plain curl",
        60_000,
        () => caseProxychains(topo, gw),
      );
      await step(t, "types A-D: 16 MiB download, sha256", 180_000, () => caseBigDownload(topo, gw));
    } finally {
      await topo.teardown();
    }
  },
});
