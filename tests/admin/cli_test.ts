/**
 * The admin side of the command line, run as a separate process with only
 * `--allow-net --allow-read=<config file>`: SIGHUP and API reloads from the
 * file, SIGTERM drain with readiness 503, and the token rule.
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import {
  echoServer,
  forEachLine,
  run,
  socksConnect as socksConnectUnbounded,
  stopChild,
  waitExit,
  withTimeout,
} from "../helpers.ts";
import { assertProblem, call, echo, refused, until } from "./helpers.ts";

const MAIN = fileURLToPath(new URL("../../main.ts", import.meta.url));

async function configFile(yaml: string) {
  const dir = await Deno.makeTempDir({ prefix: "dualsocks-admin-" });
  const file = `${dir}/gw.yaml`;
  await Deno.writeTextFile(file, yaml);
  return {
    file,
    write: (text: string) => Deno.writeTextFile(file, text),
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }),
  };
}

const flags = (file: string) => ["--allow-net", `--allow-read=${file}`];
/** How long a gateway process may take to log a line, or to exit once told to. */
const WAIT_MS = 20_000;
/** How long a command that should exit at once (a refused config, check-config) may run. */
const QUICK_MS = 20_000;

interface LogRecord {
  level: string;
  message: string;
  properties: Record<string, unknown>;
}

/** `socksConnect`, bounded: a gateway that never answers fails the test instead of hanging it. */
const socksConnect = (...args: Parameters<typeof socksConnectUnbounded>) =>
  withTimeout(socksConnectUnbounded(...args), WAIT_MS, `SOCKS handshake to port ${args[0].port}`);

function addrOf(text: string) {
  const m = /^\[?([^\]]+)\]?:(\d+)$/.exec(text)!;
  return { hostname: m[1], port: Number(m[2]) };
}

/** The gateway as a process, its JSON log parsed; resolves once SOCKS and admin listen. */
async function startCli(file: string, args: string[] = [], options = { admin: true }) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...flags(file), MAIN, "--config", file, ...args],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const records: LogRecord[] = [];
  const raw: string[] = [];
  let ended = false;
  const pump = forEachLine(child.stderr, (line) => {
    raw.push(line);
    try {
      records.push(JSON.parse(line));
    } catch { /* not a log record */ }
  });
  child.status.then(() => (ended = true));
  const waitFor = (what: string, pred: (r: LogRecord) => boolean, from = 0) =>
    until(what, () => {
      const found = records.slice(from).find(pred);
      if (!found && ended) throw new Error(`process ended; stderr:\n${raw.join("\n")}`);
      return found;
    }, WAIT_MS).catch((e) => {
      throw new Error(`${e.message}\nstderr:\n${raw.join("\n")}`);
    });
  const stop = () => stopChild(child, "the gateway process", { signal: "SIGKILL", output: pump });
  let listening: LogRecord, adminLine: LogRecord | undefined;
  try {
    listening = await waitFor("listening", (r) => r.message.startsWith("listening on"));
    adminLine = options.admin
      ? await waitFor("admin", (r) => r.message.startsWith("admin API on"))
      : undefined;
  } catch (error) {
    await stop().catch(() => {}); // not left running when it never got ready
    throw error;
  }
  return {
    child,
    records,
    raw,
    waitFor,
    socks: String(listening.properties.addrs).split(" ").map(addrOf),
    admin: `http://${adminLine?.properties.addr}`,
    /** The exit status, once the process has exited by itself (bounded) and its stderr was read. */
    status: (ms = WAIT_MS) => waitExit(child, "the gateway process", { ms, output: pump }),
    /** Kills the process if it still runs, and waits (bounded) for it to be gone. */
    async [Symbol.asyncDispose]() {
      await stop();
    },
  };
}

Deno.test("cli admin: SIGHUP reloads the file; a bad file is logged and the old one kept", async () => {
  const dest = echoServer("127.0.0.1");
  await using cfg = await configFile(
    `listen: ["127.0.0.1:0"]\nadmin: {listen: "127.0.0.1:0"}\nlog: {format: json}\n`,
  );
  try {
    await using gw = await startCli(cfg.file);
    const [first] = gw.socks;
    const { conn, reply } = await socksConnect(first, "127.0.0.1", dest.addr.port);
    assert.equal(reply?.reply, 0);
    await echo(conn, "before the reload");

    await cfg.write(
      `listen: ["[::1]:0"]\nusers: [{username: carol, password: pw}]\n` +
        `admin: {listen: "127.0.0.1:0"}\nlog: {format: json}\n`,
    );
    let mark = gw.records.length;
    gw.child.kill("SIGHUP");
    const reloaded = await gw.waitFor(
      "the gateway's reload line",
      (r) => r.message.startsWith("reloaded: listening on"),
      mark,
    );
    await gw.waitFor("main's reload line", (r) => r.properties.source === "SIGHUP", mark);
    const [v6] = String(reloaded.properties.addrs).split(" ").map(addrOf);
    assert.equal(v6.hostname, "::1");
    assert.ok(await refused(first), "the removed listener stops accepting");
    const anonymous = await socksConnect(v6, "127.0.0.1", dest.addr.port);
    assert.equal(anonymous.method, 0xff, "new sessions need the new users");
    anonymous.conn.close();
    const carol = await socksConnect(v6, "127.0.0.1", dest.addr.port, {
      auth: { username: "carol", password: "pw" },
    });
    assert.equal(carol.reply?.reply, 0);
    carol.conn.close();
    await echo(conn, "the established relay keeps flowing");
    const live = await call(`${gw.admin}/api/v1/sessions`);
    assert.equal(live.json.sessions.length >= 1, true);

    // A bad file: the error is logged with its position; the old config keeps running.
    await cfg.write(`listen: ["[::1]:0"]\ntimeouts:\n  idle: soon\nlog: {format: json}\n`);
    mark = gw.records.length;
    gw.child.kill("SIGHUP");
    const failed = await gw.waitFor(
      "the reload error",
      (r) => r.message.includes("reload failed"),
      mark,
    );
    assert.equal(failed.level, "ERROR");
    assert.match(
      String(failed.properties.error),
      /gw\.yaml:3:9: timeouts\.idle: expected a duration/,
    );
    const still = await socksConnect(v6, "127.0.0.1", dest.addr.port, {
      auth: { username: "carol", password: "pw" },
    });
    assert.equal(still.reply?.reply, 0, "the old configuration still serves");
    still.conn.close();
    await echo(conn, "and still flowing");
    conn.close();

    gw.child.kill("SIGTERM");
    assert.equal((await gw.status()).code, 0);
  } finally {
    await dest.close();
  }
});

Deno.test("cli admin: SIGTERM drains: readiness 503, listeners closed, grace, exit 0", async () => {
  const dest = echoServer("127.0.0.1");
  await using cfg = await configFile(
    `listen: ["127.0.0.1:0"]\nadmin: {listen: "[::1]:0"}\nshutdown: {grace: 60s}\n` +
      `log: {format: json}\n`,
  );
  try {
    await using gw = await startCli(cfg.file);
    assert.match(gw.admin, /^http:\/\/\[::1\]:\d+$/);
    assert.equal((await call(`${gw.admin}/readyz`)).status, 200);
    const { conn } = await socksConnect(gw.socks[0], "127.0.0.1", dest.addr.port);
    await echo(conn, "before");

    gw.child.kill("SIGTERM");
    const notReady = await until("readiness 503", async () => {
      const a = await call(`${gw.admin}/readyz`);
      return a.status === 503 ? a : null;
    });
    assertProblem(notReady, 503, /draining/);
    assert.ok(await refused(gw.socks[0]), "the SOCKS listener is closed");
    // During the grace period: the admin API answers and the relay flows.
    assert.equal((await call(`${gw.admin}/healthz`)).status, 200);
    const metrics = await call(`${gw.admin}/metrics`);
    assert.match(metrics.text, /^dualsocks_draining 1$/m);
    assert.match(metrics.text, /^dualsocks_relays_active\{command="connect",type="A"\} 1$/m);
    await echo(conn, "during the grace");
    conn.close();
    const status = await gw.status();
    assert.equal(status.code, 0);
    assert.ok(gw.records.some((r) => r.message === "stopped"));
    const adminAddr = addrOf(gw.admin.slice("http://".length));
    assert.ok(await refused(adminAddr), "the admin API goes with the process");
  } finally {
    await dest.close();
  }
});

Deno.test("cli admin: POST /api/v1/reload re-reads the file; the token guards the API", async () => {
  const token = "s3cret-admin-token-0123";
  const yaml = (listen: string) =>
    `listen: ["${listen}"]\nadmin: {listen: "127.0.0.1:0", token: ${token}}\nlog: {format: json}\n`;
  await using cfg = await configFile(yaml("127.0.0.1:0"));
  await using gw = await startCli(cfg.file);
  const auth = { authorization: `Bearer ${token}` };
  assertProblem(await call(`${gw.admin}/api/v1/sessions`), 401);
  assertProblem(
    await call(`${gw.admin}/api/v1/reload`, {
      method: "POST",
      headers: { authorization: "Bearer x" },
    }),
    401,
  );
  assert.equal((await call(`${gw.admin}/readyz`)).status, 200, "probes need no token");
  const config = await call(`${gw.admin}/api/v1/config`, { headers: auth });
  assert.equal(config.status, 200);
  assert.equal(config.json.admin.token, "<redacted-token>");
  assert.ok(!config.text.includes(token));

  await cfg.write(yaml("[::1]:0"));
  const ok = await call(`${gw.admin}/api/v1/reload`, { method: "POST", headers: auth });
  assert.equal(ok.status, 200, ok.text);
  assert.match(ok.json.listen[0], /^\[::1\]:\d+$/);
  await gw.waitFor("the reload log", (r) => r.properties.source === "POST /api/v1/reload");

  await cfg.write("listen: [\n");
  const bad = await call(`${gw.admin}/api/v1/reload`, { method: "POST", headers: auth });
  assertProblem(bad, 422, /gw\.yaml:\d+:\d+: invalid YAML/);
  const after = await call(`${gw.admin}/api/v1/config`, { headers: auth });
  assert.match(after.json.listen[0], /^\[::1\]:0$/, "the running configuration is kept");
  gw.child.kill("SIGTERM");
  assert.equal((await gw.status()).code, 0);
});

Deno.test("cli admin: beyond loopback it needs a token; --admin off and bad values", async () => {
  await using cfg = await configFile(`admin: {listen: "0.0.0.0:0"}\n`);
  const fromFile = await run(Deno.execPath(), [
    "run",
    ...flags(cfg.file),
    MAIN,
    "--config",
    cfg.file,
  ], { timeoutMs: QUICK_MS });
  assert.equal(fromFile.code, 1);
  assert.match(
    fromFile.stderr,
    /gw\.yaml:1:17: admin\.token: required when admin\.listen \(0\.0\.0\.0:0\) is not a loopback address/,
  );
  await cfg.write(`listen: ["127.0.0.1:0"]\n`);
  const fromFlag = await run(Deno.execPath(), [
    "run",
    ...flags(cfg.file),
    MAIN,
    "--config",
    cfg.file,
    "--admin",
    "[::]:0",
  ], { timeoutMs: QUICK_MS });
  assert.equal(fromFlag.code, 2);
  assert.match(fromFlag.stderr, /--admin \[::\]:0: an admin API beyond loopback needs a token/);
  const badFlag = await run(Deno.execPath(), [
    "run",
    ...flags(cfg.file),
    MAIN,
    "--admin",
    "::1:9080",
  ], { timeoutMs: QUICK_MS });
  assert.equal(badFlag.code, 2);
  assert.match(badFlag.stderr, /--admin: expected HOST:PORT .* or off/);
  // check-config shows the effective admin settings.
  const checked = await run(Deno.execPath(), [
    "run",
    ...flags(cfg.file),
    MAIN,
    "check-config",
    cfg.file,
    "--admin",
    "off",
  ], { timeoutMs: QUICK_MS });
  assert.equal(checked.code, 0, checked.stderr);
  assert.match(checked.stdout, /admin:\n {2}listen: off/);
});

Deno.test("cli admin: a taken admin port is logged and the gateway serves without it", async () => {
  const dest = echoServer("127.0.0.1");
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  await using cfg = await configFile(
    `listen: ["127.0.0.1:0"]\nadmin: {listen: "127.0.0.1:${taken.addr.port}"}\n` +
      `log: {format: json}\n`,
  );
  try {
    await using gw = await startCli(cfg.file, [], { admin: false });
    const error = await gw.waitFor(
      "the admin error",
      (r) => r.message.startsWith("cannot listen for the admin API"),
    );
    assert.equal(error.level, "ERROR");
    assert.equal(error.properties.reason, "address already in use");
    const { conn, reply } = await socksConnect(gw.socks[0], "127.0.0.1", dest.addr.port);
    assert.equal(reply?.reply, 0, "the gateway serves anyway");
    conn.close();
    gw.child.kill("SIGTERM");
    assert.equal((await gw.status()).code, 0);
  } finally {
    taken.close();
    await dest.close();
  }
});
