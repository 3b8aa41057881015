/**
 * Gateway-side chaining (RFC 3089 section 4): routed destinations go through
 * an upstream chain built with the Socks Lib; the rest go direct.
 */
import assert from "node:assert/strict";
import { serve } from "../../src/server/gateway.ts";
import { compileRoutes } from "../../src/server/routes.ts";
import { ResolveError } from "../../src/server/errors.ts";
import { gatewayAddr, peerServer, readLine, recordingLogger, socksConnect } from "../helpers.ts";

Deno.test("routes: a name routed through an upstream gateway of the other family", async () => {
  const dest = peerServer("127.0.0.1");
  // Hop 2 (IPv4) knows the name; hop 1 (IPv6) must never resolve it.
  const upstream = serve({
    listen: ["127.0.0.1:0"],
    logger: recordingLogger(),
    resolver: (name) =>
      name === "v4only.test"
        ? Promise.resolve([{ address: "127.0.0.1", family: 4 }])
        : Promise.reject(new ResolveError(name, "no such name")),
  });
  const logger = recordingLogger();
  const gw = serve({
    listen: ["[::1]:0"],
    logger,
    resolver: (name) => Promise.reject(new Error(`hop 1 resolved ${name}`)),
    routes: [{ to: [".test"], via: [`socks5://127.0.0.1:${gatewayAddr(upstream, 4).port}`] }],
  });
  const v6 = gatewayAddr(gw, 6);
  try {
    const routed = await socksConnect(v6, "v4only.test", dest.addr.port);
    assert.equal(routed.reply?.reply, 0);
    assert.equal((await readLine(routed.conn)).split(" ")[0], "127.0.0.1");
    routed.conn.close();
    const closed = await logger.waitFor((p) => p.type !== undefined && p.type !== "-");
    assert.equal(closed.type, "C", "IPv6 client, IPv4 connection to the upstream");
    assert.match(String(closed.resolved), /^via 127\.0\.0\.1:\d+$/);
    // The upstream's failure reply reaches the client unchanged.
    const unknown = await socksConnect(v6, "nowhere.test", 80);
    assert.equal(unknown.reply?.reply, 4);
    unknown.conn.close();
    // What no route matches goes direct.
    const direct = await socksConnect(v6, "127.0.0.1", dest.addr.port);
    assert.equal(direct.reply?.reply, 0);
    direct.conn.close();
    assert.equal(upstream.stats.sessionsByCommand.connect, 2, "only routed requests went upstream");
  } finally {
    await gw.shutdown({ grace: 0 });
    await upstream.shutdown({ grace: 0 });
    await dest.close();
  }
});

Deno.test("routes: match by suffix, CIDR and port; bad routes are clear errors", () => {
  const table = compileRoutes([
    { to: [".v4only.test"], via: ["socks5://192.0.2.7:1080"] },
    {
      to: ["198.51.100.0/24"],
      ports: [443],
      via: ["socks5://[2001:db8::1]:1080", "192.0.2.8:1080"],
    },
  ]);
  const ctx = (host: string, port: number) => ({
    client: { host: "::1", port: 1 },
    command: "connect" as const,
    destination: { host, port },
  });
  assert.deepEqual(table(ctx("www.v4only.test", 80)), ["socks5://192.0.2.7:1080"]);
  assert.equal(table(ctx("v6only.test", 80)), undefined);
  assert.equal(table(ctx("198.51.100.9", 80)), undefined);
  assert.equal(table(ctx("198.51.100.9", 443))?.length, 2);
  assert.throws(
    () => compileRoutes([{ to: ["*"], via: [] }]),
    /routes\[0\]\.via: expected at least one/,
  );
  assert.throws(() => compileRoutes([{ to: ["*"], via: ["http://x:1"] }]), /routes\[0\]\.via\[0\]/);
  assert.throws(
    () => compileRoutes([{ to: ["300.1.2.3/8"], via: ["socks5://192.0.2.7:1080"] }]),
    /routes\[0\]/,
  );
});
