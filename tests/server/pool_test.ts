/**
 * Running as one of several: the drain delay (readiness 503 while still
 * serving, so that a balancer can stop sending first), the instance name in
 * the admin API, and SO_REUSEPORT (two gateway processes on one port).
 */
import assert from "node:assert/strict";
import { ListenError, serve } from "../../src/server/gateway.ts";
import { createAdminHandler } from "../../src/admin/handler.ts";
import {
  echoServer,
  gatewayAddr,
  readN,
  recordingLogger,
  socksConnect,
  withTimeout,
  writeAll,
} from "../helpers.ts";
import { addrOf, MAIN, spawnLogging } from "../deploy/gateway_process.ts";

const enc = new TextEncoder();

async function echoes(conn: Deno.TcpConn, text: string) {
  await writeAll(conn, enc.encode(text));
  assert.equal(new TextDecoder().decode(await readN(conn, text.length)), text);
}

Deno.test("pool: during the drain delay readiness is 503 and new clients are still served", async () => {
  await using dest = echoServer("127.0.0.1");
  const gw = serve({ listen: ["127.0.0.1:0"], logger: recordingLogger() });
  const admin = createAdminHandler(gw, {});
  const at = gatewayAddr(gw, 4);
  try {
    assert.equal((await admin(new Request("http://127.0.0.1/readyz"))).status, 200);
    const stopped = gw.shutdown({ grace: 10_000, drainDelay: 60_000 });
    assert.equal(gw.draining, true);
    const ready = await admin(new Request("http://127.0.0.1/readyz"));
    assert.equal(ready.status, 503);
    await ready.body?.cancel();
    // A client the balancer sent before it saw the 503 still gets a relay.
    const { conn, reply } = await socksConnect(at, "127.0.0.1", dest.addr.port);
    try {
      assert.equal(reply?.reply, 0);
      await echoes(conn, "drain");
    } finally {
      conn.close();
    }
    assert.equal(gw.stats.sessionsRejected, 0);
    // A shorter grace (a second signal) ends the drain delay too.
    await withTimeout(gw.shutdown({ grace: 0 }), 10_000, "shutdown cut short");
    await stopped;
    await assert.rejects(Deno.connect(at), "the listener closed");
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

Deno.test("pool: a session still connecting when the drained listener closes is let finish", async () => {
  await using dest = echoServer("127.0.0.1");
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  let dialing!: () => void;
  const dialStarted = new Promise<void>((r) => (dialing = r));
  const logger = recordingLogger();
  const gw = serve({
    listen: ["127.0.0.1:0"],
    logger,
    dialer: async (t, o) => {
      dialing();
      await held;
      return Deno.connect({ hostname: t.hostname, port: t.port, signal: o.signal });
    },
  });
  try {
    const pending = socksConnect(gatewayAddr(gw, 4), "127.0.0.1", dest.addr.port);
    await dialStarted;
    const stopped = gw.shutdown({ grace: 10_000, drainDelay: 1 });
    // Logged once the listeners are closed and sessions not relaying were dealt with.
    await logger.waitFor((p) => p.count === 1 && p.grace === 10_000);
    release();
    const { conn, reply } = await pending;
    try {
      assert.equal(reply?.reply, 0, "the connecting session got its relay");
      await echoes(conn, "late");
    } finally {
      conn.close();
    }
    await withTimeout(stopped, 10_000, "the drained shutdown");
  } finally {
    release();
    await gw.shutdown({ grace: 0 });
  }
});

Deno.test("pool: the instance name is in the stats and the metrics", async () => {
  const named = serve({ listen: ["127.0.0.1:0"], logger: recordingLogger(), instance: "gw-a" });
  const unnamed = serve({ listen: ["127.0.0.1:0"], logger: recordingLogger() });
  try {
    const admin = createAdminHandler(named, {});
    const stats = await (await admin(new Request("http://127.0.0.1/api/v1/stats"))).json();
    assert.equal(stats.instance, "gw-a");
    const metrics = await (await admin(new Request("http://127.0.0.1/metrics"))).text();
    assert.match(metrics, /^dualsocks_instance_info\{instance="gw-a"\} 1$/m);
    // Default: HOSTNAME/PID with --allow-sys (the test task grants it), else the pid.
    const sys = Deno.permissions.querySync({ name: "sys", kind: "hostname" }).state;
    assert.equal(
      unnamed.instance,
      sys === "granted" ? `${Deno.hostname()}/${Deno.pid}` : String(Deno.pid),
    );
  } finally {
    await named.shutdown({ grace: 0 });
    await unnamed.shutdown({ grace: 0 });
  }
});

Deno.test({
  name: "pool: reusePort without --unstable-net is refused with a ListenError that says so",
  // Under --unstable-net the bind would succeed: this is about the flag's absence.
  ignore: typeof (Deno as { listenDatagram?: unknown }).listenDatagram === "function",
  fn() {
    assert.throws(
      () => serve({ listen: ["127.0.0.1:0"], reusePort: true, logger: recordingLogger() }),
      (e: unknown) => e instanceof ListenError && /--unstable-net/.test(e.message),
    );
  },
});

/** A port that was free a moment ago (a gateway must then bind it; retried on collision). */
function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = l.addr;
  l.close();
  return port;
}

Deno.test("pool: two gateway processes share one port with reuse_port; both serve", async () => {
  await using dest = echoServer("127.0.0.1");
  const dir = await Deno.makeTempDir({ prefix: "dualsocks-reuseport-" });
  const procs: ReturnType<typeof spawnLogging>[] = [];
  try {
    let port = 0;
    for (let attempt = 0; attempt < 5 && procs.length < 2; attempt++) {
      for (const p of procs.splice(0)) await p[Symbol.asyncDispose]();
      port = freePort();
      for (const name of ["a", "b"]) {
        const file = `${dir}/${name}.yaml`;
        await Deno.writeTextFile(
          file,
          `listen: ["127.0.0.1:${port}"]\nreuse_port: true\ninstance_name: gw-${name}\n` +
            `admin: {listen: "127.0.0.1:0"}\nlog: {format: json}\n`,
        );
        const p = spawnLogging(Deno.execPath(), [
          "run",
          "--unstable-net",
          "--allow-net",
          `--allow-read=${dir}`,
          MAIN,
          "--config",
          file,
        ]);
        procs.push(p);
        const up = await Promise.race([
          p.waitFor((r) => r.message === "listening on {addrs}").then(() => true),
          p.status().then(() => false), // exited: the port was taken meanwhile
        ]);
        if (!up) {
          procs.pop();
          break;
        }
      }
    }
    assert.equal(procs.length, 2, "two gateways listen on the same port");
    const admins = await Promise.all(
      procs.map(async (p) =>
        String((await p.waitFor((r) => r.message.startsWith("admin API on"))).properties.addr)
      ),
    );
    // The kernel spreads connections by their addresses: 40 give both a share
    // (all on one: a chance of 2^-39).
    for (let i = 0; i < 40; i++) {
      const { conn, reply } = await socksConnect(
        { hostname: "127.0.0.1", port },
        "127.0.0.1",
        dest.addr.port,
      );
      try {
        assert.equal(reply?.reply, 0);
        await echoes(conn, `n${i}`);
      } finally {
        conn.close();
      }
    }
    const totals: Record<string, number> = {};
    for (const addr of admins) {
      const { hostname, port: p } = addrOf(addr);
      const res = await fetch(`http://${hostname}:${p}/api/v1/stats`, {
        signal: AbortSignal.timeout(10_000),
      });
      const stats = await res.json();
      totals[stats.instance] = stats.sessions.total;
    }
    assert.deepEqual(Object.keys(totals).sort(), ["gw-a", "gw-b"]);
    assert.equal(totals["gw-a"] + totals["gw-b"], 40);
    assert.ok(totals["gw-a"] > 0 && totals["gw-b"] > 0, JSON.stringify(totals));
    for (const p of procs) p.child.kill("SIGTERM");
    for (const p of procs) assert.equal((await p.status()).code, 0);
  } finally {
    for (const p of procs) await p[Symbol.asyncDispose]();
    await Deno.remove(dir, { recursive: true });
  }
});
