import assert from "node:assert/strict";
import { serve } from "../../src/server/gateway.ts";
import { parseConfig } from "../../src/config/config.ts";
import { optionsFromConfig } from "../../src/config/options.ts";
import { gatewayAddr, recordingLogger, socksConnect, startServer, writeAll } from "../helpers.ts";

const SIZE = 3 * 1024 * 1024;
const RATE = 1024 * 1024; // bytes a second
const BURST = 64 * 1024;

/** Downloads SIZE bytes through the gateway as `user`; resolves to bytes a second after the burst. */
async function download(
  proxy: { hostname: string; port: number },
  port: number,
  auth?: { username: string; password: string },
): Promise<number> {
  const { conn, reply } = await socksConnect(proxy, "127.0.0.1", port, { auth });
  assert.equal(reply?.reply, 0);
  const buf = new Uint8Array(64 * 1024);
  let got = 0;
  let started = 0;
  let fromStart = 0;
  while (got < SIZE) {
    const n = await conn.read(buf);
    if (n === null) break;
    got += n;
    if (started === 0 && got >= BURST) {
      started = performance.now();
      fromStart = got;
    }
  }
  const seconds = (performance.now() - started) / 1000;
  conn.close();
  assert.equal(got, SIZE);
  return (got - fromStart) / seconds;
}

Deno.test("bandwidth: a limited user's download runs at its rate; an unlimited gateway beside it does not", async () => {
  const blob = new Uint8Array(SIZE).fill(7);
  await using source = startServer("127.0.0.1", async (conn) => {
    await writeAll(conn, blob);
    conn.closeWrite();
    await conn.read(new Uint8Array(1)).catch(() => null);
  });
  const users = [{ username: "alice", password: "s3cret-pass" }];
  const limited = serve({
    listen: ["127.0.0.1:0"],
    users,
    bandwidth: { perUser: { rate: RATE, burst: BURST } },
    logger: recordingLogger(),
  });
  const open = serve({ listen: ["127.0.0.1:0"], users, logger: recordingLogger() });
  try {
    const auth = users[0];
    const [slow, fast] = await Promise.all([
      download(gatewayAddr(limited, 4), source.addr.port, auth),
      download(gatewayAddr(open, 4), source.addr.port, auth),
    ]);
    assert.ok(
      Math.abs(slow - RATE) / RATE <= 0.1,
      `limited download ran at ${Math.round(slow)} B/s, expected ${RATE} B/s within 10%`,
    );
    assert.ok(fast > 4 * RATE, `the unlimited download ran at only ${Math.round(fast)} B/s`);
  } finally {
    await limited.shutdown({ grace: 0 });
    await open.shutdown({ grace: 0 });
  }
});

Deno.test("bandwidth: limits.bandwidth in the file reaches the gateway; bad values are named", () => {
  const config = parseConfig(
    "limits:\n  bandwidth:\n    per_client: { rate: 1000000, burst: 65536 }\n    per_user: { rate: 500000 }\n",
    { file: "gw.yaml" },
  );
  assert.deepEqual(optionsFromConfig(config).bandwidth, {
    perClient: { rate: 1_000_000, burst: 65536 },
    perUser: { rate: 500_000 },
  });
  assert.throws(
    () => parseConfig("limits:\n  bandwidth:\n    per_user: { rate: 0 }\n", { file: "gw.yaml" }),
    /gw\.yaml:3:\d+: limits\.bandwidth\.per_user\.rate: expected a number above 0/,
  );
  assert.throws(
    () => parseConfig("limits:\n  bandwidth:\n    per_user: { burst: 10 }\n", { file: "gw.yaml" }),
    /limits\.bandwidth\.per_user\.rate: required key is missing/,
  );
});
