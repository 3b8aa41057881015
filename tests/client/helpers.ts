/**
 * Test helpers for the Socks Lib client: independent SOCKS5 servers (Dante,
 * microsocks) started as real processes on loopback, destination servers,
 * and scripted peers for the failure cases. Everything listens on port 0 or
 * a port just found free, and everything is closed by its `stop`/dispose.
 *
 * To test against another gateway (e.g. dualsocks' own `serve()`), add a
 * {@linkcode GatewayKind} to {@linkcode GATEWAY_KINDS}.
 *
 * @module
 */

import {
  echoUntilEof,
  readAll,
  startServer,
  stopChild,
  type TestServer,
  withTimeout as deadline,
  writeAll,
} from "../helpers.ts";
export { deadline, readAll, startServer, type TestServer, writeAll };
import { serve } from "../../src/server/gateway.ts";
import { ResolveError } from "../../src/server/errors.ts";
import { type Resolver, systemResolver } from "../../src/server/resolver.ts";
import { joinHostPort } from "../../src/protocol/address.ts";

/** A running SOCKS5 gateway. */
export interface Gateway extends AsyncDisposable {
  /** A human-readable name ("dante", "microsocks", ...). */
  readonly name: string;
  /** The port it listens on (same port on every listen address). */
  readonly port: number;
  /** The families it listens on (127.0.0.1 and/or ::1). */
  readonly families: readonly (4 | 6)[];
  /** The gateway URL for a family it listens on. */
  url(family: 4 | 6, auth?: { username: string; password: string }): string;
  /** What the gateway process wrote, for failure messages. */
  log(): string;
  /** Stops the gateway and waits for it to be gone. */
  stop(): Promise<void>;
}

/** How to start one kind of gateway. */
export interface GatewayKind {
  /** A human-readable name. */
  readonly name: string;
  /** Whether one instance can listen on 127.0.0.1 and ::1 together. */
  readonly dualStack: boolean;
  /** Whether it can check an RFC 1929 username/password of our choosing. */
  readonly userPass: boolean;
  /** Whether it passes a half-close (FIN) on instead of closing both ways. */
  readonly halfClose: boolean;
  /** Starts an instance. */
  start(options: GatewayStartOptions): Promise<Gateway>;
}

/** Options for {@linkcode GatewayKind.start}. */
export interface GatewayStartOptions {
  /** The loopback families to listen on. */
  families: readonly (4 | 6)[];
  /** Require this login (only kinds with `userPass`). */
  auth?: { username: string; password: string };
}

const LOOPBACK = { 4: "127.0.0.1", 6: "::1" } as const;
const START_DEADLINE_MS = 10_000;

/** A port that was free on 127.0.0.1 and ::1 a moment ago. */
export function freePort(): number {
  for (let attempt = 0; attempt < 20; attempt++) {
    const l4 = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = l4.addr.port;
    try {
      const l6 = Deno.listen({ hostname: "::1", port });
      l6.close();
      return port;
    } catch {
      // taken on ::1: try another
    } finally {
      l4.close();
    }
  }
  throw new Error(
    "freePort: expected a port free on both 127.0.0.1 and ::1, found none in 20 tries",
  );
}

/** Reads exactly `n` bytes (rejects at an early EOF). */
export async function readExactly(
  conn: { read(p: Uint8Array): Promise<number | null> },
  n: number,
): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let off = 0;
  while (off < n) {
    const got = await conn.read(out.subarray(off));
    if (got === null) throw new Error(`readExactly: expected ${n} bytes, found EOF after ${off}`);
    off += got;
  }
  return out;
}

/**
 * Sends `text` and reads back as many bytes (an echo), without relying on
 * half-close: microsocks, for one, closes both ways at the first EOF.
 */
export async function exchange(
  conn: { read(p: Uint8Array): Promise<number | null>; write(p: Uint8Array): Promise<number> },
  text: string,
): Promise<string> {
  const bytes = new TextEncoder().encode(text);
  await writeAll(conn, bytes);
  return new TextDecoder().decode(await readExactly(conn, bytes.length));
}

/** Sends `text`, half-closes, and returns everything received until EOF. */
export async function exchangeHalfClose(
  conn: {
    read(p: Uint8Array): Promise<number | null>;
    write(p: Uint8Array): Promise<number>;
    closeWrite(): Promise<void>;
  },
  text: string,
): Promise<string> {
  await writeAll(conn, new TextEncoder().encode(text));
  await conn.closeWrite();
  return new TextDecoder().decode(await readAll(conn));
}

/** An echo server: sends back everything, half-closes at the client's EOF. */
export function startEcho(hostname: string): TestServer {
  return startServer(hostname, async (conn) => {
    await echoUntilEof(conn);
    await conn.closeWrite();
    await readAll(conn);
  });
}

/** A server that speaks first: sends `banner`, then echoes. */
export function startGreeter(hostname: string, banner: string): TestServer {
  return startServer(hostname, async (conn) => {
    await writeAll(conn, new TextEncoder().encode(banner));
    await echoUntilEof(conn);
    await conn.closeWrite();
  });
}

function spawn(cmd: string, args: string[], pkg: string): Deno.ChildProcess {
  try {
    return new Deno.Command(cmd, { args, stdin: "null", stdout: "null", stderr: "piped" }).spawn();
  } catch (err) {
    if (err instanceof Deno.errors.NotFound) {
      throw new Error(
        `${cmd} not found: these tests need it as an independent SOCKS5 server; install the Debian package ${pkg} (apt-get install ${pkg})`,
      );
    }
    throw err;
  }
}

/** Collects a process's stderr; `waitFor` resolves when a line matches. */
class LogTap {
  #text = "";
  #waiters: { re: RegExp; resolve: () => void }[] = [];
  readonly done: Promise<void>;
  constructor(stream: ReadableStream<Uint8Array>) {
    this.done = (async () => {
      try {
        for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
          this.#text += chunk;
          this.#waiters = this.#waiters.filter((w) => {
            if (!w.re.test(this.#text)) return true;
            w.resolve();
            return false;
          });
        }
      } catch {
        // the process went away
      }
    })();
  }
  get text(): string {
    return this.#text;
  }
  waitFor(re: RegExp): Promise<void> {
    if (re.test(this.#text)) return Promise.resolve();
    return new Promise((resolve) => this.#waiters.push({ re, resolve }));
  }
}

/** Waits until `hostname:port` accepts a TCP connection, or the process exits. */
async function waitAccepting(
  hostname: string,
  port: number,
  child: Deno.ChildProcess,
  what: string,
  log: () => string,
): Promise<void> {
  let exited = false;
  child.status.then(() => exited = true);
  const until = Date.now() + START_DEADLINE_MS;
  for (let delay = 2;; delay = Math.min(delay * 2, 50)) {
    if (exited) throw new Error(`${what} exited before it accepted connections:\n${log()}`);
    try {
      const c = await Deno.connect({ hostname, port });
      c.close();
      return;
    } catch {
      if (Date.now() > until) {
        throw new Error(
          `${what}: expected it to accept on ${hostname}:${port} within ${START_DEADLINE_MS} ms:\n${log()}`,
        );
      }
    }
    // Nothing to await but the port itself: back off briefly between probes.
    await new Promise((r) => setTimeout(r, delay));
  }
}

/** How long a gateway process gets after SIGTERM before SIGKILL. */
const STOP_GRACE_MS = 5_000;

/** SIGTERM, then SIGKILL past the grace; every wait bounded (rejects if the process stays). */
async function stopProcess(child: Deno.ChildProcess, tap: LogTap, what: string): Promise<void> {
  await stopChild(child, what, { graceMs: STOP_GRACE_MS, output: tap.done });
}

function makeGateway(
  name: string,
  port: number,
  families: readonly (4 | 6)[],
  child: Deno.ChildProcess,
  tap: LogTap,
): Gateway {
  let stopped: Promise<void> | undefined;
  const stop = () => stopped ??= stopProcess(child, tap, name);
  return gatewayHandle(name, port, families, stop, () => tap.text);
}

function gatewayHandle(
  name: string,
  port: number,
  families: readonly (4 | 6)[],
  stop: () => Promise<void>,
  log: () => string,
): Gateway {
  return {
    name,
    port,
    families,
    url(family, auth) {
      if (!families.includes(family)) throw new Error(`${name} does not listen on IPv${family}`);
      const host = family === 6 ? "[::1]" : "127.0.0.1";
      const cred = auth
        ? `${encodeURIComponent(auth.username)}:${encodeURIComponent(auth.password)}@`
        : "";
      return `socks5://${cred}${host}:${port}`;
    },
    log,
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

/**
 * The resolver hook of the in-process dualsocks: `v4only.test` and
 * `v6only.test` (names no system resolver here knows), `localhost` through
 * the system resolver, and any other name fails without a DNS query.
 */
export const testResolver: Resolver = (name, options) => {
  if (name === "v4only.test") return Promise.resolve([{ address: "127.0.0.1", family: 4 }]);
  if (name === "v6only.test") return Promise.resolve([{ address: "::1", family: 6 }]);
  if (name === "localhost") return systemResolver(name, options);
  return Promise.reject(new ResolveError(name, "no such name"));
};

/** dualsocks itself, in process: `serve()` on loopback, the same port on both families. */
export const dualsocks: GatewayKind = {
  name: "dualsocks",
  dualStack: true,
  userPass: true,
  halfClose: true,
  start({ families, auth }) {
    const port = freePort();
    const gw = serve({
      listen: families.map((f) => joinHostPort(LOOPBACK[f], port)),
      users: auth ? [auth] : undefined,
      resolver: testResolver,
    });
    let stopped: Promise<void> | undefined;
    const stop = () => stopped ??= gw.shutdown({ grace: 0 });
    return Promise.resolve(gatewayHandle("dualsocks", port, families, stop, () => ""));
  },
};

/**
 * Dante (Debian package dante-server) on loopback: `danted -f CONF -p PIDFILE`
 * with a config written to a temporary directory, no authentication, every
 * request allowed, the loopback interface as external.
 */
export const dante: GatewayKind = {
  name: "dante",
  dualStack: true,
  userPass: false,
  halfClose: true,
  async start({ families, auth }) {
    // With `auth`, Dante checks it against the system password database: it
    // must be a system account (and danted must run as root to read it).
    const dir = await Deno.makeTempDir({ prefix: "dualsocks-dante-" });
    try {
      const port = freePort();
      const conf = [
        "logoutput: stderr",
        ...families.map((f) => `internal: ${LOOPBACK[f]} port = ${port}`),
        "external: lo",
        auth ? "socksmethod: username" : "socksmethod: none",
        "clientmethod: none",
        "client pass { from: 0/0 to: 0/0 }",
        "socks pass { from: 0/0 to: 0/0 }",
        "",
      ].join("\n");
      await Deno.writeTextFile(`${dir}/danted.conf`, conf);
      const child = spawn(
        "danted",
        ["-f", `${dir}/danted.conf`, "-p", `${dir}/danted.pid`],
        "dante-server",
      );
      const tap = new LogTap(child.stderr);
      const gw = makeGateway("dante", port, families, child, tap);
      try {
        const ready = tap.waitFor(/running/);
        const exited = child.status.then((s) => {
          throw new Error(`danted exited (code ${s.code}) before it was running:\n${tap.text}`);
        });
        exited.catch(() => {});
        await deadline(Promise.race([ready, exited]), START_DEADLINE_MS, "danted start");
        for (const f of families) {
          await waitAccepting(LOOPBACK[f], port, child, "danted", () => tap.text);
        }
      } catch (err) {
        await gw.stop();
        throw err;
      }
      const stop = gw.stop;
      return {
        ...gw,
        stop: async () => {
          await stop();
          await Deno.remove(dir, { recursive: true }).catch(() => {});
        },
        [Symbol.asyncDispose]: async () => {
          await stop();
          await Deno.remove(dir, { recursive: true }).catch(() => {});
        },
      };
    } catch (err) {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      throw err;
    }
  },
};

/** microsocks (Debian package microsocks): one listen address, optional `-u`/`-P` login. */
export const microsocks: GatewayKind = {
  name: "microsocks",
  dualStack: false,
  userPass: true,
  halfClose: false,
  async start({ families, auth }) {
    if (families.length !== 1) {
      throw new Error("microsocks listens on one address: give one family");
    }
    const family = families[0];
    const port = freePort();
    const args = ["-i", LOOPBACK[family], "-p", String(port)];
    if (auth) args.push("-u", auth.username, "-P", auth.password);
    const child = spawn("microsocks", args, "microsocks");
    const tap = new LogTap(child.stderr);
    const gw = makeGateway("microsocks", port, families, child, tap);
    try {
      await waitAccepting(LOOPBACK[family], port, child, "microsocks", () => tap.text);
    } catch (err) {
      await gw.stop();
      throw err;
    }
    return gw;
  },
};

/**
 * The independent gateways every CONNECT test runs against. The lead adds
 * dualsocks' own `serve()` is the first.
 */
export const GATEWAY_KINDS: readonly GatewayKind[] = [dualsocks, dante, microsocks];

/** Starts `kind` listening on `family`, or on both when it can. */
export function startGateway(kind: GatewayKind, families: readonly (4 | 6)[]): Promise<Gateway> {
  return kind.start({ families: kind.dualStack ? families : [families[0]] });
}
