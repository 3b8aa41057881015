/**
 * The relay's bandwidth limits, measured in one process on loopback: the
 * throughput of an unlimited relay with the feature (`src/server/relay.ts`)
 * beside the relay from before it (`git show REV:src/server/relay.ts`), a
 * relay whose bucket never runs dry (the limited path's own cost per chunk),
 * and a relay limited to 50 MiB/s (its measured rate against the configured
 * one). Each case downloads SIZE bytes through a fresh relay; the cases are
 * interleaved, and the medians printed as one JSON line.
 *
 * Usage: `deno run -A bench/bandwidth.ts [--rev 5c40b43] [--mib 256] [--reps 5]`
 *
 * @module
 */

import { parseArgs } from "node:util";
import { relay as relayNow, type RelayLimits } from "../src/server/relay.ts";
import { TokenBucket } from "../src/policy/bandwidth.ts";

/** The last commit of src/server/relay.ts before bandwidth limits. */
const BEFORE = "5c40b43";
const ROOT = new URL("..", import.meta.url).pathname;

const { values } = parseArgs({
  args: Deno.args,
  options: {
    rev: { type: "string", default: BEFORE },
    mib: { type: "string", default: "256" },
    reps: { type: "string", default: "5" },
  },
});
const SIZE = Number(values.mib) * 1024 * 1024;
const REPS = Number(values.reps);
const LIMIT = 50 * 1024 * 1024;

type Relay = (
  a: Deno.TcpConn,
  b: Deno.TcpConn,
  stats: { bytesUp: number; bytesDown: number; active: boolean },
  fail: (reason: string) => void,
  limits?: RelayLimits,
) => Promise<string>;

async function loadBefore(rev: string): Promise<Relay> {
  const out = await new Deno.Command("git", {
    args: ["show", `${rev}:src/server/relay.ts`],
    cwd: ROOT,
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(
      `git show ${rev}:src/server/relay.ts: expected the file, found: ${
        new TextDecoder().decode(out.stderr).trim()
      }`,
    );
  }
  const dir = `${ROOT}bench/build`;
  Deno.mkdirSync(dir, { recursive: true });
  const file = `${dir}/relay_before_${rev}.ts`;
  Deno.writeFileSync(file, out.stdout);
  return (await import(`file://${file}`)).relay as Relay;
}

const CHUNK = new Uint8Array(256 * 1024);

/** Downloads `size` bytes through `relay`; returns bytes a second, first byte to last. */
async function once(relay: Relay, size: number, limits?: RelayLimits): Promise<number> {
  const dest = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const front = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = dest.accept().then(async (conn) => {
    try {
      for (let sent = 0; sent < size;) {
        sent += await conn.write(CHUNK.subarray(0, Math.min(CHUNK.length, size - sent)));
      }
    } finally {
      conn.close();
    }
  });
  const client = await Deno.connect({ hostname: "127.0.0.1", port: front.addr.port });
  await client.closeWrite();
  const inner = await front.accept();
  const target = await Deno.connect({ hostname: "127.0.0.1", port: dest.addr.port });
  const stats = { bytesUp: 0, bytesDown: 0, active: false };
  const done = relay(inner, target, stats, () => {
    inner.close();
    target.close();
  }, limits).finally(() => {
    try {
      inner.close();
      target.close();
    } catch {
      // closed on failure
    }
  });
  const buf = new Uint8Array(256 * 1024);
  let got = 0;
  let first = 0;
  for (let n; (n = await client.read(buf)) !== null;) {
    if (got === 0) first = performance.now();
    got += n;
  }
  const last = performance.now();
  await Promise.all([done, served]);
  client.close();
  dest.close();
  front.close();
  if (got !== size) throw new Error(`expected ${size} bytes through the relay, found ${got}`);
  return got / ((last - first) / 1000);
}

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const before = await loadBefore(values.rev!);
const relayNowTyped = relayNow as Relay;
const cases: Record<string, number[]> = { before: [], now: [], never_dry: [], limited: [] };
for (let r = 0; r < REPS; r++) {
  cases.before.push(await once(before, SIZE));
  cases.now.push(await once(relayNowTyped, SIZE));
  // A bucket that never runs dry: every chunk goes through takeAll, none waits.
  cases.never_dry.push(
    await once(relayNowTyped, SIZE, { down: [new TokenBucket({ rate: 1e15, burst: 1e15 })] }),
  );
  // 50 MiB/s with a 256 KiB burst, for about a second.
  cases.limited.push(
    await once(relayNowTyped, LIMIT, {
      down: [new TokenBucket({ rate: LIMIT, burst: 256 * 1024 })],
    }),
  );
}
const gbps = (v: number) => (v * 8) / 1e9;
console.log(JSON.stringify({
  rev: values.rev,
  size: SIZE,
  reps: REPS,
  before_gbps: gbps(median(cases.before)),
  now_gbps: gbps(median(cases.now)),
  never_dry_gbps: gbps(median(cases.never_dry)),
  limit_bps: LIMIT,
  limited_bps: median(cases.limited),
  raw_gbps: Object.fromEntries(
    Object.entries(cases).map(([k, v]) => [k, v.map((x) => Number(gbps(x).toFixed(3)))]),
  ),
}));
