/**
 * "Socksifying" the running process (RFC 3089 section 3): the Socks Lib
 * takes the place of the process's socket and name-resolving APIs, so that
 * unmodified code reaches its destinations through the gateway, with name
 * resolution delegated to it through fake addresses:
 *
 * | part        | replaced                                                            |
 * | ----------- | ------------------------------------------------------------------- |
 * | `deno`      | `Deno.connect`, `Deno.connectTls`, `Deno.startTls`, `Deno.resolveDns` |
 * | `fetch`     | the global `fetch` (a `Deno.HttpClient` through a local door)        |
 * | `webSocket` | the global `WebSocket` (`ws://` and `wss://`, same door)             |
 * | `nodeNet`   | `net.Socket.prototype.connect` (so `net.connect`, `node:http(s)`), `tls.connect` |
 * | `nodeDns`   | `dns.lookup`, `resolve`, `resolve4`, `resolve6`, and `dns.promises`  |
 *
 * Also `createHttpClient` for a `fetch` client of one's own.
 *
 * @module
 */

import { type Cidr, cidrContains, normalizeIp, parseCidr } from "../protocol/address.ts";
import { parseHops, type SocksGateway, type SocksVia } from "./address.ts";
import { connect, connectTls, SocksConn, startTls, type StartTlsOptions } from "./connect.ts";
import { type Door, openDoor } from "./door.ts";
import { FakeDns } from "./fake_dns.ts";
import { patchNodeDns } from "./node_dns.ts";
import { patchNodeNet } from "./node_net.ts";

/** Options of {@linkcode socksify}. */
export interface SocksifyOptions {
  /** The gateway URL or chain, as for `connect` (a hop may list alternatives). */
  via: SocksVia;
  /** The mapping table; a new `FakeDns()` by default. */
  fakeDns?: FakeDns;
  /**
   * IP prefixes reached directly, without the gateway. Names always go
   * through the gateway (they are never resolved locally), except the first
   * hop's gateways' own `host:port`, which are always direct.
   *
   * @default {["127.0.0.0/8", "::1/128"]}
   */
  direct?: readonly string[];
  /** The handshake deadline in milliseconds for each proxied connect. */
  timeout?: number;
  /** How long a failed gateway is tried last, as for `connect`. */
  downFor?: number;
  /** Replace `Deno.connect`, `connectTls`, `startTls` and `resolveDns`. @default {true} */
  deno?: boolean;
  /** Replace the global `fetch` (unless a call passes its own `client`). @default {true} */
  fetch?: boolean;
  /** Replace the global `WebSocket` (unless a call passes its own `client`). @default {true} */
  webSocket?: boolean;
  /** Replace `net.Socket.prototype.connect` and `tls.connect` of `node:net` / `node:tls`. @default {true} */
  nodeNet?: boolean;
  /** Replace the resolving functions of `node:dns` (and `dns.promises`). @default {true} */
  nodeDns?: boolean;
  /**
   * Called when the fetch/WebSocket door could not carry a connection (the
   * HTTP client then sees a failed proxy connect). Nothing by default.
   */
  onError?: (error: unknown) => void;
}

/** The handle returned by {@linkcode socksify}. */
export interface Socksified extends Disposable {
  /** The mapping table in use. */
  readonly fakeDns: FakeDns;
  /** The parts that were replaced, e.g. `["deno", "fetch", "webSocket", "nodeNet", "nodeDns"]`. */
  readonly parts: readonly SocksifyPart[];
  /** Puts every replaced function back. Calling it again does nothing. */
  restore(): void;
}

/** A switchable part of {@linkcode socksify}. */
export type SocksifyPart = "deno" | "fetch" | "webSocket" | "nodeNet" | "nodeDns";

type Patched = "connect" | "connectTls" | "startTls" | "resolveDns";
type DenoFunctions = Record<Patched, unknown>;

let active: Socksified | undefined;

/**
 * Routes the whole process through the SOCKS gateway(s) until `restore()`.
 * Every part is on by default and can be switched off
 * (`{ fetch: false }`, ...):
 *
 * - **deno**: `Deno.resolveDns(name, "A" | "AAAA")` answers one fake address
 *   of that family from the {@linkcode FakeDns} (no DNS query is made);
 *   other record types reject with `Deno.errors.NotSupported`.
 *   `Deno.connect` (TCP) to a fake address becomes a SOCKS CONNECT with the
 *   mapped name; to a name, a CONNECT with the name; to another IP literal,
 *   a CONNECT with it, unless it lies in `direct` (loopback by default) or
 *   is a first-hop gateway's own address, which are connected directly.
 *   Unix and vsock connects are untouched. `Deno.connectTls` does the same
 *   and starts TLS with the name (client certificates reject with
 *   `Deno.errors.NotSupported`: `Deno.startTls` takes none);
 *   `Deno.startTls` accepts the {@linkcode SocksConn}s made this way.
 * - **fetch** and **webSocket**: calls without their own `client` get a
 *   `Deno.HttpClient` whose `socks5h` proxy is a local door (127.0.0.1, a
 *   random port and login) that carries each connection like `Deno.connect`
 *   above: names are resolved by the gateway, chains and failover work, a
 *   URL holding a fake address reaches its name. URLs whose host is in
 *   `direct` are fetched without the door.
 * - **nodeNet**: `net.connect`, `net.createConnection`,
 *   `new net.Socket().connect()`, `tls.connect`, and so `node:http` /
 *   `node:https` agents and npm packages built on them, connect through the
 *   gateway with real `net.Socket` behaviour (see node_net.ts).
 * - **nodeDns**: `dns.lookup`, `dns.resolve4`, `dns.resolve6`,
 *   `dns.resolve` (A/AAAA) and their `dns.promises` forms answer fake
 *   addresses of the asked family (IPv4 when none is asked).
 *
 * Not covered: UDP (use `udpAssociate`), `Deno.listen` (use `bind`), and
 * named imports such as `import { lookup } from "node:dns"` taken before
 * socksify (they keep the original function). Only one socksify can be
 * active at a time.
 *
 * @example
 * ```ts ignore
 * import { socksify } from "./socksify.ts";
 * using _socks = socksify({ via: "socks5://[::1]:1080" });
 * const [addr] = await Deno.resolveDns("v4only.test", "AAAA"); // "100::1", a fake
 * const conn = await Deno.connect({ hostname: addr, port: 80 }); // CONNECT v4only.test:80
 * conn.close();
 * const res = await fetch("http://v4only.test/"); // through the gateway too
 * await res.body?.cancel();
 * ```
 */
export function socksify(options: SocksifyOptions): Socksified {
  if (active) {
    throw new Error(
      "socksify: expected no active socksify, found one; call restore() on its handle first",
    );
  }
  const hops = parseHops(options.via);
  const via = options.via;
  const fakeDns = options.fakeDns ?? new FakeDns();
  const direct = (options.direct ?? ["127.0.0.0/8", "::1/128"]).map((text) => {
    const cidr = parseCidr(text);
    if (!cidr) {
      throw new TypeError(`socksify: expected direct CIDRs such as 127.0.0.0/8, found "${text}"`);
    }
    return cidr;
  });
  const isDirect = directTest(direct, hops[0], fakeDns);
  const { timeout, downFor } = options;
  const dialOptions = { via, fakeDns, timeout, downFor };
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
  const parts: SocksifyPart[] = [];
  const undo: (() => void)[] = [];

  const patched: DenoFunctions = {
    connect(opts: Deno.ConnectOptions | Deno.UnixConnectOptions | Deno.VsockConnectOptions) {
      if ((opts.transport ?? "tcp") !== "tcp") {
        return (origConnect as (o: unknown) => Promise<Deno.Conn>)(opts);
      }
      const o = opts as Deno.ConnectOptions;
      const hostname = o.hostname ?? "127.0.0.1";
      if (isDirect(hostname, o.port)) return origConnect(o);
      return connect({ hostname, port: o.port }, { ...dialOptions, signal: o.signal });
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
      return connectTls({ hostname, port: opts.port }, {
        ...dialOptions,
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

  try {
    if (options.deno !== false) {
      Object.assign(deno, patched);
      undo.push(() => Object.assign(deno, originals));
      parts.push("deno");
    }
    const wantFetch = options.fetch !== false;
    const wantWebSocket = options.webSocket !== false && typeof globalThis.WebSocket === "function";
    if (wantFetch || wantWebSocket) {
      const door: Door = openDoor(
        (t) =>
          isDirect(t.host, t.port)
            ? origConnect({ hostname: t.host, port: t.port })
            : connect(t, dialOptions),
        options.onError,
      );
      const client = Deno.createHttpClient({ proxy: { url: door.url } });
      undo.push(() => {
        client.close();
        door.close();
      });
      const urlIsDirect = (url: string | URL): boolean => {
        try {
          const u = new URL(url);
          const port = Number(u.port) || (/^(https|wss):$/.test(u.protocol) ? 443 : 80);
          return isDirect(u.hostname.replace(/^\[|\]$/g, ""), port);
        } catch {
          return false; // let the original report the bad URL
        }
      };
      if (wantFetch) undo.push(patchFetch(client, urlIsDirect)), parts.push("fetch");
      if (wantWebSocket) undo.push(patchWebSocket(client, urlIsDirect)), parts.push("webSocket");
    }
    if (options.nodeNet !== false) {
      undo.push(patchNodeNet({
        isDirect,
        fakeDns,
        dial: (t, signal) => connect(t, { ...dialOptions, signal }),
      }));
      parts.push("nodeNet");
    }
    if (options.nodeDns !== false) {
      undo.push(patchNodeDns(fakeDns));
      parts.push("nodeDns");
    }
  } catch (err) {
    for (const f of undo.reverse()) f();
    throw err;
  }

  let restored = false;
  const handle: Socksified = {
    fakeDns,
    parts,
    restore() {
      if (restored) return;
      restored = true;
      for (const f of [...undo].reverse()) f();
      if (active === handle) active = undefined;
    },
    [Symbol.dispose]() {
      handle.restore();
    },
  };
  active = handle;
  return handle;
}

/** Replaces the global `fetch`; returns the function that puts it back. */
function patchFetch(client: Deno.HttpClient, urlIsDirect: (url: string) => boolean): () => void {
  const original = globalThis.fetch;
  globalThis.fetch = function fetch(input: RequestInfo | URL, init?: RequestInit) {
    const own = (init as { client?: Deno.HttpClient } | undefined)?.client;
    const url = input instanceof Request ? input.url : String(input);
    if (own !== undefined || urlIsDirect(url)) return original(input, init);
    return original(input, { ...init, client } as RequestInit);
  };
  return () => {
    globalThis.fetch = original;
  };
}

/** Replaces the global `WebSocket` by a subclass; returns the function that puts it back. */
function patchWebSocket(
  client: Deno.HttpClient,
  urlIsDirect: (url: string) => boolean,
): () => void {
  const Original = globalThis.WebSocket;
  type Init = string | string[] | { protocols?: string | string[]; client?: Deno.HttpClient };
  const init = (url: string | URL, protocols?: Init): Init | undefined => {
    const opts = typeof protocols === "object" && !Array.isArray(protocols)
      ? protocols
      : protocols === undefined
      ? {}
      : { protocols };
    if (opts.client !== undefined || urlIsDirect(String(url))) return protocols;
    return { ...opts, client };
  };
  class WebSocket extends Original {
    constructor(url: string | URL, protocols?: Init) {
      super(url, init(url, protocols) as string[]);
    }
  }
  globalThis.WebSocket = WebSocket;
  return () => {
    globalThis.WebSocket = Original;
  };
}

function directTest(
  direct: Cidr[],
  gateways: SocksGateway[],
  fakeDns: FakeDns,
): (hostname: string, port: number) => boolean {
  const own = gateways.map((gw) => {
    const ip = normalizeIp(gw.host);
    return { port: gw.port, ip: ip?.host, name: ip ? undefined : gw.host.toLowerCase() };
  });
  return (hostname, port) => {
    const ip = normalizeIp(hostname);
    const isGateway = own.some((gw) =>
      port === gw.port && (ip ? gw.ip === ip.host : hostname.toLowerCase() === gw.name)
    );
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
  via: SocksVia;
}

/**
 * A `Deno.HttpClient` whose `fetch` requests go through one SOCKS5 gateway,
 * with names resolved by the gateway (`socks5h`). For a client of one's own
 * (custom TLS settings, one gateway); {@linkcode socksify} covers the
 * global `fetch` without it.
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
  const gateways = parseHops(options.via).flat();
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
