import assert from "node:assert/strict";
import { BandwidthBuckets, takeAll, TokenBucket } from "../../src/policy/bandwidth.ts";

Deno.test("bandwidth: a full bucket lets the burst through, then waits rate-long for the rest", () => {
  const b = new TokenBucket({ rate: 1000, burst: 500 }, 0);
  assert.equal(b.take(500, 0), 0);
  assert.equal(b.take(250, 0), 250); // 250 bytes of debt at 1000 B/s
  assert.equal(b.available(0), -250);
  // Time refills the debt: at 250 ms it is paid, at 1 s it is the burst again (capped).
  assert.equal(b.available(250), 0);
  assert.equal(b.available(10_000), 500);
});

Deno.test("bandwidth: the long-run rate is the configured rate whatever the chunk sizes", () => {
  for (const chunk of [1, 100, 1024, 70_000, 300_000]) {
    const rate = 100_000;
    const b = new TokenBucket({ rate, burst: 10_000 }, 0);
    // A sender that always waits as long as it is told.
    let now = 0;
    let sent = 0;
    while (sent < 2_000_000) {
      now += b.take(chunk, now);
      sent += chunk;
    }
    // The last chunk went out at `now`: everything beyond the burst was paced.
    const expectedMs = ((sent - 10_000) * 1000) / rate;
    assert.ok(
      Math.abs(now - expectedMs) <= 1,
      `chunk ${chunk}: expected the last send near ${expectedMs} ms, found ${now} ms`,
    );
  }
});

Deno.test("bandwidth: a shared bucket queues its users behind each other", () => {
  const b = new TokenBucket({ rate: 1000, burst: 1000 }, 0);
  assert.equal(b.take(1000, 0), 0);
  assert.equal(b.take(500, 0), 500);
  assert.equal(b.take(500, 0), 1000); // the second session waits for the first
});

Deno.test("bandwidth: takeAll takes from every bucket and waits for the slowest", () => {
  const user = new TokenBucket({ rate: 1000, burst: 1000 }, 0);
  const client = new TokenBucket({ rate: 500, burst: 500 }, 0);
  assert.equal(takeAll([user, client], 1000, 0), 1000);
  assert.equal(user.available(0), 0);
  assert.equal(client.available(0), -500);
  assert.equal(takeAll([], 1000, 0), 0);
});

Deno.test("bandwidth: a clock that goes back refills nothing and does not move the clock", () => {
  const b = new TokenBucket({ rate: 1000, burst: 100 }, 1000);
  b.take(100, 1000);
  assert.equal(b.available(500), 0);
  assert.equal(b.available(1050), 50);
});

Deno.test("bandwidth: the default burst and the errors say what was expected", () => {
  assert.equal(new TokenBucket({ rate: 1000 }, 0).burst, 64 * 1024);
  assert.equal(new TokenBucket({ rate: 10_000_000 }, 0).burst, 1_000_000);
  assert.throws(
    () => new TokenBucket({ rate: 0 }, 0),
    /rate: expected bytes per second above 0, found 0/,
  );
  assert.throws(
    () => new TokenBucket({ rate: NaN }, 0),
    /expected bytes per second above 0, found NaN/,
  );
  assert.throws(
    () => new TokenBucket({ rate: 10, burst: 0 }, 0),
    /burst: expected at least 1 byte, found 0/,
  );
});

Deno.test("bandwidth: BandwidthBuckets shares a key's bucket and forgets it with its last session", () => {
  const limits: Record<string, { rate: number }> = { alice: { rate: 1000 } };
  const buckets = new BandwidthBuckets((key) => limits[key]);
  assert.equal(buckets.acquire("bob", 0), null);
  const a1 = buckets.acquire("alice", 0)!;
  const a2 = buckets.acquire("alice", 0)!;
  assert.equal(a1.bucket, a2.bucket);
  assert.equal(buckets.size, 1);
  a1.release();
  a1.release(); // twice is once
  assert.equal(buckets.size, 1);
  a2.release();
  assert.equal(buckets.size, 0);
  assert.notEqual(buckets.acquire("alice", 0)!.bucket, a1.bucket);
});
