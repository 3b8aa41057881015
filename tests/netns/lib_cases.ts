/**
 * Cases for the project's own Socks Lib (src/client) against the dualsocks
 * gateway across the namespace topology: socksify with fake-IP name
 * delegation, a DNS query over UDP ASSOCIATE, and BIND across families.
 * Each client is a small Deno script run inside a client namespace with
 * `--cached-only --allow-net` (it imports only local files).
 */
import {
  ADDR,
  isListening,
  NAMES,
  poll,
  type Proc,
  run,
  type RunResult,
  type Topology,
} from "./topology.ts";
import { type Gateway, type SessionLog, sessionLogs } from "./gateways.ts";
import {
  CaseError,
  type Client,
  CLIENT_ADDR,
  type Dest,
  expectPeer,
  expectSessionType,
  GW_ADDR_TOWARD,
  hostInUrl,
  parsePeer,
  withTimeout,
} from "./cases.ts";

const HERE = new URL(".", import.meta.url).pathname;
export const SOCKSIFY_CLIENT = `${HERE}socksify_client.ts`;
export const UDP_DNS_CLIENT = `${HERE}udp_dns_client.ts`;
export const BIND_CLIENT = `${HERE}bind_client.ts`;

const DEST_ADDR: Record<Dest, string> = { d4: ADDR.d4, d6: ADDR.d6 };

/** The Socks Lib's gateway URL for a client: the gateway's address of the client's own family. */
export function viaFor(gw: Gateway, client: Client): string {
  return client === "c4" ? `socks5://${gw.proxy4}` : `socks5://${gw.proxy6}`;
}

function fail(msg: string, r?: RunResult): never {
  throw new CaseError(
    r
      ? `${msg}\n  exit ${r.code}${
        r.timedOut ? " (timed out)" : ""
      }\n  stdout: ${r.stdout.trim()}\n  stderr: ${r.stderr.trim()}`
      : msg,
  );
}

/** The last JSON line a client script printed. */
function lastJson(r: RunResult): Record<string, unknown> {
  const line = r.stdout.trim().split("\n").pop() ?? "";
  try {
    return JSON.parse(line);
  } catch {
    fail(`expected a JSON line from the client script`, r);
  }
}

function denoRun(topo: Topology, client: Client, script: string, args: string[]) {
  return topo.exec(client, ["deno", "run", "--cached-only", "--allow-net", script, ...args], {
    timeoutMs: 30_000,
  });
}

/** Wait (bounded) for a session record logged after `mark` that satisfies `pred`. */
export async function waitSessionWhere(
  gw: Gateway,
  mark: number,
  what: string,
  pred: (s: SessionLog) => boolean,
  timeoutMs = 3000,
): Promise<SessionLog> {
  const deadline = performance.now() + timeoutMs;
  while (true) {
    const hit = sessionLogs(gw.proc.log.slice(mark)).filter(pred).pop();
    if (hit) return hit;
    if (performance.now() > deadline) {
      fail(
        `no session record for ${what} in the gateway log:\n${
          gw.proc.log.slice(mark).slice(-3000)
        }`,
      );
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

function clientPrefix(client: Client): string {
  return `${hostInUrl(CLIENT_ADDR[client])}:`;
}

function fromClient(client: Client) {
  return (s: SessionLog) =>
    typeof s.client === "string" && s.client.startsWith(clientPrefix(client));
}

// ---------------------------------------------------------------------------
// 1. socksify: fake-IP name delegation, with the project's own Socks Lib

interface SocksifyCase {
  type: "B" | "C";
  client: Client;
  dest: Dest;
  name: string;
  record: "A" | "AAAA";
  via: (gw: Gateway) => string;
  viaLabel: string;
}

const SOCKSIFY_CASES: SocksifyCase[] = [
  {
    type: "C",
    client: "c6",
    dest: "d4",
    name: NAMES.v4,
    record: "AAAA",
    via: (gw) => `socks5://${gw.proxy6}`,
    viaLabel: "bracketed IPv6 URL",
  },
  {
    type: "C",
    client: "c6",
    dest: "d4",
    name: NAMES.v4,
    record: "AAAA",
    via: (gw) => `socks5://${NAMES.gateway}:${gw.port}`,
    viaLabel: "gateway by name",
  },
  {
    type: "B",
    client: "c4",
    dest: "d6",
    name: NAMES.v6,
    record: "A",
    via: (gw) => `socks5://${gw.proxy4}`,
    viaLabel: "IPv4 URL",
  },
];

/** An "unmodified" Deno.resolveDns + Deno.connect program, socksified, in each client namespace. */
export async function caseSocksify(topo: Topology, gw: Gateway) {
  const errors: string[] = [];
  for (const c of SOCKSIFY_CASES) {
    const via = c.via(gw);
    const ctx =
      `type ${c.type}: ${c.client} socksify(${via}, ${c.viaLabel}); resolveDns(${c.name}, ${c.record}) + connect`;
    try {
      const mark = gw.proc.log.length;
      const r = await denoRun(topo, c.client, SOCKSIFY_CLIENT, [via, c.name, c.record]);
      const out = lastJson(r);
      if (!r.success || out.ok !== true) fail(`${ctx} failed`, r);
      const fake = String(out.fake);
      // The fake address is in the client's family, from the reserved space.
      const fakeOk = c.record === "AAAA"
        ? fake.startsWith("100::") // 100::/64, discard-only
        : fake.startsWith("0."); // 0.0.0.0/8
      if (!fakeOk || out.isFake !== true || out.mapped !== c.name) {
        fail(
          `${ctx}: expected a fake ${c.record} address (100::/64 or 0.0.0.0/8) mapped to ${c.name}, got ${
            JSON.stringify({ fake, isFake: out.isFake, mapped: out.mapped })
          }`,
          r,
        );
      }
      if (out.status !== 200) fail(`${ctx}: HTTP ${out.status}`, r);
      const rec = parsePeer(String(out.body), r);
      expectPeer(rec, c.dest, ctx);
      // The gateway got the name (DOMAINNAME), not the fake address, and classified the relay.
      const s = await expectSessionType(gw, mark, c.client, `${c.name}:80`, c.type);
      console.log(
        `  ${ctx}: fake ${fake} -> ${rec.server} saw ${rec.peer}; gateway: ${s.type} ${s.destination} -> ${s.resolved}`,
      );
    } catch (e) {
      errors.push(`${ctx}: ${(e as Error).message}`);
    }
  }
  if (errors.length) throw new CaseError(errors.join("\n"));
}

// ---------------------------------------------------------------------------
// 2. DNS over UDP ASSOCIATE: IPv6-only client -> DNS server on the IPv4-only side

/** UDP sockets (any state) of process `pid` in the gateway namespace, as `local` addresses. */
async function udpSocketsOf(topo: Topology, pid: number): Promise<string[]> {
  const r = await run(null, ["ss", "-N", topo.ns.gw, "-Hanup"], { timeoutMs: 5000 });
  return r.stdout.split("\n").filter((l) => l.includes(`pid=${pid},`)).map((l) =>
    l.trim().split(/\s+/)[3]
  );
}

/**
 * A hand-built DNS query for NAMES.answer from c6, through the gateway's UDP
 * relay, to the dnsmasq in d4: once to d4's IPv4 literal (the reply comes back
 * under that literal), once to NAMES.d4dns (resolved by the gateway; the reply
 * comes back under that name, ATYP DOMAINNAME). Each in its own association,
 * whose sockets must be gone once its control connection has closed.
 */
export async function caseUdpDns(topo: Topology, gw: Gateway, d4dns: Proc) {
  const errors: string[] = [];
  const targets = [
    { server: `${ADDR.d4}:53`, from: ADDR.d4, how: "by IPv4 literal" },
    { server: `${NAMES.d4dns}:53`, from: NAMES.d4dns, how: "by name (resolved by the gateway)" },
  ];
  for (const t of targets) {
    const via = viaFor(gw, "c6");
    const ctx = `type C: c6 udpAssociate(${via}) -> DNS A ${NAMES.answer} @ ${t.server} ${t.how}`;
    try {
      const mark = gw.proc.log.length;
      const dnsMark = d4dns.log.length;
      const socketsBefore = await udpSocketsOf(topo, gw.proc.pid);
      const r = await denoRun(topo, "c6", UDP_DNS_CLIENT, [via, NAMES.answer, t.server]);
      const out = lastJson(r);
      if (!r.success || out.ok !== true) fail(`${ctx} failed`, r);
      const res = (out.results as Record<string, unknown>[])[0];
      const answers = res.answers as string[];
      if (res.rcode !== 0 || !answers.includes(ADDR.answer)) {
        fail(`${ctx}: expected rcode 0 and A ${ADDR.answer}, got ${JSON.stringify(res)}`, r);
      }
      const from = res.from as { host: string; port: number };
      if (from.host !== t.from || from.port !== 53) {
        fail(
          `${ctx}: the reply's SOCKS header names ${JSON.stringify(from)}, expected ${t.from}:53`,
          r,
        );
      }
      if (!String(out.relay).startsWith(`${ADDR.gw6}:`)) {
        fail(`${ctx}: UDP relay at ${out.relay}, expected the gateway's ${ADDR.gw6}`, r);
      }
      // The DNS server on the IPv4-only side saw the gateway's IPv4 address.
      const qline = d4dns.log.slice(dnsMark).split("\n").find((l) =>
        l.includes(`query[A] ${NAMES.answer} from`)
      );
      if (!qline?.includes(`from ${GW_ADDR_TOWARD.d4}`)) {
        fail(
          `${ctx}: expected dnsmasq-d4 to log the query from ${GW_ADDR_TOWARD.d4}, its log:\n${
            d4dns.log.slice(dnsMark)
          }`,
        );
      }
      // The session ends with the control connection: then it is logged.
      const s = await waitSessionWhere(
        gw,
        mark,
        "c6 udp",
        (s) => fromClient("c6")(s) && s.command === "udp",
      );
      if (s.type !== "C" || !String(s.reply).startsWith("0")) {
        fail(`${ctx}: gateway logged ${JSON.stringify(s)}, expected command udp, type C, reply 0`);
      }
      // ...and its relay and outbound sockets are closed.
      let left: string[] = [];
      await poll("the association's UDP sockets to close", async () => {
        left = (await udpSocketsOf(topo, gw.proc.pid)).filter((a) => !socketsBefore.includes(a));
        return left.length === 0;
      }, 3000).catch(() =>
        fail(`${ctx}: UDP sockets of the gateway still open after the association ended: ${left}`)
      );
      console.log(
        `  ${ctx}: ${
          answers.join(",")
        } from ${from.host}:${from.port} (${res.queryBytes}-byte query, relay ${out.relay}, ${res.attempts} attempt(s), ${out.ms} ms); d4 saw ${GW_ADDR_TOWARD.d4}; gateway: ${s.command} ${s.type} ${s.destination}, ${s.reason}; sockets closed`,
      );
    } catch (e) {
      errors.push(`${ctx}: ${(e as Error).message}`);
    }
  }
  if (errors.length) throw new CaseError(errors.join("\n"));
}

/**
 * Within ONE association, the same peer addressed by its literal, then by a
 * name, then by its literal again: each reply is labelled the way its request
 * was addressed (README, "BIND and UDP ASSOCIATE"). Fails otherwise.
 */
export async function checkUdpLabels(topo: Topology, gw: Gateway): Promise<string> {
  const via = viaFor(gw, "c6");
  const seq = [`${ADDR.d4}:53`, `${NAMES.d4dns}:53`, `${ADDR.d4}:53`];
  const r = await denoRun(topo, "c6", UDP_DNS_CLIENT, [via, NAMES.answer, ...seq]);
  const out = lastJson(r);
  if (out.ok !== true) throw new CaseError(`could not run the sequence: ${JSON.stringify(out)}`);
  const results = out.results as { server: string; from: { host: string; port: number } }[];
  const labels = results.map((x) =>
    `${x.server} -> reply from ${hostInUrl(x.from.host)}:${x.from.port}`
  );
  const want = [ADDR.d4, NAMES.d4dns, ADDR.d4];
  const got = results.map((x) => x.from.host);
  if (JSON.stringify(got) !== JSON.stringify(want)) {
    throw new CaseError(
      `expected replies labelled ${want.join(", ")}, found ${got.join(", ")}: ${labels.join("; ")}`,
    );
  }
  return labels.join("; ");
}

// ---------------------------------------------------------------------------
// 3. BIND across families

interface BindEvent {
  event: string;
  [k: string]: unknown;
}

function events(p: Proc): BindEvent[] {
  const out: BindEvent[] = [];
  for (const line of p.log.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      const e = JSON.parse(line);
      if (typeof e?.event === "string") out.push(e);
    } catch { /* not ours */ }
  }
  return out;
}

async function waitEvent(p: Proc, names: string[], timeoutMs = 20_000): Promise<BindEvent> {
  let found: BindEvent | undefined;
  await p.waitFor(
    `event ${names.join("|")}`,
    () => (found = events(p).find((e) => names.includes(e.event))) !== undefined,
    timeoutMs,
  ).catch(async (e) => {
    // The script may print its last event and exit between two polls: once
    // it has exited, look again when its output has been read to the end.
    if (!p.exited) throw e;
    await withTimeout(p.drained, 5_000, `${p.name}: end of output`);
    found = events(p).find((x) => names.includes(x.event));
    if (!found) throw e;
  });
  return found!;
}

/** bash's /dev/tcp: connect to host:port, send a line, print the answer line. */
function peerScript(host: string, port: number, hello: string): string[] {
  return [
    "timeout",
    "15",
    "bash",
    "-c",
    `exec 3<>/dev/tcp/${host}/${port} || exit 3\n` +
    `printf '%s\\n' '${hello}' >&3\n` +
    `IFS= read -r -t 10 line <&3 || exit 4\n` +
    `printf '%s\\n' "$line"\n` +
    `exec 3>&-\n`,
  ];
}

export interface BindCase {
  client: Client;
  dest: Dest;
  type: "B" | "C";
  /** Open a CONNECT to the peer first and keep it (the FTP control connection). */
  liveRelay: boolean;
  /** Knock from the gateway's own address first: must be closed, the wait go on. */
  stranger?: boolean;
}

/**
 * BIND from `client` for a peer in `dest` (other family): the first reply must
 * name the gateway's address on the peer's link; a process in `dest` connects
 * there; a line goes each way; the second reply names the peer.
 */
export async function caseBind(topo: Topology, gw: Gateway, c: BindCase) {
  const via = viaFor(gw, c.client);
  const peerAddr = DEST_ADDR[c.dest];
  const gwAddr = GW_ADDR_TOWARD[c.dest];
  const peer = `${hostInUrl(peerAddr)}:0`;
  const control = c.liveRelay ? `${hostInUrl(peerAddr)}:80` : undefined;
  const ctx = `type ${c.type}: ${c.client} bind(${peer}, ${via})${
    c.liveRelay ? ` with a live CONNECT to ${control}` : ""
  }`;
  const mark = gw.proc.log.length;
  const proc = topo.spawn(`bind-client-${c.client}`, c.client, [
    "deno",
    "run",
    "--cached-only",
    "--allow-net",
    BIND_CLIENT,
    via,
    peer,
    ...(control ? [control] : []),
  ]);
  try {
    if (c.liveRelay) {
      const ev = await waitEvent(proc, ["control", "error"]);
      if (ev.event !== "control") fail(`${ctx}: control CONNECT failed: ${JSON.stringify(ev)}`);
      expectPeer(ev.record as never, c.dest, `${ctx} (control connection)`);
    }
    const bound = await waitEvent(proc, ["bound", "error"]);
    if (bound.event !== "bound") fail(`${ctx}: BIND failed: ${JSON.stringify(bound)}\n${proc.log}`);
    const port = Number(bound.port);
    if (bound.host !== gwAddr || !(port > 0)) {
      fail(
        `${ctx}: first BIND reply names ${bound.host}:${bound.port}, expected the gateway's ${gwAddr} (its address on the ${c.dest} link) and a port`,
      );
    }
    if (c.stranger) {
      // From the gateway namespace the source is the gateway's own address on that link:
      // not the expected peer. It must be closed (EOF: read fails at once), and the wait go on.
      const r = await topo.exec("gw", [
        "timeout",
        "10",
        "bash",
        "-c",
        `exec 3<>/dev/tcp/${gwAddr}/${port} || exit 3\nIFS= read -r -t 5 x <&3; echo "read=$?"`,
      ], { timeoutMs: 15_000 });
      if (r.stdout.trim() !== "read=1") {
        fail(`${ctx}: a stranger (${gwAddr}) should be closed at once (read=1 = EOF)`, r);
      }
      // Anything the stranger set off has reached the client by now, or will
      // show as the wrong peer in the second reply (checked below).
      const early = events(proc).find((e) => e.event === "accepted" || e.event === "error");
      if (early) fail(`${ctx}: after the stranger the client got ${JSON.stringify(early)}`);
    }
    const hello = `hello from ${c.dest}`;
    const pr = await topo.exec(c.dest, peerScript(gwAddr, port, hello), { timeoutMs: 20_000 });
    if (!pr.success || pr.stdout.trim() !== `welcome ${hello}`) {
      fail(
        `${ctx}: peer in ${c.dest} -> ${
          hostInUrl(gwAddr)
        }:${port}: expected "welcome ${hello}"\nclient: ${proc.log}`,
        pr,
      );
    }
    const status = await withTimeout(proc.status, 15_000, `${ctx}: client exit`);
    const evs = events(proc);
    const accepted = evs.find((e) => e.event === "accepted");
    const data = evs.find((e) => e.event === "data");
    if (!status.success || !accepted || !data) {
      fail(`${ctx}: client did not finish cleanly (exit ${status.code}):\n${proc.log}`);
    }
    const who = accepted.peer as { host: string; port: number };
    if (who.host !== peerAddr || !(who.port > 0)) {
      fail(`${ctx}: second BIND reply names ${JSON.stringify(who)}, expected ${peerAddr}:<port>`);
    }
    if (data.received !== hello) {
      fail(`${ctx}: client received ${JSON.stringify(data.received)}, expected "${hello}"`);
    }
    const s = await waitSessionWhere(
      gw,
      mark,
      `${c.client} bind`,
      (s) => fromClient(c.client)(s) && s.command === "bind",
    );
    if (s.type !== c.type || !String(s.reply).startsWith("0")) {
      fail(
        `${ctx}: gateway logged ${
          JSON.stringify(s)
        }, expected command bind, type ${c.type}, reply 0`,
      );
    }
    if (s.resolved !== `${hostInUrl(peerAddr)}:${who.port}`) {
      fail(
        `${ctx}: gateway logged the peer as ${s.resolved}, expected ${
          hostInUrl(peerAddr)
        }:${who.port}`,
      );
    }
    // The listening socket is closed once the peer came (exactly one accept).
    if (await isListening(topo.ns.gw, "tcp", gwAddr, port)) {
      fail(`${ctx}: the gateway still listens on ${hostInUrl(gwAddr)}:${port} after the accept`);
    }
    console.log(
      `  ${ctx}: BND ${hostInUrl(gwAddr)}:${port}${
        c.stranger ? ", stranger closed" : ""
      }; ${c.dest} connected from ${
        hostInUrl(who.host)
      }:${who.port}; data both ways; gateway: ${s.command} ${s.type} ${s.destination} -> ${s.resolved} up=${s.bytesUp} down=${s.bytesDown}`,
    );
  } finally {
    await proc.stop(1000);
  }
}

/**
 * Without a live relay to the peer, without `outbound` and with the client
 * connected in the other family, the gateway has no address of the peer's
 * family to listen on: README says reply 1 with a message naming what is missing.
 */
export async function caseBindNoAddress(topo: Topology, gw: Gateway, client: Client, dest: Dest) {
  const via = viaFor(gw, client);
  const peer = `${hostInUrl(DEST_ADDR[dest])}:0`;
  const ctx = `${client} bind(${peer}, ${via}) with no relay to ${dest} and no outbound`;
  const mark = gw.proc.log.length;
  const r = await denoRun(topo, client, BIND_CLIENT, [via, peer]);
  const ev = lastJson(r);
  if (r.success || ev.event !== "error" || ev.reply !== 1) {
    fail(`${ctx}: expected reply 1 (general failure), got ${JSON.stringify(ev)}`, r);
  }
  const s = await waitSessionWhere(
    gw,
    mark,
    `${client} bind`,
    (s) => fromClient(client)(s) && s.command === "bind",
  );
  const fam = dest === "d4" ? "ipv4" : "ipv6";
  if (!String(s.reply).startsWith("1") || !String(s.reason).includes(`outbound.${fam}`)) {
    fail(`${ctx}: gateway logged ${JSON.stringify(s)}, expected reply 1 naming outbound.${fam}`);
  }
  console.log(`  ${ctx}: client: ${ev.message} | gateway: ${s.reason}`);
}

/** Run several bind cases, collecting failures. */
export async function caseBinds(topo: Topology, gw: Gateway, cases: BindCase[]) {
  const errors: string[] = [];
  for (const c of cases) {
    try {
      await caseBind(topo, gw, c);
    } catch (e) {
      errors.push((e as Error).message);
    }
  }
  if (errors.length) throw new CaseError(errors.join("\n"));
}

/**
 * The client gives up (its process is killed) while BIND waits for the peer:
 * the gateway must end the wait at once, close the listening socket, and log
 * the session.
 */
export async function caseBindGiveUp(topo: Topology, gw: Gateway, client: Client, dest: Dest) {
  const via = viaFor(gw, client);
  const peer = `${hostInUrl(DEST_ADDR[dest])}:0`;
  const gwAddr = GW_ADDR_TOWARD[dest];
  const ctx = `${client} bind(${peer}, ${via}), client killed while waiting`;
  const mark = gw.proc.log.length;
  const proc = topo.spawn(`bind-client-${client}-giveup`, client, [
    "deno",
    "run",
    "--cached-only",
    "--allow-net",
    BIND_CLIENT,
    via,
    peer,
  ]);
  try {
    const bound = await waitEvent(proc, ["bound", "error"]);
    if (bound.event !== "bound") fail(`${ctx}: BIND failed: ${JSON.stringify(bound)}`);
    const port = Number(bound.port);
    if (!(await isListening(topo.ns.gw, "tcp", gwAddr, port))) {
      fail(`${ctx}: the gateway does not listen on the BND ${hostInUrl(gwAddr)}:${port}`);
    }
    const killedAt = performance.now();
    await proc.stop(1000);
    await poll(
      `the gateway to close ${hostInUrl(gwAddr)}:${port}`,
      async () => !(await isListening(topo.ns.gw, "tcp", gwAddr, port)),
      3000,
    ).catch(() =>
      fail(`${ctx}: still listening on ${hostInUrl(gwAddr)}:${port} 3 s after the client left`)
    );
    const closedMs = Math.round(performance.now() - killedAt);
    const s = await waitSessionWhere(
      gw,
      mark,
      `${client} bind`,
      (s) => fromClient(client)(s) && s.command === "bind",
    );
    console.log(
      `  ${ctx}: listener ${
        hostInUrl(gwAddr)
      }:${port} closed ${closedMs} ms after the kill; gateway: reply ${s.reply}, ${s.reason}`,
    );
  } finally {
    await proc.stop(1000);
  }
}
