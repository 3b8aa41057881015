/**
 * The HTTP proxy front door with real clients: curl (forwarding and
 * --proxytunnel, with and without credentials, proxy on 127.0.0.1 and
 * [::1]), wget, git clone over dumb HTTP, Deno fetch with HTTP_PROXY; bodies
 * checked by SHA-256. Everything on loopback.
 */

import assert from "node:assert/strict";
import { serve } from "../../src/server/gateway.ts";
import { gatewayAddr, readAll, recordingLogger, run, withTimeout, writeAll } from "../helpers.ts";
import { origin, pattern, raw, sha256, statuses } from "./http_helpers.ts";

const ENV = { PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin", HOME: "/nonexistent" };

function proxyUrl(gw: ReturnType<typeof serve>, family: 4 | 6): string {
  const a = gatewayAddr(gw, family);
  return family === 6 ? `http://[${a.hostname}]:${a.port}` : `http://${a.hostname}:${a.port}`;
}

function curl(args: string[]) {
  return run("curl", ["-sS", "--noproxy", "", "--max-time", "30", ...args], {
    env: ENV,
    clearEnv: true,
  });
}

Deno.test("http proxy: curl forwards GET and POST, CONNECT tunnels, proxy on 127.0.0.1 and [::1]; bodies by sha256", async () => {
  await using o4 = origin("127.0.0.1");
  await using o6 = origin("::1");
  const logger = recordingLogger();
  const gw = serve({ listen: ["127.0.0.1:0", "[::1]:0"], logger });
  const dir = await Deno.makeTempDir();
  try {
    const size = 3 * 1024 * 1024 + 17;
    const want = await sha256(pattern(size));
    const upload = pattern(2 * 1024 * 1024 + 5, 7);
    await Deno.writeFile(`${dir}/up.bin`, upload);
    for (const family of [4, 6] as const) {
      for (const o of [o4, o6]) {
        for (const tunnel of [false, true]) {
          const how = `proxy IPv${family}, origin ${o.authority}, ${
            tunnel ? "CONNECT" : "forward"
          }`;
          const t = tunnel ? ["--proxytunnel"] : [];
          for (const q of ["", "?chunked"]) {
            const r = await curl([
              ...t,
              "--proxy",
              proxyUrl(gw, family),
              "-o",
              `${dir}/out`,
              "-w",
              "%{http_code}",
              `http://${o.authority}/bytes/${size}${q}`,
            ]);
            assert.equal(r.code, 0, `${how} ${q}: ${r.stderr}`);
            assert.equal(r.stdout, "200");
            assert.equal(await sha256(await Deno.readFile(`${dir}/out`)), want, `${how} ${q}`);
          }
          // Uploads: Content-Length and chunked request bodies.
          for (const chunked of [false, true]) {
            const r = await curl([
              ...t,
              "--proxy",
              proxyUrl(gw, family),
              ...(chunked ? ["-H", "Transfer-Encoding: chunked"] : []),
              "--data-binary",
              `@${dir}/up.bin`,
              `http://${o.authority}/echo`,
            ]);
            assert.equal(r.code, 0, `${how} upload: ${r.stderr}`);
            const seen = JSON.parse(r.stdout);
            assert.equal(seen.length, upload.length, how);
            assert.equal(seen.sha256, await sha256(upload), how);
            // Forwarded requests carry Via; a tunnel's bytes are the client's own.
            assert.equal(seen.headers.via, tunnel ? undefined : "1.1 dualsocks", how);
            assert.equal(seen.headers["proxy-connection"], undefined, how);
          }
        }
      }
    }
    // The session log: protocol http, the RFC 3089 type from the real families.
    for (const type of ["A", "B", "C", "D"]) {
      await logger.waitFor((p) =>
        p.protocol === "http" && p.type === type && p.reply === "0 (succeeded)"
      );
    }
  } finally {
    await gw.shutdown({ grace: 0 });
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("http proxy: one keep-alive client connection, requests to different destinations", async () => {
  await using a = origin("127.0.0.1");
  await using b = origin("::1");
  const logger = recordingLogger();
  const gw = serve({ listen: ["127.0.0.1:0"], logger });
  try {
    const conn = await Deno.connect(gatewayAddr(gw, 4));
    const te = new TextEncoder();
    const reqs = [a, b, a, a].map((o, i) =>
      `GET http://${o.authority}/echo?n=${i} HTTP/1.1\r\nHost: ${o.authority}\r\n` +
      (i === 3 ? "Connection: close\r\n" : "") + "\r\n"
    );
    // One at a time: each response must come before the next request is sent.
    let text = "";
    const dec = new TextDecoder();
    const buf = new Uint8Array(65536);
    for (const [i, r] of reqs.entries()) {
      await writeAll(conn, te.encode(r));
      while (!text.includes(`"url":"/echo?n=${i}"`)) {
        const n = await withTimeout(conn.read(buf), 10_000, `response ${i}`);
        assert.ok(n !== null, `closed before response ${i}`);
        text += dec.decode(buf.subarray(0, n));
      }
    }
    assert.equal((await withTimeout(readAll(conn), 10_000, "close")).length, 0);
    conn.close();
    assert.deepEqual(statuses(text), [200, 200, 200, 200]);
    assert.deepEqual(a.seen.map((s) => s.url), ["/echo?n=0", "/echo?n=2", "/echo?n=3"]);
    assert.deepEqual(b.seen.map((s) => s.url), ["/echo?n=1"]);
    // Host is the target's; the last one asked to close and was answered so.
    assert.equal(b.seen[0].headers.host, b.authority);
    assert.match(text.split("HTTP/1.1 200").at(-1)!, /Connection: close/i);
    const line = await logger.waitFor((p) => p.protocol === "http" && p.id !== undefined);
    assert.equal(line.destination, a.authority, "the latest destination");
    assert.equal(gw.stats.sessionsTotal, 1);
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

Deno.test("http proxy: Proxy-Authorization Basic against the users; 407 with a challenge", async () => {
  await using o = origin("127.0.0.1");
  const logger = recordingLogger();
  const gw = serve({
    listen: ["127.0.0.1:0", "[::1]:0"],
    users: [{ username: "alice", password: "s3cret" }, { username: "bøb", password: "pä:ss" }],
    logger,
  });
  try {
    for (const family of [4, 6] as const) {
      for (const tunnel of [[], ["--proxytunnel"]]) {
        const url = `http://${o.authority}/echo`;
        const ok = await curl([
          ...tunnel,
          "--proxy",
          proxyUrl(gw, family),
          "--proxy-user",
          "alice:s3cret",
          url,
        ]);
        assert.equal(ok.code, 0, ok.stderr);
        assert.equal(
          JSON.parse(ok.stdout).headers["proxy-authorization"],
          undefined,
          "not forwarded",
        );
        const none = await curl([
          ...tunnel,
          "--proxy",
          proxyUrl(gw, family),
          "-w",
          "%{http_code}",
          "-o",
          "/dev/null",
          url,
        ]);
        const wrong = await curl([
          ...tunnel,
          "--proxy",
          proxyUrl(gw, family),
          "--proxy-user",
          "alice:nope",
          "-w",
          "%{http_code}",
          "-o",
          "/dev/null",
          url,
        ]);
        if (tunnel.length === 0) {
          assert.equal(none.stdout, "407");
          assert.equal(wrong.stdout, "407");
        } else {
          // curl reports the CONNECT's 407 as a failure to tunnel.
          assert.notEqual(none.code, 0);
          assert.match(none.stderr, /407/);
          assert.match(wrong.stderr, /407/);
        }
      }
    }
    // UTF-8 user and a colon in the password.
    const utf8 = await curl([
      "--proxy",
      proxyUrl(gw, 4),
      "--proxy-user",
      "bøb:pä:ss",
      `http://${o.authority}/echo`,
    ]);
    assert.equal(utf8.code, 0, utf8.stderr);
    await logger.waitFor((p) => p.user === "bøb");
    // The challenge itself.
    const text = await raw(
      gatewayAddr(gw, 4),
      `GET http://${o.authority}/echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
    );
    assert.match(text, /^HTTP\/1.1 407 Proxy Authentication Required\r\n/);
    assert.match(text, /\r\nProxy-Authenticate: Basic realm="dualsocks"\r\n/);
    assert.ok(gw.stats.authFailures >= 4, `auth failures ${gw.stats.authFailures}`);
    await logger.waitFor((p) => /authentication failed for user "alice"/.test(String(p.reason)));
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});

Deno.test("http proxy: wget with http_proxy, and git clone over dumb HTTP through it", async () => {
  const dir = await Deno.makeTempDir();
  // A bare repository served as files (git's dumb HTTP protocol).
  const git = (args: string[], cwd = dir) =>
    run("git", args, {
      cwd,
      env: {
        ...ENV,
        GIT_CONFIG_NOSYSTEM: "1",
        GIT_AUTHOR_NAME: "t",
        GIT_AUTHOR_EMAIL: "t@example.test",
        GIT_COMMITTER_NAME: "t",
        GIT_COMMITTER_EMAIL: "t@example.test",
      },
      clearEnv: true,
    });
  const ok = async (p: Promise<{ code: number; stderr: string }>) => {
    const r = await p;
    assert.equal(r.code, 0, r.stderr);
    return r;
  };
  await ok(git(["init", "-q", "-b", "main", "src"]));
  await Deno.writeFile(`${dir}/src/data.bin`, pattern(300_000, 3));
  await ok(git(["add", "data.bin"], `${dir}/src`));
  await ok(git(["commit", "-q", "-m", "one"], `${dir}/src`));
  await ok(git(["clone", "-q", "--bare", "src", "repo.git"]));
  await ok(git(["update-server-info"], `${dir}/repo.git`));
  const files = Deno.serve({ hostname: "::1", port: 0, onListen() {} }, async (req) => {
    const path = decodeURIComponent(new URL(req.url).pathname);
    if (path.includes("..")) return new Response("no", { status: 400 });
    try {
      return new Response(await Deno.readFile(`${dir}${path}`));
    } catch {
      return new Response("not found", { status: 404 });
    }
  });
  const logger = recordingLogger();
  const gw = serve({ listen: ["127.0.0.1:0"], logger });
  try {
    const port = (files.addr as Deno.NetAddr).port;
    const proxy = { http_proxy: proxyUrl(gw, 4), no_proxy: "" };
    const w = await run("wget", ["-q", "-O", `${dir}/w.bin`, `http://[::1]:${port}/src/data.bin`], {
      env: { ...ENV, ...proxy },
      clearEnv: true,
    });
    assert.equal(w.code, 0, w.stderr);
    assert.equal(
      await sha256(await Deno.readFile(`${dir}/w.bin`)),
      await sha256(pattern(300_000, 3)),
    );
    await logger.waitFor((p) => p.protocol === "http" && p.type === "B");
    const c = await run("git", ["clone", "-q", `http://[::1]:${port}/repo.git`, `${dir}/clone`], {
      env: { ...ENV, ...proxy, GIT_CONFIG_NOSYSTEM: "1", GIT_TERMINAL_PROMPT: "0" },
      clearEnv: true,
    });
    assert.equal(c.code, 0, c.stderr);
    assert.equal(
      await sha256(await Deno.readFile(`${dir}/clone/data.bin`)),
      await sha256(pattern(300_000, 3)),
    );
    // git's requests went through the proxy: info/refs at least.
    await logger.waitFor((p) => p.protocol === "http" && p.destination === `[::1]:${port}`);
    assert.ok(gw.stats.sessionsByProtocol.http >= 2);
  } finally {
    await gw.shutdown({ grace: 0 });
    await files.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("http proxy: Deno fetch in a child process with HTTP_PROXY", async () => {
  await using o = origin("::1");
  const logger = recordingLogger();
  const gw = serve({ listen: ["127.0.0.1:0"], logger });
  try {
    const size = 1_000_003;
    const script = `
      const res = await fetch("http://${o.authority}/bytes/${size}?chunked");
      const body = new Uint8Array(await res.arrayBuffer());
      const d = new Uint8Array(await crypto.subtle.digest("SHA-256", body));
      console.log(res.status, body.length, Array.from(d, (b) => b.toString(16).padStart(2, "0")).join(""));
    `;
    const dir = await Deno.makeTempDir();
    try {
      await Deno.writeTextFile(`${dir}/f.ts`, script);
      const out = await run(Deno.execPath(), [
        "run",
        "--allow-net",
        "--allow-env",
        "--no-config",
        `${dir}/f.ts`,
      ], {
        env: {
          ...ENV,
          HTTP_PROXY: proxyUrl(gw, 4),
          NO_PROXY: "",
          NO_COLOR: "1",
          DENO_DIR: `${dir}/deno`,
        },
        clearEnv: true,
      });
      assert.equal(out.code, 0, out.stderr);
      assert.equal(out.stdout.trim(), `200 ${size} ${await sha256(pattern(size))}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
    await logger.waitFor((p) => p.protocol === "http" && p.type === "B");
    assert.equal(o.seen.at(-1)!.headers.via, "1.1 dualsocks");
  } finally {
    await gw.shutdown({ grace: 0 });
  }
});
