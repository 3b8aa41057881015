/**
 * The one table that maps every failure of a request to a SOCKS5 reply code.
 * The README's reply-code table is written from this file.
 *
 * @module
 */

import { Reply } from "../protocol/constants.ts";

/** A failure that already knows its reply code. */
export class GatewayError extends Error {
  /** The SOCKS5 reply code to send. */
  readonly reply: number;
  /** Creates the error. */
  constructor(reply: number, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "GatewayError";
    this.reply = reply;
  }
}

/** A name that did not resolve (reply 4, host unreachable). */
export class ResolveError extends GatewayError {
  /** The name that failed. */
  readonly hostname: string;
  /** Creates the error; `reason` says why (e.g. "no such name"). */
  constructor(hostname: string, reason: string, options?: ErrorOptions) {
    super(Reply.HOST_UNREACHABLE, `cannot resolve ${hostname}: ${reason}`, options);
    this.name = "ResolveError";
    this.hostname = hostname;
  }
}

/** The overall connect deadline passed (reply 4; see `replyFor`). */
export class ConnectTimeoutError extends GatewayError {
  /** Creates the error. */
  constructor(target: string, ms: number) {
    super(Reply.HOST_UNREACHABLE, `connect to ${target} timed out after ${ms} ms`);
    this.name = "ConnectTimeoutError";
  }
}

/** Error codes of the operating system and of Deno, by reply code. */
const BY_CODE: Record<string, number> = {
  ECONNREFUSED: Reply.CONNECTION_REFUSED,
  EHOSTUNREACH: Reply.HOST_UNREACHABLE,
  EHOSTDOWN: Reply.HOST_UNREACHABLE,
  ETIMEDOUT: Reply.HOST_UNREACHABLE,
  ENOTFOUND: Reply.HOST_UNREACHABLE,
  EAI_NONAME: Reply.HOST_UNREACHABLE,
  EAI_NODATA: Reply.HOST_UNREACHABLE,
  ENETUNREACH: Reply.NETWORK_UNREACHABLE,
  ENETDOWN: Reply.NETWORK_UNREACHABLE,
  EAFNOSUPPORT: Reply.NETWORK_UNREACHABLE,
};

const BY_NAME: Record<string, number> = {
  ConnectionRefused: Reply.CONNECTION_REFUSED,
  TimedOut: Reply.HOST_UNREACHABLE,
  TimeoutError: Reply.HOST_UNREACHABLE,
  NotFound: Reply.HOST_UNREACHABLE,
};

/**
 * The reply code for an error raised while serving a request:
 *
 * | failure | reply |
 * |---|---|
 * | connection refused | 5 |
 * | host unreachable, host down, name that does not resolve | 4 |
 * | connect timeout (ours or the kernel's) | 4 |
 * | network unreachable, network down, family not supported | 3 |
 * | several attempts (Happy Eyeballs) | 5 if any was refused, else the first attempt's |
 * | an upstream gateway's failure reply (routed CONNECT) | the upstream's code |
 * | anything else | 1 |
 *
 * Command not supported (7), address type not supported (8) and not
 * allowed (2) are raised as {@linkcode GatewayError}s carrying their code.
 */
export function replyFor(error: unknown): number {
  if (error instanceof GatewayError) return error.reply;
  // An upstream gateway's failure reply (Socks Lib errors carry `reply`) passes through.
  const upstream = (error as { reply?: unknown } | null)?.reply;
  if (typeof upstream === "number" && upstream >= 1 && upstream <= 8) return upstream;
  if (error instanceof AggregateError && error.errors.length > 0) {
    const codes = error.errors.map(replyFor);
    return codes.includes(Reply.CONNECTION_REFUSED) ? Reply.CONNECTION_REFUSED : codes[0];
  }
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    if (typeof code === "string" && code in BY_CODE) return BY_CODE[code];
    if (error.name in BY_NAME) return BY_NAME[error.name];
    const m = /\(os error (\d+)\)/.exec(error.message);
    if (m) {
      const errno = Number(m[1]);
      if (errno === 111) return Reply.CONNECTION_REFUSED;
      if (errno === 113 || errno === 112 || errno === 110) {
        return Reply.HOST_UNREACHABLE;
      }
      if (errno === 101 || errno === 100 || errno === 97) {
        return Reply.NETWORK_UNREACHABLE;
      }
    }
  }
  return Reply.GENERAL_FAILURE;
}

/** A short, single-line description of an error for logs. */
export function describeError(error: unknown): string {
  if (error instanceof AggregateError) {
    return error.errors.map(describeError).join("; ");
  }
  if (error instanceof Error) return error.message;
  return String(error);
}
