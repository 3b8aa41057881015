/**
 * Hashed credentials and brute-force lockout, with curl as the client. Only
 * loopback addresses (127.0.0.2 and 127.0.0.3 stand for two client hosts).
 */
import assert from "node:assert/strict";
import { serve } from "../../src/server/gateway.ts";
import { staticUsers } from "../../src/policy/auth.ts";
import { hashPassword } from "../../src/policy/password.ts";
import { createAdminHandler } from "../../src/admin/handler.ts";
import { gatewayAddr, recordingLogger, run } from "../helpers.ts";

const CLI = new URL("../../src/cli/hash_password.ts", import.meta.url).pathname;

/** `dualsocks hash-password` in a child process, the password on stdin. */
async function hashWithCli(password: string): Promise<string> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", CLI],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000),
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(new TextEncoder().encode(`${password}\n`));
  await w.close();
  const out = await child.output();
  const text = new TextDecoder().decode(out.stdout);
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return JSON.parse(/password_hash: ("[^"]+")/.exec(text)![1]);
}

function web() {
  return Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => new Response("hello through the gateway\n"),
  );
}

/** curl through the gateway as `user:password`, from the local address `from`. */
function curl(proxy: string, url: string, login: string, from = "127.0.0.1") {
  return run("curl", [
    "--silent",
    "--show-error",
    "--max-time",
    "20",
    "--interface",
    from,
    "--socks5-hostname",
    proxy,
    "--proxy-user",
    login,
    url,
  ], { timeoutMs: 30_000 });
}

Deno.test("a hash made by hash-password logs in with curl; a wrong password does not", async () => {
  const stored = await hashWithCli("correct horse");
  const server = web();
  const gw = serve({
    listen: ["127.0.0.1:0"],
    users: [{ username: "alice", passwordHash: stored }, { username: "bob", password: "clear" }],
    logger: recordingLogger(),
  });
  try {
    const proxy = `127.0.0.1:${gatewayAddr(gw, 4).port}`;
    const url = `http://127.0.0.1:${server.addr.port}/`;
    const ok = await curl(proxy, url, "alice:correct horse");
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, "hello through the gateway\n");
    const wrong = await curl(proxy, url, "alice:correct horsE");
    assert.notEqual(wrong.code, 0);
    assert.equal(wrong.stdout, "");
    const clear = await curl(proxy, url, "bob:clear");
    assert.equal(clear.code, 0, clear.stderr);
    assert.equal(gw.stats.authFailures, 1);
  } finally {
    await gw.shutdown({ grace: 0 });
    await server.shutdown();
  }
});

Deno.test("the gateway warns at startup about passwords in clear", async () => {
  const logger = recordingLogger();
  const gw = serve({
    listen: ["127.0.0.1:0"],
    users: [{ username: "bob", password: "clear" }, {
      username: "alice",
      passwordHash: await hashPassword("x", { ln: 10 }),
    }],
    logger,
  });
  await gw.shutdown({ grace: 0 });
  const warned = logger.records.filter((r) => r.message.includes("password in clear"));
  assert.equal(warned.length, 1);
  assert.equal(warned[0].properties.users, "bob");
});

Deno.test("50 wrong tries from one address lock it out, while another address logs in", async () => {
  const stored = await hashPassword("s3cret", { ln: 10 });
  const server = web();
  const logger = recordingLogger();
  const gw = serve({
    listen: ["127.0.0.1:0"],
    users: [{ username: "alice", passwordHash: stored }],
    safety: { lockout: { threshold: 10, baseDelay: 1, maxDelay: 8 } },
    logger,
  });
  try {
    const proxy = `127.0.0.1:${gatewayAddr(gw, 4).port}`;
    const url = `http://127.0.0.1:${server.addr.port}/`;
    for (let i = 0; i < 50; i++) {
      const r = await curl(proxy, url, `alice:guess${i}`, "127.0.0.2");
      assert.notEqual(r.code, 0, `try ${i} got in`);
    }
    // Locked: even the right password is answered like a wrong one.
    const locked = await curl(proxy, url, "alice:s3cret", "127.0.0.2");
    assert.notEqual(locked.code, 0, "the locked-out address got in");
    // Another address is not affected.
    const other = await curl(proxy, url, "alice:s3cret", "127.0.0.3");
    assert.equal(other.code, 0, other.stderr);
    assert.equal(other.stdout, "hello through the gateway\n");

    const safety = gw.safety!;
    assert.equal(safety.lockout!.lockoutsTotal, 1);
    assert.equal(safety.stats.lockedOutAttempts, 41, "40 tries and the right password, unchecked");
    assert.equal(
      logger.records.filter((r) => r.message.includes("locked out after")).length,
      1,
      "logged once",
    );
    // The admin API shows it, and the metrics count it.
    const admin = createAdminHandler(gw);
    const body = await (await admin(new Request("http://127.0.0.1/api/v1/lockouts"))).json();
    assert.equal(body.lockedNow, 1);
    assert.equal(body.clients[0].client, "127.0.0.2");
    assert.equal(body.clients[0].failures, 10);
    assert.match(body.clients[0].lockedUntil, /^\d{4}-\d\d-\d\dT/);
    const metrics = await (await admin(new Request("http://127.0.0.1/metrics"))).text();
    assert.match(metrics, /^dualsocks_lockouts_total 1$/m);
    assert.match(metrics, /^dualsocks_locked_clients 1$/m);
    assert.match(metrics, /^dualsocks_locked_out_attempts_total 41$/m);
  } finally {
    await gw.shutdown({ grace: 0 });
    await server.shutdown();
  }
});

Deno.test("a success resets the count: a typo now and then never locks anyone out", async () => {
  const server = web();
  const gw = serve({
    listen: ["127.0.0.1:0"],
    users: [{ username: "alice", password: "s3cret" }],
    safety: { lockout: { threshold: 3, baseDelay: 1, maxDelay: 4 } },
    logger: recordingLogger(),
  });
  try {
    const proxy = `127.0.0.1:${gatewayAddr(gw, 4).port}`;
    const url = `http://127.0.0.1:${server.addr.port}/`;
    for (let i = 0; i < 3; i++) {
      assert.notEqual((await curl(proxy, url, "alice:typo", "127.0.0.4")).code, 0);
      assert.notEqual((await curl(proxy, url, "alice:typo", "127.0.0.4")).code, 0);
      const ok = await curl(proxy, url, "alice:s3cret", "127.0.0.4");
      assert.equal(ok.code, 0, ok.stderr);
    }
    assert.equal(gw.safety!.lockout!.lockoutsTotal, 0);
  } finally {
    await gw.shutdown({ grace: 0 });
    await server.shutdown();
  }
});

Deno.test("an unknown user costs a scrypt of the same cost as a known one", async () => {
  // Not a timing assertion on the network: the authenticator alone, and a
  // margin of orders of magnitude (a clear comparison takes microseconds,
  // a scrypt at ln=14 tens of milliseconds).
  const auth = staticUsers([{
    username: "alice",
    passwordHash: await hashPassword("s3cret", { ln: 14 }),
  }]);
  const info = {
    client: { transport: "tcp" as const, hostname: "127.0.0.1", port: 1 },
    signal: new AbortController().signal,
  };
  assert.equal(await auth({ username: "mallory", password: "x" }, info), false); // the dummy is made
  const median = async (username: string) => {
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t = performance.now();
      assert.equal(await auth({ username, password: "wrong" }, info), false);
      times.push(performance.now() - t);
    }
    return times.sort((a, b) => a - b)[2];
  };
  const known = await median("alice");
  const unknown = await median("mallory");
  assert.ok(unknown > known / 3 && unknown < known * 3, `known ${known} ms, unknown ${unknown} ms`);
});
