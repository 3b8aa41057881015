/**
 * Reload: `gateway.reload` and `POST /api/v1/reload`. New listeners, users,
 * rules, limits and timeouts apply to new sessions; established relays keep
 * flowing; a bad configuration is refused and the old one keeps running.
 */
import assert from "node:assert/strict";
import { type Config, parseConfig } from "../../src/config/config.ts";
import { optionsFromConfig } from "../../src/config/options.ts";
import { ListenError, serve } from "../../src/server/gateway.ts";
import { Reply } from "../../src/protocol/constants.ts";
import { echoServer, joinHostPort, recordingLogger, socksConnect } from "../helpers.ts";
import { assertProblem, call, echo, eof, refused, serveAdmin, until } from "./helpers.ts";

const addrText = (a: Deno.NetAddr) => joinHostPort(a.hostname, a.port);
/** A `Deno.connect` target. */
const tcp = (a: Deno.NetAddr) => ({ hostname: a.hostname, port: a.port });

Deno.test("reload: listeners are diffed by address; relays keep flowing", async () => {
  const dest = echoServer("127.0.0.1");
  const logger = recordingLogger();
  const gw = serve({ listen: ["127.0.0.1:0"], logger });
  try {
    const first = tcp(gw.addrs[0]);
    const { conn } = await socksConnect(first, "127.0.0.1", dest.addr.port);
    await echo(conn, "established");

    // The same list (port 0 as asked, or the real port) keeps the listener.
    await gw.reload({ listen: ["127.0.0.1:0"], logger });
    assert.deepEqual(gw.addrs.map(addrText), [joinHostPort(first.hostname, first.port)]);
    await gw.reload({ listen: [joinHostPort(first.hostname, first.port)], logger });
    assert.deepEqual(gw.addrs.map(addrText), [joinHostPort(first.hostname, first.port)]);

    // Add an IPv6 listener, then drop the IPv4 one.
    await gw.reload({ listen: [joinHostPort(first.hostname, first.port), "[::1]:0"], logger });
    assert.equal(gw.addrs.length, 2);
    const v6 = tcp(gw.addrs[1]);
    assert.equal(v6.hostname, "::1");
    const viaNew = await socksConnect(v6, "127.0.0.1", dest.addr.port);
    assert.equal(viaNew.reply?.reply, 0);
    await echo(viaNew.conn, "new listener");
    viaNew.conn.close();

    await gw.reload({ listen: ["[::1]:0"], logger });
    assert.deepEqual(gw.addrs.map(addrText), [joinHostPort(v6.hostname, v6.port)]);
    assert.ok(await refused(first), "the removed listener no longer accepts");
    await echo(conn, "still flowing after its listener went away");
    const logged = logger.records.find((r) =>
      r.message.startsWith("reloaded") &&
      r.properties.removed === joinHostPort(first.hostname, first.port)
    );
    assert.ok(logged, "the reload is logged with what was removed");
    conn.close();
  } finally {
    await gw.shutdown({ grace: 0 });
    await dest.close();
  }
});

Deno.test("reload: a listener that cannot be bound rejects it and changes nothing", async () => {
  const logger = recordingLogger();
  const gw = serve({ listen: ["127.0.0.1:0"], logger, maxSessions: 5 });
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const dest = echoServer("127.0.0.1");
  const held: Deno.Conn[] = [];
  // Each refused reload carries maxSessions: 1; none may slip in.
  const underOldLimit = async () => {
    for (let i = 0; i < 2; i++) {
      const { conn, reply } = await socksConnect(tcp(gw.addrs[0]), "127.0.0.1", dest.addr.port);
      held.push(conn);
      assert.equal(reply?.reply, 0, `session ${i + 1} of 2 at once, under the old limit of 5`);
    }
    for (const c of held.splice(0)) c.close();
    assert.equal(gw.stats.sessionsRejected, 0);
  };
  try {
    const before = gw.addrs.map(addrText);
    await assert.rejects(
      gw.reload({
        listen: ["[::1]:0", `127.0.0.1:${taken.addr.port}`],
        logger,
        maxSessions: 1,
      }),
      (e: unknown) =>
        e instanceof ListenError &&
        /cannot listen on 127\.0\.0\.1:\d+: address already in use/.test(e.message),
    );
    assert.deepEqual(gw.addrs.map(addrText), before);
    await underOldLimit();
    await assert.rejects(
      gw.reload({ listen: ["::1:80"], logger, maxSessions: 1 }),
      /expected HOST:PORT with an IP literal host/,
    );
    await underOldLimit();
    await assert.rejects(
      gw.reload({ rules: [{ action: "maybe" as "allow" }], logger, maxSessions: 1 }),
      /action/,
    );
    await underOldLimit();
    assert.deepEqual(gw.addrs.map(addrText), before);
    // The leak check of this test (resource sanitizer) proves the [::1] listener bound
    // for the failed reload was closed again.
  } finally {
    for (const c of held) c.close();
    taken.close();
    await gw.shutdown({ grace: 0 });
    await dest.close();
  }
});

Deno.test("reload: users, rules, limits and timeouts apply to new sessions only", async () => {
  const dest = echoServer("127.0.0.1");
  const logger = recordingLogger();
  const gw = serve({ listen: ["127.0.0.1:0"], logger, timeouts: { idle: 0 } });
  try {
    const addr = tcp(gw.addrs[0]);
    const old = await socksConnect(addr, "127.0.0.1", dest.addr.port);
    assert.equal(old.reply?.reply, 0);
    await echo(old.conn, "before");

    const users = [{ username: "bob", password: "pw" }];
    await gw.reload({
      listen: [joinHostPort(addr.hostname, addr.port)],
      logger,
      users,
      rules: [{ action: "deny", ports: [dest.addr.port], users: ["bob"] }, { action: "allow" }],
      timeouts: { idle: 150 },
      maxSessions: 3,
    });
    // New sessions must log in, and the rules apply to them.
    const anonymous = await socksConnect(addr, "127.0.0.1", dest.addr.port);
    assert.equal(anonymous.method, 0xff);
    anonymous.conn.close();
    const denied = await socksConnect(addr, "127.0.0.1", dest.addr.port, {
      auth: users[0],
    });
    assert.equal(denied.reply?.reply, Reply.NOT_ALLOWED);
    denied.conn.close();
    // A new relay gets the new idle timeout.
    const other = echoServer("127.0.0.1");
    try {
      const fresh = await socksConnect(addr, "127.0.0.1", other.addr.port, { auth: users[0] });
      assert.equal(fresh.reply?.reply, 0);
      assert.equal(await eof(fresh.conn), null, "the new idle timeout closed the new relay");
      fresh.conn.close();
    } finally {
      await other.close();
    }
    // The old relay, idle all along, kept its settings: no login, no idle timeout.
    await echo(old.conn, "after");
    // The limit: 3 sessions at most, the old relay being one.
    const a = await Deno.connect(addr);
    const b = await Deno.connect(addr);
    await until("two more sessions", () => gw.sessions().length === 3);
    const c = await Deno.connect(addr);
    assert.equal(await eof(c), null, "over the new limit: closed at once");
    for (const x of [a, b, c]) x.close();
    old.conn.close();
  } finally {
    await gw.shutdown({ grace: 0 });
    await dest.close();
  }
});

Deno.test("reload: refused once shutting down", async () => {
  const gw = serve({ listen: ["127.0.0.1:0"], logger: recordingLogger() });
  const stopping = gw.shutdown({ grace: 0 });
  await assert.rejects(gw.reload({ listen: ["127.0.0.1:0"] }), /shutting down/);
  await stopping;
});

Deno.test("reload through the API: new config applies, a bad one is refused with its error", async () => {
  const dest = echoServer("127.0.0.1");
  const logger = recordingLogger();
  const file = "gw.yaml";
  let yaml = `listen: ["127.0.0.1:0"]\n`;
  let config: Config = parseConfig(yaml, { file });
  const gw = serve({ ...optionsFromConfig(config), logger });
  const reload = async () => {
    const next = parseConfig(yaml, { file });
    await gw.reload({ ...optionsFromConfig(next), logger });
    config = next;
  };
  try {
    await using admin = serveAdmin(gw, { reload, config: () => config });
    const first = tcp(gw.addrs[0]);
    const { conn } = await socksConnect(first, "127.0.0.1", dest.addr.port);
    await echo(conn, "established");

    // A new listener appears and works; the removed one stops accepting.
    yaml = `listen: ["[::1]:0"]\nlimits: {max_sessions: 7}\n`;
    const ok = await call(`${admin.base}/api/v1/reload`, { method: "POST" });
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.json.reloaded, true);
    assert.equal(ok.json.listen.length, 1);
    assert.match(ok.json.listen[0], /^\[::1\]:\d+$/);
    const v6 = tcp(gw.addrs[0]);
    const viaNew = await socksConnect(v6, "127.0.0.1", dest.addr.port);
    assert.equal(viaNew.reply?.reply, 0);
    viaNew.conn.close();
    assert.ok(await refused(first));
    await echo(conn, "still flowing");
    assert.equal((await call(`${admin.base}/api/v1/config`)).json.limits.max_sessions, 7);

    // A bad file: refused with the ConfigError, position included; nothing changes.
    yaml = `listen: ["[::1]:0"]\nlimits:\n  max_sessions: many\n`;
    const bad = await call(`${admin.base}/api/v1/reload`, { method: "POST" });
    assertProblem(
      bad,
      422,
      /^reload rejected, the running configuration is kept: gw\.yaml:3:17: limits\.max_sessions: expected a positive integer, found "many"$/,
    );
    assert.equal(bad.json.name, "ConfigError");
    assert.equal(bad.json.line, 3);
    assert.equal(bad.json.path, "limits.max_sessions");
    // A listener that cannot be bound: refused too.
    const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    try {
      yaml = `listen: ["[::1]:0", "127.0.0.1:${taken.addr.port}"]\n`;
      const busy = await call(`${admin.base}/api/v1/reload`, { method: "POST" });
      assertProblem(busy, 422, /address already in use/);
      assert.equal(busy.json.name, "ListenError");
    } finally {
      taken.close();
    }
    // The old configuration keeps running.
    assert.deepEqual(gw.addrs.map(addrText), [joinHostPort(v6.hostname, v6.port)]);
    assert.equal((await call(`${admin.base}/api/v1/config`)).json.limits.max_sessions, 7);
    const still = await socksConnect(v6, "127.0.0.1", dest.addr.port);
    assert.equal(still.reply?.reply, 0);
    await echo(still.conn, "old config");
    still.conn.close();
    await echo(conn, "and the first relay too");
    conn.close();
  } finally {
    await gw.shutdown({ grace: 0 });
    await dest.close();
  }
});
