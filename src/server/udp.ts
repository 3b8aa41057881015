/**
 * UDP ASSOCIATE (RFC 1928 section 7, RFC 3089 section 5.1): one relay socket
 * in the client's family, bound to the address of the client's control
 * connection, and one outbound socket per destination family.
 *
 * Replies to an IPv4 client from an IPv6 peer (or the reverse) cannot carry
 * the peer's address in a form the client's family holds (RFC 3089's
 * address-length constraint). So a peer that the client addressed by name is
 * answered under that same name (ATYP DOMAINNAME), as a per-association
 * mapping; a peer the client addressed by a literal is answered with that
 * literal. A reply says nothing of how its request was addressed, so the
 * mapping follows the client's latest datagram to that peer address and port.
 *
 * @module
 */

import { createSocket, type RemoteInfo, type Socket } from "node:dgram";
import { type Family, joinHostPort, normalizeIp } from "../protocol/address.ts";
import { decodeUdpHeader, encodeUdpDatagram, type SocksAddress } from "../protocol/codec.ts";
import type { ResolvedAddress } from "./resolver.ts";

/** Options of the UDP ASSOCIATE command. */
export interface UdpServerOptions {
  /** Address to name in the reply instead of the relay's own (a gateway behind NAT). */
  advertise?: { ipv4?: string; ipv6?: string };
  /** Ports for relay sockets, inclusive; default any free port. */
  portRange?: readonly [number, number];
  /** How long a resolved name is reused, in ms. Default 30 s. */
  nameCacheTtl?: number;
}

/** Counters of one association. */
export interface UdpCounters {
  /** Datagrams relayed client -> destination. */
  up: number;
  /** Datagrams relayed destination -> client. */
  down: number;
  /** Datagrams dropped (malformed, fragmented, wrong source, denied, unresolvable). */
  dropped: number;
}

/** What the association needs from its session. */
export interface AssociationHooks {
  /** Resolves a destination name (policy and rules applied), or throws. */
  resolve(name: string, port: number): Promise<ResolvedAddress[]>;
  /** Whether a literal destination is allowed (rules, family policy). */
  allowed(host: string, port: number, family: Family): boolean | Promise<boolean>;
  /** Called for every relayed datagram, with its direction and payload size. */
  onDatagram(up: boolean, bytes: number, family: Family): void;
  /** Called for every dropped datagram, with the reason. */
  onDrop(reason: string): void;
}

function udpType(family: Family): "udp4" | "udp6" {
  return family === 6 ? "udp6" : "udp4";
}

/** Binds a UDP socket on `address`, on a port from `range` if given. */
export async function bindUdp(
  family: Family,
  address: string,
  range?: readonly [number, number],
): Promise<Socket> {
  const ports = range ? shuffledPorts(range) : [0];
  let lastError: unknown;
  for (const port of ports) {
    const socket = createSocket({ type: udpType(family), ipv6Only: family === 6 });
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once("error", reject);
        socket.bind({ address, port, exclusive: true }, () => {
          socket.off("error", reject);
          resolve();
        });
      });
      return socket;
    } catch (error) {
      lastError = error;
      socket.close();
    }
  }
  throw new Error(
    `cannot bind a UDP relay socket on ${address}${
      range ? ` ports ${range[0]}-${range[1]}` : ""
    }: ${(lastError as Error)?.message}`,
  );
}

function shuffledPorts([lo, hi]: readonly [number, number]): number[] {
  const ports = Array.from({ length: hi - lo + 1 }, (_, i) => lo + i);
  for (let i = ports.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [ports[i], ports[j]] = [ports[j], ports[i]];
  }
  return ports;
}

/** Per-association tables are bounded: the least recently used entry goes first. */
const TABLE_LIMIT = 1024;

function remember<K, V>(table: Map<K, V>, key: K, value: V): void {
  table.delete(key);
  table.set(key, value);
  if (table.size > TABLE_LIMIT) table.delete(table.keys().next().value!);
}

/** One UDP association. */
export class Association {
  readonly relay: Socket;
  readonly counters: UdpCounters = { up: 0, down: 0, dropped: 0 };
  #client: { host: string; port: number };
  #hooks: AssociationHooks;
  #outbound = new Map<Family, Promise<Socket>>();
  #outboundFrom: { ipv4?: string; ipv6?: string };
  /** `name:port` -> resolved (and rule-checked) addresses; rules depend on the port. */
  #names = new Map<string, { addresses: ResolvedAddress[]; expires: number }>();
  #nameTtl: number;
  /** Peer `addr:port` -> the name the client used for it (bounded, least recent first). */
  #peerNames = new Map<string, string>();
  /** Peer addresses the client has sent to: only they may answer (bounded). */
  #peers = new Map<string, true>();
  /** The largest UDP payload the client's family can carry. */
  #maxToClient: number;
  #closed = false;

  /**
   * `client.port` 0 means "lock to the port of the first datagram from the
   * client's address".
   */
  constructor(
    relay: Socket,
    client: { host: string; port: number },
    options: { outbound: { ipv4?: string; ipv6?: string }; nameCacheTtl?: number },
    hooks: AssociationHooks,
  ) {
    this.relay = relay;
    this.#client = { ...client };
    this.#maxToClient = normalizeIp(client.host)?.family === 6 ? 65_527 : 65_507;
    this.#hooks = hooks;
    this.#outboundFrom = options.outbound;
    this.#nameTtl = options.nameCacheTtl ?? 30_000;
    relay.on("message", (msg: Uint8Array, from: RemoteInfo) => this.#fromClient(msg, from));
    relay.on("error", () => {/* per-datagram errors (e.g. ICMP) do not end the association */});
  }

  #drop(reason: string) {
    this.counters.dropped++;
    this.#hooks.onDrop(reason);
  }

  #fromClient(msg: Uint8Array, from: RemoteInfo): void {
    const src = normalizeIp(from.address);
    if (!src || src.host !== this.#client.host) return this.#drop("datagram from another host");
    if (this.#client.port === 0) this.#client.port = from.port;
    else if (from.port !== this.#client.port) return this.#drop("datagram from another port");
    let header;
    try {
      header = decodeUdpHeader(msg);
    } catch {
      return this.#drop("malformed datagram header");
    }
    if (header.value.frag !== 0) return this.#drop("fragmented datagram (FRAG != 0)");
    const data = msg.subarray(header.length);
    this.#forward(header.value.address, header.value.port, data).catch(() =>
      this.#drop(`cannot send to ${joinHostPort(header.value.address.host, header.value.port)}`)
    );
  }

  async #forward(address: SocksAddress, port: number, data: Uint8Array): Promise<void> {
    let target: ResolvedAddress;
    // Every literal, in any ATYP (a DOMAINNAME may hold one), passes the rules.
    const literal = normalizeIp(address.host);
    if (literal) {
      target = { address: literal.host, family: literal.family };
      if (!(await this.#hooks.allowed(target.address, port, target.family))) {
        return this.#drop(`${joinHostPort(target.address, port)} not allowed`);
      }
      // Addressed by its literal now: answer with the literal again.
      this.#peerNames.delete(joinHostPort(target.address, port));
    } else {
      const key = `${address.host.toLowerCase()}:${port}`;
      let cached = this.#names.get(key);
      if (!cached || cached.expires < performance.now()) {
        const addresses = await this.#hooks.resolve(address.host, port);
        cached = { addresses, expires: performance.now() + this.#nameTtl };
      }
      remember(this.#names, key, cached);
      target = cached.addresses[0];
      remember(this.#peerNames, joinHostPort(target.address, port), address.host);
    }
    // Closed while the hooks ran: open nothing (close() has already closed
    // every outbound socket it knows of, and would never see a new one).
    if (this.#closed) return this.#drop("association closed");
    const socket = await this.#outboundSocket(target.family);
    if (this.#closed) return; // closed while binding: close() closes the socket
    remember(this.#peers, target.address, true);
    socket.send(data, port, target.address);
    this.counters.up++;
    this.#hooks.onDatagram(true, data.length, target.family);
  }

  #outboundSocket(family: Family): Promise<Socket> {
    let socket = this.#outbound.get(family);
    if (!socket) {
      const from = (family === 4 ? this.#outboundFrom.ipv4 : this.#outboundFrom.ipv6) ??
        (family === 4 ? "0.0.0.0" : "::");
      socket = bindUdp(family, from).then((s) => {
        s.on("message", (msg: Uint8Array, peer: RemoteInfo) => this.#fromPeer(msg, peer, family));
        s.on("error", () => {/* ICMP errors for one peer do not end the association */});
        return s;
      });
      this.#outbound.set(family, socket);
    }
    return socket;
  }

  #fromPeer(msg: Uint8Array, peer: RemoteInfo, family: Family): void {
    if (this.#client.port === 0 || this.#closed) return this.#drop("no client port yet");
    const host = normalizeIp(peer.address)?.host ?? peer.address;
    if (!this.#peers.has(host)) {
      return this.#drop(`datagram from ${host}, not a peer of the client`);
    }
    const name = this.#peerNames.get(joinHostPort(host, peer.port));
    const address: SocksAddress = name
      ? { type: "domain", host: name }
      : { type: family === 4 ? "ipv4" : "ipv6", host };
    let out: Uint8Array;
    try {
      out = encodeUdpDatagram({ frag: 0, address, port: peer.port }, msg);
    } catch {
      return this.#drop(`cannot encapsulate a reply from ${host}`);
    }
    // A full-size reply no longer fits once the SOCKS header is added.
    if (out.length > this.#maxToClient) {
      return this.#drop(`reply from ${host} is ${out.length} bytes with its header: too large`);
    }
    this.relay.send(out, this.#client.port, this.#client.host);
    this.counters.down++;
    this.#hooks.onDatagram(false, msg.length, family);
  }

  /** Closes every socket of the association. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.relay.close();
    } catch { /* already closed */ }
    for (const s of this.#outbound.values()) {
      s.then((socket) => {
        try {
          socket.close();
        } catch { /* already closed */ }
      }, () => {});
    }
  }
}
