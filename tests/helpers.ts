/**
 * Test helpers: real loopback servers and a raw SOCKS5 client built on the
 * codec, so tests can send exactly the bytes they mean to.
 *
 * @module
 */

import { BufferedReader } from "../src/io/buffered_reader.ts";
import { joinHostPort } from "../src/protocol/address.ts";
import {
  decodeAuthStatus,
  decodeMethodSelection,
  decodeReply,
  encodeCredentials,
  encodeGreeting,
  encodeRequest,
  type SocksReply,
  toSocksAddress,
} from "../src/protocol/codec.ts";
import type { Gateway } from "../src/server/gateway.ts";
import type { GatewayLogger } from "../src/log.ts";

/** A TCP server on loopback whose connections run `handler`; tracks and closes everything. */
export interface TestServer extends AsyncDisposable {
  /** The listen address. */
  readonly addr: Deno.NetAddr;
  /** Peers seen, in order. */
  readonly peers: Deno.NetAddr[];
  /** How many connections were accepted. */
  readonly accepted: number;
  /** `host:port` (bracketed for IPv6). */
  readonly hostPort: string;
  /** Closes the listener and every connection, and waits for the handlers. */
  close(): Promise<void>;
}

/** Starts a TCP server on `hostname` port 0 running `handler` per connection. */
export function startServer(
  hostname: string,
  handler: (conn: Deno.TcpConn) => Promise<void>,
): TestServer {
  const listener = Deno.listen({ hostname, port: 0 });
  const conns = new Set<Deno.TcpConn>();
  const tasks = new Set<Promise<void>>();
  const peers: Deno.NetAddr[] = [];
  const loop = (async () => {
    while (true) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch {
        return;
      }
      conns.add(conn);
      peers.push(conn.remoteAddr);
      const task = handler(conn).catch(() => {}).finally(() => {
        conns.delete(conn);
        closeQuietly(conn);
      });
      tasks.add(task);
      task.finally(() => tasks.delete(task));
    }
  })();
  const close = async () => {
    closeQuietly(listener);
    await loop;
    for (const c of conns) closeQuietly(c);
    while (tasks.size > 0) await Promise.all(tasks);
  };
  const addr = listener.addr;
  return {
    addr,
    peers,
    get accepted() {
      return peers.length;
    },
    hostPort: joinHostPort(addr.hostname, addr.port),
    close,
    [Symbol.asyncDispose]: close,
  };
}

function closeQuietly(c: { close(): void }): void {
  try {
    c.close();
  } catch { /* already closed */ }
}

/** Echoes every byte back, then closes its write side at EOF. */
export function echoServer(hostname: string): TestServer {
  return startServer(hostname, async (conn) => {
    await echoUntilEof(conn);
    await conn.closeWrite();
  });
}

/** Writes back every byte `conn` reads, until its EOF. */
export async function echoUntilEof(conn: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(64 * 1024);
  while (true) {
    const n = await conn.read(buf);
    if (n === null) return;
    await writeAll(conn, buf.subarray(0, n));
  }
}

/** Writes the peer address it saw as `HOST PORT\n`, then echoes. */
export function peerServer(hostname: string): TestServer {
  return startServer(hostname, async (conn) => {
    const { hostname: h, port } = conn.remoteAddr;
    await writeAll(conn, new TextEncoder().encode(`${h} ${port}\n`));
    await echoUntilEof(conn);
  });
}

export async function writeAll(conn: { write(p: Uint8Array): Promise<number> }, bytes: Uint8Array) {
  for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
}

/** Anything with `read` as in `Deno.Conn`. */
export type Readable = { read(p: Uint8Array): Promise<number | null> };

/**
 * How long the read helpers wait for the next bytes (or EOF) before failing:
 * a regression makes a test fail, not hang.
 */
export const READ_MS = 20_000;

/** One `read`, failing when nothing (not even EOF) comes within {@linkcode READ_MS}. */
function readSome(conn: Readable, p: Uint8Array, what: string): Promise<number | null> {
  return withTimeout(conn.read(p), READ_MS, what);
}

/** One read of up to one byte, bounded: `null` means the peer closed (EOF). */
export function readByte(conn: Readable): Promise<number | null> {
  return readSome(conn, new Uint8Array(1), "readByte: a byte or EOF");
}

/** Reads until EOF, leaving the connection open (unlike `conn.readable`, which closes it). */
export async function readAll(conn: Readable): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let total = 0;
  await readEach(conn, (p) => {
    parts.push(p.slice());
    total += p.length;
  });
  const out = new Uint8Array(total);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Calls `fn` with every chunk until EOF; the chunk is only valid during the call. */
export async function readEach(conn: Readable, fn: (chunk: Uint8Array) => void): Promise<void> {
  const buf = new Uint8Array(256 * 1024);
  while (true) {
    const n = await readSome(conn, buf, "readEach: the next bytes or EOF");
    if (n === null) return;
    fn(buf.subarray(0, n));
  }
}

/** Reads exactly `n` bytes (or fewer at EOF). */
export async function readN(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let off = 0;
  while (off < n) {
    const r = await readSome(conn, out.subarray(off), `readN: byte ${off + 1} of ${n}`);
    if (r === null) break;
    off += r;
  }
  return out.subarray(0, off);
}

/** Reads one line (without the newline). */
export async function readLine(conn: Deno.Conn): Promise<string> {
  const bytes: number[] = [];
  const one = new Uint8Array(1);
  while (true) {
    const n = await readSome(conn, one, "readLine: the rest of a line");
    if (n === null || one[0] === 10) break;
    bytes.push(one[0]);
  }
  return new TextDecoder().decode(new Uint8Array(bytes));
}

/** The gateway's listen address of one family. */
export function gatewayAddr(gw: Gateway, family: 4 | 6): Addr {
  const a = gw.addrs.find((a) => a.hostname.includes(":") === (family === 6));
  if (!a) throw new Error(`gateway has no IPv${family} listener`);
  return { hostname: a.hostname, port: a.port };
}

/** A TCP address, accepted by `Deno.connect`. */
export type Addr = { hostname: string; port: number };

export interface SocksResult {
  conn: Deno.TcpConn;
  method: number;
  authOk?: boolean;
  reply?: SocksReply;
}

/**
 * Runs a SOCKS5 handshake against `proxy` and returns the connection with
 * whatever the server answered (stopping early when it refuses). Fails, and
 * closes the connection, when the gateway does not answer within
 * {@linkcode READ_MS}.
 */
export async function socksConnect(
  proxy: Addr,
  target: string,
  port: number,
  options: { auth?: { username: string; password: string }; command?: number } = {},
): Promise<SocksResult> {
  const where = joinHostPort(proxy.hostname, proxy.port);
  const conn = await withTimeout(
    Deno.connect({ hostname: proxy.hostname, port: proxy.port }),
    READ_MS,
    `connect to ${where}`,
  );
  try {
    return await withTimeout(
      socksHandshake(conn, target, port, options),
      READ_MS,
      `SOCKS5 handshake with ${where}`,
    );
  } catch (error) {
    conn.close();
    throw error;
  }
}

async function socksHandshake(
  conn: Deno.TcpConn,
  target: string,
  port: number,
  options: { auth?: { username: string; password: string }; command?: number },
): Promise<SocksResult> {
  const reader = new BufferedReader(conn);
  await writeAll(conn, encodeGreeting({ methods: [options.auth ? 2 : 0] }));
  const method = await reader.decode(decodeMethodSelection, "method");
  if (method === 0xff) return { conn, method };
  let authOk: boolean | undefined;
  if (options.auth) {
    await writeAll(conn, encodeCredentials(options.auth));
    authOk = await reader.decode(decodeAuthStatus, "auth status");
    if (!authOk) return { conn, method, authOk };
  }
  await writeAll(
    conn,
    encodeRequest({ command: options.command ?? 1, address: toSocksAddress(target), port }),
  );
  const reply = await reader.decode(decodeReply, "reply");
  return { conn, method, authOk, reply };
}

/** How long `recordingLogger().waitFor` waits by default. */
export const WAIT_FOR_MS = 10_000;

/** A short, one-line rendering of a predicate's source, for failure messages. */
export function describePredicate(pred: (...args: never[]) => unknown, max = 120): string {
  const text = String(pred).replace(/\s+/g, " ").trim();
  return text.length > max ? `${text.slice(0, max - 3)}...` : text;
}

/** A logger hook that records every call. */
export function recordingLogger(): GatewayLogger & {
  records: { level: string; message: string; properties: Record<string, unknown> }[];
  /**
   * Resolves with the properties of the first record (past or future) that
   * `pred` accepts; rejects, naming `pred`, when none comes within `ms`.
   */
  waitFor(
    pred: (p: Record<string, unknown>) => boolean,
    ms?: number,
  ): Promise<Record<string, unknown>>;
} {
  const records: { level: string; message: string; properties: Record<string, unknown> }[] = [];
  const waiters: {
    pred: (p: Record<string, unknown>) => boolean;
    resolve: (p: Record<string, unknown>) => void;
  }[] = [];
  const rec = (level: string) => (message: string, properties: Record<string, unknown> = {}) => {
    records.push({ level, message, properties });
    for (const w of [...waiters]) {
      if (w.pred(properties)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(properties);
      }
    }
  };
  return {
    records,
    debug: rec("debug"),
    info: rec("info"),
    warn: rec("warn"),
    error: rec("error"),
    waitFor(pred, ms = WAIT_FOR_MS) {
      const found = records.find((r) => pred(r.properties));
      if (found) return Promise.resolve(found.properties);
      return new Promise((resolve, reject) => {
        const waiter = {
          pred,
          resolve: (p: Record<string, unknown>) => {
            clearTimeout(timer);
            resolve(p);
          },
        };
        const timer = setTimeout(() => {
          const i = waiters.indexOf(waiter);
          if (i >= 0) waiters.splice(i, 1);
          const last = records.slice(-5).map((r) => `  ${r.level} ${r.message}`).join("\n");
          reject(
            new Error(
              `waitFor(${describePredicate(pred)}): no log record matched within ${ms} ms ` +
                `(${records.length} records; last:\n${last || "  none"})`,
            ),
          );
        }, ms);
        waiters.push(waiter);
      });
    },
  };
}

/**
 * Calls `fn` with each line of a byte stream (a child's stderr, say) until
 * it ends; reading to the end keeps the child from blocking on a full pipe.
 */
export async function forEachLine(
  stream: ReadableStream<Uint8Array>,
  fn: (line: string) => void,
): Promise<void> {
  let rest = "";
  for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
    rest += chunk;
    let i;
    while ((i = rest.indexOf("\n")) >= 0) {
      fn(rest.slice(0, i));
      rest = rest.slice(i + 1);
    }
  }
  if (rest) fn(rest);
}

/** How long `run` lets a command take by default. */
export const RUN_MS = 60_000;
/** How long a process gets to go after SIGKILL (and its pipes to close) before we give up. */
const KILL_WAIT_MS = 5_000;

/** Options of {@linkcode run}: those of `Deno.Command`, and a time limit. */
export interface RunOptions extends Deno.CommandOptions {
  /** Kill the command (SIGKILL) and reject when it runs longer than this; default {@linkcode RUN_MS}. */
  timeoutMs?: number;
}

/**
 * Runs a command to completion and returns its exit code and output; kills
 * it and rejects, with what it wrote so far, when it takes longer than
 * `options.timeoutMs`.
 */
export async function run(
  cmd: string,
  args: string[],
  options: RunOptions = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const { timeoutMs = RUN_MS, ...commandOptions } = options;
  const child = new Deno.Command(cmd, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    ...commandOptions,
  }).spawn();
  const dec = new TextDecoder();
  const stdout: Uint8Array[] = [];
  const stderr: Uint8Array[] = [];
  const collect = async (stream: ReadableStream<Uint8Array>, into: Uint8Array[]) => {
    for await (const chunk of stream) into.push(chunk);
  };
  const text = (parts: Uint8Array[]) => {
    const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    parts.reduce((off, p) => (all.set(p, off), off + p.length), 0);
    return dec.decode(all);
  };
  const done = Promise.all([
    child.status,
    collect(child.stdout, stdout),
    collect(child.stderr, stderr),
  ]);
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    killQuietly(child, "SIGKILL");
  }, timeoutMs);
  try {
    // After the kill, the wait is bounded too (a grandchild may hold the pipes open).
    const [status] = await withTimeout(done, timeoutMs + KILL_WAIT_MS, `${cmd} after SIGKILL`)
      .catch((error) => {
        if (timedOut) return [undefined] as const;
        throw error;
      });
    const [out, err] = [text(stdout), text(stderr)];
    if (timedOut) {
      throw new Error(
        `run: ${[cmd, ...args].join(" ")}: still running after ${timeoutMs} ms, killed ` +
          `(exit ${status?.code ?? "unknown"})\nstdout:\n${out}\nstderr:\n${err}`,
      );
    }
    return { code: status!.code, stdout: out, stderr: err };
  } finally {
    clearTimeout(timer);
  }
}

/** Sends `signal` to `child`, ignoring the error when it is already gone. */
export function killQuietly(child: Deno.ChildProcess, signal: Deno.Signal = "SIGKILL"): void {
  try {
    child.kill(signal);
  } catch { /* already gone */ }
}

/**
 * Waits for `child` to exit by itself (after a SIGTERM the test sent, say),
 * at most `ms`, then for `output` (a pump reading its pipes) to end. Past
 * the limit it kills the child (SIGKILL) and rejects naming `what`.
 */
export async function waitExit(
  child: Deno.ChildProcess,
  what: string,
  options: { ms?: number; output?: Promise<unknown> } = {},
): Promise<Deno.CommandStatus> {
  const { ms = 20_000, output } = options;
  try {
    const status = await withTimeout(child.status, ms, `${what}: waiting for the exit`);
    if (output) await withTimeout(output, KILL_WAIT_MS, `${what}: waiting for its output to end`);
    return status;
  } catch (error) {
    killQuietly(child, "SIGKILL");
    await withTimeout(child.status, KILL_WAIT_MS, `${what} after SIGKILL`).catch(() => {});
    throw error;
  }
}

/**
 * Stops `child`: `signal` (SIGTERM by default), at most `graceMs` to exit,
 * then SIGKILL and at most `KILL_WAIT_MS` more; then waits (bounded) for
 * `output` to end. Rejects when the process will not go away.
 */
export async function stopChild(
  child: Deno.ChildProcess,
  what: string,
  options: { signal?: Deno.Signal; graceMs?: number; output?: Promise<unknown> } = {},
): Promise<Deno.CommandStatus> {
  const { signal = "SIGTERM", graceMs = 5_000, output } = options;
  killQuietly(child, signal);
  let status: Deno.CommandStatus;
  try {
    status = await withTimeout(child.status, graceMs, `${what}: exit after ${signal}`);
  } catch {
    killQuietly(child, "SIGKILL");
    status = await withTimeout(child.status, KILL_WAIT_MS, `${what}: exit after SIGKILL`);
  }
  if (output) await withTimeout(output, KILL_WAIT_MS, `${what}: waiting for its output to end`);
  return status;
}

/** Rejects with a clear message when `promise` takes longer than `ms`. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

export { joinHostPort };
