import assert from "node:assert/strict";
import { bind, SocksReplyError } from "../../src/client/mod.ts";
import { dante, deadline, exchangeHalfClose, readAll, writeAll } from "./helpers.ts";

const T = 20_000;

Deno.test("bind through Dante: the peer connects to BND, data flows both ways", async () => {
  await using gw = await dante.start({ families: [6] });
  // The client reaches Dante over IPv6; the peer comes in over IPv4.
  const binding = await bind("127.0.0.1:0", { via: gw.url(6), timeout: T });
  try {
    assert.equal(binding.via[0], `[::1]:${gw.port}`);
    const { hostname, port } = binding.boundAddr;
    assert.ok(port > 0, `BND.PORT should be a real port, found ${port}`);
    const peerHost = hostname === "0.0.0.0" ? "127.0.0.1" : hostname;
    const accepting = binding.accept();
    const peer = await Deno.connect({ hostname: peerHost, port });
    try {
      using conn = await deadline(accepting, T, "second BIND reply");
      assert.equal(conn.target.port, peer.localAddr.port); // the peer as the gateway saw it
      await writeAll(peer, new TextEncoder().encode("from the peer"));
      await peer.closeWrite();
      const got = await deadline(exchangeHalfClose(conn, "from the client"), T, "bind exchange");
      assert.equal(got, "from the peer");
      assert.equal(new TextDecoder().decode(await readAll(peer)), "from the client");
    } finally {
      peer.close();
    }
    await assert.rejects(binding.accept(), /expected a pending binding/);
  } finally {
    binding.close();
  }
});

Deno.test("bind: close() before a peer came gives the binding up", async () => {
  await using gw = await dante.start({ families: [4] });
  using binding = await bind({ host: "127.0.0.1", port: 0 }, { via: gw.url(4), timeout: T });
  const accepting = binding.accept();
  binding.close();
  await assert.rejects(accepting, (err: unknown) => !(err instanceof SocksReplyError));
});
