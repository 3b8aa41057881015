/**
 * BIND across families with no `outbound` configured: the gateway listens
 * in the peer's family at the address it would use toward the peer, not at
 * the client's (other-family) address. On loopback, and in a namespace with
 * documentation addresses only for the interface-table choice.
 */
import assert from "node:assert/strict";
import { serve, type ServeOptions } from "../../src/server/gateway.ts";
import { ResolveError } from "../../src/server/errors.ts";
import { bindListen, routeLocalAddress } from "../../src/server/bind.ts";
import { BufferedReader } from "../../src/io/buffered_reader.ts";
import { decodeReply } from "../../src/protocol/codec.ts";
import { decodeSocks4Reply, encodeSocks4Request, Socks4Reply } from "../../src/protocol/socks4.ts";
import {
  gatewayAddr,
  READ_MS,
  readAll,
  recordingLogger,
  run,
  socksConnect,
  withTimeout,
  writeAll,
} from "../helpers.ts";

const resolver: ServeOptions["resolver"] = (name) =>
  name === "v6only.test"
    ? Promise.resolve([{ address: "::1", family: 6 }])
    : Promise.reject(new ResolveError(name, "no such name"));

function gateway() {
  const logger = recordingLogger();
  const gw = serve({ listen: ["127.0.0.1:0", "[::1]:0"], logger, resolver });
  return { gw, logger, v4: gatewayAddr(gw, 4), v6: gatewayAddr(gw, 6) };
}

/** The peer connects, says hello, and the client must receive it through the relay. */
async function peerSaysHello(hostname: string, port: number, client: Deno.Conn) {
  const peer = await Deno.connect({ hostname, port });
  try {
    await writeAll(peer, new TextEncoder().encode(`hello from ${hostname}`));
    await peer.closeWrite();
    return { peer, text: () => readAll(client).then((b) => new TextDecoder().decode(b)) };
  } catch (error) {
    peer.close();
    throw error;
  }
}

for (
  const [clientFamily, peerHost, type] of [
    [4, "::1", "B"],
    [6, "127.0.0.1", "C"],
  ] as const
) {
  Deno.test(`BIND: an IPv${clientFamily} client expecting peer ${peerHost} (type ${type})`, async () => {
    const { gw, logger, v4, v6 } = gateway();
    try {
      const { conn, reply } = await socksConnect(clientFamily === 4 ? v4 : v6, peerHost, 0, {
        command: 2,
      });
      try {
        assert.equal(reply?.reply, 0, "the first reply grants");
        // Where the peer must connect: the peer's family, the loopback it would use.
        assert.equal(reply?.address.host, peerHost);
        const { peer, text } = await peerSaysHello(peerHost, reply!.port, conn);
        const second = await withTimeout(
          new BufferedReader(conn).decode(decodeReply, "second reply"),
          READ_MS,
          "second reply",
        );
        assert.deepEqual([second.reply, second.address.host, second.port], [
          0,
          peerHost,
          peer.localAddr.port,
        ]);
        assert.equal(await text(), `hello from ${peerHost}`);
        peer.close();
      } finally {
        conn.close();
      }
      const line = await logger.waitFor((p) => p.command === "bind");
      assert.equal(line.type, type);
    } finally {
      await gw.shutdown({ grace: 0 });
    }
  });
}

Deno.test("BIND: SOCKS4a from IPv4 toward an IPv6 peer; the replies say 0.0.0.0 and the ports", async () => {
  const { gw, logger, v4 } = gateway();
  try {
    const conn = await Deno.connect(v4);
    try {
      const reader = new BufferedReader(conn);
      await writeAll(
        conn,
        encodeSocks4Request({ command: 2, hostname: "v6only.test", port: 0, userId: "" }),
      );
      const first = await withTimeout(reader.decode(decodeSocks4Reply, "reply"), READ_MS, "reply");
      assert.equal(first.reply, Socks4Reply.GRANTED);
      // SOCKS4 cannot carry the IPv6 listener: 0.0.0.0 means "the server's address".
      assert.equal(first.hostname, "0.0.0.0");
      const { peer, text } = await peerSaysHello("::1", first.port, conn);
      const second = await withTimeout(reader.decode(decodeSocks4Reply, "second"), READ_MS, "2nd");
      assert.deepEqual(second, {
        reply: Socks4Reply.GRANTED,
        hostname: "0.0.0.0",
        port: peer.localAddr.port,
      });
      assert.equal(await text(), "hello from ::1");
      peer.close();
    } finally {
      conn.close();
    }
    const line = await logger.waitFor((p) => p.command === "bind");
    assert.equal(line.type, "B");
    assert.equal(line.protocol, "socks4");
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

Deno.test("BIND: the loopback choice; the client's address of the peer's family still comes first", () => {
  assert.equal(routeLocalAddress({ address: "::1", family: 6 }), "::1");
  assert.equal(routeLocalAddress({ address: "127.9.9.9", family: 4 }), "127.0.0.1");
  assert.equal(routeLocalAddress({ address: "::ffff:127.0.0.2", family: 4 }), "127.0.0.1");
  assert.equal(routeLocalAddress({ address: "not-an-ip", family: 4 }), undefined);
  // The client's address of the peer's family still comes first.
  const l = bindListen({
    peer: { address: "127.0.0.1", family: 4 },
    controlLocal: { host: "127.0.0.1", family: 4 },
    outbound: {},
  });
  assert.equal(l.addr.hostname, "127.0.0.1");
  l.close();
});

const PROBE = `
import { bindListen, routeLocalAddress } from ${
  JSON.stringify(new URL("../../src/server/bind.ts", import.meta.url).href)
};
const out = {};
for (const [address, family] of [["198.51.100.1", 4], ["203.0.113.9", 4], ["2001:db8::1", 6], ["2001:db8:ffff::1", 6], ["::", 6]]) {
  out[address] = routeLocalAddress({ address, family }) ?? null;
}
const l = bindListen({ peer: { address: "2001:db8::1", family: 6 }, controlLocal: { host: "198.51.100.10", family: 4 }, outbound: {} });
out.listened = l.addr.hostname;
l.close();
console.log(JSON.stringify(out));
`;

Deno.test("BIND: in a namespace with documentation addresses, the interface that holds the peer", async () => {
  // A network namespace with only loopback (plus documentation addresses on it): nothing leaves.
  const script = "ip link set lo up && ip addr add 198.51.100.10/24 dev lo && " +
    "ip -6 addr add 2001:db8::10/64 dev lo nodad && " +
    `exec "${Deno.execPath()}" eval --quiet "$PROBE"`;
  const out = await run("unshare", ["--net", "--map-root-user", "sh", "-c", script], {
    env: { PROBE, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
  });
  assert.equal(out.code, 0, out.stderr);
  assert.deepEqual(JSON.parse(out.stdout), {
    "198.51.100.1": "198.51.100.10", // on-link
    "203.0.113.9": "198.51.100.10", // off-link: the only global IPv4 address
    "2001:db8::1": "2001:db8::10",
    "2001:db8:ffff::1": "2001:db8::10",
    "::": "2001:db8::10",
    listened: "2001:db8::10",
  });
});
