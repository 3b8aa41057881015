/**
 * The command line, run as a separate process with exactly the permission
 * and V8 flags of the `compile` task (the binary's), its config directory
 * swapped for a temporary one.
 */
import assert from "node:assert/strict";
import {
  describePredicate,
  echoServer,
  forEachLine,
  gatewayAddr,
  readLine,
  readN,
  run,
  socksConnect,
  stopChild,
  waitExit,
  withTimeout,
  writeAll,
} from "../helpers.ts";
import { serve } from "../../src/server/gateway.ts";
import denoJson from "../../deno.json" with { type: "json" };
import { binaryFlags, MAIN, runtimeFlags } from "../deploy/gateway_process.ts";

/** How long a gateway process gets to start listening. */
const START_MS = 20_000;
/** How long any other wait on a gateway process (a log line, its exit) may take. */
const WAIT_MS = 20_000;
/** How long a command that should exit at once (a usage error, check-config) may run. */
const QUICK_MS = 20_000;

async function configDir(yaml: string) {
  const dir = await Deno.makeTempDir({ prefix: "dualsocks-cli-" });
  const file = `${dir}/dualsocks.yaml`;
  await Deno.writeTextFile(file, yaml);
  return { dir, file, [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }) };
}

/** A running gateway process with its stderr parsed as JSON log lines. */
async function startCli(
  dir: string,
  args: string[],
  prefix: string[] = [],
  ready = { text: "listening on", addrs: "addrs" },
) {
  const cmd = prefix.length
    ? new Deno.Command(prefix[0], {
      args: [...prefix.slice(1), Deno.execPath(), "run", ...binaryFlags(dir), MAIN, ...args],
      stderr: "piped",
      stdout: "null",
    })
    : new Deno.Command(Deno.execPath(), {
      args: ["run", ...binaryFlags(dir), MAIN, ...args],
      stderr: "piped",
      stdout: "null",
    });
  const child = cmd.spawn();
  const lines: string[] = [];
  const waiters: { pred: (l: string) => boolean; resolve: (l: string) => void }[] = [];
  const pump = forEachLine(child.stderr, (line) => {
    lines.push(line);
    for (const w of [...waiters]) {
      if (w.pred(line)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  });
  // Settles once stderr has ended: every line the process wrote has been seen.
  const outputEnded = pump.then(() => {}, () => {});
  /** The first stderr line `pred` accepts; rejects when stderr ends without one, or after `ms`. */
  const waitFor = (pred: (l: string) => boolean, ms = WAIT_MS) => {
    const found = lines.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise<string>((resolve, reject) => {
      const fail = (why: string) => {
        const i = waiters.indexOf(waiter);
        if (i < 0) return; // already matched
        waiters.splice(i, 1);
        clearTimeout(timer);
        reject(
          new Error(`waitFor(${describePredicate(pred)}): ${why}; stderr:\n${lines.join("\n")}`),
        );
      };
      const waiter = {
        pred,
        resolve: (l: string) => {
          clearTimeout(timer);
          resolve(l);
        },
      };
      const timer = setTimeout(() => fail(`no matching line within ${ms} ms`), ms);
      waiters.push(waiter);
      outputEnded.then(() => fail("the process's stderr ended (it exited)"));
    });
  };
  const stop = () => stopChild(child, "the gateway process", { signal: "SIGKILL", output: pump });
  let listening;
  try {
    listening = JSON.parse(await waitFor((l) => l.includes(ready.text), START_MS));
  } catch (error) {
    await stop().catch(() => {});
    throw error;
  }
  const addrs: string[] = listening.properties[ready.addrs].split(" ");
  return {
    child,
    lines,
    addrs,
    waitFor,
    /** The exit status, once the process has exited by itself (bounded) and its stderr was read. */
    status: (ms = WAIT_MS) => waitExit(child, "the gateway process", { ms, output: pump }),
    /** Kills the process if it still runs, and waits (bounded) for it to be gone. */
    [Symbol.asyncDispose]: async () => {
      await stop();
    },
  };
}

function addrOf(text: string) {
  const m = /^\[?([^\]]+)\]?:(\d+)$/.exec(text)!;
  return { hostname: m[1], port: Number(m[2]) };
}

Deno.test("cli: deno task start and the binary run V8 alike, with flags this Deno accepts", async () => {
  const v8 = (task: string) => runtimeFlags(task).filter((f) => f.startsWith("--v8-flags="));
  const start = v8(denoJson.tasks.start);
  assert.deepEqual(start, v8(denoJson.tasks.compile), "the start and compile tasks' --v8-flags");
  // V8's memory reducer gives an idle heap's young generation back once it
  // starts; by default it waits 8 s after a full GC and 30 s after the heap
  // grew, so a burst of relays kept 16 MiB of young generation for half a minute.
  const values = new Map(
    start.flatMap((f) => f.slice("--v8-flags=".length).split(",")).map((f) => {
      const [name, value] = f.split("=");
      return [name, Number(value)] as const;
    }),
  );
  for (const name of ["--memory-reducer-delay-ms", "--gc-memory-reducer-start-delay-ms"]) {
    const ms = values.get(name);
    assert.ok(ms !== undefined && ms <= 1000, `expected ${name} of at most 1000, found ${ms}`);
  }
  // V8 grows each semi-space of the young generation to 16 MiB while
  // objects survive (thousands of relays opening), which alone was 8 KiB a
  // relay at 2,000; 4 MiB keeps an idle relay under 16 KiB from the start
  // (3 MiB saved no more and cost 3-7% of the session rate after a burst).
  const semi = values.get("--max-semi-space-size");
  assert.ok(
    semi !== undefined && semi <= 4,
    `expected --max-semi-space-size of at most 4 (MiB), found ${semi}`,
  );
  // A flag this V8 does not know stops `deno run` with an error: catch it here
  // rather than at the first start after a Deno upgrade. (What the cap saves
  // is measured by `deno task bench`; V8's own young-generation statistics
  // move too much from run to run to assert on.)
  const probe = await run(Deno.execPath(), ["eval", ...start, "0"], { timeoutMs: QUICK_MS });
  assert.equal(probe.code, 0, `deno eval ${start.join(" ")}: ${probe.stderr}`);
});

Deno.test("cli: starts from a config file, relays, and drains on SIGTERM", async () => {
  const dest = echoServer("127.0.0.1");
  await using cfg = await configDir(
    `listen: ["[::1]:0", "127.0.0.1:0"]\nshutdown:\n  grace: 30s\nlog:\n  format: json\n`,
  );
  try {
    await using gw = await startCli(cfg.dir, ["--config", cfg.file]);
    assert.equal(gw.addrs.length, 2);
    const { conn, reply } = await withTimeout(
      socksConnect(addrOf(gw.addrs[0]), "127.0.0.1", dest.addr.port),
      WAIT_MS,
      "the SOCKS handshake",
    );
    try {
      assert.equal(reply?.reply, 0);
      gw.child.kill("SIGTERM");
      await gw.waitFor((l) => l.includes("shutting down"));
      // The open relay still works during the grace period.
      await writeAll(conn, new TextEncoder().encode("draining"));
      const echoed = await withTimeout(readN(conn, 8), WAIT_MS, "the echo during the grace");
      assert.equal(new TextDecoder().decode(echoed), "draining");
    } finally {
      conn.close();
    }
    const status = await gw.status();
    assert.equal(status.code, 0);
    assert.ok(gw.lines.some((l) => l.includes('"stopped"')), gw.lines.join("\n"));
    const closed = gw.lines.map((l) => JSON.parse(l)).find((r) => r.properties.type === "C");
    assert.equal(closed?.properties.bytesUp, 8, "the session's close line was logged");
  } finally {
    await dest.close();
  }
});

Deno.test("cli: a bad config file names the file, key, line and column; nothing starts", async () => {
  await using cfg = await configDir(`listen:\n  - "[::1]:0"\n  - "::1:1080"\n`);
  const out = await run(Deno.execPath(), [
    "run",
    ...binaryFlags(cfg.dir),
    MAIN,
    "--config",
    cfg.file,
  ], { timeoutMs: QUICK_MS });
  assert.equal(out.code, 1);
  assert.ok(out.stderr.includes(`${cfg.file}:3:5: listen[1]:`), out.stderr);
  assert.match(out.stderr, /expected HOST:PORT/);
  assert.match(out.stderr, /found "::1:1080"/);
});

Deno.test("cli: check-config prints the effective configuration with secrets redacted", async () => {
  await using cfg = await configDir(
    `users:\n  - username: alice\n    password: hunter2\nresolver:\n  family: prefer-ipv4\n`,
  );
  const out = await run(Deno.execPath(), [
    "run",
    ...binaryFlags(cfg.dir),
    MAIN,
    "check-config",
    cfg.file,
    "--listen",
    "127.0.0.1:1081",
  ], { timeoutMs: QUICK_MS });
  assert.equal(out.code, 0, out.stderr);
  assert.match(out.stdout, /prefer-ipv4/);
  assert.match(out.stdout, /127\.0\.0\.1:1081/);
  assert.doesNotMatch(out.stdout, /\[::1\]:1080/, "--listen replaces the default list");
  assert.doesNotMatch(out.stdout, /hunter2/);
});

Deno.test("cli: permission, usage and listen errors are clear", async () => {
  await using cfg = await configDir("{}\n");
  const outside = await Deno.makeTempFile({ suffix: ".yaml" });
  try {
    const denied = await run(Deno.execPath(), [
      "run",
      ...binaryFlags(cfg.dir),
      MAIN,
      "--config",
      outside,
    ], { timeoutMs: QUICK_MS });
    assert.equal(denied.code, 1);
    assert.ok(denied.stderr.includes(outside), denied.stderr);
    assert.match(denied.stderr, /--allow-read/);
  } finally {
    await Deno.remove(outside);
  }
  // Were the misspelt flag ignored, the gateway would start and serve: the limit turns that
  // into a failure instead of a hang.
  const usage = await run(
    Deno.execPath(),
    ["run", ...binaryFlags(cfg.dir), MAIN, "--listne", "x"],
    { timeoutMs: QUICK_MS },
  );
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /--help/);
  const badListen = await run(Deno.execPath(), [
    "run",
    ...binaryFlags(cfg.dir),
    MAIN,
    "--listen",
    "::1:80",
  ], { timeoutMs: QUICK_MS });
  assert.equal(badListen.code, 2);
  assert.match(badListen.stderr, /--listen: expected HOST:PORT/);
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const inUse = await run(Deno.execPath(), [
    "run",
    ...binaryFlags(cfg.dir),
    MAIN,
    "--listen",
    `127.0.0.1:${taken.addr.port}`,
  ], { timeoutMs: QUICK_MS }).finally(() => taken.close());
  assert.equal(inUse.code, 1);
  assert.match(inUse.stderr, /cannot listen on 127\.0\.0\.1:\d+: address already in use/);
  const help = await run(Deno.execPath(), ["run", ...binaryFlags(cfg.dir), MAIN, "--help"], {
    timeoutMs: QUICK_MS,
  });
  assert.equal(help.code, 0);
  assert.match(help.stdout, /check-config FILE/);
});

Deno.test("cli: the accept loops survive accept errors (out of file descriptors)", async () => {
  const dest = echoServer("127.0.0.1");
  await using cfg = await configDir(`log:\n  format: json\ntimeouts:\n  handshake: 60s\n`);
  // A low descriptor limit makes accept() fail with EMFILE once clients pile up.
  const clients: Deno.TcpConn[] = [];
  try {
    await using gw = await startCli(cfg.dir, [
      "--config",
      cfg.file,
      "--listen",
      "127.0.0.1:0",
      "--admin",
      "127.0.0.1:0",
    ], ["prlimit", "--nofile=64"]);
    const addr = addrOf(gw.addrs[0]);
    const adminAt: string = JSON.parse(await gw.waitFor((l) => l.includes("admin API on")))
      .properties.addr;
    for (let i = 0; i < 80; i++) clients.push(await Deno.connect(addr));
    await gw.waitFor((l) => l.includes("accept on") && l.includes("failed"));
    // The admin server's accept fails too: that must not end the process.
    // (The failed accept closes its listener, so this client may see a reset.)
    await Deno.connect(addrOf(adminAt)).then((c) => clients.push(c), () => {});
    await gw.waitFor((l) => l.includes("admin API on") && l.includes("failed"));
    for (const c of clients.splice(0)) c.close();
    await gw.waitFor((l) => l.includes('"admin API on http://{addr}/ again"'));
    const health = await fetch(`http://${adminAt}/healthz`, {
      signal: AbortSignal.timeout(10_000),
    });
    assert.equal(health.status, 200, "the admin API listens again on the same address");
    await health.body?.cancel();
    const { conn, reply } = await withTimeout(
      socksConnect(addr, "127.0.0.1", dest.addr.port),
      10_000,
      "a new client after the accept errors",
    );
    conn.close();
    assert.equal(reply?.reply, 0, "still serving after accept errors");
    gw.child.kill("SIGTERM");
    assert.equal((await gw.status()).code, 0);
  } finally {
    for (const c of clients) c.close();
    await dest.close();
  }
});

/** `dualsocks forward` on 127.0.0.1:0 to `to` through `via`, once it says it is forwarding. */
function startForward(dir: string, to: string, via: string, prefix: string[] = []) {
  return startCli(
    dir,
    ["forward", "--listen", "127.0.0.1:0", "--to", to, "--via", via, "--log-format", "json"],
    prefix,
    { text: "forwarding", addrs: "listen" },
  );
}

Deno.test("cli: forward keeps accepting after accept errors (out of file descriptors)", async () => {
  await using cfg = await configDir("{}\n");
  const dest = echoServer("127.0.0.1");
  const gw = serve({ listen: ["127.0.0.1:0"] });
  const clients: Deno.TcpConn[] = [];
  try {
    await using fwd = await startForward(
      cfg.dir,
      `127.0.0.1:${dest.addr.port}`,
      `socks5://127.0.0.1:${gatewayAddr(gw, 4).port}`,
      ["prlimit", "--nofile=64"],
    );
    const addr = addrOf(fwd.addrs[0]);
    for (let i = 0; i < 80; i++) clients.push(await Deno.connect(addr));
    await fwd.waitFor((l) => l.includes("Too many open files"));
    for (const c of clients.splice(0)) c.close();
    // Still forwarding: a new connection is carried to the echo server.
    const conn = await Deno.connect(addr);
    clients.push(conn);
    await writeAll(conn, new TextEncoder().encode("still here\n"));
    assert.equal(await withTimeout(readLine(conn), 10_000, "echo"), "still here");
    fwd.child.kill("SIGTERM");
    assert.equal((await fwd.status()).code, 0);
  } finally {
    for (const c of clients) c.close();
    await gw.shutdown({ grace: 0 });
    await dest.close();
  }
});

Deno.test("cli: forward carries curl through a gateway to a name only the gateway knows", async () => {
  await using cfg = await configDir("{}\n");
  const web = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    () => new Response("forwarded\n"),
  );
  const gw = serve({
    listen: ["[::1]:0"],
    resolver: () => Promise.resolve([{ address: "127.0.0.1", family: 4 }]),
  });
  try {
    const gwAddr = gatewayAddr(gw, 6);
    await using fwd = await startForward(
      cfg.dir,
      `v4only.test:${web.addr.port}`,
      `socks5://[::1]:${gwAddr.port}`,
    );
    const out = await run("curl", ["-sS", "--max-time", "10", `http://${fwd.addrs[0]}/`]);
    assert.equal(out.code, 0, out.stderr);
    assert.equal(out.stdout, "forwarded\n");
    fwd.child.kill("SIGTERM");
    assert.equal((await fwd.status()).code, 0);
  } finally {
    await gw.shutdown({ grace: 0 });
    await web.shutdown();
  }
  assert.equal(gw.stats.relaysByType.C, 1, "forwarder [::1] -> gateway -> 127.0.0.1: type C");
  const usage = await run(Deno.execPath(), [
    "run",
    ...binaryFlags(cfg.dir),
    MAIN,
    "forward",
    "--to",
    "x:1",
  ], { timeoutMs: QUICK_MS });
  assert.equal(usage.code, 2);
  assert.match(usage.stderr, /forward: expected --listen HOST:PORT/);
});

Deno.test("cli: a client-supplied name cannot forge a line in the text log", async () => {
  await using cfg = await configDir("admin:\n  listen: off\n");
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...binaryFlags(cfg.dir), MAIN, "--config", cfg.file, "--listen", "127.0.0.1:0"],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  let port: (p: number) => void;
  const listening = new Promise<number>((r) => (port = r));
  let closed: () => void;
  const sessionLogged = new Promise<void>((r) => (closed = r));
  const reading = forEachLine(child.stderr, (line) => {
    lines.push(line);
    const m = /listening on 127\.0\.0\.1:(\d+)/.exec(line);
    if (m) port(Number(m[1]));
    if (line.includes("session 1 ")) closed();
  });
  try {
    const p = await withTimeout(listening, 20_000, "listening line");
    const name = "evil.test\nsession 7 A forged";
    const { conn } = await withTimeout(
      socksConnect({ hostname: "127.0.0.1", port: p }, name, 80),
      WAIT_MS,
      "the SOCKS handshake",
    );
    conn.close();
    await withTimeout(sessionLogged, 20_000, "the session's log line");
  } finally {
    await stopChild(child, "the gateway process", { output: reading });
  }
  assert.ok(!lines.some((l) => l.startsWith("session 7 A forged")), lines.join("\n"));
  assert.ok(lines.some((l) => l.includes(JSON.stringify("evil.test\nsession 7 A forged:80"))));
});
