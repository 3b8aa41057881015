/**
 * An abort that lands in the instant between the TCP connect to the first
 * gateway completing and the client starting its handshake. No client can
 * hit that instant on purpose, so this file loads its own copy of the client
 * module with a `Deno.connect` that really connects and then aborts.
 */
import assert from "node:assert/strict";
import { withTimeout } from "../helpers.ts";

type ConnectModule = typeof import("../../src/client/connect.ts");

let abortOnConnect: AbortController | undefined;
const realConnect = Deno.connect;
const racing = (async (options: Deno.ConnectOptions) => {
  const conn = await realConnect(options);
  abortOnConnect?.abort(new Error("cancelled by the application"));
  return conn;
}) as typeof Deno.connect;

// connect.ts keeps the Deno.connect it finds at load time: load a fresh copy
// while the racing one is in place, then put the real one back at once.
Deno.connect = racing;
let client: ConnectModule;
try {
  client = await import(new URL("../../src/client/connect.ts?abort-race", import.meta.url).href);
} finally {
  Deno.connect = realConnect;
}

Deno.test("an abort landing as the gateway connect completes closes the socket at once", async () => {
  // A gateway that accepts and never answers: without the abort, the
  // handshake would wait for ever.
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = listener.accept();
  abortOnConnect = new AbortController();
  try {
    const opening = client.connect("example.test:80", {
      via: `socks5://127.0.0.1:${listener.addr.port}`,
      signal: abortOnConnect.signal,
    });
    await assert.rejects(
      withTimeout(opening, 5_000, "connect after abort"),
      /cancelled by the application/,
    );
    // The gateway side sees the client's socket closed (EOF or reset), not an open one.
    using server = await accepted;
    const buf = new Uint8Array(64);
    const rest = (async () => {
      for (;;) if ((await server.read(buf)) === null) return "closed";
    })().catch(() => "closed");
    assert.equal(await withTimeout(rest, 5_000, "gateway-side EOF"), "closed");
  } finally {
    abortOnConnect = undefined;
  }
});
