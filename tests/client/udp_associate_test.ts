import assert from "node:assert/strict";
import { createSocket } from "node:dgram";
import { FakeDns, udpAssociate } from "../../src/client/mod.ts";
import { dante, deadline } from "./helpers.ts";

const T = 20_000;

/** A UDP echo server on 127.0.0.1 (node:dgram: Deno.listenDatagram is unstable). */
async function startUdpEcho() {
  const socket = createSocket("udp4");
  socket.on("message", (msg, rinfo) => socket.send(msg, rinfo.port, rinfo.address));
  await new Promise<void>((r) => socket.bind(0, "127.0.0.1", r));
  return {
    port: socket.address().port,
    [Symbol.asyncDispose]: () => new Promise<void>((r) => socket.close(() => r())),
  };
}

Deno.test("udpAssociate through Dante: IPv6 to the relay, IPv4 to the destination, by literal and name", async () => {
  await using echo = await startUdpEcho();
  await using gw = await dante.start({ families: [6] });
  const fakeDns = new FakeDns();
  await using udp = await udpAssociate({ via: gw.url(6), timeout: T, fakeDns });
  assert.equal(udp.localAddr.transport, "udp");
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  const targets = [
    `127.0.0.1:${echo.port}`,
    `localhost:${echo.port}`,
    `[${fakeDns.lookup("localhost", 6)}]:${echo.port}`,
  ];
  for (const to of targets) {
    await udp.send(encoder.encode(`ping ${to}`), to);
    const { data, from } = await deadline(udp.receive(), T, `datagram from ${to}`);
    assert.equal(decoder.decode(data), `ping ${to}`);
    assert.equal(from.port, echo.port);
  }
  udp.close();
  await deadline(udp.closed, T, "closed");
  await assert.rejects(udp.receive(), /closed/);
});
