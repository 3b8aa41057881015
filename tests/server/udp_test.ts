/**
 * The UDP association on its own, without a gateway around it: orderings a
 * session's signal hides (it rejects the hooks' promises when the session
 * ends), but that an embedder with hooks of its own can meet.
 */
import assert from "node:assert/strict";
import { Association, bindUdp } from "../../src/server/udp.ts";
import type { ResolvedAddress } from "../../src/server/resolver.ts";
import { encodeUdpDatagram } from "../../src/protocol/codec.ts";
import { withTimeout } from "../helpers.ts";

Deno.test("an association closed while a datagram waits on its name lookup opens no socket", async () => {
  const relay = await bindUdp(4, "127.0.0.1");
  const client = await bindUdp(4, "127.0.0.1");
  const looking = Promise.withResolvers<void>();
  const answer = Promise.withResolvers<ResolvedAddress[]>();
  const dropped = Promise.withResolvers<string>();
  const association = new Association(
    relay,
    { host: "127.0.0.1", port: client.address().port },
    { outbound: {} },
    {
      resolve: () => {
        looking.resolve();
        return answer.promise;
      },
      allowed: () => true,
      onDatagram: () => assert.fail("nothing may be sent after close"),
      onDrop: (reason) => dropped.resolve(reason),
    },
  );
  try {
    const datagram = encodeUdpDatagram(
      { frag: 0, address: { type: "domain", host: "peer.test" }, port: 9 },
      Uint8Array.of(1, 2, 3),
    );
    client.send(datagram, relay.address().port, "127.0.0.1");
    await withTimeout(looking.promise, 5_000, "name lookup");
    association.close();
    answer.resolve([{ address: "127.0.0.1", family: 4 }]);
    // The datagram is dropped, and no outbound socket is bound for it: the
    // test's resource sanitizer would report one left open.
    assert.equal(await withTimeout(dropped.promise, 5_000, "drop"), "association closed");
    assert.deepEqual(association.counters, { up: 0, down: 0, dropped: 1 });
  } finally {
    association.close();
    client.close();
  }
});
