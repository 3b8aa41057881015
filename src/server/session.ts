/**
 * One client session: the SOCKS5 handshake state machine, the CONNECT
 * command (policy, resolution, Happy Eyeballs), and the relay.
 *
 * @module
 */

import { BufferedReader } from "../io/buffered_reader.ts";
import { type Family, joinHostPort, normalizeIp } from "../protocol/address.ts";
import {
  decodeCredentials,
  decodeGreeting,
  decodeRequest,
  encodeAuthStatus,
  encodeMethodSelection,
  encodeReply,
  ProtocolError,
  type SocksRequest,
  toSocksAddress,
} from "../protocol/codec.ts";
import { Command, Method, Reply } from "../protocol/constants.ts";
import type { Authenticator } from "../policy/auth.ts";
import { combineDecisions, type RuleContext, type RuleDecision } from "../policy/rules.ts";
import { type Dialer, happyEyeballs, type RelayConn } from "./dialer.ts";
import {
  ConnectTimeoutError,
  describeError,
  GatewayError,
  replyFor,
  ResolveError,
} from "./errors.ts";
import { relay, type RelayStats } from "./relay.ts";
import { type CommandName, type GatewayStats, observe } from "./stats.ts";
import {
  allowedFamilies,
  type FamilyPolicy,
  orderAddresses,
  type ResolvedAddress,
  type Resolver,
} from "./resolver.ts";

/** The rules hook: decides whether a request may proceed. */
export type RulesHook = (ctx: RuleContext) => RuleDecision | Promise<RuleDecision>;

/** RFC 3089 relay types, from the families of the two sockets. */
export type RelayType = "A" | "B" | "C" | "D";

/** Classifies a relay: A 4->4, B 4->6, C 6->4, D 6->6. */
export function relayType(client: Family, target: Family): RelayType {
  if (client === 4) return target === 4 ? "A" : "B";
  return target === 4 ? "C" : "D";
}

const COMMANDS: Record<number, CommandName> = {
  [Command.CONNECT]: "connect",
  [Command.BIND]: "bind",
  [Command.UDP_ASSOCIATE]: "udp",
};

/** The name of a request command, as counted and logged. */
export function commandName(command: number): CommandName {
  return COMMANDS[command] ?? "other";
}

/** What a session needs from its gateway. */
export interface SessionContext {
  authenticator?: Authenticator;
  rules?: RulesHook;
  resolver: Resolver;
  family: FamilyPolicy;
  dialer: Dialer;
  happyEyeballsDelay: number;
  connectTimeout: number;
  outbound: { ipv4?: string; ipv6?: string };
  stats: GatewayStats;
}

/** The state of one session, readable while it runs. */
export class Session implements RelayStats {
  readonly id: number;
  readonly client: Deno.NetAddr;
  readonly clientFamily: Family;
  readonly startedAt = Date.now();
  /** `performance.now()` at accept, for the handshake latency. */
  readonly acceptedAt = performance.now();
  phase: "handshake" | "connect" | "relay" | "closed" = "handshake";
  user?: string;
  command?: number;
  destination?: string;
  resolved?: string;
  type?: RelayType;
  reply?: number;
  closeReason?: string;
  bytesUp = 0;
  bytesDown = 0;
  active = false;
  lastActive = 0;
  #conns: RelayConn[] = [];
  #controller = new AbortController();

  constructor(id: number, conn: Deno.Conn) {
    this.id = id;
    const addr = conn.remoteAddr as Deno.NetAddr;
    const ip = normalizeIp(addr.hostname);
    this.client = { ...addr, hostname: ip?.host ?? addr.hostname };
    this.clientFamily = ip?.family ?? 4;
    this.#conns.push(conn);
  }

  /** Aborted when the session is cut short. */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** Tracks a connection so that {@linkcode abort} closes it. */
  own(conn: RelayConn): void {
    this.#conns.push(conn);
  }

  /** Ends the session now: records `reason`, aborts work, closes sockets. */
  abort(reason: string): void {
    this.closeReason ??= reason;
    this.#controller.abort(new Error(reason));
    for (const c of this.#conns) {
      try {
        c.close();
      } catch { /* already closed */ }
    }
  }
}

async function writeAll(conn: RelayConn, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
}

function failureReply(s: Session, code: number): Uint8Array {
  const host = s.clientFamily === 6 ? "::" : "0.0.0.0";
  return encodeReply({ reply: code, address: toSocksAddress(host), port: 0 });
}

/**
 * Runs one session to its end. Never throws: every outcome is recorded in
 * `s.closeReason` and both sockets are closed.
 */
export async function runSession(
  conn: Deno.Conn,
  s: Session,
  ctx: SessionContext,
): Promise<void> {
  const reader = new BufferedReader(conn);
  let replied = false;
  try {
    // 1. Method negotiation: user/pass when configured, else NO AUTH.
    const { methods } = await reader.decode(decodeGreeting, "greeting");
    const want = ctx.authenticator ? Method.USERPASS : Method.NO_AUTH;
    const method = methods.includes(want) ? want : Method.NO_ACCEPTABLE;
    await writeAll(conn, encodeMethodSelection(method));
    if (method === Method.NO_ACCEPTABLE) {
      s.closeReason = "no acceptable authentication method";
      return;
    }
    // 2. RFC 1929 sub-negotiation.
    if (method === Method.USERPASS) {
      const creds = await reader.decode(decodeCredentials, "username/password request");
      const ok = await ctx.authenticator!(creds, { client: s.client });
      await writeAll(conn, encodeAuthStatus(ok));
      if (!ok) {
        ctx.stats.authFailures++;
        s.closeReason = `authentication failed for user "${creds.username}"`;
        return;
      }
      s.user = creds.username;
    }
    // 3. The request.
    const request = await reader.decode(decodeRequest, "request");
    s.command = request.command;
    s.destination = joinHostPort(request.address.host, request.port);
    ctx.stats.sessionsByCommand[commandName(request.command)]++;
    const requestAt = performance.now();
    observe(ctx.stats.handshakeSeconds, (requestAt - s.acceptedAt) / 1000);
    if (request.command !== Command.CONNECT) {
      throw new GatewayError(
        Reply.COMMAND_NOT_SUPPORTED,
        `command ${request.command} not supported`,
      );
    }
    // 4. Policy, resolution, connection; then the success reply.
    s.phase = "connect";
    const target = await connectTarget(request, s, ctx);
    s.own(target);
    observe(ctx.stats.connectSeconds, (performance.now() - requestAt) / 1000);
    const local = normalizeIp((target.localAddr as Deno.NetAddr).hostname)!;
    const remote = normalizeIp((target.remoteAddr as Deno.NetAddr).hostname)!;
    s.resolved = joinHostPort(remote.host, (target.remoteAddr as Deno.NetAddr).port);
    s.type = relayType(s.clientFamily, remote.family);
    s.reply = Reply.SUCCEEDED;
    replied = true;
    await writeAll(
      conn,
      encodeReply({
        reply: Reply.SUCCEEDED,
        address: toSocksAddress(local.host),
        port: (target.localAddr as Deno.NetAddr).port,
      }),
    );
    // 5. Relay, starting with whatever an optimistic client sent early.
    s.phase = "relay";
    const early = reader.takeRest();
    if (early.length > 0) {
      await writeAll(target, early);
      s.bytesUp += early.length;
    }
    const reason = await relay(conn, target, s);
    s.closeReason ??= reason;
  } catch (error) {
    if (s.signal.aborted) return;
    s.closeReason ??= describeError(error);
    // Before the request is decoded there is nothing to reply to, except a
    // malformed request that the codec gave a reply code (e.g. bad ATYP -> 8).
    const code = error instanceof ProtocolError
      ? error.reply
      : s.command !== undefined
      ? replyFor(error)
      : undefined;
    if (code === Reply.NOT_ALLOWED) ctx.stats.ruleDenials++;
    if (!replied && code !== undefined) {
      s.reply = code;
      await writeAll(conn, failureReply(s, code)).catch(() => {});
    }
  } finally {
    s.abort(s.closeReason ?? "closed");
    s.phase = "closed";
  }
}

function decide(
  ctx: SessionContext,
  s: Session,
  host: string,
  port: number,
): RuleDecision | Promise<RuleDecision> {
  return ctx.rules!({
    client: { host: s.client.hostname, port: s.client.port },
    user: s.user,
    command: "connect",
    destination: { host, port },
  });
}

async function connectTarget(
  request: SocksRequest,
  s: Session,
  ctx: SessionContext,
): Promise<RelayConn> {
  const { host } = request.address;
  const { port } = request;
  const literal = normalizeIp(host);
  // Rules see the requested name first; a name that only the default denies
  // may still be allowed by an address rule, so it is resolved before refusing.
  const byName = ctx.rules ? await decide(ctx, s, host, port) : undefined;
  if (byName?.action === "deny" && (literal || byName.rule !== undefined)) {
    throw new GatewayError(Reply.NOT_ALLOWED, `${host}:${port} not allowed by ruleset`);
  }
  const families = allowedFamilies(ctx.family);
  const timeout = AbortSignal.timeout(ctx.connectTimeout);
  const signal = AbortSignal.any([timeout, s.signal]);
  let addresses: ResolvedAddress[];
  try {
    if (literal) {
      // A DOMAINNAME that is an IP literal is used as is (RFC 3089 section 3).
      if (!families.includes(literal.family)) {
        throw new GatewayError(
          Reply.ADDRESS_TYPE_NOT_SUPPORTED,
          `IPv${literal.family} destinations are disabled by family policy ${ctx.family}`,
        );
      }
      addresses = [{ address: literal.host, family: literal.family }];
    } else {
      ctx.stats.dnsLookups++;
      const found = await ctx.resolver(host, { signal, families }).catch((error) => {
        ctx.stats.dnsFailures++;
        throw error;
      });
      addresses = orderAddresses(found, ctx.family);
      if (addresses.length === 0) {
        throw new ResolveError(host, `no address of a family allowed by policy ${ctx.family}`);
      }
      if (byName) {
        const allowed = [];
        for (const a of addresses) {
          const byAddress = await decide(ctx, s, a.address, port);
          if (combineDecisions(byName, byAddress).action === "allow") allowed.push(a);
        }
        if (allowed.length === 0) {
          throw new GatewayError(
            Reply.NOT_ALLOWED,
            `${host} resolves only to addresses not allowed by ruleset`,
          );
        }
        addresses = allowed;
      }
    }
    return await happyEyeballs(addresses, port, {
      dial: ctx.dialer,
      delay: ctx.happyEyeballsDelay,
      signal,
      localAddress: ctx.outbound,
    });
  } catch (error) {
    if (timeout.aborted && !s.signal.aborted) {
      throw new ConnectTimeoutError(`${host}:${port}`, ctx.connectTimeout);
    }
    throw error;
  }
}
