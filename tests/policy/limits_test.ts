import assert from "node:assert/strict";
import { SessionLimiter } from "../../src/policy/limits.ts";

Deno.test("SessionLimiter: concurrent sessions per key, released on end", () => {
  const l = new SessionLimiter({
    what: "client",
    setting: "limits.per_client",
    limit: { sessions: 2 },
  });
  assert.equal(l.active, true);
  assert.equal(l.admit("192.0.2.1"), null);
  assert.equal(l.admit("192.0.2.1"), null);
  assert.equal(
    l.admit("192.0.2.1"),
    "client 192.0.2.1: expected at most 2 open sessions (limits.per_client.sessions), found 2 open",
  );
  assert.equal(l.open("192.0.2.1"), 2, "a refusal is not counted");
  assert.equal(l.admit("192.0.2.2"), null, "other keys are not affected");
  l.release("192.0.2.1");
  assert.equal(l.admit("192.0.2.1"), null);
  l.release("192.0.2.1");
  l.release("192.0.2.1");
  l.release("192.0.2.1"); // one too many: never below zero
  assert.equal(l.open("192.0.2.1"), 0);
  l.release("never-seen");
});

Deno.test("SessionLimiter: new sessions per second, a token bucket with a burst", () => {
  let now = 1_000_000;
  const l = new SessionLimiter({
    what: "user",
    setting: "limits.per_user",
    limit: { rate: 2, burst: 3 },
    now: () => now,
  });
  const admitted = () => {
    let n = 0;
    while (l.admit("alice") === null) {
      l.release("alice");
      if (++n > 100) break;
    }
    return n;
  };
  assert.equal(admitted(), 3, "the burst");
  assert.match(
    l.admit("alice")!,
    /^user alice: expected at most 2 new sessions a second \(limits.per_user.rate, burst 3\)/,
  );
  now += 500; // one token back
  assert.equal(admitted(), 1);
  now += 10_000; // never more than the burst
  assert.equal(admitted(), 3);
  // burst defaults to the rate (at least 1).
  const m = new SessionLimiter({
    what: "user",
    setting: "s",
    limit: { rate: 0.5 },
    now: () => now,
  });
  assert.equal(m.admit("bob"), null);
  assert.notEqual(m.admit("bob"), null);
  now += 2000;
  assert.equal(m.admit("bob"), null);
});

Deno.test("SessionLimiter: per-key limits replace the default", () => {
  const l = new SessionLimiter({
    what: "user",
    setting: "limits.per_user",
    limit: { sessions: 1 },
    limitFor: (user) => user === "batch" ? { sessions: 3 } : undefined,
  });
  assert.equal(l.admit("alice"), null);
  assert.notEqual(l.admit("alice"), null);
  for (let i = 0; i < 3; i++) assert.equal(l.admit("batch"), null);
  assert.notEqual(l.admit("batch"), null);
});

Deno.test("SessionLimiter: no limits, no refusals; bad limits refused", () => {
  const l = new SessionLimiter({ what: "client", setting: "s", limit: {} });
  assert.equal(l.active, false);
  for (let i = 0; i < 1000; i++) assert.equal(l.admit("k"), null);
  assert.throws(
    () => new SessionLimiter({ what: "c", setting: "limits.per_client", limit: { rate: -1 } }),
    /limits.per_client.rate: expected a number >= 0, found -1/,
  );
});

Deno.test("SessionLimiter: memory stays bounded, open sessions are kept", () => {
  let now = 0;
  const l = new SessionLimiter({
    what: "client",
    setting: "s",
    limit: { sessions: 1, rate: 1 },
    maxKeys: 100,
    now: () => now,
  });
  assert.equal(l.admit("holder"), null); // stays open throughout
  for (let i = 0; i < 100_000; i++) {
    const key = `k${i}`;
    assert.equal(l.admit(key), null);
    l.release(key);
    now++;
  }
  assert.ok(l.size <= 100, `kept ${l.size} keys`);
  assert.equal(l.open("holder"), 1, "the key with an open session survived eviction");
  assert.notEqual(l.admit("holder"), null);
});
