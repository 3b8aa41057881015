/**
 * The client side of the SOCKS5 handshake (RFC 1928, RFC 1929) over an
 * already open byte stream, through a chain of gateways (RFC 3089 section
 * 4): the stream reaches the first gateway; it is asked to CONNECT to the
 * second, and the handshake with the second runs over the same stream, and
 * so on; the last gateway is asked for the real command.
 *
 * @module
 */

import {
  decodeAuthStatus,
  type Decoded,
  decodeMethodSelection,
  decodeReply,
  encodeCredentials,
  encodeGreeting,
  encodeRequest,
  ProtocolError,
  type SocksReply,
  toSocksAddress,
} from "../protocol/codec.ts";
import { Command, Method, Reply } from "../protocol/constants.ts";
import { BufferedReader, UnexpectedEofError } from "../io/buffered_reader.ts";
import {
  formatTarget,
  parseChain,
  parseTarget,
  type SocksGateway,
  type SocksTarget,
  type SocksTargetInit,
} from "./address.ts";
import {
  SocksAuthError,
  SocksClosedError,
  type SocksErrorInit,
  SocksProtocolError,
  SocksReplyError,
} from "./errors.ts";

/** The byte stream a handshake runs over (a `Deno.TcpConn` has this shape). */
export interface HandshakeStream {
  /** Reads into `p`; resolves to the byte count, or `null` at EOF. */
  read(p: Uint8Array): Promise<number | null>;
  /** Writes some of `p`; resolves to the byte count written. */
  write(p: Uint8Array): Promise<number>;
}

/** Options of {@linkcode handshake}. */
export interface HandshakeOptions {
  /**
   * The gateway URL, or the chain of gateway URLs in the order the stream
   * traverses them (`socks5://[user:pass@]host:port`; `socks5h://` alike).
   * `stream` must already be connected to the first one.
   */
  via: string | readonly string[];
}

/** What a successful {@linkcode handshake} learnt. */
export interface HandshakeResult {
  /** The last gateway's reply (REP 0), with BND.ADDR and BND.PORT. */
  reply: SocksReply;
  /** The reply's BND as an address (a name when the gateway sent ATYP DOMAINNAME). */
  boundAddr: Deno.NetAddr;
  /**
   * Bytes the last gateway sent after its reply (the destination may speak
   * first, in the same segment). They belong to the application's stream.
   */
  rest: Uint8Array<ArrayBuffer>;
}

/** Progress shared with the caller, so that a timeout can name the gateway. */
export interface HandshakeProgress {
  /** The hop being negotiated. */
  hop: number;
}

/** @internal The command-specific part of a handshake. */
export interface RequestSpec {
  /** The command byte. */
  command: number;
  /** The verb used in error messages ("connect to", "bind for", ...). */
  verb: string;
  /** Whether the target may have port 0. */
  allowPortZero?: boolean;
}

const CONNECT: RequestSpec = { command: Command.CONNECT, verb: "connect to" };

async function writeAll(stream: HandshakeStream, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await stream.write(bytes.subarray(off));
}

/**
 * @internal Runs the handshake with every gateway of `gateways` over
 * `stream`, the last one with `spec` for `target`. Reads through `reader`,
 * which keeps any bytes that follow the last reply.
 */
export async function negotiate(
  stream: HandshakeStream,
  reader: BufferedReader,
  chain: { gateways: readonly SocksGateway[]; target: SocksTarget; spec?: RequestSpec },
  progress: HandshakeProgress = { hop: 0 },
): Promise<SocksReply> {
  const { gateways, target } = chain;
  const spec = chain.spec ?? CONNECT;
  const targetText = formatTarget(target);
  let reply: SocksReply | undefined;
  for (let hop = 0; hop < gateways.length; hop++) {
    progress.hop = hop;
    const gw = gateways[hop];
    const last = hop === gateways.length - 1;
    const next: SocksTarget = last ? target : gateways[hop + 1];
    const init: SocksErrorInit = { gateway: gw.display, target: targetText, hop };
    const read = async <T>(
      decode: (buf: Uint8Array) => Decoded<T> | null,
      what: string,
    ): Promise<T> => {
      try {
        return await reader.decode(decode, what);
      } catch (err) {
        throw mapReadError(err, what, init);
      }
    };
    const write = async (bytes: Uint8Array, what: string): Promise<void> => {
      try {
        await writeAll(stream, bytes);
      } catch (err) {
        throw mapReadError(err, what, init);
      }
    };

    const hasCredentials = gw.username !== undefined;
    const offered = hasCredentials ? [Method.NO_AUTH, Method.USERPASS] : [Method.NO_AUTH];
    await write(encodeGreeting({ methods: offered }), "greeting");
    const method = await read<number>(decodeMethodSelection, "method selection");
    if (method === Method.NO_ACCEPTABLE) {
      throw new SocksAuthError(
        "method",
        `gateway ${gw.display} accepted none of the offered authentication methods (${
          hasCredentials ? "no authentication, username/password" : "no authentication"
        }): method not accepted${
          hasCredentials
            ? ""
            : "; if it requires a login, give one as socks5://user:password@host:port"
        }`,
        init,
      );
    }
    if (!offered.includes(method as 0 | 2)) {
      throw new SocksProtocolError(
        `gateway ${gw.display} selected authentication method 0x${
          method.toString(16).padStart(2, "0")
        }, expected one of the offered methods (${offered.join(", ")})`,
        init,
      );
    }
    if (method === Method.USERPASS) {
      await write(
        encodeCredentials({ username: gw.username!, password: gw.password ?? "" }),
        "username/password request",
      );
      const ok = await read<boolean>(decodeAuthStatus, "username/password status");
      if (!ok) {
        throw new SocksAuthError(
          "credentials",
          `gateway ${gw.display} rejected the login of user "${gw.username}": username/password rejected`,
          init,
        );
      }
    }
    const command = last ? spec.command : Command.CONNECT;
    await write(
      encodeRequest({ command, address: toSocksAddress(next.host), port: next.port }),
      "request",
    );
    reply = await read<SocksReply>(decodeReply, "reply");
    if (reply.reply !== Reply.SUCCEEDED) {
      throw new SocksReplyError({
        ...init,
        reply: reply.reply,
        requested: formatTarget(next),
        command: last ? spec.verb : "connect to",
      });
    }
  }
  return reply!;
}

function mapReadError(err: unknown, what: string, init: SocksErrorInit): unknown {
  if (err instanceof UnexpectedEofError) {
    return new SocksClosedError(
      `gateway ${init.gateway} closed the connection during the SOCKS handshake: expected its ${what}, found end of stream (${err.message})`,
      { ...init, cause: err },
    );
  }
  if (err instanceof ProtocolError) {
    return new SocksProtocolError(
      `gateway ${init.gateway} sent a malformed ${what}: ${err.message}`,
      { ...init, cause: err },
    );
  }
  if (
    err instanceof Deno.errors.ConnectionReset || err instanceof Deno.errors.BrokenPipe ||
    err instanceof Deno.errors.ConnectionAborted || err instanceof Deno.errors.NotConnected
  ) {
    return new SocksClosedError(
      `gateway ${init.gateway} reset the connection during the SOCKS handshake (at the ${what}): ${err.message}`,
      { ...init, cause: err },
    );
  }
  return err;
}

/**
 * Runs the SOCKS5 CONNECT handshake over a stream that is already connected
 * to the first gateway of `options.via`, for callers that open the TCP
 * connection themselves (e.g. a gateway dialing an upstream gateway with
 * its own dialer). Names in `target` are sent as ATYP DOMAINNAME.
 *
 * @example
 * ```ts ignore
 * import { handshake } from "./handshake.ts";
 * const conn = await Deno.connect({ hostname: "::1", port: 1080 });
 * const { boundAddr, rest } = await handshake(conn, "example.test:80", {
 *   via: "socks5://[::1]:1080",
 * });
 * ```
 */
export async function handshake(
  stream: HandshakeStream,
  target: SocksTargetInit,
  options: HandshakeOptions,
): Promise<HandshakeResult> {
  const gateways = parseChain(options.via);
  const t = parseTarget(target);
  const reader = new BufferedReader(stream);
  const reply = await negotiate(stream, reader, { gateways, target: t });
  return { reply, boundAddr: boundAddrOf(reply), rest: takeRest(reader) };
}

/**
 * @internal The bytes after the last decoded message. `takeRest` copies
 * them with `slice`, so they always live in a plain `ArrayBuffer`.
 */
export function takeRest(reader: BufferedReader): Uint8Array<ArrayBuffer> {
  return reader.takeRest() as Uint8Array<ArrayBuffer>;
}

/** @internal BND.ADDR/BND.PORT as a `Deno.NetAddr`. */
export function boundAddrOf(reply: SocksReply): Deno.NetAddr {
  return { transport: "tcp", hostname: reply.address.host, port: reply.port };
}
