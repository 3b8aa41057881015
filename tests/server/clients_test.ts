/**
 * Third-party clients against the gateway: curl and Deno's own fetch.
 */
import assert from "node:assert/strict";
import { serve, type ServeOptions } from "../../src/server/gateway.ts";
import { ResolveError } from "../../src/server/errors.ts";
import { gatewayAddr, joinHostPort, recordingLogger, run } from "../helpers.ts";

/** An HTTP destination that answers with the peer address it saw. */
function httpPeer(hostname: string) {
  return Deno.serve(
    { hostname, port: 0, onListen() {} },
    (req, info) =>
      new Response(
        `${new URL(req.url).pathname} from ${(info.remoteAddr as Deno.NetAddr).hostname}\n`,
      ),
  );
}

function gateway(options: ServeOptions = {}) {
  const logger = recordingLogger();
  const gw = serve({ listen: ["127.0.0.1:0", "[::1]:0"], logger, ...options });
  const v4 = gatewayAddr(gw, 4);
  const v6 = gatewayAddr(gw, 6);
  return {
    gw,
    logger,
    v4: joinHostPort(v4.hostname, v4.port),
    v6: joinHostPort(v6.hostname, v6.port),
  };
}

async function curl(...args: string[]) {
  return await run("curl", ["-sS", "--max-time", "10", ...args]);
}

Deno.test("curl --socks5-hostname and --socks5 through both proxy families", async () => {
  const web4 = httpPeer("127.0.0.1");
  const web6 = httpPeer("::1");
  const { gw, logger, v4, v6 } = gateway();
  try {
    const cases = [
      // [proxy, flag, url, destination's view of the gateway, type]
      [v6, "--socks5-hostname", `http://localhost:${web4.addr.port}/name`, "127.0.0.1", "C"],
      [v4, "--socks5-hostname", `http://localhost:${web4.addr.port}/name`, "127.0.0.1", "A"],
      [v4, "--socks5", `http://127.0.0.1:${web4.addr.port}/v4`, "127.0.0.1", "A"],
      [v4, "--socks5", `http://[::1]:${web6.addr.port}/v6`, "::1", "B"],
      [v6, "--socks5", `http://[::1]:${web6.addr.port}/v6`, "::1", "D"],
      [v6, "--socks5-hostname", `http://[::1]:${web6.addr.port}/v6lit`, "::1", "D"],
    ] as const;
    for (const [proxy, flag, url, seen, type] of cases) {
      const out = await curl(flag, proxy, url);
      assert.equal(out.code, 0, `${flag} ${proxy} ${url}: ${out.stderr}`);
      assert.equal(out.stdout, `${new URL(url).pathname} from ${seen}\n`);
      await logger.waitFor((p) =>
        p.type === type && String(p.destination).endsWith(new URL(url).port)
      );
    }
  } finally {
    await gw.shutdown({ grace: 0 });
    await web4.shutdown();
    await web6.shutdown();
  }
});

Deno.test("curl with username/password; a wrong password is refused", async () => {
  const web = httpPeer("127.0.0.1");
  const { gw, v6 } = gateway({ users: [{ username: "alice", password: "s3cret" }] });
  try {
    const ok = await curl(
      "--socks5-hostname",
      v6,
      "--proxy-user",
      "alice:s3cret",
      `http://localhost:${web.addr.port}/auth`,
    );
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, "/auth from 127.0.0.1\n");
    const bad = await curl(
      "--socks5-hostname",
      v6,
      "--proxy-user",
      "alice:wrong",
      `http://localhost:${web.addr.port}/auth`,
    );
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /rejected/i, bad.stderr);
    const none = await curl("--socks5-hostname", v6, `http://localhost:${web.addr.port}/auth`);
    assert.notEqual(none.code, 0, "NO AUTH is not accepted when users are configured");
  } finally {
    await gw.shutdown({ grace: 0 });
    await web.shutdown();
  }
});

Deno.test("curl sees the reply code: unresolvable name and refused port", async () => {
  const { gw, v4 } = gateway({
    resolver: (name) => Promise.reject(new ResolveError(name, "no such name")),
  });
  const closed = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = closed.addr.port;
  closed.close();
  try {
    const unresolved = await curl("--socks5-hostname", v4, "http://v4only.test/");
    assert.notEqual(unresolved.code, 0);
    assert.match(unresolved.stderr, /\(4\)|unreachable/i, unresolved.stderr);
    const refused = await curl("--socks5-hostname", v4, `http://127.0.0.1:${port}/`);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /\(5\)|refused/i, refused.stderr);
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

Deno.test("Deno fetch through a socks5h:// proxy (names delegated to the gateway)", async () => {
  const web6 = httpPeer("::1");
  // The resolver hook knows a name the system does not: the name can only
  // have been resolved by the gateway.
  const { gw, logger, v4 } = gateway({
    resolver: (name) =>
      name === "v6only.test"
        ? Promise.resolve([{ address: "::1", family: 6 }])
        : Promise.reject(new ResolveError(name, "no such name")),
  });
  // Deno 2.9 cannot use a bracketed IPv6 proxy address, so the IPv4 listener is used.
  const client = Deno.createHttpClient({ proxy: { url: `socks5h://${v4}` } });
  try {
    const res = await fetch(`http://v6only.test:${web6.addr.port}/fetch`, { client });
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "/fetch from ::1\n");
    await assert.rejects(() => fetch(`http://v4only.test:${web6.addr.port}/`, { client }));
  } finally {
    client.close();
    await gw.shutdown({ grace: 0 });
    await web6.shutdown();
  }
  assert.ok(
    logger.records.some((r) => r.properties.type === "B"),
    "IPv4 client to IPv6 destination",
  );
});
