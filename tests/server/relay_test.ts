/**
 * The byte relay on real loopback sockets: bytes and FIN both ways,
 * failures, and bandwidth limits (a limited download runs at its configured
 * rate while an unlimited one beside it is not slowed).
 */

import assert from "node:assert/strict";
import { relay, type RelayLimits, type RelayStats } from "../../src/server/relay.ts";
import type { RelayConn } from "../../src/server/dialer.ts";
import { TokenBucket } from "../../src/policy/bandwidth.ts";

const CHUNK = new Uint8Array(64 * 1024).fill(7);

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
}

/** Reads to EOF; returns the byte count and when the first and last bytes came. */
async function drain(conn: Deno.Conn): Promise<{ bytes: number; first: number; last: number }> {
  const buf = new Uint8Array(256 * 1024);
  let bytes = 0;
  let first = 0;
  let last = 0;
  for (;;) {
    const n = await conn.read(buf);
    if (n === null) return { bytes, first, last };
    last = performance.now();
    if (bytes === 0) first = last;
    bytes += n;
  }
}

/**
 * A relay between a client and a destination that sends `size` bytes and
 * closes, on loopback: `client` is the test's end, `done` the relay's result.
 * The client half-closes at once unless `wrapClient` stands between the relay
 * and its client-side socket.
 */
async function download(
  size: number,
  limits?: RelayLimits,
  options: { wrapClient?: (conn: Deno.TcpConn) => RelayConn } = {},
) {
  const dest = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const front = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const served = dest.accept().then(async (conn) => {
    try {
      for (let sent = 0; sent < size; sent += CHUNK.length) {
        await writeAll(conn, CHUNK.subarray(0, Math.min(CHUNK.length, size - sent)));
      }
    } finally {
      conn.close();
    }
  });
  const client = await Deno.connect({ hostname: "127.0.0.1", port: front.addr.port });
  // It only downloads: the upload ends at once (unless the test breaks it).
  if (!options.wrapClient) await client.closeWrite();
  const accepted = await front.accept();
  const inner = options.wrapClient?.(accepted) ?? accepted;
  const target = await Deno.connect({ hostname: "127.0.0.1", port: dest.addr.port });
  const stats: RelayStats = { bytesUp: 0, bytesDown: 0, active: false };
  const failed: string[] = [];
  const started = performance.now();
  const done = relay(inner, target, stats, (why) => {
    failed.push(why);
    inner.close();
    target.close();
  }, limits).finally(() => {
    if (!failed.length) {
      inner.close();
      target.close();
    }
  });
  const close = async () => {
    client.close();
    await Promise.allSettled([done, served]);
    dest.close();
    front.close();
  };
  return { client, done, served, stats, failed, started, close };
}

Deno.test("relay: bytes and FIN go both ways, and the stats count them", async () => {
  const dest = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const front = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  // The destination echoes until EOF, then closes.
  const echoed = dest.accept().then(async (conn) => {
    const buf = new Uint8Array(4096);
    for (let n; (n = await conn.read(buf)) !== null;) await writeAll(conn, buf.subarray(0, n));
    conn.close();
  });
  const client = await Deno.connect({ hostname: "127.0.0.1", port: front.addr.port });
  const inner = await front.accept();
  const target = await Deno.connect({ hostname: "127.0.0.1", port: dest.addr.port });
  const stats: RelayStats = { bytesUp: 0, bytesDown: 0, active: false };
  // Like a session, the owner closes both sockets when the relay is done.
  const done = relay(inner, target, stats, () => assert.fail("the relay failed")).finally(() => {
    inner.close();
    target.close();
  });
  const payload = new Uint8Array(300_000).map((_, i) => i & 255);
  const reading = drain(client);
  await writeAll(client, payload);
  await client.closeWrite();
  const got = await reading;
  assert.equal(await done, "done");
  client.close();
  await echoed;
  dest.close();
  front.close();
  assert.equal(got.bytes, payload.length);
  assert.deepEqual([stats.bytesUp, stats.bytesDown, stats.active], [300_000, 300_000, true]);
});

Deno.test("relay: a limited download runs at its rate; an unlimited one beside it is not slowed", async () => {
  const rate = 2 * 1024 * 1024; // bytes a second
  const burst = 64 * 1024;
  const size = 5 * 1024 * 1024; // about 2.5 s at the limit
  const limited = await download(size, { down: [new TokenBucket({ rate, burst })] });
  const free = await download(64 * 1024 * 1024);
  try {
    const [a, b] = await Promise.all([drain(limited.client), drain(free.client)]);
    assert.equal(await limited.done, "done");
    assert.equal(await free.done, "done");
    assert.deepEqual([a.bytes, b.bytes], [size, 64 * 1024 * 1024]);
    // The burst went at once; the rest was paced at `rate`.
    const limitedRate = (a.bytes - burst) / ((a.last - limited.started) / 1000);
    assert.ok(
      Math.abs(limitedRate - rate) <= rate * 0.1,
      `expected the limited download within 10% of ${rate} B/s, found ${
        limitedRate.toFixed(0)
      } B/s`,
    );
    // Unlimited, beside it: many times the limit (loopback moves GB/s).
    const freeRate = b.bytes / ((b.last - free.started) / 1000);
    assert.ok(
      freeRate > rate * 8,
      `expected the unlimited download well above ${rate} B/s, found ${freeRate.toFixed(0)} B/s`,
    );
  } finally {
    await limited.close();
    await free.close();
  }
});

Deno.test("relay: sessions that share a bucket share its rate", async () => {
  const rate = 2 * 1024 * 1024;
  const burst = 64 * 1024;
  const size = 3 * 1024 * 1024; // 6 MiB in all, about 3 s
  const user = new TokenBucket({ rate, burst });
  // Each also has its own, looser per-client bucket: the shared one is the slower.
  const one = await download(size, { down: [user, new TokenBucket({ rate: rate * 4 })] });
  const two = await download(size, { down: [new TokenBucket({ rate: rate * 4 }), user] });
  try {
    const [a, b] = await Promise.all([drain(one.client), drain(two.client)]);
    assert.deepEqual([a.bytes, b.bytes], [size, size]);
    const elapsed = (Math.max(a.last, b.last) - Math.min(one.started, two.started)) / 1000;
    const together = (a.bytes + b.bytes - burst) / elapsed;
    assert.ok(
      Math.abs(together - rate) <= rate * 0.1,
      `expected the two downloads together within 10% of ${rate} B/s, found ${
        together.toFixed(0)
      } B/s`,
    );
  } finally {
    await one.close();
    await two.close();
  }
});

Deno.test("relay: an upload limit holds the upload and leaves the download alone", async () => {
  const rate = 512 * 1024;
  const dest = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const front = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  // The destination counts what it gets and then sends 8 MiB back.
  const served = dest.accept().then(async (conn) => {
    const got = await drain(conn);
    for (let i = 0; i < 128; i++) await writeAll(conn, CHUNK);
    conn.close();
    return got;
  });
  const client = await Deno.connect({ hostname: "127.0.0.1", port: front.addr.port });
  const inner = await front.accept();
  const target = await Deno.connect({ hostname: "127.0.0.1", port: dest.addr.port });
  const stats: RelayStats = { bytesUp: 0, bytesDown: 0, active: false };
  const bucket = new TokenBucket({ rate, burst: 16 * 1024 });
  const started = performance.now();
  const done = relay(inner, target, stats, () => assert.fail("the relay failed"), { up: [bucket] })
    .finally(() => {
      inner.close();
      target.close();
    });
  const reading = drain(client);
  await writeAll(client, new Uint8Array(1024 * 1024));
  await client.closeWrite();
  const up = await served;
  const down = await reading;
  assert.equal(await done, "done");
  client.close();
  dest.close();
  front.close();
  assert.equal(up.bytes, 1024 * 1024);
  const upRate = (up.bytes - 16 * 1024) / ((up.last - started) / 1000);
  assert.ok(
    Math.abs(upRate - rate) <= rate * 0.1,
    `expected the upload within 10% of ${rate} B/s, found ${upRate.toFixed(0)} B/s`,
  );
  assert.equal(down.bytes, 8 * 1024 * 1024);
  const downRate = down.bytes / ((down.last - down.first) / 1000);
  assert.ok(downRate > rate * 8, `expected an unlimited download, found ${downRate} B/s`);
  // A limited direction keeps its buffers within the burst: 16 KiB chunks at most.
  assert.equal(bucket.burst, 16 * 1024);
});

Deno.test("relay: a failure ends a direction that waits for bandwidth, and leaves no timer", async () => {
  // 1 byte a second after a 1 KiB burst: the second chunk would wait for minutes.
  let breakUpload!: (error: Error) => void;
  const broken = new Promise<never>((_, reject) => (breakUpload = reject));
  const t = await download(128 * 1024, {
    down: [new TokenBucket({ rate: 1, burst: 1024 })],
  }, {
    // The client's socket, whose reads fail when the test says so (as on a reset).
    wrapClient: (conn) => ({
      read: (p) => Promise.race([conn.read(p), broken]),
      write: (p) => conn.write(p),
      closeWrite: () => conn.closeWrite(),
      close: () => conn.close(),
      localAddr: conn.localAddr,
      remoteAddr: conn.remoteAddr,
    }),
  });
  assert.equal((await t.client.read(new Uint8Array(4096)))! > 0, true); // the burst came
  breakUpload(new Deno.errors.ConnectionReset("injected reset"));
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<string>((resolve) => {
    timer = setTimeout(() => resolve("still waiting after 30 s"), 30_000);
  });
  const reason = await Promise.race([t.done, deadline]);
  clearTimeout(timer);
  assert.equal(reason, "ConnectionReset: injected reset");
  assert.deepEqual(t.failed, ["ConnectionReset: injected reset"]);
  await t.close();
  // Deno's test sanitizer also fails this test if the bandwidth timer were left pending.
});
