/**
 * `GET /metrics`, parsed as the Prometheus text format: families, labels,
 * cumulative histograms, and counters that never go backwards.
 */
import assert from "node:assert/strict";
import { METRICS_CONTENT_TYPE, renderMetrics } from "../../src/admin/metrics.ts";
import { serve } from "../../src/server/gateway.ts";
import { Reply } from "../../src/protocol/constants.ts";
import type { Resolver } from "../../src/server/resolver.ts";
import { ResolveError } from "../../src/server/errors.ts";
import {
  echoServer,
  gatewayAddr,
  readN,
  recordingLogger,
  socksConnect,
  writeAll,
} from "../helpers.ts";
import { call, echo, type Exposition, parseExposition, serveAdmin, until } from "./helpers.ts";

const resolver: Resolver = (name) => {
  if (name === "v4.test") return Promise.resolve([{ address: "127.0.0.1", family: 4 }]);
  return Promise.reject(new ResolveError(name, "no such name"));
};

function assertHistogram(m: Exposition, name: string) {
  assert.equal(m.types.get(name), "histogram");
  const buckets = m.samples.filter((s) => s.name === `${name}_bucket`);
  assert.ok(buckets.length > 2);
  let previous = -Infinity;
  let count = 0;
  for (const b of buckets) {
    const le = b.labels.le === "+Inf" ? Infinity : Number(b.labels.le);
    assert.ok(le > previous, `${name}: bounds ascend`);
    assert.ok(b.value >= count, `${name}: buckets are cumulative`);
    previous = le;
    count = b.value;
  }
  assert.equal(buckets.at(-1)!.labels.le, "+Inf");
  assert.equal(m.get(`${name}_count`), buckets.at(-1)!.value);
  assert.ok(m.get(`${name}_sum`)! >= 0);
  return count;
}

Deno.test("metrics: every family is typed, labelled and counts what happened", async () => {
  const dest = echoServer("127.0.0.1");
  const logger = recordingLogger();
  const gw = serve({
    listen: ["127.0.0.1:0", "[::1]:0"],
    logger,
    resolver,
    users: [{ username: "alice", password: "s3cret" }],
    rules: [{ action: "deny", ports: [9] }, { action: "allow" }],
  });
  const auth = { username: "alice", password: "s3cret" };
  try {
    await using admin = serveAdmin(gw);
    const res = await call(`${admin.base}/metrics`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), METRICS_CONTENT_TYPE);
    const empty = parseExposition(res.text);
    for (const [name, type] of empty.types) {
      assert.match(name, /^dualsocks_[a-z_]+$/);
      assert.ok(["counter", "gauge", "histogram"].includes(type));
      if (type === "counter") assert.match(name, /_total$/, `${name}: counters end in _total`);
      assert.ok(empty.help.get(name), `${name} has HELP`);
    }
    assert.equal(empty.get("dualsocks_sessions_total"), 0);
    assert.equal(empty.get("dualsocks_relays_active", { command: "connect", type: "C" }), 0);
    assert.equal(empty.get("dualsocks_replies_total", { code: "4", reply: "host unreachable" }), 0);

    // A type C relay (IPv6 client, IPv4 destination) through a name...
    const v6 = gatewayAddr(gw, 6);
    const { conn, reply } = await socksConnect(v6, "v4.test", dest.addr.port, { auth });
    assert.equal(reply?.reply, 0);
    await echo(conn, "0123456789");
    // ...a name that does not resolve, a port the rules deny, a wrong password.
    const bad = await socksConnect(v6, "nowhere.test", 80, { auth });
    assert.equal(bad.reply?.reply, Reply.HOST_UNREACHABLE);
    bad.conn.close();
    const denied = await socksConnect(gatewayAddr(gw, 4), "127.0.0.1", 9, { auth });
    assert.equal(denied.reply?.reply, Reply.NOT_ALLOWED);
    denied.conn.close();
    const wrong = await socksConnect(v6, "v4.test", 80, {
      auth: { username: "alice", password: "nope" },
    });
    assert.equal(wrong.authOk, false);
    wrong.conn.close();
    await until("three sessions closed", () => gw.sessions().length === 1);

    const m = parseExposition(renderMetrics(gw));
    assert.equal(m.get("dualsocks_sessions_total"), 4);
    assert.equal(m.get("dualsocks_sessions_active", { phase: "relay" }), 1);
    assert.equal(m.get("dualsocks_requests_total", { command: "connect" }), 3);
    assert.equal(m.get("dualsocks_relays_total", { type: "C" }), 1);
    assert.equal(m.get("dualsocks_relays_total", { type: "A" }), 0);
    assert.equal(m.get("dualsocks_relays_active", { command: "connect", type: "C" }), 1);
    assert.equal(m.get("dualsocks_relayed_bytes_total", { type: "C", direction: "up" }), 10);
    assert.equal(m.get("dualsocks_relayed_bytes_total", { type: "C", direction: "down" }), 10);
    assert.equal(m.get("dualsocks_replies_total", { code: "4", reply: "host unreachable" }), 1);
    assert.equal(
      m.get("dualsocks_replies_total", { code: "2", reply: "connection not allowed by ruleset" }),
      1,
    );
    assert.equal(m.get("dualsocks_auth_failures_total"), 1);
    assert.equal(m.get("dualsocks_rule_denials_total"), 1);
    assert.equal(m.get("dualsocks_dns_lookups_total"), 2);
    assert.equal(m.get("dualsocks_dns_failures_total"), 1);
    assert.equal(m.get("dualsocks_udp_datagrams_total", { direction: "from_client" }), 0);
    assert.equal(m.get("dualsocks_udp_datagrams_dropped_total"), 0);
    assert.equal(m.get("dualsocks_draining"), 0);
    assert.equal(m.get("dualsocks_listeners"), 2);
    assert.ok(Math.abs(m.get("dualsocks_start_time_seconds")! - gw.startedAt / 1000) < 1e-6);
    assert.equal(assertHistogram(m, "dualsocks_handshake_duration_seconds"), 3);
    assert.equal(assertHistogram(m, "dualsocks_connect_duration_seconds"), 1);

    // When the relay closes its bytes move from live to closed: nothing goes backwards.
    await writeAll(conn, new TextEncoder().encode("abc"));
    assert.equal((await readN(conn, 3)).length, 3);
    const before = parseExposition(renderMetrics(gw));
    conn.close();
    await until("the relay closed", () => gw.sessions().length === 0);
    const after = parseExposition(renderMetrics(gw));
    for (const s of before.samples) {
      if (before.types.get(s.name) !== "counter") continue;
      assert.ok(after.get(s.name, s.labels)! >= s.value, `${s.name} ${JSON.stringify(s.labels)}`);
    }
    assert.equal(after.get("dualsocks_relayed_bytes_total", { type: "C", direction: "up" }), 13);
    assert.equal(after.get("dualsocks_relays_total", { type: "C" }), 1);
    assert.equal(after.get("dualsocks_relays_active", { command: "connect", type: "C" }), 0);
    assert.equal(after.get("dualsocks_replies_total", { code: "0", reply: "succeeded" }), 1);
  } finally {
    await gw.shutdown({ grace: 0 });
    await dest.close();
  }
});
