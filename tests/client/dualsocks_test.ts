/**
 * The Socks Lib against dualsocks itself: a chain of two dualsocks gateways
 * that changes family at each hop, and socksify with a name only the
 * gateway can resolve.
 */
import assert from "node:assert/strict";
import { connect, FakeDns, SocksConn, socksify } from "../../src/client/mod.ts";
import { deadline, dualsocks, exchange, startEcho } from "./helpers.ts";

const T = 20_000;

Deno.test("connect through a chain of dualsocks: client -> [::1] gw1 -> 127.0.0.1 gw2 -> destination", async () => {
  await using echo = startEcho("127.0.0.1");
  await using gw1 = await dualsocks.start({ families: [6] });
  const login = { username: "hop2", password: "p2" };
  await using gw2 = await dualsocks.start({ families: [4], auth: login });
  // v4only.test is known to the gateways' resolver hook only.
  using conn = await connect(`v4only.test:${echo.addr.port}`, {
    via: [gw1.url(6), gw2.url(4, login)],
    timeout: T,
  });
  assert.deepEqual(conn.via, [`[::1]:${gw1.port}`, `127.0.0.1:${gw2.port}`]);
  assert.equal(conn.remoteAddr.hostname, "::1");
  assert.equal(conn.boundAddr.hostname, "127.0.0.1", "BND of the last hop");
  assert.equal(await deadline(exchange(conn, "two hops"), T, "two hops"), "two hops");
});

Deno.test("socksify with dualsocks: unmodified code reaches a name only the gateway resolves", async () => {
  await using echo = startEcho("127.0.0.1");
  await using gw = await dualsocks.start({ families: [6] });
  const original = { connect: Deno.connect, resolveDns: Deno.resolveDns };
  const socks = socksify({ via: gw.url(6), fakeDns: new FakeDns() });
  try {
    // An IPv6 application: it asks for AAAA although the destination is IPv4-only.
    const [address] = await Deno.resolveDns("v4only.test", "AAAA");
    assert.match(address, /^100::/, "a fake address from the discard-only prefix");
    const conn = await Deno.connect({ hostname: address, port: echo.addr.port });
    try {
      assert.ok(conn instanceof SocksConn);
      assert.equal(conn.target.host, "v4only.test");
      assert.equal(await deadline(exchange(conn, "delegated"), T, "exchange"), "delegated");
    } finally {
      conn.close();
    }
  } finally {
    socks.restore();
  }
  assert.equal(Deno.connect, original.connect);
  assert.equal(Deno.resolveDns, original.resolveDns);
});
