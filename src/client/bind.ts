/**
 * SOCKS5 BIND from the client side (RFC 1928 section 4, RFC 3089 section
 * 2): the gateway listens for one inbound connection on the client's behalf
 * (FTP-style reverse connections), across families like CONNECT.
 *
 * @module
 */

import { decodeReply, type SocksReply } from "../protocol/codec.ts";
import { Command, Reply } from "../protocol/constants.ts";
import { UnexpectedEofError } from "../io/buffered_reader.ts";
import { formatTarget, type SocksTargetInit } from "./address.ts";
import { type ConnectOptions, SocksConn } from "./connect.ts";
import { open } from "./dial.ts";
import { SocksClosedError, SocksReplyError } from "./errors.ts";
import { boundAddrOf, takeRest } from "./handshake.ts";

/** Options of {@linkcode bind}: those of `connect` (`timeout` covers the first reply). */
export type BindOptions = ConnectOptions;

/** A pending BIND: the gateway listens; {@linkcode SocksBinding.accept} waits for the peer. */
export interface SocksBinding extends Disposable {
  /**
   * BND.ADDR/BND.PORT of the first reply: where the last gateway listens.
   * Tell the peer this address (e.g. in an FTP `EPRT`). RFC 3089 caveat: it
   * is in the gateway's family towards the peer, which may not be the
   * application's family (an IPv4-only application may receive an IPv6
   * address here); a gateway that sent 0.0.0.0 or :: means "my address the
   * peer already knows".
   */
  readonly boundAddr: Deno.NetAddr;
  /** The gateways traversed, as `HOST:PORT`. */
  readonly via: readonly string[];
  /**
   * Waits for the second reply (the peer connected) and returns the
   * connection to it; `target` is the peer's address as the gateway saw it.
   * Can be called once. Rejects with a `SocksReplyError` when the gateway
   * reports a failure, `SocksClosedError` when it closes first.
   */
  accept(options?: { signal?: AbortSignal }): Promise<SocksConn>;
  /** Gives up the binding (closes the control connection) unless accepted. */
  close(): void;
}

/**
 * Asks the gateway (the last one of a chain) to BIND: listen for one
 * inbound TCP connection from `peer` (the expected peer; port 0 when
 * unknown; gateways may use it to filter). Resolves after the first reply.
 *
 * @example
 * ```ts ignore
 * import { bind } from "./bind.ts";
 * const binding = await bind("ftp.example.test:0", { via: "socks5://[::1]:1080" });
 * console.log("tell the peer:", binding.boundAddr);
 * const data = await binding.accept();
 * data.close();
 * ```
 */
export async function bind(
  peer: SocksTargetInit,
  options: BindOptions,
): Promise<SocksBinding> {
  const opened = await open(peer, options, {
    command: Command.BIND,
    verb: "bind for",
    allowPortZero: true,
  });
  const { conn, reader, gateways } = opened;
  const last = gateways[gateways.length - 1];
  const via = gateways.map((g) => g.display);
  const first = boundAddrOf(opened.reply);
  let state: "waiting" | "accepting" | "done" = "waiting";
  const giveUp = () => {
    if (state === "done") return;
    state = "done";
    try {
      conn.close();
    } catch {
      // already closed
    }
    opened.release?.();
  };
  return {
    boundAddr: first,
    via,
    async accept(acceptOptions = {}): Promise<SocksConn> {
      if (state !== "waiting") {
        throw new Deno.errors.BadResource(
          `bind: expected a pending binding, found one already ${
            state === "done" ? "closed" : "accepting"
          }`,
        );
      }
      state = "accepting";
      const signal = acceptOptions.signal;
      signal?.throwIfAborted();
      signal?.addEventListener("abort", giveUp, { once: true });
      const init = {
        gateway: last.display,
        target: formatTarget(opened.target),
        hop: gateways.length - 1,
      };
      let reply: SocksReply;
      try {
        reply = await reader.decode(decodeReply, "second BIND reply");
      } catch (err) {
        giveUp();
        if (signal?.aborted) throw signal.reason;
        if (err instanceof UnexpectedEofError) {
          throw new SocksClosedError(
            `gateway ${last.display} closed the BIND connection before a peer connected (expected its second reply)`,
            { ...init, cause: err },
          );
        }
        throw err;
      } finally {
        signal?.removeEventListener("abort", giveUp);
      }
      if (reply.reply !== Reply.SUCCEEDED) {
        giveUp();
        throw new SocksReplyError({
          ...init,
          reply: reply.reply,
          requested: formatTarget(opened.target),
          command: "accept a connection from",
        });
      }
      state = "done";
      return new SocksConn(conn, {
        target: { host: reply.address.host, port: reply.port },
        boundAddr: first,
        via,
        rest: takeRest(reader),
        release: opened.release,
      });
    },
    close: giveUp,
    [Symbol.dispose]: () => {
      if (state === "waiting") giveUp();
    },
  };
}
