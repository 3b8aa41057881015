/**
 * The SOCKS4/4a front door: curl --socks4 and --socks4a against both
 * listener families, SOCKS4a names resolved by the gateway, BIND, and raw
 * clients for what curl does not send.
 */
import assert from "node:assert/strict";
import { serve, type ServeOptions } from "../../src/server/gateway.ts";
import { ResolveError } from "../../src/server/errors.ts";
import { BufferedReader } from "../../src/io/buffered_reader.ts";
import { decodeSocks4Reply, encodeSocks4Request, Socks4Reply } from "../../src/protocol/socks4.ts";
import {
  type Addr,
  echoServer,
  gatewayAddr,
  joinHostPort,
  READ_MS,
  readAll,
  recordingLogger,
  run,
  withTimeout,
  writeAll,
} from "../helpers.ts";

/** An HTTP destination that answers with the path and the peer address it saw. */
function httpPeer(hostname: string) {
  return Deno.serve(
    { hostname, port: 0, onListen() {} },
    (req, info) =>
      new Response(
        `${new URL(req.url).pathname} from ${(info.remoteAddr as Deno.NetAddr).hostname}\n`,
      ),
  );
}

/** v6only.test is ::1 and v4only.test 127.0.0.1, for the gateway only: the system knows neither. */
const testNames: ServeOptions["resolver"] = (name) =>
  name === "v6only.test"
    ? Promise.resolve([{ address: "::1", family: 6 }])
    : name === "v4only.test"
    ? Promise.resolve([{ address: "127.0.0.1", family: 4 }])
    : Promise.reject(new ResolveError(name, "no such name"));

function gateway(options: ServeOptions = {}) {
  const logger = recordingLogger();
  const gw = serve({
    listen: ["127.0.0.1:0", "[::1]:0"],
    logger,
    resolver: testNames,
    ...options,
  });
  return { gw, logger, v4: gatewayAddr(gw, 4), v6: gatewayAddr(gw, 6) };
}

const hostPort = (a: Addr) => joinHostPort(a.hostname, a.port);

function curl(...args: string[]) {
  return run("curl", ["-sS", "--max-time", "10", ...args]);
}

/** Sends one SOCKS4 request on a new connection and reads the 8-byte reply. */
async function socks4(proxy: Addr, request: Uint8Array) {
  const conn = await Deno.connect(proxy);
  const reader = new BufferedReader(conn);
  await writeAll(conn, request);
  const reply = await withTimeout(reader.decode(decodeSocks4Reply, "reply"), READ_MS, "reply");
  return { conn, reader, reply };
}

Deno.test("curl --socks4 and --socks4a through both listener families", async () => {
  const web4 = httpPeer("127.0.0.1");
  const web6 = httpPeer("::1");
  const { gw, logger, v4, v6 } = gateway();
  try {
    const p4 = web4.addr.port;
    const p6 = web6.addr.port;
    const cases = [
      // [proxy, flag, url, the destination's view of the gateway, RFC 3089 type]
      [v4, "--socks4", `http://127.0.0.1:${p4}/a`, "127.0.0.1", "A"],
      [v6, "--socks4", `http://127.0.0.1:${p4}/c`, "127.0.0.1", "C"],
      [v4, "--socks4a", `http://v4only.test:${p4}/a4a`, "127.0.0.1", "A"],
      // The name only the gateway knows, to an IPv6-only destination from an IPv4 client.
      [v4, "--socks4a", `http://v6only.test:${p6}/b`, "::1", "B"],
      [v6, "--socks4a", `http://v6only.test:${p6}/d`, "::1", "D"],
    ] as const;
    for (const [i, [proxy, flag, url, seen, type]] of cases.entries()) {
      const out = await curl(flag, hostPort(proxy), url);
      assert.equal(out.code, 0, `${flag} ${hostPort(proxy)} ${url}: ${out.stderr}`);
      const path = new URL(url).pathname;
      assert.equal(out.stdout, `${path} from ${seen}\n`);
      // One session per curl: session i + 1 is this one.
      const line = await logger.waitFor((p) => p.id === i + 1 && p.protocol === "socks4");
      assert.equal(line.destination, `${new URL(url).hostname}:${new URL(url).port}`);
      assert.equal(line.type, type, `${flag} via ${hostPort(proxy)} to ${url}`);
      assert.equal(line.command, "connect");
    }
    assert.equal(gw.stats.sessionsByProtocol.socks4, cases.length);
  } finally {
    await gw.shutdown({ grace: 0 });
    await web4.shutdown();
    await web6.shutdown();
  }
});

Deno.test("curl --socks4a sees the failure: an unknown name and a refused port are 0x5B", async () => {
  const { gw, logger, v4 } = gateway();
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = closed.addr.port;
  closed.close();
  try {
    const unknown = await curl("--socks4a", hostPort(v4), "http://nowhere.test/");
    assert.notEqual(unknown.code, 0);
    assert.match(unknown.stderr, /rejected|failed|91/i, unknown.stderr);
    await logger.waitFor((p) => p.destination === "nowhere.test:80" && p.reply !== "-");
    const refused = await curl("--socks4", hostPort(v4), `http://127.0.0.1:${port}/`);
    assert.notEqual(refused.code, 0);
    const line = await logger.waitFor((p) => p.destination === `127.0.0.1:${port}`);
    assert.match(String(line.reply), /^5 /, "the log keeps the SOCKS5 code: refused");
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

Deno.test("socks4: raw CONNECT relays early data; a 4a reply names the outbound address", async () => {
  const echo = echoServer("::1");
  const { gw, v4 } = gateway();
  try {
    const request = encodeSocks4Request({
      command: 1,
      hostname: "v6only.test",
      port: echo.addr.port,
      userId: "anyone",
    });
    // Request and early data in one segment.
    const { conn, reader, reply } = await socks4(
      v4,
      new Uint8Array([...request, ...new TextEncoder().encode("ping")]),
    );
    // The outbound socket is IPv6: SOCKS4 cannot say so, DSTIP 0.0.0.0 with its port.
    assert.equal(reply.reply, Socks4Reply.GRANTED);
    assert.equal(reply.hostname, "0.0.0.0");
    assert.ok(reply.port > 0);
    await conn.closeWrite();
    const rest = [...reader.takeRest(), ...await readAll(conn)];
    assert.equal(new TextDecoder().decode(new Uint8Array(rest)), "ping");
    conn.close();
    // The USERID is not a user: nothing authenticated it.
    assert.equal(gw.sessions().find((s) => s.protocol === "socks4")?.user, undefined);
  } finally {
    await gw.shutdown({ grace: 0 });
    await echo.close();
  }
});

Deno.test("socks4: authentication required -> 0x5B, and the reason is logged", async () => {
  const web = httpPeer("127.0.0.1");
  const { gw, logger, v4 } = gateway({ users: [{ username: "alice", password: "s3cret" }] });
  try {
    const out = await curl(
      "--socks4",
      hostPort(v4),
      "--proxy-user",
      "alice:s3cret",
      `http://127.0.0.1:${web.addr.port}/`,
    );
    assert.notEqual(out.code, 0, "SOCKS4 cannot log in");
    const line = await logger.waitFor((p) => p.protocol === "socks4");
    assert.match(
      String(line.reason),
      /authentication is required and SOCKS4 cannot carry a password/,
    );
    assert.equal(gw.stats.authFailures, 1);
    const { conn, reply } = await socks4(
      v4,
      encodeSocks4Request({
        command: 1,
        hostname: "127.0.0.1",
        port: web.addr.port,
        userId: "alice",
      }),
    );
    assert.equal(reply.reply, Socks4Reply.REJECTED);
    assert.equal((await readAll(conn)).length, 0, "then the gateway closes");
    conn.close();
  } finally {
    await gw.shutdown({ grace: 0 });
    await web.shutdown();
  }
});

Deno.test("socks4: unknown commands, hostile USERIDs and empty names get 0x5B and a close", async () => {
  const { gw, logger, v4 } = gateway();
  try {
    const cases: [Uint8Array, RegExp][] = [
      [Uint8Array.of(4, 3, 0, 80, 127, 0, 0, 1, 0), /SOCKS4 command 0x03 not supported/],
      [
        Uint8Array.of(4, 1, 0, 80, 127, 0, 0, 1, ...new Uint8Array(300).fill(0x41)),
        /USERID of at most 255 bytes/,
      ],
      [Uint8Array.of(4, 1, 0, 80, 0, 0, 0, 1, 0, 0), /found an empty one/],
      [Uint8Array.of(4, 1, 0, 80, 0, 0, 0, 1, 0, 0xc3, 0x28, 0), /UTF-8/],
    ];
    for (const [bytes, reason] of cases) {
      const { conn, reply } = await socks4(v4, bytes);
      assert.equal(reply.reply, Socks4Reply.REJECTED, String(reason));
      assert.equal((await readAll(conn)).length, 0);
      conn.close();
      await logger.waitFor((p) => reason.test(String(p.reason)));
    }
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

Deno.test("socks4: BIND gets two replies and relays with the peer", async () => {
  const { gw, logger, v4 } = gateway();
  try {
    const { conn, reader, reply } = await socks4(
      v4,
      encodeSocks4Request({ command: 2, hostname: "127.0.0.1", port: 0, userId: "" }),
    );
    assert.equal(reply.reply, Socks4Reply.GRANTED);
    assert.equal(reply.hostname, "127.0.0.1");
    const peer = await Deno.connect({ hostname: "127.0.0.1", port: reply.port });
    const second = await withTimeout(
      reader.decode(decodeSocks4Reply, "second reply"),
      READ_MS,
      "second",
    );
    assert.equal(second.reply, Socks4Reply.GRANTED);
    assert.deepEqual([second.hostname, second.port], ["127.0.0.1", peer.localAddr.port]);
    await writeAll(peer, new TextEncoder().encode("from peer"));
    await peer.closeWrite();
    assert.equal(new TextDecoder().decode(await readAll(conn)), "from peer");
    conn.close();
    peer.close();
    const line = await logger.waitFor((p) => p.protocol === "socks4" && p.command === "bind");
    assert.equal(line.type, "A");
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});
