/**
 * The `node:dns` part of {@linkcode socksify}: `lookup`, `resolve4`,
 * `resolve6` and `resolve` (A / AAAA), callback and promise forms, answer
 * fake addresses of the asked family from the {@linkcode FakeDns} (RFC 3089
 * section 3), so that a driver that resolves first and then connects to the
 * address still has the *name* sent to the gateway. No query is made.
 *
 * @module
 */

import dns from "node:dns";
import { normalizeIp } from "../protocol/address.ts";
import type { FakeDns } from "./fake_dns.ts";

// deno-lint-ignore no-explicit-any
type AnyFn = (...args: any[]) => any;

interface LookupAddress {
  address: string;
  family: 4 | 6;
}

function notSupported(name: string, rrtype: string): Error {
  return Object.assign(
    new Error(
      `socksify: dns resolve(${
        JSON.stringify(name)
      }, "${rrtype}") is not supported while socksified: ` +
        `only A and AAAA are answered (with fake addresses, RFC 3089 section 3); ` +
        `name resolution is delegated to the SOCKS gateway`,
    ),
    { code: "ENOTIMP", hostname: name, syscall: `query${rrtype}` },
  );
}

/**
 * @internal Replaces the resolving functions of `node:dns` and of
 * `dns.promises`; returns the function that puts them back.
 */
export function patchNodeDns(fakeDns: FakeDns): () => void {
  const cb = dns as unknown as Record<string, AnyFn>;
  const pr = dns.promises as unknown as Record<string, AnyFn>;
  const saved = {
    cb: { ...pick(cb) },
    pr: { ...pick(pr) },
  };

  /** The answer of a lookup: one fake (or literal) address of the asked family. */
  const answer = (name: string, options: unknown): LookupAddress[] => {
    const o = typeof options === "number" ? { family: options } : (options ?? {}) as {
      family?: number | string;
      all?: boolean;
    };
    const family = o.family === 6 || o.family === "IPv6" ? 6 : 4;
    const ip = normalizeIp(name);
    if (ip && (o.family === undefined || o.family === 0)) {
      return [{ address: ip.host, family: ip.family }];
    }
    return [{ address: fakeDns.lookup(name, family), family }];
  };
  const resolveFamily = (family: 4 | 6, rrtype: string) => (name: string) => {
    if (rrtype !== "A" && rrtype !== "AAAA") throw notSupported(name, rrtype);
    return [fakeDns.lookup(name, family)];
  };
  const resolver = (name: string, rrtype = "A") =>
    resolveFamily(rrtype === "AAAA" ? 6 : 4, rrtype)(name);

  const lookup = (name: string, options: unknown, callback?: AnyFn) => {
    const done = (typeof options === "function" ? options : callback) as AnyFn;
    const opts = typeof options === "function" ? undefined : options;
    let result: LookupAddress[];
    try {
      result = answer(name, opts);
    } catch (err) {
      queueMicrotask(() => done(Object.assign(err as Error, { code: "ENOTFOUND" })));
      return {};
    }
    const all = (opts as { all?: boolean } | undefined)?.all === true;
    queueMicrotask(() =>
      all ? done(null, result) : done(null, result[0].address, result[0].family)
    );
    return {};
  };
  const callbackForm =
    (fn: (name: string, rrtype?: string) => string[]) => (name: string, ...rest: unknown[]) => {
      const done = rest.findLast((x) => typeof x === "function") as AnyFn;
      const rrtype = typeof rest[0] === "string" ? rest[0] : undefined;
      try {
        const out = fn(name, rrtype);
        queueMicrotask(() => done(null, out));
      } catch (err) {
        queueMicrotask(() => done(err));
      }
    };

  Object.assign(cb, {
    lookup,
    resolve4: callbackForm(resolveFamily(4, "A")),
    resolve6: callbackForm(resolveFamily(6, "AAAA")),
    resolve: callbackForm(resolver),
  });
  Object.assign(pr, {
    // deno-lint-ignore require-await
    async lookup(name: string, options?: unknown) {
      const result = answer(name, options);
      return (options as { all?: boolean } | undefined)?.all ? result : result[0];
    },
    // deno-lint-ignore require-await
    resolve4: async (name: string) => resolveFamily(4, "A")(name),
    // deno-lint-ignore require-await
    resolve6: async (name: string) => resolveFamily(6, "AAAA")(name),
    // deno-lint-ignore require-await
    resolve: async (name: string, rrtype?: string) => resolver(name, rrtype),
  });

  return () => {
    Object.assign(cb, saved.cb);
    Object.assign(pr, saved.pr);
  };
}

function pick(o: Record<string, AnyFn>): Record<string, AnyFn> {
  return { lookup: o.lookup, resolve4: o.resolve4, resolve6: o.resolve6, resolve: o.resolve };
}
