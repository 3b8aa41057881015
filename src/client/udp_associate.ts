/**
 * SOCKS5 UDP ASSOCIATE from the client side (RFC 1928 section 7, RFC 3089
 * section 2): datagrams go to the gateway's UDP relay with a SOCKS header
 * naming their destination (a name is resolved by the gateway), and come
 * back with a header naming their source. The association lives as long as
 * its TCP control connection.
 *
 * The UDP socket is a `node:dgram` socket: `Deno.listenDatagram` still
 * needs `--unstable-net` in Deno 2.9.
 *
 * @module
 */

import { createSocket, type Socket } from "node:dgram";
import { normalizeIp } from "../protocol/address.ts";
import {
  decodeUdpHeader,
  encodeUdpDatagram,
  ProtocolError,
  toSocksAddress,
} from "../protocol/codec.ts";
import { Command } from "../protocol/constants.ts";
import {
  formatTarget,
  parseHops,
  parseTarget,
  type SocksTarget,
  type SocksTargetInit,
} from "./address.ts";
import type { ConnectOptions } from "./connect.ts";
import { open } from "./dial.ts";
import { SocksClosedError, UnmappedFakeAddressError } from "./errors.ts";
import { boundAddrOf } from "./handshake.ts";

/** Options of {@linkcode udpAssociate}: those of `connect`. */
export interface UdpAssociateOptions extends ConnectOptions {
  /**
   * Datagrams kept while nobody calls `receive` (further ones are dropped,
   * as UDP would).
   *
   * @default {1024}
   */
  queueLimit?: number;
}

/** A datagram received through the relay. */
export interface SocksDatagram {
  /** The payload. */
  data: Uint8Array;
  /**
   * Its source as the gateway reports it (usually an IP literal of the
   * destination's family, which may not be the application's: RFC 3089
   * section 5).
   */
  from: SocksTarget;
}

/** A live UDP association; see {@linkcode udpAssociate}. */
export interface SocksUdpAssociation extends AsyncDisposable {
  /** The gateway's UDP relay (BND of the reply, or the gateway when BND is unspecified). */
  readonly relayAddr: Deno.NetAddr;
  /** The local UDP socket's address. */
  readonly localAddr: Deno.NetAddr;
  /** The gateways traversed by the control connection, as `HOST:PORT`. */
  readonly via: readonly string[];
  /**
   * Sends one datagram to `to` through the relay. A name is sent as
   * DOMAINNAME (resolved by the gateway); a fake address of
   * `options.fakeDns` is replaced by its name.
   */
  send(data: Uint8Array, to: SocksTargetInit): Promise<void>;
  /** The next datagram; rejects once the association has ended. */
  receive(options?: { signal?: AbortSignal }): Promise<SocksDatagram>;
  /** Iterates over received datagrams until the association ends. */
  [Symbol.asyncIterator](): AsyncIterator<SocksDatagram>;
  /** Settles when the association ended (closed here or by the gateway). */
  readonly closed: Promise<void>;
  /** Ends the association: closes the control connection and the UDP socket. */
  close(): void;
}

/**
 * Opens a UDP association through the gateway (the last one of a chain;
 * the client must be able to reach that gateway's UDP relay directly, so
 * a single gateway is the usual case). The request announces 0.0.0.0:0 or
 * [::]:0, in the family of the last gateway's address ("any port of my
 * address"), as the client's UDP port is not known beforehand.
 *
 * @example
 * ```ts ignore
 * import { udpAssociate } from "./udp_associate.ts";
 * await using udp = await udpAssociate({ via: "socks5://[::1]:1080" });
 * await udp.send(new TextEncoder().encode("query"), "dns.example.test:53");
 * const { data, from } = await udp.receive();
 * ```
 */
export async function udpAssociate(options: UdpAssociateOptions): Promise<SocksUdpAssociation> {
  const { fakeDns, ...controlOptions } = options;
  // "Any port of my address", in the family the last gateway is reached in
  // (Dante answers reply 8 to 0.0.0.0 over an IPv6 connection).
  const hops = parseHops(options.via);
  const lastFamily = normalizeIp(hops[hops.length - 1][0].host)?.family ?? 4;
  const any = lastFamily === 6 ? "::" : "0.0.0.0";
  const opened = await open({ host: any, port: 0 }, controlOptions, {
    command: Command.UDP_ASSOCIATE,
    verb: "associate UDP for",
    allowPortZero: true,
  });
  const { conn, gateways } = opened;
  const last = gateways[gateways.length - 1];
  const via = gateways.map((g) => g.display);
  const bnd = boundAddrOf(opened.reply);
  const bndIp = normalizeIp(bnd.hostname);
  const unspecified = bndIp?.host === "0.0.0.0" || bndIp?.host === "::";
  const relayHost = unspecified || !bndIp
    ? (gateways.length === 1 ? conn.remoteAddr.hostname : last.host)
    : bndIp.host;
  const relayIp = normalizeIp(relayHost);
  const relayAddr: Deno.NetAddr = {
    transport: "udp",
    hostname: relayIp?.host ?? relayHost,
    port: bnd.port,
  };
  const family = relayIp?.family ?? 4;
  const local = normalizeIp(conn.localAddr.hostname);

  let socket: Socket;
  try {
    socket = createSocket({ type: family === 6 ? "udp6" : "udp4" });
    await new Promise<void>((resolve, reject) => {
      socket.once("error", reject);
      socket.bind(0, local?.family === family ? local.host : undefined, () => {
        socket.off("error", reject);
        resolve();
      });
    });
  } catch (err) {
    conn.close();
    throw err;
  }
  const address = socket.address();
  const localAddr: Deno.NetAddr = {
    transport: "udp",
    hostname: address.address,
    port: address.port,
  };

  const queueLimit = options.queueLimit ?? 1024;
  const queue: SocksDatagram[] = [];
  const waiters: { resolve: (d: SocksDatagram) => void; reject: (e: unknown) => void }[] = [];
  let ended: unknown;
  let resolveClosed!: () => void;
  const closed = new Promise<void>((r) => resolveClosed = r);

  socket.on("message", (msg: Uint8Array, rinfo: { address: string; port: number }) => {
    if (rinfo.port !== relayAddr.port || normalizeIp(rinfo.address)?.host !== relayAddr.hostname) {
      return;
    }
    let header;
    try {
      header = decodeUdpHeader(msg);
    } catch (err) {
      if (err instanceof ProtocolError) return; // malformed: dropped, like any bad datagram
      throw err;
    }
    if (header.value.frag !== 0) return; // no reassembly: fragments are dropped
    const datagram: SocksDatagram = {
      data: msg.slice(header.length),
      from: { host: header.value.address.host, port: header.value.port },
    };
    const waiter = waiters.shift();
    if (waiter) waiter.resolve(datagram);
    else if (queue.length < queueLimit) queue.push(datagram);
  });

  const end = (reason: unknown) => {
    if (ended !== undefined) return;
    ended = reason;
    for (const w of waiters.splice(0)) w.reject(reason);
    try {
      conn.close();
    } catch {
      // already closed
    }
    socket.close(() => {
      opened.release?.();
      resolveClosed();
    });
  };

  // The association lives as long as the control connection.
  (async () => {
    const buf = new Uint8Array(64);
    try {
      while ((await conn.read(buf)) !== null) {
        // RFC 1928 sends nothing more on it; ignore anything.
      }
    } catch {
      // closed here, or reset
    }
    end(
      new SocksClosedError(
        `gateway ${last.display} ended the UDP association (its control connection closed)`,
        { gateway: last.display, target: formatTarget(opened.target), hop: gateways.length - 1 },
      ),
    );
  })();

  const association: SocksUdpAssociation = {
    relayAddr,
    localAddr,
    via,
    closed,
    send(data, to) {
      if (ended !== undefined) return Promise.reject(ended);
      let t = parseTarget(to);
      if (fakeDns?.isFake(t.host)) {
        const name = fakeDns.reverse(t.host);
        if (name === undefined) {
          return Promise.reject(
            new UnmappedFakeAddressError(t.host, {
              gateway: last.display,
              target: formatTarget(t),
            }),
          );
        }
        t = { host: name, port: t.port };
      }
      const packet = encodeUdpDatagram(
        { frag: 0, address: toSocksAddress(t.host), port: t.port },
        data,
      );
      return new Promise<void>((resolve, reject) => {
        socket.send(
          packet,
          relayAddr.port,
          relayAddr.hostname,
          (err) => err ? reject(err) : resolve(),
        );
      });
    },
    receive(receiveOptions = {}) {
      const queued = queue.shift();
      if (queued) return Promise.resolve(queued);
      if (ended !== undefined) return Promise.reject(ended);
      const signal = receiveOptions.signal;
      if (signal?.aborted) return Promise.reject(signal.reason);
      return new Promise<SocksDatagram>((resolve, reject) => {
        const waiter = {
          resolve: (d: SocksDatagram) => {
            signal?.removeEventListener("abort", onAbort);
            resolve(d);
          },
          reject: (e: unknown) => {
            signal?.removeEventListener("abort", onAbort);
            reject(e);
          },
        };
        const onAbort = () => {
          const i = waiters.indexOf(waiter);
          if (i >= 0) waiters.splice(i, 1);
          reject(signal!.reason);
        };
        signal?.addEventListener("abort", onAbort, { once: true });
        waiters.push(waiter);
      });
    },
    async *[Symbol.asyncIterator]() {
      while (true) {
        try {
          yield await association.receive();
        } catch (err) {
          if (ended !== undefined && queue.length === 0) return;
          throw err;
        }
      }
    },
    close() {
      end(new Deno.errors.BadResource("the UDP association is closed"));
    },
    async [Symbol.asyncDispose]() {
      association.close();
      await closed;
    },
  };
  return association;
}
