/**
 * Throughput of one large download through dualsocks' HTTP front door
 * (forwarding and CONNECT) next to SOCKS5 and a direct download, on
 * loopback, with curl as the client and dualsocks as a child process
 * (`main.ts`, the shipped permissions). Optionally tinyproxy (Debian's) for
 * comparison.
 *
 * ```sh
 * deno run -A bench/http_throughput.ts                 # 64 MiB, 3 rounds
 * deno run -A bench/http_throughput.ts --mib 256 --rounds 5 --tinyproxy
 * ```
 *
 * Prints a Markdown table of the median MiB/s per path.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { freePort, run, spawnManaged, stopManaged, waitPort } from "./proc.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
const args = parseArgs({
  args: Deno.args,
  options: {
    mib: { type: "string", default: "64" },
    rounds: { type: "string", default: "3" },
    tinyproxy: { type: "boolean", default: false },
  },
});
const size = Number(args.values.mib) * 1024 * 1024;
const rounds = Number(args.values.rounds);

// The origin: a raw HTTP/1.1 server writing `size` bytes from one 1 MiB block.
const block = new Uint8Array(1024 * 1024).map((_, i) => (i * 31 + 7) & 0xff);
const origin = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const originPort = (origin.addr as Deno.NetAddr).port;
(async () => {
  for await (const conn of origin) {
    (async () => {
      const buf = new Uint8Array(16384);
      try {
        let text = "";
        while (!text.includes("\r\n\r\n")) {
          const n = await conn.read(buf);
          if (n === null) return;
          text += new TextDecoder().decode(buf.subarray(0, n));
        }
        const head = `HTTP/1.1 200 OK\r\nContent-Length: ${size}\r\nConnection: close\r\n\r\n`;
        await conn.write(new TextEncoder().encode(head));
        for (let sent = 0; sent < size;) {
          const piece = block.subarray(0, Math.min(block.length, size - sent));
          for (let off = 0; off < piece.length;) off += await conn.write(piece.subarray(off));
          sent += piece.length;
        }
      } catch {
        /* client gone */
      } finally {
        try {
          conn.close();
        } catch { /* closed */ }
      }
    })();
  }
})();

const gwPort = freePort();
const gw = spawnManaged("dualsocks", Deno.execPath(), [
  "run",
  "--allow-net",
  `${ROOT}/main.ts`,
  "--listen",
  `127.0.0.1:${gwPort}`,
  "--admin",
  "off",
  "--log-level",
  "warning",
]);
let tiny: ReturnType<typeof spawnManaged> | undefined;
let tinyPort = 0;
let tinyDir = "";
try {
  if (!(await waitPort(gwPort, 20_000, gw))) throw new Error("dualsocks did not start");
  if (args.values.tinyproxy) {
    tinyPort = freePort();
    tinyDir = await Deno.makeTempDir();
    await Deno.writeTextFile(
      `${tinyDir}/tinyproxy.conf`,
      `Port ${tinyPort}\nListen 127.0.0.1\nTimeout 60\nMaxClients 100\nLogLevel Critical\n` +
        `Allow 127.0.0.1\nConnectPort ${originPort}\nDisableViaHeader No\n`,
    );
    tiny = spawnManaged("tinyproxy", "tinyproxy", ["-d", "-c", `${tinyDir}/tinyproxy.conf`]);
    if (!(await waitPort(tinyPort, 10_000, tiny))) throw new Error("tinyproxy did not start");
  }
  const url = `http://127.0.0.1:${originPort}/big`;
  const paths: [string, string[]][] = [
    ["direct", []],
    ["dualsocks SOCKS5", ["--socks5", `127.0.0.1:${gwPort}`]],
    ["dualsocks HTTP forward", ["--proxy", `http://127.0.0.1:${gwPort}`]],
    ["dualsocks HTTP CONNECT", ["--proxytunnel", "--proxy", `http://127.0.0.1:${gwPort}`]],
  ];
  if (tiny) {
    paths.push(["tinyproxy HTTP forward", ["--proxy", `http://127.0.0.1:${tinyPort}`]]);
    paths.push(["tinyproxy HTTP CONNECT", [
      "--proxytunnel",
      "--proxy",
      `http://127.0.0.1:${tinyPort}`,
    ]]);
  }
  const rows: string[] = [];
  for (const [name, flags] of paths) {
    const speeds: number[] = [];
    for (let i = 0; i < rounds; i++) {
      const r = await run(name, "curl", [
        "-sS",
        "--noproxy",
        "",
        "--max-time",
        "120",
        ...flags,
        "-o",
        "/dev/null",
        "-w",
        "%{size_download} %{speed_download}",
        url,
      ], 180_000);
      const [got, speed] = r.stdout.trim().split(" ").map(Number);
      if (r.code !== 0 || got !== size) {
        throw new Error(`${name}: curl exit ${r.code}, ${got} of ${size} bytes: ${r.stderr}`);
      }
      speeds.push(speed / 1024 / 1024);
    }
    speeds.sort((a, b) => a - b);
    const median = speeds[Math.floor(speeds.length / 2)];
    rows.push(`| ${name} | ${median.toFixed(0)} | ${speeds.map((s) => s.toFixed(0)).join(", ")} |`);
  }
  console.log(`${args.values.mib} MiB download over loopback, curl, ${rounds} rounds (MiB/s)\n`);
  console.log("| path | median MiB/s | rounds |\n| --- | --- | --- |");
  console.log(rows.join("\n"));
} finally {
  if (tiny) await stopManaged(tiny);
  if (tinyDir) await Deno.remove(tinyDir, { recursive: true });
  await stopManaged(gw);
  origin.close();
}
