/**
 * The SOCKS4 and SOCKS4a front door: one request, then the shared CONNECT
 * or BIND of `commands.ts`. A SOCKS4a name is resolved by the gateway, so an
 * IPv4-only client reaches an IPv6-only name (RFC 3089 type B).
 *
 * Authentication: SOCKS4 has a USERID but no password, so it cannot prove
 * who the client is. When the gateway requires authentication (users or an
 * authenticator are configured), SOCKS4 requests are refused with 0x5B and
 * counted as authentication failures; clients must use SOCKS5 with a
 * username and password. Without authentication the USERID is not treated
 * as a user: rules naming `users` never match a SOCKS4 request (it is
 * unauthenticated), and the USERID is not logged as the session's user.
 *
 * Replies carry only IPv4: a BIND listening on IPv6 replies with DSTIP
 * `0.0.0.0` and its port ("the SOCKS server's address", in the SOCKS4
 * document), see `../protocol/socks4.ts`.
 *
 * @module
 */

import { joinHostPort } from "../protocol/address.ts";
import { Reply } from "../protocol/constants.ts";
import {
  decodeSocks4Request,
  encodeSocks4Reply,
  Socks4Command,
  Socks4Reply,
  socks4ReplyCode,
} from "../protocol/socks4.ts";
import { bindCommand, type CommandCall, connectCommand, type Replier } from "./commands.ts";
import type { DoorCall } from "./front_door.ts";
import { GatewayError } from "./errors.ts";
import { requested, type Started, writeAll } from "./session.ts";

/** The command recorded for a CD that is neither CONNECT nor BIND (counted as "other"). */
const OTHER_COMMAND = 0xff;

/** SOCKS4 replies: VN 0, CD 0x5A or 0x5B, an IPv4 address (IPv6 as 0.0.0.0). */
const socks4Replier: Replier = {
  success: (host, port) => encodeSocks4Reply({ reply: Socks4Reply.GRANTED, hostname: host, port }),
  failure: (code) =>
    encodeSocks4Reply({ reply: socks4ReplyCode(code), hostname: "0.0.0.0", port: 0 }),
};

/**
 * Runs a SOCKS4 or SOCKS4a request and its command. Failures are answered
 * by the caller through `call.refuse` (set here) with 0x5B.
 *
 * @example
 * ```ts ignore
 * const started = await socks4Door(call);
 * ```
 */
export async function socks4Door(call: DoorCall): Promise<Started> {
  const { conn, reader, s, ctx } = call;
  call.refuse = socks4Replier.failure;
  const request = await reader.decode(decodeSocks4Request, "SOCKS4 request");
  const known = request.command === Socks4Command.CONNECT ||
    request.command === Socks4Command.BIND;
  requested(
    s,
    ctx,
    known ? request.command : OTHER_COMMAND,
    joinHostPort(request.hostname, request.port),
  );
  if (ctx.authenticator) {
    ctx.stats.authFailures++;
    s.closeReason = "SOCKS4 refused: authentication is required and SOCKS4 cannot carry a " +
      "password (use SOCKS5 with a username and password)";
    s.reply = Reply.NOT_ALLOWED;
    await writeAll(conn, socks4Replier.failure(Reply.NOT_ALLOWED));
    return undefined;
  }
  if (!known) {
    throw new GatewayError(
      Reply.COMMAND_NOT_SUPPORTED,
      `SOCKS4 command 0x${request.command.toString(16).padStart(2, "0")} not supported ` +
        `(expected 0x01 CONNECT or 0x02 BIND)`,
    );
  }
  const command: CommandCall = {
    conn,
    reader,
    host: request.hostname,
    port: request.port,
    s,
    ctx,
    replier: socks4Replier,
  };
  call.command = command;
  if (request.command === Socks4Command.CONNECT) return await connectCommand(command);
  return await bindCommand(command);
}
