/**
 * Name resolution at the gateway (RFC 3089 section 3, steps 6-8): the
 * gateway is dual-stack, so it asks for both A and AAAA, then applies the
 * family policy and orders the result for Happy Eyeballs.
 *
 * @module
 */

import { lookup } from "node:dns/promises";
import { type Family, joinHostPort, normalizeIp } from "../protocol/address.ts";
import { ResolveError } from "./errors.ts";

/** One address a name resolved to. */
export interface ResolvedAddress {
  /** The IP literal, without brackets. */
  address: string;
  /** Its family. */
  family: Family;
}

/** Options passed to a {@linkcode Resolver}. */
export interface ResolveOptions {
  /** Aborted when the connect deadline passes or the session ends. */
  signal: AbortSignal;
  /** The families the family policy allows; query only these. */
  families: readonly Family[];
}

/**
 * The resolver hook: turns a name into addresses, in preference order.
 * Throw a `ResolveError` (or any error) when the name does not resolve.
 */
export type Resolver = (
  name: string,
  options: ResolveOptions,
) => Promise<ResolvedAddress[]>;

/** Which families outbound connections use, and in what order. */
export type FamilyPolicy =
  | "auto"
  | "prefer-ipv6"
  | "prefer-ipv4"
  | "ipv6-only"
  | "ipv4-only";

/** The families a policy allows. */
export function allowedFamilies(policy: FamilyPolicy): readonly Family[] {
  if (policy === "ipv4-only") return [4];
  if (policy === "ipv6-only") return [6];
  return policy === "prefer-ipv4" ? [4, 6] : [6, 4];
}

/**
 * Settles like `promise`, or rejects with the signal's reason as soon as it
 * aborts: a hook that ignores its signal cannot hold a session forever.
 */
export function raceSignal<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/**
 * {@linkcode raceSignal} for a connection being opened: when the signal wins,
 * the connection is closed if it arrives later, so that nothing is left open
 * that no one holds.
 */
export function raceConnection<T extends { close(): void }>(
  opening: Promise<T>,
  signal: AbortSignal,
): Promise<T> {
  return raceSignal(opening, signal).catch((error) => {
    opening.then((late) => late.close(), () => {});
    throw error;
  });
}

/**
 * The default resolver: the system's `getaddrinfo`, so `/etc/hosts` and
 * the system's DNS configuration apply.
 */
export async function systemResolver(
  name: string,
  options: ResolveOptions,
): Promise<ResolvedAddress[]> {
  let found: { address: string; family: number }[];
  try {
    found = await raceSignal(
      lookup(name, { all: true, verbatim: true }),
      options.signal,
    );
  } catch (error) {
    if (options.signal.aborted) throw error;
    const code = (error as { code?: string }).code ?? "";
    const reason = code === "ENOTFOUND" || code === "EAI_NONAME"
      ? "no such name"
      : code === "EAI_AGAIN"
      ? "temporary DNS failure"
      : (error as Error).message;
    throw new ResolveError(name, reason, { cause: error });
  }
  return found
    .map((a) => normalizeIp(a.address))
    .filter((a) => a !== null && options.families.includes(a.family))
    .map((a) => ({ address: a!.host, family: a!.family }));
}

/** A DNS server to query. */
export interface Nameserver {
  /** IP literal of the server. */
  host: string;
  /** UDP/TCP port, usually 53. */
  port: number;
}

/**
 * A resolver that queries the given DNS servers directly (A and AAAA in
 * parallel), trying the next server when one fails to answer.
 *
 * @example
 * ```ts
 * import { nameserverResolver } from "./resolver.ts";
 * const resolve = nameserverResolver([{ host: "192.0.2.53", port: 53 }]);
 * ```
 */
export function nameserverResolver(servers: readonly Nameserver[]): Resolver {
  return async (name, options) => {
    let lastError: unknown;
    for (const server of servers) {
      const nameServer = { ipAddr: server.host, port: server.port };
      const query = async (type: "A" | "AAAA") => {
        const family: Family = type === "A" ? 4 : 6;
        if (!options.families.includes(family)) return [];
        try {
          const records = await Deno.resolveDns(name, type, {
            nameServer,
            signal: options.signal,
          });
          return records.map((address) => ({ address, family }));
        } catch (error) {
          if (error instanceof Deno.errors.NotFound) return [];
          throw error;
        }
      };
      try {
        const [a, aaaa] = await Promise.all([query("A"), query("AAAA")]);
        const all = [...aaaa, ...a];
        if (all.length === 0) throw new ResolveError(name, "no such name");
        return all;
      } catch (error) {
        if (error instanceof ResolveError || options.signal.aborted) throw error;
        lastError = error;
      }
    }
    const where = servers.map((s) => joinHostPort(s.host, s.port)).join(", ");
    throw new ResolveError(
      name,
      `no answer from ${where} (${(lastError as Error)?.message ?? "no servers"})`,
      { cause: lastError },
    );
  };
}

/**
 * Applies the family policy and orders addresses for Happy Eyeballs
 * (RFC 8305 section 4): the preferred family first, then alternating.
 * `auto` keeps the resolver's first family as the preferred one.
 */
export function orderAddresses(
  addresses: readonly ResolvedAddress[],
  policy: FamilyPolicy,
): ResolvedAddress[] {
  const allowed = allowedFamilies(policy);
  const v6 = addresses.filter((a) => a.family === 6 && allowed.includes(6));
  const v4 = addresses.filter((a) => a.family === 4 && allowed.includes(4));
  let first: Family;
  if (policy === "prefer-ipv4" || policy === "ipv4-only") first = 4;
  else if (policy === "prefer-ipv6" || policy === "ipv6-only") first = 6;
  else first = addresses[0]?.family ?? 6;
  const [a, b] = first === 6 ? [v6, v4] : [v4, v6];
  const out: ResolvedAddress[] = [];
  for (let i = 0; i < Math.max(a.length, b.length); i++) {
    if (i < a.length) out.push(a[i]);
    if (i < b.length) out.push(b[i]);
  }
  return out;
}
