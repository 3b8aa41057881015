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
import { clientCaseSteps } from "./cases.ts";

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
      await clientCaseSteps(t, topo, gw);
    } finally {
      await topo.teardown();
    }
  },
});
