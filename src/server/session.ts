/**
 * One client session and the request pipeline that every front door
 * (SOCKS5, SOCKS4/4a, HTTP) ends in: authentication, rules, resolution,
 * dialing, the relay. The front doors (`socks5.ts`, `socks4.ts`,
 * `http_proxy.ts`) only read their protocol's request and write its
 * replies; `front_door.ts` picks one from the first byte.
 *
 * @module
 */

import { type Family, isLoopbackIp, joinHostPort, normalizeIp } from "../protocol/address.ts";
import type { Slotted } from "./live_set.ts";
import type { Credentials } from "../protocol/codec.ts";
import { Command, Reply } from "../protocol/constants.ts";
import type { Authenticator } from "../policy/auth.ts";
import {
  combineDecisions,
  type RuleConfig,
  type RuleContext,
  type RuleDecision,
} from "../policy/rules.ts";
import type { Safety } from "./safety.ts";
import { type Dialer, happyEyeballs, type RelayConn } from "./dialer.ts";
import type { RuleCommand } from "../policy/rules.ts";
import { ConnectTimeoutError, describeError, GatewayError, ResolveError } from "./errors.ts";
import { type RelayLimits, type RelayOptions, type RelayStats, startRelay } from "./relay.ts";
import type { BindServerOptions } from "./bind.ts";
import type { UdpServerOptions } from "./udp.ts";
import type { ProxyProtocolPolicy } from "./proxy_header.ts";
import type { Shaped, Shaping } from "./shaping.ts";
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

/** The protocols a listener can speak, told apart by the client's first byte. */
export type Protocol = "socks5" | "socks4" | "http";

/** Every protocol, in the order they are documented. */
export const PROTOCOLS: readonly Protocol[] = ["socks5", "socks4", "http"];

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
  /** Bandwidth limits per client address and per user, for the relays. */
  shaping?: Shaping;
  /** The PROXY protocol: whose headers are read before the first protocol byte. */
  proxyProtocol?: ProxyProtocolPolicy;
  /** Protected mode, unwanted destinations, loops, lockout and limits (`safety.ts`). */
  safety?: Safety;
  /** The rules as configured, when given as a list: explicit allows of unwanted destinations. */
  ruleConfigs?: readonly RuleConfig[];
}

/**
 * A session's client address. A class rather than an object literal, like
 * the session's other long-lived parts: V8 allocates the objects of a
 * literal straight into the old generation once most of them have lived
 * long (thousands of idle relays), and from there a finished session's
 * literal keeps whatever young objects it points to alive through every
 * scavenge until the next full GC. V8 tracks that decision per literal (its
 * allocation site); objects made with `new` of a class are not tracked.
 */
class ClientAddr implements Deno.NetAddr {
  readonly transport = "tcp" as const;
  readonly hostname: string;
  readonly port: number;

  constructor(hostname: string, port: number) {
    this.hostname = hostname;
    this.port = port;
  }
}

function closeQuietly(conn: { close(): void }): void {
  try {
    conn.close();
  } catch { /* closed by its peer's error path */ }
}

/** The state of one session, readable while it runs. */
export class Session implements RelayStats, Slotted {
  readonly id: number;
  /** The client: the socket's peer, or the source of a trusted PROXY header ({@linkcode setClient}). */
  client!: Deno.NetAddr;
  clientFamily!: Family;
  /** The client is on this host's loopback. */
  clientLoopback!: boolean;
  readonly startedAt = Date.now();
  /** Position in the gateway's set of live sessions (see `live_set.ts`). */
  slot = -1;
  /** The timeouts (ms) the session started with: a reload does not change them. */
  timeouts?: { readonly handshake: number; readonly connect: number; readonly idle: number };
  /** `performance.now()` at accept, for the handshake latency. */
  readonly acceptedAt = performance.now();
  phase: "handshake" | "connect" | "relay" | "closed" = "handshake";
  /** The front door the client came through, once its first byte is read. */
  protocol?: Protocol;
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
  /** The limits this session holds (`safety.ts`), released when it ends. */
  limitKeys?: string[];
  /** Whether {@linkcode admit} has applied the session limits. */
  admitted = false;
  // The sockets to close, in fields rather than an array: see ClientAddr.
  #conn: { close(): void };
  #target?: { close(): void };
  #more?: { close(): void }[];
  #controller?: AbortController;

  constructor(id: number, conn: Deno.Conn) {
    this.id = id;
    this.setClient(conn.remoteAddr as Deno.NetAddr);
    this.#conn = conn;
  }

  /** Makes `addr` the session's client (a PROXY header's source), normalized. */
  setClient(addr: { hostname: string; port: number }): void {
    const ip = normalizeIp(addr.hostname);
    this.client = new ClientAddr(ip?.host ?? addr.hostname, addr.port);
    this.clientFamily = ip?.family ?? 4;
    this.clientLoopback = ip !== null && isLoopbackIp(ip);
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
    else if (this.#target === undefined) this.#target = conn;
    else (this.#more ??= []).push(conn);
  }

  /**
   * Stops tracking a socket the session closed itself (an HTTP upstream it
   * dropped), so that a long session does not keep every socket it used.
   */
  disown(conn: { close(): void }): void {
    if (this.#target === conn) this.#target = this.#more?.pop();
    else {
      const i = this.#more?.indexOf(conn) ?? -1;
      if (i >= 0) this.#more!.splice(i, 1);
    }
  }

  /** Ends the session now, once: records `reason`, aborts work, closes every socket once. */
  abort(reason: string): void {
    if (this.aborted) return;
    this.aborted = true;
    this.closeReason ??= reason;
    this.#controller?.abort(this.closeReason);
    this.pending?.abort(this.closeReason);
    closeQuietly(this.#conn);
    if (this.#target !== undefined) closeQuietly(this.#target);
    for (const c of this.#more ?? []) closeQuietly(c);
  }
}

/** Writes all of `bytes`. */
export async function writeAll(conn: RelayConn, bytes: Uint8Array): Promise<void> {
  // Replies are small: the first write nearly always takes them whole.
  if (bytes.length === 0) return;
  let off = await conn.write(bytes);
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}

/** A command that got as far as relaying: the promise of the relay's end. */
export type Started = { relaying: Promise<void> } | undefined;

/** Closes whatever is left of the session, once. */
export function end(s: Session): void {
  s.abort(s.closeReason ?? "closed");
  s.phase = "closed";
}

/**
 * Checks credentials with the gateway's authenticator, for every front door
 * alike (SOCKS5's RFC 1929 login, SOCKS4's USERID, HTTP's Basic
 * Proxy-Authorization). Counts a failure and records it as the close reason;
 * on success records the user. Resolves to whether the login succeeded.
 *
 * @example
 * ```ts ignore
 * if (!(await authenticate(s, ctx, { username, password }))) return end(s);
 * ```
 */
export async function authenticate(
  s: Session,
  ctx: SessionContext,
  creds: Credentials,
): Promise<boolean> {
  const check = () =>
    raceSignal(
      Promise.resolve(ctx.authenticator!(creds, { client: s.client, signal: s.signal })),
      s.signal,
    );
  const { ok, refused } = ctx.safety
    ? await ctx.safety.login(s, s.signal, check)
    : { ok: await check(), refused: undefined };
  if (!ok) {
    ctx.stats.authFailures++;
    s.closeReason = refused ?? `authentication failed for user "${creds.username}"`;
    return false;
  }
  s.user = creds.username;
  return true;
}

/**
 * Records a request once its front door has read it: command, destination,
 * the counters and the handshake latency. The session moves to "connect".
 */
export function requested(s: Session, ctx: SessionContext, command: number, dest: string): void {
  s.command = command;
  s.destination = dest;
  ctx.stats.sessionsByCommand[commandName(command)]++;
  observe(ctx.stats.handshakeSeconds, (performance.now() - s.acceptedAt) / 1000);
  s.phase = "connect";
}

/**
 * Starts relaying, beginning with what the client sent early (`early`). The
 * promise settles when the relay has ended, with `s.closeReason` set; it
 * never rejects.
 */
export function relayTo(
  s: Session,
  ctx: Pick<SessionContext, "shaping">,
  early: Uint8Array,
  client: RelayConn,
  peer: RelayConn,
): Started {
  s.phase = "relay";
  const shaped = ctx.shaping?.acquire(s.client.hostname, s.user);
  s.lastActive = performance.now(); // idle time counts from here, not from accept
  // One promise per session, settled by the relay's callback (no chain of
  // promises held by an idle relay).
  const relaying = new Promise<void>((resolve) => {
    const callbacks = new SessionRelay(s, shaped, resolve);
    if (early.length === 0) return startRelay(client, peer, callbacks);
    writeAll(peer, early).then(() => {
      s.bytesUp += early.length;
      startRelay(client, peer, callbacks);
    }, (error) => callbacks.onEnd(describeError(error)));
  });
  return { relaying };
}

/**
 * The relay's options and callbacks for one session, as one object with
 * methods: an idle relay holds it instead of an options object, three
 * closures and their context.
 */
class SessionRelay implements RelayOptions {
  readonly stats: Session;
  readonly limits: RelayLimits | undefined;
  #shaped: Shaped | undefined;
  #resolve: () => void;

  constructor(s: Session, shaped: Shaped | undefined, resolve: () => void) {
    this.stats = s;
    this.limits = shaped?.limits;
    this.#shaped = shaped;
    this.#resolve = resolve;
  }

  fail(why: string): void {
    this.stats.abort(why);
  }

  onEnd(reason: string): void {
    this.stats.closeReason ??= reason;
    this.#shaped?.release();
    this.#resolve();
  }
}

/** A socket address, normalized. */
export function netAddr(addr: Deno.Addr): { host: string; family: Family; port: number } {
  const a = addr as Deno.NetAddr;
  const ip = normalizeIp(a.hostname)!;
  return { host: ip.host, family: ip.family, port: a.port };
}

/**
 * Connects to the destination of a CONNECT-like request (SOCKS5 and SOCKS4
 * CONNECT, an HTTP CONNECT tunnel or a forwarded HTTP request): routes,
 * rules, resolution and Happy Eyeballs under the connect deadline, then
 * records the resolved address and the RFC 3089 type. The connection is
 * owned by the session (closed with it).
 *
 * @example
 * ```ts ignore
 * const target = await openConnection(s, ctx, "v4only.test", 80);
 * ```
 */
export async function openConnection(
  s: Session,
  ctx: SessionContext,
  host: string,
  port: number,
): Promise<RelayConn> {
  const started = performance.now();
  const target = await connectTarget(host, port, s, ctx);
  s.own(target);
  observe(ctx.stats.connectSeconds, (performance.now() - started) / 1000);
  const local = netAddr(target.localAddr);
  const remote = netAddr(target.remoteAddr);
  s.localAddress = local.host;
  s.resolved = s.route ? `via ${s.route}` : joinHostPort(remote.host, remote.port);
  s.type = relayType(s.clientFamily, remote.family);
  return target;
}

/** Asks the rules about one destination, bounded by `signal`. */
export function decide(
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
export function loopbackGuard(ctx: SessionContext, s: Session): boolean {
  return !ctx.rules && !s.clientLoopback;
}

/** `0.0.0.0` or `::`: this host, as a destination. */
function isUnspecified(ip: string): boolean {
  return ip === "0.0.0.0" || ip === "::";
}

/** A loopback or unspecified address, in any literal form (`::ffff:0.0.0.0` too). */
export function isLocalTarget(ip: string): boolean {
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
export async function destinationAddresses(
  host: string,
  port: number,
  command: RuleCommand,
  s: Session,
  ctx: SessionContext,
  signal: AbortSignal = s.signal,
): Promise<ResolvedAddress[]> {
  admit(s, ctx);
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
    const refused = command !== "bind" &&
      ctx.safety?.refusal(literal.host, port, { rules: ctx.ruleConfigs, decision: byName });
    if (refused) throw refused;
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
    let unsafe: GatewayError | null = null;
    for (const a of addresses) {
      const byAddress = await decide(ctx, s, command, a.address, port, signal);
      const decision = combineDecisions(byName, byAddress);
      if (decision.action !== "allow") continue;
      const refused = command !== "bind" &&
        ctx.safety?.refusal(a.address, port, { rules: ctx.ruleConfigs, decision });
      if (refused) unsafe ??= refused;
      else allowed.push(a);
    }
    if (allowed.length === 0) {
      throw unsafe ??
        new GatewayError(
          Reply.NOT_ALLOWED,
          `${host} resolves only to addresses not allowed by ruleset`,
        );
    }
    addresses = allowed;
  } else if (ctx.safety && command !== "bind") {
    // Checked after resolution; the dialer gets exactly the addresses checked here.
    const checked = addresses.map((a) => [a, ctx.safety!.refusal(a.address, port)] as const);
    addresses = checked.filter(([, refused]) => !refused).map(([a]) => a);
    if (addresses.length === 0) {
      throw new GatewayError(Reply.NOT_ALLOWED, `${host}: ${checked[0][1]!.message}`);
    }
  }
  return addresses;
}

/**
 * The first checks of every request, whatever its front door: protected
 * mode (clients beyond loopback refused when nothing names them), then,
 * once per session, the per-client and per-user session limits. Throws a
 * {@linkcode GatewayError} (reply 2) to refuse.
 *
 * @example
 * ```ts ignore
 * admit(s, ctx); // before resolving or dialing anything for s
 * ```
 */
export function admit(s: Session, ctx: SessionContext): void {
  const safety = ctx.safety;
  if (!safety) return;
  safety.checkClient(s);
  if (s.admitted) return;
  s.admitted = true;
  safety.admitClient(s);
  safety.admitUser(s);
}

function connectTarget(
  host: string,
  port: number,
  s: Session,
  ctx: SessionContext,
): Promise<RelayConn> {
  return underConnectDeadline(s, ctx, async (signal) => {
    admit(s, ctx);
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
