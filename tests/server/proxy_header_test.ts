/**
 * The PROXY protocol on the listeners: raw balancers sending v1 and v2
 * headers on loopback, then SOCKS5, SOCKS4 and HTTP through them; the
 * header's source is the client for the rules, the log and `sessions()`.
 * The header addresses are documentation addresses that nothing connects to.
 */
import assert from "node:assert/strict";
import { serve, type ServeOptions } from "../../src/server/gateway.ts";
import { renderMetrics } from "../../src/admin/metrics.ts";
import { BufferedReader } from "../../src/io/buffered_reader.ts";
import {
  decodeMethodSelection,
  decodeReply,
  encodeGreeting,
  encodeRequest,
  toSocksAddress,
} from "../../src/protocol/codec.ts";
import { encodeProxyHeaderV1, encodeProxyHeaderV2 } from "../../src/protocol/proxy_protocol.ts";
import { decodeSocks4Reply, encodeSocks4Request } from "../../src/protocol/socks4.ts";
import {
  type Addr,
  echoServer,
  gatewayAddr,
  joinHostPort,
  READ_MS,
  readAll,
  readLine,
  recordingLogger,
  run,
  stopChild,
  withTimeout,
  writeAll,
} from "../helpers.ts";

const text = (s: string) => new TextEncoder().encode(s);
const ALLOW_ALL: ServeOptions["rules"] = [{ action: "allow", to: ["*"] }];

function gateway(options: ServeOptions = {}) {
  const logger = recordingLogger();
  const gw = serve({
    listen: ["127.0.0.1:0", "[::1]:0"],
    logger,
    proxyProtocol: { trusted: ["127.0.0.1/32", "::1"] },
    // The headers' sources are other hosts, and no users are configured.
    safety: { allowOpenRelay: true },
    ...options,
  });
  return { gw, logger, v4: gatewayAddr(gw, 4), v6: gatewayAddr(gw, 6) };
}

/** Sends `bytes` then a SOCKS5 CONNECT to `target`; returns the reply (or null at EOF). */
async function socks5After(proxy: Addr, bytes: Uint8Array, target: Addr) {
  const conn = await Deno.connect(proxy);
  const reader = new BufferedReader(conn);
  const request = encodeRequest({
    command: 1,
    address: toSocksAddress(target.hostname),
    port: target.port,
  });
  // One segment: header, greeting and request, as a balancer forwards them.
  await writeAll(conn, new Uint8Array([...bytes, ...encodeGreeting({ methods: [0] }), ...request]));
  const reply = await withTimeout(
    (async () => {
      await reader.decode(decodeMethodSelection, "method");
      return await reader.decode(decodeReply, "reply");
    })().catch(() => null),
    READ_MS,
    "SOCKS5 reply",
  );
  return { conn, reader, reply };
}

const v1 = (hostname: string, port: number, to = "127.0.0.1") =>
  encodeProxyHeaderV1({
    command: "proxy",
    source: { hostname, port },
    destination: { hostname: to, port: 1080 },
  });

Deno.test("PROXY v1 and v2: the header's source is the session's client", async () => {
  const echo = echoServer("127.0.0.1");
  const { gw, logger, v4, v6 } = gateway({ rules: ALLOW_ALL });
  try {
    const cases = [
      [v4, v1("192.0.2.7", 40001), "192.0.2.7:40001", "A"],
      [v6, v1("2001:db8::7", 40002, "2001:db8::1"), "[2001:db8::7]:40002", "C"],
      [
        v4,
        encodeProxyHeaderV2({
          command: "proxy",
          source: { hostname: "2001:db8::8", port: 40003 },
          destination: { hostname: "2001:db8::1", port: 1080 },
        }, { tlvs: [{ type: 0x04, value: new Uint8Array(5) }] }),
        "[2001:db8::8]:40003",
        "C", // the client's family is the header's: IPv6 to an IPv4 destination
      ],
      [
        v6,
        encodeProxyHeaderV2({
          command: "proxy",
          source: { hostname: "198.51.100.9", port: 40004 },
          destination: { hostname: "198.51.100.1", port: 1080 },
        }),
        "198.51.100.9:40004",
        "A",
      ],
    ] as const;
    for (const [proxy, header, client, type] of cases) {
      const { conn, reader, reply } = await socks5After(proxy, header, echo.addr);
      assert.equal(reply?.reply, 0, `${client}: granted`);
      const live = gw.sessions().find((s) => s.client === client);
      assert.ok(live, `sessions() shows ${client}: ${JSON.stringify(gw.sessions())}`);
      await writeAll(conn, text("hi"));
      await conn.closeWrite();
      const echoed = [...reader.takeRest(), ...await readAll(conn)];
      assert.equal(new TextDecoder().decode(new Uint8Array(echoed)), "hi");
      conn.close();
      const line = await logger.waitFor((p) => p.client === client);
      assert.equal(line.type, type, client);
    }
    assert.deepEqual(gw.stats.proxyHeaders, { accepted: 4, rejected: 0 });
  } finally {
    await gw.shutdown({ grace: 0 });
    await echo.close();
  }
});

Deno.test("PROXY: the header's client meets the loopback guard; LOCAL and UNKNOWN keep the balancer's", async () => {
  const echo = echoServer("127.0.0.1");
  const { gw, logger, v4 } = gateway(); // no rules: loopback only for loopback clients
  try {
    const remote = await socks5After(v4, v1("192.0.2.7", 40010), echo.addr);
    assert.equal(remote.reply?.reply, 2, "a client from another host cannot reach loopback");
    remote.conn.close();
    await logger.waitFor((p) => p.client === "192.0.2.7:40010" && String(p.reply).startsWith("2"));
    for (const header of [text("PROXY UNKNOWN\r\n"), encodeProxyHeaderV2({ command: "local" })]) {
      const { conn, reply } = await socks5After(v4, header, echo.addr);
      assert.equal(reply?.reply, 0, "the balancer itself is on loopback");
      const own = joinHostPort(conn.localAddr.hostname, conn.localAddr.port);
      assert.ok(gw.sessions().some((s) => s.client === own), `client ${own}`);
      conn.close();
    }
    assert.deepEqual(gw.stats.proxyHeaders, { accepted: 3, rejected: 0 });
  } finally {
    await gw.shutdown({ grace: 0 });
    await echo.close();
  }
});

Deno.test("PROXY: SOCKS4 and HTTP CONNECT behind a header", async () => {
  const echo = echoServer("127.0.0.1");
  const { gw, logger, v4 } = gateway({ rules: ALLOW_ALL });
  try {
    // SOCKS4
    const c4 = await Deno.connect(v4);
    await writeAll(
      c4,
      new Uint8Array([
        ...v1("203.0.113.4", 40020),
        ...encodeSocks4Request({
          command: 1,
          hostname: "127.0.0.1",
          port: echo.addr.port,
          userId: "",
        }),
      ]),
    );
    const r4 = await withTimeout(
      new BufferedReader(c4).decode(decodeSocks4Reply, "r"),
      READ_MS,
      "r",
    );
    assert.equal(r4.reply, 0x5a);
    c4.close();
    const l4 = await logger.waitFor((p) => p.client === "203.0.113.4:40020");
    assert.equal(l4.protocol, "socks4");
    // HTTP CONNECT
    const ch = await Deno.connect(v4);
    const target = `127.0.0.1:${echo.addr.port}`;
    await writeAll(
      ch,
      new Uint8Array([
        ...encodeProxyHeaderV2({
          command: "proxy",
          source: { hostname: "2001:db8::44", port: 40021 },
          destination: { hostname: "2001:db8::1", port: 1080 },
        }),
        ...text(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`),
      ]),
    );
    assert.match(await withTimeout(readLine(ch), READ_MS, "status"), /^HTTP\/1\.1 200/);
    ch.close();
    const lh = await logger.waitFor((p) => p.client === "[2001:db8::44]:40021");
    assert.equal(lh.protocol, "http");
  } finally {
    await gw.shutdown({ grace: 0 });
    await echo.close();
  }
});

Deno.test("PROXY: missing, malformed, truncated and untrusted headers close and count", async () => {
  const echo = echoServer("127.0.0.1");
  const { gw, logger, v4, v6 } = gateway({
    rules: ALLOW_ALL,
    // Only ::1 is a trusted balancer here: 127.0.0.1 is an ordinary client.
    proxyProtocol: { trusted: ["::1/128"] },
    timeouts: { handshake: 500 },
  });
  const closedWithoutReply = async (proxy: Addr, bytes: Uint8Array, endWrite = false) => {
    const conn = await Deno.connect(proxy);
    await writeAll(conn, bytes);
    if (endWrite) await conn.closeWrite();
    const got = await withTimeout(readAll(conn), READ_MS, "close");
    conn.close();
    assert.equal(
      got.length,
      0,
      `nothing answered to ${JSON.stringify(new TextDecoder().decode(bytes))}`,
    );
  };
  try {
    const greeting = encodeGreeting({ methods: [0] });
    const cases: [Addr, Uint8Array, boolean, RegExp][] = [
      // A trusted balancer must send a header.
      [
        v6,
        greeting,
        false,
        /PROXY header from \[::1\]:\d+: .*expected "PROXY " or the v2 signature/,
      ],
      [v6, text("PROXY TCP4 192.0.2.1 192.0.2.2 01 2\r\n"), false, /without leading zeros/],
      [v6, text("PROXY TCP4 192.0.2.1"), true, /PROXY header: connection closed after 20 bytes/],
      // Cut by the handshake timeout: the event is the gateway's close.
      [v6, text("PROXY TCP6 2001:db8::1 "), false, /handshake timeout/],
      // An ordinary client may not speak for someone else.
      [
        v4,
        v1("192.0.2.99", 1),
        false,
        /PROXY header from 127\.0\.0\.1:\d+, which is not in proxy_protocol\.trusted/,
      ],
      [v4, encodeProxyHeaderV2({ command: "local" }), false, /not in proxy_protocol\.trusted/],
    ];
    for (const [i, [proxy, bytes, endWrite, reason]] of cases.entries()) {
      await closedWithoutReply(proxy, bytes, endWrite);
      await logger.waitFor((p) => reason.test(String(p.reason)));
      assert.equal(gw.stats.proxyHeaders.rejected, i + 1, String(reason));
    }
    // An ordinary client without a header is served as usual (SOCKS5, and HTTP starting with "P").
    const plain = await socks5After(v4, new Uint8Array(0), echo.addr);
    assert.equal(plain.reply?.reply, 0);
    plain.conn.close();
    const post = await Deno.connect(v4);
    await writeAll(
      post,
      text("POST http://127.0.0.1:1/ HTTP/1.1\r\nHost: 127.0.0.1:1\r\nContent-Length: 0\r\n\r\n"),
    );
    assert.match(await withTimeout(readLine(post), READ_MS, "status"), /^HTTP\/1\.1 [45]\d\d/);
    post.close();
    assert.equal(gw.stats.proxyHeaders.rejected, cases.length);
    assert.match(renderMetrics(gw), /dualsocks_proxy_headers_total\{result="rejected"\} 6\n/);
    assert.match(renderMetrics(gw), /dualsocks_proxy_headers_total\{result="accepted"\} 0\n/);
  } finally {
    await gw.shutdown({ grace: 0 });
    await echo.close();
  }
});

Deno.test("PROXY: a bad trusted CIDR is refused at start", () => {
  assert.throws(
    () => serve({ listen: ["127.0.0.1:0"], proxyProtocol: { trusted: ["192.0.2.0/33"] } }),
    /proxyProtocol\.trusted\[0\]: expected a CIDR such as 192\.0\.2\.0\/24 or 2001:db8::\/32, found "192\.0\.2\.0\/33"/,
  );
});

const haproxyInstalled =
  (await run("sh", ["-c", "command -v haproxy"]).catch(() => ({ code: 1 }))).code === 0;

function freePort(hostname: string): number {
  const l = Deno.listen({ hostname, port: 0 });
  const port = l.addr.port;
  l.close();
  return port;
}

/** HAProxy (Debian's) in TCP mode in front of the gateway, sending v2 from [::1] and v1 from 127.0.0.1. */
async function startHaproxy(dir: string, gw: Addr) {
  const v2Port = freePort("::1");
  const v1Port = freePort("127.0.0.1");
  const target = joinHostPort(gw.hostname, gw.port);
  await Deno.writeTextFile(
    `${dir}/haproxy.cfg`,
    [
      "global",
      "  maxconn 64",
      "defaults",
      "  mode tcp",
      "  timeout connect 5s",
      "  timeout client 10s",
      "  timeout server 10s",
      "frontend v2",
      `  bind [::1]:${v2Port}`,
      "  default_backend gw_v2",
      "frontend v1",
      `  bind 127.0.0.1:${v1Port}`,
      "  default_backend gw_v1",
      "backend gw_v2",
      `  server gw ${target} send-proxy-v2`,
      "backend gw_v1",
      `  server gw ${target} send-proxy`,
      "",
    ].join("\n"),
  );
  const child = new Deno.Command("haproxy", {
    args: ["-db", "-f", `${dir}/haproxy.cfg`],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  // Ready when both frontends accept (bounded; each failed attempt is a refused connect).
  const until = performance.now() + 10_000;
  for (const [hostname, port] of [["::1", v2Port], ["127.0.0.1", v1Port]] as const) {
    while (true) {
      try {
        (await Deno.connect({ hostname, port })).close();
        break;
      } catch (error) {
        if (performance.now() > until) {
          await stopChild(child, "haproxy");
          throw new Error(`haproxy did not listen on ${hostname} ${port}: ${error}`);
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  }
  return { child, v2: `[::1]:${v2Port}`, v1: `127.0.0.1:${v1Port}` };
}

Deno.test({
  name: "PROXY: HAProxy send-proxy-v2 and send-proxy in front, curl through it",
  ignore: !haproxyInstalled && Deno.env.get("CI") !== "true",
  async fn() {
    const web = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      (_req, info) => new Response(`from ${(info.remoteAddr as Deno.NetAddr).hostname}\n`),
    );
    // HAProxy reaches the gateway over IPv4 loopback; only the header can make a client IPv6.
    const logger = recordingLogger();
    const gw = serve({
      listen: ["127.0.0.1:0"],
      logger,
      proxyProtocol: { trusted: ["127.0.0.1"] },
      safety: { allowOpenRelay: true },
    });
    const dir = await Deno.makeTempDir();
    const ha = await startHaproxy(dir, gatewayAddr(gw, 4));
    try {
      const url = `http://127.0.0.1:${web.addr.port}/`;
      // The health probes of startHaproxy went through too: count from here.
      const before = gw.stats.proxyHeaders.accepted;
      const viaV2 = await run("curl", ["-sS", "--max-time", "10", "--socks5", ha.v2, url]);
      assert.equal(viaV2.code, 0, viaV2.stderr);
      assert.equal(viaV2.stdout, "from 127.0.0.1\n");
      const l2 = await logger.waitFor((p) =>
        String(p.client).startsWith("[::1]:") && p.type === "C"
      );
      assert.equal(l2.protocol, "socks5");
      const viaV1 = await run("curl", ["-sS", "--max-time", "10", "--socks4a", ha.v1, url]);
      assert.equal(viaV1.code, 0, viaV1.stderr);
      const l1 = await logger.waitFor((p) => p.protocol === "socks4" && p.type === "A");
      assert.match(String(l1.client), /^127\.0\.0\.1:\d+$/);
      assert.ok(gw.stats.proxyHeaders.accepted >= before + 2);
    } finally {
      await stopChild(ha.child, "haproxy");
      await gw.shutdown({ grace: 0 });
      await web.shutdown();
      await Deno.remove(dir, { recursive: true });
    }
  },
});
