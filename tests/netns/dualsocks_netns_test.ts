/**
 * End-to-end proof of the RFC 3089 mechanism with the dualsocks gateway between
 * namespaces that truly have a single address family. See topology.ts for the
 * layout. Needs root and iproute2; otherwise skipped (or failed when
 * DUALSOCKS_REQUIRE_NETNS=1).
 *
 *   deno test --allow-net --allow-read --allow-write --allow-run --allow-env --allow-sys tests/netns
 */
import {
  ADDR,
  checkNetnsSupport,
  NAMES,
  type NetnsSupport,
  testbedTest,
  type Topology,
} from "./topology.ts";
import {
  CONNECT_TIMEOUT_MS,
  documentedFlags,
  type FamilyPolicy,
  type Gateway,
  MAIN_TS,
  sessionLogs,
  startDualsocks,
} from "./gateways.ts";
import {
  CaseError,
  caseIsolation,
  type Client,
  clientCaseSteps,
  curl,
  type Dest,
  expectPeer,
  noteDenoBracketedProxy,
  parsePeer,
  proxyFor,
  step,
  url,
} from "./cases.ts";
import {
  caseBindGiveUp,
  caseBindNoAddress,
  caseBinds,
  caseSocksify,
  caseUdpDns,
  checkUdpLabels,
} from "./lib_cases.ts";

async function support(): Promise<NetnsSupport> {
  const s = await checkNetnsSupport(["dnsmasq", "curl", "proxychains4", "getent", "deno"]);
  if (!s.ok) return s;
  try {
    await Deno.stat(MAIN_TS);
  } catch {
    return { ok: false, reason: `gateway entry point ${MAIN_TS} not found` };
  }
  return s;
}

const SUPPORT = await support();
const NAME =
  "netns e2e: dualsocks gateway between IPv4-only and IPv6-only namespaces (RFC 3089 types A-D)";

/** One gateway per family policy, all in the gateway namespace. */
const POLICY_PORTS: Record<FamilyPolicy, number> = {
  "auto": 1080,
  "prefer-ipv4": 1081,
  "prefer-ipv6": 1082,
  "ipv4-only": 1083,
  "ipv6-only": 1084,
};

testbedTest(NAME, SUPPORT, async (t, topo) => {
  await step(
    t,
    "topology: single-family clients, no route and no DNS to any destination",
    60_000,
    () => caseIsolation(topo),
  );

  await step(
    t,
    "gateway starts with the documented permissions (--allow-net --allow-read=CFG)",
    40_000,
    async () => {
      const gw = await startDualsocks(topo, { port: 1079, flags: documentedFlags });
      await gw.proc.stop();
    },
  );

  const gws = {} as Record<FamilyPolicy, Gateway>;
  const started = await step(t, "start one gateway per family policy", 60_000, async () => {
    const all = await Promise.all(
      (Object.entries(POLICY_PORTS) as [FamilyPolicy, number][]).map(([family, port]) =>
        startDualsocks(topo, { port, family })
      ),
    );
    for (const g of all) gws[g.label.match(/\((\S+),/)![1] as FamilyPolicy] = g;
  });
  if (!started) return;
  const gw = gws["auto"];

  await clientCaseSteps(t, topo, gw);
  // Not a check (it cannot fail): a note in the output on whether Deno's
  // fetch still refuses a bracketed IPv6 proxy URL.
  await noteDenoBracketedProxy(topo, gw);
  await step(
    t,
    "types B, C: our socksify (fake-IP name delegation), unmodified Deno.resolveDns + Deno.connect",
    90_000,
    () => caseSocksify(topo, gw),
  );
  await step(
    t,
    "unresolvable name: reply 4 (host unreachable), from both clients",
    30_000,
    () => caseUnresolvable(topo, gw),
  );
  await step(
    t,
    "no route from the gateway to the destination: reply 3 (network unreachable)",
    30_000,
    () => caseNoRoute(topo, gw),
  );
  await step(
    t,
    "a client from another host cannot reach the gateway's own loopback: reply 2",
    30_000,
    () => caseLoopbackRefused(topo, gw),
  );
  await step(
    t,
    "dual.test (A + AAAA) follows the family policy",
    60_000,
    () => caseFamilyPolicy(topo, gws),
  );
  await step(
    t,
    "UDP ASSOCIATE type C: DNS query from the IPv6-only client to a DNS server in d4",
    90_000,
    async () => caseUdpDns(topo, gw, await topo.startDestinationDns()),
  );
  await step(
    t,
    "UDP ASSOCIATE: one peer addressed by literal, name, literal is answered the same way",
    40_000,
    async () => {
      console.log(`  ${await checkUdpLabels(topo, gw)}`);
    },
  );
  await step(
    t,
    "BIND without an address of the peer's family: reply 1 naming what is missing",
    40_000,
    async () => {
      await caseBindNoAddress(topo, gw, "c6", "d4");
      await caseBindNoAddress(topo, gw, "c4", "d6");
    },
  );
  await step(
    t,
    "BIND types C, B: on the live relay's address (FTP style), peer connects, data both ways",
    90_000,
    () =>
      caseBinds(topo, gw, [
        { client: "c6", dest: "d4", type: "C", liveRelay: true, stranger: true },
        { client: "c4", dest: "d6", type: "B", liveRelay: true, stranger: true },
      ]),
  );
  await step(
    t,
    "BIND types C, B: on outbound.ipv4/ipv6 (no live relay); a client that gives up frees the listener",
    90_000,
    async () => {
      const out = await startDualsocks(topo, {
        port: 1085,
        outbound: { ipv4: ADDR.gwToD4, ipv6: ADDR.gwToD6 },
      });
      try {
        await caseBinds(topo, out, [
          { client: "c6", dest: "d4", type: "C", liveRelay: false },
          { client: "c4", dest: "d6", type: "B", liveRelay: false },
        ]);
        await caseBindGiveUp(topo, out, "c6", "d4");
        await caseBindGiveUp(topo, out, "c4", "d6");
      } finally {
        await out.proc.stop();
      }
    },
  );
  await step(
    t,
    "Happy Eyeballs: one destination family silently down, the other one connects",
    120_000,
    () => caseHappyEyeballs(topo, gws),
  );
}, { cache: [MAIN_TS] });

async function caseUnresolvable(topo: Topology, gw: Gateway) {
  for (const client of ["c4", "c6"] as const) {
    const mark = gw.proc.log.length;
    const r = await curl(topo, client, [
      "--socks5-hostname",
      proxyFor(gw, client),
      url(NAMES.missing),
    ]);
    if (r.success) {
      throw new CaseError(`${client}: ${NAMES.missing} unexpectedly answered: ${r.stdout}`);
    }
    // curl 7.88: "(97) Can't complete SOCKS5 connection to NAME. (4)"
    if (r.code !== 97) {
      throw new CaseError(
        `${client}: expected curl exit 97 (SOCKS failure), got ${r.code}: ${r.stderr}`,
      );
    }
    const rec = await waitSession(gw, mark, (s) => s.destination === `${NAMES.missing}:80`);
    if (!String(rec.reply).startsWith("4")) {
      throw new CaseError(
        `${client}: gateway replied ${rec.reply} for ${NAMES.missing}, expected 4 (host unreachable)`,
      );
    }
    console.log(`  ${client}: ${r.stderr.trim()} | gateway: reply ${rec.reply}, ${rec.reason}`);
  }
}

/**
 * The gateway has no route to these documentation addresses (no default
 * route in any namespace): the kernel says "network unreachable" at once,
 * and the client must read reply 3.
 */
async function caseNoRoute(topo: Topology, gw: Gateway) {
  const cases = [["c4", "203.0.113.99"], ["c6", "2001:db8:ffff::99"]] as const;
  for (const [client, ip] of cases) {
    const mark = gw.proc.log.length;
    const host = ip.includes(":") ? `[${ip}]` : ip;
    const r = await curl(topo, client, ["--socks5", proxyFor(gw, client), `http://${host}/`]);
    if (r.success || r.code !== 97) {
      throw new CaseError(`${client} -> ${ip}: expected curl exit 97, got ${r.code}: ${r.stderr}`);
    }
    const rec = await waitSession(gw, mark, (s) => String(s.destination).includes(ip));
    if (!String(rec.reply).startsWith("3")) {
      throw new CaseError(`${client} -> ${ip}: gateway replied ${rec.reply}, expected 3`);
    }
    console.log(`  ${client} -> ${ip}: ${r.stderr.trim()} | gateway: reply ${rec.reply}`);
  }
}

/**
 * Without rules, a remote client must not reach the gateway host's own
 * loopback services through it (here a listener on the gateway's loopback),
 * also by a name whose AAAA record is a v4-mapped loopback or unspecified
 * address (the gateway resolves with the testbed's nameservers).
 */
async function caseLoopbackRefused(topo: Topology, gw: Gateway) {
  const targets = [
    "127.0.0.1",
    "[::1]",
    "localhost",
    "0.0.0.0",
    NAMES.mappedAny,
    NAMES.mappedLoopback,
  ];
  for (const client of ["c4", "c6"] as const) {
    for (const host of targets) {
      const mark = gw.proc.log.length;
      const r = await curl(topo, client, [
        "--socks5-hostname",
        proxyFor(gw, client),
        `http://${host}:1080/`,
      ]);
      if (r.success || r.code !== 97) {
        throw new CaseError(
          `${client} -> ${host}: expected curl exit 97 (SOCKS failure), got ${r.code}: ${r.stderr}`,
        );
      }
      const want = `${host.replace(/^\[|\]$/g, "")}:1080`;
      const rec = await waitSession(
        gw,
        mark,
        (s) => String(s.destination).replace(/^\[|\](?=:)/g, "") === want,
      );
      if (!String(rec.reply).startsWith("2")) {
        throw new CaseError(`${client} -> ${host}: gateway replied ${rec.reply}, expected 2`);
      }
    }
    console.log(`  ${client}: ${targets.join(", ")} refused with reply 2`);
  }
}

async function waitSession(
  gw: Gateway,
  mark: number,
  pred: (s: ReturnType<typeof sessionLogs>[number]) => boolean,
) {
  const deadline = performance.now() + 3000;
  while (true) {
    const hit = sessionLogs(gw.proc.log.slice(mark)).filter(pred).pop();
    if (hit) return hit;
    if (performance.now() > deadline) {
      throw new CaseError(
        `no matching session record in the gateway log:\n${gw.proc.log.slice(mark).slice(-2000)}`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function caseFamilyPolicy(topo: Topology, gws: Record<FamilyPolicy, Gateway>) {
  const expect: Record<FamilyPolicy, Dest | null> = {
    "auto": null, // recorded, either family is acceptable
    "prefer-ipv4": "d4",
    "prefer-ipv6": "d6",
    "ipv4-only": "d4",
    "ipv6-only": "d6",
  };
  const errors: string[] = [];
  for (const family of Object.keys(expect) as FamilyPolicy[]) {
    for (const client of ["c4", "c6"] as Client[]) {
      const gw = gws[family];
      const ctx = `${family}: ${client} -> ${NAMES.dual}`;
      try {
        const r = await curl(topo, client, [
          "--socks5-hostname",
          proxyFor(gw, client),
          url(NAMES.dual),
        ]);
        if (!r.success) throw new CaseError(`${ctx} failed: exit ${r.code} ${r.stderr}`);
        const rec = parsePeer(r.stdout, r);
        const want = expect[family] ?? (rec.server as Dest);
        expectPeer(rec, want, ctx);
        console.log(`  ${ctx}: answered by ${rec.server} (peer ${rec.peer})`);
      } catch (e) {
        errors.push((e as Error).message);
      }
    }
  }
  // A single-family policy must not reach a name of the other family only.
  for (const [family, name] of [["ipv4-only", NAMES.v6], ["ipv6-only", NAMES.v4]] as const) {
    const gw = gws[family];
    const mark = gw.proc.log.length;
    const r = await curl(topo, "c4", ["--socks5-hostname", proxyFor(gw, "c4"), url(name)]);
    if (r.success) {
      errors.push(`${family}: ${name} should be refused, got ${r.stdout}`);
      continue;
    }
    const rec = await waitSession(gw, mark, (s) => s.destination === `${name}:80`).catch(() =>
      null
    );
    console.log(
      `  ${family}: ${name} refused (curl exit ${r.code}); gateway reply ${rec?.reply}, ${rec?.reason}`,
    );
  }
  if (errors.length) throw new CaseError(errors.join("\n"));
}

async function caseHappyEyeballs(topo: Topology, gws: Record<FamilyPolicy, Gateway>) {
  const errors: string[] = [];
  const scenarios: { down: Dest; up: Dest; policies: FamilyPolicy[]; failing: FamilyPolicy }[] = [
    { down: "d6", up: "d4", policies: ["prefer-ipv6", "auto"], failing: "ipv6-only" },
    { down: "d4", up: "d6", policies: ["prefer-ipv4", "auto"], failing: "ipv4-only" },
  ];
  for (const sc of scenarios) {
    const restore = await topo.blackhole(sc.down);
    try {
      // Prove the packets vanish (a timeout, not a refusal) from the gateway itself.
      const downHost = sc.down === "d4" ? ADDR.d4 : ADDR.d6;
      const probe = await topo.exec(
        "gw",
        ["curl", "-sS", "--connect-timeout", "1", url(downHost)],
        {
          timeoutMs: 10_000,
        },
      );
      if (probe.code !== 28) {
        throw new CaseError(
          `${sc.down} should be silently unreachable (curl exit 28), got exit ${probe.code}: ${probe.stderr}`,
        );
      }
      for (const family of sc.policies) {
        for (const client of ["c4", "c6"] as Client[]) {
          const gw = gws[family];
          const ctx = `${sc.down} down, ${family}: ${client} -> ${NAMES.dual}`;
          try {
            const r = await curl(topo, client, [
              "--socks5-hostname",
              proxyFor(gw, client),
              url(NAMES.dual),
            ]);
            if (!r.success) {
              throw new CaseError(
                `${ctx} failed after ${Math.round(r.elapsedMs)} ms: exit ${r.code} ${r.stderr}`,
              );
            }
            expectPeer(parsePeer(r.stdout, r), sc.up, ctx);
            if (r.elapsedMs >= CONNECT_TIMEOUT_MS) {
              throw new CaseError(
                `${ctx}: took ${
                  Math.round(r.elapsedMs)
                } ms, not below the connect timeout ${CONNECT_TIMEOUT_MS} ms`,
              );
            }
            console.log(
              `  ${ctx}: connected to ${sc.up} in ${
                Math.round(r.elapsedMs)
              } ms (connect timeout ${CONNECT_TIMEOUT_MS} ms)`,
            );
          } catch (e) {
            errors.push((e as Error).message);
          }
        }
      }
      // The single-family policy has nothing to fall back to: it must fail, and within the connect timeout (+ slack).
      const gw = gws[sc.failing];
      const mark = gw.proc.log.length;
      const r = await curl(topo, "c4", ["--socks5-hostname", proxyFor(gw, "c4"), url(NAMES.dual)]);
      const rec = await waitSession(gw, mark, (s) => s.destination === `${NAMES.dual}:80`).catch(
        () => null,
      );
      const ctx = `${sc.down} down, ${sc.failing}: c4 -> ${NAMES.dual}`;
      if (r.success) errors.push(`${ctx}: should fail, got ${r.stdout}`);
      else if (r.elapsedMs > CONNECT_TIMEOUT_MS + 3000) {
        errors.push(
          `${ctx}: failed only after ${
            Math.round(r.elapsedMs)
          } ms (connect timeout ${CONNECT_TIMEOUT_MS} ms)`,
        );
      } else {
        console.log(
          `  ${ctx}: failed after ${
            Math.round(r.elapsedMs)
          } ms; gateway reply ${rec?.reply}, ${rec?.reason}`,
        );
      }
    } finally {
      await restore();
    }
  }
  if (errors.length) throw new CaseError(errors.join("\n"));
}
