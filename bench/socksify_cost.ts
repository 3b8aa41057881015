/**
 * The setup cost of one connection through socksify next to a direct
 * `Deno.connect`, on loopback, with dualsocks (`main.ts`) as a child
 * process. Each sample opens a connection to an echo server, sends one byte
 * and waits for it back (so every layer has really finished its setup),
 * then closes. Paths:
 *
 * - `direct Deno.connect` (no gateway)
 * - `connect() (library)` : the Socks Lib's CONNECT through the gateway
 * - `socksify Deno.connect` : unmodified `Deno.connect` under socksify
 * - `direct node:net` and `socksify node:net` : `net.connect` (the latter
 *   through the loopback bridge)
 * - `direct fetch` and `socksify fetch` : a new HTTP connection each time
 *   (`Connection: close`), the latter through the local door
 *
 * ```sh
 * deno run -A bench/socksify_cost.ts               # 300 samples per path
 * deno run -A bench/socksify_cost.ts --samples 1000
 * ```
 *
 * Prints a Markdown table: median, p90 and mean setup time in ms.
 *
 * @module
 */

import net from "node:net";
import { parseArgs } from "node:util";
import { connect, socksify } from "../src/client/mod.ts";
import { freePort, spawnManaged, stopManaged, waitPort } from "./proc.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const args = parseArgs({
  args: Deno.args,
  options: { samples: { type: "string", default: "300" } },
});
const samples = Number(args.values.samples);

const echo = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const echoPort = echo.addr.port;
(async () => {
  for await (const conn of echo) {
    (async () => {
      const buf = new Uint8Array(1024);
      try {
        while (true) {
          const n = await conn.read(buf);
          if (n === null) break;
          await conn.write(buf.subarray(0, n));
        }
      } catch { /* reset */ }
      try {
        conn.close();
      } catch { /* closed */ }
    })();
  }
})();
const web = Deno.serve(
  { hostname: "127.0.0.1", port: 0, onListen() {} },
  () => new Response("x", { headers: { connection: "close" } }),
);

const gwPort = freePort();
const gw = spawnManaged("dualsocks", "deno", [
  "run",
  "--allow-net",
  `${ROOT}/main.ts`,
  "--listen",
  `127.0.0.1:${gwPort}`,
  "--admin",
  "off",
  "--log-level",
  "error",
]);
if (!(await waitPort(gwPort, 30_000, gw))) throw new Error("dualsocks did not start");
const via = `socks5://127.0.0.1:${gwPort}`;
const one = new Uint8Array([42]);

async function pingDeno(conn: Deno.Conn) {
  await conn.write(one);
  const buf = new Uint8Array(1);
  if ((await conn.read(buf)) !== 1) throw new Error("no echo");
  conn.close();
}

function pingNode(): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = net.connect(echoPort, "127.0.0.1", () => s.write(one));
    s.once("data", () => {
      s.destroy();
      resolve();
    });
    s.once("error", reject);
  });
}

async function measure(label: string, fn: () => Promise<void>) {
  for (let i = 0; i < 20; i++) await fn(); // warm-up
  const times: number[] = [];
  for (let i = 0; i < samples; i++) {
    const t0 = performance.now();
    await fn();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  const q = (p: number) => times[Math.min(times.length - 1, Math.floor(p * times.length))];
  const mean = times.reduce((a, b) => a + b, 0) / times.length;
  return { label, median: q(0.5), p90: q(0.9), mean };
}

const target = { hostname: "127.0.0.1", port: echoPort };
const url = `http://127.0.0.1:${web.addr.port}/`;
const rows = [];
try {
  rows.push(await measure("direct Deno.connect", async () => pingDeno(await Deno.connect(target))));
  rows.push(await measure("direct node:net", pingNode));
  rows.push(await measure("direct fetch", async () => void await (await fetch(url)).text()));
  rows.push(
    await measure("connect() (library)", async () => pingDeno(await connect(target, { via }))),
  );
  {
    // direct: [] so that loopback goes through the gateway like any address.
    using _socks = socksify({ via, direct: [] });
    rows.push(
      await measure("socksify Deno.connect", async () => pingDeno(await Deno.connect(target))),
    );
    rows.push(await measure("socksify node:net", pingNode));
    rows.push(await measure("socksify fetch", async () => void await (await fetch(url)).text()));
  }
} finally {
  await stopManaged(gw);
  echo.close();
  await web.shutdown();
}

const base = rows[0].median;
console.log(`\n${samples} samples per path, loopback, dualsocks main.ts as the gateway\n`);
console.log("| path | median ms | p90 ms | mean ms | median vs direct Deno.connect |");
console.log("| ---- | --------- | ------ | ------- | ----------------------------- |");
for (const r of rows) {
  console.log(
    `| ${r.label} | ${r.median.toFixed(3)} | ${r.p90.toFixed(3)} | ${r.mean.toFixed(3)} | +${
      (r.median - base).toFixed(3)
    } ms |`,
  );
}
