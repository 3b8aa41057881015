/**
 * Shared parts of the HTTP proxy tests: a real origin server (Deno.serve on
 * loopback, port 0), deterministic bodies with their SHA-256, and a raw
 * client for what real clients will not send.
 */

import { readAll, withTimeout, writeAll } from "../helpers.ts";

/** `n` deterministic, non-repeating-looking bytes. */
export function pattern(n: number, seed = 1): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(n);
  let x = seed * 2654435761 >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/** The SHA-256 of `bytes`, in hex. */
export async function sha256(bytes: Uint8Array<ArrayBuffer>): Promise<string> {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(d, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** What the origin saw of one request. */
export interface Seen {
  method: string;
  url: string;
  headers: Record<string, string>;
  length: number;
  sha256: string;
}

/** An origin server and the requests it saw. */
export interface Origin extends AsyncDisposable {
  /** Where it listens. */
  addr: { hostname: string; port: number };
  /** `host:port` for URLs (IPv6 bracketed). */
  authority: string;
  /** Every request, in arrival order. */
  seen: Seen[];
}

/**
 * A real HTTP server on `hostname`:
 * - `GET /bytes/N[?chunked]`: `pattern(N)` with Content-Length (or streamed, chunked);
 * - any method on `/echo`: a JSON {@linkcode Seen} of the request (its body hashed).
 */
export function origin(hostname: string): Origin {
  const seen: Seen[] = [];
  const server = Deno.serve({ hostname, port: 0, onListen() {} }, async (req) => {
    const url = new URL(req.url);
    let body: Uint8Array<ArrayBuffer>;
    try {
      body = new Uint8Array(await req.arrayBuffer());
    } catch {
      // The proxy cut a body short (its client left or sent bad framing).
      return new Response("incomplete body\n", { status: 400 });
    }
    const s: Seen = {
      method: req.method,
      url: url.pathname + url.search,
      headers: Object.fromEntries(req.headers),
      length: body.length,
      sha256: await sha256(body),
    };
    seen.push(s);
    const m = /^\/bytes\/(\d+)$/.exec(url.pathname);
    if (m) {
      const data = pattern(Number(m[1]));
      if (!url.searchParams.has("chunked")) return new Response(data);
      let at = 0;
      return new Response(
        new ReadableStream({
          pull(c) {
            if (at >= data.length) return c.close();
            const n = Math.min(data.length - at, 1000 + (at % 50000));
            c.enqueue(data.slice(at, at + n));
            at += n;
          },
        }),
      );
    }
    if (url.pathname === "/echo") return Response.json(s);
    return new Response("not found\n", { status: 404 });
  });
  const addr = server.addr as Deno.NetAddr;
  return {
    addr: { hostname: addr.hostname, port: addr.port },
    authority: addr.hostname.includes(":")
      ? `[${addr.hostname}]:${addr.port}`
      : `${addr.hostname}:${addr.port}`,
    seen,
    async [Symbol.asyncDispose]() {
      await server.shutdown();
    },
  };
}

const te = new TextEncoder();
const td = new TextDecoder();

/** Sends `text` (or bytes) on a new connection and reads until the gateway closes it. */
export async function raw(
  addr: { hostname: string; port: number },
  request: string | Uint8Array,
  options: { ms?: number; closeWrite?: boolean } = {},
): Promise<string> {
  const conn = await Deno.connect(addr);
  try {
    await writeAll(conn, typeof request === "string" ? te.encode(request) : request);
    if (options.closeWrite) await conn.closeWrite();
    return td.decode(await withTimeout(readAll(conn), options.ms ?? 15_000, "gateway's answer"));
  } finally {
    conn.close();
  }
}

/** The status codes of every response head in `text`, in order. */
export function statuses(text: string): number[] {
  return [...text.matchAll(/HTTP\/1\.[01] (\d{3}) /g)].map((m) => Number(m[1]));
}
