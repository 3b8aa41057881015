/**
 * The PROXY protocol on the listeners (HAProxy's proxy-protocol.txt, v1
 * and v2): a load balancer in front of the gateway tells who the real
 * client is, and from then on that client is the session's client for
 * everything (rules, the loopback guard, limits, the log, `sessions()`).
 *
 * With `proxyProtocol: { trusted: [CIDRs] }`, a connection from a trusted
 * address MUST start with a header (the specification forbids guessing):
 * PROXY replaces the client; LOCAL, UNKNOWN or an address family the header
 * cannot carry leave the balancer's own address as the client. A connection
 * from any other address is served as usual, unless it starts with a PROXY
 * header: then it is closed (a client must not choose its own address). A
 * malformed or truncated header, a trusted connection without one, and one
 * cut by the handshake timeout are closed and counted
 * (`stats.proxyHeaders.rejected`, metric
 * `dualsocks_proxy_headers_total{result="rejected"}`).
 *
 * @module
 */

import type { BufferedReader } from "../io/buffered_reader.ts";
import { type Cidr, cidrContains, joinHostPort, parseCidr } from "../protocol/address.ts";
import { decodeProxyHeader, sniffProxyHeader } from "../protocol/proxy_protocol.ts";
import { describeError } from "./errors.ts";
import type { Session, SessionContext } from "./session.ts";

/** The PROXY protocol settings of {@linkcode ServeOptions}-like callers. */
export interface ProxyProtocolOptions {
  /** CIDRs (or single addresses) of the balancers allowed to send a header. */
  trusted: readonly string[];
}

/** The compiled settings, as a session sees them. */
export interface ProxyProtocolPolicy {
  /** The trusted prefixes. */
  trusted: readonly Cidr[];
}

/**
 * Compiles {@linkcode ProxyProtocolOptions}; `undefined` stays off. Throws
 * a `TypeError` naming the first entry that is not a CIDR.
 *
 * @example
 * ```ts
 * import { compileProxyProtocol } from "./proxy_header.ts";
 * compileProxyProtocol({ trusted: ["192.0.2.0/24", "2001:db8::1"] })?.trusted.length; // 2
 * ```
 */
export function compileProxyProtocol(
  options: ProxyProtocolOptions | undefined,
): ProxyProtocolPolicy | undefined {
  if (!options) return undefined;
  const trusted = options.trusted.map((text, i) => {
    const cidr = parseCidr(text);
    if (!cidr) {
      throw new TypeError(
        `proxyProtocol.trusted[${i}]: expected a CIDR such as 192.0.2.0/24 or 2001:db8::/32, ` +
          `found "${text}"`,
      );
    }
    return cidr;
  });
  return { trusted };
}

const peekKind = (buf: Uint8Array) => {
  const kind = sniffProxyHeader(buf);
  return kind === null ? null : { value: kind, length: 0 };
};

/**
 * Reads and applies the PROXY header of a new session, before its first
 * protocol byte. Resolves to `false` when the session must be closed
 * (`s.closeReason` says why, and the rejection is counted), `true` to go on.
 *
 * @example
 * ```ts ignore
 * if (ctx.proxyProtocol && !(await applyProxyHeader(reader, s, ctx))) return end(s);
 * ```
 */
export async function applyProxyHeader(
  reader: BufferedReader,
  s: Session,
  ctx: SessionContext,
): Promise<boolean> {
  const policy = ctx.proxyProtocol!;
  const peer = joinHostPort(s.client.hostname, s.client.port);
  const trusted = policy.trusted.some((c) => cidrContains(c, s.client.hostname));
  const rejected = (reason: string) => {
    ctx.stats.proxyHeaders.rejected++;
    s.closeReason ??= reason;
    return false;
  };
  if (!trusted) {
    // Not a balancer: served as it is, unless it claims to speak for someone else.
    const kind = await reader.decode(peekKind, "first bytes");
    if (kind === "none") return true;
    return rejected(`PROXY header from ${peer}, which is not in proxy_protocol.trusted`);
  }
  try {
    const header = await reader.decode(decodeProxyHeader, "PROXY header");
    ctx.stats.proxyHeaders.accepted++;
    if (header.command === "proxy" && header.source) s.setClient(header.source);
    return true;
  } catch (error) {
    if (s.aborted) return rejected(`${s.closeReason}: no complete PROXY header from ${peer}`);
    return rejected(`PROXY header from ${peer}: ${describeError(error)}`);
  }
}
