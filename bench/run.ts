/**
 * dualsocks benchmark: direct vs Dante vs microsocks vs the floor relay vs
 * dualsocks at its defaults (info logging, admin API on) and with
 * `--log-level error`, on loopback. Throughput (iperf3 via proxychains4),
 * new sessions per second with handshake latency (bench/loadgen.c), memory
 * per idle relay from a fresh process, and the relay's bandwidth-limit cost
 * (bench/bandwidth.ts).
 *
 * ```sh
 * deno run -A bench/run.ts                 # 3 rounds, ~11 minutes
 * deno run -A bench/run.ts --quick         # 1 short round, smoke test
 * deno run -A bench/run.ts --only dante,dualsocks --rounds 5
 * deno run -A bench/run.ts --profile       # + CPU profile of dualsocks
 * ```
 *
 * Writes bench/results/latest.md and bench/results/latest.json.
 * See bench/README.md.
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  cpuSeconds,
  freePort,
  killAll,
  LineReader,
  type Managed,
  type MemSample,
  nofileLimit,
  run,
  sampleTree,
  sleep,
  spawnManaged,
  stopManaged,
  StoppingError,
  waitPort,
  withTimeout,
} from "./proc.ts";
import { type CpuProfile, Inspector, profileTotals, selfTimes } from "./profile.ts";

const BENCH = new URL(".", import.meta.url).pathname.replace(/\/$/, "");
const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const NOFILE = 20000;
const ALL = [
  "direct",
  "dante",
  "microsocks",
  "floor",
  "dualsocks",
  "dualsocks-quiet",
  "bandwidth",
] as const;
/** What runs without `--only`: everything. */
const DEFAULT_ONLY: readonly Name[] = ALL;
type Name = typeof ALL[number];
/** Names that are not a proxy: "bandwidth" is the in-process relay case (bench/bandwidth.ts). */
const NOT_PROXIES: readonly Name[] = ["bandwidth"];
/** dualsocks at its defaults, and with --log-level error. */
const DUALSOCKS: readonly Name[] = ["dualsocks", "dualsocks-quiet"];
/** Logging does not change bytes moved: throughput runs once, at the defaults. */
const NO_THROUGHPUT: readonly Name[] = ["dualsocks-quiet"];

// ------------------------------------------------------------- options --

const HELP = `usage: deno run -A bench/run.ts [options]

  --rounds N           rounds (default 3); every round restarts the proxies
  --quick              1 round, 1 s iperf3 runs, 1.5 s session runs, 2000 relays
  --only a,b,...       subset of: ${ALL.join(",")} (default: all;
                       floor is the feature-less Deno relay in bench/floor_relay.ts,
                       dualsocks runs at its defaults, dualsocks-quiet with
                       --log-level error, bandwidth is bench/bandwidth.ts)
  --iperf-seconds S    iperf3 -t (default 3)
  --session-seconds S  measurement time per sessions/s run (default 3)
  --session-warm S     unmeasured 32-client load before them (default 3; 0 = off)
  --hold N,M,...       idle relays for the memory test, each counted from a
                       freshly started proxy (default 2000,8000)
  --settle S           for dualsocks, also wait up to S s (default 40; 0 = off)
                       with the relays held and idle for V8's memory reducer,
                       which gives back the young generation that opening
                       them grew (V8's own delays are 8-30 s; the start
                       task's --v8-flags shorten them to 1 s)
  --close sink|client  who closes a loadgen session first (default sink)
  --profile            afterwards, CPU-profile dualsocks under the 256-client
                       sessions load (V8 inspector) -> results/*.cpuprofile
  --deno-flags "..."   deno run flags for dualsocks (default: those of the
                       start task in deno.json, as users run it)
  --out DIR            results directory (default bench/results)
  -h, --help
`;

interface Options {
  rounds: number;
  quick: boolean;
  only: Name[];
  iperfSeconds: number;
  sessionSeconds: number;
  warmup: number;
  /** Seconds of unmeasured 32-client load before the sessions runs. */
  sessionWarm: number;
  hold: number[];
  holdConcurrency: number;
  /** Seconds to wait, relays held, for the heap to settle (dualsocks only). */
  settle: number;
  close: "sink" | "client";
  profile: boolean;
  /** `--deno-flags`; by default those of `deno task start`. */
  denoFlags?: string[];
  outDir: string;
}

function parseOptions(args: string[]): Options {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      rounds: { type: "string" },
      quick: { type: "boolean" },
      only: { type: "string" },
      "iperf-seconds": { type: "string" },
      "session-seconds": { type: "string" },
      "session-warm": { type: "string" },
      hold: { type: "string" },
      settle: { type: "string" },
      close: { type: "string" },
      profile: { type: "boolean" },
      "deno-flags": { type: "string" },
      out: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(HELP);
    Deno.exit(0);
  }
  const quick = values.quick ?? false;
  const num = (v: string | undefined, d: number, lo: number, hi: number) => {
    if (v === undefined) return d;
    const n = Number(v);
    if (!Number.isFinite(n) || n < lo || n > hi) {
      throw new Error(`expected a number in [${lo}, ${hi}], found "${v}"`);
    }
    return n;
  };
  const only = (values.only ?? DEFAULT_ONLY.join(",")).split(",").map((s) => s.trim())
    .filter(Boolean);
  for (const o of only) {
    if (!(ALL as readonly string[]).includes(o)) {
      throw new Error(`--only: unknown "${o}" (known: ${ALL.join(", ")})`);
    }
  }
  const close = values.close ?? "sink";
  if (close !== "sink" && close !== "client") {
    throw new Error(`--close: expected sink or client`);
  }
  return {
    rounds: Math.round(num(values.rounds, quick ? 1 : 3, 1, 20)),
    quick,
    only: ALL.filter((n) => only.includes(n)),
    iperfSeconds: Math.round(
      num(values["iperf-seconds"], quick ? 1 : 3, 1, 30),
    ),
    sessionSeconds: num(values["session-seconds"], quick ? 1.5 : 3, 0.5, 60),
    warmup: quick ? 0.3 : 0.5,
    sessionWarm: num(values["session-warm"], quick ? 0.5 : 3, 0, 60),
    hold: (values.hold ?? (quick ? "2000" : "2000,8000")).split(",").map((v) =>
      Math.round(num(v.trim(), 0, 1, 9000))
    ),
    holdConcurrency: 256,
    settle: num(values.settle, quick ? 0 : 40, 0, 80),
    close,
    profile: values.profile ?? false,
    denoFlags: values["deno-flags"]?.split(/\s+/).filter(Boolean),
    outDir: values.out ?? `${BENCH}/results`,
  };
}

// --------------------------------------------------------------- tools --

function findExe(name: string): string | undefined {
  const dirs = (Deno.env.get("PATH") ?? "").split(":").concat([
    "/usr/sbin",
    "/sbin",
    "/usr/local/sbin",
  ]);
  for (const d of dirs) {
    if (!d) continue;
    try {
      const st = Deno.statSync(`${d}/${name}`);
      if (st.isFile && ((st.mode ?? 0) & 0o111)) return `${d}/${name}`;
    } catch {
      // not here
    }
  }
  return undefined;
}

const TOOL_PACKAGES: Record<string, string> = {
  iperf3: "iperf3",
  proxychains4: "proxychains4",
  danted: "dante-server",
  microsocks: "microsocks",
  cc: "gcc",
  setsid: "util-linux",
  bash: "bash",
};

function checkTools(opts: Options): Record<string, string> {
  const need = ["iperf3", "proxychains4", "cc", "setsid", "bash"];
  if (opts.only.includes("dante")) need.push("danted");
  if (opts.only.includes("microsocks")) need.push("microsocks");
  const found: Record<string, string> = {};
  const missing: string[] = [];
  for (const t of need) {
    const p = findExe(t);
    if (p) found[t] = p;
    else missing.push(t);
  }
  if (missing.length) {
    const pkgs = [...new Set(missing.map((m) => TOOL_PACKAGES[m] ?? m))];
    console.error(
      `bench: missing tools: ${missing.join(", ")}\n` +
        `  install with: apt-get install -y ${pkgs.join(" ")}`,
    );
    Deno.exit(1);
  }
  return found;
}

async function buildLoadgen(): Promise<string> {
  const dir = `${BENCH}/build`;
  Deno.mkdirSync(dir, { recursive: true });
  const out = `${dir}/loadgen`;
  const r = await run("cc", "cc", [
    "-O2",
    "-Wall",
    "-Wextra",
    "-o",
    out,
    `${BENCH}/loadgen.c`,
    "-lm",
  ], 120000);
  if (r.code !== 0) {
    throw new Error(`building loadgen failed:\n${r.stdout}${r.stderr}`);
  }
  if (r.stderr.trim()) console.error(r.stderr.trim());
  return out;
}

async function firstLine(cmd: string, args: string[]): Promise<string> {
  try {
    const r = await run(cmd, cmd, args, 10000);
    return (r.stdout + r.stderr).trim().split("\n")[0] ?? "";
  } catch {
    return "";
  }
}

async function machineInfo(tools: Record<string, string>) {
  const cpu = Deno.readTextFileSync("/proc/cpuinfo").match(
    /^model name\s*:\s*(.*)$/m,
  )?.[1] ?? "?";
  const memKiB = Number(
    Deno.readTextFileSync("/proc/meminfo").match(/^MemTotal:\s+(\d+)/m)?.[1] ??
      0,
  );
  const pkg = (p: string) => firstLine("dpkg-query", ["-W", "-f=${Version}", p]);
  return {
    date: new Date().toISOString(),
    nproc: navigator.hardwareConcurrency,
    kernel: Deno.osRelease(),
    cpu,
    memGiB: Math.round(memKiB / 1024 / 1024 * 10) / 10,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    iperf3: await firstLine(tools.iperf3, ["--version"]),
    cc: await firstLine("cc", ["--version"]),
    dante: await pkg("dante-server"),
    microsocks: await pkg("microsocks"),
    proxychains4: await pkg("proxychains4"),
    loadavg_start: Deno.readTextFileSync("/proc/loadavg").trim(),
    cpu_ticks_start: cpuTicks(),
    tcp_tw_reuse: Deno.readTextFileSync("/proc/sys/net/ipv4/tcp_tw_reuse")
      .trim(),
    ip_local_port_range: Deno.readTextFileSync(
      "/proc/sys/net/ipv4/ip_local_port_range",
    ).trim().replace(/\s+/, "-"),
  };
}

/** The machine's CPU time so far, from the `cpu` line of /proc/stat: all and stolen, in ticks. */
function cpuTicks(): { total: number; steal: number } {
  const f = Deno.readTextFileSync("/proc/stat").split("\n")[0].trim().split(/\s+/).slice(1)
    .map(Number);
  // user nice system idle iowait irq softirq steal guest guest_nice (guests are in user)
  return { total: f.slice(0, 8).reduce((a, b) => a + b, 0), steal: f[7] ?? 0 };
}

// ------------------------------------------------------------- proxies --

/**
 * The flags `deno task start` gives `deno run` (deno.json: "deno run FLAGS
 * main.ts"), so that dualsocks runs here as users run it.
 */
function startTaskFlags(): string[] {
  const json = JSON.parse(Deno.readTextFileSync(`${ROOT}/deno.json`));
  const task: string = json.tasks?.start ?? "";
  const m = task.match(/^deno run (.*?)\s*main\.ts\b/);
  if (!m) {
    throw new Error(`deno.json tasks.start: expected "deno run FLAGS main.ts", found "${task}"`);
  }
  return m[1].split(/\s+/).filter(Boolean);
}

interface Running {
  name: Name;
  port: number;
  m?: Managed;
  log?: string;
  proxychainsConf?: string;
  nofile?: number;
}

function logTail(file: string | undefined, lines = 15): string {
  if (!file) return "";
  try {
    return Deno.readTextFileSync(file).trim().split("\n").slice(-lines).join(
      "\n",
    );
  } catch {
    return "";
  }
}

function logLines(file: string | undefined): string[] {
  if (!file) return [];
  try {
    return Deno.readTextFileSync(file).split("\n").filter((l) => l.trim());
  } catch {
    return [];
  }
}

/** `exec CMD` under bash with the fd soft limit raised, stderr to LOGF. */
function wrapped(cmd: string, args: string[]): [string, string[]] {
  return ["bash", [
    "-c",
    `ulimit -Sn ${NOFILE} || exit 97; exec "$0" "$@" >/dev/null 2>>"$LOGF"`,
    cmd,
    ...args,
  ]];
}

async function startProxy(
  name: Name,
  tmp: string,
  tools: Record<string, string>,
  opts: Options,
  extraDenoFlags: string[] = [],
  readyTimeoutMs = 20000,
): Promise<Running> {
  const port = freePort();
  const r: Running = { name, port };
  if (name === "direct") return r;
  const log = `${tmp}/${name}-${port}.log`;
  r.log = log;
  let cmd: string;
  let args: string[];
  const env: Record<string, string> = { LOGF: log };
  let cwd: string | undefined;
  if (name === "dante") {
    const conf = `${tmp}/danted-${port}.conf`;
    Deno.writeTextFileSync(
      conf,
      `# generated by bench/run.ts
logoutput: ${log}
internal: 127.0.0.1 port = ${port}
external: 127.0.0.1
clientmethod: none
socksmethod: none
user.privileged: root
user.unprivileged: nobody
client pass {
  from: 127.0.0.0/8 to: 0.0.0.0/0
}
socks pass {
  from: 127.0.0.0/8 to: 0.0.0.0/0
}
`,
    );
    [cmd, args] = wrapped(tools.danted, [
      "-f",
      conf,
      "-p",
      `${tmp}/danted-${port}.pid`,
    ]);
  } else if (name === "microsocks") {
    // microsocks 1.0.3 has no -q; it logs every connection to stderr.
    env.LOGF = "/dev/null";
    r.log = undefined;
    [cmd, args] = wrapped(tools.microsocks, [
      "-i",
      "127.0.0.1",
      "-p",
      String(port),
    ]);
  } else if (name === "floor") {
    env.LOGF = "/dev/null";
    r.log = undefined;
    [cmd, args] = wrapped(Deno.execPath(), [
      "run",
      "--allow-net",
      `${BENCH}/floor_relay.ts`,
      "127.0.0.1",
      String(port),
    ]);
  } else {
    // At its defaults (default config, info logging to stderr, the admin API
    // on, on a free port since two run side by side); "dualsocks-quiet" adds
    // --log-level error, as operators who do not want a line per session run it.
    cwd = ROOT;
    [cmd, args] = wrapped(Deno.execPath(), [
      "run",
      ...(opts.denoFlags ?? startTaskFlags()),
      ...extraDenoFlags,
      "main.ts",
      "--listen",
      `127.0.0.1:${port}`,
      "--admin",
      `127.0.0.1:${freePort()}`,
      ...(name === "dualsocks-quiet" ? ["--log-level", "error"] : []),
    ]);
  }
  r.m = spawnManaged(name, cmd, args, { env, cwd });
  const ok = await waitPort(port, readyTimeoutMs, r.m);
  if (!ok) {
    const st = r.m.exitStatus;
    await stopManaged(r.m);
    throw new Error(
      `${name} did not start (${st ? `exit code ${st.code}` : "port not accepting"})\n${
        logTail(r.log)
      }`,
    );
  }
  r.nofile = nofileLimit(r.m.pid);
  const pc = `${tmp}/proxychains-${port}.conf`;
  Deno.writeTextFileSync(pc, proxychainsConf(port));
  r.proxychainsConf = pc;
  return r;
}

function proxychainsConf(port: number): string {
  return `# generated by bench/run.ts
strict_chain
quiet_mode
tcp_read_time_out 15000
tcp_connect_time_out 8000
[ProxyList]
socks5 127.0.0.1 ${port}
`;
}

// --------------------------------------------------------------- tests --

interface Results {
  values: Record<string, Partial<Record<Name, number[]>>>;
  /**
   * The same values by round, for ratios taken within a round (a metric
   * recorded more than once in a round keeps its last value here).
   */
  byRound: Record<string, Partial<Record<Name, Record<number, number>>>>;
  errors: { round: number; proxy: Name; test: string; message: string }[];
  raw: { round: number; proxy: Name; test: string; data: unknown }[];
}

const results: Results = { values: {}, byRound: {}, errors: [], raw: [] };

/** The round being run, for {@linkcode record}. */
let currentRound = 0;

function record(metric: string, proxy: Name, v: number): void {
  const m = results.values[metric] ??= {};
  (m[proxy] ??= []).push(v);
  ((results.byRound[metric] ??= {})[proxy] ??= {})[currentRound] = v;
}

function recordError(
  round: number,
  proxy: Name,
  test: string,
  message: string,
): void {
  results.errors.push({ round, proxy, test, message });
  console.error(`  ! r${round} ${proxy} ${test}: ${message}`);
}

let iperfServer: { m: Managed; port: number } | undefined;

async function startIperfServer(
  tools: Record<string, string>,
): Promise<void> {
  if (iperfServer) await stopManaged(iperfServer.m);
  const port = freePort();
  const m = spawnManaged("iperf3-server", tools.iperf3, [
    "-s",
    "-B",
    "127.0.0.1",
    "-p",
    String(port),
    "--idle-timeout",
    "30",
  ]);
  if (!await waitPort(port, 10000, m)) {
    throw new Error("iperf3 server did not start");
  }
  iperfServer = { m, port };
}

const TPUT = [
  { key: "tput_up_1", flags: [] as string[] },
  { key: "tput_down_1", flags: ["-R"] },
  { key: "tput_up_4", flags: ["-P", "4"] },
  { key: "tput_down_4", flags: ["-P", "4", "-R"] },
];

async function iperfTest(
  round: number,
  p: Running,
  kind: typeof TPUT[number],
  tools: Record<string, string>,
  opts: Options,
): Promise<void> {
  const s = iperfServer!;
  const iperfArgs = [
    "-c",
    "127.0.0.1",
    "-p",
    String(s.port),
    "-t",
    String(opts.iperfSeconds),
    "-J",
    ...kind.flags,
  ];
  const [cmd, args] = p.name === "direct" ? [tools.iperf3, iperfArgs] : [
    tools.proxychains4,
    ["-q", "-f", p.proxychainsConf!, tools.iperf3]
      .concat(iperfArgs),
  ];
  const cpu0 = p.m ? cpuSeconds(p.m.pid) : 0;
  const r = await run("iperf3", cmd, args, opts.iperfSeconds * 1000 + 20000);
  const cpu = p.m ? cpuSeconds(p.m.pid) - cpu0 : undefined;
  let msg = "";
  try {
    const j = JSON.parse(r.stdout);
    if (j.error) msg = `iperf3: ${j.error}`;
    else {
      const expectPort = p.name === "direct" ? s.port : p.port;
      const via = j.start?.connected?.[0]?.remote_port;
      if (via !== expectPort) {
        msg = `traffic did not go through port ${expectPort} (saw ${via})`;
      } else {
        const gbps = j.end.sum_received.bits_per_second / 1e9;
        record(kind.key, p.name, gbps);
        const gb = j.end.sum_received.bytes / 1e9;
        if (cpu !== undefined && gb > 0) {
          record(`${kind.key}_cpu`, p.name, (cpu * 1000) / gb);
        }
        results.raw.push({
          round,
          proxy: p.name,
          test: kind.key,
          data: {
            gbps,
            sent_gbps: j.end.sum_sent.bits_per_second / 1e9,
            retransmits: j.end.sum_sent.retransmits,
            streams: j.start?.connected?.length,
            proxy_cpu_s: cpu,
          },
        });
        console.log(
          `  r${round} ${kind.key.padEnd(12)} ${p.name.padEnd(10)} ${gbps.toFixed(2)} Gbit/s`,
        );
        return;
      }
    }
  } catch {
    msg = `exit ${r.code}${r.timedOut ? " (timeout)" : ""}: ${
      (r.stderr || r.stdout).trim().slice(0, 500)
    }`;
  }
  recordError(round, p.name, kind.key, msg);
  await startIperfServer(tools); // a failed client can wedge the server
}

interface SessionsOut {
  rate: number;
  completed: number;
  completed_total: number;
  hs_p50_us: number;
  hs_p99_us: number;
  total_p50_us: number;
  total_p99_us: number;
  errors: Record<string, number>;
  errno: Record<string, number>;
  sink: { accepted: number; bytes: number } | null;
}

function loadgenTarget(p: Running): string[] {
  return p.name === "direct" ? ["--direct"] : ["--proxy", `127.0.0.1:${p.port}`];
}

async function sessionsTest(
  round: number,
  p: Running,
  conc: number,
  loadgen: string,
  opts: Options,
  metricPrefix = `sess_${conc}`,
): Promise<SessionsOut | undefined> {
  const args = [
    ...loadgenTarget(p),
    "--concurrency",
    String(conc),
    "--duration",
    String(opts.sessionSeconds),
    "--warmup",
    String(opts.warmup),
    "--timeout",
    "5",
    "--close",
    opts.close,
  ];
  const cpu0 = p.m ? cpuSeconds(p.m.pid) : 0;
  const r = await run(
    "loadgen",
    loadgen,
    args,
    (opts.sessionSeconds + opts.warmup + 15) * 1000,
  );
  const cpu = p.m ? cpuSeconds(p.m.pid) - cpu0 : undefined;
  let j: SessionsOut;
  try {
    j = JSON.parse(r.stdout.trim().split("\n").pop() ?? "");
  } catch {
    recordError(
      round,
      p.name,
      metricPrefix,
      `loadgen exit ${r.code}: ${(r.stderr || r.stdout).trim().slice(0, 500)}`,
    );
    return undefined;
  }
  results.raw.push({
    round,
    proxy: p.name,
    test: metricPrefix,
    data: { ...j, proxy_cpu_s: cpu },
  });
  record(`${metricPrefix}_rate`, p.name, j.rate);
  if (cpu !== undefined && j.completed_total > 0) {
    record(`${metricPrefix}_cpu`, p.name, (cpu * 1e6) / j.completed_total);
  }
  if (j.completed > 0) {
    record(`${metricPrefix}_p50`, p.name, j.hs_p50_us / 1000);
    record(`${metricPrefix}_p99`, p.name, j.hs_p99_us / 1000);
  }
  const nerr = j.errors.total ?? 0;
  record(`${metricPrefix}_errors`, p.name, nerr);
  if (nerr > 0) {
    recordError(
      round,
      p.name,
      metricPrefix,
      `${nerr} failed sessions: ${JSON.stringify(j.errors)} errno ${JSON.stringify(j.errno)}`,
    );
  }
  console.log(
    `  r${round} ${metricPrefix.padEnd(12)} ${p.name.padEnd(10)} ${j.rate.toFixed(0)}/s  p50 ${
      (j.hs_p50_us / 1000).toFixed(2)
    } ms  p99 ${(j.hs_p99_us / 1000).toFixed(2)} ms  errors ${nerr}`,
  );
  return j;
}

/** bench/bandwidth.ts in a child process: the relay with and without the feature. */
async function bandwidthTest(round: number, opts: Options): Promise<void> {
  const args = ["run", "-A", `${BENCH}/bandwidth.ts`, "--reps", opts.quick ? "1" : "3"];
  if (opts.quick) args.push("--mib", "64");
  const r = await run("bandwidth", Deno.execPath(), args, 120000, { cwd: ROOT });
  let j;
  try {
    j = JSON.parse(r.stdout.trim().split("\n").pop() ?? "");
  } catch {
    recordError(
      round,
      "bandwidth",
      "bandwidth",
      `bench/bandwidth.ts exit ${r.code}: ${(r.stderr || r.stdout).trim().slice(0, 500)}`,
    );
    return;
  }
  results.raw.push({ round, proxy: "bandwidth", test: "bandwidth", data: j });
  record("bw_before_gbps", "bandwidth", j.before_gbps);
  record("bw_now_gbps", "bandwidth", j.now_gbps);
  record("bw_never_dry_gbps", "bandwidth", j.never_dry_gbps);
  record("bw_limited_ratio", "bandwidth", j.limited_bps / j.limit_bps);
  console.log(
    `  r${round} bandwidth    unlimited ${j.before_gbps.toFixed(1)} (before) ${
      j.now_gbps.toFixed(1)
    } (now) ${j.never_dry_gbps.toFixed(1)} (bucket never dry) Gbit/s; limited ${
      (j.limited_bps / j.limit_bps).toFixed(3)
    } x configured`,
  );
}

function mib(kib: number): number {
  return kib / 1024;
}

/** The proxies whose heap is given time to settle with the relays held: the subject. */
const SETTLE_FOR: readonly Name[] = ["dualsocks"];

/**
 * Samples the process tree every second, relays held and idle, for up to
 * `seconds`: V8's memory reducer gives back the young generation that
 * opening the relays grew once allocation has slowed (8-30 s later with V8's
 * own delays, a few seconds with the start task's --v8-flags). Stops early
 * once the RSS has dropped by 10% or more below `first` and then held still
 * (within 1%) for 2 s; otherwise returns the last sample.
 */
async function settledSample(
  pid: number,
  first: MemSample,
  seconds: number,
): Promise<{ sample: MemSample; seconds: number }> {
  let last = first;
  let still = 0;
  for (let t = 1; t <= seconds; t++) {
    await sleep(1000);
    const s = sampleTree(pid);
    still = Math.abs(s.rssKiB - last.rssKiB) <= last.rssKiB * 0.01 ? still + 1 : 0;
    last = s;
    if (s.rssKiB <= first.rssKiB * 0.9 && still >= 2) return { sample: s, seconds: t };
  }
  return { sample: last, seconds };
}

async function holdTest(
  round: number,
  p: Running,
  idle: MemSample,
  loadgen: string,
  opts: Options,
  hold: number,
): Promise<void> {
  const holdMax = 90;
  const m = spawnManaged("loadgen-hold", loadgen, [
    ...loadgenTarget(p),
    "--hold",
    String(hold),
    "--concurrency",
    String(opts.holdConcurrency),
    "--timeout",
    "10",
    "--hold-max",
    String(holdMax),
  ], { stdin: "piped", stdout: "piped", stderr: "null" });
  const lines = new LineReader(m.child.stdout);
  try {
    const first = await lines.next((holdMax + 20) * 1000);
    if (!first) throw new Error("no output from loadgen --hold");
    const h = JSON.parse(first);
    await sleep(1000); // let the proxy settle
    const held = sampleTree(p.m!.pid);
    const settled = SETTLE_FOR.includes(p.name) && opts.settle > 0
      ? await settledSample(p.m!.pid, held, opts.settle)
      : undefined;
    const settledKiB = settled && (settled.sample.rssKiB - idle.rssKiB) / Math.max(h.held, 1);
    const w = m.child.stdin.getWriter();
    await w.write(new TextEncoder().encode("release\n"));
    await w.close();
    const second = await lines.next(20000);
    const rel = second ? JSON.parse(second) : null;
    await withTimeout(m.status, 10000);
    await sleep(1000);
    const after = sampleTree(p.m!.pid);
    const n = h.held as number;
    const delta = held.rssKiB - idle.rssKiB;
    const deltaPss = held.pssKiB - idle.pssKiB;
    results.raw.push({
      round,
      proxy: p.name,
      test: `hold_${hold}`,
      data: { hold: h, release: rel, idle, held, settled, after },
    });
    record(`hold_setup_s_${hold}`, p.name, h.setup_s);
    record(`mem_held_rss_${hold}`, p.name, mib(held.rssKiB));
    record(`mem_held_pss_${hold}`, p.name, mib(held.pssKiB));
    record(`mem_released_rss_${hold}`, p.name, mib(after.rssKiB));
    record(`fds_held_${hold}`, p.name, held.fds);
    record(`fds_released_${hold}`, p.name, after.fds);
    if (n > 0) {
      record(`relay_kib_rss_${hold}`, p.name, delta / n);
      record(`relay_kib_pss_${hold}`, p.name, deltaPss / n);
      if (settled) {
        record(`relay_kib_settled_${hold}`, p.name, settledKiB!);
        record(`settle_s_${hold}`, p.name, settled.seconds);
      }
    }
    const nerr = (h.errors?.total ?? 0) + (h.dropped ?? 0) +
      (rel?.dropped ?? 0);
    record(`hold_errors_${hold}`, p.name, nerr);
    if (nerr > 0 || n < hold) {
      recordError(
        round,
        p.name,
        `hold_${hold}`,
        `held ${n}/${hold}; errors ${JSON.stringify(h.errors)} errno ${
          JSON.stringify(h.errno)
        } dropped ${h.dropped}+${rel?.dropped}`,
      );
    }
    console.log(
      `  r${round} hold ${hold}    ${p.name.padEnd(10)} held ${n} in ${
        h.setup_s.toFixed(1)
      } s  RSS ${mib(idle.rssKiB).toFixed(1)} -> ${mib(held.rssKiB).toFixed(1)} MiB (${
        (delta / Math.max(n, 1)).toFixed(2)
      } KiB/relay, PSS ${(deltaPss / Math.max(n, 1)).toFixed(2)})${
        settled ? `, settled after ${settled.seconds} s: ${settledKiB!.toFixed(2)} KiB/relay` : ""
      }  fds ${idle.fds}/${held.fds}/${after.fds}  procs ${held.processes}`,
    );
  } catch (e) {
    recordError(round, p.name, `hold_${hold}`, (e as Error).message);
  } finally {
    await lines.cancel();
    await stopManaged(m, 2000);
  }
}

function alive(p: Running): boolean {
  return !p.m || !p.m.exited;
}

function deadMessage(p: Running): string {
  const st = p.m?.exitStatus;
  return `${p.name} is not running (exit code ${st?.code}, signal ${st?.signal})\n${
    logTail(p.log)
  }`;
}

// ---------------------------------------------------------------- round --

async function runRound(
  round: number,
  names: Name[],
  tmp: string,
  tools: Record<string, string>,
  loadgen: string,
  opts: Options,
): Promise<void> {
  const proxies = names.filter((n) => !NOT_PROXIES.includes(n));
  const k = (round - 1) % Math.max(proxies.length, 1);
  const order = proxies.slice(k).concat(proxies.slice(0, k));
  console.log(`round ${round}/${opts.rounds}: order ${order.join(", ")}`);
  let running: Running[] = [];
  const stopAll = async () => {
    for (const p of running) {
      if (p.m) {
        const st = await stopManaged(p.m);
        if (DUALSOCKS.includes(p.name) && st && st.code !== 0) {
          recordError(
            round,
            p.name,
            "stop",
            `exit code ${st.code} signal ${st.signal} after SIGTERM`,
          );
        }
      }
    }
    running = [];
  };
  const startAll = async () => {
    for (const n of order) {
      try {
        running.push(await startProxy(n, tmp, tools, opts));
      } catch (e) {
        recordError(round, n, "start", (e as Error).message);
      }
    }
    await sleep(1000);
    const idle = new Map<Name, MemSample>();
    for (const p of running) {
      if (!p.m) continue;
      idle.set(p.name, sampleTree(p.m.pid));
      if (p.nofile !== undefined && p.nofile < NOFILE) {
        recordError(round, p.name, "start", `nofile limit ${p.nofile}`);
      }
    }
    return idle;
  };
  const step = async (
    p: Running,
    test: string,
    f: () => Promise<unknown>,
  ) => {
    if (!alive(p)) {
      recordError(round, p.name, test, deadMessage(p));
      return;
    }
    await f();
    await sleep(300);
  };
  try {
    if (names.includes("bandwidth")) await bandwidthTest(round, opts);
    // Memory: every hold size from freshly started proxies (the first from this
    // round's own start), so that no warm-up hides what the first relays cost.
    let idle = await startAll();
    for (const p of running) {
      const s = idle.get(p.name);
      if (!s) continue;
      record("mem_idle_rss", p.name, mib(s.rssKiB));
      record("mem_idle_pss", p.name, mib(s.pssKiB));
      record("fds_idle", p.name, s.fds);
      results.raw.push({ round, proxy: p.name, test: "idle", data: { ...s, nofile: p.nofile } });
    }
    for (const [i, hold] of opts.hold.entries()) {
      if (i > 0) {
        await stopAll();
        idle = await startAll();
      }
      for (const p of running) {
        if (!p.m) continue;
        await step(
          p,
          `hold_${hold}`,
          () => holdTest(round, p, idle.get(p.name)!, loadgen, opts, hold),
        );
      }
    }
    for (const kind of TPUT) {
      for (const p of running) {
        if (NO_THROUGHPUT.includes(p.name)) continue;
        await step(p, kind.key, () => iperfTest(round, p, kind, tools, opts));
      }
    }
    for (const conc of [32, 256]) {
      for (const p of running) {
        await step(p, `sess_${conc}`, async () => {
          // An unmeasured run of the same load first: in the first seconds V8
          // still compiles the hot paths on its worker threads (a one-time cost
          // per process, shown apart as "warm-up").
          if (conc === 32 && opts.sessionWarm > 0) {
            const warm = { ...opts, sessionSeconds: opts.sessionWarm, warmup: 0 };
            await sessionsTest(round, p, 32, loadgen, warm, "sess_warm");
          }
          await sessionsTest(round, p, conc, loadgen, opts);
        });
      }
    }
    await sleep(1500);
    for (const p of running) {
      if (!p.m) continue;
      if (!alive(p)) {
        recordError(round, p.name, "end", deadMessage(p));
        continue;
      }
      const s = sampleTree(p.m.pid);
      record("mem_end_rss", p.name, mib(s.rssKiB));
      record("fds_end", p.name, s.fds);
      results.raw.push({ round, proxy: p.name, test: "end", data: s });
      // dualsocks at its defaults logs a line per session at info: count those
      // apart; every other line (a warning, an error) is a failure.
      const all = logLines(p.log).filter((l) => !/Dante\/server.* running/.test(l));
      const lines = all.filter((l) => !/\[INF\]|"level":"INFO"/.test(l));
      if (DUALSOCKS.includes(p.name)) record("log_info_lines", p.name, all.length - lines.length);
      record("log_lines", p.name, lines.length);
      if (lines.length) {
        recordError(
          round,
          p.name,
          "log",
          `${lines.length} log lines, e.g.:\n    ${lines.slice(0, 3).join("\n    ")}`,
        );
      }
    }
  } finally {
    await stopAll();
  }
}

// ------------------------------------------------------------- profile --

interface ProfileSummary {
  file: string;
  sessions?: SessionsOut;
  totalMs: number;
  idleMs: number;
  top: ReturnType<typeof selfTimes>;
}

async function profileDualsocks(
  tmp: string,
  tools: Record<string, string>,
  loadgen: string,
  opts: Options,
): Promise<ProfileSummary | undefined> {
  const iport = freePort();
  console.log(`profile: dualsocks with --inspect=127.0.0.1:${iport}`);
  const p = await startProxy("dualsocks", tmp, tools, opts, [
    `--inspect=127.0.0.1:${iport}`,
  ], 60000);
  let insp: Inspector | undefined;
  try {
    insp = await Inspector.connect(iport);
    await insp.startProfiling(250);
    const j = await sessionsTest(0, p, 256, loadgen, opts, "profile_256");
    const profile: CpuProfile = await insp.stopProfiling();
    const file = `${opts.outDir}/dualsocks-sessions.cpuprofile`;
    Deno.writeTextFileSync(file, JSON.stringify(profile));
    const t = profileTotals(profile);
    return {
      file,
      sessions: j,
      ...t,
      top: selfTimes(profile, ROOT).slice(0, 15),
    };
  } catch (e) {
    console.error(`profile failed: ${(e as Error).message}`);
    return undefined;
  } finally {
    insp?.close();
    if (p.m) await stopManaged(p.m);
  }
}

// -------------------------------------------------------------- report --

interface MetricDef {
  key: string;
  label: string;
  unit: string;
  better: "higher" | "lower" | "";
}

function metricDefs(opts: Options): MetricDef[] {
  const perHold = (rows: [string, string, string, string][]) =>
    opts.hold.flatMap((n) =>
      rows.map(([key, label, unit, better]) => [
        `${key}_${n}`,
        label.replace("N", String(n)),
        unit,
        better,
      ])
    );
  return [
    ["tput_up_1", "Throughput 1 stream, up", "Gbit/s", "higher"],
    ["tput_down_1", "Throughput 1 stream, down (-R)", "Gbit/s", "higher"],
    ["tput_up_4", "Throughput 4 streams, up (-P 4)", "Gbit/s", "higher"],
    ["tput_down_4", "Throughput 4 streams, down (-P 4 -R)", "Gbit/s", "higher"],
    ["tput_up_1_cpu", "Proxy CPU per GB, 1 stream, up", "ms", "lower"],
    ["tput_down_1_cpu", "Proxy CPU per GB, 1 stream, down", "ms", "lower"],
    ["tput_up_4_cpu", "Proxy CPU per GB, 4 streams, up", "ms", "lower"],
    ["tput_down_4_cpu", "Proxy CPU per GB, 4 streams, down", "ms", "lower"],
    ["sess_32_rate", "Sessions/s, 32 clients", "1/s", "higher"],
    ["sess_32_p50", "Handshake p50, 32 clients", "ms", "lower"],
    ["sess_32_p99", "Handshake p99, 32 clients", "ms", "lower"],
    ["sess_256_rate", "Sessions/s, 256 clients", "1/s", "higher"],
    ["sess_256_p50", "Handshake p50, 256 clients", "ms", "lower"],
    ["sess_256_p99", "Handshake p99, 256 clients", "ms", "lower"],
    ["sess_32_cpu", "Proxy CPU per session, 32 clients", "µs", "lower"],
    ["sess_warm_cpu", "Proxy CPU per session, during the warm-up run before", "µs", "lower"],
    ["sess_256_cpu", "Proxy CPU per session, 256 clients", "µs", "lower"],
    ["mem_idle_rss", "RSS idle", "MiB", "lower"],
    ["mem_idle_pss", "PSS idle", "MiB", "lower"],
    ...perHold([
      ["relay_kib_rss", "Per relay, RSS, N relays from a fresh process", "KiB", "lower"],
      ["relay_kib_pss", "Per relay, PSS, N relays from a fresh process", "KiB", "lower"],
      [
        "relay_kib_settled",
        "Per relay, RSS, N relays, once idle long enough for V8's memory reducer",
        "KiB",
        "lower",
      ],
      ["settle_s", "Seconds idle until the RSS settled (N relays)", "s", ""],
      ["mem_held_rss", "RSS with N idle relays", "MiB", "lower"],
      ["hold_setup_s", "Time to open N relays", "s", "lower"],
      ["mem_released_rss", "RSS 1 s after closing N relays", "MiB", "lower"],
      ["fds_held", "Open fds with N relays", "", ""],
      ["fds_released", "Open fds 1 s after closing N relays", "", ""],
      ["hold_errors", "Failed/dropped relays (hold N)", "", "lower"],
    ]),
    ["mem_end_rss", "RSS at end of round", "MiB", "lower"],
    ["fds_idle", "Open fds idle", "", ""],
    ["fds_end", "Open fds at end of round", "", ""],
    ["sess_32_errors", "Failed sessions, 32 clients", "", "lower"],
    ["sess_256_errors", "Failed sessions, 256 clients", "", "lower"],
    ["log_lines", "Log lines (errors/warnings)", "", "lower"],
    ["log_info_lines", "Log lines at info (one per session)", "", ""],
    ["bw_before_gbps", "Relay in-process, unlimited, before limits existed", "Gbit/s", "higher"],
    ["bw_now_gbps", "Relay in-process, unlimited, now", "Gbit/s", "higher"],
    ["bw_never_dry_gbps", "Relay in-process, a bucket that never runs dry", "Gbit/s", "higher"],
    ["bw_limited_ratio", "Relay limited to 50 MiB/s: measured / configured", "", ""],
  ].map(([key, label, unit, better]) => ({ key, label, unit, better }) as MetricDef);
}

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

function fmt(v: number): string {
  const a = Math.abs(v);
  if (Number.isInteger(v)) return String(v);
  if (a >= 1000) return v.toFixed(0);
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  if (a === 0) return "0";
  return v.toFixed(2);
}

interface Summary {
  median: number;
  min: number;
  max: number;
  values: number[];
}

function summarize(names: Name[], defs: MetricDef[]) {
  const table: Record<string, Partial<Record<Name, Summary>>> = {};
  const ratios: Record<string, Record<string, number>> = {};
  for (const d of defs) {
    const row: Partial<Record<Name, Summary>> = {};
    for (const n of names) {
      const v = results.values[d.key]?.[n];
      if (!v?.length) continue;
      row[n] = {
        median: median(v),
        min: Math.min(...v),
        max: Math.max(...v),
        values: v,
      };
    }
    table[d.key] = row;
    const r: Record<string, number> = {};
    // Each round's own ratio, then their median: the two ran minutes apart
    // at most, so a machine that speeds up or slows down between rounds
    // (ours did by 1.8x) moves both.
    const byRound = results.byRound[d.key] ?? {};
    for (const [a, b] of RATIOS) {
      const xs = byRound[a];
      const os = byRound[b];
      if (!xs || !os) continue;
      const each = Object.keys(xs).filter((k) => os[Number(k)]).map((k) =>
        xs[Number(k)] / os[Number(k)]
      );
      if (each.length) r[`${a}/${b}`] = median(each);
    }
    if (Object.keys(r).length) ratios[d.key] = r;
  }
  return { table, ratios };
}

/** The ratio columns: each `a/b` shown when both ran. */
const RATIOS: readonly [Name, Name][] = [
  ["dualsocks", "floor"],
  ["dualsocks-quiet", "floor"],
  ["dualsocks", "dualsocks-quiet"],
  ["dualsocks", "microsocks"],
  ["dualsocks", "dante"],
  ["dualsocks", "direct"],
];

function markdown(
  names: Name[],
  defs: MetricDef[],
  machine: Awaited<ReturnType<typeof machineInfo>>,
  opts: Options,
  elapsedS: number,
  prof?: ProfileSummary,
): string {
  const { table, ratios } = summarize(names, defs);
  const pairs = RATIOS.filter(([a, b]) => names.includes(a) && names.includes(b));
  const out: string[] = [];
  out.push(`# dualsocks benchmark, ${machine.date.slice(0, 10)}`, "");
  out.push(
    `- machine: ${machine.nproc} CPUs (${machine.cpu}), ${machine.memGiB} GiB, Linux ${machine.kernel}`,
    `- load average at start: ${machine.loadavg_start}; at end: ${
      (machine as { loadavg_end?: string }).loadavg_end ?? "?"
    }; CPU time stolen by the hypervisor during the run: ${
      (machine as { steal_percent?: number }).steal_percent ?? "?"
    }% (other work on the machine, or on its host, makes every number noisier)`,
    `- Deno ${machine.deno} (V8 ${machine.v8}); ${machine.iperf3}; Dante ${machine.dante}; microsocks ${machine.microsocks}; proxychains4 ${machine.proxychains4}`,
    `- ${opts.rounds} round(s), order rotated each round, all processes restarted each round; ` +
      `iperf3 -t ${opts.iperfSeconds}; sessions ${opts.sessionSeconds} s (+${opts.warmup} s warm-up), ` +
      `closer: ${opts.close}; hold ${opts.hold.join(" and ")} relays; run took ${
        Math.round(elapsedS)
      } s; ${machine.date}`,
    `- dualsocks: at its defaults (info logging to stderr, admin API on); dualsocks-quiet: ` +
      `the same with --log-level error; floor: bench/floor_relay.ts; bandwidth: bench/bandwidth.ts`,
    `- cells: median (min–max over rounds); ratios: the median of the ratios within each round` +
      ` (↑ higher is better, ↓ lower is better)`,
    "",
  );
  const head = ["metric", ...names, ...pairs.map(([a, b]) => `${a}/${b}`)];
  out.push(`| ${head.join(" | ")} |`);
  out.push(`|${head.map((_, i) => (i ? "---:" : "---")).join("|")}|`);
  for (const d of defs) {
    const row = table[d.key];
    if (!row || !Object.keys(row).length) continue;
    const arrow = d.better === "higher" ? " ↑" : d.better === "lower" ? " ↓" : "";
    const cells = [`${d.label}${d.unit ? `, ${d.unit}` : ""}${arrow}`];
    for (const n of names) {
      const s = row[n];
      if (!s) cells.push("–");
      else if (s.values.length === 1 || s.min === s.max) cells.push(fmt(s.median));
      else cells.push(`${fmt(s.median)} (${fmt(s.min)}–${fmt(s.max)})`);
    }
    for (const [a, b] of pairs) {
      const r = ratios[d.key]?.[`${a}/${b}`];
      cells.push(r === undefined ? "–" : r.toFixed(2));
    }
    out.push(`| ${cells.join(" | ")} |`);
  }
  out.push("");
  out.push(
    "Handshake latency = greeting sent → CONNECT reply received (per session); " +
      "for direct it is the TCP connect time. Before the sessions runs each proxy gets " +
      `${opts.sessionWarm} s of the 32-client load, unmeasured but for its CPU (the warm-up row). ` +
      "Sessions/s counts complete sessions " +
      "(handshake, 1 byte relayed to the sink, close). Per relay = (RSS with relays − RSS idle) / relays held, 1 s after the last relay opened; " +
      '"once idle long enough": the same relays still held, sampled every second until ' +
      "V8's memory reducer has given back the young generation that opening them grew " +
      "(dualsocks only; --settle). " +
      "Dante: summed over its process tree (RSS double-counts shared pages; PSS does not). " +
      "Proxy CPU = user+system CPU time of the proxy's process tree during the run, per GB " +
      "received by iperf3 or per session started (less sensitive to other load than rates).",
  );
  if (results.errors.length) {
    out.push("", "## Errors", "");
    for (const e of results.errors) {
      out.push(
        `- round ${e.round}, ${e.proxy}, ${e.test}: ${e.message.replaceAll("\n", "\n  ")}`,
      );
    }
  } else {
    out.push("", "No errors: every session and relay succeeded, no log lines.");
  }
  if (prof) {
    out.push(
      "",
      "## CPU profile: dualsocks, 256-client sessions load",
      "",
      `${prof.file.replace(`${ROOT}/`, "")}; sampled ${prof.totalMs.toFixed(0)} ms, idle ${
        prof.idleMs.toFixed(0)
      } ms; ${prof.sessions?.rate.toFixed(0) ?? "?"} sessions/s under the inspector.`,
      "",
      "| self ms | % busy | function | location | main caller |",
      "|---:|---:|---|---|---|",
    );
    for (const t of prof.top) {
      out.push(
        `| ${t.selfMs.toFixed(0)} | ${
          t.percent.toFixed(1)
        } | ${t.functionName} | ${t.location} | ${t.topCaller} |`,
      );
    }
  }
  return out.join("\n") + "\n";
}

// ---------------------------------------------------------------- main --

let tmpDir: string | undefined;
let exiting = false;

async function cleanup(): Promise<void> {
  await killAll();
  const dir = tmpDir;
  tmpDir = undefined;
  if (dir) {
    try {
      Deno.removeSync(dir, { recursive: true });
    } catch {
      // already gone
    }
  }
}

async function main(): Promise<number> {
  let opts: Options;
  try {
    opts = parseOptions(Deno.args);
  } catch (e) {
    console.error(`bench: ${(e as Error).message}\n\n${HELP}`);
    return 2;
  }
  const tools = checkTools(opts);
  const t0 = Date.now();
  // Bound the whole run: 4 min + 4 min per round (+2 for --profile).
  const watchdogMs = (4 + 4 * opts.rounds + (opts.profile ? 2 : 0)) * 60000;
  const watchdog = setTimeout(async () => {
    console.error(`bench: watchdog: still running after ${watchdogMs} ms`);
    exiting = true;
    await cleanup();
    Deno.exit(3);
  }, watchdogMs);
  try {
    Deno.mkdirSync(opts.outDir, { recursive: true });
    const tmp = Deno.makeTempDirSync({ prefix: "dualsocks-bench-" });
    tmpDir = tmp;
    const loadgen = await buildLoadgen();
    const machine = await machineInfo(tools);
    let names = [...opts.only];
    if (names.some((n) => DUALSOCKS.includes(n))) {
      let ok = false;
      try {
        Deno.statSync(`${ROOT}/main.ts`);
        ok = true;
      } catch {
        console.error(`bench: ${ROOT}/main.ts not found: skipping dualsocks`);
      }
      if (ok) {
        // First start may fetch/compile dependencies: allow 90 s, once.
        try {
          const p = await startProxy(
            names.find((n) => DUALSOCKS.includes(n))!,
            tmp,
            tools,
            opts,
            [],
            90000,
          );
          await stopManaged(p.m!);
        } catch (e) {
          recordError(0, "dualsocks", "start", (e as Error).message);
          ok = false;
        }
      }
      if (!ok) names = names.filter((n) => !DUALSOCKS.includes(n));
    }
    if (!names.length) throw new Error("nothing to benchmark");
    await startIperfServer(tools);
    for (let r = 1; r <= opts.rounds; r++) {
      currentRound = r;
      await runRound(r, names, tmp, tools, loadgen, opts);
    }
    let prof: ProfileSummary | undefined;
    if (opts.profile && names.includes("dualsocks")) {
      prof = await profileDualsocks(tmp, tools, loadgen, opts);
    }
    const elapsedS = (Date.now() - t0) / 1000;
    const ticks = cpuTicks();
    Object.assign(machine, {
      loadavg_end: Deno.readTextFileSync("/proc/loadavg").trim(),
      // The share of the run's CPU time the hypervisor gave to other guests.
      steal_percent: Math.round(
        (ticks.steal - machine.cpu_ticks_start.steal) /
          Math.max(1, ticks.total - machine.cpu_ticks_start.total) * 1000,
      ) / 10,
    });
    const defs = metricDefs(opts);
    const md = markdown(names, defs, machine, opts, elapsedS, prof);
    const { table, ratios } = summarize(names, defs);
    const json = {
      machine,
      options: { ...opts, outDir: undefined },
      proxies: names,
      elapsed_s: elapsedS,
      metrics: Object.fromEntries(defs.map((d) => [d.key, d])),
      summary: table,
      ratios,
      errors: results.errors,
      profile: prof,
      raw: results.raw,
    };
    Deno.writeTextFileSync(`${opts.outDir}/latest.md`, md);
    Deno.writeTextFileSync(
      `${opts.outDir}/latest.json`,
      JSON.stringify(json, null, 2) + "\n",
    );
    // Keep the generated files `deno fmt`-clean (tables get aligned).
    await run(
      "deno-fmt",
      Deno.execPath(),
      [
        "fmt",
        "-q",
        `${opts.outDir}/latest.md`,
        `${opts.outDir}/latest.json`,
      ],
      60000,
      { cwd: ROOT },
    );
    console.log("\n" + Deno.readTextFileSync(`${opts.outDir}/latest.md`));
    console.log(`wrote ${opts.outDir}/latest.md and latest.json`);
    return results.errors.length ? 1 : 0;
  } catch (e) {
    if (exiting || e instanceof StoppingError) return 130;
    console.error(`bench: ${(e as Error).stack ?? e}`);
    return 1;
  } finally {
    clearTimeout(watchdog);
    await cleanup();
  }
}

for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  Deno.addSignalListener(sig, async () => {
    if (exiting) return;
    exiting = true;
    console.error(`\nbench: ${sig}: stopping every child process`);
    await cleanup();
    Deno.exit(130);
  });
}

if (import.meta.main) {
  const code = await main();
  Deno.exit(code);
}
