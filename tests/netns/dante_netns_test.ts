/**
 * The same topology and client cases with Dante (danted), an independent SOCKS5
 * server, as the gateway: a cross-check of the topology, the clients and the
 * destinations that does not depend on dualsocks. Dante resolves names with the
 * system resolver, i.e. /etc/netns/<gw>/resolv.conf -> the suite's dnsmasq.
 * Skipped (one printed line) when danted is not installed, unless
 * DUALSOCKS_REQUIRE_NETNS=1.
 */
import { checkNetnsSupport, testbedTest } from "./topology.ts";
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

testbedTest(NAME, SUPPORT, async (t, topo) => {
  const gw = await startDante(topo, 1080);
  await clientCaseSteps(t, topo, gw);
});
