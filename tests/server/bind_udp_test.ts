/**
 * BIND and UDP ASSOCIATE across families, with an independent client (the
 * npm `socks` package) and our own Socks Lib.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createSocket, type RemoteInfo, type Socket } from "node:dgram";
import { connect as nodeConnect } from "node:net";
import { SocksClient } from "socks";
import { normalizeIp } from "../../src/protocol/address.ts";
import { serve, type ServeOptions } from "../../src/server/gateway.ts";
import { ResolveError } from "../../src/server/errors.ts";
import type { Resolver } from "../../src/server/resolver.ts";
import { bind as socksBind, udpAssociate } from "../../src/client/mod.ts";
import { BufferedReader } from "../../src/io/buffered_reader.ts";
import {
  decodeMethodSelection,
  decodeReply,
  encodeGreeting,
  encodeRequest,
  toSocksAddress,
} from "../../src/protocol/codec.ts";
import { gatewayAddr, readN, recordingLogger, withTimeout, writeAll } from "../helpers.ts";

const T = 10_000;
const enc = new TextEncoder();
const dec = new TextDecoder();

const resolver: Resolver = (name) =>
  name === "v4only.test"
    ? Promise.resolve([{ address: "127.0.0.1", family: 4 }])
    : name === "v6only.test"
    ? Promise.resolve([{ address: "::1", family: 6 }])
    : Promise.reject(new ResolveError(name, "no such name"));

function gateway(options: ServeOptions = {}) {
  const logger = recordingLogger();
  const gw = serve({ listen: ["127.0.0.1:0", "[::1]:0"], logger, resolver, ...options });
  return { gw, logger, v4: gatewayAddr(gw, 4), v6: gatewayAddr(gw, 6) };
}

/** The npm `socks` package writes IPv6 addresses fully expanded: compare canonically. */
const ip = (host: string) => normalizeIp(host)?.host ?? host;

/** Starts the npm `socks` client's BIND and returns its two replies as promises. */
function npmBind(proxy: { hostname: string; port: number }, host: string, port = 0) {
  const client = new SocksClient({
    proxy: { host: proxy.hostname, port: proxy.port, type: 5 },
    command: "bind",
    destination: { host, port },
    timeout: T,
  });
  const bound = new Promise<{ host: string; port: number }>((resolve, reject) => {
    client.once("bound", (info) => resolve(info.remoteHost!));
    client.once("error", reject);
  });
  const established = new Promise<
    { socket: import("node:net").Socket; peer: { host: string; port: number } }
  >(
    (resolve, reject) => {
      client.once(
        "established",
        (info) => resolve({ socket: info.socket, peer: info.remoteHost! }),
      );
      client.once("error", reject);
    },
  );
  established.catch(() => {});
  client.connect();
  return { bound, established };
}

/** Reads `n` bytes from a node socket. */
function nodeRead(socket: import("node:net").Socket, n: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = "";
    socket.on("data", (d: Uint8Array) => {
      got += dec.decode(d);
      if (got.length >= n) resolve(got);
    });
    socket.once("error", reject);
  });
}

Deno.test("BIND (npm socks client): FTP-style rendezvous in each family", async () => {
  const { gw, v4, v6, logger } = gateway();
  try {
    for (const [proxy, peerHost, type] of [[v4, "127.0.0.1", "A"], [v6, "::1", "D"]] as const) {
      const { bound, established } = npmBind(proxy, peerHost);
      const bnd = await withTimeout(bound, T, "first BIND reply");
      assert.equal(
        ip(bnd.host),
        peerHost,
        `listens in the family that faces the peer: ${JSON.stringify(bnd)}`,
      );
      // The peer (an FTP server's data connection) connects to BND.
      const peer = await Deno.connect({ hostname: bnd.host, port: bnd.port });
      const { socket, peer: seen } = await withTimeout(established, T, "second BIND reply");
      assert.equal(ip(seen.host), peerHost);
      assert.equal(seen.port, peer.localAddr.port, "the second reply names the peer's port");
      await writeAll(peer, enc.encode("from peer"));
      assert.equal(await nodeRead(socket, 9), "from peer");
      socket.write("from client");
      assert.equal(dec.decode(await readN(peer, 11)), "from client");
      socket.destroy();
      peer.close();
      await logger.waitFor((p) => p.command === "bind" && p.type === type);
    }
    assert.equal(gw.stats.sessionsByCommand.bind, 2);
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

Deno.test("BIND across families: an IPv6 client waits for an IPv4 peer", async () => {
  // The gateway needs an IPv4 address the peer can reach: here the outbound one.
  const { gw, v6, logger } = gateway({ outbound: { ipv4: "127.0.0.1" } });
  try {
    const binding = await socksBind("127.0.0.1:0", {
      via: `socks5://[::1]:${v6.port}`,
      timeout: T,
    });
    assert.equal(binding.boundAddr.hostname, "127.0.0.1", "IPv4 BND for an IPv4 peer");
    const peer = await Deno.connect({ hostname: "127.0.0.1", port: binding.boundAddr.port });
    const conn = await withTimeout(binding.accept(), T, "accept");
    await writeAll(peer, enc.encode("cross"));
    assert.equal(dec.decode(await readN(conn as unknown as Deno.Conn, 5)), "cross");
    conn.close();
    peer.close();
    await logger.waitFor((p) => p.command === "bind" && p.type === "C");
  } finally {
    await gw.shutdown({ grace: 0 });
  }
  // The FTP case: a live relay to the peer tells the gateway which address the
  // peer already talks to, with no outbound address configured.
  const ftp = gateway();
  const control = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const via = `socks5://[::1]:${ftp.v6.port}`;
    const { connect } = await import("../../src/client/mod.ts");
    const controlConn = await connect(`127.0.0.1:${control.addr.port}`, { via, timeout: T });
    const binding = await socksBind("127.0.0.1:0", { via, timeout: T });
    assert.equal(binding.boundAddr.hostname, "127.0.0.1");
    binding.close();
    controlConn.close();
  } finally {
    control.close();
    await ftp.gw.shutdown({ grace: 0 });
  }
  // No outbound and no relay: the gateway listens on the loopback it would use toward the peer.
  const bare = gateway();
  try {
    const binding = await socksBind("127.0.0.1:0", {
      via: `socks5://[::1]:${bare.v6.port}`,
      timeout: T,
    });
    assert.equal(binding.boundAddr.hostname, "127.0.0.1");
    binding.close();
  } finally {
    await bare.gw.shutdown({ grace: 0 });
  }
});

Deno.test("BIND accepts only the expected peer, and times out with reply 4", async () => {
  const { gw, v4, logger } = gateway({ bind: { acceptTimeout: 500 } });
  try {
    const { bound, established } = npmBind(v4, "127.0.0.1");
    const bnd = await withTimeout(bound, T, "first reply");
    // A stranger from 127.0.0.2 is turned away; the expected peer then gets in.
    const stranger = nodeConnect({ host: bnd.host, port: bnd.port, localAddress: "127.0.0.2" });
    await withTimeout(
      new Promise<void>((resolve) => stranger.once("close", () => resolve())),
      T,
      "the stranger closed",
    );
    const peer = await Deno.connect({ hostname: bnd.host, port: bnd.port });
    const { socket, peer: accepted } = await withTimeout(established, T, "second reply");
    assert.equal(accepted.host, "127.0.0.1", "the second reply names the expected peer");
    assert.equal(accepted.port, peer.localAddr.port);
    socket.destroy();
    peer.close();

    const late = npmBind(v4, "127.0.0.1");
    await withTimeout(late.bound, T, "first reply");
    await assert.rejects(withTimeout(late.established, T, "second reply"), /4|unreachable/i);
    await logger.waitFor((p) => /accept timeout/.test(String(p.reason)));
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

/** Sends a BIND request with our codec and returns the connection, its reader and the first reply. */
async function rawBind(proxy: { hostname: string; port: number }, host: string, port = 0) {
  const conn = await Deno.connect(proxy);
  const reader = new BufferedReader(conn);
  await writeAll(conn, encodeGreeting({ methods: [0] }));
  assert.equal(await reader.decode(decodeMethodSelection, "method"), 0);
  await writeAll(conn, encodeRequest({ command: 2, address: toSocksAddress(host), port }));
  const reply = () => withTimeout(reader.decode(decodeReply, "reply"), T, "a BIND reply");
  return { conn, reply };
}

Deno.test("BIND: a rules hook that fails for the peer fails the BIND and closes the peer", async () => {
  const { gw, v4, logger } = gateway({
    // The request (port 0) is allowed; the check of the peer that connects throws.
    rules: (ctx) => {
      if (ctx.destination.port !== 0) throw new Error("rules backend unavailable");
      return { action: "allow" };
    },
  });
  try {
    const { conn, reply } = await rawBind(v4, "127.0.0.1");
    const first = await reply();
    assert.equal(first.reply, 0);
    const peer = await Deno.connect({ hostname: first.address.host, port: first.port });
    assert.equal((await reply()).reply, 1, "the second reply says general failure");
    const eof = await withTimeout(peer.read(new Uint8Array(1)), T, "the peer's EOF");
    assert.equal(eof, null, "the peer that was not handed over is closed");
    peer.close();
    conn.close();
    await logger.waitFor((p) => /rules backend unavailable/.test(String(p.reason)));
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

Deno.test("BIND: a client that sends data and then leaves ends the wait at once", async () => {
  // The accept timeout is far away: only noticing the close can end the wait.
  const { gw, v4, logger } = gateway({ bind: { acceptTimeout: 60_000 } });
  try {
    for (const leave of ["close", "closeWrite"] as const) {
      const { conn, reply } = await rawBind(v4, "127.0.0.1");
      const first = await reply();
      assert.equal(first.reply, 0);
      await writeAll(conn, enc.encode("early"));
      if (leave === "close") conn.close();
      else await conn.closeWrite();
      await logger.waitFor((p) => p.command === "bind" && p.reason !== undefined, T);
      assert.equal(gw.sessions().length, 0, `${leave}: the session ended`);
      await assert.rejects(
        Deno.connect({ hostname: first.address.host, port: first.port }),
        Deno.errors.ConnectionRefused,
        `${leave}: the BIND listener is closed`,
      );
      if (leave === "closeWrite") conn.close();
      logger.records.length = 0;
    }
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

Deno.test("BIND: what the client sends before its peer arrives reaches the peer, in order", async () => {
  const { gw, v4 } = gateway();
  try {
    const { conn, reply } = await rawBind(v4, "127.0.0.1");
    const first = await reply();
    // Several writes while the gateway waits: each is read and kept.
    const early = ["one ", "two ", "three"];
    for (const part of early) await writeAll(conn, enc.encode(part));
    const peer = await Deno.connect({ hostname: first.address.host, port: first.port });
    assert.equal((await reply()).reply, 0);
    const want = early.join("");
    assert.equal(dec.decode(await withTimeout(readN(peer, want.length), T, "early data")), want);
    // And the relay goes on both ways after it.
    await writeAll(peer, enc.encode("back"));
    await writeAll(conn, enc.encode(" more"));
    assert.equal(dec.decode(await withTimeout(readN(peer, 5), T, "later data")), " more");
    peer.close();
    conn.close();
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

Deno.test("BIND: a name whose resolution stalls gets reply 4 at the connect timeout", async () => {
  const { gw, v4, logger } = gateway({
    timeouts: { connect: 200 },
    resolver: () => new Promise(() => {}), // a DNS server that never answers
  });
  try {
    const { conn, reply } = await rawBind(v4, "peer.test", 21);
    assert.equal((await reply()).reply, 4);
    conn.close();
    await logger.waitFor((p) => /timed out/.test(String(p.reason)));
    assert.equal(gw.sessions().length, 0);
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

/** UDP ASSOCIATE with the npm `socks` client (event API: it has no promise API for it). */
function npmAssociate(proxy: { hostname: string; port: number }, host: string) {
  const client = new SocksClient({
    proxy: { host: proxy.hostname, port: proxy.port, type: 5 },
    command: "associate",
    destination: { host, port: 0 },
    timeout: T,
  });
  const established = new Promise<
    { socket: import("node:net").Socket; relay: { host: string; port: number } }
  >(
    (resolve, reject) => {
      client.once(
        "established",
        (info) => resolve({ socket: info.socket, relay: info.remoteHost! }),
      );
      client.once("error", reject);
    },
  );
  client.connect();
  return withTimeout(established, T, "UDP ASSOCIATE reply");
}

/** A UDP echo server that answers each datagram with "echo:" + data. */
async function udpEcho(family: 4 | 6): Promise<Socket & { port: number }> {
  const sock = createSocket({ type: family === 6 ? "udp6" : "udp4", ipv6Only: family === 6 });
  await new Promise<void>((r) =>
    sock.bind({ address: family === 6 ? "::1" : "127.0.0.1", port: 0 }, r)
  );
  sock.on("message", (msg: Uint8Array, from: RemoteInfo) => {
    sock.send(new Uint8Array([...enc.encode("echo:"), ...msg]), from.port, from.address);
  });
  return Object.assign(sock, { port: sock.address().port });
}

/** A client UDP socket with a queue of received datagrams. */
async function udpClient(family: 4 | 6) {
  const sock = createSocket({ type: family === 6 ? "udp6" : "udp4", ipv6Only: family === 6 });
  await new Promise<void>((r) =>
    sock.bind({ address: family === 6 ? "::1" : "127.0.0.1", port: 0 }, r)
  );
  const queue: Uint8Array[] = [];
  const waiters: ((m: Uint8Array) => void)[] = [];
  sock.on("message", (msg: Uint8Array) => {
    const w = waiters.shift();
    if (w) w(msg);
    else queue.push(msg);
  });
  return {
    sock,
    next: () =>
      withTimeout(
        new Promise<Uint8Array>((r) => (queue.length ? r(queue.shift()!) : waiters.push(r))),
        T,
        "a datagram",
      ),
    close: () => sock.close(),
  };
}

Deno.test("UDP ASSOCIATE (npm socks client): IPv6 client to an IPv4 destination, by literal and name", async () => {
  const echo = await udpEcho(4);
  const { gw, v6, logger } = gateway();
  const client = await udpClient(6);
  try {
    const info = await npmAssociate(v6, "::");
    const relay = info.relay;
    assert.equal(
      ip(relay.host),
      "::1",
      "the relay is in the client's family, at the address it used",
    );
    const send = (host: string, data: string) =>
      client.sock.send(
        SocksClient.createUDPFrame({
          remoteHost: { host, port: echo.port },
          data: Buffer.from(data),
        }),
        relay.port,
        relay.host,
      );
    send("127.0.0.1", "by literal");
    const lit = SocksClient.parseUDPFrame(await client.next() as never);
    assert.equal(ip(lit.remoteHost.host), "127.0.0.1");
    assert.equal(lit.remoteHost.port, echo.port);
    assert.equal(dec.decode(lit.data), "echo:by literal");
    // By name: the IPv6 client gets the answer under the name it used.
    send("v4only.test", "by name");
    const named = SocksClient.parseUDPFrame(await client.next() as never);
    assert.equal(named.remoteHost.host, "v4only.test");
    assert.equal(dec.decode(named.data), "echo:by name");
    // The literal again: the answer follows the latest way the peer was addressed.
    send("127.0.0.1", "literal again");
    const again = SocksClient.parseUDPFrame(await client.next() as never);
    assert.equal(ip(again.remoteHost.host), "127.0.0.1");
    assert.deepEqual(gw.sessions().map((s) => s.type), ["C"]);
    info.socket.destroy();
    const closed = await logger.waitFor((p) => p.command === "udp");
    assert.match(String(closed.reason), /3 datagrams up, 3 down, 0 dropped/);
    assert.equal(gw.stats.udp.fromClients, 3);
    assert.equal(gw.stats.udp.toClients, 3);
  } finally {
    client.close();
    echo.close();
    await gw.shutdown({ grace: 0 });
  }
});

Deno.test("UDP ASSOCIATE: hostile datagrams are dropped without disturbing the association", async () => {
  const echo = await udpEcho(6);
  const { gw, v4 } = gateway();
  const client = await udpClient(4);
  const stranger = await udpClient(4);
  try {
    const assoc = await npmAssociate(v4, "0.0.0.0");
    const relay = assoc.relay;
    assert.equal(relay.host, "127.0.0.1");
    const frame = (data: string, frag = 0) => {
      const f = SocksClient.createUDPFrame({
        remoteHost: { host: "::1", port: echo.port },
        data: Buffer.from(data),
        frameNumber: frag,
      });
      return f;
    };
    const sendRaw = (from: typeof client, bytes: Uint8Array) =>
      new Promise<void>((r) => from.sock.send(bytes, relay.port, relay.host, () => r()));
    // The first datagram locks the association to this client port.
    await sendRaw(client, frame("first"));
    assert.equal(
      dec.decode(SocksClient.parseUDPFrame(await client.next() as never).data),
      "echo:first",
    );
    await sendRaw(client, Uint8Array.of(0, 0)); // short header
    await sendRaw(client, Uint8Array.of(0, 0, 0, 9, 1, 2, 3, 4, 0, 80)); // bad ATYP
    await sendRaw(client, frame("fragment", 1)); // FRAG != 0
    await sendRaw(stranger, frame("wrong source port")); // another port of the same host
    // The largest datagram the client can send: its echo (+5 bytes) fits an
    // IPv6 datagram, but not an IPv4 one once the 22-byte header is added.
    await sendRaw(client, frame("x".repeat(65_507 - 22)));
    await sendRaw(client, frame("still works"));
    const after = SocksClient.parseUDPFrame(await client.next() as never);
    assert.equal(ip(after.remoteHost.host), "::1");
    assert.equal(dec.decode(after.data), "echo:still works");
    assert.equal(gw.stats.udp.dropped, 5);
    assert.equal(gw.stats.udp.toClients, 2, "the oversized echo is not counted as relayed");
    assert.deepEqual(gw.sessions().map((s) => s.type), ["B"]);
    assoc.socket.destroy();
  } finally {
    client.close();
    stranger.close();
    echo.close();
    await gw.shutdown({ grace: 0 });
  }
});

Deno.test("UDP ASSOCIATE with our own client: a DNS-like query from IPv6 to an IPv4 server", async () => {
  const echo = await udpEcho(4);
  const { gw } = gateway();
  try {
    const assoc = await udpAssociate({
      via: `socks5://[::1]:${gatewayAddr(gw, 6).port}`,
      timeout: T,
    });
    assert.equal(assoc.relayAddr.hostname, "::1");
    await assoc.send(enc.encode("query"), `v4only.test:${echo.port}`);
    const answer = await withTimeout(assoc.receive(), T, "answer");
    assert.equal(dec.decode(answer.data), "echo:query");
    assert.equal(answer.from.host, "v4only.test");
    assoc.close();
    await withTimeout(assoc.closed, T, "association closed");
  } finally {
    echo.close();
    await gw.shutdown({ grace: 0 });
  }
});
