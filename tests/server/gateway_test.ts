import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { serve, type ServeOptions } from "../../src/server/gateway.ts";
import { ListenError } from "../../src/server/gateway.ts";
import { renderMetrics } from "../../src/admin/metrics.ts";
import { ResolveError } from "../../src/server/errors.ts";
import type { Resolver } from "../../src/server/resolver.ts";
import {
  encodeCredentials,
  encodeGreeting,
  encodeRequest,
  toSocksAddress,
} from "../../src/protocol/codec.ts";
import {
  type Addr,
  echoServer,
  gatewayAddr,
  peerServer,
  readAll,
  readByte,
  readEach,
  readLine,
  readN,
  recordingLogger,
  socksConnect,
  startServer,
  withTimeout,
  writeAll,
} from "../helpers.ts";

/** A gateway on both loopback families with a recording logger. */
function gateway(options: ServeOptions = {}) {
  const logger = recordingLogger();
  const gw = serve({ listen: ["127.0.0.1:0", "[::1]:0"], logger, ...options });
  return { gw, logger, v4: gatewayAddr(gw, 4), v6: gatewayAddr(gw, 6) };
}

/** A resolver hook that must not be called. */
const noDns: Resolver = (name) => {
  throw new Error(`unexpected DNS query for ${name}`);
};

/**
 * A TCP endpoint that never answers: a listener with a backlog of one,
 * filled up, so the kernel drops further SYNs and connects hang.
 */
async function blackhole(hostname: string) {
  const listener = Deno.listen({ hostname, port: 0, tcpBacklog: 1 });
  const fillers: Deno.Conn[] = [];
  for (let i = 0; i < 2; i++) {
    fillers.push(await Deno.connect({ hostname, port: listener.addr.port }));
  }
  return {
    port: listener.addr.port,
    close() {
      for (const c of fillers) c.close();
      listener.close();
    },
  };
}

const enc = new TextEncoder();
const dec = new TextDecoder();

Deno.test("gateway: RFC 3089 types A, B, C and D on loopback, classified and logged", async () => {
  const dest4 = peerServer("127.0.0.1");
  const dest6 = peerServer("::1");
  const { gw, logger, v4, v6 } = gateway({ resolver: noDns });
  try {
    const cases = [
      { type: "A", proxy: v4, dest: dest4, host: "127.0.0.1", bnd: "ipv4" },
      { type: "B", proxy: v4, dest: dest6, host: "::1", bnd: "ipv6" },
      { type: "C", proxy: v6, dest: dest4, host: "127.0.0.1", bnd: "ipv4" },
      { type: "D", proxy: v6, dest: dest6, host: "::1", bnd: "ipv6" },
    ];
    for (const c of cases) {
      const { conn, reply } = await socksConnect(c.proxy, c.host, c.dest.addr.port);
      assert.equal(reply?.reply, 0, c.type);
      // BND is the outbound socket's real local address, in its own family.
      assert.equal(reply?.address.type, c.bnd, c.type);
      const [peerHost, peerPort] = (await readLine(conn)).split(" ");
      assert.equal(peerHost, c.host, `${c.type}: destination saw the gateway's ${c.bnd} address`);
      assert.equal(reply?.address.host, c.host);
      assert.equal(reply?.port, Number(peerPort), `${c.type}: BND.PORT is the outbound port`);
      await writeAll(conn, enc.encode("ping"));
      assert.equal(dec.decode(await readN(conn, 4)), "ping");
      conn.close();
      const closed = await logger.waitFor((p) => p.type === c.type && p.reason !== undefined);
      assert.equal(closed.bytesUp, 4);
      assert.ok((closed.bytesDown as number) > 4);
      assert.equal(
        closed.resolved,
        c.host.includes(":") ? `[::1]:${c.dest.addr.port}` : `127.0.0.1:${c.dest.addr.port}`,
      );
    }
    assert.deepEqual(gw.stats.relaysByType, { A: 1, B: 1, C: 1, D: 1 });
    assert.equal(gw.stats.sessionsByCommand.connect, 4);
    assert.equal(gw.stats.handshakeSeconds.count, 4);
    assert.equal(gw.stats.connectSeconds.count, 4);
    assert.equal(gw.stats.replies[0], 4);
    assert.equal(gw.stats.bytesByType.B.up, 4);
    assert.equal(gw.stats.dnsLookups, 0, "literals need no DNS");
  } finally {
    await gw.shutdown({ grace: 0 });
    await dest4.close();
    await dest6.close();
  }
});

Deno.test("gateway: DOMAINNAME holding an IP literal is used without DNS", async () => {
  const dest6 = echoServer("::1");
  const dest4 = echoServer("127.0.0.1");
  const { gw, v4 } = gateway({ resolver: noDns });
  try {
    for (
      const [name, port] of [["[::1]", dest6.addr.port], ["::1", dest6.addr.port], [
        "127.0.0.1",
        dest4.addr.port,
      ]] as const
    ) {
      const conn = await Deno.connect(v4);
      const host = enc.encode(name);
      // ATYP 3 explicitly, even though the text is a literal.
      const req = new Uint8Array([5, 1, 0, 3, host.length, ...host, port >> 8, port & 255]);
      await writeAll(conn, new Uint8Array([5, 1, 0, ...req]));
      const answer = await readN(conn, 2 + 4);
      assert.deepEqual([...answer.subarray(0, 4)], [5, 0, 5, 0], name);
      conn.close();
    }
  } finally {
    await gw.shutdown({ grace: 0 });
    await dest6.close();
    await dest4.close();
  }
});

Deno.test("gateway: optimistic client (greeting, auth, request and data in one write)", async () => {
  const dest = echoServer("127.0.0.1");
  const { gw, v6 } = gateway({ users: [{ username: "alice", password: "s3cret" }] });
  try {
    const conn = await Deno.connect(v6);
    const request = encodeRequest({
      command: 1,
      address: toSocksAddress("127.0.0.1"),
      port: dest.addr.port,
    });
    await writeAll(
      conn,
      new Uint8Array([
        ...encodeGreeting({ methods: [2] }),
        ...encodeCredentials({ username: "alice", password: "s3cret" }),
        ...request,
        ...enc.encode("early data"),
      ]),
    );
    const replies = await readN(conn, 2 + 2 + 10);
    assert.deepEqual([...replies.subarray(0, 5)], [5, 2, 1, 0, 5]);
    assert.equal(replies[5], 0, "CONNECT succeeded");
    assert.equal(dec.decode(await readN(conn, 10)), "early data");
    conn.close();
  } finally {
    await gw.shutdown({ grace: 0 });
    await dest.close();
  }
});

Deno.test("gateway: a client that sends one byte at a time", async () => {
  const dest = echoServer("::1");
  const { gw, v4 } = gateway();
  try {
    const conn = await Deno.connect(v4);
    const bytes = [
      ...encodeGreeting({ methods: [0] }),
      ...encodeRequest({ command: 1, address: toSocksAddress("::1"), port: dest.addr.port }),
    ];
    for (const b of bytes) await writeAll(conn, Uint8Array.of(b));
    const answer = await readN(conn, 2 + 4 + 16 + 2);
    assert.deepEqual([...answer.subarray(0, 6)], [5, 0, 5, 0, 0, 4]);
    for (const b of enc.encode("xyz")) await writeAll(conn, Uint8Array.of(b));
    assert.equal(dec.decode(await readN(conn, 3)), "xyz");
    conn.close();
  } finally {
    await gw.shutdown({ grace: 0 });
    await dest.close();
  }
});

Deno.test("gateway: username/password required when users are configured", async () => {
  const dest = echoServer("127.0.0.1");
  const { gw, v4 } = gateway({ users: [{ username: "alice", password: "s3cret" }] });
  try {
    // Offering only NO AUTH gets 0xFF, then a close.
    const noAuth = await socksConnect(v4, "127.0.0.1", dest.addr.port);
    assert.equal(noAuth.method, 0xff);
    assert.equal(await readByte(noAuth.conn), null);
    noAuth.conn.close();
    // A wrong password gets status != 0, then a close.
    const wrong = await socksConnect(v4, "127.0.0.1", dest.addr.port, {
      auth: { username: "alice", password: "s3crex" },
    });
    assert.equal(wrong.authOk, false);
    assert.equal(await readByte(wrong.conn), null);
    wrong.conn.close();
    const ok = await socksConnect(v4, "127.0.0.1", dest.addr.port, {
      auth: { username: "alice", password: "s3cret" },
    });
    assert.equal(ok.reply?.reply, 0);
    assert.deepEqual(gw.sessions().map((s) => s.user), ["alice"]);
    assert.equal(gw.stats.authFailures, 1);
    ok.conn.close();
    // Bytes that are not UTF-8 are no user's name or password (decoded
    // lossily, 0xff and 0xfe would both have read as U+FFFD): a failed login.
    const raw = await Deno.connect(v4);
    await writeAll(raw, Uint8Array.of(5, 1, 2));
    assert.deepEqual([...(await readN(raw, 2))], [5, 2]);
    await writeAll(raw, Uint8Array.of(1, 5, ...new TextEncoder().encode("alice"), 1, 0xff));
    assert.deepEqual([...(await readN(raw, 2))], [1, 1], "status 1 (failure)");
    assert.equal(await readByte(raw), null, "then the close");
    raw.close();
    assert.equal(gw.stats.authFailures, 2);
  } finally {
    await gw.shutdown({ grace: 0 });
    await dest.close();
  }
});

Deno.test("gateway: reply codes for refused, unresolvable, not allowed, unsupported", async () => {
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const refusedPort = closed.addr.port;
  closed.close();
  const resolver: Resolver = (name) => Promise.reject(new ResolveError(name, "no such name"));
  const { gw, v4, v6 } = gateway({
    resolver,
    rules: [{ action: "deny", to: ["198.51.100.0/24"] }, { action: "allow" }],
  });
  try {
    const expect = async (proxy: Addr, host: string, port: number, code: number, command = 1) => {
      const { conn, reply } = await socksConnect(proxy, host, port, { command });
      assert.equal(reply?.reply, code, `${host}:${port} command ${command}`);
      // A failure reply is a full reply in the client's family, then a close.
      assert.equal(reply?.address.type, proxy.hostname.includes(":") ? "ipv6" : "ipv4");
      assert.equal(await readByte(conn), null);
      conn.close();
    };
    await expect(v4, "127.0.0.1", refusedPort, 5);
    await expect(v6, "v4only.test", 80, 4);
    await expect(v4, "198.51.100.7", 80, 2);
    await expect(v4, "127.0.0.1", 80, 7, 9);
    // An address type the codec does not know: reply 8, then close.
    const conn = await Deno.connect(v4);
    await writeAll(conn, Uint8Array.of(5, 1, 0, 5, 1, 0, 0x09, 1, 2, 3, 4, 0, 80));
    assert.deepEqual([...(await readAll(conn))].slice(0, 4), [5, 0, 5, 8]);
    conn.close();
    assert.equal(gw.stats.replies[5], 1);
    assert.equal(gw.stats.replies[8], 1);
    assert.equal(gw.stats.ruleDenials, 1);
    assert.equal(gw.stats.sessionsByCommand.other, 1);
    assert.deepEqual([gw.stats.dnsLookups, gw.stats.dnsFailures], [1, 1]);
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

Deno.test("gateway: connect timeout gives reply 4 and closes the hanging attempt", async () => {
  const hole = await blackhole("127.0.0.1");
  const { gw, v4 } = gateway({ timeouts: { connect: 300 } });
  try {
    const { conn, reply } = await socksConnect(v4, "127.0.0.1", hole.port);
    assert.equal(reply?.reply, 4);
    conn.close();
  } finally {
    await gw.shutdown({ grace: 0 });
    hole.close();
  }
});

Deno.test("gateway: Happy Eyeballs falls back from a dead family to the other", async () => {
  const hole = await blackhole("::1");
  // The two destinations cannot share a port number, so the dialer hook sends
  // each family to its own port (the connections themselves are real).
  const dest = peerServer("127.0.0.1");
  const resolver: Resolver = () =>
    Promise.resolve([{ address: "::1", family: 6 }, { address: "127.0.0.1", family: 4 }]);
  const attempts: string[] = [];
  const { gw, v4 } = gateway({
    resolver,
    timeouts: { connect: 5000 },
    dialer: (t, o) => {
      attempts.push(t.hostname);
      return Deno.connect({
        hostname: t.hostname,
        port: t.family === 6 ? hole.port : dest.addr.port,
        signal: o.signal,
      });
    },
  });
  try {
    const started = performance.now();
    const { conn, reply } = await socksConnect(v4, "dual.test", 1);
    const elapsed = performance.now() - started;
    assert.equal(reply?.reply, 0);
    assert.deepEqual(attempts, ["::1", "127.0.0.1"], "IPv6 first, then IPv4");
    assert.equal((await readLine(conn)).split(" ")[0], "127.0.0.1");
    assert.ok(elapsed < 5000, `connected before the connect timeout (${elapsed} ms)`);
    conn.close();
  } finally {
    await gw.shutdown({ grace: 0 });
    await dest.close();
    hole.close();
  }
});

Deno.test("gateway: resolved addresses are used in canonical form, with their real family", async () => {
  // A resolver (a nameserver's AAAA answer, an embedder's hook) may return a
  // v4-mapped or non-canonical form, or something that is no address at all.
  const dest = peerServer("127.0.0.1");
  const resolver: Resolver = () =>
    Promise.resolve([
      { address: "not-an-address", family: 6 },
      { address: "::FFFF:127.0.0.1", family: 6 },
    ]);
  const { gw, logger, v4 } = gateway({ resolver, family: "ipv4-only" });
  try {
    // ipv4-only: only the mapped address remains, and it is IPv4.
    const { conn, reply } = await socksConnect(v4, "mapped.test", dest.addr.port);
    assert.equal(reply?.reply, 0, "the v4-mapped answer is the IPv4 address 127.0.0.1");
    assert.equal((await readLine(conn)).split(" ")[0], "127.0.0.1");
    conn.close();
    const closed = await logger.waitFor((p) =>
      p.destination === `mapped.test:${dest.addr.port}` && p.reason !== undefined
    );
    assert.equal(closed.type, "A", "a 4 -> 4 relay");
    assert.equal(closed.resolved, `127.0.0.1:${dest.addr.port}`);
  } finally {
    await gw.shutdown({ grace: 0 });
    await dest.close();
  }
});

Deno.test("gateway: family policy orders and filters resolved addresses", async () => {
  const dest4 = peerServer("127.0.0.1");
  const dest6 = peerServer("::1");
  try {
    for (
      const [family, want] of [["prefer-ipv4", "127.0.0.1"], ["ipv6-only", "::1"], [
        "auto",
        "::1",
      ]] as const
    ) {
      const resolver: Resolver = (_name, { families }) =>
        Promise.resolve(
          [{ address: "::1", family: 6 as const }, { address: "127.0.0.1", family: 4 as const }]
            .filter((a) => families.includes(a.family)),
        );
      const { gw, v4 } = gateway({
        resolver,
        family,
        dialer: (t, o) =>
          Deno.connect({
            hostname: t.hostname,
            port: t.family === 6 ? dest6.addr.port : dest4.addr.port,
            signal: o.signal,
          }),
      });
      const { conn, reply } = await socksConnect(v4, "dual.test", 1);
      assert.equal(reply?.reply, 0, family);
      assert.equal((await readLine(conn)).split(" ")[0], want, family);
      conn.close();
      await gw.shutdown({ grace: 0 });
    }
    // ipv4-only refuses an IPv6 literal with reply 8.
    const { gw, v4 } = gateway({ family: "ipv4-only" });
    const { conn, reply } = await socksConnect(v4, "::1", dest6.addr.port);
    assert.equal(reply?.reply, 8);
    conn.close();
    await gw.shutdown({ grace: 0 });
  } finally {
    await dest4.close();
    await dest6.close();
  }
});

for (
  const [label, options] of [
    ["", {}],
    [" (outbound source address: node:net dialer)", {
      outbound: { ipv4: "127.0.0.1", ipv6: "::1" },
    }],
  ] as const
) {
  Deno.test(`gateway: half-close is propagated in both directions${label}`, async () => {
    // Destination reads to EOF, then answers with what it got, then closes.
    const dest = startServer("127.0.0.1", async (conn) => {
      const got = await readAll(conn);
      await writeAll(conn, enc.encode(`got ${got.length}`));
    });
    // Destination that sends first and closes its write side, then reads on.
    const heard = Promise.withResolvers<string>();
    const talker = startServer("::1", async (conn) => {
      try {
        await writeAll(conn, enc.encode("hello"));
        await conn.closeWrite();
        heard.resolve(dec.decode(await readAll(conn)));
      } catch (error) {
        heard.reject(error);
      }
    });
    const { gw, v6, v4 } = gateway(options);
    try {
      const a = await socksConnect(v6, "127.0.0.1", dest.addr.port);
      await writeAll(a.conn, new Uint8Array(100_000));
      await a.conn.closeWrite();
      assert.equal(dec.decode(await readAll(a.conn)), "got 100000");
      a.conn.close();

      const b = await socksConnect(v4, "::1", talker.addr.port);
      assert.equal(dec.decode(await readAll(b.conn)), "hello", "the destination's FIN reached us");
      await writeAll(b.conn, enc.encode("still here"));
      await b.conn.closeWrite();
      assert.equal(await heard.promise, "still here", "data sent after the destination's FIN");
      b.conn.close();
    } finally {
      await gw.shutdown({ grace: 1000 });
      await dest.close();
      await talker.close();
    }
    assert.equal(talker.peers.length, 1);
  });
}

Deno.test("gateway: 64 MiB each way at the same time, checksums match", async () => {
  const SIZE = 64 * 1024 * 1024;
  const chunk = new Uint8Array(1024 * 1024);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 31 + 7) & 0xff;
  const send = async (conn: Deno.TcpConn, seed: number) => {
    const hash = createHash("sha256");
    const c = chunk.map((b) => (b + seed) & 0xff);
    for (let sent = 0; sent < SIZE; sent += c.length) {
      await writeAll(conn, c);
      hash.update(c);
    }
    await conn.closeWrite();
    return hash.digest("hex");
  };
  const receive = async (conn: Deno.TcpConn) => {
    const hash = createHash("sha256");
    let total = 0;
    await readEach(conn, (part) => {
      hash.update(part);
      total += part.length;
    });
    return { total, digest: hash.digest("hex") };
  };
  let destResult: Promise<{ total: number; digest: string }> | undefined;
  let destSent: Promise<string> | undefined;
  const dest = startServer("::1", async (conn) => {
    destResult = receive(conn);
    destSent = send(conn, 1);
    await Promise.all([destResult, destSent]);
  });
  const { gw, v4 } = gateway();
  try {
    const { conn } = await socksConnect(v4, "::1", dest.addr.port);
    const [clientSent, clientGot] = await Promise.all([send(conn, 0), receive(conn)]);
    assert.equal(clientGot.total, SIZE);
    assert.equal(clientGot.digest, await destSent);
    const got = await destResult!;
    assert.equal(got.total, SIZE);
    assert.equal(got.digest, clientSent);
    conn.close();
  } finally {
    await gw.shutdown({ grace: 1000 });
    await dest.close();
  }
});

Deno.test("gateway: malformed input gets a clean close and the gateway keeps serving", async () => {
  const dest = echoServer("127.0.0.1");
  const { gw, v4, logger } = gateway();
  try {
    for (
      const garbage of [
        Uint8Array.of(4, 1, 0, 80, 127, 0, 0, 1, 0), // SOCKS4
        enc.encode("GET / HTTP/1.1\r\n\r\n"),
        Uint8Array.of(5, 1, 0, 5, 1, 0, 7, 1), // bad reserved byte in the request
        Uint8Array.of(5, 1, 0, 5, 1, 0, 3, 0, 0, 80), // empty domain
        Uint8Array.of(5), // truncated, then EOF
      ]
    ) {
      const conn = await Deno.connect(v4);
      await writeAll(conn, garbage);
      await conn.closeWrite();
      await readAll(conn); // the server closes: this must end
      conn.close();
    }
    const ok = await socksConnect(v4, "127.0.0.1", dest.addr.port);
    assert.equal(ok.reply?.reply, 0);
    ok.conn.close();
    await logger.waitFor((p) => p.type === "A");
    assert.equal(gw.sessions().length, 0, "no session left behind");
  } finally {
    await gw.shutdown({ grace: 0 });
    await dest.close();
  }
});

Deno.test("gateway: handshake and idle timeouts close the session", async () => {
  const dest = echoServer("127.0.0.1");
  const { gw, v4, logger } = gateway({ timeouts: { handshake: 200, idle: 300 } });
  try {
    const silent = await Deno.connect(v4);
    assert.equal(await readByte(silent), null, "closed for a silent client");
    silent.close();
    await logger.waitFor((p) => p.reason === "handshake timeout");
    const { conn, reply } = await socksConnect(v4, "127.0.0.1", dest.addr.port);
    assert.equal(reply?.reply, 0);
    assert.equal(await readByte(conn), null, "closed when idle");
    conn.close();
    await logger.waitFor((p) => p.reason === "idle timeout");
  } finally {
    await gw.shutdown({ grace: 0 });
    await dest.close();
  }
});

Deno.test("gateway: the session limit closes extra clients and frees up", async () => {
  const dest = echoServer("127.0.0.1");
  const { gw, v4, logger } = gateway({ maxSessions: 1 });
  try {
    const first = await socksConnect(v4, "127.0.0.1", dest.addr.port);
    assert.equal(first.reply?.reply, 0);
    const extra = await Deno.connect(v4);
    assert.equal(await readByte(extra), null);
    extra.close();
    assert.equal(gw.stats.sessionsRejected, 1);
    first.conn.close();
    await logger.waitFor((p) => p.type === "A");
    const again = await socksConnect(v4, "127.0.0.1", dest.addr.port);
    assert.equal(again.reply?.reply, 0);
    again.conn.close();
  } finally {
    await gw.shutdown({ grace: 0 });
    await dest.close();
  }
});

Deno.test("gateway: clients that send nothing do not hold the handshake gate shut", async () => {
  const dest = echoServer("127.0.0.1");
  // One handshake at a time, and a handshake timeout far beyond the test's
  // bound: only the gate's grace time lets the next clients in.
  const { gw, v4, v6 } = gateway({ maxHandshakes: 1, timeouts: { handshake: 60_000 } });
  const silent = await Promise.all([Deno.connect(v4), Deno.connect(v6), Deno.connect(v4)]);
  try {
    // Many clients at once through a gate of one, on both listeners.
    const clients = await withTimeout(
      Promise.all(
        Array.from(
          { length: 12 },
          (_, i) => socksConnect(i % 2 ? v6 : v4, "127.0.0.1", dest.addr.port),
        ),
      ),
      5000,
      "clients behind three silent ones",
    );
    for (const { conn, reply } of clients) {
      assert.equal(reply?.reply, 0);
      await writeAll(conn, enc.encode("x"));
      assert.equal(dec.decode(await readN(conn, 1)), "x");
      conn.close();
    }
    assert.equal(
      gw.sessions().filter((s) => s.phase === "handshake").length,
      3,
      "silent ones wait",
    );
    assert.ok(gw.stats.acceptsHeld > 0, "the gate held the accept loop");
  } finally {
    for (const c of silent) c.close();
    await gw.shutdown({ grace: 0 });
    await dest.close();
  }
});

Deno.test("gateway: max_handshakes 0 never holds accepting; a reload turns the gate on", async () => {
  const dest = echoServer("127.0.0.1");
  const { gw, v4 } = gateway({ maxHandshakes: 0, timeouts: { handshake: 60_000 } });
  const silent: Deno.Conn[] = [];
  const through = async () => {
    silent.push(await Deno.connect(v4));
    const { conn, reply } = await socksConnect(v4, "127.0.0.1", dest.addr.port);
    assert.equal(reply?.reply, 0);
    conn.close();
  };
  try {
    for (let i = 0; i < 4; i++) await withTimeout(through(), 5000, "client behind a silent one");
    assert.equal(gw.stats.acceptsHeld, 0, "no gate");
    await gw.reload({
      listen: gw.addrs.map((a) => ({ host: a.hostname, port: a.port })),
      maxHandshakes: 1,
    });
    for (let i = 0; i < 2; i++) await withTimeout(through(), 5000, "client behind a silent one");
    assert.ok(gw.stats.acceptsHeld > 0, "the reloaded limit applies");
  } finally {
    for (const c of silent) c.close();
    await gw.shutdown({ grace: 0 });
    await dest.close();
  }
});

Deno.test("gateway: outbound source address per family", async () => {
  const dest = peerServer("127.0.0.1");
  const { gw, v6 } = gateway({ outbound: { ipv4: "127.0.0.2" } });
  try {
    const { conn, reply } = await socksConnect(v6, "127.0.0.1", dest.addr.port);
    assert.equal(reply?.reply, 0);
    assert.equal(reply?.address.host, "127.0.0.2", "BND.ADDR is the source address");
    assert.equal((await readLine(conn)).split(" ")[0], "127.0.0.2");
    await writeAll(conn, enc.encode("through node:net"));
    assert.equal(dec.decode(await readN(conn, 16)), "through node:net");
    // 4 MiB echoed back: more than the node:net adapter queues before it pauses.
    const big = new Uint8Array(4 * 1024 * 1024).map((_, i) => (i * 7) & 0xff);
    const [, back] = await Promise.all([writeAll(conn, big), readN(conn, big.length)]);
    assert.ok(back.length === big.length && back.every((b, i) => b === big[i]), "echo intact");
    await conn.closeWrite();
    assert.equal((await readAll(conn)).length, 0);
    conn.close();
  } finally {
    await gw.shutdown({ grace: 1000 });
    await dest.close();
  }
});

Deno.test("gateway: listen errors are clear and leave nothing open", () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    assert.throws(
      () => serve({ listen: ["[::1]:0", `127.0.0.1:${taken.addr.port}`] }),
      (e: unknown) =>
        e instanceof ListenError && /127\.0\.0\.1:\d+: address already in use/.test(e.message),
    );
    assert.throws(() => serve({ listen: ["::1:1080"] }), /expected HOST:PORT/);
    // [::] is dual-stack here: asking for 0.0.0.0 on the same port as well says why it fails.
    const free = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = free.addr.port;
    free.close();
    assert.throws(
      () => serve({ listen: [`[::]:${port}`, `0.0.0.0:${port}`] }),
      new RegExp(`\\[::\\]:${port} already accepts IPv4 as well: list \\[::\\]:${port} alone`),
    );
    assert.throws(() => serve({ listen: ["localhost:1080"] }), /IP literal/);
  } finally {
    taken.close();
  }
});

Deno.test("gateway: shutdown lets a relay finish within the grace period", async () => {
  const dest = echoServer("127.0.0.1");
  const { gw, v4 } = gateway();
  const { conn } = await socksConnect(v4, "127.0.0.1", dest.addr.port);
  const idle = await Deno.connect(v4); // still in its handshake: ended at once
  const stopping = gw.shutdown({ grace: 10_000 });
  assert.equal(await readByte(idle), null);
  idle.close();
  await assert.rejects(() => Deno.connect(v4), "no longer accepting");
  await writeAll(conn, enc.encode("during grace"));
  assert.equal(dec.decode(await readN(conn, 12)), "during grace");
  conn.close();
  await stopping;
  await gw.finished;
  await dest.close();
});

Deno.test("gateway: shutdown closes relays when the grace period ends", async () => {
  const dest = echoServer("::1");
  const { gw, v6, logger } = gateway();
  const { conn } = await socksConnect(v6, "::1", dest.addr.port);
  await gw.shutdown({ grace: 50 });
  assert.equal(await readByte(conn), null);
  conn.close();
  await logger.waitFor((p) => p.reason === "shutdown");
  await dest.close();
});

Deno.test("gateway: name rules admit resolved addresses; earlier address denies still win", async () => {
  const dest = echoServer("127.0.0.1");
  const resolver: Resolver = () => Promise.resolve([{ address: "127.0.0.1", family: 4 }]);
  const check = async (rules: ServeOptions["rules"], name: string, want: number) => {
    const { gw, v4 } = gateway({ resolver, rules });
    try {
      const { conn, reply } = await socksConnect(v4, name, dest.addr.port);
      assert.equal(reply?.reply, want, `${name} with ${JSON.stringify(rules)}`);
      conn.close();
    } finally {
      await gw.shutdown({ grace: 0 });
    }
  };
  try {
    await check([{ action: "allow", to: [".test"] }], "v4only.test", 0);
    await check([{ action: "allow", to: [".test"] }], "v4only.example", 2);
    await check([{ action: "allow", to: ["127.0.0.0/8"] }], "v4only.example", 0);
    await check(
      [{ action: "deny", to: ["127.0.0.0/8"] }, { action: "allow", to: [".test"] }],
      "v4only.test",
      2,
    );
  } finally {
    await dest.close();
  }
});

Deno.test("gateway: a second shutdown with a shorter grace cuts the wait", async () => {
  const dest = echoServer("127.0.0.1");
  const { gw, v4, logger } = gateway();
  const { conn } = await socksConnect(v4, "127.0.0.1", dest.addr.port);
  const first = gw.shutdown({ grace: 600_000 });
  await logger.waitFor((p) => p.grace === 600_000);
  const second = gw.shutdown({ grace: 0 });
  assert.equal(second, first, "one shutdown, whatever the number of calls");
  assert.equal(
    await withTimeout(conn.read(new Uint8Array(1)), 10_000, "the relay's end"),
    null,
    "the relay was cut",
  );
  conn.close();
  await gw.finished;
  await dest.close();
});

Deno.test("gateway: clients that reset while queued for accept are counted, not warned about", async () => {
  const N = 20;
  const dest = echoServer("127.0.0.1");
  const { gw, v4, logger } = gateway();
  const dir = await Deno.makeTempDir();
  const flag = `${dir}/done`;
  // A separate process opens N connections and resets each one (RST) at once.
  const script = `import { connect } from "node:net";
let left = ${N};
for (let i = 0; i < ${N}; i++) {
  const s = connect({ host: "127.0.0.1", port: ${v4.port} });
  s.on("connect", () => s.resetAndDestroy());
  s.on("error", () => {});
  s.on("close", () => { if (--left === 0) Deno.writeTextFileSync(${JSON.stringify(flag)}, "x"); });
}`;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["eval", script],
    stdout: "null",
    stderr: "null",
  }).spawn();
  try {
    // Hold this event loop, and with it the gateway's accept loop, until the
    // child has reset them all: they wait in the kernel's accept queue.
    const until = Date.now() + 10_000;
    const exists = () => {
      try {
        return Deno.statSync(flag).isFile;
      } catch {
        return false;
      }
    };
    while (!exists() && Date.now() < until) { /* busy: no event may run */ }
    assert.ok(exists(), "the child reset its connections");
    assert.equal((await child.status).code, 0);
    // Accepts are served in order: once this client gets through, all N were seen.
    const { conn, reply } = await withTimeout(
      socksConnect(v4, "127.0.0.1", dest.addr.port),
      5000,
      "a client after the reset ones",
    );
    assert.equal(reply?.reply, 0);
    conn.close();
    assert.equal(gw.stats.acceptErrors, N);
    assert.match(renderMetrics(gw), new RegExp(`^dualsocks_accept_errors_total ${N}$`, "m"));
    assert.equal(gw.stats.sessionsTotal, 1);
    const accepts = (level: string) =>
      logger.records.filter((r) => r.level === level && r.message.startsWith("accept on")).length;
    assert.equal(accepts("warn"), 0, "no warning per resetting client");
    assert.equal(accepts("debug"), N);
  } finally {
    await gw.shutdown({ grace: 0 });
    await dest.close();
    await Deno.remove(dir, { recursive: true });
  }
});
