import assert from "node:assert/strict";
import { raceConnection } from "../../src/server/resolver.ts";
import { withTimeout } from "../helpers.ts";

Deno.test("raceConnection: a connection that arrives after the abort is closed", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const release = Promise.withResolvers<void>();
  // A connect that completes only after the session has given up on it
  // (a routed CONNECT's last handshake step, a dialer that ignores its signal).
  const opening = release.promise.then(() =>
    Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port })
  );
  const controller = new AbortController();
  const racing = raceConnection(opening, controller.signal);
  controller.abort(new Error("connect timeout"));
  await assert.rejects(racing, /connect timeout/);
  release.resolve();
  // The late connection is closed: its peer reads EOF.
  using peer = await listener.accept();
  const read = peer.read(new Uint8Array(1));
  assert.equal(await withTimeout(read, 5_000, "EOF from the late connection"), null);
});

Deno.test("raceConnection: the connection is handed over untouched when it wins", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const controller = new AbortController();
  using conn = await raceConnection(
    Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }),
    controller.signal,
  );
  controller.abort(); // too late to matter
  using peer = await listener.accept();
  await conn.write(Uint8Array.of(7));
  const buf = new Uint8Array(1);
  assert.equal(await withTimeout(peer.read(buf), 5_000, "byte"), 1);
  assert.equal(buf[0], 7);
});
