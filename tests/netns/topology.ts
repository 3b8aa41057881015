/**
 * Network-namespace topology for the RFC 3089 end-to-end suite.
 *
 *   c6 (IPv6-only client) ──┐                      ┌── d4 (IPv4-only destination)
 *                           ├── gw (dual-stack) ───┤
 *   c4 (IPv4-only client) ──┘   forwarding OFF     └── d6 (IPv6-only destination)
 *
 * Every namespace and veth carries a random per-run suffix. Only documentation
 * address ranges are used (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24,
 * 2001:db8::/32); no namespace has a default route, so nothing can leave.
 *
 * `createTopology()` builds it all, starts a dnsmasq in the gateway namespace
 * and one HTTP destination server in each destination namespace, and returns a
 * handle whose `teardown()` kills every process it started and deletes the
 * namespaces and their /etc/netns/<name> directories. Teardown also runs on
 * SIGINT/SIGTERM.
 *
 * Run this file directly to keep a topology up for manual exploration:
 *   deno run -A tests/netns/topology.ts
 */

export const ADDR = {
  /** Gateway address on the IPv4-only client link (192.0.2.0/24). */
  gw4: "192.0.2.1",
  c4: "192.0.2.2",
  /** Gateway address on the IPv6-only client link (2001:db8:1::/64). */
  gw6: "2001:db8:1::1",
  c6: "2001:db8:1::2",
  /** Gateway address on the IPv4 destination link (198.51.100.0/24). */
  gwToD4: "198.51.100.1",
  d4: "198.51.100.2",
  /** Gateway address on the IPv6 destination link (2001:db8:2::/64). */
  gwToD6: "2001:db8:2::1",
  d6: "2001:db8:2::2",
  /** dnsmasq, on the gateway's loopback: unreachable from every other namespace. */
  dns4: "203.0.113.53",
  dns6: "2001:db8:53::53",
  /** What the DNS server in d4 (UDP ASSOCIATE case) answers for NAMES.answer. */
  answer: "198.51.100.77",
} as const;

export const NAMES = {
  v4: "v4only.test", // A only -> d4
  v6: "v6only.test", // AAAA only -> d6
  dual: "dual.test", // A -> d4 and AAAA -> d6
  missing: "nxdomain.test", // NXDOMAIN
  d4dns: "dns4.test", // A -> d4: the DNS server in d4, by name (UDP ASSOCIATE case)
  answer: "answer.test", // answered only by the DNS server in d4, never by the gateway's
  mappedAny: "mapped-any.test", // AAAA ::ffff:0.0.0.0, which Linux dials as this host
  mappedLoopback: "mapped-lo.test", // AAAA ::ffff:127.0.0.1
  /** Name of the gateway in the clients' per-namespace /etc/hosts. */
  gateway: "gateway.test",
} as const;

export const DEST_PORT = 80;
export const BLOB_SIZE = 16 * 1024 * 1024;

const HERE = new URL(".", import.meta.url).pathname;
export const DEST_SERVER = `${HERE}dest_server.ts`;

export type Role = "gw" | "c4" | "c6" | "d4" | "d6";
export const ROLES: Role[] = ["gw", "c4", "c6", "d4", "d6"];

export interface RunResult {
  code: number;
  success: boolean;
  timedOut: boolean;
  stdout: string;
  stderr: string;
  elapsedMs: number;
}

export interface RunOptions {
  timeoutMs?: number;
  env?: Record<string, string>;
  stdin?: string;
}

const dec = new TextDecoder();
const MAX_LOG = 1 << 20;

/** Env for every process we start: no update checks, no prompts. */
const BASE_ENV: Record<string, string> = {
  DENO_NO_UPDATE_CHECK: "1",
  DENO_NO_PROMPT: "1",
  NO_COLOR: "1",
};

/** Run a command (optionally inside a namespace), bounded by a timeout (SIGKILL). */
export async function run(
  ns: string | null,
  argv: string[],
  opts: RunOptions = {},
): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 20_000;
  const full = ns ? ["ip", "netns", "exec", ns, ...argv] : argv;
  const started = performance.now();
  const child = new Deno.Command(full[0], {
    args: full.slice(1),
    stdin: opts.stdin !== undefined ? "piped" : "null",
    stdout: "piped",
    stderr: "piped",
    env: { ...BASE_ENV, ...opts.env },
  }).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }, timeoutMs);
  try {
    if (opts.stdin !== undefined) {
      const w = child.stdin.getWriter();
      await w.write(new TextEncoder().encode(opts.stdin));
      await w.close();
    }
    const out = await child.output();
    return {
      code: out.code,
      success: out.success && !timedOut,
      timedOut,
      stdout: dec.decode(out.stdout),
      stderr: dec.decode(out.stderr),
      elapsedMs: performance.now() - started,
    };
  } finally {
    clearTimeout(timer);
  }
}

/** Run and throw (with the command's output) unless it exits 0. */
export async function must(
  ns: string | null,
  argv: string[],
  opts: RunOptions = {},
): Promise<string> {
  const r = await run(ns, argv, opts);
  if (!r.success) {
    throw new Error(
      `command failed (code ${r.code}${r.timedOut ? ", timed out" : ""}): ` +
        `${ns ? `[netns ${ns}] ` : ""}${argv.join(" ")}\n${r.stdout}${r.stderr}`,
    );
  }
  return r.stdout;
}

/** A long-running process started inside a namespace, with its output captured. */
export class Proc {
  #log = "";
  #child: Deno.ChildProcess;
  #readers: Promise<void>[];
  readonly status: Promise<Deno.CommandStatus>;
  exited = false;

  constructor(
    readonly name: string,
    readonly ns: string,
    readonly argv: string[],
    env?: Record<string, string>,
  ) {
    this.#child = new Deno.Command("ip", {
      args: ["netns", "exec", ns, ...argv],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { ...BASE_ENV, ...env },
    }).spawn();
    this.#readers = [this.#pump(this.#child.stdout), this.#pump(this.#child.stderr)];
    this.status = this.#child.status.then((s) => {
      this.exited = true;
      return s;
    });
  }

  get pid(): number {
    return this.#child.pid;
  }

  /** Settles once stdout and stderr have been read to their end. */
  get drained(): Promise<void> {
    return Promise.allSettled(this.#readers).then(() => {});
  }

  /** Everything the process printed so far (stdout and stderr interleaved, capped). */
  get log(): string {
    return this.#log;
  }

  async #pump(stream: ReadableStream<Uint8Array>) {
    const d = new TextDecoder();
    for await (const chunk of stream) {
      this.#log += d.decode(chunk, { stream: true });
      if (this.#log.length > MAX_LOG) this.#log = this.#log.slice(-MAX_LOG / 2);
    }
  }

  /** Poll until `pred` holds (or the process died, or the timeout passed). */
  async waitFor(
    what: string,
    pred: () => boolean | Promise<boolean>,
    timeoutMs = 15_000,
  ): Promise<void> {
    const deadline = performance.now() + timeoutMs;
    let delay = 20;
    while (true) {
      if (await pred()) return;
      if (this.exited) {
        throw new Error(`${this.name} exited before ${what}; output:\n${this.log}`);
      }
      if (performance.now() > deadline) {
        throw new Error(
          `${this.name}: timed out after ${timeoutMs} ms waiting for ${what}; output:\n${this.log}`,
        );
      }
      await sleep(delay);
      delay = Math.min(delay * 2, 200);
    }
  }

  /** SIGTERM, then SIGKILL after `graceMs`; always waits for exit. */
  async stop(graceMs = 3000): Promise<void> {
    if (!this.exited) {
      try {
        this.#child.kill("SIGTERM");
      } catch { /* gone */ }
      let timer: ReturnType<typeof setTimeout> | undefined;
      const killed = await Promise.race([
        this.status.then(() => false),
        new Promise<boolean>((r) => timer = setTimeout(() => r(true), graceMs)),
      ]);
      clearTimeout(timer);
      if (killed && !this.exited) {
        try {
          this.#child.kill("SIGKILL");
        } catch { /* gone */ }
      }
    }
    await this.status;
    await Promise.allSettled(this.#readers);
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Poll `pred` until true, bounded. */
export async function poll(
  what: string,
  pred: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  let delay = 20;
  while (!(await pred())) {
    if (performance.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await sleep(delay);
    delay = Math.min(delay * 2, 200);
  }
}

/** Is something listening on addr:port (tcp or udp) inside namespace `ns`? Uses `ss -N`. */
export async function isListening(
  ns: string,
  proto: "tcp" | "udp",
  addr: string,
  port: number,
): Promise<boolean> {
  const r = await run(null, ["ss", "-N", ns, "-Hln", proto === "tcp" ? "-t" : "-u"], {
    timeoutMs: 5000,
  });
  if (!r.success) return false;
  const want = addr.includes(":") ? `[${addr}]:${port}` : `${addr}:${port}`;
  return r.stdout.split("\n").some((l) => l.split(/\s+/).includes(want));
}

export async function sha256Hex(data: Uint8Array | ArrayBuffer): Promise<string> {
  const d = await crypto.subtle.digest("SHA-256", data as BufferSource);
  return Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Deterministic pseudo-random bytes (xorshift32), so failures are reproducible. */
export function makeBlob(size: number, seed = 0x3089): Uint8Array {
  const out = new Uint8Array(size);
  const view = new DataView(out.buffer);
  let x = seed >>> 0 || 1;
  for (let i = 0; i + 4 <= size; i += 4) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    view.setUint32(i, x, true);
  }
  return out;
}

// ---------------------------------------------------------------------------
// Environment check

export interface NetnsSupport {
  ok: boolean;
  reason: string;
}

/** Root + a working `ip netns` + the binaries we need. */
export async function checkNetnsSupport(binaries: string[] = []): Promise<NetnsSupport> {
  try {
    return await probeNetns(binaries);
  } catch (e) {
    // e.g. NotCapable when run without --allow-sys / --allow-run.
    return { ok: false, reason: `cannot probe: ${(e as Error).message.split("\n")[0]}` };
  }
}

async function probeNetns(binaries: string[]): Promise<NetnsSupport> {
  if (Deno.build.os !== "linux") {
    return { ok: false, reason: `needs Linux (this is ${Deno.build.os})` };
  }
  if (Deno.uid() !== 0) return { ok: false, reason: `needs root (uid is ${Deno.uid()})` };
  for (const b of ["ip", "ss", "sysctl", "setsid", ...binaries]) {
    const r = await run(null, ["sh", "-c", `command -v ${b}`], { timeoutMs: 5000 }).catch(() =>
      null
    );
    if (!r?.success) return { ok: false, reason: `needs '${b}' on PATH` };
  }
  const probe = `dsprobe${randomSuffix()}`;
  const add = await run(null, ["ip", "netns", "add", probe], { timeoutMs: 5000 });
  if (!add.success) {
    return { ok: false, reason: `'ip netns add' failed: ${(add.stderr || add.stdout).trim()}` };
  }
  try {
    const ex = await run(probe, ["true"], { timeoutMs: 5000 });
    if (!ex.success) {
      return { ok: false, reason: `'ip netns exec' failed: ${(ex.stderr || ex.stdout).trim()}` };
    }
  } finally {
    await run(null, ["ip", "netns", "del", probe], { timeoutMs: 5000 });
  }
  return { ok: true, reason: "" };
}

/**
 * Turn a support check into Deno.test's `ignore`: skipped with one printed line,
 * unless DUALSOCKS_REQUIRE_NETNS=1, where the test runs and fails with the reason.
 */
export function ignoreUnlessSupported(label: string, s: NetnsSupport): boolean {
  if (s.ok) return false;
  if (requireNetns()) return false;
  console.log(
    `[netns] skipping ${label}: ${s.reason} (set DUALSOCKS_REQUIRE_NETNS=1 to make this a failure)`,
  );
  return true;
}

/** DUALSOCKS_REQUIRE_NETNS=1 (CI): a suite that cannot run must fail, not skip. */
export function requireNetns(): boolean {
  try {
    return Deno.env.get("DUALSOCKS_REQUIRE_NETNS") === "1";
  } catch {
    return false; // no --allow-env: cannot be required
  }
}

export function randomSuffix(): string {
  const b = crypto.getRandomValues(new Uint8Array(3));
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

// ---------------------------------------------------------------------------
// Topology

const live = new Set<Topology>();
let signalsInstalled = false;
const onSignal = async () => {
  console.error("[netns] signal received: tearing down namespaces");
  await Promise.allSettled([...live].map((t) => t.teardown()));
  Deno.exit(130);
};
function installSignals() {
  if (signalsInstalled) return;
  signalsInstalled = true;
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
}
function removeSignals() {
  if (!signalsInstalled || live.size > 0) return;
  signalsInstalled = false;
  Deno.removeSignalListener("SIGINT", onSignal);
  Deno.removeSignalListener("SIGTERM", onSignal);
}

export interface TopologyOptions {
  /** Start dnsmasq in the gateway namespace (default true). */
  dns?: boolean;
  /** Start the two destination HTTP servers (default true). */
  destinations?: boolean;
}

/** How every dnsmasq of the testbed runs: foreground, no system files, answers only what it is told. */
const DNSMASQ = [
  "dnsmasq",
  "--no-daemon",
  "--conf-file=/dev/null",
  "--no-resolv",
  "--no-hosts",
  "--no-poll",
  "--bind-interfaces",
  "--port=53",
  "--user=root",
  "--pid-file=",
];

export class Topology {
  readonly id = randomSuffix();
  /** Namespace names, e.g. ns.gw = "ds1a2b3c-gw". */
  readonly ns: Record<Role, string>;
  /** Interface names: gateway side gw-c4-<id> ..., other side c4-<id> ... */
  readonly ifaces: Record<Exclude<Role, "gw">, { gw: string; peer: string }>;
  readonly procs: Proc[] = [];
  tmpDir = "";
  blobPath = "";
  blobSha256 = "";
  #created: string[] = [];
  #tornDown = false;
  #reaper?: Deno.ChildProcess;

  constructor() {
    this.ns = Object.fromEntries(ROLES.map((r) => [r, `ds${this.id}-${r}`])) as Record<
      Role,
      string
    >;
    this.ifaces = {
      c4: { gw: `gw-c4-${this.id}`, peer: `c4-${this.id}` },
      c6: { gw: `gw-c6-${this.id}`, peer: `c6-${this.id}` },
      d4: { gw: `gw-d4-${this.id}`, peer: `d4-${this.id}` },
      d6: { gw: `gw-d6-${this.id}`, peer: `d6-${this.id}` },
    };
  }

  /** Run a command in the namespace of `role`. */
  exec(role: Role, argv: string[], opts?: RunOptions): Promise<RunResult> {
    return run(this.ns[role], argv, opts);
  }

  /** Start a tracked long-running process in the namespace of `role`. */
  spawn(name: string, role: Role, argv: string[], env?: Record<string, string>): Proc {
    const p = new Proc(name, this.ns[role], argv, env);
    this.procs.push(p);
    return p;
  }

  /** Write /etc/netns/<ns>/<file>; `ip netns exec` bind-mounts it over /etc/<file>. */
  async writeEtc(role: Role, file: string, content: string) {
    const dir = `/etc/netns/${this.ns[role]}`;
    await Deno.mkdir(dir, { recursive: true });
    await Deno.writeTextFile(`${dir}/${file}`, content);
  }

  async setup(opts: TopologyOptions = {}): Promise<void> {
    live.add(this);
    installSignals();
    this.tmpDir = await Deno.makeTempDir({ prefix: `dualsocks-netns-${this.id}-` });
    this.#startReaper();

    // Namespaces, with sysctls set before any interface exists in them.
    for (const role of ROLES) {
      await must(null, ["ip", "netns", "add", this.ns[role]]);
      this.#created.push(this.ns[role]);
      const sys = [
        "net.ipv4.ip_forward=0",
        "net.ipv6.conf.all.forwarding=0",
        "net.ipv6.conf.all.accept_dad=0",
        "net.ipv6.conf.default.accept_dad=0",
        "net.ipv6.conf.all.accept_ra=0",
        "net.ipv6.conf.default.accept_ra=0",
      ];
      if (role === "c4" || role === "d4") {
        sys.push("net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1");
      }
      await must(this.ns[role], ["sysctl", "-q", "-w", ...sys]);
      await must(null, ["ip", "-n", this.ns[role], "link", "set", "lo", "up"]);
    }

    // veth pairs, created directly inside the gateway namespace (no name can
    // collide in the root namespace, and deleting the namespaces deletes them).
    for (const role of ["c4", "c6", "d4", "d6"] as const) {
      const { gw, peer } = this.ifaces[role];
      await must(null, [
        "ip",
        "-n",
        this.ns.gw,
        "link",
        "add",
        gw,
        "type",
        "veth",
        "peer",
        "name",
        peer,
        "netns",
        this.ns[role],
      ]);
      if (role === "c4" || role === "d4") {
        // Belt and braces: IPv6 off on the interface itself too.
        await must(this.ns[role], ["sysctl", "-q", "-w", `net.ipv6.conf.${peer}.disable_ipv6=1`]);
      }
    }

    const addr = async (role: Role, dev: string, cidr: string) => {
      const v6 = cidr.includes(":");
      await must(null, [
        "ip",
        "-n",
        this.ns[role],
        ...(v6 ? ["-6"] : ["-4"]),
        "addr",
        "add",
        cidr,
        "dev",
        dev,
        ...(v6 ? ["nodad"] : []),
      ]);
    };
    const I = this.ifaces;
    await addr("gw", I.c4.gw, `${ADDR.gw4}/24`);
    await addr("c4", I.c4.peer, `${ADDR.c4}/24`);
    await addr("gw", I.c6.gw, `${ADDR.gw6}/64`);
    await addr("c6", I.c6.peer, `${ADDR.c6}/64`);
    await addr("gw", I.d4.gw, `${ADDR.gwToD4}/24`);
    await addr("d4", I.d4.peer, `${ADDR.d4}/24`);
    await addr("gw", I.d6.gw, `${ADDR.gwToD6}/64`);
    await addr("d6", I.d6.peer, `${ADDR.d6}/64`);
    await addr("gw", "lo", `${ADDR.dns4}/32`);
    await addr("gw", "lo", `${ADDR.dns6}/128`);
    for (const role of ["c4", "c6", "d4", "d6"] as const) {
      await must(null, ["ip", "-n", this.ns.gw, "link", "set", I[role].gw, "up"]);
      await must(null, ["ip", "-n", this.ns[role], "link", "set", I[role].peer, "up"]);
    }
    for (const role of ["c4", "c6", "d4", "d6"] as const) {
      await poll(`${I[role].peer} carrier`, async () => {
        const out = await must(null, [
          "ip",
          "-n",
          this.ns[role],
          "-o",
          "link",
          "show",
          "dev",
          I[role].peer,
        ]);
        return out.includes("LOWER_UP");
      }, 5000);
    }

    // Per-namespace /etc files. The clients' resolvers point at their own loopback
    // (nothing listens there), so a stray lookup fails fast and never leaves.
    // The IPv6-only client knows the gateway by name (Deno's proxy URL cannot hold
    // a bracketed IPv6 literal); nothing else is in any client's hosts file.
    const resolvLocal = (lo: string) => `nameserver ${lo}\noptions timeout:1 attempts:1\n`;
    await this.writeEtc("c4", "resolv.conf", resolvLocal("127.0.0.1"));
    await this.writeEtc("c4", "hosts", `127.0.0.1 localhost\n${ADDR.gw4} ${NAMES.gateway}\n`);
    await this.writeEtc("c6", "resolv.conf", resolvLocal("::1"));
    await this.writeEtc("c6", "hosts", `::1 localhost\n${ADDR.gw6} ${NAMES.gateway}\n`);
    await this.writeEtc("d4", "resolv.conf", resolvLocal("127.0.0.1"));
    await this.writeEtc("d6", "resolv.conf", resolvLocal("::1"));
    // The gateway's system resolver (used by Dante, getent) asks the local dnsmasq.
    await this.writeEtc(
      "gw",
      "resolv.conf",
      `nameserver ${ADDR.dns4}\noptions timeout:1 attempts:2\n`,
    );
    await this.writeEtc("gw", "hosts", `127.0.0.1 localhost\n::1 localhost\n`);

    if (opts.dns !== false) await this.startDns();
    if (opts.destinations !== false) await this.startDestinations();
  }

  async startDns(): Promise<Proc> {
    const p = this.spawn("dnsmasq", "gw", [
      ...DNSMASQ,
      `--listen-address=${ADDR.dns4}`,
      `--listen-address=${ADDR.dns6}`,
      "--local=/test/",
      `--host-record=${NAMES.v4},${ADDR.d4}`,
      `--host-record=${NAMES.v6},${ADDR.d6}`,
      `--host-record=${NAMES.dual},${ADDR.d4},${ADDR.d6}`,
      `--host-record=${NAMES.d4dns},${ADDR.d4}`,
      `--host-record=${NAMES.mappedAny},::ffff:0.0.0.0`,
      `--host-record=${NAMES.mappedLoopback},::ffff:127.0.0.1`,
      "--log-queries",
      "--log-facility=-",
    ]);
    await p.waitFor(
      "dnsmasq UDP 53",
      async () =>
        await isListening(this.ns.gw, "udp", ADDR.dns4, 53) &&
        await isListening(this.ns.gw, "udp", ADDR.dns6, 53),
    );
    return p;
  }

  /**
   * A second dnsmasq, in the IPv4-only destination d4, on d4's address port 53:
   * the DNS server on the IPv4-only side that the IPv6-only client queries over
   * UDP ASSOCIATE. It answers only NAMES.answer (A ADDR.answer) and logs every
   * query with its source address. Tracked like every process of the topology.
   */
  async startDestinationDns(): Promise<Proc> {
    const p = this.spawn("dnsmasq-d4", "d4", [
      ...DNSMASQ,
      `--listen-address=${ADDR.d4}`,
      `--address=/${NAMES.answer}/${ADDR.answer}`,
      "--log-queries",
      "--log-facility=-",
    ]);
    await p.waitFor("dnsmasq-d4 UDP 53", () => isListening(this.ns.d4, "udp", ADDR.d4, 53));
    return p;
  }

  async startDestinations(): Promise<void> {
    const blob = makeBlob(BLOB_SIZE);
    this.blobSha256 = await sha256Hex(blob);
    this.blobPath = `${this.tmpDir}/blob.bin`;
    await Deno.writeFile(this.blobPath, blob);
    const start = (role: "d4" | "d6", host: string) => {
      const p = this.spawn(`dest-${role}`, role, [
        "deno",
        "run",
        "--cached-only",
        "--allow-net",
        `--allow-read=${this.blobPath}`,
        DEST_SERVER,
        role,
        host,
        String(DEST_PORT),
        this.blobPath,
      ]);
      return p.waitFor(
        `${role} HTTP server`,
        () => isListening(this.ns[role], "tcp", host, DEST_PORT),
        30_000,
      );
    };
    await Promise.all([start("d4", ADDR.d4), start("d6", ADDR.d6)]);
  }

  /**
   * Make packets from the gateway to a destination vanish (no RST, no ICMP):
   * a permanent neighbour entry with a MAC nobody owns, so frames go out on the
   * veth and the destination's kernel drops them as PACKET_OTHERHOST.
   * (This kernel has no matchall/gact tc classifiers and no nft/iptables binary.)
   * Returns a function that restores normal delivery.
   */
  async blackhole(role: "d4" | "d6"): Promise<() => Promise<void>> {
    const ip = role === "d4" ? ADDR.d4 : ADDR.d6;
    const dev = this.ifaces[role].gw;
    await must(null, [
      "ip",
      "-n",
      this.ns.gw,
      "neigh",
      "replace",
      ip,
      "lladdr",
      "02:00:5e:00:53:99",
      "dev",
      dev,
      "nud",
      "permanent",
    ]);
    return async () => {
      await run(null, ["ip", "-n", this.ns.gw, "neigh", "del", ip, "dev", dev]);
    };
  }

  /**
   * A watchdog in its own session (so a terminal's Ctrl-C does not reach it)
   * that waits for this Deno process to disappear and then removes whatever
   * this topology left. `deno test` handles SIGINT itself and exits without
   * running our listeners, and nothing runs after SIGKILL: this covers both.
   * A normal teardown removes everything first, then kills the watchdog.
   */
  #startReaper() {
    const q = (x: string) => `'${x.replaceAll("'", "'\\''")}'`;
    const nss = ROLES.map((r) => q(this.ns[r])).join(" ");
    const script = [
      "trap '' INT TERM HUP",
      `while kill -0 ${Deno.pid} 2>/dev/null; do sleep 0.5; done`,
      `for ns in ${nss}; do`,
      '  for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done',
      '  ip netns del "$ns" 2>/dev/null',
      '  rm -rf "/etc/netns/$ns"',
      "done",
      "rmdir /etc/netns 2>/dev/null",
      `rm -rf ${q(this.tmpDir)}`,
    ].join("\n");
    try {
      this.#reaper = new Deno.Command("setsid", {
        args: ["sh", "-c", script],
        stdin: "null",
        stdout: "null",
        stderr: "null",
      }).spawn();
      this.#reaper.unref();
    } catch (e) {
      console.error(`[netns] no cleanup watchdog (setsid unavailable?): ${e}`);
    }
  }

  async teardown(): Promise<void> {
    if (this.#tornDown) return;
    this.#tornDown = true;
    await Promise.allSettled(this.procs.map((p) => p.stop()));
    for (const ns of this.#created) {
      // Anything still running inside our namespaces was started by this run.
      const pids = await run(null, ["ip", "netns", "pids", ns], { timeoutMs: 5000 }).catch(() =>
        null
      );
      for (const pid of (pids?.stdout ?? "").split(/\s+/).filter(Boolean)) {
        try {
          Deno.kill(Number(pid), "SIGKILL");
        } catch { /* gone */ }
      }
      await run(null, ["ip", "netns", "del", ns], { timeoutMs: 10_000 }).catch(() => null);
      await Deno.remove(`/etc/netns/${ns}`, { recursive: true }).catch(() => {});
    }
    // /etc/netns itself is left in place only if something else uses it.
    await Deno.remove("/etc/netns").catch(() => {});
    if (this.tmpDir) await Deno.remove(this.tmpDir, { recursive: true }).catch(() => {});
    if (this.#reaper) {
      this.#reaper.ref(); // keep the event loop alive while we wait for it
      try {
        this.#reaper.kill("SIGKILL");
      } catch { /* gone */ }
      await this.#reaper.status;
    }
    live.delete(this);
    removeSignals();
  }
}

export async function createTopology(opts?: TopologyOptions): Promise<Topology> {
  const t = new Topology();
  try {
    await t.setup(opts);
  } catch (e) {
    await t.teardown();
    throw e;
  }
  return t;
}

if (import.meta.main) {
  const t = await createTopology();
  console.log(`topology ${t.id} up; namespaces: ${Object.values(t.ns).join(" ")}`);
  console.log(`try: ip netns exec ${t.ns.gw} getent ahosts ${NAMES.dual}`);
  console.log("Ctrl-C to tear down");
  await new Promise(() => {});
}

/**
 * Registers a testbed test: skipped (or, under DUALSOCKS_REQUIRE_NETNS=1,
 * failed) when namespaces cannot run; otherwise caches `cache` (the scripts
 * that will run --cached-only in namespaces without a route out), builds a
 * fresh topology, runs `body`, and tears the topology down even when it fails.
 */
export function testbedTest(
  name: string,
  support: NetnsSupport,
  body: (t: Deno.TestContext, topo: Topology) => Promise<void>,
  options: { cache?: readonly string[] } = {},
): void {
  Deno.test({
    name,
    ignore: ignoreUnlessSupported(name, support),
    sanitizeOps: false,
    sanitizeResources: false,
    async fn(t) {
      if (!support.ok) {
        throw new Error(`DUALSOCKS_REQUIRE_NETNS=1 but ${name} cannot run: ${support.reason}`);
      }
      for (const entry of options.cache ?? []) {
        const cached = await run(null, ["deno", "cache", "--quiet", entry], {
          timeoutMs: 180_000,
        });
        if (!cached.success) {
          throw new Error(`deno cache ${entry} failed (${cached.code}):\n${cached.stderr}`);
        }
      }
      const topo = await createTopology();
      try {
        await body(t, topo);
      } finally {
        await topo.teardown();
      }
    },
  });
}
