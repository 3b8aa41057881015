/**
 * Destination safety cases that name metadata, link-local and other
 * non-local addresses. NOT a `_test.ts` file: `safety_test.ts` runs it with
 * `deno test` inside `unshare --net` (a namespace with only loopback), so
 * that a gateway that gets it wrong reaches nothing. It refuses to run
 * anywhere else.
 */
import assert from "node:assert/strict";
import { serve, type ServeOptions } from "../../src/server/gateway.ts";
import type { Dialer } from "../../src/server/dialer.ts";
import { defaultDialer } from "../../src/server/dialer.ts";
import {
  echoServer,
  gatewayAddr,
  readN,
  recordingLogger,
  socksConnect,
  writeAll,
} from "../helpers.ts";

const isolated = Deno.networkInterfaces().every((i) =>
  i.name === "lo" || i.address.startsWith("192.0.2.") || i.address.startsWith("2001:db8:")
);
if (Deno.env.get("DUALSOCKS_SAFETY_NETNS") !== "1" || !isolated) {
  throw new Error(
    "safety_cases.ts: expected to run inside unshare --net (only loopback), found " +
      Deno.networkInterfaces().map((i) => `${i.name} ${i.address}`).join(", "),
  );
}

const CONNECT_TIMEOUT = 10_000;

/** A dialer that records every attempt and then dials as usual (nothing beyond lo exists here). */
function recordingDialer() {
  const attempts: string[] = [];
  const dial: Dialer = (target, options) => {
    attempts.push(`${target.hostname}:${target.port}`);
    return defaultDialer(target, options);
  };
  return { attempts, dial };
}

function gateway(options: ServeOptions = {}) {
  const dialer = recordingDialer();
  const logger = recordingLogger();
  const gw = serve({
    listen: ["127.0.0.1:0", "[::1]:0"],
    dialer: dialer.dial,
    logger,
    timeouts: { connect: CONNECT_TIMEOUT },
    ...options,
  });
  return { gw, attempts: dialer.attempts, logger };
}

async function reply(proxy: { hostname: string; port: number }, host: string, port: number) {
  const r = await socksConnect(proxy, host, port);
  r.conn.close();
  return r.reply?.reply;
}

Deno.test("metadata and link-local destinations: reply 2 at once, no connect attempt", async () => {
  const { gw, attempts } = gateway();
  try {
    for (const proxy of [gatewayAddr(gw, 4), gatewayAddr(gw, 6)]) {
      for (
        const host of [
          "169.254.169.254",
          "fd00:ec2::254",
          "::ffff:169.254.169.254",
          "64:ff9b::a9fe:a9fe",
          "2002:a9fe:a9fe::1",
          "169.254.1.1",
          "fe80::1",
          "224.0.0.1",
          "ff02::1",
          "255.255.255.255",
          "0.0.0.0",
          "::",
        ]
      ) {
        const started = performance.now();
        assert.equal(await reply(proxy, host, 80), 2, host);
        const took = performance.now() - started;
        assert.ok(took < CONNECT_TIMEOUT / 2, `${host}: ${took} ms, not at once`);
      }
    }
    assert.deepEqual(attempts, [], "the gateway tried to connect");
    const s = gw.safety!.stats.unwantedDestinations;
    assert.equal(s.metadata, 10);
    assert.equal(s["link-local"], 4);
    assert.equal(s.multicast, 4);
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

Deno.test("a name that resolves to the metadata service is refused after resolution", async () => {
  const echo = echoServer("127.0.0.1");
  const { gw, attempts } = gateway({
    resolver: (name) =>
      Promise.resolve(
        name === "metadata.test"
          ? [{ address: "169.254.169.254", family: 4 as const }]
          : name === "mixed.test"
          ? [
            { address: "::ffff:169.254.169.254", family: 6 as const },
            { address: "169.254.169.254", family: 4 as const },
            { address: "127.0.0.1", family: 4 as const },
          ]
          : [],
      ),
  });
  try {
    assert.equal(await reply(gatewayAddr(gw, 4), "metadata.test", 80), 2);
    assert.deepEqual(attempts, []);
    // Only the address that passed the check is dialed.
    const r = await socksConnect(gatewayAddr(gw, 4), "mixed.test", echo.addr.port);
    assert.equal(r.reply?.reply, 0);
    await writeAll(r.conn, new TextEncoder().encode("ping"));
    assert.equal(new TextDecoder().decode(await readN(r.conn, 4)), "ping");
    r.conn.close();
    assert.deepEqual(attempts, [`127.0.0.1:${echo.addr.port}`]);
  } finally {
    await gw.shutdown({ grace: 0 });
    await echo.close();
  }
});

Deno.test("a rule that names the address by CIDR allows it; '*' does not", async () => {
  const { gw, attempts } = gateway({
    rules: [
      { action: "allow", to: ["169.254.169.254/32"], ports: [80] },
      { action: "allow", to: ["*"] },
    ],
  });
  try {
    const proxy = gatewayAddr(gw, 4);
    // Allowed: the gateway dials it (nothing answers in this namespace).
    assert.notEqual(await reply(proxy, "169.254.169.254", 80), 2);
    assert.deepEqual(attempts, ["169.254.169.254:80"]);
    assert.equal(await reply(proxy, "169.254.169.254", 81), 2, 'only by "*": refused');
    assert.equal(await reply(proxy, "169.254.1.1", 80), 2);
    assert.equal(attempts.length, 1);
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

Deno.test("CONNECT to the gateway's own port is refused as a loop; a normal CONNECT works", async () => {
  const echo = echoServer("127.0.0.1");
  const { gw, attempts } = gateway();
  try {
    const v4 = gatewayAddr(gw, 4);
    const v6 = gatewayAddr(gw, 6);
    assert.equal(await reply(v4, "127.0.0.1", v4.port), 2);
    assert.equal(await reply(v4, "::1", v6.port), 2);
    assert.equal(await reply(v6, "::ffff:127.0.0.1", v4.port), 2);
    assert.equal(await reply(v4, "localhost", v4.port), 2);
    assert.deepEqual(attempts, []);
    assert.equal(gw.safety!.stats.loopRefusals, 4);
    // Not a loop: another port on the same address.
    const r = await socksConnect(v4, "127.0.0.1", echo.addr.port);
    assert.equal(r.reply?.reply, 0);
    r.conn.close();
  } finally {
    await gw.shutdown({ grace: 0 });
    await echo.close();
  }
});

Deno.test("a wildcard listener: its host addresses are the gateway too", async () => {
  // 192.0.2.1 was added to lo in this namespace (see safety_test.ts).
  const { gw, attempts } = gateway({ listen: ["[::]:0"] });
  try {
    const port = gw.addrs[0].port;
    const proxy = { hostname: "127.0.0.1", port };
    for (const host of ["127.0.0.1", "::1", "192.0.2.1", "::ffff:192.0.2.1", "2001:db8::1"]) {
      assert.equal(await reply(proxy, host, port), 2, host);
    }
    assert.deepEqual(attempts, []);
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

Deno.test("HTTP and SOCKS4 answer their own refusal for the metadata service", async () => {
  const { gw, attempts } = gateway();
  try {
    const proxy = gatewayAddr(gw, 4);
    const http = await Deno.connect(proxy);
    await writeAll(
      http,
      new TextEncoder().encode(
        "CONNECT 169.254.169.254:80 HTTP/1.1\r\nHost: 169.254.169.254:80\r\n\r\n",
      ),
    );
    const status = new TextDecoder().decode(await readN(http, 12));
    assert.equal(status, "HTTP/1.1 403");
    http.close();
    const s4 = await Deno.connect(proxy);
    await writeAll(s4, Uint8Array.of(4, 1, 0, 80, 169, 254, 169, 254, 0));
    const r = await readN(s4, 8);
    assert.equal(r[1], 0x5b);
    s4.close();
    assert.deepEqual(attempts, []);
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

/** curl from the local address `from` through `proxy` (a URL: socks5h://, socks4://, http://). */
async function curlVia(proxy: string, url: string, from: string, login?: string) {
  const out = await new Deno.Command("curl", {
    args: [
      "--silent",
      "--max-time",
      "20",
      "--interface",
      from,
      "--proxy",
      proxy,
      ...(login ? ["--proxy-user", login] : []),
      "--write-out",
      "\n%{http_code}",
      url,
    ],
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000),
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  return {
    code: out.code,
    body: text.slice(0, text.lastIndexOf("\n")),
    status: text.slice(text.lastIndexOf("\n") + 1),
  };
}

Deno.test("protected mode: an open [::] listener without users serves loopback clients only", async () => {
  const web = Deno.serve(
    { hostname: "192.0.2.1", port: 0, onListen() {} },
    () => new Response("hi"),
  );
  const url = `http://192.0.2.1:${web.addr.port}/`;
  const { gw, logger } = gateway({ listen: ["[::]:0"] });
  try {
    const port = gw.addrs[0].port;
    assert.equal(gw.safety!.protectedMode, true);
    assert.ok(
      logger.records.some((r) =>
        r.level === "warn" && String(r.properties.why).includes("allow_open_relay: true")
      ),
      "the startup explanation",
    );
    // A loopback client is served.
    const local = await curlVia(`socks5h://127.0.0.1:${port}`, url, "127.0.0.1");
    assert.equal(local.code, 0);
    assert.equal(local.body, "hi");
    // Another host (192.0.2.1 here) gets each protocol's refusal.
    const socks5 = await curlVia(`socks5h://192.0.2.1:${port}`, url, "192.0.2.1");
    assert.equal(socks5.code, 97, "curl: SOCKS5 connection not allowed"); // CURLE_PROXY
    const socks4 = await curlVia(`socks4://192.0.2.1:${port}`, url, "192.0.2.1");
    assert.equal(socks4.code, 97);
    const http = await curlVia(`http://192.0.2.1:${port}`, url, "192.0.2.1");
    assert.equal(http.status, "403");
    assert.equal(gw.safety!.stats.protectedRefusals, 3);
    const warnings = logger.records.filter((r) => r.message.startsWith("refused client"));
    assert.equal(warnings.length, 1, "one warning a minute");
    assert.match(String(warnings[0].properties.why), /allow_open_relay: true/);
  } finally {
    await gw.shutdown({ grace: 0 });
    await web.shutdown();
  }
});

Deno.test("protected mode ends with users, with from: rules, or with allowOpenRelay", async () => {
  const web = Deno.serve(
    { hostname: "192.0.2.1", port: 0, onListen() {} },
    () => new Response("hi"),
  );
  const url = `http://192.0.2.1:${web.addr.port}/`;
  const cases: [string, ServeOptions, string | undefined][] = [
    ["users", { users: [{ username: "u", password: "p" }] }, "u:p"],
    [
      "from: rules",
      { rules: [{ action: "allow", from: ["192.0.2.0/24", "127.0.0.0/8"] }] },
      undefined,
    ],
    ["allowOpenRelay", { safety: { allowOpenRelay: true } }, undefined],
  ];
  try {
    for (const [what, options, login] of cases) {
      const { gw } = gateway({ listen: ["[::]:0"], ...options });
      try {
        assert.equal(gw.safety!.protectedMode, false, what);
        const port = gw.addrs[0].port;
        for (const from of ["192.0.2.1", "127.0.0.1"]) {
          const r = await curlVia(`socks5h://${from}:${port}`, url, from, login);
          assert.equal(r.code, 0, `${what}, from ${from}`);
          assert.equal(r.body, "hi");
        }
      } finally {
        await gw.shutdown({ grace: 0 });
      }
    }
  } finally {
    await web.shutdown();
  }
});
