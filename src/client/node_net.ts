/**
 * The `node:net` / `node:tls` part of {@linkcode socksify}: npm packages
 * (database drivers, HTTP clients, `node:http` and `node:https` agents) all
 * open their sockets with `net.Socket.prototype.connect`, which Deno
 * implements with its own internal operations (not `Deno.connect`). The
 * patched `connect` keeps the `net.Socket` a real socket:
 *
 * 1. the SOCKS session is opened first with the Deno-level
 *    {@linkcode connect} (chain, failover, fake addresses), while the socket
 *    is "connecting" (writes and `end()` are queued by Node's own logic);
 * 2. then the socket connects, with the original method, to a one-shot
 *    listener on this host's loopback, and the accepted end (checked to be
 *    this very socket by its port) is relayed to the SOCKS connection.
 *
 * So events (`connect`, `ready`, `data`, `end`, `close`, `timeout`),
 * back-pressure, `setTimeout`, `setNoDelay`, `setKeepAlive` and TLS behave
 * exactly as on a direct socket; `remoteAddress` is the address the
 * application asked for (its fake address for a name), and errors carry
 * Node's `code` (`ECONNREFUSED`, `EHOSTUNREACH`, `ETIMEDOUT`, ...) on the
 * {@linkcode SocksError} that says which gateway failed.
 *
 * @module
 */

import net from "node:net";
import tls from "node:tls";
import { normalizeIp } from "../protocol/address.ts";
import { Reply } from "../protocol/constants.ts";
import type { SocksTarget } from "./address.ts";
import type { SocksConn } from "./connect.ts";
import {
  AllGatewaysFailedError,
  GatewayUnreachableError,
  SocksError,
  SocksTimeoutError,
} from "./errors.ts";
import type { FakeDns } from "./fake_dns.ts";
import { relay } from "./forward.ts";

/** @internal How the patch reaches a destination. */
export interface NodeRoute {
  /** True when `host:port` is reached without the gateway. */
  isDirect(host: string, port: number): boolean;
  /** A SOCKS connection to `target` through the gateways. */
  dial(target: SocksTarget, signal: AbortSignal): Promise<SocksConn>;
  /** The mapping table. */
  fakeDns: FakeDns;
}

// deno-lint-ignore no-explicit-any
type AnyFn = (this: any, ...args: any[]) => any;
const BRIDGE_ACCEPT_MS = 10_000;

const NODE_CODES: Record<number, string> = {
  [Reply.GENERAL_FAILURE]: "ECONNREFUSED",
  [Reply.NOT_ALLOWED]: "EACCES",
  [Reply.NETWORK_UNREACHABLE]: "ENETUNREACH",
  [Reply.HOST_UNREACHABLE]: "EHOSTUNREACH",
  [Reply.CONNECTION_REFUSED]: "ECONNREFUSED",
  [Reply.TTL_EXPIRED]: "ETIMEDOUT",
};

/** Adds Node's `code`, `syscall`, `address` and `port` to a failure. */
function nodeError(err: unknown, target: SocksTarget): Error {
  const e = err instanceof Error ? err : new Error(String(err));
  let inner: unknown = e;
  if (inner instanceof AllGatewaysFailedError) inner = inner.failures.at(-1)?.error;
  let code = "ECONNREFUSED";
  if (inner instanceof SocksTimeoutError) code = "ETIMEDOUT";
  else if (inner instanceof SocksError && inner.reply !== undefined) {
    code = NODE_CODES[inner.reply] ?? "ECONNREFUSED";
  } else if (inner instanceof GatewayUnreachableError) {
    const cause = inner.cause as { code?: string } | undefined;
    code = cause?.code ?? "ECONNREFUSED";
  } else if ((inner as { code?: string })?.code) {
    code = (inner as { code: string }).code;
  }
  Object.assign(e, {
    code,
    errno: code,
    syscall: "connect",
    address: target.host,
    port: target.port,
  });
  return e;
}

/** `connect(...args)` of Node into options and callback (null for a pipe path). */
function normalize(args: unknown[]): { options: Record<string, unknown> | null; cb?: AnyFn } {
  let a = args;
  if (Array.isArray(a[0])) a = a[0] as unknown[]; // Node's internal normalized form
  const cb = a.findLast((x) => typeof x === "function") as AnyFn | undefined;
  const first = a[0];
  if (first && typeof first === "object") {
    const options = first as Record<string, unknown>;
    return { options: options.path ? null : options, cb }; // Node: a pipe when path is set
  }
  if (typeof first === "string" && !/^\d+$/.test(first)) return { options: null, cb }; // a path
  return {
    options: { port: first, host: typeof a[1] === "string" ? a[1] : undefined },
    cb,
  };
}

/** A one-shot loopback listener: IPv4 loopback, else IPv6 loopback. */
function bridgeListener(): Deno.TcpListener {
  try {
    return Deno.listen({ hostname: "127.0.0.1", port: 0, transport: "tcp" });
  } catch {
    return Deno.listen({ hostname: "::1", port: 0, transport: "tcp" });
  }
}

function closeQuietly(c: { close(): void }): void {
  try {
    c.close();
  } catch {
    // already closed
  }
}

/**
 * @internal Replaces `net.Socket.prototype.connect` and `tls.connect`;
 * returns the function that puts them back.
 */
export function patchNodeNet(route: NodeRoute): () => void {
  const proto = net.Socket.prototype as unknown as Record<string, AnyFn>;
  const originalConnect = proto.connect;
  const tlsModule = tls as unknown as Record<string, AnyFn>;
  const originalTlsConnect = tlsModule.connect;

  proto.connect = function (this: net.Socket, ...args: unknown[]) {
    const { options, cb } = normalize(args);
    if (!options) return originalConnect.apply(this, args);
    const host = String(options.host ?? "localhost");
    const port = Number(options.port);
    if (!Number.isInteger(port) || port < 1 || port > 65535 || route.isDirect(host, port)) {
      return originalConnect.apply(this, args); // Node reports a bad port itself
    }
    proxiedConnect(this, { host: normalizeIp(host)?.host ?? host, port }, options, cb);
    return this;
  };

  tlsModule.connect = function (...args: unknown[]) {
    const { options } = normalize(args);
    if (options && !options.servername && typeof options.host === "string") {
      const name = route.fakeDns.reverse(options.host);
      if (name !== undefined && !normalizeIp(name)) {
        // SNI and the certificate check want the name behind the fake address.
        const copy = { ...options, servername: name };
        const rest = Array.isArray(args[0]) ? (args[0] as unknown[]).slice(1) : args.slice(1);
        return originalTlsConnect.call(this, copy, ...rest.filter((x) => typeof x === "function"));
      }
    }
    return originalTlsConnect.apply(this, args);
  };

  const proxiedConnect = (
    socket: net.Socket,
    target: SocksTarget,
    options: Record<string, unknown>,
    cb?: AnyFn,
  ) => {
    const s = socket as net.Socket & { connecting: boolean };
    if (cb) s.once("connect", cb);
    if (typeof options.timeout === "number") s.setTimeout(options.timeout);
    s.connecting = true; // Node queues writes and end() until "connect"
    const fake = normalizeIp(target.host) ? target.host : route.fakeDns.lookup(
      target.host,
      options.family === 6 ? 6 : 4,
    );
    Object.defineProperties(s, {
      remoteAddress: { configurable: true, get: () => (s.destroyed ? undefined : fake) },
      remotePort: { configurable: true, get: () => (s.destroyed ? undefined : target.port) },
      remoteFamily: {
        configurable: true,
        get: () => (s.destroyed ? undefined : fake.includes(":") ? "IPv6" : "IPv4"),
      },
    });
    const controller = new AbortController();
    const onClose = () => controller.abort();
    s.once("close", onClose);
    let upstream: SocksConn | undefined;
    let noDelay: boolean | undefined;
    let keepAlive: boolean | undefined;
    const setNoDelay = s.setNoDelay;
    const setKeepAlive = s.setKeepAlive;
    s.setNoDelay = function (this: net.Socket, v?: boolean) {
      noDelay = v ?? true;
      upstream?.setNoDelay(noDelay);
      return setNoDelay.call(this, v);
    };
    s.setKeepAlive = function (this: net.Socket, v?: boolean, delay?: number) {
      keepAlive = v ?? false;
      upstream?.setKeepAlive(keepAlive);
      return setKeepAlive.call(this, v, delay);
    };

    (async () => {
      let conn: SocksConn;
      try {
        conn = await route.dial(target, controller.signal);
      } catch (err) {
        if (!s.destroyed) s.destroy(nodeError(err, target));
        return;
      }
      if (s.destroyed) return closeQuietly(conn);
      upstream = conn;
      if (noDelay !== undefined) conn.setNoDelay(noDelay);
      if (keepAlive !== undefined) conn.setKeepAlive(keepAlive);
      const listener = bridgeListener();
      listener.unref();
      const bridgePort = listener.addr.port;
      const connected = new Promise<void>((resolve) => {
        s.prependOnceListener("connect", resolve);
        s.once("close", resolve);
      });
      const giveUp = () => closeQuietly(listener);
      s.once("close", giveUp);
      const timer = setTimeout(giveUp, BRIDGE_ACCEPT_MS);
      originalConnect.call(s, {
        ...options,
        host: listener.addr.hostname,
        port: bridgePort,
        family: undefined,
        lookup: undefined,
        localAddress: undefined,
        localPort: undefined,
        timeout: undefined,
      });
      try {
        while (true) {
          const peer = await listener.accept();
          await connected;
          if (s.destroyed) {
            closeQuietly(peer);
            break;
          }
          // Only this socket's own end: another local process racing to the
          // port is closed.
          if (peer.remoteAddr.port === s.localPort) {
            clearTimeout(timer);
            closeQuietly(listener); // one connection only
            peer.unref();
            conn.unref();
            s.off("close", onClose);
            s.off("close", giveUp);
            s.once("close", () => closeQuietly(peer));
            await relay(peer, conn);
            return;
          }
          closeQuietly(peer);
        }
        closeQuietly(conn);
      } catch (err) {
        closeQuietly(conn);
        if (!s.destroyed && !(err instanceof Deno.errors.BadResource)) {
          s.destroy(nodeError(err, target));
        } else if (!s.destroyed) {
          s.destroy(nodeError(new Error("socksify: the loopback bridge was closed"), target));
        }
      } finally {
        clearTimeout(timer);
        closeQuietly(listener);
      }
    })();
  };

  return () => {
    proto.connect = originalConnect;
    tlsModule.connect = originalTlsConnect;
  };
}
