/**
 * The commands every SOCKS front door shares: CONNECT and BIND (SOCKS5 and
 * SOCKS4), UDP ASSOCIATE (SOCKS5). A front door reads its request, then
 * calls one of these with a {@linkcode Replier} that writes its protocol's
 * replies; policy, resolution, dialing and the relay are the same for all.
 *
 * @module
 */

import type { BufferedReader } from "../io/buffered_reader.ts";
import { normalizeIp } from "../protocol/address.ts";
import { joinHostPort } from "../protocol/address.ts";
import { Reply } from "../protocol/constants.ts";
import { acceptPeer, bindListen, ClientGoneError, PrefetchedConn } from "./bind.ts";
import { replyFor } from "./errors.ts";
import { allowedFamilies } from "./resolver.ts";
import {
  admit,
  decide,
  destinationAddresses,
  isLocalTarget,
  loopbackGuard,
  netAddr,
  openConnection,
  relayTo,
  relayType,
  type Session,
  type SessionContext,
  type Started,
  underConnectDeadline,
  writeAll,
} from "./session.ts";
import { Association, bindUdp } from "./udp.ts";

/** How a front door answers: its protocol's success and failure replies. */
export interface Replier {
  /** The reply that grants a request, naming `host:port` (BIND's two replies, CONNECT's one). */
  success(host: string, port: number): Uint8Array;
  /** The reply for a failure, from the SOCKS5 reply code the pipeline gives it. */
  failure(code: number): Uint8Array;
}

/** What a command handler gets: the client, its reader, the destination, the replies. */
export interface CommandCall {
  /** The client connection. */
  conn: Deno.Conn;
  /** The reader the request came through (it may hold early data). */
  reader: BufferedReader;
  /** The requested destination host: a name or an IP literal. */
  host: string;
  /** The requested destination port. */
  port: number;
  /** The session. */
  s: Session;
  /** The gateway's settings for it. */
  ctx: SessionContext;
  /** The protocol's replies. */
  replier: Replier;
  /** Set once the first success reply is sent: a later failure has no reply of its own. */
  replied?: boolean;
}

/** Sends the first success reply and opens the handshake gate. */
async function succeed(c: CommandCall, host: string, port: number): Promise<void> {
  c.s.reply = Reply.SUCCEEDED;
  c.replied = true;
  await writeAll(c.conn, c.replier.success(host, port));
  c.ctx.handshakeDone?.(c.s.id);
}

/**
 * CONNECT: opens the destination, replies with the local address of the
 * outbound socket, relays.
 *
 * @example
 * ```ts ignore
 * started = await connectCommand({ conn, reader, host, port, s, ctx, replier });
 * ```
 */
export async function connectCommand(c: CommandCall): Promise<Started> {
  const target = await openConnection(c.s, c.ctx, c.host, c.port);
  const local = netAddr(target.localAddr);
  await succeed(c, local.host, local.port);
  return relayTo(c.s, c.ctx, c.reader.takeRest(), c.conn, target);
}

/**
 * BIND: listens where the expected peer can reach, replies with that
 * address, waits for the one peer, replies with who came, relays.
 *
 * @example
 * ```ts ignore
 * started = await bindCommand({ conn, reader, host, port, s, ctx, replier });
 * ```
 */
export async function bindCommand(c: CommandCall): Promise<Started> {
  const { s, ctx, conn } = c;
  const [peer] = await underConnectDeadline(
    s,
    ctx,
    (signal) => destinationAddresses(c.host, c.port, "bind", s, ctx, signal),
  );
  const listener = bindListen({
    peer,
    controlLocal: netAddr(conn.localAddr),
    outbound: ctx.outbound,
    towardPeer: ctx.localAddressToward?.(peer.address),
  });
  s.own(listener);
  const bound = netAddr(listener.addr);
  await succeed(c, bound.host, bound.port);
  // Watch the control connection: a client that gives up ends the wait.
  const client = new PrefetchedConn(conn);
  let incoming: Deno.TcpConn;
  const signal = AbortSignal.any([
    AbortSignal.timeout(ctx.bind?.acceptTimeout ?? 60_000),
    s.signal,
  ]);
  try {
    incoming = await acceptPeer(listener, c.port, {
      peer,
      strictPeer: ctx.bind?.strictPeer ?? true,
      signal,
      clientGone: client.gone,
      allowed: ctx.rules
        ? async (host, port) =>
          (await decide(ctx, s, "bind", host, port, signal)).action === "allow"
        : undefined,
    });
  } catch (error) {
    if (error instanceof ClientGoneError) throw error;
    // The first reply succeeded; the second one carries the failure.
    s.reply = replyFor(error);
    if (!s.aborted) await writeAll(conn, c.replier.failure(s.reply)).catch(() => {});
    throw error;
  }
  s.own(incoming);
  const from = netAddr(incoming.remoteAddr);
  s.resolved = joinHostPort(from.host, from.port);
  s.type = relayType(s.clientFamily, from.family);
  await writeAll(conn, c.replier.success(from.host, from.port));
  return relayTo(s, ctx, c.reader.takeRest(), client, incoming);
}

/**
 * UDP ASSOCIATE (SOCKS5 only): a relay socket in the client's family, alive
 * as long as the control connection.
 *
 * @example
 * ```ts ignore
 * started = await udpCommand({ conn, reader, host, port, s, ctx, replier });
 * ```
 */
export async function udpCommand(c: CommandCall): Promise<Started> {
  const { s, ctx, conn } = c;
  admit(s, ctx); // protected mode and session limits, as for CONNECT and BIND
  const local = netAddr(conn.localAddr);
  // DST.ADDR/DST.PORT name the client's expected source, never a destination.
  const expected = normalizeIp(c.host);
  const port = expected && expected.host !== "0.0.0.0" && expected.host !== "::" ? c.port : 0;
  const socket = await bindUdp(local.family, local.host, ctx.udp?.portRange);
  const association = new Association(
    socket,
    { host: s.client.hostname, port },
    { outbound: ctx.outbound, nameCacheTtl: ctx.udp?.nameCacheTtl },
    {
      resolve: (name, p) => destinationAddresses(name, p, "udp", s, ctx),
      allowed: async (host, p, family) => {
        if (!allowedFamilies(ctx.family).includes(family)) return false;
        const decision = ctx.rules ? await decide(ctx, s, "udp", host, p) : undefined;
        if (decision ? decision.action !== "allow" : loopbackGuard(ctx, s) && isLocalTarget(host)) {
          return false;
        }
        // Metadata, link-local, multicast...: refused unless a rule names them.
        return !ctx.safety?.refusal(host, p, { rules: ctx.ruleConfigs, decision });
      },
      onDatagram(up, bytes, family) {
        s.active = true;
        s.type ??= relayType(s.clientFamily, family);
        if (up) {
          s.bytesUp += bytes;
          s.datagramsUp++;
          ctx.stats.udp.fromClients++;
        } else {
          s.bytesDown += bytes;
          s.datagramsDown++;
          ctx.stats.udp.toClients++;
        }
      },
      onDrop: () => ctx.stats.udp.dropped++,
    },
  );
  s.own(association);
  const advertised = (local.family === 4 ? ctx.udp?.advertise?.ipv4 : ctx.udp?.advertise?.ipv6) ??
    local.host;
  await succeed(c, advertised, socket.address().port);
  s.phase = "relay";
  s.lastActive = performance.now();
  // The association lives as long as its TCP control connection.
  const relaying = (async () => {
    const buf = new Uint8Array(64);
    while ((await conn.read(buf).catch(() => null)) !== null) { /* nothing to read */ }
    s.closeReason ??= `control connection closed; ${association.counters.up} datagrams up, ` +
      `${association.counters.down} down, ${association.counters.dropped} dropped`;
  })();
  return { relaying };
}
