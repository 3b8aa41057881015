/**
 * Hostile or stalled parts must not hold sessions, bypass rules or leak:
 * the findings of a second reading of the gateway, each pinned by a test.
 */
import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createSocket, type RemoteInfo } from "node:dgram";
import { connect as nodeConnect } from "node:net";
import { SocksClient } from "socks";
import { serve, type ServeOptions } from "../../src/server/gateway.ts";
import { ResolveError } from "../../src/server/errors.ts";
import type { Resolver } from "../../src/server/resolver.ts";
import {
  echoServer,
  gatewayAddr,
  readN,
  recordingLogger,
  socksConnect,
  withTimeout,
  writeAll,
} from "../helpers.ts";

const T = 10_000;

function gateway(options: ServeOptions = {}) {
  const logger = recordingLogger();
  const gw = serve({ listen: ["127.0.0.1:0"], logger, ...options });
  return { gw, logger, v4: gatewayAddr(gw, 4) };
}

Deno.test("a stalled authenticator cannot hold a session slot or block shutdown", async () => {
  const { gw, v4 } = gateway({
    authenticator: () => new Promise<boolean>(() => {}), // never answers
    timeouts: { handshake: 200 },
    maxSessions: 1,
  });
  const client = await Deno.connect(v4);
  await writeAll(client, Uint8Array.of(5, 1, 2, 1, 1, 0x61, 1, 0x62));
  assert.deepEqual([...(await readN(client, 2))], [5, 2]);
  assert.equal(await withTimeout(client.read(new Uint8Array(1)), T, "close"), null);
  client.close();
  // The slot is free again: a new client gets as far as the method reply.
  const next = await Deno.connect(v4);
  await writeAll(next, Uint8Array.of(5, 1, 2));
  assert.deepEqual([...(await withTimeout(readN(next, 2), T, "method reply"))], [5, 2]);
  next.close();
  await withTimeout(gw.shutdown({ grace: 0 }), T, "shutdown");
});

Deno.test("a resolver that ignores its signal still ends at the connect timeout", async () => {
  const { gw, v4, logger } = gateway({
    resolver: () => new Promise(() => {}), // never answers, ignores the signal
    timeouts: { connect: 200 },
  });
  try {
    const { conn, reply } = await withTimeout(socksConnect(v4, "stuck.test", 80), T, "reply");
    assert.equal(reply?.reply, 4);
    conn.close();
    await withTimeout(
      logger.waitFor((p) => /timed out/.test(String(p.reason))),
      T,
      "the session's end",
    );
    assert.equal(gw.sessions().length, 0, "the session slot is free");
  } finally {
    await withTimeout(gw.shutdown({ grace: 0 }), T, "shutdown");
  }
});

Deno.test("the idle timeout counts from the start of the relay, not from accept", async () => {
  const dest = echoServer("127.0.0.1");
  // Resolution takes longer than the idle timeout.
  const slow: Resolver = (_name, { signal }) =>
    new Promise((resolve, reject) => {
      const t = setTimeout(() => resolve([{ address: "127.0.0.1", family: 4 }]), 500);
      signal.addEventListener("abort", () => {
        clearTimeout(t);
        reject(signal.reason);
      });
    });
  const { gw, v4 } = gateway({ resolver: slow, timeouts: { idle: 300 } });
  try {
    const { conn, reply } = await socksConnect(v4, "slow.test", dest.addr.port);
    assert.equal(reply?.reply, 0);
    // Quiet for less than the idle timeout: the relay must still be there.
    await new Promise((r) => setTimeout(r, 150));
    await writeAll(conn, new TextEncoder().encode("alive"));
    assert.equal(new TextDecoder().decode(await readN(conn, 5)), "alive");
    conn.close();
  } finally {
    await gw.shutdown({ grace: 0 });
    await dest.close();
  }
});

Deno.test("BIND: the rules apply to the peer that actually connects", async () => {
  const { gw, v4 } = gateway({
    rules: [{ action: "deny", to: ["127.0.0.2/32"], commands: ["bind"] }, { action: "allow" }],
  });
  try {
    const client = new SocksClient({
      proxy: { host: v4.hostname, port: v4.port, type: 5 },
      command: "bind",
      destination: { host: "0.0.0.0", port: 0 },
      timeout: T,
    });
    const bound = new Promise<{ host: string; port: number }>((r) =>
      client.once("bound", (i) => r(i.remoteHost!))
    );
    const established = new Promise<{ socket: import("node:net").Socket; host: string }>((r) =>
      client.once("established", (i) => r({ socket: i.socket, host: i.remoteHost!.host }))
    );
    client.connect();
    const bnd = await withTimeout(bound, T, "first reply");
    const denied = nodeConnect({ host: bnd.host, port: bnd.port, localAddress: "127.0.0.2" });
    await withTimeout(
      new Promise<void>((r) => denied.once("close", () => r())),
      T,
      "the denied peer closed",
    );
    const peer = await Deno.connect({ hostname: bnd.host, port: bnd.port });
    const { socket, host } = await withTimeout(established, T, "second reply");
    assert.equal(host, "127.0.0.1", "the denied peer was turned away, the allowed one got in");
    socket.destroy();
    peer.close();
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

/** A UDP echo server on 127.0.0.1 that remembers where datagrams came from. */
async function udpEcho() {
  const sock = createSocket("udp4");
  await new Promise<void>((r) => sock.bind({ address: "127.0.0.1", port: 0 }, r));
  const from: RemoteInfo[] = [];
  sock.on("message", (msg: Uint8Array, rinfo: RemoteInfo) => {
    from.push(rinfo);
    sock.send(msg, rinfo.port, rinfo.address);
  });
  return { sock, port: sock.address().port, from };
}

Deno.test("UDP: rules see literals sent as DOMAINNAME and every port of a cached name", async () => {
  const echo = await udpEcho();
  const other = await udpEcho();
  const resolver: Resolver = (name) =>
    name === "ok.test"
      ? Promise.resolve([{ address: "127.0.0.1", family: 4 }])
      : Promise.reject(new ResolveError(name, "no such name"));
  const { gw, v4 } = gateway({
    resolver,
    rules: [
      { action: "allow", to: ["ok.test"], ports: [echo.port] },
      { action: "allow", commands: ["connect"] },
    ],
  });
  const connect = new SocksClient({
    proxy: { host: v4.hostname, port: v4.port, type: 5 },
    command: "associate",
    destination: { host: "0.0.0.0", port: 0 },
    timeout: T,
  });
  const established = new Promise<
    { socket: import("node:net").Socket; relay: { host: string; port: number } }
  >((resolve, reject) => {
    connect.once("established", (i) => resolve({ socket: i.socket, relay: i.remoteHost! }));
    connect.once("error", reject);
  });
  connect.connect();
  const { socket, relay } = await withTimeout(established, T, "UDP ASSOCIATE");
  const sock = createSocket("udp4");
  await new Promise<void>((r) => sock.bind({ address: "127.0.0.1", port: 0 }, r));
  const replies: string[] = [];
  let wake: (() => void) | null = null;
  sock.on("message", (m: Uint8Array) => {
    replies.push(new TextDecoder().decode(SocksClient.parseUDPFrame(Buffer.from(m)).data));
    wake?.();
  });
  const send = (host: string, port: number, data: string) =>
    new Promise<void>((r) =>
      sock.send(
        SocksClient.createUDPFrame({ remoteHost: { host, port }, data: Buffer.from(data) }),
        relay.port,
        relay.host,
        () => r(),
      )
    );
  const nextReply = () =>
    withTimeout(new Promise<void>((r) => (wake = r)), T, "a reply").then(() => replies.at(-1));
  try {
    // A literal in a DOMAINNAME is checked like any literal: denied.
    await send("127.0.0.1", echo.port, "literal as name");
    // The allowed name and port: relayed.
    const first = nextReply();
    await send("ok.test", echo.port, "allowed");
    assert.equal(await first, "allowed");
    // The same cached name on another port: still denied.
    await send("ok.test", other.port, "other port");
    const last = nextReply();
    await send("ok.test", echo.port, "allowed again");
    assert.equal(await last, "allowed again");
    assert.deepEqual(replies, ["allowed", "allowed again"]);
    assert.equal(other.from.length, 0, "nothing reached the other port");
    assert.equal(gw.stats.udp.dropped, 2);
    // A host the client never sent to cannot inject a reply through the association.
    const outbound = echo.from[0];
    const before = gw.stats.udp.dropped;
    const intruder = createSocket("udp4");
    await new Promise<void>((r) => intruder.bind({ address: "127.0.0.2", port: 0 }, r));
    await new Promise<void>((r) =>
      intruder.send(Buffer.from("forged"), outbound.port, "127.0.0.1", () => r())
    );
    intruder.close();
    const marker = nextReply();
    await send("ok.test", echo.port, "after intruder");
    assert.equal(await marker, "after intruder");
    assert.ok(!replies.includes("forged"));
    assert.equal(gw.stats.udp.dropped, before + 1, "the forged datagram was dropped, not relayed");
  } finally {
    socket.destroy();
    sock.close();
    echo.sock.close();
    other.sock.close();
    await gw.shutdown({ grace: 0 });
  }
});
