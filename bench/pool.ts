/**
 * Several gateway processes on one port (`reuse_port: true`, Deno's
 * `--unstable-net`): sessions per second and CPU per session for 1 and 2
 * processes, with bench/loadgen (the sessions test of bench/run.ts: connect,
 * SOCKS5 greeting, CONNECT 127.0.0.1:<sink>, 1 byte, close).
 *
 * ```sh
 * deno run -A bench/pool.ts                       # 3 rounds, 32 and 256 clients, 3 s each
 * deno run -A bench/pool.ts --rounds 5 --duration 5 --concurrency 256
 * ```
 *
 * Each round starts the gateways afresh (1, then 2, alternating which goes
 * first), every process with the flags of `deno task start` plus
 * `--unstable-net`, info logging to /dev/null and the admin API on (to read
 * each instance's share). CPU = user + system time of every gateway process
 * over the run, divided by the sessions loadgen completed. Results: a table
 * on stdout and bench/results/pool.json.
 *
 * On a 2-CPU machine loadgen, its sink and the gateways share the CPUs, so
 * two gateways cannot show what they would on a host with cores to spare.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { cpuSeconds, killAll, type Managed, run, spawnManaged, stopManaged } from "./proc.ts";

const BENCH = new URL(".", import.meta.url).pathname.replace(/\/$/, "");
const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

const { values } = parseArgs({
  args: Deno.args,
  options: {
    rounds: { type: "string", default: "3" },
    duration: { type: "string", default: "3" },
    warmup: { type: "string", default: "0.5" },
    concurrency: { type: "string", multiple: true },
  },
});
const rounds = Number(values.rounds);
const duration = Number(values.duration);
const warmup = Number(values.warmup);
const concurrencies = (values.concurrency?.length ? values.concurrency : ["32", "256"]).map(
  Number,
);

async function buildLoadgen(): Promise<string> {
  Deno.mkdirSync(`${BENCH}/build`, { recursive: true });
  const out = `${BENCH}/build/loadgen`;
  const r = await run(
    "cc",
    "cc",
    ["-O2", "-Wall", "-o", out, `${BENCH}/loadgen.c`, "-lm"],
    120_000,
  );
  if (r.code !== 0) throw new Error(`building loadgen failed:\n${r.stdout}${r.stderr}`);
  return out;
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = l.addr;
  l.close();
  return port;
}

/** Waits (bounded) until `port` accepts. */
async function waitListening(port: number, what: string): Promise<void> {
  const until = performance.now() + 20_000;
  while (performance.now() < until) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error(`${what} did not listen on ${port} within 20 s`);
}

interface Pool {
  procs: Managed[];
  admins: number[];
  port: number;
  dir: string;
}

async function startPool(n: number): Promise<Pool> {
  const dir = await Deno.makeTempDir({ prefix: "dualsocks-pool-bench-" });
  const port = freePort();
  const procs: Managed[] = [];
  const admins: number[] = [];
  for (let i = 0; i < n; i++) {
    const admin = freePort();
    const file = `${dir}/gw${i}.yaml`;
    await Deno.writeTextFile(
      file,
      `listen: ["127.0.0.1:${port}"]\nreuse_port: true\ninstance_name: gw${i}\n` +
        `admin: {listen: "127.0.0.1:${admin}"}\n`,
    );
    procs.push(spawnManaged(`gw${i}`, "bash", [
      "-c",
      'ulimit -Sn 20000 && exec "$@"',
      "bash",
      Deno.execPath(),
      "run",
      "--unstable-net",
      "--allow-net",
      `--allow-read=${dir}`,
      `${ROOT}/main.ts`,
      "--config",
      file,
    ]));
    admins.push(admin);
    await waitListening(admin, `gw${i}`);
  }
  await waitListening(port, "the pool");
  return { procs, admins, port, dir };
}

async function stopPool(pool: Pool): Promise<void> {
  for (const m of pool.procs) await stopManaged(m, 5000);
  await Deno.remove(pool.dir, { recursive: true });
}

/** Sessions each instance served, from its admin API. */
async function shares(pool: Pool): Promise<number[]> {
  return await Promise.all(pool.admins.map(async (port) => {
    const res = await fetch(`http://127.0.0.1:${port}/api/v1/stats`, {
      signal: AbortSignal.timeout(5000),
    });
    return (await res.json()).sessions.total as number;
  }));
}

interface Sample {
  round: number;
  processes: number;
  concurrency: number;
  rate: number;
  completedTotal: number;
  cpuSeconds: number;
  cpuPerSessionUs: number;
  errors: number;
  shares: number[];
}

const samples: Sample[] = [];
const loadgen = await buildLoadgen();
Deno.addSignalListener("SIGINT", () => void killAll().then(() => Deno.exit(130)));
try {
  for (let round = 1; round <= rounds; round++) {
    const order = round % 2 === 1 ? [1, 2] : [2, 1];
    for (const n of order) {
      const pool = await startPool(n);
      try {
        for (const conc of concurrencies) {
          const before = await shares(pool);
          const cpu0 = pool.procs.reduce((s, m) => s + cpuSeconds(m.pid), 0);
          const r = await run("loadgen", loadgen, [
            "--proxy",
            `127.0.0.1:${pool.port}`,
            "--concurrency",
            String(conc),
            "--duration",
            String(duration),
            "--warmup",
            String(warmup),
            "--timeout",
            "5",
          ], (duration + warmup + 15) * 1000);
          const cpu = pool.procs.reduce((s, m) => s + cpuSeconds(m.pid), 0) - cpu0;
          const j = JSON.parse(r.stdout.trim().split("\n").pop() ?? "null");
          if (!j) throw new Error(`loadgen exit ${r.code}: ${r.stderr.slice(0, 500)}`);
          const after = await shares(pool);
          const s: Sample = {
            round,
            processes: n,
            concurrency: conc,
            rate: j.rate,
            completedTotal: j.completed_total,
            cpuSeconds: cpu,
            cpuPerSessionUs: j.completed_total ? (cpu * 1e6) / j.completed_total : NaN,
            errors: j.errors?.total ?? 0,
            shares: after.map((a, i) => a - before[i]),
          };
          samples.push(s);
          console.error(
            `round ${round}: ${n} process(es), ${conc} clients: ${s.rate.toFixed(0)} sessions/s, ` +
              `${s.cpuPerSessionUs.toFixed(0)} µs CPU/session, errors ${s.errors}, ` +
              `shares ${s.shares.join("/")}`,
          );
        }
      } finally {
        await stopPool(pool);
      }
    }
  }
} finally {
  await killAll();
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const rows = [
  "| processes | clients | sessions/s (median, min-max) | CPU µs/session (median) | errors |",
];
rows.push("| --- | --- | --- | --- | --- |");
for (const conc of concurrencies) {
  for (const n of [1, 2]) {
    const ss = samples.filter((s) => s.processes === n && s.concurrency === conc);
    const rates = ss.map((s) => s.rate);
    rows.push(
      `| ${n} | ${conc} | ${median(rates).toFixed(0)} (${Math.min(...rates).toFixed(0)}-${
        Math.max(...rates).toFixed(0)
      }) | ${median(ss.map((s) => s.cpuPerSessionUs)).toFixed(0)} | ${
        ss.reduce((a, s) => a + s.errors, 0)
      } |`,
    );
  }
}
console.log(rows.join("\n"));
Deno.mkdirSync(`${BENCH}/results`, { recursive: true });
await Deno.writeTextFile(
  `${BENCH}/results/pool.json`,
  JSON.stringify({ cpus: navigator.hardwareConcurrency, rounds, duration, samples }, null, 2),
);
