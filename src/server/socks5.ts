/**
 * The SOCKS5 front door (RFC 1928, RFC 1929): method negotiation, the
 * optional username/password login, the request; then the shared commands.
 *
 * @module
 */

import {
  decodeCredentials,
  decodeGreeting,
  decodeRequest,
  encodeAuthStatus,
  encodeMethodSelection,
  encodeReply,
  ProtocolError,
  toSocksAddress,
} from "../protocol/codec.ts";
import { Command, Method, Reply } from "../protocol/constants.ts";
import { joinHostPort } from "../protocol/address.ts";
import { addressReply } from "./bind.ts";
import { GatewayError } from "./errors.ts";
import {
  bindCommand,
  type CommandCall,
  connectCommand,
  type Replier,
  udpCommand,
} from "./commands.ts";
import type { DoorCall } from "./front_door.ts";
import { authenticate, requested, type Session, type Started, writeAll } from "./session.ts";

/** SOCKS5 replies: BND.ADDR in the client's family on failure. */
function socks5Replier(s: Session): Replier {
  return {
    success: addressReply,
    failure: (code) =>
      encodeReply({
        reply: code,
        address: toSocksAddress(s.clientFamily === 6 ? "::" : "0.0.0.0"),
        port: 0,
      }),
  };
}

/**
 * Runs a SOCKS5 handshake and its command. Failures are answered by the
 * caller through `call.refuse` (set here), with the reply code of the error.
 *
 * @example
 * ```ts ignore
 * const started = await socks5Door(call);
 * ```
 */
export async function socks5Door(call: DoorCall): Promise<Started> {
  const { conn, reader, s, ctx } = call;
  const replier = socks5Replier(s);
  call.refuse = replier.failure;
  // 1. Method negotiation: user/pass when configured, else NO AUTH.
  const { methods } = await reader.decode(decodeGreeting, "greeting");
  const want = ctx.authenticator ? Method.USERPASS : Method.NO_AUTH;
  const method = methods.includes(want) ? want : Method.NO_ACCEPTABLE;
  await writeAll(conn, encodeMethodSelection(method));
  if (method === Method.NO_ACCEPTABLE) {
    s.closeReason = "no acceptable authentication method";
    return undefined;
  }
  // 2. RFC 1929 sub-negotiation.
  if (method === Method.USERPASS) {
    const creds = await reader.decode(decodeCredentials, "username/password request").catch(
      async (error) => {
        // Not UTF-8, so no configured user's: a failed login (RFC 1929: a
        // status, then the close), not a silent one.
        if (error instanceof ProtocolError && error.kind === "credentials-encoding") {
          ctx.stats.authFailures++;
          await writeAll(conn, encodeAuthStatus(false)).catch(() => {});
        }
        throw error;
      },
    );
    const ok = await authenticate(s, ctx, creds);
    await writeAll(conn, encodeAuthStatus(ok));
    if (!ok) return undefined;
  }
  // 3. The request.
  const request = await reader.decode(decodeRequest, "request");
  requested(s, ctx, request.command, joinHostPort(request.address.host, request.port));
  // 4. The command.
  const command: CommandCall = {
    conn,
    reader,
    host: request.address.host,
    port: request.port,
    s,
    ctx,
    replier,
  };
  call.command = command;
  if (request.command === Command.CONNECT) return await connectCommand(command);
  if (request.command === Command.BIND) return await bindCommand(command);
  if (request.command === Command.UDP_ASSOCIATE) return await udpCommand(command);
  throw new GatewayError(Reply.COMMAND_NOT_SUPPORTED, `command ${request.command} not supported`);
}
