/**
 * One client session: the SOCKS5 handshake state machine, then one of the
 * three commands (CONNECT, BIND, UDP ASSOCIATE) and the relay.
 *
 * @module
 */

import { BufferedReader } from "../io/buffered_reader.ts";
import { type Family, isLoopbackIp, joinHostPort, normalizeIp } from "../protocol/address.ts";
import type { Slotted } from "./live_set.ts";
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
import type { RuleCommand } from "../policy/rules.ts";
import {
  ConnectTimeoutError,
  describeError,
  GatewayError,
  replyFor,
  ResolveError,
} from "./errors.ts";
import { relay, type RelayStats } from "./relay.ts";
import {
  acceptPeer,
  addressReply,
  bindListen,
  type BindServerOptions,
  ClientGoneError,
  PrefetchedConn,
} from "./bind.ts";
import { Association, bindUdp, type UdpServerOptions } from "./udp.ts";
import { connectVia, describeChain, type RouteTable } from "./routes.ts";
import { type CommandName, type GatewayStats, observe } from "./stats.ts";
import {
  allowedFamilies,
  type FamilyPolicy,
  orderAddresses,
  raceConnection,
  raceSignal,
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
  bind?: BindServerOptions;
  udp?: UdpServerOptions;
  /** Gateway-side chaining: the upstream chain for a request, if routed. */
  routes?: RouteTable;
  /** The gateway's local address on a live relay to `peer`, if any (for BIND). */
  localAddressToward?: (peer: string) => string | undefined;
  /** Called once the session has sent its (first) success reply. */
  handshakeDone?: (id: number) => void;
}

/** The state of one session, readable while it runs. */
export class Session implements RelayStats, Slotted {
  readonly id: number;
  readonly client: Deno.NetAddr;
  readonly clientFamily: Family;
  /** The client is on this host's loopback. */
  readonly clientLoopback: boolean;
  readonly startedAt = Date.now();
  /** Position in the gateway's set of live sessions (see `live_set.ts`). */
  slot = -1;
  /** The timeouts (ms) the session started with: a reload does not change them. */
  timeouts?: { readonly handshake: number; readonly connect: number; readonly idle: number };
  /** `performance.now()` at accept, for the handshake latency. */
  readonly acceptedAt = performance.now();
  phase: "handshake" | "connect" | "relay" | "closed" = "handshake";
  /** The upstream chain a routed CONNECT went through. */
  route?: string;
  /** The outbound socket's local address, once connected (used by BIND). */
  localAddress?: string;
  /** Datagrams relayed by a UDP association, each way. */
  datagramsUp = 0;
  datagramsDown = 0;
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
  /** True once {@linkcode abort} ran: the session is over. */
  aborted = false;
  /** The blocking operation under way (a connect, or the name lookup of a BIND), aborted with the session. */
  pending?: AbortController;
  /**
   * `performance.now()` by which the connect under way must finish, 0 when
   * none: the gateway's sweeper aborts {@linkcode Session.pending} with a
   * {@linkcode ConnectTimeoutError} after it (no timer per session).
   */
  connectDeadline = 0;
  #conns: { close(): void }[] = [];
  #controller?: AbortController;

  constructor(id: number, conn: Deno.Conn) {
    this.id = id;
    const addr = conn.remoteAddr as Deno.NetAddr;
    const ip = normalizeIp(addr.hostname);
    this.client = { ...addr, hostname: ip?.host ?? addr.hostname };
    this.clientFamily = ip?.family ?? 4;
    this.clientLoopback = ip !== null && isLoopbackIp(ip);
    this.#conns.push(conn);
  }

  /** Aborted when the session ends (created on first use: most sessions never need it). */
  get signal(): AbortSignal {
    this.#controller ??= new AbortController();
    if (this.aborted) this.#controller.abort(this.closeReason);
    return this.#controller.signal;
  }

  /** Tracks a socket so that {@linkcode abort} closes it. */
  own(conn: { close(): void }): void {
    if (this.aborted) conn.close();
    else this.#conns.push(conn);
  }

  /** Ends the session now, once: records `reason`, aborts work, closes every socket once. */
  abort(reason: string): void {
    if (this.aborted) return;
    this.aborted = true;
    this.closeReason ??= reason;
    this.#controller?.abort(this.closeReason);
    this.pending?.abort(this.closeReason);
    for (const c of this.#conns) {
      try {
        c.close();
      } catch { /* closed by its peer's error path */ }
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

/** What a command handler gets: the client, its reader, the request. */
interface CommandCall {
  conn: Deno.Conn;
  reader: BufferedReader;
  request: SocksRequest;
  s: Session;
  ctx: SessionContext;
  /** Sends the (first) success reply naming `host:port`. */
  succeed(host: string, port: number): Promise<void>;
}

/** A command that got as far as relaying: the promise of the relay's end. */
type Started = { relaying: Promise<void> } | undefined;

/**
 * Runs one session to its end. Never throws: every outcome is recorded in
 * `s.closeReason` and every socket is closed. Once the relay runs, no
 * async frame of the handshake stays suspended (idle relays stay small).
 */
export async function runSession(
  conn: Deno.Conn,
  s: Session,
  ctx: SessionContext,
): Promise<void> {
  const reader = new BufferedReader(conn);
  let replied = false;
  let started: Started;
  try {
    // 1. Method negotiation: user/pass when configured, else NO AUTH.
    const { methods } = await reader.decode(decodeGreeting, "greeting");
    const want = ctx.authenticator ? Method.USERPASS : Method.NO_AUTH;
    const method = methods.includes(want) ? want : Method.NO_ACCEPTABLE;
    await writeAll(conn, encodeMethodSelection(method));
    if (method === Method.NO_ACCEPTABLE) {
      s.closeReason = "no acceptable authentication method";
      return end(s);
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
      const ok = await raceSignal(
        Promise.resolve(ctx.authenticator!(creds, { client: s.client, signal: s.signal })),
        s.signal,
      );
      await writeAll(conn, encodeAuthStatus(ok));
      if (!ok) {
        ctx.stats.authFailures++;
        s.closeReason = `authentication failed for user "${creds.username}"`;
        return end(s);
      }
      s.user = creds.username;
    }
    // 3. The request.
    const request = await reader.decode(decodeRequest, "request");
    s.command = request.command;
    s.destination = joinHostPort(request.address.host, request.port);
    ctx.stats.sessionsByCommand[commandName(request.command)]++;
    observe(ctx.stats.handshakeSeconds, (performance.now() - s.acceptedAt) / 1000);
    // 4. The command.
    s.phase = "connect";
    const command: CommandCall = {
      conn,
      reader,
      request,
      s,
      ctx,
      async succeed(host, port) {
        s.reply = Reply.SUCCEEDED;
        replied = true;
        await writeAll(conn, addressReply(host, port));
        ctx.handshakeDone?.(s.id);
      },
    };
    if (request.command === Command.CONNECT) started = await connectCommand(command);
    else if (request.command === Command.BIND) started = await bindCommand(command);
    else if (request.command === Command.UDP_ASSOCIATE) started = await udpCommand(command);
    else {
      throw new GatewayError(
        Reply.COMMAND_NOT_SUPPORTED,
        `command ${request.command} not supported`,
      );
    }
  } catch (error) {
    if (s.aborted) return end(s);
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
    return end(s);
  }
  // Returned, not awaited: this frame ends now and the relay runs on.
  return started ? started.relaying.then(() => end(s)) : end(s);
}

/** Closes whatever is left of the session, once. */
function end(s: Session): void {
  s.abort(s.closeReason ?? "closed");
  s.phase = "closed";
}

/**
 * Starts relaying, beginning with what the client sent early. The promise
 * settles when the relay has ended, with `s.closeReason` set; it never rejects.
 */
function relayTo(c: CommandCall, peer: RelayConn, client: RelayConn = c.conn): Started {
  const s = c.s;
  s.phase = "relay";
  s.lastActive = performance.now(); // idle time counts from here, not from accept
  const early = c.reader.takeRest();
  const ready = early.length === 0 ? Promise.resolve() : writeAll(peer, early).then(() => {
    s.bytesUp += early.length;
  });
  const relaying = ready
    .then(() => relay(client, peer, s, (why) => s.abort(why)))
    .then((reason) => {
      s.closeReason ??= reason;
    }, (error) => {
      s.closeReason ??= describeError(error);
    });
  return { relaying };
}

function netAddr(addr: Deno.Addr): { host: string; family: Family; port: number } {
  const a = addr as Deno.NetAddr;
  const ip = normalizeIp(a.hostname)!;
  return { host: ip.host, family: ip.family, port: a.port };
}

async function connectCommand(c: CommandCall): Promise<Started> {
  const { s, ctx, request } = c;
  const started = performance.now();
  const target = await connectTarget(request, s, ctx);
  s.own(target);
  observe(ctx.stats.connectSeconds, (performance.now() - started) / 1000);
  const local = netAddr(target.localAddr);
  const remote = netAddr(target.remoteAddr);
  s.localAddress = local.host;
  s.resolved = s.route ? `via ${s.route}` : joinHostPort(remote.host, remote.port);
  s.type = relayType(s.clientFamily, remote.family);
  await c.succeed(local.host, local.port);
  return relayTo(c, target);
}

async function bindCommand(c: CommandCall): Promise<Started> {
  const { s, ctx, request, conn } = c;
  const [peer] = await underConnectDeadline(
    s,
    ctx,
    (signal) => destinationAddresses(request.address.host, request.port, "bind", s, ctx, signal),
  );
  const listener = bindListen({
    peer,
    controlLocal: netAddr(conn.localAddr),
    outbound: ctx.outbound,
    towardPeer: ctx.localAddressToward?.(peer.address),
  });
  s.own(listener);
  const bound = netAddr(listener.addr);
  await c.succeed(bound.host, bound.port);
  // Watch the control connection: a client that gives up ends the wait.
  const client = new PrefetchedConn(conn);
  let incoming: Deno.TcpConn;
  const signal = AbortSignal.any([
    AbortSignal.timeout(ctx.bind?.acceptTimeout ?? 60_000),
    s.signal,
  ]);
  try {
    incoming = await acceptPeer(listener, request, {
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
    if (!s.aborted) await writeAll(conn, failureReply(s, s.reply)).catch(() => {});
    throw error;
  }
  s.own(incoming);
  const from = netAddr(incoming.remoteAddr);
  s.resolved = joinHostPort(from.host, from.port);
  s.type = relayType(s.clientFamily, from.family);
  await writeAll(conn, addressReply(from.host, from.port));
  return relayTo(c, incoming, client);
}

async function udpCommand(c: CommandCall): Promise<Started> {
  const { s, ctx, request, conn } = c;
  const local = netAddr(conn.localAddr);
  // DST.ADDR/DST.PORT name the client's expected source, never a destination.
  const expected = normalizeIp(request.address.host);
  const port = expected && expected.host !== "0.0.0.0" && expected.host !== "::" ? request.port : 0;
  const socket = await bindUdp(local.family, local.host, ctx.udp?.portRange);
  const association = new Association(
    socket,
    { host: s.client.hostname, port },
    { outbound: ctx.outbound, nameCacheTtl: ctx.udp?.nameCacheTtl },
    {
      resolve: (name, p) => destinationAddresses(name, p, "udp", s, ctx),
      allowed: async (host, p, family) =>
        allowedFamilies(ctx.family).includes(family) &&
        (ctx.rules
          ? (await decide(ctx, s, "udp", host, p)).action === "allow"
          : !(loopbackGuard(ctx, s) && isLocalTarget(host))),
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
  await c.succeed(advertised, socket.address().port);
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

function decide(
  ctx: SessionContext,
  s: Session,
  command: RuleCommand,
  host: string,
  port: number,
  signal: AbortSignal = s.signal,
): Promise<RuleDecision> {
  const decision = ctx.rules!({
    client: { host: s.client.hostname, port: s.client.port },
    user: s.user,
    command,
    destination: { host, port },
  });
  return decision instanceof Promise ? raceSignal(decision, signal) : Promise.resolve(decision);
}

/**
 * Without rules, everything is allowed except one thing: a client from
 * another host may not reach this host's own loopback services (the admin
 * API, a database...) through the gateway. Rules, once configured, decide
 * alone.
 */
function loopbackGuard(ctx: SessionContext, s: Session): boolean {
  return !ctx.rules && !s.clientLoopback;
}

/** `0.0.0.0` or `::`: this host, as a destination. */
function isUnspecified(ip: string): boolean {
  return ip === "0.0.0.0" || ip === "::";
}

/** A loopback or unspecified address, in any literal form (`::ffff:0.0.0.0` too). */
function isLocalTarget(ip: string): boolean {
  const n = normalizeIp(ip);
  return n !== null && (isLoopbackIp(n) || isUnspecified(n.host));
}

function loopbackRefused(host: string, port: number): GatewayError {
  return new GatewayError(
    Reply.NOT_ALLOWED,
    `${joinHostPort(host, port)}: loopback destinations are refused to clients from other ` +
      `hosts unless rules allow them`,
  );
}

/**
 * The addresses a requested destination stands for, in Happy Eyeballs order:
 * rules checked on the name and on each address, the family policy applied,
 * names resolved by the gateway, IP literals (also in a DOMAINNAME, RFC 3089
 * section 3) used as they are.
 */
async function destinationAddresses(
  host: string,
  port: number,
  command: RuleCommand,
  s: Session,
  ctx: SessionContext,
  signal: AbortSignal = s.signal,
): Promise<ResolvedAddress[]> {
  const literal = normalizeIp(host);
  // Rules see the requested name first; a name that only the default denies
  // may still be allowed by an address rule, so it is resolved before refusing.
  const byName = ctx.rules ? await decide(ctx, s, command, host, port, signal) : undefined;
  if (byName?.action === "deny" && (literal || byName.rule !== undefined)) {
    throw new GatewayError(Reply.NOT_ALLOWED, `${host}:${port} not allowed by ruleset`);
  }
  const families = allowedFamilies(ctx.family);
  const guard = command !== "bind" && loopbackGuard(ctx, s);
  if (literal) {
    if (guard && (isLoopbackIp(literal) || isUnspecified(literal.host))) {
      throw loopbackRefused(host, port);
    }
    if (!families.includes(literal.family)) {
      throw new GatewayError(
        Reply.ADDRESS_TYPE_NOT_SUPPORTED,
        `IPv${literal.family} destinations are disabled by family policy ${ctx.family}`,
      );
    }
    return [{ address: literal.host, family: literal.family }];
  }
  ctx.stats.dnsLookups++;
  const found = await raceSignal(ctx.resolver(host, { signal, families }), signal).catch(
    (error) => {
      ctx.stats.dnsFailures++;
      throw error;
    },
  );
  // Whatever the resolver (a nameserver's AAAA answer, a hook of the
  // embedder's), the guard, the rules, the family policy and the dialer see
  // canonical literals with their real family: `::ffff:0.0.0.0` is the IPv4
  // `0.0.0.0` (which Linux dials as this host), and a non-address is dropped.
  const canonical: ResolvedAddress[] = [];
  for (const a of found) {
    const ip = normalizeIp(a.address);
    if (ip) canonical.push({ address: ip.host, family: ip.family });
  }
  let addresses = orderAddresses(canonical, ctx.family);
  if (addresses.length === 0) {
    throw new ResolveError(host, `no address of a family allowed by policy ${ctx.family}`);
  }
  if (guard) {
    addresses = addresses.filter((a) => !isLocalTarget(a.address));
    if (addresses.length === 0) throw loopbackRefused(host, port);
  }
  if (byName) {
    const allowed = [];
    for (const a of addresses) {
      const byAddress = await decide(ctx, s, command, a.address, port, signal);
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
  return addresses;
}

function connectTarget(
  request: SocksRequest,
  s: Session,
  ctx: SessionContext,
): Promise<RelayConn> {
  const { host } = request.address;
  const { port } = request;
  return underConnectDeadline(s, ctx, async (signal) => {
    const chain = ctx.routes?.({
      client: { host: s.client.hostname, port: s.client.port },
      user: s.user,
      command: "connect",
      destination: { host, port },
    });
    if (chain) {
      // Routed: the rules see the name; the last upstream gateway resolves it.
      if (ctx.rules && (await decide(ctx, s, "connect", host, port, signal)).action === "deny") {
        throw new GatewayError(Reply.NOT_ALLOWED, `${host}:${port} not allowed by ruleset`);
      }
      s.route = describeChain(chain);
      return await raceConnection(connectVia(host, port, { via: chain, signal }), signal);
    }
    const addresses = await destinationAddresses(host, port, "connect", s, ctx, signal);
    return await happyEyeballs(addresses, port, {
      dial: ctx.dialer,
      delay: ctx.happyEyeballsDelay,
      signal,
      localAddress: ctx.outbound,
    });
  });
}

/**
 * Runs `work` under the connect timeout: one controller for all of it
 * (resolving, rules, dialing), which the gateway's sweeper aborts at the
 * deadline with a {@linkcode ConnectTimeoutError} (reply 4), and which the
 * session's end aborts too. A session that ended before this point (cut by
 * the operator or by shutdown while its request was already buffered) starts
 * no work: {@linkcode Session.abort} only reaches work that is under way.
 *
 * @example
 * ```ts ignore
 * const conn = await underConnectDeadline(s, ctx, (signal) => dial(target, { signal }));
 * ```
 */
export async function underConnectDeadline<T>(
  s: Session,
  ctx: Pick<SessionContext, "connectTimeout">,
  work: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  if (s.aborted) throw new Error(`session ended before connecting: ${s.closeReason}`);
  const controller = new AbortController();
  const { signal } = controller;
  s.pending = controller;
  s.connectDeadline = performance.now() + ctx.connectTimeout;
  try {
    return await work(signal);
  } catch (error) {
    if (signal.reason instanceof ConnectTimeoutError && !s.aborted) throw signal.reason;
    throw error;
  } finally {
    s.pending = undefined;
    s.connectDeadline = 0;
  }
}
