/**
 * The admin API over real HTTP on loopback: every endpoint, its errors,
 * tokens, and cutting a live relay.
 */
import assert from "node:assert/strict";
import { createAdminHandler } from "../../src/admin/handler.ts";
import { DEFAULT_CONFIG, parseConfig } from "../../src/config/config.ts";
import { serve } from "../../src/server/gateway.ts";
import { echoServer, gatewayAddr, recordingLogger, socksConnect, writeAll } from "../helpers.ts";
import { assertProblem, call, echo, eof, serveAdmin, until } from "./helpers.ts";

function gateway() {
  const logger = recordingLogger();
  const gw = serve({ listen: ["127.0.0.1:0", "[::1]:0"], logger });
  return { gw, logger, v4: gatewayAddr(gw, 4), v6: gatewayAddr(gw, 6) };
}

Deno.test("admin: health, readiness and the status page with its assets", async () => {
  const { gw } = gateway();
  try {
    await using admin = serveAdmin(gw);
    const health = await call(`${admin.base}/healthz`);
    assert.equal(health.status, 200);
    assert.deepEqual(health.json, { status: "ok" });
    const ready = await call(`${admin.base}/readyz`);
    assert.equal(ready.status, 200);
    assert.equal(ready.json.ready, true);

    const head = await call(`${admin.base}/healthz`, { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.equal(head.text, "");

    const page = await call(`${admin.base}/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-type")!, /^text\/html/);
    assert.match(page.text, /<script src="status\.js" defer><\/script>/);
    const csp = page.headers.get("content-security-policy")!;
    assert.match(csp, /script-src 'self'/);
    assert.match(csp, /frame-ancestors 'none'/);
    const js = await call(`${admin.base}/status.js`);
    assert.match(js.headers.get("content-type")!, /^text\/javascript/);
    assert.match(js.text, /api\/v1\/sessions/);
    assert.doesNotMatch(js.text, /innerHTML/, "client-controlled strings go through textContent");
    const css = await call(`${admin.base}/status.css`);
    assert.match(css.headers.get("content-type")!, /^text\/css/);
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

Deno.test("admin: unknown routes are 404, wrong methods 405 with Allow, errors are JSON", async () => {
  const { gw } = gateway();
  try {
    await using admin = serveAdmin(gw);
    for (
      const path of ["/nope", "/api/v1", "/api/v2/sessions", "/api/v1/sessions/1/x", "/metrics/"]
    ) {
      assertProblem(await call(`${admin.base}${path}`), 404, /expected one of \/, \/healthz/);
    }
    const cases: [string, string, string][] = [
      ["POST", "/healthz", "GET, HEAD"],
      ["DELETE", "/api/v1/sessions", "GET, HEAD"],
      ["PUT", "/api/v1/sessions/1", "GET, DELETE, HEAD"],
      ["GET", "/api/v1/reload", "POST"],
      ["POST", "/metrics", "GET, HEAD"],
      ["PATCH", "/api/v1/config", "GET, HEAD"],
      // Names every JavaScript object has are methods like any other.
      ["constructor", "/", "GET, HEAD"],
      ["toString", "/healthz", "GET, HEAD"],
      ["valueOf", "/readyz", "GET, HEAD"],
      ["hasOwnProperty", "/status.js", "GET, HEAD"],
    ];
    for (const [method, path, allow] of cases) {
      const a = await call(`${admin.base}${path}`, { method });
      assertProblem(a, 405, new RegExp(`expected ${allow} on .+, found ${method}`));
      assert.equal(a.headers.get("allow"), allow, `${method} ${path}`);
    }
    assertProblem(
      await call(`${admin.base}/api/v1/sessions/abc`),
      400,
      /expected a session id \(a positive integer\), found "abc"/,
    );
    assertProblem(await call(`${admin.base}/api/v1/sessions/0`, { method: "DELETE" }), 400);
    // A malformed percent escape is still a 400 naming what was found, not a 500.
    assertProblem(await call(`${admin.base}/api/v1/sessions/%E0%A4%A`), 400, /found "%E0%A4%A"/);
    assertProblem(
      await call(`${admin.base}/api/v1/sessions/999`, { method: "DELETE" }),
      404,
      /no live session with id 999/,
    );
    // Without a config or a reload callback, those routes say so.
    assertProblem(await call(`${admin.base}/api/v1/config`), 501, /no configuration/);
    assertProblem(
      await call(`${admin.base}/api/v1/reload`, { method: "POST" }),
      501,
      /no reload callback/,
    );
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

Deno.test("admin: the session list shows a live relay, and DELETE cuts it", async () => {
  const dest = echoServer("127.0.0.1");
  const { gw, logger, v6 } = gateway();
  try {
    await using admin = serveAdmin(gw);
    const { conn, reply } = await socksConnect(v6, "127.0.0.1", dest.addr.port);
    assert.equal(reply?.reply, 0);
    await echo(conn, "hello admin");
    const list = await call(`${admin.base}/api/v1/sessions`);
    assert.equal(list.status, 200);
    assert.equal(list.headers.get("cache-control"), "no-store");
    const s = list.json.sessions.find((s: { destination: string }) =>
      s.destination === `127.0.0.1:${dest.addr.port}`
    );
    assert.ok(s, list.text);
    assert.equal(s.type, "C");
    assert.equal(s.command, "connect");
    assert.equal(s.phase, "relay");
    assert.equal(s.user, null);
    assert.equal(s.resolved, `127.0.0.1:${dest.addr.port}`);
    assert.match(s.client, /^\[::1\]:\d+$/);
    assert.equal(s.bytesUp, 11);
    assert.equal(s.bytesDown, 11);
    assert.ok(s.ageSeconds >= 0 && s.ageSeconds < 60);
    assert.ok(!Number.isNaN(Date.parse(s.startedAt)));

    const one = await call(`${admin.base}/api/v1/sessions/${s.id}`);
    assert.equal(one.status, 200);
    assert.equal(one.json.id, s.id);

    const cut = await call(`${admin.base}/api/v1/sessions/${s.id}`, { method: "DELETE" });
    assert.equal(cut.status, 200, cut.text);
    assert.deepEqual(cut.json, { id: s.id, closed: true });
    assert.equal(await eof(conn), null, "the client sees the relay end");
    conn.close();
    const logged = await logger.waitFor((p) => p.id === s.id && "reason" in p);
    assert.equal(logged.reason, "closed through the admin API");
    assertProblem(await call(`${admin.base}/api/v1/sessions/${s.id}`), 404);
    assertProblem(await call(`${admin.base}/api/v1/sessions/${s.id}`, { method: "DELETE" }), 404);
  } finally {
    await gw.shutdown({ grace: 0 });
    await dest.close();
  }
});

Deno.test("admin: stats count relays by type, live bytes included", async () => {
  const dest = echoServer("::1");
  const { gw, v4 } = gateway();
  try {
    await using admin = serveAdmin(gw);
    const { conn } = await socksConnect(v4, "::1", dest.addr.port);
    await echo(conn, "x".repeat(1000));
    const live = (await call(`${admin.base}/api/v1/stats`)).json;
    assert.equal(live.types.B.active, 1);
    assert.equal(live.types.B.total, 1);
    assert.equal(live.types.B.bytesUp, 1000);
    assert.equal(live.bytes.down, 1000);
    assert.equal(live.sessions.active, 1);
    assert.equal(live.requests.connect, 1);
    assert.equal(live.draining, false);
    assert.deepEqual(
      live.listen,
      gw.addrs.map((a) =>
        a.hostname.includes(":") ? `[${a.hostname}]:${a.port}` : `${a.hostname}:${a.port}`
      ),
    );
    conn.close();
    await until("the session closed", () => gw.sessions().length === 0);
    const closed = (await call(`${admin.base}/api/v1/stats`)).json;
    assert.equal(closed.types.B.active, 0);
    assert.equal(closed.types.B.total, 1, "a closed relay still counts");
    assert.equal(closed.types.B.bytesUp, 1000, "its bytes moved from live to closed");
    assert.equal(closed.replies["0"], 1);
  } finally {
    await gw.shutdown({ grace: 0 });
    await dest.close();
  }
});

Deno.test("admin: a token guards metrics and the API, compared as a whole", async () => {
  const { gw } = gateway();
  let token: string | undefined = "0123456789abcdef-first";
  try {
    await using admin = serveAdmin(gw, { token: () => token });
    for (const path of ["/metrics", "/api/v1/sessions", "/api/v1/stats", "/api/v1/config"]) {
      const none = await call(`${admin.base}${path}`);
      assertProblem(none, 401, /expected an "Authorization: Bearer TOKEN" header, found none/);
      assert.match(none.headers.get("www-authenticate")!, /^Bearer realm=/);
    }
    const basic = await call(`${admin.base}/metrics`, {
      headers: { authorization: "Basic YWxpY2U6c2VjcmV0" },
    });
    assertProblem(basic, 401, /found another scheme/);
    for (const wrong of ["0123456789abcdef-firs", "0123456789abcdef-first2", "x"]) {
      const a = await call(`${admin.base}/metrics`, {
        headers: { authorization: `Bearer ${wrong}` },
      });
      assertProblem(a, 401, /found a wrong one/);
      assert.match(a.headers.get("www-authenticate")!, /error="invalid_token"/);
    }
    const ok = await call(`${admin.base}/metrics`, {
      headers: { authorization: "Bearer 0123456789abcdef-first" },
    });
    assert.equal(ok.status, 200);
    // Probes and the page (which asks for the token itself) stay open.
    for (const path of ["/healthz", "/readyz", "/", "/status.js"]) {
      assert.equal((await call(`${admin.base}${path}`)).status, 200, path);
    }
    // The token follows the option (a reload changes it).
    token = "fedcba9876543210-second";
    const old = await call(`${admin.base}/api/v1/stats`, {
      headers: { authorization: "Bearer 0123456789abcdef-first" },
    });
    assertProblem(old, 401);
    const fresh = await call(`${admin.base}/api/v1/stats`, {
      headers: { authorization: "bearer fedcba9876543210-second" },
    });
    assert.equal(fresh.status, 200);
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

Deno.test("admin: without a token, foreign Hosts and cross-site writes are refused", async () => {
  const { gw } = gateway();
  try {
    const handler = createAdminHandler(gw);
    const rebound = await handler(new Request("http://attacker.example:9080/api/v1/config"));
    assert.equal(rebound.status, 403);
    assert.match(
      (await rebound.json()).message,
      /expected a Host that is an IP address or localhost/,
    );
    for (const host of ["127.0.0.1:9080", "[::1]:9080", "localhost:9080", "192.0.2.7"]) {
      const res = await handler(new Request(`http://${host}/api/v1/sessions`));
      assert.equal(res.status, 200, host);
      await res.body?.cancel();
    }
    const cross = await handler(
      new Request("http://127.0.0.1:9080/api/v1/sessions/1", {
        method: "DELETE",
        headers: { origin: "http://evil.example" },
      }),
    );
    assert.equal(cross.status, 403);
    assert.match((await cross.json()).message, /expected a same-origin request/);
    const same = await handler(
      new Request("http://127.0.0.1:9080/api/v1/sessions/1", {
        method: "DELETE",
        headers: { origin: "http://127.0.0.1:9080" },
      }),
    );
    assert.equal(same.status, 404, "same origin gets through to the route");
    await same.body?.cancel();
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

Deno.test("admin: the configuration is served with its secrets redacted", async () => {
  const { gw } = gateway();
  try {
    const config = parseConfig(
      [
        "users: [{username: alice, password: hunter2-secret}]",
        "admin: {listen: 127.0.0.1:0, token: 0123456789abcdef-token}",
        "timeouts: {idle: 90s}",
      ].join("\n"),
      { file: "gw.yaml" },
    );
    await using admin = serveAdmin(gw, { config: () => config, token: config.admin.token });
    const a = await call(`${admin.base}/api/v1/config`, {
      headers: { authorization: "Bearer 0123456789abcdef-token" },
    });
    assert.equal(a.status, 200);
    assert.ok(!a.text.includes("hunter2") && !a.text.includes("abcdef-token"), a.text);
    assert.equal(a.json.users[0].password, "<redacted>");
    assert.equal(a.json.admin.token, "<redacted-token>");
    assert.equal(a.json.timeouts.idle, "90s");
    // The document reads back as a configuration file (JSON is YAML) once
    // real secrets replace the placeholders, which are refused as they are.
    assert.throws(
      () => parseConfig(a.text, { file: "api.json" }),
      /api\.json:\d+:\d+: users\[0\]\.password: expected a password of your own/,
    );
    const back = parseConfig(
      a.text.replace("<redacted-token>", "restored-token-0123456789")
        .replace("<redacted>", "restored"),
      { file: "api.json" },
    );
    assert.equal(back.timeouts.idle, 90_000);
    assert.deepEqual(back.listen, DEFAULT_CONFIG.listen);
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

Deno.test("admin: readiness turns 503 while draining; the API keeps answering", async () => {
  const dest = echoServer("127.0.0.1");
  const { gw, v4 } = gateway();
  await using admin = serveAdmin(gw, { reload: () => Promise.resolve() });
  const { conn } = await socksConnect(v4, "127.0.0.1", dest.addr.port);
  try {
    await echo(conn, "before");
    const stopping = gw.shutdown({ grace: 30_000 });
    const ready = await call(`${admin.base}/readyz`);
    assertProblem(ready, 503, /draining/);
    assert.equal(ready.json.ready, false);
    assert.equal((await call(`${admin.base}/healthz`)).status, 200);
    const stats = await call(`${admin.base}/api/v1/stats`);
    assert.equal(stats.json.draining, true);
    assertProblem(await call(`${admin.base}/api/v1/reload`, { method: "POST" }), 503);
    // The relay still flows during the grace period.
    await echo(conn, "during the grace");
    await writeAll(conn, new Uint8Array(0));
    conn.close();
    await stopping;
  } finally {
    try {
      conn.close();
    } catch { /* closed above */ }
    await gw.shutdown({ grace: 0 });
    await dest.close();
  }
});
