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
    const n = await conn.read(buf);
    if (n === null) return;
    fn(buf.subarray(0, n));
  }
}

/** Reads exactly `n` bytes (or fewer at EOF). */
export async function readN(conn: Deno.Conn, n: number): Promise<Uint8Array> {
  const out = new Uint8Array(n);
  let off = 0;
  while (off < n) {
    const r = await conn.read(out.subarray(off));
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
    const n = await conn.read(one);
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
 * whatever the server answered (stopping early when it refuses).
 */
export async function socksConnect(
  proxy: Addr,
  target: string,
  port: number,
  options: { auth?: { username: string; password: string }; command?: number } = {},
): Promise<SocksResult> {
  const conn = await Deno.connect({ hostname: proxy.hostname, port: proxy.port });
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

/** A logger hook that records every call. */
export function recordingLogger(): GatewayLogger & {
  records: { level: string; message: string; properties: Record<string, unknown> }[];
  waitFor(pred: (p: Record<string, unknown>) => boolean): Promise<Record<string, unknown>>;
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
    waitFor(pred) {
      const found = records.find((r) => pred(r.properties));
      if (found) return Promise.resolve(found.properties);
      return new Promise((resolve) => waiters.push({ pred, resolve }));
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

/** Runs a command to completion and returns its exit code and output. */
export async function run(cmd: string, args: string[], options: Deno.CommandOptions = {}) {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped", ...options })
    .output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
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
