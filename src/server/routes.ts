/**
 * Gateway-side chaining (RFC 3089 section 4: "the Gateway includes the same
 * type of functions of Socks Lib"): chosen destinations are carried through
 * a chain of upstream SOCKS5 gateways with the Socks Lib client; everything
 * else goes direct. A name is handed to the upstream as a name: the last
 * gateway of the chain resolves it.
 *
 * @module
 */

import { connect } from "../client/connect.ts";
import { parseGateway } from "../client/address.ts";
import { compileRules, type RuleContext } from "../policy/rules.ts";
import type { RelayConn } from "./dialer.ts";

/** A route: destinations that match go through `via`, in order. */
export interface RouteConfig {
  /** Destinations: CIDRs, names (`example.test`), suffixes (`.test`), or `"*"`. */
  to?: string[];
  /** Destination ports: `443` or `"8000-8080"`. */
  ports?: (number | string)[];
  /** Client addresses (CIDRs). */
  from?: string[];
  /** Authenticated users. */
  users?: string[];
  /** The upstream chain: `socks5://[user:pass@]HOST:PORT`, first hop first. */
  via: string[];
}

/** A compiled route table: the chain for a request, or `undefined` for direct. */
export type RouteTable = (ctx: RuleContext) => readonly string[] | undefined;

/** A chain as `HOST:PORT -> HOST:PORT`, without credentials, for logs. */
export function describeChain(via: readonly string[]): string {
  return via.map((url) => parseGateway(url).display).join(" -> ");
}

/**
 * Compiles routes; the first that matches a request wins. Throws a
 * `TypeError` naming the route for a bad field or gateway URL.
 *
 * @example
 * ```ts
 * import { compileRoutes } from "./routes.ts";
 * const route = compileRoutes([{ to: [".v4only.test"], via: ["socks5://192.0.2.7:1080"] }]);
 * ```
 */
export function compileRoutes(routes: readonly RouteConfig[]): RouteTable {
  const compiled = routes.map((r, i) => {
    if (!Array.isArray(r.via) || r.via.length === 0) {
      throw new TypeError(`routes[${i}].via: expected at least one gateway URL, found none`);
    }
    for (const [j, url] of r.via.entries()) {
      try {
        parseGateway(url);
      } catch (error) {
        throw new TypeError(`routes[${i}].via[${j}]: ${(error as Error).message}`);
      }
    }
    const { via, ...match } = r;
    try {
      return { match: compileRules([{ action: "allow", ...match }]), via: [...via] };
    } catch (error) {
      throw new TypeError(
        `routes[${i}]: ${(error as Error).message.replace(/^rules\[0\]\.?/, "")}`,
      );
    }
  });
  return (ctx) => compiled.find((r) => r.match(ctx).rule === 0)?.via;
}

/** Opens a CONNECT to `host:port` through the chain `via`. */
export async function connectVia(
  host: string,
  port: number,
  options: { via: readonly string[]; signal: AbortSignal },
): Promise<RelayConn> {
  const conn = await connect({ host, port }, { via: options.via, signal: options.signal });
  conn.setNoDelay(true);
  return conn;
}
