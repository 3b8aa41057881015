/**
 * The gateway's listeners: binding (with errors that say what to do),
 * one accept loop each that survives per-connection errors, the handshake
 * gate, and reload by address. What a listener speaks (its protocols) is
 * kept with it and handed to each connection it accepts.
 *
 * @module
 */

import { joinHostPort, normalizeIp, splitHostPort } from "../protocol/address.ts";
import type { GatewayLogger } from "../log.ts";
import type { HandshakeGate } from "./admission.ts";
import { type Protocol, PROTOCOLS } from "./session.ts";
import type { GatewayStats } from "./stats.ts";

/** A host and port to listen on, and what to speak there. */
export interface ListenAddress {
  /** An IP literal (brackets optional). */
  host: string;
  /** A port; 0 picks a free one. */
  port: number;
  /** The protocols served here. Default: the gateway's `protocols`. */
  protocols?: readonly Protocol[];
}

/** A listen address that could not be bound. */
export class ListenError extends Error {
  /** The address, as `HOST:PORT`. */
  readonly address: string;
  /** Creates the error. */
  constructor(address: string, reason: string, options?: ErrorOptions) {
    super(`cannot listen on ${address}: ${reason}`, options);
    this.name = "ListenError";
    this.address = address;
  }
}

function toListenAddress(entry: string | ListenAddress): ListenAddress {
  if (typeof entry !== "string") return entry;
  const hp = splitHostPort(entry);
  if (!hp) {
    throw new ListenError(entry, "expected HOST:PORT with an IP literal host, IPv6 in brackets");
  }
  return hp;
}

/** A listen entry, validated: the normalized host and the `HOST:PORT` it is compared by. */
interface Requested {
  hostname: string;
  port: number;
  /** Normalized `HOST:PORT`, as asked for (port 0 stays 0). */
  key: string;
  protocols: ReadonlySet<Protocol>;
}

function requested(
  entry: string | ListenAddress,
  defaults: readonly Protocol[],
): Requested {
  const { host, port, protocols = defaults } = toListenAddress(entry);
  const ip = normalizeIp(host);
  if (!ip) {
    throw new ListenError(
      joinHostPort(host, port),
      `expected an IP literal host, found "${host}"`,
    );
  }
  const key = joinHostPort(ip.host, port);
  for (const p of protocols) {
    if (!PROTOCOLS.includes(p)) {
      throw new ListenError(key, `expected protocols among ${PROTOCOLS.join(", ")}, found "${p}"`);
    }
  }
  if (protocols.length === 0) {
    throw new ListenError(key, `expected at least one of ${PROTOCOLS.join(", ")}, found none`);
  }
  return { hostname: ip.host, port, key, protocols: new Set(protocols) };
}

/** An accept that failed because the client reset while queued, not because of this host. */
function clientLeft(error: unknown): boolean {
  return error instanceof Deno.errors.NotConnected ||
    error instanceof Deno.errors.ConnectionReset ||
    error instanceof Deno.errors.ConnectionAborted;
}

/**
 * True when Deno runs with `--unstable-net`, which `reusePort` needs (without
 * it, `Deno.listen({ reusePort: true })` ends the process instead of throwing).
 * The flag's other APIs, such as `Deno.listenDatagram`, exist only with it.
 */
function unstableNet(): boolean {
  return typeof (Deno as { listenDatagram?: unknown }).listenDatagram === "function";
}

function bind(
  req: Requested,
  others: readonly { hostname: string; port: number }[] = [],
  reusePort = false,
): Deno.TcpListener {
  if (reusePort && !unstableNet()) {
    throw new ListenError(
      req.key,
      "reuse_port needs Deno's --unstable-net flag; expected deno run --unstable-net " +
        "(or deno compile --unstable-net), found it missing",
    );
  }
  try {
    return reusePort
      ? Deno.listen({ hostname: req.hostname, port: req.port, transport: "tcp", reusePort })
      : Deno.listen({ hostname: req.hostname, port: req.port, transport: "tcp" });
  } catch (error) {
    let reason = error instanceof Deno.errors.AddrInUse
      ? "address already in use"
      : error instanceof Deno.errors.AddrNotAvailable
      ? "address not available on this host"
      : (error as Error).message;
    // On Linux a socket on [::] also takes IPv4 (dual-stack), so [::]:P and
    // 0.0.0.0:P cannot both be bound: say so rather than leave a riddle.
    const wildcard = req.hostname === "0.0.0.0" || req.hostname === "::";
    if (
      error instanceof Deno.errors.AddrInUse && wildcard && req.port !== 0 &&
      others.some((o) =>
        o.port === req.port && (o.hostname === "::" || o.hostname === "0.0.0.0") &&
        o.hostname !== req.hostname
      )
    ) {
      reason += `; [::]:${req.port} already accepts IPv4 as well: list [::]:${req.port} alone ` +
        `for both families`;
    }
    throw new ListenError(req.key, reason, { cause: error });
  }
}

/** `HOST:PORT` of a socket address. */
export function formatAddr(a: Deno.NetAddr): string {
  return joinHostPort(a.hostname, a.port);
}

/** One bound listener, as its accepted connections see it. */
export interface Listening {
  /** The socket. */
  readonly listener: Deno.TcpListener;
  /** The normalized address asked for, e.g. `127.0.0.1:0`. */
  readonly requested: string;
  /** What it speaks; a reload may change it. */
  protocols: ReadonlySet<Protocol>;
  /** Set when a reload removed it, or at shutdown. */
  closed: boolean;
}

/** What the listeners need from their gateway. */
export interface ListenerHooks {
  /** Runs one accepted connection. */
  onConn(conn: Deno.TcpConn, from: Listening): void;
  /** The handshake gate the accept loops wait at. */
  gate: HandshakeGate;
  /** Accept counters. */
  stats: GatewayStats;
  /** Where accept failures are reported. */
  log: GatewayLogger;
}

/** A listen list with its addresses, resolved against the protocol default. */
export type ListenList = readonly (string | ListenAddress)[];

/**
 * The set of listeners of one gateway. `open` binds every address or none;
 * `apply` (a reload) binds the new addresses first, then closes those no
 * longer listed, keeping the ones listed again (by the address asked for, or
 * the address bound).
 *
 * @example
 * ```ts ignore
 * const listeners = new Listeners(hooks);
 * listeners.open(["127.0.0.1:0"], ["socks5", "http"]);
 * await listeners.close();
 * ```
 */
export class Listeners {
  #hooks: ListenerHooks;
  #entries: Listening[] = [];
  #loops = new Set<Promise<void>>();
  #stopping = false;
  #lastAcceptErrorLog = 0;
  /** Bind with `SO_REUSEPORT` (needs `--unstable-net`): listeners bound from now on. */
  reusePort = false;

  /** Creates an empty set. */
  constructor(hooks: ListenerHooks) {
    this.#hooks = hooks;
  }

  /** The bound addresses, in listed order. */
  get addrs(): Deno.NetAddr[] {
    return this.#entries.map((l) => l.listener.addr);
  }

  /** The listeners, in listed order. */
  get entries(): readonly Listening[] {
    return this.#entries;
  }

  /** Binds every entry and starts accepting; on a failure closes what it bound and throws. */
  open(list: ListenList, protocols: readonly Protocol[]): void {
    const bound: Listening[] = [];
    try {
      for (const entry of list) {
        const req = requested(entry, protocols);
        const listener = bind(req, bound.map((l) => l.listener.addr), this.reusePort);
        bound.push({ listener, requested: req.key, protocols: req.protocols, closed: false });
      }
    } catch (error) {
      for (const l of bound) l.listener.close();
      throw error;
    }
    this.#entries = bound;
    for (const entry of bound) this.#start(entry);
  }

  /**
   * Replaces the listen list (a reload): returns the listeners added and
   * removed. Throws a {@linkcode ListenError} with nothing changed when a
   * new address cannot be bound.
   */
  apply(
    list: ListenList,
    protocols: readonly Protocol[],
  ): { added: Listening[]; removed: Listening[] } {
    const next: Listening[] = [];
    const added: Listening[] = [];
    const keptProtocols = new Map<Listening, ReadonlySet<Protocol>>();
    try {
      for (const entry of list) {
        const req = requested(entry, protocols);
        const existing = this.#entries.find((l) =>
          !next.includes(l) &&
          (l.requested === req.key || formatAddr(l.listener.addr) === req.key)
        );
        if (existing) {
          next.push(existing);
          keptProtocols.set(existing, req.protocols);
        } else {
          const taken = [...next, ...this.#entries].map((l) => l.listener.addr);
          const listener = bind(req, taken, this.reusePort);
          const l = { listener, requested: req.key, protocols: req.protocols };
          const entry = { ...l, closed: false };
          added.push(entry);
          next.push(entry);
        }
      }
    } catch (error) {
      for (const l of added) this.#close(l);
      throw error;
    }
    const removed = this.#entries.filter((l) => !next.includes(l));
    for (const [l, p] of keptProtocols) l.protocols = p;
    this.#entries = next;
    for (const l of removed) this.#close(l);
    for (const l of added) this.#start(l);
    return { added, removed };
  }

  /** Stops accepting everywhere and waits for the accept loops to end. */
  async close(): Promise<void> {
    this.#stopping = true;
    for (const l of this.#entries) this.#close(l);
    await Promise.all(this.#loops);
  }

  #start(entry: Listening): void {
    const loop = this.#acceptLoop(entry);
    this.#loops.add(loop);
    loop.finally(() => this.#loops.delete(loop));
  }

  #close(entry: Listening): void {
    entry.closed = true;
    this.#hooks.gate.wakeAll(); // a loop waiting at the gate sees `closed` now
    try {
      entry.listener.close();
    } catch { /* already closed */ }
  }

  async #acceptLoop(entry: Listening): Promise<void> {
    const { listener } = entry;
    const { gate, stats, log } = this.#hooks;
    const cancelled = () => this.#stopping || entry.closed;
    while (!cancelled()) {
      // Checked first so that an open gate costs no promise per client.
      if (gate.shut && (await gate.ready(cancelled))) stats.acceptsHeld++;
      if (cancelled()) return;
      let conn: Deno.TcpConn;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (cancelled() || error instanceof Deno.errors.BadResource) return;
        // Keep serving. A client that reset while queued is its own business
        // (debug); anything else is a warning, at most one a second, so that
        // resetting clients or a lasting EMFILE cannot flood the log.
        stats.acceptErrors++;
        const fields = { addr: formatAddr(listener.addr), error: (error as Error).message };
        if (clientLeft(error)) log.debug("accept on {addr}: client already gone: {error}", fields);
        else {
          const now = performance.now();
          if (now - this.#lastAcceptErrorLog > 1000) {
            this.#lastAcceptErrorLog = now;
            log.warn("accept on {addr} failed: {error} ({failures} failed accepts in all)", {
              ...fields,
              failures: stats.acceptErrors,
            });
          }
        }
        if (/too many open files/i.test((error as Error).message)) {
          await new Promise((r) => setTimeout(r, 50));
        }
        continue;
      }
      if (entry.closed && !this.#stopping) {
        // Accepted just as a reload removed this listener.
        conn.close();
        return;
      }
      this.#hooks.onConn(conn, entry);
    }
  }
}
