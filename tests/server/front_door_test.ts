import assert from "node:assert/strict";
import { serve } from "../../src/server/gateway.ts";
import { sniff } from "../../src/server/front_door.ts";
import { renderMetrics } from "../../src/admin/metrics.ts";
import {
  echoServer,
  gatewayAddr,
  readAll,
  recordingLogger,
  socksConnect,
  withTimeout,
  writeAll,
} from "../helpers.ts";

Deno.test("sniff: SOCKS5, SOCKS4 and HTTP methods by the first byte; anything else is unknown", () => {
  assert.equal(sniff(5), "socks5");
  assert.equal(sniff(4), "socks4");
  for (const m of ["GET", "CONNECT", "POST", "get"]) assert.equal(sniff(m.charCodeAt(0)), "http");
  for (const b of [0, 1, 3, 6, 0x16, /* TLS */ 0x20, 0x30, 0x7b, 0xff]) {
    assert.equal(sniff(b), undefined, `byte 0x${b.toString(16)}`);
  }
});

Deno.test("front door: a protocol switched off on one listener is closed there and served on another", async () => {
  await using echo = echoServer("127.0.0.1");
  const logger = recordingLogger();
  const gw = serve({
    listen: [{ host: "127.0.0.1", port: 0, protocols: ["http"] }, "[::1]:0"],
    protocols: ["socks5"],
    logger,
  });
  try {
    const httpOnly = gatewayAddr(gw, 4);
    // SOCKS5 on the HTTP-only listener: closed without a reply.
    const conn = await Deno.connect(httpOnly);
    await writeAll(conn, new Uint8Array([5, 1, 0]));
    assert.equal((await withTimeout(readAll(conn), 5000, "close")).length, 0);
    conn.close();
    await logger.waitFor((p) =>
      /protocol socks5 is not enabled on this listener/.test(String(p.reason))
    );
    // An unknown first byte: closed, and named in the log.
    const junk = await Deno.connect(httpOnly);
    await writeAll(junk, new Uint8Array([0x16, 3, 1]));
    assert.equal((await withTimeout(readAll(junk), 5000, "close")).length, 0);
    junk.close();
    await logger.waitFor((p) => /unrecognised protocol \(first byte 0x16\)/.test(String(p.reason)));
    // The listener with the gateway-wide default serves SOCKS5.
    const ok = await socksConnect(gatewayAddr(gw, 6), "127.0.0.1", echo.addr.port);
    assert.equal(ok.reply?.reply, 0);
    ok.conn.close();
    await logger.waitFor((p) => p.protocol === "socks5" && p.type === "C");
    const metrics = renderMetrics(gw);
    assert.match(metrics, /dualsocks_protocol_sessions_total\{protocol="other"\} 2/);
    assert.match(metrics, /dualsocks_protocol_sessions_total\{protocol="socks5"\} 1/);
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

Deno.test("front door: a reload changes the protocols of a listener it keeps", async () => {
  const logger = recordingLogger();
  const gw = serve({ listen: ["127.0.0.1:0"], protocols: ["socks5"], logger });
  try {
    const addr = gatewayAddr(gw, 4);
    const key = `127.0.0.1:${addr.port}`;
    await gw.reload({ listen: [key], protocols: ["http"], logger });
    assert.equal(gatewayAddr(gw, 4).port, addr.port);
    const conn = await Deno.connect(addr);
    await writeAll(conn, new Uint8Array([5, 1, 0]));
    assert.equal((await withTimeout(readAll(conn), 5000, "close")).length, 0);
    conn.close();
    await logger.waitFor((p) => /protocol socks5 is not enabled/.test(String(p.reason)));
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

Deno.test("front door: an unknown protocol name in a listen entry is a ListenError", () => {
  assert.throws(
    // deno-lint-ignore no-explicit-any
    () => serve({ listen: [{ host: "127.0.0.1", port: 0, protocols: ["gopher" as any] }] }),
    /expected protocols among socks5, socks4, http, found "gopher"/,
  );
  assert.throws(
    () => serve({ listen: [{ host: "127.0.0.1", port: 0, protocols: [] }] }),
    /expected at least one of socks5, socks4, http, found none/,
  );
});
