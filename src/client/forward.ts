/**
 * A local TCP forwarder: every connection accepted on the listen addresses
 * is carried to one fixed destination through the SOCKS gateway(s), so that
 * programs that know nothing about SOCKS (or cannot do it over a chain, or
 * cannot reach an IPv6-only gateway) can use it.
 *
 * @module
 */

import { splitHostPort } from "../protocol/address.ts";
import { parseHops, parseTarget, type SocksTargetInit, type SocksVia } from "./address.ts";
import { connect } from "./connect.ts";
import type { FakeDns } from "./fake_dns.ts";

/** Options of {@linkcode forward}. */
export interface ForwardOptions {
  /** Local addresses to listen on, as `HOST:PORT` (IPv6 bracketed; port 0 picks a free one). */
  listen: readonly string[];
  /**
   * The destination every connection is carried to: `HOST:PORT`,
   * `{ hostname, port }` or `{ host, port }`.
   */
  to: SocksTargetInit;
  /** The gateway URL or chain, as for `connect` (hops may list alternatives). */
  via: SocksVia;
  /** Shuts the forwarder down when aborted. */
  signal?: AbortSignal;
  /** The handshake deadline in milliseconds for each connection. */
  timeout?: number;
  /** A mapping table, when `to` may be a fake address. */
  fakeDns?: FakeDns;
  /**
   * Called when a connection could not be carried (the accepted connection
   * is then closed), and when accepting failed (then `client` is the
   * listening address; the forwarder waits a moment and keeps accepting).
   * Nothing is reported by default.
   */
  onError?: (error: unknown, client: Deno.NetAddr) => void;
}

/** The handle returned by {@linkcode forward}. */
export interface Forwarder extends AsyncDisposable {
  /** The addresses actually listened on (with the chosen ports). */
  readonly addrs: readonly Deno.NetAddr[];
  /** Settles when every listener is closed and every relay has ended. */
  readonly finished: Promise<void>;
  /** Stops listening, closes every relayed connection, and waits for `finished`. */
  shutdown(): Promise<void>;
}

const BUFFER_SIZE = 64 * 1024;
/** How long the accept loop waits after an accept error before it tries again. */
const ACCEPT_RETRY_MS = 50;

/** @internal A connection as the relay sees it. */
export interface Pipe {
  read(p: Uint8Array): Promise<number | null>;
  write(p: Uint8Array): Promise<number>;
  closeWrite(): Promise<void>;
  close(): void;
}

function closeQuietly(conn: Pipe): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

/** Copies `src` to `dst` until EOF, then half-closes `dst`. */
async function pump(src: Pipe, dst: Pipe): Promise<void> {
  const buf = new Uint8Array(BUFFER_SIZE);
  while (true) {
    const n = await src.read(buf);
    if (n === null) break;
    let off = 0;
    while (off < n) off += await dst.write(buf.subarray(off, n));
  }
  await dst.closeWrite();
}

/**
 * @internal Relays both ways with half-close (FIN is passed on as FIN), and
 * closes both connections at the end. A reset on either side ends both
 * directions.
 */
export async function relay(a: Pipe, b: Pipe): Promise<void> {
  const fail = () => {
    closeQuietly(a);
    closeQuietly(b);
  };
  await Promise.all([pump(a, b).catch(fail), pump(b, a).catch(fail)]);
  closeQuietly(a);
  closeQuietly(b);
}

/**
 * Listens on `options.listen` and carries each accepted connection to
 * `options.to` through the gateway(s) of `options.via` (a SOCKS CONNECT per
 * connection), relaying both ways with half-close and closing both sides at
 * the end. Throws synchronously for malformed options or an address that
 * cannot be listened on.
 *
 * @example
 * ```ts ignore
 * import { forward } from "./forward.ts";
 * const fwd = forward({
 *   listen: ["127.0.0.1:8080", "[::1]:8080"],
 *   to: "v6only.example.test:80",
 *   via: ["socks5://192.0.2.7:1080", "socks5://[2001:db8::1]:1080"],
 * });
 * // curl http://127.0.0.1:8080/ reaches v6only.example.test:80
 * await fwd.shutdown();
 * ```
 */
export function forward(options: ForwardOptions): Forwarder {
  const to = parseTarget(options.to);
  parseHops(options.via);
  if (!options.listen || options.listen.length === 0) {
    throw new TypeError(`forward: expected at least one listen address, found none`);
  }
  const endpoints = options.listen.map((text) => {
    const hp = splitHostPort(text);
    if (!hp) {
      throw new TypeError(
        `forward: expected listen addresses as "host:port" (IPv6 as "[addr]:port"), found "${text}"`,
      );
    }
    return hp;
  });
  const listeners: Deno.TcpListener[] = [];
  try {
    for (const { host, port } of endpoints) {
      listeners.push(Deno.listen({ hostname: host, port, transport: "tcp" }));
    }
  } catch (err) {
    for (const l of listeners) l.close();
    throw err;
  }

  const controller = new AbortController();
  const open = new Set<Pipe>();
  const relays = new Set<Promise<void>>();

  const report = (err: unknown, addr: Deno.NetAddr) => {
    try {
      options.onError?.(err, addr);
    } catch {
      // a throwing reporter must not stop the forwarder
    }
  };

  const carry = async (client: Deno.TcpConn): Promise<void> => {
    open.add(client);
    try {
      let upstream: Pipe;
      try {
        upstream = await connect(to, {
          via: options.via,
          signal: controller.signal,
          timeout: options.timeout,
          fakeDns: options.fakeDns,
        });
      } catch (err) {
        closeQuietly(client);
        if (!controller.signal.aborted) report(err, client.remoteAddr);
        return;
      }
      if (controller.signal.aborted) {
        closeQuietly(upstream);
        closeQuietly(client);
        return;
      }
      open.add(upstream);
      try {
        await relay(client, upstream);
      } finally {
        open.delete(upstream);
      }
    } finally {
      open.delete(client);
    }
  };

  let lastAcceptReport = -Infinity;
  const acceptLoop = async (listener: Deno.TcpListener): Promise<void> => {
    while (!controller.signal.aborted) {
      let client: Deno.TcpConn;
      try {
        client = await listener.accept();
      } catch (err) {
        if (controller.signal.aborted || err instanceof Deno.errors.BadResource) return; // closed
        if (
          err instanceof Deno.errors.ConnectionAborted ||
          err instanceof Deno.errors.ConnectionReset
        ) {
          continue; // a connection reset before it was accepted: keep serving
        }
        // Out of descriptors (EMFILE) or the like: say so (at most once a
        // second), give the relays a moment to free some, and keep serving
        // rather than stop in silence.
        const now = performance.now();
        if (now - lastAcceptReport >= 1000) {
          lastAcceptReport = now;
          options.onError?.(err, listener.addr);
        }
        await new Promise((resolve) => setTimeout(resolve, ACCEPT_RETRY_MS));
        continue;
      }
      const p = carry(client);
      relays.add(p);
      p.finally(() => relays.delete(p));
    }
  };

  const loops = listeners.map(acceptLoop);
  const finished = (async () => {
    await Promise.all(loops);
    while (relays.size > 0) await Promise.all(relays);
  })();

  const stop = () => {
    if (controller.signal.aborted) return;
    controller.abort();
    for (const l of listeners) {
      try {
        l.close();
      } catch {
        // already closed
      }
    }
    for (const c of open) closeQuietly(c);
  };
  options.signal?.addEventListener("abort", stop, { once: true });
  if (options.signal?.aborted) stop();
  finished.finally(() => options.signal?.removeEventListener("abort", stop));

  const shutdown = async () => {
    stop();
    await finished;
  };
  return {
    addrs: listeners.map((l) => l.addr),
    finished,
    shutdown,
    [Symbol.asyncDispose]: shutdown,
  };
}
