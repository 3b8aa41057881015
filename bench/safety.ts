/**
 * The cost of the safety checks (protected mode, the deny-list of unwanted
 * destinations, loop protection, per-client and per-user limits): new
 * sessions per second and relay throughput through an in-process gateway on
 * loopback, with and without limits, and the per-request cost of the checks
 * alone. Run it in two trees to compare with a gateway without the checks.
 *
 * ```sh
 * deno run -A bench/safety.ts                 # ~30 s
 * deno run -A bench/safety.ts --sessions 2000 --mib 128
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { serve, type ServeOptions } from "../src/server/gateway.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    sessions: { type: "string", default: "3000" },
    concurrency: { type: "string", default: "8" },
    mib: { type: "string", default: "256" },
    rounds: { type: "string", default: "5" },
  },
});
const SESSIONS = Number(values.sessions);
const CONCURRENCY = Number(values.concurrency);
const MIB = Number(values.mib);
const ROUNDS = Number(values.rounds);

const quiet = { debug() {}, info() {}, warn() {}, error() {} };

/** A server that answers each connection with `size` bytes, or echoes one byte when 0. */
function source(size: number) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const chunk = new Uint8Array(256 * 1024);
  (async () => {
    for await (const conn of listener) {
      (async () => {
        try {
          if (size === 0) {
            const b = new Uint8Array(1);
            if (await conn.read(b)) await conn.write(b);
          } else {
            for (let sent = 0; sent < size;) {
              sent += await conn.write(chunk.subarray(0, Math.min(chunk.length, size - sent)));
            }
          }
        } catch { /* reset */ }
        try {
          conn.close();
        } catch { /* closed */ }
      })();
    }
  })();
  return listener;
}

async function readFull(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  for (let off = 0; off < n;) {
    const r = await conn.read(out.subarray(off));
    if (r === null) throw new Error(`EOF after ${off} of ${n} bytes`);
    off += r;
  }
  return out;
}

/** SOCKS5 CONNECT to 127.0.0.1:port through proxyPort; returns the open conn. */
async function connectVia(proxyPort: number, port: number): Promise<Deno.TcpConn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: proxyPort });
  await conn.write(Uint8Array.of(5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, port >> 8, port & 0xff));
  const r = await readFull(conn, 12);
  if (r[1] !== 0 || r[3] !== 0) throw new Error(`method ${r[1]}, reply ${r[3]}`);
  return conn;
}

async function sessionRate(options: ServeOptions): Promise<number> {
  const echo = source(0);
  const gw = serve({ listen: ["127.0.0.1:0"], logger: quiet, ...options });
  const proxy = gw.addrs[0].port;
  const port = (echo.addr as Deno.NetAddr).port;
  let next = 0;
  const started = performance.now();
  await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
    while (next++ < SESSIONS) {
      const conn = await connectVia(proxy, port);
      await conn.write(Uint8Array.of(1));
      await readFull(conn, 1);
      conn.close();
    }
  }));
  const rate = SESSIONS / ((performance.now() - started) / 1000);
  await gw.shutdown({ grace: 0 });
  echo.close();
  return rate;
}

async function throughput(options: ServeOptions): Promise<number> {
  const size = MIB * 1024 * 1024;
  const src = source(size);
  const gw = serve({ listen: ["127.0.0.1:0"], logger: quiet, ...options });
  const conn = await connectVia(gw.addrs[0].port, (src.addr as Deno.NetAddr).port);
  const buf = new Uint8Array(256 * 1024);
  const started = performance.now();
  let got = 0;
  for (let n; (n = await conn.read(buf)) !== null;) got += n;
  const secs = (performance.now() - started) / 1000;
  conn.close();
  await gw.shutdown({ grace: 0 });
  src.close();
  if (got !== size) throw new Error(`got ${got} of ${size} bytes`);
  return got * 8 / secs / 1e9;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const configs: [string, ServeOptions][] = [
  ["defaults", {}],
  ["limits per client", { safety: { perClient: { sessions: 1_000_000, rate: 1e9 } } }],
];
console.log(
  `sessions: ${SESSIONS} CONNECT + 1 byte echo + close, ${CONCURRENCY} at once; ` +
    `throughput: one ${MIB} MiB download; median of ${ROUNDS} rounds`,
);
// Rounds interleave the configurations, so that a busy machine hurts them alike.
const rates = configs.map(() => [] as number[]);
const gbps = configs.map(() => [] as number[]);
for (let i = 0; i < ROUNDS; i++) {
  for (const [k, [, options]] of configs.entries()) {
    rates[k].push(await sessionRate(options));
    gbps[k].push(await throughput(options));
  }
}
for (const [k, [name]] of configs.entries()) {
  console.log(
    `${name.padEnd(20)} ${median(rates[k]).toFixed(0).padStart(6)} sessions/s   ` +
      `${median(gbps[k]).toFixed(2)} Gbit/s   (rounds: ${
        rates[k].map((r) => r.toFixed(0)).join(" ")
      })`,
  );
}

// The checks alone, per request (only when this tree has them).
try {
  const { Safety } = await import("../src/server/safety.ts");
  const { SessionLimiter } = await import("../src/policy/limits.ts");
  const safety = new Safety(quiet, () => [
    { transport: "tcp", hostname: "127.0.0.1", port: 1080 },
    { transport: "tcp", hostname: "::1", port: 1080 },
  ]);
  safety.configure({}, { authenticated: false });
  const N = 1_000_000;
  let t = performance.now();
  for (let i = 0; i < N; i++) safety.refusal("192.0.2.7", 443);
  const refusalNs = (performance.now() - t) * 1e6 / N;
  t = performance.now();
  for (let i = 0; i < N; i++) safety.refusal("2001:db8::7", 443);
  const refusal6Ns = (performance.now() - t) * 1e6 / N;
  const limiter = new SessionLimiter({
    what: "client",
    setting: "limits.per_client",
    limit: { sessions: 100, rate: 1e9 },
  });
  t = performance.now();
  for (let i = 0; i < N; i++) {
    limiter.admit("192.0.2.7");
    limiter.release("192.0.2.7");
  }
  const limitNs = (performance.now() - t) * 1e6 / N;
  console.log(
    `per request: destination check ${refusalNs.toFixed(0)} ns (IPv4), ` +
      `${refusal6Ns.toFixed(0)} ns (IPv6); limit admit + release ${limitNs.toFixed(0)} ns`,
  );
} catch (error) {
  if (!(error instanceof TypeError)) throw error;
  console.log("per request: this tree has no safety checks");
}
