/**
 * Parsing of what the client is given: gateway URLs (`socks5://` and
 * `socks5h://`, optional RFC 1929 credentials, a hop with alternatives) and
 * targets (`HOST:PORT`, `{ hostname, port }` as for `Deno.connect`, or
 * `{ host, port }`).
 *
 * @module
 */

import { joinHostPort, normalizeIp, splitHostPort, unbracket } from "../protocol/address.ts";
import { credentialLengths } from "../protocol/codec.ts";

/** A destination: a name or an IP literal (without brackets), and a port. */
export interface SocksTarget {
  /** A name (sent as ATYP DOMAINNAME) or an IP literal (sent as IPv4/IPv6). */
  host: string;
  /** The TCP port, 1 to 65535. */
  port: number;
}

/**
 * A destination as the Deno-shaped functions take it: `"host:port"` (IPv6 in
 * brackets), `{ hostname, port }` (what `Deno.connect` takes), or
 * `{ host, port }`.
 */
export type SocksTargetInit = string | SocksTarget | { hostname: string; port: number };

/**
 * One hop of a chain: a gateway URL, or a list of alternative gateway URLs
 * for that hop (failover: tried in order, skipping those recently down).
 */
export type SocksHop = string | readonly string[];

/**
 * The `via` option: one gateway URL, or the chain of hops in traversal order,
 * each hop a URL or a list of alternatives.
 *
 * @example
 * ```ts
 * import type { SocksVia } from "./address.ts";
 * const via: SocksVia = [["socks5://[2001:db8::1]:1080", "socks5://[2001:db8::2]:1080"]];
 * ```
 */
export type SocksVia = string | readonly SocksHop[];

/** One gateway of a chain, parsed from its URL. */
export interface SocksGateway {
  /** The host: a name or an IP literal without brackets. */
  host: string;
  /** The port (1080 when the URL has none). */
  port: number;
  /** The RFC 1929 user name, when the URL has credentials. */
  username?: string;
  /** The RFC 1929 password, when the URL has credentials. */
  password?: string;
  /** `HOST:PORT` for messages (IPv6 bracketed, never the credentials). */
  display: string;
}

/** The default SOCKS port. */
export const DEFAULT_SOCKS_PORT = 1080;

const encoder = new TextEncoder();

/**
 * Parses a gateway URL: `socks5://[user:pass@]host[:port]` or the same with
 * `socks5h://` (both delegate name resolution to the gateway: the Socks Lib
 * never resolves a target name locally, RFC 3089 section 3). A bare
 * `host:port` is read as `socks5://host:port`. User and password are
 * percent-decoded.
 *
 * @example
 * ```ts
 * import { parseGateway } from "./address.ts";
 * parseGateway("socks5://alice:s%40cret@[2001:db8::1]:1080");
 * // { host: "2001:db8::1", port: 1080, username: "alice", password: "s@cret",
 * //   display: "[2001:db8::1]:1080" }
 * ```
 */
export function parseGateway(url: string): SocksGateway {
  const text = /^[a-z][a-z0-9+.-]*:\/\//i.test(url) ? url : `socks5://${url}`;
  const shown = redactGatewayUrl(url);
  let parsed: URL;
  try {
    parsed = new URL(text);
  } catch (cause) {
    throw new TypeError(
      `gateway: expected a URL such as socks5://host:1080, found "${shown}"`,
      { cause },
    );
  }
  if (parsed.protocol !== "socks5:" && parsed.protocol !== "socks5h:") {
    throw new TypeError(
      `gateway: expected a socks5:// or socks5h:// URL, found "${parsed.protocol}//" in "${shown}"`,
    );
  }
  if ((parsed.pathname !== "" && parsed.pathname !== "/") || parsed.search || parsed.hash) {
    throw new TypeError(
      `gateway: expected no path, query or fragment in a SOCKS URL, found "${shown}"`,
    );
  }
  const host = unbracket(parsed.hostname);
  if (host === "") {
    throw new TypeError(`gateway: expected a host in the URL, found "${shown}"`);
  }
  const port = parsed.port === "" ? DEFAULT_SOCKS_PORT : Number(parsed.port);
  if (port < 1) {
    throw new RangeError(`gateway: expected a port from 1 to 65535, found ${port} in "${shown}"`);
  }
  const gateway: SocksGateway = { host, port, display: joinHostPort(host, port) };
  if (parsed.username !== "" || parsed.password !== "") {
    gateway.username = decodeURIComponent(parsed.username);
    gateway.password = decodeURIComponent(parsed.password);
    // RFC 1929: ULEN and PLEN are 1 to 255. Refused here, not after a
    // connect and a greeting, and only if the gateway asks for them.
    const bad = credentialLengths({ username: gateway.username, password: gateway.password });
    if (bad) {
      throw new RangeError(
        `gateway: expected a user name and password of 1 to 255 bytes each (RFC 1929), ` +
          `found ${bad[0]} and ${bad[1]} in "${shown}"`,
      );
    }
  }
  return gateway;
}

/**
 * Hides the password of a gateway URL, for messages and listings:
 * `socks5://alice:secret@host:1080` -> `socks5://alice:<redacted>@host:1080`.
 * Works on what {@linkcode parseGateway} accepts (also without a scheme, and
 * with a raw `@` in the password) and on malformed URLs alike: everything
 * between the user name and the last `@` goes.
 *
 * @example
 * ```ts
 * import { redactGatewayUrl } from "./address.ts";
 * redactGatewayUrl("alice:hun@ter2@192.0.2.1:1080"); // "alice:<redacted>@192.0.2.1:1080"
 * ```
 */
export function redactGatewayUrl(url: string): string {
  const at = url.lastIndexOf("@");
  if (at < 0) return url;
  const scheme = /^[a-z][a-z0-9+.-]*:\/\//i.exec(url)?.[0] ?? "";
  const colon = url.indexOf(":", scheme.length);
  if (colon < 0 || colon > at) return url; // a user name alone: nothing secret
  return `${url.slice(0, colon)}:<redacted>${url.slice(at)}`;
}

/**
 * Normalizes the `via` option into a non-empty list of hops, each a
 * non-empty list of alternative gateways (one for a plain URL).
 *
 * @example
 * ```ts
 * import { parseHops } from "./address.ts";
 * parseHops([["socks5://[::1]:1080", "socks5://127.0.0.1:1080"], "socks5://192.0.2.7"]);
 * // [[{ host: "::1", ... }, { host: "127.0.0.1", ... }], [{ host: "192.0.2.7", ... }]]
 * ```
 */
export function parseHops(via: SocksVia | undefined): SocksGateway[][] {
  const list = via === undefined ? [] : typeof via === "string" ? [via] : [...via];
  if (list.length === 0) {
    throw new TypeError(
      `via: expected a gateway URL or a non-empty list of them, found ${
        via === undefined ? "nothing" : "an empty list"
      }`,
    );
  }
  return list.map((hop, i) => {
    if (typeof hop === "string") return [parseGateway(hop)];
    if (!Array.isArray(hop) || hop.length === 0 || hop.some((h) => typeof h !== "string")) {
      throw new TypeError(
        `via: expected hop ${
          i + 1
        } to be a gateway URL or a non-empty list of gateway URLs, found ${JSON.stringify(hop)}`,
      );
    }
    return hop.map(parseGateway);
  });
}

/**
 * Normalizes the `via` option into a non-empty list of gateways, one per
 * hop. A hop with alternatives is refused: only {@linkcode parseHops} users
 * (which open the connection themselves) can fail over.
 *
 * @example
 * ```ts
 * import { parseChain } from "./address.ts";
 * parseChain(["socks5://[::1]:1080", "socks5h://192.0.2.7:1080"]).length; // 2
 * ```
 */
export function parseChain(via: SocksVia | undefined): SocksGateway[] {
  return parseHops(via).map((alternatives, i) => {
    if (alternatives.length !== 1) {
      throw new TypeError(
        `via: expected one gateway for hop ${
          i + 1
        } here (a stream that is already open cannot fail over), found ${alternatives.length}: ${
          alternatives.map((g) => g.display).join(", ")
        }`,
      );
    }
    return alternatives[0];
  });
}

/**
 * Parses a target given as `HOST:PORT` (IPv6 in brackets), as
 * `{ hostname, port }` (the shape `Deno.connect` takes) or as
 * `{ host, port }`. IP literals are normalized (brackets removed, IPv6
 * canonical, IPv4-mapped IPv6 unmapped); names are kept as given. Port 0 is
 * refused unless `allowPortZero` (a BIND request may not know the peer's
 * port).
 *
 * @example
 * ```ts
 * import { parseTarget } from "./address.ts";
 * parseTarget("[2001:db8::10]:443"); // { host: "2001:db8::10", port: 443 }
 * parseTarget({ hostname: "v4only.test", port: 80 }); // { host: "v4only.test", port: 80 }
 * parseTarget({ host: "v4only.test", port: 80 }); // { host: "v4only.test", port: 80 }
 * ```
 */
export function parseTarget(
  target: SocksTargetInit,
  options: { allowPortZero?: boolean } = {},
): SocksTarget {
  let host: string;
  let port: number;
  if (typeof target === "string") {
    const hp = splitHostPort(target);
    if (!hp) {
      throw new TypeError(
        `target: expected "host:port" (IPv6 as "[addr]:port"), found "${target}"`,
      );
    }
    ({ host, port } = hp);
  } else if (target && typeof target === "object") {
    const t = target as Record<string, unknown>;
    const value = t.hostname ?? t.host;
    if (typeof value !== "string" || value === "") {
      const keys = Object.keys(t);
      throw new TypeError(
        `target: expected a "hostname" (or "host") key with a name or an IP literal, found ${
          value === undefined
            ? keys.length ? `the keys ${keys.map((k) => `"${k}"`).join(", ")}` : "no keys"
            : `${"hostname" in t ? "hostname" : "host"} = ${JSON.stringify(value)}`
        }`,
      );
    }
    host = unbracket(value);
    port = t.port as number;
  } else {
    throw new TypeError(
      `target: expected "host:port", { hostname, port } or { host, port }, found ${
        target === null ? "null" : typeof target
      }`,
    );
  }
  const min = options.allowPortZero ? 0 : 1;
  if (!Number.isInteger(port) || port < min || port > 65535) {
    throw new RangeError(`target: expected a port from ${min} to 65535, found ${port}`);
  }
  const ip = normalizeIp(host);
  if (ip) return { host: ip.host, port };
  const length = encoder.encode(host).length;
  if (length < 1 || length > 255 || /[\s/]/.test(host) || host.includes(":")) {
    throw new TypeError(
      `target: expected an IP literal or a name of 1 to 255 bytes without spaces, slashes or colons, found "${host}"`,
    );
  }
  return { host, port };
}

/**
 * Formats a target as `HOST:PORT`, bracketing IPv6.
 *
 * @example
 * ```ts
 * import { formatTarget } from "./address.ts";
 * formatTarget({ host: "::1", port: 80 }); // "[::1]:80"
 * ```
 */
export function formatTarget(target: SocksTarget): string {
  return joinHostPort(target.host, target.port);
}
