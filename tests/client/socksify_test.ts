import assert from "node:assert/strict";
import { createHttpClient, FakeDns, SocksConn, socksify } from "../../src/client/mod.ts";
import {
  dante,
  deadline,
  dualsocks,
  exchange,
  exchangeHalfClose,
  microsocks,
  readAll,
  startEcho,
  writeAll,
} from "./helpers.ts";

const T = 20_000;

/**
 * "Unmodified" application code: it resolves a name and connects to the
 * address, as it would without any SOCKS in the picture.
 */
async function application(
  name: string,
  port: number,
  recordType: "A" | "AAAA",
): Promise<Deno.TcpConn> {
  const [address] = await Deno.resolveDns(name, recordType);
  return await Deno.connect({ hostname: address, port });
}

Deno.test("socksify: resolveDns + connect reach a name only the gateway resolves, then restore()", async () => {
  await using echo = startEcho("127.0.0.1");
  await using gw = await dante.start({ families: [4, 6] });
  const originals = {
    connect: Deno.connect,
    connectTls: Deno.connectTls,
    startTls: Deno.startTls,
    resolveDns: Deno.resolveDns,
  };
  const fakeDns = new FakeDns();
  const socks = socksify({ via: gw.url(6), fakeDns });
  try {
    assert.notEqual(Deno.connect, originals.connect);
    // An IPv4 application and an IPv6 application, same name, same gateway.
    for (const recordType of ["A", "AAAA"] as const) {
      const conn = await deadline(
        application("localhost", echo.addr.port, recordType),
        T,
        recordType,
      );
      try {
        assert.ok(conn instanceof SocksConn, "the connection went through the Socks Lib");
        assert.equal(conn.target.host, "localhost"); // the name, not the fake address
        assert.equal(conn.remoteAddr.port, gw.port);
        assert.equal(
          await deadline(exchange(conn, `via ${recordType}`), T, recordType),
          `via ${recordType}`,
        );
      } finally {
        conn.close();
      }
    }
    assert.deepEqual(await Deno.resolveDns("localhost", "A"), ["0.0.0.1"]);
    assert.deepEqual(await Deno.resolveDns("localhost", "AAAA"), ["100::1"]);
    assert.equal(fakeDns.reverse("100::1"), "localhost");
    await assert.rejects(
      Deno.resolveDns("localhost", "MX"),
      (err: unknown) => {
        assert.ok(err instanceof Deno.errors.NotSupported);
        assert.match(err.message, /only A and AAAA queries are answered/);
        return true;
      },
    );
    // Loopback stays direct: the peer is the echo server itself.
    const direct = await Deno.connect({ hostname: "127.0.0.1", port: echo.addr.port });
    try {
      assert.ok(!(direct instanceof SocksConn));
      assert.equal(direct.remoteAddr.port, echo.addr.port);
      assert.equal(await exchangeHalfClose(direct, "direct"), "direct");
    } finally {
      direct.close();
    }
    // A fake address nobody handed out fails clearly and reaches nothing.
    await assert.rejects(Deno.connect({ hostname: "0.0.0.250", port: 80 }), /no name mapped to it/);
    // Unix sockets are not touched.
    await assert.rejects(
      Deno.connect({ transport: "unix", path: "/nonexistent/dualsocks.sock" }),
      Deno.errors.NotFound,
    );
    assert.throws(() => socksify({ via: gw.url(4) }), /found one; call restore\(\)/);
  } finally {
    socks.restore();
  }
  assert.equal(Deno.connect, originals.connect);
  assert.equal(Deno.connectTls, originals.connectTls);
  assert.equal(Deno.startTls, originals.startTls);
  assert.equal(Deno.resolveDns, originals.resolveDns);
  socks.restore(); // harmless twice
  // The next socksify is allowed again, and `using` restores.
  {
    using again = socksify({ via: gw.url(4) });
    assert.notEqual(Deno.connect, originals.connect);
    assert.ok(again.fakeDns instanceof FakeDns);
  }
  assert.equal(Deno.connect, originals.connect);
});

Deno.test("socksify: direct CIDRs are configurable; the gateway itself stays direct", async () => {
  await using echo = startEcho("127.0.0.1");
  await using gw = await dante.start({ families: [4] });
  {
    using _socks = socksify({ via: gw.url(4), direct: [] }); // even loopback goes through
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: echo.addr.port });
    try {
      assert.ok(conn instanceof SocksConn);
      assert.equal(
        await deadline(exchange(conn, "proxied loopback"), T, "loopback"),
        "proxied loopback",
      );
    } finally {
      conn.close();
    }
    // The gateway's own address is never proxied through itself.
    const toGateway = await Deno.connect({ hostname: "127.0.0.1", port: gw.port });
    try {
      assert.ok(!(toGateway instanceof SocksConn));
    } finally {
      toGateway.close();
    }
  }
  assert.throws(() => socksify({ via: gw.url(4), direct: ["loopback"] }), /expected direct CIDRs/);
});

const CA = await Deno.readTextFile(new URL("./testdata/ca.crt", import.meta.url));
const CERT = await Deno.readTextFile(new URL("./testdata/localhost.crt", import.meta.url));
const KEY = await Deno.readTextFile(new URL("./testdata/localhost.key", import.meta.url));

Deno.test("socksify: Deno.connectTls to a fake address verifies the name", async () => {
  const listener = Deno.listenTls({ hostname: "127.0.0.1", port: 0, cert: CERT, key: KEY });
  const served = (async () => {
    const conn = await listener.accept();
    try {
      await writeAll(conn, await readAll(conn));
      await conn.closeWrite();
    } finally {
      conn.close();
    }
  })();
  try {
    await using gw = await dante.start({ families: [4] });
    using _socks = socksify({ via: gw.url(4) });
    const [fake] = await Deno.resolveDns("localhost", "A");
    const tls = await Deno.connectTls({ hostname: fake, port: listener.addr.port, caCerts: [CA] });
    try {
      await deadline(tls.handshake(), T, "handshake");
      assert.equal(
        await deadline(exchangeHalfClose(tls, "tls via fake"), T, "tls"),
        "tls via fake",
      );
    } finally {
      tls.close();
    }
    await assert.rejects(
      Deno.connectTls({ hostname: fake, port: listener.addr.port, cert: CERT, key: KEY }),
      Deno.errors.NotSupported,
    );
  } finally {
    await served;
    listener.close();
  }
});

Deno.test("createHttpClient: fetch through a gateway, names resolved by the gateway", async () => {
  const ac = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
    (req) => new Response(`hello ${new URL(req.url).pathname}`),
  );
  try {
    // v4only.test is known to dualsocks' resolver hook only: the name must
    // travel to the gateway (socks5h), or the fetch fails.
    await using ds = await dualsocks.start({ families: [4] });
    {
      using client = createHttpClient({ via: ds.url(4) });
      const res = await fetch(`http://v4only.test:${server.addr.port}/name`, { client });
      assert.equal(await res.text(), "hello /name");
    }
    await using gw = await dante.start({ families: [4, 6] });
    {
      using client = createHttpClient({ via: `socks5h://127.0.0.1:${gw.port}` });
      const res = await fetch(`http://localhost:${server.addr.port}/x`, { client });
      assert.equal(await res.text(), "hello /x");
    }
    const login = { username: "carol", password: "p@ss word" };
    await using ms = await microsocks.start({ families: [4], auth: login });
    {
      using client = createHttpClient({ via: ms.url(4, login) });
      const res = await fetch(`http://localhost:${server.addr.port}/auth`, { client });
      assert.equal(await res.text(), "hello /auth");
    }
    assert.throws(
      () => createHttpClient({ via: gw.url(6) }),
      /expected the gateway as an IPv4 address or a name, found the IPv6 address \[::1\]:\d+: Deno 2\.9's fetch fails/,
    );
    assert.throws(() => createHttpClient({ via: [gw.url(4), gw.url(4)] }), /expected one gateway/);
  } finally {
    ac.abort();
    await server.finished;
  }
});
