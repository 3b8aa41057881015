/**
 * socksify beyond `Deno.connect`: unmodified `node:net`, `node:tls`,
 * `node:http`, `node:https`, `node:dns`, `fetch` and `WebSocket` code
 * reaches names that only the gateway resolves (`v4only.test`, `localhost`
 * through the gateway), against the real in-process dualsocks on loopback.
 * The gateway's counters show each connection went through it.
 */
import assert from "node:assert/strict";
import dns from "node:dns";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import tls from "node:tls";
import {
  FakeDns,
  socksify,
  SocksReplyError,
  UnmappedFakeAddressError,
} from "../../src/client/mod.ts";
import { serve } from "../../src/server/gateway.ts";
import { deadline, startEcho, testResolver } from "./helpers.ts";

const T = 20_000;
const CA = await Deno.readTextFile(new URL("./testdata/ca.crt", import.meta.url));
const CERT = await Deno.readTextFile(new URL("./testdata/localhost.crt", import.meta.url));
const KEY = await Deno.readTextFile(new URL("./testdata/localhost.key", import.meta.url));

/** The in-process gateway on 127.0.0.1 and ::1, same port. */
function gateway() {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = probe.addr.port;
  probe.close();
  const gw = serve({ listen: [`127.0.0.1:${port}`, `[::1]:${port}`], resolver: testResolver });
  return {
    gw,
    port,
    connects: () => gw.stats.sessionsByCommand.connect,
    [Symbol.asyncDispose]: () => gw.shutdown({ grace: 0 }),
  };
}

/** An HTTP + WebSocket server on 127.0.0.1 that tells who asked. */
function webServer() {
  return Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    if (req.headers.get("upgrade") === "websocket") {
      const { socket, response } = Deno.upgradeWebSocket(req);
      socket.onmessage = (e) => socket.send(`echo ${e.data}`);
      return response;
    }
    return new Response(`hello ${req.headers.get("host")}`);
  });
}

function once<T>(emitter: { once(ev: string, f: (v: T) => void): unknown }, ev: string) {
  return new Promise<T>((resolve) => emitter.once(ev, resolve));
}

/** Writes `text`, half-closes, collects everything until the end. */
function exchangeNode(socket: net.Socket, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = "";
    socket.setEncoding("utf8");
    socket.on("data", (d: string) => got += d);
    socket.on("end", () => resolve(got));
    socket.on("error", reject);
    socket.end(text);
  });
}

Deno.test("socksify node:net: net.connect by a name only the gateway resolves, with real socket behaviour", async () => {
  await using echo = startEcho("127.0.0.1");
  await using g = await gateway();
  using _socks = socksify({ via: `socks5://[::1]:${g.port}` });
  const before = g.connects();
  const events: string[] = [];
  const socket = net.connect(echo.addr.port, "v4only.test", () => events.push("callback"));
  socket.on("connect", () => events.push("connect"));
  socket.on("ready", () => events.push("ready"));
  assert.equal(socket.connecting, true);
  socket.setNoDelay(true);
  socket.setKeepAlive(true, 1000);
  socket.setTimeout(T);
  // Written before the connection exists: Node queues it, as without SOCKS.
  socket.write("early ");
  await deadline(once(socket, "connect"), T, "connect");
  assert.equal(socket.connecting, false);
  assert.ok(
    new FakeDns().isFake(socket.remoteAddress!),
    `fake remoteAddress ${socket.remoteAddress}`,
  );
  assert.equal(socket.remotePort, echo.addr.port);
  assert.equal(socket.remoteFamily, "IPv4");
  assert.equal(await deadline(exchangeNode(socket, "late"), T, "echo"), "early late");
  if (!socket.destroyed) await once(socket, "close");
  assert.deepEqual(events, ["callback", "connect", "ready"]);
  assert.equal(g.connects() - before, 1, "one CONNECT through the gateway");
});

Deno.test("socksify node:dns: lookup answers a fake of the asked family; connecting to it sends the name", async () => {
  await using echo = startEcho("127.0.0.1");
  await using g = await gateway();
  const fakeDns = new FakeDns();
  using _socks = socksify({ via: `socks5://127.0.0.1:${g.port}`, fakeDns });
  const v6 = await new Promise<{ address: string; family: number }>((resolve, reject) =>
    dns.lookup(
      "v4only.test",
      { family: 6 },
      (err, address, family) => err ? reject(err) : resolve({ address, family }),
    )
  );
  assert.equal(v6.family, 6);
  assert.equal(fakeDns.reverse(v6.address), "v4only.test");
  assert.deepEqual(await dns.promises.resolve4("v4only.test"), [fakeDns.lookup("v4only.test", 4)]);
  assert.deepEqual(await dns.promises.resolve6("v4only.test"), [v6.address]);
  const all = await dns.promises.lookup("v4only.test", { all: true, family: 4 });
  assert.deepEqual(all, [{ address: fakeDns.lookup("v4only.test", 4), family: 4 }]);
  await assert.rejects(dns.promises.resolve("v4only.test", "MX"), /only A and AAAA/);
  const resolved6 = await new Promise<string[]>((resolve, reject) =>
    dns.resolve6("v4only.test", (err, a) => err ? reject(err) : resolve(a))
  );
  assert.deepEqual(resolved6, [v6.address]);

  const before = g.connects();
  const socket = new net.Socket();
  socket.connect({ port: echo.addr.port, host: v6.address });
  await deadline(once(socket, "connect"), T, "connect");
  assert.equal(socket.remoteAddress, v6.address);
  assert.equal(socket.remoteFamily, "IPv6");
  assert.equal(await deadline(exchangeNode(socket, "by fake"), T, "echo"), "by fake");
  assert.equal(g.connects() - before, 1);
});

Deno.test("socksify node:net errors: unmapped fake address, unresolvable name, unreachable gateway", async () => {
  await using g = await gateway();
  {
    using _socks = socksify({ via: `socks5://127.0.0.1:${g.port}` });
    const before = g.gw.stats.sessionsTotal;
    const s1 = net.connect(80, "0.0.0.250");
    const e1 = await deadline(once<Error & { code?: string }>(s1, "error"), T, "error 1");
    assert.ok(e1 instanceof UnmappedFakeAddressError, String(e1));
    assert.equal(g.gw.stats.sessionsTotal, before, "nothing was sent anywhere");
    const s2 = net.createConnection({ port: 80, host: "nxdomain.test" });
    const e2 = await deadline(once<Error & { code?: string }>(s2, "error"), T, "error 2");
    assert.ok(e2 instanceof SocksReplyError, String(e2));
    assert.equal((e2 as { code?: string }).code, "EHOSTUNREACH");
    assert.match(e2.message, /could not connect to nxdomain\.test:80: host unreachable/);
    assert.equal(s2.destroyed, true);
  }
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = closed.addr.port;
  closed.close();
  using _socks = socksify({ via: `socks5://127.0.0.1:${port}` });
  const s3 = net.connect(80, "v4only.test");
  const e3 = await deadline(once<Error & { code?: string }>(s3, "error"), T, "error 3");
  assert.equal(e3.code, "ECONNREFUSED");
  assert.match(e3.message, new RegExp(`could not reach gateway 127\\.0\\.0\\.1:${port}`));
});

Deno.test("socksify node:http and node:https: agents reach names through the gateway", async () => {
  await using g = await gateway();
  const web = webServer();
  const secure = Deno.serve(
    { hostname: "127.0.0.1", port: 0, cert: CERT, key: KEY, onListen() {} },
    (req) => new Response(`secure ${new URL(req.url).hostname}`),
  );
  try {
    using _socks = socksify({ via: `socks5://[::1]:${g.port}` });
    const before = g.connects();
    const body = await deadline(
      new Promise<string>((resolve, reject) => {
        http.get(`http://v4only.test:${web.addr.port}/`, (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (d) => text += d);
          res.on("end", () => resolve(text));
        }).on("error", reject);
      }),
      T,
      "http",
    );
    assert.equal(body, `hello v4only.test:${web.addr.port}`);
    const agent = new https.Agent({ ca: CA, keepAlive: false });
    const sbody = await deadline(
      new Promise<string>((resolve, reject) => {
        https.get(`https://localhost:${secure.addr.port}/`, { agent }, (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (d) => text += d);
          res.on("end", () => resolve(text));
        }).on("error", reject);
      }),
      T,
      "https",
    );
    assert.equal(sbody, "secure localhost");
    // tls.connect to a fake address: SNI and the certificate check use the name.
    const fake = await dns.promises.lookup("localhost", { family: 4 });
    const sock = tls.connect({ host: fake.address, port: secure.addr.port, ca: CA });
    await deadline(once(sock, "secureConnect"), T, "tls");
    assert.equal(sock.authorized, true);
    sock.destroy();
    assert.equal(g.connects() - before, 3, "http, https and tls went through the gateway");
  } finally {
    await web.shutdown();
    await secure.shutdown();
  }
});

Deno.test("socksify fetch and WebSocket: plain calls go through the gateway; own clients and direct prefixes are honoured", async () => {
  await using g = await gateway();
  const web = webServer();
  try {
    using _socks = socksify({ via: [[`socks5://127.0.0.1:1`, `socks5://[::1]:${g.port}`]] });
    let before = g.connects();
    const through = (what: string) => {
      assert.ok(g.connects() > before, `${what} went through the gateway`);
      before = g.connects();
    };
    const base = `http://v4only.test:${web.addr.port}`;
    assert.equal(await (await fetch(`${base}/`)).text(), `hello v4only.test:${web.addr.port}`);
    through("fetch(url)");
    const request = new Request(`http://localhost:${web.addr.port}/r`);
    assert.equal(await (await fetch(request)).text(), `hello localhost:${web.addr.port}`);
    through("fetch(Request)");
    // A URL holding a fake address reaches the name behind it.
    const [fake] = await Deno.resolveDns("v4only.test", "AAAA");
    assert.equal(await (await fetch(`http://[${fake}]:${web.addr.port}/`)).status, 200);
    through("fetch(fake address)");
    // An unmapped fake address never reaches anything.
    await assert.rejects(fetch(`http://[100::ffff]:${web.addr.port}/`));
    const ws = new WebSocket(`ws://v4only.test:${web.addr.port}/`);
    const reply = await deadline(
      new Promise<string>((resolve, reject) => {
        ws.onopen = () => ws.send("over socks");
        ws.onmessage = (e) => resolve(String(e.data));
        ws.onerror = () => reject(new Error("WebSocket failed"));
      }),
      T,
      "ws",
    );
    ws.close();
    await new Promise((resolve) => ws.addEventListener("close", resolve));
    assert.equal(reply, "echo over socks");
    through("WebSocket");
    // Direct prefix (loopback): not through the gateway.
    const mid = g.connects();
    assert.equal(await (await fetch(`http://127.0.0.1:${web.addr.port}/`)).status, 200);
    assert.equal(g.connects(), mid);
    // A caller's own client is used as is: this one's proxy is closed.
    const own = Deno.createHttpClient({ proxy: { url: "socks5h://127.0.0.1:1" } });
    try {
      await assert.rejects(fetch(`${base}/`, { client: own }));
    } finally {
      own.close();
    }
    assert.equal(g.connects(), mid);
  } finally {
    await web.shutdown();
  }
});

Deno.test("socksify restore() puts every replaced function back; parts can be switched off; one at a time", async () => {
  await using g = await gateway();
  const snapshot = () => ({
    connect: Deno.connect,
    connectTls: Deno.connectTls,
    startTls: Deno.startTls,
    resolveDns: Deno.resolveDns,
    fetch: globalThis.fetch,
    WebSocket: globalThis.WebSocket,
    socketConnect: net.Socket.prototype.connect,
    tlsConnect: tls.connect,
    lookup: dns.lookup,
    resolve: dns.resolve,
    resolve4: dns.resolve4,
    resolve6: dns.resolve6,
    pLookup: dns.promises.lookup,
    pResolve: dns.promises.resolve,
    pResolve4: dns.promises.resolve4,
    pResolve6: dns.promises.resolve6,
  });
  const original = snapshot();
  const socks = socksify({ via: `socks5://127.0.0.1:${g.port}` });
  assert.deepEqual(socks.parts, ["deno", "fetch", "webSocket", "nodeNet", "nodeDns"]);
  const during = snapshot();
  for (const key of Object.keys(original) as (keyof typeof original)[]) {
    assert.notEqual(during[key], original[key], `${key} is replaced`);
  }
  assert.throws(
    () => socksify({ via: `socks5://127.0.0.1:${g.port}` }),
    /expected no active socksify, found one; call restore\(\)/,
  );
  socks.restore();
  assert.deepEqual(snapshot(), original);
  socks.restore();
  {
    using partial = socksify({
      via: `socks5://127.0.0.1:${g.port}`,
      fetch: false,
      nodeNet: false,
      webSocket: false,
    });
    assert.deepEqual(partial.parts, ["deno", "nodeDns"]);
    const now = snapshot();
    assert.equal(now.fetch, original.fetch);
    assert.equal(now.WebSocket, original.WebSocket);
    assert.equal(now.socketConnect, original.socketConnect);
    assert.notEqual(now.lookup, original.lookup);
  }
  assert.deepEqual(snapshot(), original);
});
