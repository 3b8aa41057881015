import assert from "node:assert/strict";
import { clientKey, LoginLockout } from "../../src/policy/lockout.ts";

function clock(start = 1_000_000) {
  const c = { now: start, fn: () => c.now };
  return c;
}

/** One attempt that fails: waits its slot (advancing the clock), then fails. */
function failOnce(l: LoginLockout, c: { now: number }, address: string) {
  const gate = l.begin(address);
  if (gate.refused) return gate;
  c.now += gate.wait;
  return { refused: false as const, wait: gate.wait, failure: l.fail(address) };
}

Deno.test("LoginLockout: growing delay, then a lockout, then it ends", () => {
  const c = clock();
  const l = new LoginLockout({
    baseDelay: 100,
    maxDelay: 1000,
    threshold: 6,
    lockout: 60_000,
    now: c.fn,
  });
  const waits: number[] = [];
  for (let i = 0; i < 6; i++) {
    const r = failOnce(l, c, "192.0.2.7");
    assert.equal(r.refused, false);
    if (!r.refused) waits.push(r.wait);
  }
  // No wait before the first failure, then doubling, capped at maxDelay.
  assert.deepEqual(waits, [0, 100, 200, 400, 800, 1000]);
  const locked = l.begin("192.0.2.7");
  assert.deepEqual(locked, { refused: "locked", until: c.now + 60_000 });
  assert.equal(l.lockedCount, 1);
  assert.equal(l.lockoutsTotal, 1);
  // Another address is not affected.
  assert.deepEqual(l.begin("192.0.2.8"), { refused: false, wait: 0 });
  // Failures while locked do not extend the lock or relock it.
  assert.equal(l.fail("192.0.2.7").justLocked, false);
  c.now += 59_999;
  assert.equal(l.begin("192.0.2.7").refused, "locked");
  c.now += 1;
  assert.deepEqual(l.begin("192.0.2.7"), { refused: false, wait: 0 }, "a fresh start");
  assert.equal(l.lockedCount, 0);
});

Deno.test("LoginLockout: the failure that locks says so once", () => {
  const c = clock();
  const l = new LoginLockout({ baseDelay: 0, threshold: 3, now: c.fn });
  const r = [1, 2, 3].map(() => l.fail("2001:db8::1"));
  assert.deepEqual(r.map((f) => [f.failures, f.locked, f.justLocked]), [
    [1, false, false],
    [2, false, false],
    [3, true, true],
  ]);
  assert.equal(r[2].key, "2001:db8::/64");
  assert.equal(l.fail("2001:db8::1").justLocked, false);
});

Deno.test("LoginLockout: a success resets; failures are forgotten after the window", () => {
  const c = clock();
  const l = new LoginLockout({ baseDelay: 100, threshold: 3, window: 10_000, now: c.fn });
  failOnce(l, c, "192.0.2.7");
  failOnce(l, c, "192.0.2.7");
  l.succeed("192.0.2.7");
  assert.deepEqual(l.begin("192.0.2.7"), { refused: false, wait: 0 });
  failOnce(l, c, "192.0.2.7");
  failOnce(l, c, "192.0.2.7");
  c.now += 10_000;
  assert.deepEqual(l.begin("192.0.2.7"), { refused: false, wait: 0 });
  assert.equal(l.fail("192.0.2.7").failures, 1, "counting starts again");
  assert.equal(l.snapshot().length, 1);
});

Deno.test("LoginLockout: parallel attempts are spaced too, and a flood is refused unchecked", () => {
  const c = clock();
  const l = new LoginLockout({ baseDelay: 100, maxDelay: 400, threshold: 100, now: c.fn });
  l.fail("192.0.2.7"); // one failure: attempts 100 ms apart
  const gates = Array.from({ length: 8 }, () => l.begin("192.0.2.7"));
  assert.deepEqual(
    gates.map((g) => g.refused ? g.refused : g.wait),
    [100, 200, 300, 400, "busy", "busy", "busy", "busy"],
  );
  // The flood did not push the slot beyond maxDelay for a later attempt.
  c.now += 500;
  assert.deepEqual(l.begin("192.0.2.7"), { refused: false, wait: 0 });
});

Deno.test("LoginLockout: IPv6 clients by /64 (configurable), IPv4-mapped as IPv4", () => {
  const c = clock();
  const l = new LoginLockout({ baseDelay: 0, threshold: 2, now: c.fn });
  l.fail("2001:db8:1:2::10");
  l.fail("2001:db8:1:2:ffff::99"); // the same /64
  assert.equal(l.begin("[2001:db8:1:2::77]").refused, "locked");
  assert.equal(l.begin("2001:db8:1:3::10").refused, false);
  l.fail("::ffff:192.0.2.9");
  l.fail("192.0.2.9");
  assert.equal(l.begin("192.0.2.9").refused, "locked");
  const byAddress = new LoginLockout({ baseDelay: 0, threshold: 2, ipv6Prefix: 128, now: c.fn });
  byAddress.fail("2001:db8:1:2::10");
  byAddress.fail("2001:db8:1:2::11");
  assert.equal(byAddress.begin("2001:db8:1:2::10").refused, false);
  assert.throws(() => new LoginLockout({ ipv6Prefix: 16 }), /expected an integer 32-128, found 16/);
  assert.throws(
    () => new LoginLockout({ threshold: -1 }),
    /lockout.threshold: expected a number >= 0/,
  );
});

Deno.test("clientKey", () => {
  assert.equal(clientKey("192.0.2.1", 64), "192.0.2.1");
  assert.equal(clientKey("[::ffff:192.0.2.1]", 64), "192.0.2.1");
  assert.equal(clientKey("2001:db8:1:2:3:4:5:6", 64), "2001:db8:1:2::/64");
  assert.equal(clientKey("2001:db8:0:0:3:4:5:6", 64), "2001:db8::/64");
  assert.equal(clientKey("2001:db8:1:2:3:4:5:6", 56), "2001:db8:1::/56");
  assert.equal(clientKey("2001:db8:1:2ff:3:4:5:6", 60), "2001:db8:1:2f0::/60");
  assert.equal(clientKey("2001:DB8::6", 128), "2001:db8::6");
  assert.equal(clientKey("not-an-ip", 64), "not-an-ip");
});

Deno.test("LoginLockout: memory stays bounded however many addresses try; locks survive", () => {
  const c = clock();
  const l = new LoginLockout({ baseDelay: 0, threshold: 3, maxEntries: 50, now: c.fn });
  for (let i = 0; i < 3; i++) l.fail("198.51.100.1"); // locked first
  for (let i = 0; i < 100_000; i++) {
    // A fresh IPv6 /64 each time: one failure each.
    l.fail(`2001:db8:${(i >> 16).toString(16)}:${(i & 0xffff).toString(16)}::1`);
    c.now += 1;
  }
  const snap = l.snapshot();
  assert.ok(snap.length <= 100, `kept ${snap.length}`);
  assert.equal(l.begin("198.51.100.1").refused, "locked", "the flood did not evict the lock");
  assert.deepEqual(snap[0], {
    client: "198.51.100.1",
    failures: 3,
    lastFailure: 1_000_000,
    lockedUntil: 1_000_000 + 15 * 60_000,
  });
  assert.equal(snap[1].lockedUntil, null);
  // Locks themselves are bounded too: the earliest is dropped.
  for (let i = 0; i < 60; i++) {
    for (let k = 0; k < 3; k++) l.fail(`203.0.113.${i}`);
  }
  assert.equal(l.lockedCount, 50);
  assert.equal(l.begin("198.51.100.1").refused, false);
  assert.equal(l.begin("203.0.113.59").refused, "locked");
});
