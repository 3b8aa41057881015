/** Session limits per client address and per user, on loopback. */
import assert from "node:assert/strict";
import { serve, type ServeOptions } from "../../src/server/gateway.ts";
import { echoServer, gatewayAddr, recordingLogger, socksConnect } from "../helpers.ts";
import { renderMetrics } from "../../src/admin/metrics.ts";

async function withGateway(
  options: ServeOptions,
  fn: (
    g: ReturnType<typeof serve>,
    logger: ReturnType<typeof recordingLogger>,
    echoPort: number,
  ) => Promise<void>,
) {
  const echo = echoServer("127.0.0.1");
  const logger = recordingLogger();
  const gw = serve({ listen: ["127.0.0.1:0"], logger, ...options });
  try {
    await fn(gw, logger, echo.addr.port);
  } finally {
    await gw.shutdown({ grace: 0 });
    await echo.close();
  }
}

Deno.test("per client: sessions open at once; a closed one frees its place", async () => {
  await withGateway({ safety: { perClient: { sessions: 2 } } }, async (gw, logger, port) => {
    const proxy = gatewayAddr(gw, 4);
    const a = await socksConnect(proxy, "127.0.0.1", port);
    const b = await socksConnect(proxy, "127.0.0.1", port);
    assert.equal(a.reply?.reply, 0);
    assert.equal(b.reply?.reply, 0);
    const c = await socksConnect(proxy, "127.0.0.1", port);
    assert.equal(c.reply?.reply, 2, "the third is over the limit");
    c.conn.close();
    const refused = await logger.waitFor((p) =>
      String(p.why ?? "").includes("limits.per_client.sessions")
    );
    assert.match(String(refused.why), /^client 127\.0\.0\.1: expected at most 2 open sessions/);
    // Only that session ended: a and b still relay.
    const closed = logger.waitFor((p) => p.id === 1 && "bytesUp" in p);
    a.conn.close();
    await closed;
    const d = await socksConnect(proxy, "127.0.0.1", port);
    assert.equal(d.reply?.reply, 0);
    await b.conn.write(new Uint8Array([1]));
    b.conn.close();
    d.conn.close();
    assert.equal(gw.safety!.stats.limitRefusals.client, 1);
    assert.match(renderMetrics(gw), /^dualsocks_limit_refusals_total\{kind="client"\} 1$/m);
  });
});

Deno.test("per client: new sessions a second, a token bucket", async () => {
  // 0.01 a second: the budget does not refill while the test runs.
  await withGateway({ safety: { perClient: { rate: 0.01, burst: 3 } } }, async (gw, _l, port) => {
    const proxy = gatewayAddr(gw, 4);
    for (let i = 0; i < 3; i++) {
      const r = await socksConnect(proxy, "127.0.0.1", port);
      assert.equal(r.reply?.reply, 0, `session ${i}`);
      r.conn.close();
    }
    const over = await socksConnect(proxy, "127.0.0.1", port);
    assert.equal(over.reply?.reply, 2);
    over.conn.close();
  });
});

Deno.test("per user: sessions open at once, counted after the login", async () => {
  const users = [{ username: "alice", password: "a" }, { username: "bob", password: "b" }];
  await withGateway({ users, safety: { perUser: { sessions: 1 } } }, async (gw, _l, port) => {
    const proxy = gatewayAddr(gw, 4);
    const alice = { auth: { username: "alice", password: "a" } };
    const first = await socksConnect(proxy, "127.0.0.1", port, alice);
    assert.equal(first.reply?.reply, 0);
    const second = await socksConnect(proxy, "127.0.0.1", port, alice);
    assert.equal(second.authOk, true);
    assert.equal(second.reply?.reply, 2);
    second.conn.close();
    const bob = await socksConnect(proxy, "127.0.0.1", port, {
      auth: { username: "bob", password: "b" },
    });
    assert.equal(bob.reply?.reply, 0, "another user has a limit of his own");
    first.conn.close();
    bob.conn.close();
    assert.equal(gw.safety!.stats.limitRefusals.user, 1);
  });
});

Deno.test("no limits configured: nothing is refused", async () => {
  await withGateway({}, async (gw, _l, port) => {
    const proxy = gatewayAddr(gw, 4);
    const conns = [];
    for (let i = 0; i < 20; i++) {
      const r = await socksConnect(proxy, "127.0.0.1", port);
      assert.equal(r.reply?.reply, 0);
      conns.push(r.conn);
    }
    for (const c of conns) c.close();
    assert.deepEqual(gw.safety!.stats.limitRefusals, { client: 0, user: 0 });
  });
});
