/**
 * "Socksifying" the running process (RFC 3089 section 3): the Socks Lib
 * takes the place of `Deno.connect`, `Deno.connectTls`, `Deno.startTls` and
 * `Deno.resolveDns`, so that unmodified code reaches its destinations through
 * the gateway, with name resolution delegated to it through fake addresses.
 * Also `createHttpClient` for `fetch`, which does not go through
 * `Deno.connect`.
 *
 * @module
 */

import { type Cidr, cidrContains, normalizeIp, parseCidr } from "../protocol/address.ts";
import { parseChain, type SocksGateway } from "./address.ts";
import { connect, connectTls, SocksConn, startTls, type StartTlsOptions } from "./connect.ts";
import { FakeDns } from "./fake_dns.ts";

/** Options of {@linkcode socksify}. */
export interface SocksifyOptions {
  /** The gateway URL or chain, as for `connect`. */
  via: string | readonly string[];
  /** The mapping table; a new `FakeDns()` by default. */
  fakeDns?: FakeDns;
  /**
   * IP prefixes reached directly, without the gateway. Names always go
   * through the gateway (they are never resolved locally), except the first
   * gateway's own `host:port`, which is always direct.
   *
   * @default {["127.0.0.0/8", "::1/128"]}
   */
  direct?: readonly string[];
  /** The handshake deadline in milliseconds for each proxied connect. */
  timeout?: number;
}

/** The handle returned by {@linkcode socksify}. */
export interface Socksified extends Disposable {
  /** The mapping table in use. */
  readonly fakeDns: FakeDns;
  /** Puts the original `Deno` functions back. Calling it again does nothing. */
  restore(): void;
}

type Patched = "connect" | "connectTls" | "startTls" | "resolveDns";
type DenoFunctions = Record<Patched, unknown>;

let active: Socksified | undefined;

/**
 * Replaces `Deno.connect`, `Deno.connectTls`, `Deno.startTls` and
 * `Deno.resolveDns` for the whole process until `restore()`:
 *
 * - `Deno.resolveDns(name, "A" | "AAAA")` answers one fake address of that
 *   family from the {@linkcode FakeDns} (no DNS query is made); other record
 *   types reject with `Deno.errors.NotSupported`.
 * - `Deno.connect` (TCP) to a fake address becomes a SOCKS CONNECT with the
 *   mapped name; to a name, a CONNECT with the name; to another IP literal,
 *   a CONNECT with it, unless it lies in `direct` (loopback by default) or
 *   is the gateway's own address, which are connected directly. Unix and
 *   vsock connects are untouched. The result is a {@linkcode SocksConn}.
 * - `Deno.connectTls` does the same and starts TLS with the name; client
 *   certificates cannot be used through a gateway (`Deno.startTls` has no
 *   such option) and reject with `Deno.errors.NotSupported`.
 * - `Deno.startTls` accepts the `SocksConn`s made this way.
 *
 * Not covered: `fetch` (use {@linkcode createHttpClient}), `node:net` and
 * `node:http`, and UDP. Only one socksify can be active at a time.
 *
 * @example
 * ```ts ignore
 * import { socksify } from "./socksify.ts";
 * using _socks = socksify({ via: "socks5://[::1]:1080" });
 * const [addr] = await Deno.resolveDns("v4only.test", "AAAA"); // "100::1", a fake
 * const conn = await Deno.connect({ hostname: addr, port: 80 }); // CONNECT v4only.test:80
 * conn.close();
 * ```
 */
export function socksify(options: SocksifyOptions): Socksified {
  if (active) {
    throw new Error(
      "socksify: expected no active socksify, found one; call restore() on its handle first",
    );
  }
  const gateways = parseChain(options.via);
  const via = [...(typeof options.via === "string" ? [options.via] : options.via)];
  const fakeDns = options.fakeDns ?? new FakeDns();
  const direct = (options.direct ?? ["127.0.0.0/8", "::1/128"]).map((text) => {
    const cidr = parseCidr(text);
    if (!cidr) {
      throw new TypeError(`socksify: expected direct CIDRs such as 127.0.0.0/8, found "${text}"`);
    }
    return cidr;
  });
  const isDirect = directTest(direct, gateways[0], fakeDns);
  const timeout = options.timeout;
  const deno = Deno as unknown as DenoFunctions;
  const originals: DenoFunctions = {
    connect: deno.connect,
    connectTls: deno.connectTls,
    startTls: deno.startTls,
    resolveDns: deno.resolveDns,
  };
  const origConnect = originals.connect as typeof Deno.connect;
  const origConnectTls = originals.connectTls as typeof Deno.connectTls;
  const origStartTls = originals.startTls as typeof Deno.startTls;

  const patched: DenoFunctions = {
    connect(opts: Deno.ConnectOptions | Deno.UnixConnectOptions | Deno.VsockConnectOptions) {
      if ((opts.transport ?? "tcp") !== "tcp") {
        return (origConnect as (o: unknown) => Promise<Deno.Conn>)(opts);
      }
      const o = opts as Deno.ConnectOptions;
      const hostname = o.hostname ?? "127.0.0.1";
      if (isDirect(hostname, o.port)) return origConnect(o);
      return connect({ host: hostname, port: o.port }, { via, fakeDns, signal: o.signal, timeout });
    },
    connectTls(opts: Deno.ConnectTlsOptions & Partial<Deno.TlsCertifiedKeyPem>) {
      const hostname = opts.hostname ?? "127.0.0.1";
      if (isDirect(hostname, opts.port)) return origConnectTls(opts);
      if (opts.cert !== undefined || opts.key !== undefined) {
        return Promise.reject(
          new Deno.errors.NotSupported(
            `socksify: Deno.connectTls to ${hostname} with a client certificate cannot go through the SOCKS gateway (Deno.startTls takes no cert/key); add the target to "direct" or connect without a client certificate`,
          ),
        );
      }
      return connectTls({ host: hostname, port: opts.port }, {
        via,
        fakeDns,
        timeout,
        caCerts: opts.caCerts,
        alpnProtocols: opts.alpnProtocols,
        unsafelyDisableHostnameVerification: opts.unsafelyDisableHostnameVerification,
      });
    },
    startTls(conn: Deno.TcpConn | SocksConn, opts: StartTlsOptions = {}) {
      if (!(conn instanceof SocksConn)) return origStartTls(conn, opts as Deno.StartTlsOptions);
      const hostname = opts.hostname !== undefined && !fakeDns.isFake(opts.hostname)
        ? opts.hostname
        : undefined; // the target's name
      return startTls(conn, { ...opts, hostname });
    },
    // deno-lint-ignore require-await
    async resolveDns(query: string, recordType: string, opts?: Deno.ResolveDnsOptions) {
      opts?.signal?.throwIfAborted();
      if (recordType === "A") return [fakeDns.lookup(query, 4)];
      if (recordType === "AAAA") return [fakeDns.lookup(query, 6)];
      throw new Deno.errors.NotSupported(
        `socksify: Deno.resolveDns("${query}", "${recordType}") is not supported while socksified: ` +
          `only A and AAAA queries are answered (with fake addresses, RFC 3089 section 3); ` +
          `name resolution is delegated to the SOCKS gateway`,
      );
    },
  };
  Object.assign(deno, patched);

  let restored = false;
  const handle: Socksified = {
    fakeDns,
    restore() {
      if (restored) return;
      restored = true;
      Object.assign(deno, originals);
      if (active === handle) active = undefined;
    },
    [Symbol.dispose]() {
      handle.restore();
    },
  };
  active = handle;
  return handle;
}

function directTest(
  direct: Cidr[],
  gateway: SocksGateway,
  fakeDns: FakeDns,
): (hostname: string, port: number) => boolean {
  const gwIp = normalizeIp(gateway.host);
  const gwName = gwIp ? undefined : gateway.host.toLowerCase();
  return (hostname, port) => {
    const ip = normalizeIp(hostname);
    const isGateway = port === gateway.port &&
      (ip ? gwIp?.host === ip.host : hostname.toLowerCase() === gwName);
    if (isGateway) return true;
    if (!ip || fakeDns.isFake(ip.host)) return false;
    return direct.some((cidr) => cidrContains(cidr, ip.host));
  };
}

/** Options of {@linkcode createHttpClient}. */
export interface SocksHttpClientOptions extends Omit<Deno.CreateHttpClientOptions, "proxy"> {
  /**
   * One gateway URL (`socks5://` or `socks5h://`, optional credentials).
   * Its host must be an IPv4 address or a name: Deno 2.9's fetch fails with
   * a bracketed IPv6 proxy address.
   */
  via: string | readonly string[];
}

/**
 * A `Deno.HttpClient` whose `fetch` requests go through one SOCKS5 gateway,
 * with names resolved by the gateway (`socks5h`). `fetch` does not use
 * `Deno.connect`, so {@linkcode socksify} does not cover it; pass this
 * client instead.
 *
 * Limits of Deno's fetch proxy: one gateway only (no chain), and the
 * gateway's address must not be an IPv6 literal (Deno 2.9 fails on
 * `socks5h://[::1]:1080`); both are rejected here with a `TypeError`. Give an
 * IPv6-only gateway a name (e.g. in /etc/hosts) instead.
 *
 * @example
 * ```ts ignore
 * import { createHttpClient } from "./socksify.ts";
 * using client = createHttpClient({ via: "socks5://gw.example.test:1080" });
 * const res = await fetch("http://v6only.example.test/", { client });
 * ```
 */
export function createHttpClient(options: SocksHttpClientOptions): Deno.HttpClient {
  const gateways = parseChain(options.via);
  if (gateways.length !== 1) {
    throw new TypeError(
      `createHttpClient: expected one gateway (Deno's fetch proxy cannot chain), found ${gateways.length}; ` +
        `for a chain use connect()/connectTls(), or forward() to one destination`,
    );
  }
  const gw = gateways[0];
  const ip = normalizeIp(gw.host);
  if (ip?.family === 6) {
    throw new TypeError(
      `createHttpClient: expected the gateway as an IPv4 address or a name, found the IPv6 address ${gw.display}: ` +
        `Deno 2.9's fetch fails with a bracketed IPv6 proxy address; use the gateway's IPv4 address or a name that resolves to it`,
    );
  }
  const auth = gw.username !== undefined
    ? `${encodeURIComponent(gw.username)}:${encodeURIComponent(gw.password ?? "")}@`
    : "";
  const { via: _via, ...rest } = options;
  return Deno.createHttpClient({
    ...rest,
    proxy: { url: `socks5h://${auth}${ip ? ip.host : gw.host}:${gw.port}` },
  });
}
