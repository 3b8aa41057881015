/**
 * The HTTP proxy front door against hostile and broken peers: huge heads,
 * heads that never end, garbage, pipelining, clients that leave mid-body or
 * never finish their head, failing destinations; never a hang, a crash or a
 * leaked session. Everything on loopback.
 */

import assert from "node:assert/strict";
import { serve } from "../../src/server/gateway.ts";
import { ResolveError } from "../../src/server/errors.ts";
import {
  echoServer,
  gatewayAddr,
  readAll,
  recordingLogger,
  withTimeout,
  writeAll,
} from "../helpers.ts";
import { origin, pattern, raw, sha256, statuses } from "./http_helpers.ts";

const te = new TextEncoder();

/** Resolves when the gateway has no live session left (bounded). */
async function drained(gw: ReturnType<typeof serve>) {
  const until = performance.now() + 10_000;
  while (gw.sessions().length > 0) {
    assert.ok(performance.now() < until, `sessions still open: ${JSON.stringify(gw.sessions())}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A raw origin that answers nothing: keeps what each connection sent, until the peer closes it. */
function rawCapture() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const received: Promise<string>[] = [];
  const accepting = (async () => {
    for await (const conn of listener) {
      received.push((async () => {
        const chunks: Uint8Array[] = [];
        const buf = new Uint8Array(65536);
        try {
          for (let n; (n = await conn.read(buf)) !== null;) chunks.push(buf.slice(0, n));
        } catch { /* reset by the gateway */ }
        conn.close();
        return new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c])));
      })());
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    /** Stops listening; resolves to the bytes of every connection, once each has ended. */
    async close(): Promise<string[]> {
      listener.close();
      await accepting;
      return await Promise.all(received);
    },
  };
}

/** A raw origin: counts its connections, answers every request head with `reply(n)`. */
function rawOrigin(reply: (n: number) => string, closeAfter: (n: number) => boolean = () => false) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let connections = 0;
  let requests = 0;
  const serveConn = async (conn: Deno.Conn) => {
    const buf = new Uint8Array(65536);
    let text = "";
    try {
      while (true) {
        const n = await conn.read(buf);
        if (n === null) break;
        text += new TextDecoder().decode(buf.subarray(0, n));
        let end;
        while ((end = text.indexOf("\r\n\r\n")) >= 0) {
          text = text.slice(end + 4);
          const n = ++requests;
          await writeAll(conn, te.encode(reply(n)));
          if (closeAfter(n)) return; // silently: no Connection: close
        }
      }
    } catch {
      /* reset by the gateway */
    } finally {
      conn.close();
    }
  };
  const conns: Promise<void>[] = [];
  const accepting = (async () => {
    for await (const conn of listener) {
      connections++;
      conns.push(serveConn(conn));
    }
  })();
  return {
    port: (listener.addr as Deno.NetAddr).port,
    get connections() {
      return connections;
    },
    async close() {
      listener.close();
      await accepting;
      await Promise.all(conns);
    },
  };
}

Deno.test("http hostile: huge heads, heads without an end, garbage, too many fields", async () => {
  await using o = origin("127.0.0.1");
  const logger = recordingLogger();
  const gw = serve({ listen: ["127.0.0.1:0"], logger });
  const gwAddr = gatewayAddr(gw, 4);
  try {
    const start = `GET http://${o.authority}/echo HTTP/1.1\r\nHost: ${o.authority}\r\n`;
    // A whole head over 32 KiB.
    let text = await raw(gwAddr, start + `X-Big: ${"a".repeat(40_000)}\r\n\r\n`);
    assert.match(text, /^HTTP\/1.1 431 Request Header Fields Too Large\r\n/);
    assert.match(text, /Connection: close/);
    // No end of headers, and the client does not close: answered once past the limit.
    text = await raw(gwAddr, start + `X-Big: ${"a".repeat(40_000)}`);
    assert.match(text, /^HTTP\/1.1 431 /);
    assert.match(text, /within 32768 bytes/);
    // Too many fields.
    const fields = Array.from({ length: 101 }, (_, i) => `X-${i}: ${i}\r\n`).join("");
    assert.match(
      await raw(gwAddr, start + fields + "\r\n"),
      /^HTTP\/1.1 431 .*\r\n[^]*at most 100 header fields/,
    );
    // Garbage request lines, a long target.
    for (
      const junk of [
        "GET\r\n\r\n",
        "HELLO WORLD\r\n\r\n",
        "GET http://x/ HTTP/1.1 x\r\n\r\n",
        "G\0T / HTTP/1.1\r\n",
      ]
    ) {
      assert.match(await raw(gwAddr, junk), /^HTTP\/1.1 400 Bad Request\r\n/, JSON.stringify(junk));
    }
    assert.match(await raw(gwAddr, `GET http://a.test/${"p".repeat(9000)}`), /^HTTP\/1.1 414 /);
    assert.match(await raw(gwAddr, `GET http://a.test/ HTTP/2.0\r\n\r\n`), /^HTTP\/1.1 505 /);
    // Not proxy requests.
    text = await raw(gwAddr, `GET /echo HTTP/1.1\r\nHost: ${o.authority}\r\n\r\n`);
    assert.match(
      text,
      /^HTTP\/1.1 400 [^]*this is a proxy: expected CONNECT host:port or an absolute http:\/\/ URI, found origin-form/,
    );
    assert.match(
      await raw(gwAddr, `GET https://${o.authority}/ HTTP/1.1\r\n\r\n`),
      /^HTTP\/1.1 501 [^]*use CONNECT for https/,
    );
    assert.match(
      await raw(gwAddr, `CONNECT ${o.authority.split(":")[0]} HTTP/1.1\r\n\r\n`),
      /^HTTP\/1.1 400 /,
    );
    assert.equal(o.seen.length, 0, `nothing reached the origin: ${JSON.stringify(o.seen)}`);
    // Bad framing of a request body, against an origin that keeps the raw
    // bytes: an HTTP server may take a chunked body cut short for an empty one.
    const capture = rawCapture();
    const to = `GET http://127.0.0.1:${capture.port}/echo HTTP/1.1\r\nHost: 127.0.0.1\r\n`;
    text = await raw(gwAddr, to + "Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert.match(text, /^HTTP\/1.1 400 [^]*found both/);
    text = await raw(gwAddr, to + "Transfer-Encoding: chunked\r\n\r\nzz\r\n");
    assert.match(text, /^HTTP\/1.1 400 [^]*hex chunk size/);
    // Only the streamed request's head reached the origin, and no chunk of its body.
    const received = await capture.close();
    assert.equal(received.length, 1, `one connection to the origin: ${JSON.stringify(received)}`);
    assert.match(received[0], /^GET \/echo HTTP\/1.1\r\n[^]*\r\n\r\n$/);
    assert.doesNotMatch(received[0], /zz|\r\n0\r\n/);
    await drained(gw);
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

Deno.test("http hostile: pipelined requests in one segment are answered in order", async () => {
  await using o = origin("127.0.0.1");
  const gw = serve({ listen: ["127.0.0.1:0"], logger: recordingLogger() });
  try {
    const body = "hello";
    const all = [
      `GET http://${o.authority}/echo?n=1 HTTP/1.1\r\nHost: x\r\n\r\n`,
      `POST http://${o.authority}/echo?n=2 HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
      `POST http://${o.authority}/echo?n=3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n`,
      // A HEAD response has no body, whatever its Content-Length says.
      `HEAD http://${o.authority}/bytes/1000 HTTP/1.1\r\nHost: x\r\n\r\n`,
      `GET http://${o.authority}/bytes/10 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
    ].join("");
    const text = await raw(gatewayAddr(gw, 4), all);
    assert.deepEqual(statuses(text), [200, 200, 200, 200, 200]);
    assert.deepEqual(o.seen.map((s) => [s.method, s.url, s.length]), [
      ["GET", "/echo?n=1", 0],
      ["POST", "/echo?n=2", 5],
      ["POST", "/echo?n=3", 2],
      ["HEAD", "/bytes/1000", 0],
      ["GET", "/bytes/10", 0],
    ]);
    assert.match(text, /content-length: 1000\r\n[^]*HTTP\/1.1 200 OK\r\ncontent-length: 10\r\n/i);
    assert.equal(o.seen[1].sha256, await sha256(te.encode(body)));
    const order = ["n=1", "n=2", "n=3"].map((n) => text.indexOf(`"url":"/echo?${n}"`));
    assert.ok(order[0] >= 0 && order[0] < order[1] && order[1] < order[2], `order ${order}`);
    await drained(gw);
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

Deno.test("http hostile: a client closing mid-body, and one never finishing its head (408)", async () => {
  await using o = origin("127.0.0.1");
  const logger = recordingLogger();
  const gw = serve({ listen: ["127.0.0.1:0"], logger, timeouts: { handshake: 1000 } });
  try {
    const conn = await Deno.connect(gatewayAddr(gw, 4));
    await writeAll(
      conn,
      te.encode(
        `POST http://${o.authority}/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n`,
      ),
    );
    await writeAll(conn, pattern(1000));
    conn.close();
    await logger.waitFor((p) =>
      /request body: connection closed before the end of the body/.test(String(p.reason))
    );
    // The slow client gets 408 (before the gateway's handshake timeout cuts it), then the close.
    const slow = await Deno.connect(gatewayAddr(gw, 4));
    await writeAll(slow, te.encode(`GET http://${o.authority}/echo HTTP/1.1\r\nHost: x\r\n`));
    const text = new TextDecoder().decode(await withTimeout(readAll(slow), 10_000, "408"));
    slow.close();
    assert.match(text, /^HTTP\/1.1 408 Request Timeout\r\n[^]*no whole request head after 1000 ms/);
    await logger.waitFor((p) => /answered 408/.test(String(p.reason)));
    await drained(gw);
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

Deno.test("http hostile: failures answered from the status table, naming the destination", async () => {
  // A port with nothing listening: bind, note, close.
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const dead = (l.addr as Deno.NetAddr).port;
  l.close();
  const logger = recordingLogger();
  const gw = serve({
    listen: ["127.0.0.1:0"],
    logger,
    rules: [
      { action: "deny", to: ["192.0.2.0/24"] },
      { action: "allow", to: ["*"] },
    ],
    resolver: (host) => {
      throw new ResolveError(host, "no such name");
    },
    // A destination that never answers: the dial waits for the connect deadline.
    dialer: (target, options) =>
      target.port === 9
        ? new Promise((_, reject) =>
          options.signal?.addEventListener("abort", () => reject(options.signal!.reason))
        )
        : Deno.connect({ hostname: target.hostname, port: target.port }),
    timeouts: { connect: 300 },
  });
  const gwAddr = gatewayAddr(gw, 4);
  try {
    const cases: [string, number, RegExp][] = [
      [
        `127.0.0.1:${dead}`,
        502,
        new RegExp(`cannot reach 127\\.0\\.0\\.1:${dead}: .*refused`, "i"),
      ],
      ["192.0.2.1:80", 403, /cannot reach 192\.0\.2\.1:80: .*not allowed by ruleset/],
      [
        "nowhere.test:80",
        502,
        /cannot reach nowhere\.test:80: cannot resolve nowhere\.test: no such name/,
      ],
      ["127.0.0.1:9", 504, /cannot reach 127\.0\.0\.1:9: connect to .* timed out after 300 ms/],
    ];
    for (const [dest, status, body] of cases) {
      for (const connect of [false, true]) {
        const req = connect
          ? `CONNECT ${dest} HTTP/1.1\r\nHost: ${dest}\r\n\r\n`
          : `GET http://${dest}/x HTTP/1.1\r\nHost: ${dest}\r\nConnection: close\r\n\r\n`;
        const text = await raw(gwAddr, req);
        assert.equal(statuses(text)[0], status, `${dest} ${connect ? "CONNECT" : "GET"}: ${text}`);
        assert.match(text, body);
        assert.match(text, /Content-Type: text\/plain; charset=utf-8\r\n/);
      }
    }
    // A failed forwarded request without a body keeps a keep-alive connection.
    const text = await raw(
      gwAddr,
      `GET http://127.0.0.1:${dead}/ HTTP/1.1\r\nHost: x\r\n\r\nGET http://192.0.2.1/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
    );
    assert.deepEqual(statuses(text), [502, 403]);
    assert.ok(gw.stats.ruleDenials >= 3, `rule denials ${gw.stats.ruleDenials}`);
    await drained(gw);
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

Deno.test("http hostile: upstream connections reused per destination, closed when the response says so", async () => {
  const up = rawOrigin((n) =>
    `HTTP/1.1 200 OK\r\nContent-Length: 2\r\n${n === 2 ? "Connection: close\r\n" : ""}\r\n${
      String(n).padStart(2, "0")
    }`
  );
  const gw = serve({ listen: ["127.0.0.1:0"], logger: recordingLogger() });
  try {
    const get = (close: boolean) =>
      `GET http://127.0.0.1:${up.port}/ HTTP/1.1\r\nHost: x\r\n${
        close ? "Connection: close\r\n" : ""
      }\r\n`;
    const text = await raw(gatewayAddr(gw, 4), get(false) + get(false) + get(false) + get(true));
    assert.deepEqual(statuses(text), [200, 200, 200, 200]);
    assert.match(text, /01[^]*02[^]*03[^]*04/);
    // 1 and 2 on the first connection (2 said close), 3 and 4 on the second.
    assert.equal(up.connections, 2);
    // HTTP/1.0 client, chunked response: the data only, then the close.
    await using o = origin("127.0.0.1");
    const c = await Deno.connect(gatewayAddr(gw, 4));
    await writeAll(c, te.encode(`GET http://${o.authority}/bytes/70000?chunked HTTP/1.0\r\n\r\n`));
    const all = await withTimeout(readAll(c), 10_000, "the HTTP/1.0 response");
    c.close();
    let split = 0;
    while (
      !(all[split] === 13 && all[split + 1] === 10 && all[split + 2] === 13 &&
        all[split + 3] === 10)
    ) split++;
    const head = new TextDecoder().decode(all.subarray(0, split));
    assert.match(head, /^HTTP\/1.1 200 /);
    assert.doesNotMatch(head, /transfer-encoding/i);
    assert.match(head, /Connection: close/);
    assert.equal(await sha256(all.slice(split + 4)), await sha256(pattern(70000)));
    await drained(gw);
  } finally {
    await gw.shutdown({ grace: 0 });
    await up.close();
  }
});

Deno.test("http hostile: bytes sent right behind a CONNECT head go through the tunnel first", async () => {
  await using echo = echoServer("::1");
  const logger = recordingLogger();
  const gw = serve({ listen: ["127.0.0.1:0"], logger });
  try {
    const dest = `[::1]:${echo.addr.port}`;
    const text = await raw(
      gatewayAddr(gw, 4),
      `CONNECT ${dest} HTTP/1.1\r\nHost: ${dest}\r\n\r\nearly bytes`,
      { closeWrite: true },
    );
    assert.equal(text, "HTTP/1.1 200 Connection established\r\n\r\nearly bytes");
    const line = await logger.waitFor((p) => p.protocol === "http" && p.type === "B");
    assert.equal(line.bytesUp, "early bytes".length);
    await drained(gw);
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

Deno.test("http hostile: a reused upstream connection the server closed meanwhile is retried once", async () => {
  const up = rawOrigin(
    (n) => `HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n${String(n).padStart(2, "0")}`,
    (n) => n === 1,
  );
  const gw = serve({ listen: ["127.0.0.1:0"], logger: recordingLogger() });
  try {
    const conn = await Deno.connect(gatewayAddr(gw, 4));
    const get = `GET http://127.0.0.1:${up.port}/ HTTP/1.1\r\nHost: x\r\n\r\n`;
    const buf = new Uint8Array(4096);
    let text = "";
    for (const want of ["01", "02"]) {
      await writeAll(conn, te.encode(get));
      while (!text.endsWith(want)) {
        const n = await withTimeout(conn.read(buf), 10_000, `response ${want}`);
        assert.ok(n !== null, `closed before response ${want}: ${text}`);
        text += new TextDecoder().decode(buf.subarray(0, n));
      }
    }
    conn.close();
    assert.deepEqual(statuses(text), [200, 200]);
    assert.equal(up.connections, 2);
    await drained(gw);
  } finally {
    await gw.shutdown({ grace: 0 });
    await up.close();
  }
});
