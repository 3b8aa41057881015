/**
 * The local door of {@linkcode socksify}: a SOCKS5 listener on this host's
 * IPv4 loopback, with a random RFC 1929 login, that carries each CONNECT
 * through the process's real route (the gateway chain with failover, fake
 * addresses, `direct` prefixes). Deno's `fetch` and `WebSocket` take one
 * `socks5h://` proxy and cannot use an IPv6 literal, a chain or a fake
 * address; pointing them at the door gives them all of that.
 *
 * @module
 */

import { BufferedReader } from "../io/buffered_reader.ts";
import {
  decodeCredentials,
  decodeGreeting,
  decodeRequest,
  encodeAuthStatus,
  encodeMethodSelection,
  encodeReply,
} from "../protocol/codec.ts";
import { Command, Method, Reply } from "../protocol/constants.ts";
import type { SocksTarget } from "./address.ts";
import { SocksError } from "./errors.ts";
import { type Pipe, relay } from "./forward.ts";

/** Where a door sends each connection: direct or through the gateways. */
export type DoorDial = (target: SocksTarget) => Promise<Pipe>;

/** A running door. */
export interface Door {
  /** `socks5h://USER:PASS@127.0.0.1:PORT`, for `Deno.createHttpClient`. */
  readonly url: string;
  /** Stops listening and closes every connection it carries. */
  close(): void;
}

const HANDSHAKE_DEADLINE_MS = 10_000;

function randomHex(bytes: number): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(bytes)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

/** Constant-time comparison of two strings of printable ASCII. */
function same(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

async function writeAll(conn: Pipe, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}

function closeQuietly(conn: Pipe): void {
  try {
    conn.close();
  } catch {
    // already closed
  }
}

/** The SOCKS reply code for a failure of `dial`. */
function replyFor(err: unknown): number {
  if (err instanceof SocksError && err.reply !== undefined) return err.reply;
  if (err instanceof Deno.errors.ConnectionRefused) return Reply.CONNECTION_REFUSED;
  if (err instanceof Deno.errors.TimedOut) return Reply.TTL_EXPIRED;
  return Reply.GENERAL_FAILURE;
}

/**
 * @internal Opens a door on 127.0.0.1 (an ephemeral port). Only a client
 * that knows the random login is served; everything else is closed after
 * the greeting. The listener does not keep the process alive.
 */
export function openDoor(dial: DoorDial, onError?: (err: unknown) => void): Door {
  let listener: Deno.TcpListener;
  try {
    listener = Deno.listen({ hostname: "127.0.0.1", port: 0, transport: "tcp" });
  } catch (cause) {
    throw new Error(
      `socksify: expected to listen on 127.0.0.1 for the fetch/WebSocket door, found an error (${cause}); ` +
        `pass { fetch: false, webSocket: false } to socksify on a host without IPv4 loopback`,
      { cause },
    );
  }
  listener.unref();
  const username = randomHex(12);
  const password = randomHex(16);
  const live = new Set<Pipe>();
  let closed = false;

  const serve = async (client: Deno.TcpConn) => {
    live.add(client);
    const timer = setTimeout(() => closeQuietly(client), HANDSHAKE_DEADLINE_MS);
    let upstream: Pipe | undefined;
    try {
      const reader = new BufferedReader(client);
      const greeting = await reader.decode(decodeGreeting, "greeting");
      if (!greeting.methods.includes(Method.USERPASS)) {
        await writeAll(client, encodeMethodSelection(Method.NO_ACCEPTABLE));
        return;
      }
      await writeAll(client, encodeMethodSelection(Method.USERPASS));
      const login = await reader.decode(decodeCredentials, "credentials");
      const ok = same(login.username, username) && same(login.password, password);
      await writeAll(client, encodeAuthStatus(ok));
      if (!ok) return;
      const request = await reader.decode(decodeRequest, "request");
      const unspecified = { address: { type: "ipv4" as const, host: "0.0.0.0" }, port: 0 };
      if (request.command !== Command.CONNECT) {
        await writeAll(client, encodeReply({ reply: Reply.COMMAND_NOT_SUPPORTED, ...unspecified }));
        return;
      }
      try {
        upstream = await dial({ host: request.address.host, port: request.port });
      } catch (err) {
        onError?.(err);
        await writeAll(client, encodeReply({ reply: replyFor(err), ...unspecified }));
        return;
      }
      if (closed) return;
      live.add(upstream);
      await writeAll(client, encodeReply({ reply: Reply.SUCCEEDED, ...unspecified }));
      clearTimeout(timer);
      const rest = reader.takeRest();
      if (rest.length > 0) await writeAll(upstream, rest);
      await relay(client, upstream);
    } catch (err) {
      if (!closed) onError?.(err);
    } finally {
      clearTimeout(timer);
      live.delete(client);
      closeQuietly(client);
      if (upstream) {
        live.delete(upstream);
        closeQuietly(upstream);
      }
    }
  };

  (async () => {
    while (!closed) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch (err) {
        if (closed || err instanceof Deno.errors.BadResource) return;
        await new Promise((resolve) => setTimeout(resolve, 50));
        continue;
      }
      serve(conn);
    }
  })();

  return {
    url: `socks5h://${username}:${password}@127.0.0.1:${listener.addr.port}`,
    close() {
      if (closed) return;
      closed = true;
      try {
        listener.close();
      } catch {
        // already closed
      }
      for (const c of live) closeQuietly(c);
    },
  };
}
