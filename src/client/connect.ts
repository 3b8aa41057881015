/**
 * SOCKS5 CONNECT through one gateway or a chain of gateways (RFC 3089
 * sections 3 and 4), with the result shaped like a `Deno.TcpConn`; and TLS
 * on top of it.
 *
 * @module
 */

import { formatTarget, type SocksTarget, type SocksTargetInit } from "./address.ts";
import { type DialOptions, open } from "./dial.ts";
import { SocksProtocolError } from "./errors.ts";
import { boundAddrOf, takeRest } from "./handshake.ts";

// The original, captured before `socksify` can replace it.
const denoStartTls = Deno.startTls;

/** Options of {@linkcode connect}: the gateway chain (with failover), `signal`, `timeout`, `fakeDns`. */
export type ConnectOptions = DialOptions;

/** Options of {@linkcode connectTls}: those of {@linkcode connect} plus TLS. */
export interface ConnectTlsOptions extends ConnectOptions, StartTlsOptions {}

/** TLS options, as for `Deno.startTls`. */
export interface StartTlsOptions {
  /**
   * The server name for SNI and certificate verification. Defaults to the
   * target host (the name behind a fake address), not the gateway.
   */
  hostname?: string;
  /** Extra PEM root certificates. */
  caCerts?: string[];
  /** ALPN protocols to offer. */
  alpnProtocols?: string[];
  /** Skips the host name check (the chain is still verified). */
  unsafelyDisableHostnameVerification?: boolean;
}

/** What the Socks Lib knows about a connection beyond its sockets. */
export interface SocksInfo {
  /** The target as requested (the name when a fake address was given). */
  readonly target: SocksTarget;
  /**
   * BND.ADDR/BND.PORT of the last gateway's reply: the address that gateway
   * uses towards the target (its hostname may be a name if the gateway sent
   * ATYP DOMAINNAME).
   */
  readonly boundAddr: Deno.NetAddr;
  /** The gateways traversed, as `HOST:PORT`. */
  readonly via: readonly string[];
}

/** A TLS connection made through gateways by {@linkcode connectTls}. */
export type SocksTlsConn = Deno.TlsConn & SocksInfo;

/** What {@linkcode SocksConn} wraps: the state right after a finished handshake. */
export interface SocksConnInit {
  /** The target as requested. */
  target: SocksTarget;
  /** BND of the last reply. */
  boundAddr: Deno.NetAddr;
  /** The gateways traversed, as `HOST:PORT`. */
  via: readonly string[];
  /** Bytes received after the reply, delivered first. */
  rest: Uint8Array<ArrayBuffer>;
  /** Called once when the connection is closed (releases a fake-address pin). */
  release?: () => void;
}

/** Releases pins of connections that were dropped without being closed. */
const leaked = new FinalizationRegistry<() => void>((release) => release());

let detach: (conn: SocksConn) => { conn: Deno.TcpConn; release?: () => void };

/**
 * A connection through SOCKS gateways, with the shape of `Deno.TcpConn`
 * (it can be used wherever one is expected, but it is not an instance of
 * Deno's class). Made by {@linkcode connect}.
 *
 * **RFC 3089 section 5 caveat:** `remoteAddr` is the address of the first
 * gateway (the real TCP peer), and `localAddr` this host's end towards it;
 * neither tells the far end's address, which across families cannot even be
 * represented. `boundAddr` is what the last gateway reported (its own
 * address towards the target). Ports are meaningful; for the destination,
 * use `target`.
 *
 * Bytes the gateway sent right after its reply (the destination spoke first)
 * are kept and delivered by the first reads.
 *
 * @example
 * ```ts ignore
 * import { connect } from "./connect.ts";
 * using conn = await connect("example.test:80", { via: "socks5://[::1]:1080" });
 * await conn.write(new TextEncoder().encode("HEAD / HTTP/1.0\r\n\r\n"));
 * console.log(conn.target, conn.boundAddr);
 * console.log(conn.remoteAddr); // the first gateway, not example.test
 * ```
 */
export class SocksConn implements Deno.TcpConn, SocksInfo {
  #conn: Deno.TcpConn;
  #pending: Uint8Array<ArrayBuffer> | null;
  #readable?: ReadableStream<Uint8Array<ArrayBuffer>>;
  #release?: () => void;
  #closed = false;
  #detached = false;
  /** The target as requested (the name when a fake address was given). */
  readonly target: SocksTarget;
  /** BND.ADDR/BND.PORT of the last gateway's reply. */
  readonly boundAddr: Deno.NetAddr;
  /** The gateways traversed, as `HOST:PORT`. */
  readonly via: readonly string[];

  static {
    detach = (c) => c.#detach();
  }

  /** Wraps a connection whose handshake is complete; use {@linkcode connect}. */
  constructor(conn: Deno.TcpConn, init: SocksConnInit) {
    this.#conn = conn;
    this.#pending = init.rest.length > 0 ? init.rest : null;
    this.#release = init.release;
    this.target = init.target;
    this.boundAddr = init.boundAddr;
    this.via = init.via;
    if (init.release) leaked.register(this, init.release, this);
  }

  /** This host's end of the connection to the first gateway. */
  get localAddr(): Deno.NetAddr {
    return this.#conn.localAddr;
  }

  /** The first gateway's address (not the target's: see the class notes). */
  get remoteAddr(): Deno.NetAddr {
    return this.#conn.remoteAddr;
  }

  /** Reads into `p`; resolves to the byte count, or `null` at EOF. */
  read(p: Uint8Array): Promise<number | null> {
    const pending = this.#pending;
    if (pending) {
      const n = Math.min(p.length, pending.length);
      p.set(pending.subarray(0, n));
      this.#pending = n < pending.length ? pending.subarray(n) : null;
      return Promise.resolve(n);
    }
    return this.#conn.read(p);
  }

  /** Writes some of `p`; resolves to the byte count written. */
  write(p: Uint8Array): Promise<number> {
    return this.#conn.write(p);
  }

  /** Sends FIN towards the target (through the gateways); reads go on. */
  closeWrite(): Promise<void> {
    return this.#conn.closeWrite();
  }

  /** Closes the connection and releases its fake-address pin. */
  close(): void {
    try {
      this.#conn.close();
    } finally {
      this.#closed = true;
      this.#unpin();
    }
  }

  /** Disables or enables Nagle's algorithm on the socket to the first gateway. */
  setNoDelay(noDelay?: boolean): void {
    this.#conn.setNoDelay(noDelay);
  }

  /** Enables or disables keep-alive on the socket to the first gateway. */
  setKeepAlive(keepAlive?: boolean): void {
    this.#conn.setKeepAlive(keepAlive);
  }

  /** Makes the connection keep the event loop alive. */
  ref(): void {
    this.#conn.ref();
  }

  /** Makes the connection not keep the event loop alive. */
  unref(): void {
    this.#conn.unref();
  }

  /** The data received, starting with any bytes that came with the reply. */
  get readable(): ReadableStream<Uint8Array<ArrayBuffer>> {
    if (this.#readable) return this.#readable;
    const pending = this.#pending;
    if (!pending) return this.#readable = this.#conn.readable;
    this.#pending = null;
    const inner = this.#conn.readable;
    this.#readable = ReadableStream.from((async function* () {
      yield pending;
      yield* inner;
    })());
    return this.#readable;
  }

  /** A stream for sending data. */
  get writable(): WritableStream<Uint8Array<ArrayBufferLike>> {
    return this.#conn.writable;
  }

  /** Closes the connection if it is still open. */
  [Symbol.dispose](): void {
    if (this.#closed || this.#detached) return;
    try {
      this.close();
    } catch {
      // already closed by other means
    }
  }

  #unpin(): void {
    const release = this.#release;
    if (!release) return;
    this.#release = undefined;
    leaked.unregister(this);
    release();
  }

  #detach(): { conn: Deno.TcpConn; release?: () => void } {
    if (this.#closed || this.#detached) {
      throw new Deno.errors.BadResource(
        `startTls: expected an open SOCKS connection to ${
          formatTarget(this.target)
        }, found a closed one`,
      );
    }
    if (this.#pending || this.#readable) {
      throw new TypeError(
        `startTls: expected no unread bytes on the SOCKS connection to ${
          formatTarget(this.target)
        } and no readable stream in use, found ${
          this.#pending ? `${this.#pending.length} unread bytes` : "the readable stream taken"
        }`,
      );
    }
    this.#detached = true;
    const release = this.#release;
    this.#release = undefined;
    leaked.unregister(this);
    return { conn: this.#conn, release };
  }
}

/**
 * Opens a TCP connection to `target` through the SOCKS5 gateway(s) of
 * `options.via` with CONNECT. Names are sent as ATYP DOMAINNAME and resolved
 * by the (last) gateway, never locally; IP literals go as IPv4/IPv6. With a
 * chain, the first gateway is asked to CONNECT to the second, the handshake
 * with the second runs over that stream, and so on (RFC 3089 section 4).
 *
 * Failures are {@linkcode SocksError}s naming the gateway: e.g.
 * `gateway [2001:db8::1]:1080 could not connect to v4only.test:80: host
 * unreachable (reply 4)`.
 *
 * See {@linkcode SocksConn} for what `remoteAddr` means (RFC 3089 section 5).
 *
 * @example
 * ```ts ignore
 * import { connect } from "./connect.ts";
 * // The shape Deno.connect takes; "[2001:db8::10]:443" and { host, port } work too.
 * const conn = await connect({ hostname: "2001:db8::10", port: 443 }, {
 *   via: ["socks5://alice:secret@[2001:db8::1]:1080", "socks5://192.0.2.7:1080"],
 *   timeout: 10_000,
 *   signal: AbortSignal.timeout(30_000),
 * });
 * conn.close();
 * ```
 */
export async function connect(
  target: SocksTargetInit,
  options: ConnectOptions,
): Promise<SocksConn> {
  const opened = await open(target, options);
  return new SocksConn(opened.conn, {
    target: opened.target,
    boundAddr: boundAddrOf(opened.reply),
    via: opened.gateways.map((g) => g.display),
    rest: takeRest(opened.reader),
    release: opened.release,
  });
}

function decorateTls(
  tls: Deno.TlsConn,
  info: SocksInfo,
  release: (() => void) | undefined,
): SocksTlsConn {
  Object.defineProperties(tls, {
    target: { value: info.target, enumerable: true },
    boundAddr: { value: info.boundAddr, enumerable: true },
    via: { value: info.via, enumerable: true },
  });
  if (release) {
    let released = false;
    const unpin = () => {
      if (released) return;
      released = true;
      leaked.unregister(tls);
      release();
    };
    leaked.register(tls, release, tls);
    const close = tls.close;
    const dispose = tls[Symbol.dispose];
    Object.defineProperties(tls, {
      close: {
        value: function (this: Deno.TlsConn) {
          try {
            close.call(this);
          } finally {
            unpin();
          }
        },
      },
      [Symbol.dispose]: {
        value: function (this: Deno.TlsConn) {
          try {
            dispose.call(this);
          } finally {
            unpin();
          }
        },
      },
    });
  }
  return tls as SocksTlsConn;
}

/**
 * Like {@linkcode connect}, then starts TLS with the target (SNI and
 * certificate check against the target's name, not the gateway's). The
 * result is a real `Deno.TlsConn` (TLS runs on the underlying socket via
 * `Deno.startTls`), with {@linkcode SocksInfo} added. As with
 * `Deno.connectTls`, the TLS handshake itself runs on first use; call
 * `handshake()` to force it. `timeout` covers the SOCKS part only.
 *
 * @example
 * ```ts ignore
 * import { connectTls } from "./connect.ts";
 * const tls = await connectTls("example.test:443", { via: "socks5://[::1]:1080" });
 * await tls.handshake();
 * tls.close();
 * ```
 */
export async function connectTls(
  target: SocksTargetInit,
  options: ConnectTlsOptions,
): Promise<SocksTlsConn> {
  const opened = await open(target, options);
  const { conn, reader, release } = opened;
  const info: SocksInfo = {
    target: opened.target,
    boundAddr: boundAddrOf(opened.reply),
    via: opened.gateways.map((g) => g.display),
  };
  const rest = takeRest(reader);
  let tls: Deno.TlsConn;
  try {
    if (rest.length > 0) {
      const last = opened.gateways[opened.gateways.length - 1];
      throw new SocksProtocolError(
        `gateway ${last.display} relayed ${rest.length} bytes from ${
          formatTarget(opened.target)
        } before the TLS handshake started; expected none (a TLS server waits for the client)`,
        {
          gateway: last.display,
          target: formatTarget(opened.target),
          hop: opened.gateways.length - 1,
        },
      );
    }
    tls = await denoStartTls(conn, tlsOptions(options, opened.target));
  } catch (err) {
    try {
      conn.close();
    } catch {
      // consumed or closed
    }
    release?.();
    throw err;
  }
  return decorateTls(tls, info, release);
}

function tlsOptions(options: StartTlsOptions, target: SocksTarget): Deno.StartTlsOptions {
  const out: Deno.StartTlsOptions = { hostname: options.hostname ?? target.host };
  if (options.caCerts) out.caCerts = options.caCerts;
  if (options.alpnProtocols) out.alpnProtocols = options.alpnProtocols;
  if (options.unsafelyDisableHostnameVerification) {
    out.unsafelyDisableHostnameVerification = true;
  }
  return out;
}

/**
 * Upgrades a connection to TLS, like `Deno.startTls`, but also accepts a
 * {@linkcode SocksConn} (STARTTLS-style protocols through a gateway): TLS
 * then runs on its underlying socket, with SNI defaulting to the target's
 * name. The SOCKS connection must have no unread bytes (read the server's
 * plaintext up to the point where TLS starts) and is consumed.
 *
 * @example
 * ```ts ignore
 * import { connect, startTls } from "./connect.ts";
 * const conn = await connect("mail.example.test:25", { via: "socks5://[::1]:1080" });
 * // ... read the banner, send EHLO and STARTTLS, read "220" ...
 * const tls = await startTls(conn);
 * ```
 */
export async function startTls(
  conn: SocksConn | Deno.TcpConn,
  options: StartTlsOptions = {},
): Promise<Deno.TlsConn> {
  if (!(conn instanceof SocksConn)) {
    return await denoStartTls(conn, options as Deno.StartTlsOptions);
  }
  const info: SocksInfo = { target: conn.target, boundAddr: conn.boundAddr, via: conn.via };
  const { conn: raw, release } = detach(conn);
  let tls: Deno.TlsConn;
  try {
    tls = await denoStartTls(raw, tlsOptions(options, conn.target));
  } catch (err) {
    release?.();
    throw err;
  }
  return decorateTls(tls, info, release);
}
