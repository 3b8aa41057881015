/**
 * The typed errors of the Socks Lib client. Every failure of a SOCKS
 * handshake is a {@linkcode SocksError} that names the gateway it happened
 * at, the final target, and (for a refusal) the reply code and its meaning,
 * so that a delegated name resolution that failed at the gateway (RFC 3089
 * section 3) reads as what it is rather than as a bare connection failure.
 *
 * @module
 */

import { replyText } from "../protocol/constants.ts";

/** Where a {@linkcode SocksError} happened. */
export interface SocksErrorInit extends ErrorOptions {
  /** The gateway, as `HOST:PORT` (IPv6 bracketed, credentials never included). */
  gateway: string;
  /** The final target, as `HOST:PORT`. */
  target: string;
  /** The position of the gateway in the chain, 0 for the first. */
  hop?: number;
  /** The SOCKS5 reply code, when the gateway answered with one. */
  reply?: number;
}

/**
 * The base class of every client-side SOCKS failure.
 *
 * @example
 * ```ts ignore
 * import { connect, SocksError } from "./mod.ts";
 * try {
 *   await connect("example.test:80", { via: "socks5://127.0.0.1:1080" });
 * } catch (err) {
 *   if (err instanceof SocksError) console.error(err.gateway, err.reply, err.message);
 * }
 * ```
 */
export class SocksError extends Error {
  /** The gateway, as `HOST:PORT` (IPv6 bracketed). */
  readonly gateway: string;
  /** The final target, as `HOST:PORT`. */
  readonly target: string;
  /** The position of the gateway in the chain, 0 for the first. */
  readonly hop: number;
  /** The SOCKS5 reply code, when the gateway answered with one. */
  readonly reply?: number;
  /** Creates the error. */
  constructor(message: string, init: SocksErrorInit) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = "SocksError";
    this.gateway = init.gateway;
    this.target = init.target;
    this.hop = init.hop ?? 0;
    this.reply = init.reply;
  }
}

/**
 * The gateway answered a request with a failure reply (REP != 0), e.g.
 * `gateway [2001:db8::1]:1080 could not connect to v4only.test:80: host
 * unreachable (reply 4)`. `requested` is what that gateway was asked to reach:
 * the final target, or the next gateway of a chain.
 *
 * @example
 * ```ts ignore
 * import { connect, SocksReplyError } from "./mod.ts";
 * import { Reply } from "../protocol/constants.ts";
 * try {
 *   await connect("127.0.0.1:9", { via: "socks5://127.0.0.1:1080" });
 * } catch (err) {
 *   if (err instanceof SocksReplyError && err.reply === Reply.CONNECTION_REFUSED) {
 *     console.error("refused:", err.message);
 *   }
 * }
 * ```
 */
export class SocksReplyError extends SocksError {
  /** The SOCKS5 reply code (1 to 255). */
  declare readonly reply: number;
  /** What this gateway was asked to connect to, as `HOST:PORT`. */
  readonly requested: string;
  /** Creates the error. */
  constructor(init: SocksErrorInit & { reply: number; requested: string; command?: string }) {
    const verb = init.command ?? "connect to";
    super(
      `gateway ${init.gateway} could not ${verb} ${init.requested}: ${
        replyText(init.reply)
      } (reply ${init.reply})`,
      init,
    );
    this.name = "SocksReplyError";
    this.requested = init.requested;
  }
}

/**
 * Authentication failed: the gateway accepted none of the offered methods
 * (`kind: "method"`), or rejected the RFC 1929 username/password
 * (`kind: "credentials"`).
 *
 * @example
 * ```ts ignore
 * import { connect, SocksAuthError } from "./mod.ts";
 * try {
 *   await connect("example.test:80", { via: "socks5://alice:wrong@127.0.0.1:1080" });
 * } catch (err) {
 *   if (err instanceof SocksAuthError) console.error(err.kind, err.message);
 * }
 * ```
 */
export class SocksAuthError extends SocksError {
  /** `"method"`: no offered method accepted; `"credentials"`: user/password rejected. */
  readonly kind: "method" | "credentials";
  /** Creates the error. */
  constructor(kind: "method" | "credentials", message: string, init: SocksErrorInit) {
    super(message, init);
    this.name = "SocksAuthError";
    this.kind = kind;
  }
}

/**
 * The gateway sent bytes that are not a valid SOCKS5 answer (wrong version,
 * bad reserved byte, unknown address type, a method that was not offered),
 * or sent data where none may come yet.
 *
 * @example
 * ```ts
 * import { SocksProtocolError } from "./mod.ts";
 * const err = new SocksProtocolError("gateway 127.0.0.1:1080 sent a malformed reply", {
 *   gateway: "127.0.0.1:1080",
 *   target: "example.test:80",
 * });
 * err.gateway; // "127.0.0.1:1080"
 * ```
 */
export class SocksProtocolError extends SocksError {
  /** Creates the error. */
  constructor(message: string, init: SocksErrorInit) {
    super(message, init);
    this.name = "SocksProtocolError";
  }
}

/**
 * The gateway closed (or reset) the connection before the handshake was
 * complete.
 *
 * @example
 * ```ts ignore
 * import { connect, SocksClosedError } from "./mod.ts";
 * try {
 *   await connect("example.test:80", { via: "socks5://127.0.0.1:1080" });
 * } catch (err) {
 *   if (err instanceof SocksClosedError) console.error("gateway hung up:", err.gateway);
 * }
 * ```
 */
export class SocksClosedError extends SocksError {
  /** Creates the error. */
  constructor(message: string, init: SocksErrorInit) {
    super(message, init);
    this.name = "SocksClosedError";
  }
}

/**
 * The first gateway could not be reached at all (nothing listening, no
 * route, name of the gateway not resolvable). `cause` is the system error.
 *
 * @example
 * ```ts ignore
 * import { connect, GatewayUnreachableError } from "./mod.ts";
 * try {
 *   await connect("example.test:80", { via: "socks5://127.0.0.1:1" });
 * } catch (err) {
 *   if (err instanceof GatewayUnreachableError) console.error(err.message);
 * }
 * ```
 */
export class GatewayUnreachableError extends SocksError {
  /** Creates the error. */
  constructor(message: string, init: SocksErrorInit) {
    super(message, init);
    this.name = "GatewayUnreachableError";
  }
}

/**
 * The `timeout` option of {@linkcode connect} expired before the handshake
 * with the whole chain was complete.
 *
 * @example
 * ```ts ignore
 * import { connect, SocksTimeoutError } from "./mod.ts";
 * try {
 *   await connect("example.test:80", { via: "socks5://127.0.0.1:1080", timeout: 5000 });
 * } catch (err) {
 *   if (err instanceof SocksTimeoutError) console.error(err.message);
 * }
 * ```
 */
export class SocksTimeoutError extends SocksError {
  /** The timeout that expired, in milliseconds. */
  readonly timeout: number;
  /** Creates the error. */
  constructor(message: string, init: SocksErrorInit & { timeout: number }) {
    super(message, init);
    this.name = "SocksTimeoutError";
    this.timeout = init.timeout;
  }
}

/**
 * The target is an address of the fake space of a {@linkcode FakeDns} that
 * maps to no name (never handed out, recycled, or from another process). No
 * connection is attempted.
 *
 * @example
 * ```ts ignore
 * import { connect, FakeDns, UnmappedFakeAddressError } from "./mod.ts";
 * const fakeDns = new FakeDns();
 * try {
 *   await connect("0.0.0.99:80", { via: "socks5://127.0.0.1:1080", fakeDns });
 * } catch (err) {
 *   if (err instanceof UnmappedFakeAddressError) console.error(err.address);
 * }
 * ```
 */
export class UnmappedFakeAddressError extends SocksError {
  /** The fake address that has no mapping. */
  readonly address: string;
  /** Creates the error. */
  constructor(address: string, init: SocksErrorInit) {
    super(
      `${init.target} is a fake address (RFC 3089 section 3) with no name mapped to it: ` +
        `it was never handed out by this FakeDns, or its entry was recycled; ` +
        `no connection was attempted`,
      init,
    );
    this.name = "UnmappedFakeAddressError";
    this.address = address;
  }
}

/**
 * A {@linkcode FakeDns} family pool has every entry pinned by a live
 * connection, so no entry can be recycled for a new name.
 *
 * @example
 * ```ts
 * import { FakeDns, FakeDnsExhaustedError } from "./mod.ts";
 * const dns = new FakeDns({ ipv4Range: "0.0.0.0/30" }); // 3 usable addresses
 * for (const n of ["a.test", "b.test", "c.test"]) dns.pin(dns.lookup(n, 4));
 * try {
 *   dns.lookup("d.test", 4);
 * } catch (err) {
 *   if (err instanceof FakeDnsExhaustedError) console.error(err.message);
 * }
 * ```
 */
export class FakeDnsExhaustedError extends Error {
  /** The family whose pool is exhausted. */
  readonly family: 4 | 6;
  /** Creates the error. */
  constructor(family: 4 | 6, message: string) {
    super(message);
    this.name = "FakeDnsExhaustedError";
    this.family = family;
  }
}

/** One failed try of {@linkcode AllGatewaysFailedError}. */
export interface GatewayFailure {
  /** The hop (0 for the first) whose gateway failed. */
  hop: number;
  /** That gateway, as `HOST:PORT`. */
  gateway: string;
  /** Why: a {@linkcode SocksError} (unreachable, timeout, closed, ...). */
  error: unknown;
}

/**
 * Every alternative of a hop failed (client failover): the message names
 * each gateway tried and why, e.g. `no gateway could carry the connection to
 * v4only.test:80: [::1]:1081 (hop 1): could not reach gateway ...;
 * [::1]:1082 (hop 1): no complete SOCKS handshake within 500 ms ...`.
 * `gateway` lists the gateways tried, comma-separated; `failures` has the
 * detail.
 *
 * @example
 * ```ts ignore
 * import { AllGatewaysFailedError, connect } from "./mod.ts";
 * try {
 *   await connect("example.test:80", {
 *     via: [["socks5://127.0.0.1:1081", "socks5://127.0.0.1:1082"]],
 *     timeout: 2000,
 *   });
 * } catch (err) {
 *   if (err instanceof AllGatewaysFailedError) {
 *     for (const f of err.failures) console.error(f.gateway, String(f.error));
 *   }
 * }
 * ```
 */
export class AllGatewaysFailedError extends SocksError {
  /** Each gateway tried, in order, with its error. */
  readonly failures: readonly GatewayFailure[];
  /** Creates the error. */
  constructor(failures: readonly GatewayFailure[], init: { target: string }) {
    const last = failures[failures.length - 1];
    super(
      `no gateway could carry the connection to ${init.target}: ${
        failures.map((f) =>
          `${f.gateway} (hop ${f.hop + 1}): ${
            f.error instanceof Error ? f.error.message : String(f.error)
          }`
        ).join("; ")
      }`,
      {
        gateway: failures.map((f) => f.gateway).join(", "),
        target: init.target,
        hop: last?.hop ?? 0,
        cause: last?.error,
      },
    );
    this.name = "AllGatewaysFailedError";
    this.failures = failures;
  }
}
