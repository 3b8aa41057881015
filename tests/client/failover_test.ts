/**
 * Deno-shaped targets (`{ hostname, port }`) and client failover (issue 16):
 * a hop lists several gateways; one that refuses or never answers is
 * skipped and remembered as down; when all fail, the error names each one.
 * Real listeners on loopback: a closed port, one that accepts and never
 * answers, and real gateways (dualsocks in process, Dante).
 */
import assert from "node:assert/strict";
import {
  AllGatewaysFailedError,
  connect,
  forward,
  gatewaysDown,
  GatewayUnreachableError,
  parseTarget,
  resetGatewayHealth,
  SocksTimeoutError,
} from "../../src/client/mod.ts";
import { serve } from "../../src/server/gateway.ts";
import { dante, deadline, exchange, startEcho, startServer, testResolver } from "./helpers.ts";

const T = 20_000;

function closedPort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = l.addr.port;
  l.close();
  return port;
}

/** Accepts and holds every connection without a byte in answer. */
function silent() {
  return startServer("127.0.0.1", async (conn) => {
    const buf = new Uint8Array(64);
    while ((await conn.read(buf)) !== null) { /* never answers */ }
  });
}

function dualsocksGateway() {
  const gw = serve({ listen: ["127.0.0.1:0", "[::1]:0"], resolver: testResolver });
  const port = (family: 4 | 6) =>
    gw.addrs.find((a) => a.hostname.includes(":") === (family === 6))!.port;
  return {
    gw,
    url: (family: 4 | 6) =>
      family === 6 ? `socks5://[::1]:${port(6)}` : `socks5://127.0.0.1:${port(4)}`,
    [Symbol.asyncDispose]: () => gw.shutdown({ grace: 0 }),
  };
}

Deno.test("targets: { hostname, port } as Deno.connect takes it, through dualsocks, Dante and a chain across families", async () => {
  await using echo = startEcho("127.0.0.1");
  await using gw1 = dualsocksGateway();
  await using gw2 = dualsocksGateway();
  await using d = await dante.start({ families: [4, 6] });
  const port = echo.addr.port;
  const cases: [string, Parameters<typeof connect>[1]["via"], string][] = [
    ["dualsocks", gw1.url(6), "v4only.test"],
    ["Dante", d.url(6), "localhost"],
    ["chain [::1] dualsocks -> 127.0.0.1 dualsocks", [gw1.url(6), gw2.url(4)], "v4only.test"],
    ["chain [::1] Dante -> 127.0.0.1 dualsocks", [d.url(6), gw2.url(4)], "v4only.test"],
  ];
  for (const [label, via, hostname] of cases) {
    using conn = await deadline(
      connect({ hostname, port }, { via, signal: AbortSignal.timeout(T) }),
      T,
      label,
    );
    assert.deepEqual(conn.target, { host: hostname, port }, label);
    assert.equal(await deadline(exchange(conn, label), T, label), label);
  }
  // forward() takes the same shape.
  await using fwd = forward({
    listen: ["127.0.0.1:0"],
    to: { hostname: "v4only.test", port },
    via: gw1.url(4),
  });
  using local = await Deno.connect({ hostname: "127.0.0.1", port: fwd.addrs[0].port });
  assert.equal(await deadline(exchange(local, "forwarded"), T, "forward"), "forwarded");
});

Deno.test("targets: an object without a host names the key it expected and the keys it found", () => {
  assert.deepEqual(parseTarget({ hostname: "[2001:db8::1]", port: 443 }), {
    host: "2001:db8::1",
    port: 443,
  });
  assert.deepEqual(parseTarget({ host: "a.test", port: 1 }), { host: "a.test", port: 1 });
  assert.throws(
    () => parseTarget({ name: "a.test", port: 80 } as never),
    /expected a "hostname" \(or "host"\) key with a name or an IP literal, found the keys "name", "port"/,
  );
  assert.throws(() => parseTarget({ hostname: "", port: 80 }), /found hostname = ""/);
  assert.throws(() => parseTarget({} as never), /found no keys/);
  assert.throws(
    () => parseTarget({ hostname: "a.test", port: 0 }),
    /port from 1 to 65535, found 0/,
  );
  assert.throws(() => parseTarget(null as never), /found null/);
});

Deno.test("failover: a refused and a silent gateway are skipped, remembered as down, and named when all fail", async () => {
  resetGatewayHealth();
  await using echo = startEcho("127.0.0.1");
  await using quiet = silent();
  await using real = dualsocksGateway();
  const refused = `socks5://127.0.0.1:${closedPort()}`;
  const mute = `socks5://${quiet.hostPort}`;
  const via = [[refused, mute, real.url(4)]];
  const target = { hostname: "v4only.test", port: echo.addr.port };
  try {
    {
      using conn = await deadline(connect(target, { via, timeout: 300 }), T, "first");
      assert.equal(conn.via[0], real.url(4).slice("socks5://".length));
      assert.equal(await exchange(conn, "one"), "one");
    }
    assert.deepEqual(gatewaysDown().sort(), [refused.slice(9), mute.slice(9)].sort());
    assert.equal(quiet.accepted, 1);
    // Both are remembered as down: the next connect goes to the real one first.
    {
      using conn = await deadline(connect(target, { via, timeout: 300 }), T, "second");
      assert.equal(await exchange(conn, "two"), "two");
    }
    assert.equal(quiet.accepted, 1, "the silent gateway was not tried again");

    // All alternatives fail: one error that names each gateway and why.
    resetGatewayHealth();
    const err = await connect(target, { via: [[refused, mute]], timeout: 300 }).then(
      () => assert.fail("expected a failure"),
      (e) => e,
    );
    assert.ok(err instanceof AllGatewaysFailedError, String(err));
    assert.equal(err.failures.length, 2);
    assert.ok(err.failures[0].error instanceof GatewayUnreachableError);
    assert.ok(err.failures[1].error instanceof SocksTimeoutError);
    assert.match(
      err.message,
      new RegExp(
        `^no gateway could carry the connection to v4only\\.test:${echo.addr.port}: ` +
          `${refused.slice(9).replaceAll(".", "\\.")} \\(hop 1\\): could not reach gateway .*; ` +
          `${
            quiet.hostPort.replaceAll(".", "\\.")
          } \\(hop 1\\): no complete SOCKS handshake within 300 ms`,
      ),
    );
    // A single gateway keeps its plain error, and downFor: 0 remembers nothing.
    resetGatewayHealth();
    await assert.rejects(connect(target, { via: refused, downFor: 0 }), GatewayUnreachableError);
    assert.deepEqual(gatewaysDown(), []);
  } finally {
    resetGatewayHealth();
  }
});

Deno.test("failover at the second hop: the first gateway cannot reach one alternative, the next one carries", async () => {
  resetGatewayHealth();
  await using echo = startEcho("127.0.0.1");
  await using first = dualsocksGateway();
  await using second = dualsocksGateway();
  const dead = `socks5://127.0.0.1:${closedPort()}`;
  try {
    using conn = await deadline(
      connect({ hostname: "v4only.test", port: echo.addr.port }, {
        via: [first.url(6), [dead, second.url(4)]],
        timeout: 5000,
      }),
      T,
      "chain",
    );
    assert.equal(conn.via.length, 2);
    assert.equal(conn.via[1], second.url(4).slice(9));
    assert.equal(await exchange(conn, "hop two"), "hop two");
    assert.deepEqual(gatewaysDown(), [dead.slice(9)]);
  } finally {
    resetGatewayHealth();
  }
});
