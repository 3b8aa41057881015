/**
 * The BIND command (RFC 1928 section 4, RFC 3089 section 5.1): listen in
 * the family that faces the expected peer, tell the client where, accept
 * exactly one connection from that peer, tell the client who came, relay.
 *
 * @module
 */

import {
  cidrContains,
  type Family,
  isLoopbackIp,
  joinHostPort,
  normalizeIp,
  parseCidr,
} from "../protocol/address.ts";
import { encodeReply, toSocksAddress } from "../protocol/codec.ts";
import { Reply } from "../protocol/constants.ts";
import type { RelayConn } from "./dialer.ts";
import { GatewayError } from "./errors.ts";
import type { ResolvedAddress } from "./resolver.ts";

/** Options of the BIND command. */
export interface BindServerOptions {
  /** How long to wait for the peer, in ms. Default 60 s. */
  acceptTimeout?: number;
  /**
   * Accept the peer only from the address the request named (when it named
   * one). Default `true`; `false` accepts the first peer from anywhere.
   */
  strictPeer?: boolean;
}

/** Bytes a BIND client may send ahead of its peer before the gateway stops reading it. */
const PREFETCH_LIMIT = 64 * 1024;

/**
 * The control connection of a BIND that waits for its peer: it is read all
 * along (so that a client that closes or resets is noticed at once, also
 * after sending early data), what it sends is kept, and the relay gets it
 * first, as if nothing had been read. Past {@linkcode PREFETCH_LIMIT} bytes
 * reading stops (TCP backpressure); then only the accept timeout ends a wait
 * whose client has left.
 */
export class PrefetchedConn implements RelayConn {
  #conn: RelayConn;
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  #ended = false;
  #error: unknown = undefined;
  #handedOver = false;
  #reading: Promise<void>;
  #gone!: () => void;
  /** Resolves when the client closed or reset before the relay started; never otherwise. */
  readonly gone: Promise<void> = new Promise((resolve) => (this.#gone = resolve));

  /** Starts reading `conn` at once. */
  constructor(conn: RelayConn) {
    this.#conn = conn;
    this.#reading = this.#prefetch();
  }

  async #prefetch(): Promise<void> {
    while (!this.#handedOver && this.#buffered < PREFETCH_LIMIT) {
      const buf = new Uint8Array(16 * 1024);
      let n: number | null;
      try {
        n = await this.#conn.read(buf);
      } catch (error) {
        this.#error = error;
        return this.#gone();
      }
      if (n === null) {
        this.#ended = true;
        return this.#gone();
      }
      this.#chunks.push(buf.subarray(0, n));
      this.#buffered += n;
    }
  }

  async read(p: Uint8Array): Promise<number | null> {
    if (!this.#handedOver) {
      this.#handedOver = true;
      await this.#reading; // the read in flight ends the prefetch, with its bytes
    }
    const chunk = this.#chunks[0];
    if (chunk) {
      const n = Math.min(p.length, chunk.length);
      p.set(chunk.subarray(0, n));
      if (n === chunk.length) this.#chunks.shift();
      else this.#chunks[0] = chunk.subarray(n);
      return n;
    }
    if (this.#error !== undefined) throw this.#error;
    if (this.#ended) return null;
    return await this.#conn.read(p);
  }
  write(p: Uint8Array): Promise<number> {
    return this.#conn.write(p);
  }
  closeWrite(): Promise<void> {
    return this.#conn.closeWrite();
  }
  close(): void {
    this.#conn.close();
  }
  get localAddr(): Deno.Addr {
    return this.#conn.localAddr;
  }
  get remoteAddr(): Deno.Addr {
    return this.#conn.remoteAddr;
  }
}

/** What {@linkcode bindListen} needs to pick the address to listen on. */
export interface BindPlace {
  /** The expected peer (`0.0.0.0` / `::` when the client does not know it). */
  peer: ResolvedAddress;
  /** The gateway's address on the client's control connection. */
  controlLocal: { host: string; family: Family };
  /** Configured outbound source addresses. */
  outbound: { ipv4?: string; ipv6?: string };
  /** The gateway's own address on a live relay to `peer`, if there is one. */
  towardPeer?: string;
}

/**
 * Chooses the address to listen on for a BIND and listens there (port 0).
 * The family is the peer's, never the other one: a request for `0.0.0.0:0`
 * listens on an IPv4 address. The address is, in order: the gateway's
 * address on a live relay to that peer (what the peer already talks to, the
 * FTP case), the configured outbound address of that family, the address the
 * client used if it is of that family, and else the address this host would
 * use toward the peer ({@linkcode routeLocalAddress}: a BIND across
 * families with no `outbound` configured). Anything else is a clear failure.
 */
export function bindListen(place: BindPlace): Deno.TcpListener {
  const family = place.peer.family;
  const host = place.towardPeer ??
    (family === 4 ? place.outbound.ipv4 : place.outbound.ipv6) ??
    (place.controlLocal.family === family ? place.controlLocal.host : undefined) ??
    routeLocalAddress(place.peer);
  if (!host) {
    throw new GatewayError(
      Reply.GENERAL_FAILURE,
      `BIND: expected an IPv${family} address to listen on for peer ${place.peer.address}; ` +
        `found none (no relay to that peer, no outbound.ipv${family} configured, ` +
        (interfacesReadable()
          ? `no IPv${family} address on this host's interfaces)`
          : "and the interfaces cannot be listed without --allow-sys=networkInterfaces)"),
    );
  }
  return Deno.listen({ hostname: host, port: 0, transport: "tcp" });
}

function interfacesReadable(): boolean {
  return Deno.permissions.querySync({ name: "sys", kind: "networkInterfaces" }).state ===
    "granted";
}

/**
 * The local address this host would use to reach `peer`, as far as it can
 * be known without sending anything: the loopback address of the family for
 * a loopback peer (what the kernel picks); otherwise, from the interface
 * table (which needs `--allow-sys=networkInterfaces`, else `undefined`), the
 * peer itself when it is ours, the address of the interface whose prefix
 * holds the peer (longest first: the on-link route), or the first global
 * address of the family (the default route's usual source). An unspecified
 * peer (`0.0.0.0`, `::`) gets that global address, or loopback. Link-local
 * addresses are never chosen (they need a zone). The kernel's exact choice
 * would be a connected UDP socket's local address, but Deno has no connected
 * UDP socket: node:dgram's `connect()` under Deno leaves the socket bound to
 * the wildcard address.
 *
 * @example
 * ```ts
 * import { routeLocalAddress } from "./bind.ts";
 * routeLocalAddress({ address: "::1", family: 6 }); // "::1"
 * ```
 */
export function routeLocalAddress(peer: ResolvedAddress): string | undefined {
  const ip = normalizeIp(peer.address);
  if (!ip) return undefined;
  const loopback = ip.family === 4 ? "127.0.0.1" : "::1";
  if (isLoopbackIp(ip)) return loopback;
  let interfaces: Deno.NetworkInterfaceInfo[] = [];
  if (interfacesReadable()) {
    try {
      interfaces = Deno.networkInterfaces();
    } catch { /* no interface table: no choice */ }
  }
  let onLink: { host: string; prefix: number } | undefined;
  let global: string | undefined;
  for (const i of interfaces) {
    const own = normalizeIp(i.address);
    const cidr = parseCidr(i.cidr);
    if (!own || own.family !== ip.family || isLoopbackIp(own) || isLinkLocal(own.host)) continue;
    if (own.host === ip.host) return own.host;
    if (cidr && cidrContains(cidr, ip.host) && cidr.prefix > (onLink?.prefix ?? -1)) {
      onLink = { host: own.host, prefix: cidr.prefix };
    }
    global ??= own.host;
  }
  if (isUnspecified(ip.host)) return global ?? loopback;
  return onLink?.host ?? global;
}

function isLinkLocal(host: string): boolean {
  return /^fe[89ab][0-9a-f]:/i.test(host) || host.startsWith("169.254.");
}

function isUnspecified(host: string): boolean {
  return host === "0.0.0.0" || host === "::";
}

/**
 * Waits for the one peer connection: from `peer.address` when strict and the
 * request named an address, from anyone otherwise, and always one the rules
 * allow (`port` 0: any port). Other peers are closed and waiting goes on. Rejects when `signal` aborts or the client closes
 * its control connection (`clientGone` resolves).
 */
export async function acceptPeer(
  listener: Deno.TcpListener,
  port: number,
  options: {
    peer: ResolvedAddress;
    strictPeer: boolean;
    signal: AbortSignal;
    clientGone: Promise<void>;
    /** The access rules, for the peer that actually connected. */
    allowed?: (host: string, port: number) => Promise<boolean>;
    onRejected?: (from: string) => void;
  },
): Promise<Deno.TcpConn> {
  const { peer, strictPeer, signal } = options;
  const closeListener = () => {
    try {
      listener.close();
    } catch { /* already closed */ }
  };
  const onAbort = closeListener;
  signal.addEventListener("abort", onAbort, { once: true });
  let gone = false;
  options.clientGone.then(() => {
    gone = true;
    closeListener();
  });
  try {
    while (true) {
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (gone) throw new ClientGoneError();
        if (signal.aborted) {
          throw new GatewayError(
            Reply.HOST_UNREACHABLE,
            `BIND: no connection from ${
              joinHostPort(peer.address, port)
            } before the accept timeout`,
          );
        }
        throw error;
      }
      const from = normalizeIp(conn.remoteAddr.hostname)!;
      const addressOk = !strictPeer || isUnspecified(peer.address) || from.host === peer.address;
      const portOk = !strictPeer || port === 0 || conn.remoteAddr.port === port;
      let allowed = addressOk && portOk;
      try {
        if (allowed && options.allowed) {
          allowed = await options.allowed(from.host, conn.remoteAddr.port);
        }
      } catch (error) {
        // The rules could not decide (a failing hook, or the wait ended):
        // the peer is not handed over, so it is closed here.
        conn.close();
        throw error;
      }
      if (allowed) return conn;
      options.onRejected?.(joinHostPort(from.host, conn.remoteAddr.port));
      conn.close();
    }
  } finally {
    signal.removeEventListener("abort", onAbort);
    closeListener();
  }
}

/** The client closed its control connection while BIND waited: nobody to reply to. */
export class ClientGoneError extends Error {
  /** Creates the error. */
  constructor() {
    super("client closed its control connection while BIND waited");
    this.name = "ClientGoneError";
  }
}

/** The reply naming an address and port (first and second BIND replies). */
export function addressReply(host: string, port: number): Uint8Array {
  return encodeReply({ reply: Reply.SUCCEEDED, address: toSocksAddress(host), port });
}
