/**
 * The pool of deploy/haproxy, as shipped (only its ports swapped for free
 * ones): Debian's HAProxy with send-proxy-v2 in front of two gateway
 * processes, health-checked on their /readyz. Under a steady load of new
 * SOCKS5 sessions from IPv4 and IPv6 clients and long sha256-checked
 * downloads, each instance in turn gets SIGTERM (it drains: readiness 503,
 * drain delay, listener closed, relays finish), exits, starts again and is
 * marked UP again: no session may fail, every download must arrive whole,
 * and the gateways' logs must show the clients' own addresses.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  echoServer,
  joinHostPort,
  readN,
  run,
  socksConnect,
  startServer,
  withTimeout,
  writeAll,
} from "../helpers.ts";
import {
  binaryFlags,
  type LoggingProcess,
  MAIN,
  ROOT,
  spawnLogging,
  WAIT_MS,
} from "./gateway_process.ts";

const DEPLOY = `${ROOT}deploy/haproxy/`;
const inCi = Deno.env.get("CI") === "true";
const haproxy = await run("haproxy", ["-v"]).then((r) => r.code === 0, () => false);

/** Each download: 64 chunks of 1 MiB, each chunk numbered so that reordering shows. */
const CHUNK = 1 << 20;
const CHUNKS = 64;
const SIZE = CHUNK * CHUNKS;
/** Downloads held open across each instance's restart. */
const DOWNLOADS_PER_RESTART = 4;
/** Clients that keep opening short sessions, per family. */
const LOAD_WORKERS_PER_FAMILY = 1;
/** How long HAProxy gets to change its mind about a server. */
const STATE_MS = 30_000;

const BLOCK = (() => {
  const b = new Uint8Array(CHUNK);
  for (let i = 0; i < CHUNK; i += 65536) crypto.getRandomValues(b.subarray(i, i + 65536));
  return b;
})();
/** Chunk `i` of a download, written into `into`. */
function chunk(i: number, into: Uint8Array): Uint8Array {
  into.set(BLOCK);
  new DataView(into.buffer).setUint32(0, i);
  return into;
}
const EXPECTED_SHA = (() => {
  const h = createHash("sha256");
  const buf = new Uint8Array(CHUNK);
  for (let i = 0; i < CHUNKS; i++) h.update(chunk(i, buf));
  return h.digest("hex");
})();

/** `n` distinct ports free right now on 127.0.0.1, the first one free on ::1 too. */
function freePorts(n: number): number[] {
  const held: Deno.TcpListener[] = [];
  try {
    while (held.length === 0) {
      const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      try {
        held.push(Deno.listen({ hostname: "::1", port: l.addr.port }), l);
      } catch {
        l.close();
      }
    }
    const ports = [held[1].addr.port];
    while (ports.length < n) {
      const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      held.push(l);
      ports.push(l.addr.port);
    }
    return ports;
  } finally {
    for (const l of held) l.close();
  }
}

/** `text` with each key of `swaps` replaced; every key must be there (the example's shape). */
function swap(text: string, swaps: Record<string, string>, what: string): string {
  for (const [from, to] of Object.entries(swaps)) {
    assert.ok(text.includes(from), `${what}: expected "${from}" in the shipped file, found none`);
    text = text.replaceAll(from, to);
  }
  return text;
}

interface Ports {
  front: number;
  stats: number;
  socks: { a: number; b: number };
  admin: { a: number; b: number };
}

/** Server name -> HAProxy's status (`UP`, `DOWN`, `UP 1/2`...), from the stats CSV. */
async function serverStates(ports: Ports): Promise<Record<string, string>> {
  const res = await fetch(`http://127.0.0.1:${ports.stats}/stats;csv`, {
    signal: AbortSignal.timeout(5_000),
  });
  const text = await res.text();
  const [header, ...rows] = text.trim().split("\n");
  const cols = header.replace(/^# /, "").split(",");
  const [px, sv, st] = ["pxname", "svname", "status"].map((c) => cols.indexOf(c));
  const out: Record<string, string> = {};
  for (const row of rows) {
    const f = row.split(",");
    if (f[px] === "dualsocks" && f[sv].startsWith("gw-")) out[f[sv]] = f[st];
  }
  return out;
}

/** Polls HAProxy (bounded) until `server`'s status is `want`. */
async function waitState(ports: Ports, server: string, want: string): Promise<void> {
  const until = performance.now() + STATE_MS;
  let last: Record<string, string> = {};
  while (performance.now() < until) {
    last = await serverStates(ports).catch(() => ({}));
    if (last[server] === want) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`haproxy: ${server} not ${want} within ${STATE_MS} ms: ${JSON.stringify(last)}`);
}

/** Writes the example's files with the test's ports, under `dir`. */
async function writePool(dir: string, ports: Ports): Promise<void> {
  const cfg = await Deno.readTextFile(`${DEPLOY}haproxy.cfg`);
  await Deno.writeTextFile(
    `${dir}/haproxy.cfg`,
    swap(cfg, {
      "0.0.0.0:1080": `127.0.0.1:${ports.front}`,
      ":::1080 v6only": `::1:${ports.front}`,
      "127.0.0.1:8404": `127.0.0.1:${ports.stats}`,
      "127.0.0.1:10801 check port 9081": `127.0.0.1:${ports.socks.a} check port ${ports.admin.a}`,
      "127.0.0.1:10802 check port 9082": `127.0.0.1:${ports.socks.b} check port ${ports.admin.b}`,
    }, "haproxy.cfg"),
  );
  for (const [name, n] of [["a", 1], ["b", 2]] as const) {
    const yaml = await Deno.readTextFile(`${DEPLOY}dualsocks-${name}.yaml`);
    await Deno.writeTextFile(
      `${dir}/dualsocks-${name}.yaml`,
      swap(yaml, {
        [`127.0.0.1:1080${n}`]: `127.0.0.1:${ports.socks[name]}`,
        [`127.0.0.1:908${n}`]: `127.0.0.1:${ports.admin[name]}`,
      }, `dualsocks-${name}.yaml`),
    );
  }
}

/** Starts one instance; resolves once it listens, or rejects (its port was taken...). */
async function startGateway(dir: string, name: "a" | "b"): Promise<LoggingProcess> {
  const gw = spawnLogging(Deno.execPath(), [
    "run",
    ...binaryFlags(dir),
    MAIN,
    "--config",
    `${dir}/dualsocks-${name}.yaml`,
  ]);
  try {
    await gw.waitFor((r) => r.message.startsWith("admin API on"), WAIT_MS);
    await gw.waitFor((r) => r.message === "listening on {addrs}", WAIT_MS);
    return gw;
  } catch (error) {
    await gw[Symbol.asyncDispose]();
    throw error;
  }
}

const enc = new TextEncoder();

Deno.test({
  name: "pool: HAProxy send-proxy-v2 in front of two gateways, rolling restart loses nothing",
  ignore: !haproxy && !inCi,
  async fn() {
    assert.ok(haproxy, "haproxy is required under CI (apt-get install haproxy)");
    await using echo = echoServer("127.0.0.1");
    await using files = startServer("127.0.0.1", async (conn) => {
      // Nothing before the client asks: bytes that came with the SOCKS reply would stay in
      // the handshake's read buffer.
      if ((await readN(conn, 1))[0] !== 0x47) return;
      const buf = new Uint8Array(CHUNK);
      for (let i = 0; i < CHUNKS; i++) await writeAll(conn, chunk(i, buf));
      await conn.closeWrite();
      await conn.read(new Uint8Array(1)).catch(() => null);
    });
    const dir = await Deno.makeTempDir({ prefix: "dualsocks-pool-" });
    const gateways: { name: "a" | "b"; gw: LoggingProcess }[] = []; // every one, old and new
    const live: Record<"a" | "b", LoggingProcess | undefined> = { a: undefined, b: undefined };
    let ha: LoggingProcess | undefined;
    let ports!: Ports;
    let loadRunning = true;
    const load = { started: 0, failed: 0, errors: [] as string[] };
    const clients = new Set<string>(); // HOST:PORT of every client socket of the test
    try {
      // Free ports, then HAProxy and the two instances on them; again on a collision.
      for (let attempt = 1;; attempt++) {
        const [front, stats, sa, sb, aa, ab] = freePorts(6);
        ports = { front, stats, socks: { a: sa, b: sb }, admin: { a: aa, b: ab } };
        await writePool(dir, ports);
        try {
          live.a = await startGateway(dir, "a");
          gateways.push({ name: "a", gw: live.a });
          live.b = await startGateway(dir, "b");
          gateways.push({ name: "b", gw: live.b });
          ha = spawnLogging("haproxy", ["-db", "-f", `${dir}/haproxy.cfg`]);
          await waitState(ports, "gw-a", "UP");
          await waitState(ports, "gw-b", "UP");
          break;
        } catch (error) {
          for (const p of [ha, live.a, live.b]) await p?.[Symbol.asyncDispose]();
          gateways.length = 0;
          ha = live.a = live.b = undefined;
          if (attempt === 3) throw error;
        }
      }
      const front = (hostname: string) => ({ hostname, port: ports.front });

      /** One long download through HAProxy; reads half, waits for `gate`, reads the rest. */
      const download = async (
        hostname: string,
        gate: Promise<unknown>,
        connected: () => void,
      ) => {
        const { conn, reply } = await socksConnect(front(hostname), "127.0.0.1", files.addr.port);
        clients.add(joinHostPort(conn.localAddr.hostname, conn.localAddr.port));
        connected();
        try {
          assert.equal(reply?.reply, 0, "the download's CONNECT");
          await writeAll(conn, enc.encode("G"));
          const hash = createHash("sha256");
          const buf = new Uint8Array(256 * 1024);
          let got = 0;
          let waited = false;
          while (true) {
            if (!waited && got >= SIZE / 2) {
              waited = true;
              await gate;
            }
            const n = await withTimeout(conn.read(buf), WAIT_MS * 3, "download bytes");
            if (n === null) break;
            hash.update(buf.subarray(0, n));
            got += n;
          }
          return {
            bytes: got,
            sha: hash.digest("hex"),
            client: joinHostPort(conn.localAddr.hostname, conn.localAddr.port),
          };
        } finally {
          conn.close();
        }
      };

      /** New short sessions, one after another, until the restarts are over. */
      const worker = async (hostname: string) => {
        for (let i = 0; loadRunning; i++) {
          load.started++;
          try {
            const { conn, reply } = await socksConnect(
              front(hostname),
              "127.0.0.1",
              echo.addr.port,
            );
            clients.add(joinHostPort(conn.localAddr.hostname, conn.localAddr.port));
            try {
              if (reply?.reply !== 0) throw new Error(`reply ${reply?.reply}`);
              const text = `${hostname} ${i} `.padEnd(32, ".");
              await writeAll(conn, enc.encode(text));
              const back = new TextDecoder().decode(await readN(conn, text.length));
              if (back !== text) throw new Error(`echo "${back}", expected "${text}"`);
            } finally {
              conn.close();
            }
          } catch (error) {
            load.failed++;
            if (load.errors.length < 10) load.errors.push(`${hostname}: ${error}`);
          }
        }
      };

      /** SIGTERM to `name`, its drain (with downloads held across it), exit, start, UP. */
      const restart = async (name: "a" | "b", downloads: Promise<unknown>[], gate: () => void) => {
        const old = live[name]!;
        const termAt = performance.now();
        old.child.kill("SIGTERM");
        await old.waitFor((r) => r.message.includes("shutting down"));
        await waitState(ports, `gw-${name}`, "DOWN");
        const downAfter = Math.round(performance.now() - termAt);
        // The listener closes after the drain delay; release the downloads once it has.
        await Promise.race([
          old.waitFor((r) => r.message.startsWith("waiting up to"), STATE_MS),
          old.status(STATE_MS),
        ]);
        gate();
        await Promise.all(downloads);
        const status = await old.status(STATE_MS);
        assert.equal(status.code, 0, `gw-${name} exits cleanly after its drain`);
        live[name] = await startGateway(dir, name);
        gateways.push({ name, gw: live[name]! });
        await waitState(ports, `gw-${name}`, "UP");
        return { downAfter, upAfter: Math.round(performance.now() - termAt) };
      };

      const families = ["127.0.0.1", "::1"];
      const results: { bytes: number; sha: string; client: string }[] = [];
      /** Downloads, started one after another (so that leastconn spreads them). */
      const batch = async (gate: Promise<unknown>) => {
        const done: Promise<void>[] = [];
        for (let i = 0; i < DOWNLOADS_PER_RESTART; i++) {
          const { promise, resolve } = Promise.withResolvers<void>();
          done.push(download(families[i % 2], gate, resolve).then((r) => void results.push(r)));
          await Promise.race([promise, done[i]]);
        }
        return done;
      };

      let openA!: () => void;
      const gateA = new Promise<void>((r) => (openA = r));
      const firstBatch = await batch(gateA);
      const workers = families.flatMap((h) =>
        Array.from({ length: LOAD_WORKERS_PER_FAMILY }, () => worker(h))
      );
      const timesA = await restart("a", firstBatch, openA);

      let openB!: () => void;
      const gateB = new Promise<void>((r) => (openB = r));
      const secondBatch = await batch(gateB);
      const timesB = await restart("b", secondBatch, openB);
      loadRunning = false;
      await Promise.all(workers);
      // Stop the pool so that every log line is written (the log sink batches them).
      for (const name of ["a", "b"] as const) live[name]!.child.kill("SIGTERM");
      for (const name of ["a", "b"] as const) {
        assert.equal((await live[name]!.status(STATE_MS)).code, 0, `gw-${name} stops cleanly`);
      }

      const figures = {
        sessionsStarted: load.started,
        sessionsFailed: load.failed,
        downloads: results.length,
        downloadsChecked: results.filter((r) => r.bytes === SIZE && r.sha === EXPECTED_SHA).length,
        downloadMiB: SIZE / CHUNK,
        haproxyDownAfterSigtermMs: { a: timesA.downAfter, b: timesB.downAfter },
        backUpAfterSigtermMs: { a: timesA.upAfter, b: timesB.upAfter },
      };
      console.log(`pool figures: ${JSON.stringify(figures)}`);
      for (const r of results.filter((r) => r.bytes !== SIZE || r.sha !== EXPECTED_SHA)) {
        const lines = gateways.flatMap(({ name, gw }) =>
          gw.records.filter((l) => l.properties.client === r.client).map((l) =>
            `gw-${name}: ${JSON.stringify(l.properties)}`
          )
        );
        console.log(`download via ${r.client}: ${r.bytes} bytes; logged:\n${lines.join("\n")}`);
      }
      assert.deepEqual(load.errors, [], "no session failed");
      assert.equal(load.failed, 0);
      assert.ok(load.started > 0);
      assert.equal(results.length, 2 * DOWNLOADS_PER_RESTART);
      for (const r of results) {
        assert.equal(r.bytes, SIZE, "the download is whole");
        assert.equal(r.sha, EXPECTED_SHA, "the download's checksum");
      }

      // The logs: every session's client is one of the test's own sockets (HAProxy's
      // address never shows), IPv6 clients appear as such (type C), and a download
      // crossed each instance's restart (it ended after that instance's SIGTERM).
      let sessions = 0;
      let v6 = 0;
      const crossed = { a: 0, b: 0 };
      for (const { name, gw } of gateways) {
        let afterSignal = false;
        for (const r of gw.records) {
          if (r.message.includes("shutting down")) afterSignal = true;
          if (!r.message.startsWith("session {id}")) continue;
          sessions++;
          const client = String(r.properties.client);
          assert.ok(clients.has(client), `a logged client is one of the test's: ${client}`);
          if (client.startsWith("[::1]:")) {
            v6++;
            assert.equal(r.properties.type, "C", `IPv6 client to IPv4 is type C: ${client}`);
          }
          if (afterSignal && r.properties.bytesDown === SIZE) crossed[name]++;
        }
      }
      assert.ok(v6 > 0, "IPv6 clients were seen as IPv6 through the PROXY header");
      assert.equal(sessions, load.started + results.length, "one log line per session");
      assert.ok(
        crossed.a > 0 && crossed.b > 0,
        `downloads crossed both drains: ${JSON.stringify(crossed)}`,
      );
    } finally {
      loadRunning = false;
      for (const p of [ha, ...gateways.map((g) => g.gw)]) await p?.[Symbol.asyncDispose]();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "pool: the shipped haproxy.cfg is valid (haproxy -c)",
  ignore: !haproxy && !inCi,
  async fn() {
    const check = await run("haproxy", ["-c", "-f", `${DEPLOY}haproxy.cfg`]);
    assert.equal(check.code, 0, check.stdout + check.stderr);
  },
});
