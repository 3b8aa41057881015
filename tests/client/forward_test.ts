import assert from "node:assert/strict";
import { forward } from "../../src/client/mod.ts";
import { dante, deadline, exchangeHalfClose, freePort, microsocks, startEcho } from "./helpers.ts";

const T = 20_000;

async function curl(url: string): Promise<string> {
  const out = await new Deno.Command("curl", {
    args: ["--silent", "--show-error", "--noproxy", "*", "--max-time", "15", url],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const err = new TextDecoder().decode(out.stderr);
  assert.equal(out.code, 0, `curl ${url} failed: ${err}`);
  return new TextDecoder().decode(out.stdout);
}

Deno.test("forward: curl through the forwarder and Dante reaches an HTTP server by name", async () => {
  const ac = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
    (req) => new Response(`served ${new URL(req.url).pathname}`),
  );
  try {
    await using gw = await dante.start({ families: [6] });
    const errors: unknown[] = [];
    const fwd = forward({
      listen: ["127.0.0.1:0", "[::1]:0"],
      to: `localhost:${server.addr.port}`,
      via: [gw.url(6)],
      timeout: T,
      onError: (err) => errors.push(err),
    });
    try {
      assert.equal(fwd.addrs.length, 2);
      const [v4, v6] = fwd.addrs;
      assert.equal(await curl(`http://127.0.0.1:${v4.port}/four`), "served /four");
      assert.equal(await curl(`http://[::1]:${v6.port}/six`), "served /six");
      assert.deepEqual(errors, []);
    } finally {
      await deadline(fwd.shutdown(), T, "forward shutdown");
    }
    await fwd.finished;
  } finally {
    ac.abort();
    await server.finished;
  }
});

Deno.test("forward: half-close passes through a chain, both sides closed at the end", async () => {
  await using echo = startEcho("127.0.0.1");
  await using hop1 = await dante.start({ families: [6] });
  await using hop2 = await dante.start({ families: [4] });
  const ac = new AbortController();
  const fwd = forward({
    listen: ["127.0.0.1:0"],
    to: { host: "127.0.0.1", port: echo.addr.port },
    via: [hop1.url(6), hop2.url(4)],
    signal: ac.signal,
  });
  try {
    const payload = "x".repeat(200_000);
    const conns = await Promise.all(
      [0, 1, 2].map(() => Deno.connect({ hostname: "127.0.0.1", port: fwd.addrs[0].port })),
    );
    try {
      const replies = await deadline(
        Promise.all(conns.map((c, i) => exchangeHalfClose(c, `${i}:${payload}`))),
        T,
        "echo through forwarder",
      );
      replies.forEach((r, i) => assert.equal(r, `${i}:${payload}`));
    } finally {
      for (const c of conns) c.close();
    }
  } finally {
    ac.abort(); // the signal shuts it down
    await deadline(fwd.finished, T, "forward finished");
  }
});

Deno.test("forward: a failing upstream closes the accepted connection and is reported", async () => {
  await using gw = await microsocks.start({ families: [4] });
  const reported: unknown[] = [];
  let onReport: () => void = () => {};
  const wasReported = new Promise<void>((r) => onReport = r);
  await using fwd = forward({
    listen: ["127.0.0.1:0"],
    to: `127.0.0.1:${freePort()}`, // nothing listens there
    via: gw.url(4),
    onError: (err) => {
      reported.push(err);
      onReport();
    },
  });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: fwd.addrs[0].port });
  try {
    const n = await deadline(conn.read(new Uint8Array(16)).catch(() => null), T, "closed");
    assert.equal(n, null);
    await deadline(wasReported, T, "report");
    assert.match(String(reported[0]), /could not connect to 127\.0\.0\.1:\d+/);
  } finally {
    conn.close();
  }
});

Deno.test("forward: option errors", () => {
  assert.throws(
    () => forward({ listen: [], to: "a.test:1", via: "socks5://127.0.0.1:1" }),
    /at least one listen/,
  );
  assert.throws(
    () => forward({ listen: ["::1:0"], to: "a.test:1", via: "socks5://127.0.0.1:1" }),
    /expected listen addresses as "host:port"/,
  );
  assert.throws(
    () => forward({ listen: ["127.0.0.1:0"], to: "a.test", via: "socks5://127.0.0.1:1" }),
    /target/,
  );
});
