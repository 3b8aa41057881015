/**
 * Session internals that no client can time precisely enough to test
 * through the wire.
 */
import assert from "node:assert/strict";
import { Session, underConnectDeadline } from "../../src/server/session.ts";

Deno.test("a session cut before its connect starts resolves and dials nothing", async () => {
  using listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  using client = await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port });
  const accepted = await listener.accept();
  const s = new Session(1, accepted);
  // The operator's DELETE (or shutdown) lands while the request is already
  // buffered: nothing was pending for abort() to cancel.
  s.abort("closed by the operator");
  let started = false;
  await assert.rejects(
    underConnectDeadline(s, { connectTimeout: 10_000 }, () => {
      started = true;
      return Promise.resolve("dialed");
    }),
    /session ended before connecting: closed by the operator/,
  );
  assert.equal(started, false, "no resolving or dialing for a session that has ended");
  assert.equal(s.pending, undefined);
  assert.equal(s.connectDeadline, 0);
  // abort() closed the accepted socket: the client sees EOF.
  assert.equal(await client.read(new Uint8Array(1)), null);
});
