/**
 * The gateway: listeners on several addresses, an accept loop that survives
 * per-connection errors, session bookkeeping, timeouts and shutdown.
 *
 * @module
 */

import { splitHostPort } from "../protocol/address.ts";
import { replyText } from "../protocol/constants.ts";
import { type Authenticator, staticUsers, type User } from "../policy/auth.ts";
import { compileRules, type RuleConfig } from "../policy/rules.ts";
import { enabled, type GatewayLogger, libraryLogger } from "../log.ts";
import { defaultDialer, type Dialer } from "./dialer.ts";
import {
  type FamilyPolicy,
  type Nameserver,
  nameserverResolver,
  type Resolver,
  systemResolver,
} from "./resolver.ts";
import { type GatewayStats, newStats } from "./stats.ts";
import { HandshakeGate } from "./admission.ts";
import { LiveSet } from "./live_set.ts";
import { ConnectTimeoutError } from "./errors.ts";
import type { BindServerOptions } from "./bind.ts";
import type { UdpServerOptions } from "./udp.ts";
import { compileRoutes, type RouteConfig, type RouteTable } from "./routes.ts";
import {
  commandName,
  type Protocol,
  PROTOCOLS,
  type RelayType,
  type RulesHook,
  Session,
  type SessionContext,
} from "./session.ts";
import { runSession } from "./front_door.ts";
import { Safety, type SafetyOptions } from "./safety.ts";
import { compileProxyProtocol } from "./proxy_header.ts";
import { type BandwidthOptions, Shaping } from "./shaping.ts";
import { formatAddr, type ListenAddress, Listeners, type Listening } from "./listener.ts";

export { type ListenAddress, ListenError } from "./listener.ts";

/** Timeouts in milliseconds; 0 disables the idle timeout. */
export interface Timeouts {
  /** From accept to a complete request. Default 10 s. */
  handshake?: number;
  /**
   * Resolution plus all connection attempts. Default 10 s. Checked every
   * tenth of it (at most every second, at least every 25 ms), so it fires up
   * to that much late.
   */
  connect?: number;
  /** A relay with no traffic either way is closed after this. Default 5 min. */
  idle?: number;
}

/** Options for {@linkcode serve}. Every field is optional. */
export interface ServeOptions {
  /** Where to listen. Default `[::1]:1080` and `127.0.0.1:1080`. */
  listen?: readonly (string | ListenAddress)[];
  /**
   * The protocols every listener serves unless its entry names its own:
   * any of `"socks5"`, `"socks4"` (SOCKS4 and 4a) and `"http"` (an HTTP
   * proxy: CONNECT tunnels and forwarded `http://` requests), told apart by
   * the client's first byte. Default all three.
   */
  protocols?: readonly Protocol[];
  /** Users for RFC 1929 authentication; when given, NO AUTH is refused. */
  users?: readonly User[];
  /** Authenticator hook; overrides `users`. */
  authenticator?: Authenticator;
  /** Resolver hook. Default: the system resolver, or `nameservers` when given. */
  resolver?: Resolver;
  /** DNS servers to query instead of the system resolver. */
  nameservers?: readonly Nameserver[];
  /** Outbound family policy. Default `"auto"`. */
  family?: FamilyPolicy;
  /** Happy Eyeballs connection attempt delay in ms. Default 250. */
  happyEyeballsDelay?: number;
  /** Dialer hook. Default: `Deno.connect` (or `node:net` with a source address). */
  dialer?: Dialer;
  /** Source address of outbound connections, per destination family. */
  outbound?: { ipv4?: string; ipv6?: string };
  /** Access rules (first match wins) or a rules hook. Default: allow all. */
  rules?: readonly RuleConfig[] | RulesHook;
  /** Timeouts. */
  timeouts?: Timeouts;
  /**
   * Gateway-side chaining (RFC 3089 section 4): destinations that match a
   * route go through its upstream SOCKS5 chain; the rest go direct.
   */
  routes?: readonly RouteConfig[] | RouteTable;
  /** BIND: accept timeout, and whether only the named peer may connect. */
  bind?: BindServerOptions;
  /** UDP ASSOCIATE: advertised address, relay port range, name cache. */
  udp?: UdpServerOptions;
  /**
   * The PROXY protocol (v1 and v2) from these balancers: their connections
   * must start with a header, whose source becomes the client. Others are
   * served as usual, and closed if they send a header. Default off.
   */
  proxyProtocol?: { trusted: readonly string[] };
  /**
   * Bandwidth per client address and per user, in bytes a second with a
   * burst, each direction limited on its own; a relay over it is slowed, not
   * closed. A reload starts the buckets afresh. Default none.
   */
  bandwidth?: BandwidthOptions;
  /** Maximum concurrent sessions; further clients are closed at once. Default 8192 (2 fds a relay). */
  maxSessions?: number;
  /**
   * Maximum sessions in their handshake at once; further clients wait in the
   * kernel's accept queue, served in arrival order. A handshake stops counting
   * once it replies or ends, or after 5 ms (50 ms while the gateway is busy),
   * so slow clients and distant destinations cannot stall accepting.
   * 0 turns the limit off. Default 32.
   */
  maxHandshakes?: number;
  /** Logger hook. Default: LogTape category `["dualsocks"]`. */
  logger?: GatewayLogger;
  /**
   * Bind the listeners with `SO_REUSEPORT`, so that several gateway
   * processes on this host can listen on the same port and the kernel
   * spreads new clients among them. Needs Deno's `--unstable-net` flag
   * (without it, binding throws a {@linkcode ListenError} that says so).
   * Default `false`. Applies to listeners bound from then on.
   */
  reusePort?: boolean;
  /**
   * This instance's name in the admin API (`instance` in `/api/v1/stats`,
   * the `dualsocks_instance_info` metric). Default `HOSTNAME/PID`, or `PID`
   * alone without `--allow-sys=hostname`. Set at start; a reload keeps it.
   */
  instance?: string;
  /**
   * Protected mode, brute-force lockout and session limits per client and
   * per user (see `safety.ts`). Default: protected mode on, lockout on, no
   * limits.
   */
  safety?: SafetyOptions;
}

/** A live session, as reported by {@linkcode Gateway.sessions}. */
export interface SessionInfo {
  /** Unique within this gateway. */
  id: number;
  /** `HOST:PORT` of the client. */
  client: string;
  /** The authenticated user, if any. */
  user?: string;
  /** The front door: `"socks5"`, `"socks4"` or `"http"`, once the first byte is read. */
  protocol?: Protocol;
  /** `"connect"`, `"bind"` or `"udp"`, once the request is read. */
  command?: string;
  /** The requested destination `HOST:PORT`. */
  destination?: string;
  /** The address actually connected to. */
  resolved?: string;
  /** RFC 3089 type A-D, once connected. */
  type?: RelayType;
  /** Where the session is. */
  phase: string;
  /** Bytes client -> destination. */
  bytesUp: number;
  /** Bytes destination -> client. */
  bytesDown: number;
  /** Start time, ms since the epoch. */
  startedAt: number;
}

/** A running gateway, returned by {@linkcode serve}. */
export interface Gateway {
  /** The bound addresses (real ports when port 0 was asked for); a reload changes them. */
  readonly addrs: Deno.NetAddr[];
  /** Resolves when the gateway has shut down and every session has ended. */
  readonly finished: Promise<void>;
  /** Counters since start. */
  readonly stats: GatewayStats;
  /** Protected mode, refusals by category, lockouts and limits (`safety.ts`). */
  readonly safety?: Safety;
  /** Start time, ms since the epoch. */
  readonly startedAt: number;
  /** `true` once {@linkcode Gateway.shutdown} has been called: not ready for new clients. */
  readonly draining: boolean;
  /** This instance's name, e.g. `gw1.example/4242`; see {@linkcode ServeOptions.instance}. */
  readonly instance: string;
  /** A snapshot of the live sessions, oldest first. */
  sessions(): SessionInfo[];
  /**
   * Cuts one session now: closes both of its sockets (the client sees EOF)
   * and logs `reason` as its close reason. Returns `false` when no live
   * session has this id.
   *
   * @example
   * ```ts ignore
   * const [first] = gateway.sessions();
   * if (first) gateway.closeSession(first.id, "closed by the operator");
   * ```
   */
  closeSession(id: number, reason?: string): boolean;
  /**
   * Applies new options to new sessions, without touching the sessions that
   * are running (they keep the users, rules, resolver and timeouts they
   * started with). Listeners are compared by address: the new ones are bound
   * first, and if one cannot be bound the reload rejects with a
   * {@linkcode ListenError} and nothing changes; then the listeners no longer
   * listed are closed. `options` replaces the whole previous set (an omitted
   * hook falls back to its default), except `logger`, which is kept. The
   * limits apply at once: `maxSessions` to the next client, `maxHandshakes`
   * to the handshakes already under way. Reloads run one at a time; a reload
   * during shutdown rejects.
   *
   * @example
   * ```ts ignore
   * await gateway.reload({ listen: ["127.0.0.1:1081"], maxSessions: 64 });
   * ```
   */
  reload(options: ServeOptions): Promise<void>;
  /**
   * Stops accepting, ends sessions still in their handshake, lets relays run
   * for up to `grace` ms (default 10 s), then closes what is left.
   *
   * With `drainDelay` (ms, default 0), readiness turns 503 at once but the
   * listeners keep accepting and serving for that long first, so that a
   * load balancer polling `/readyz` stops sending clients before the port
   * closes; sessions still in their handshake or connecting when it closes
   * are then let finish within the grace instead of being ended. A later call
   * with a shorter grace (a second signal) also ends the drain delay.
   *
   * @example
   * ```ts ignore
   * await gateway.shutdown({ grace: 30_000, drainDelay: 2_000 });
   * ```
   */
  shutdown(options?: { grace?: number; drainDelay?: number }): Promise<void>;
}

/** `HOSTNAME/PID`, or `PID` alone when the process may not read the host name. */
function defaultInstance(): string {
  try {
    if (Deno.permissions.querySync({ name: "sys", kind: "hostname" }).state === "granted") {
      return `${Deno.hostname()}/${Deno.pid}`;
    }
  } catch { /* no permission API: fall back */ }
  return String(Deno.pid);
}

/** The embedded default: loopback only, both families. */
export const DEFAULT_LISTEN: readonly string[] = ["[::1]:1080", "127.0.0.1:1080"];

/** What new sessions get; a reload swaps it, running sessions keep theirs. */
interface Settings {
  ctx: SessionContext;
  timeouts: Required<Timeouts>;
  maxSessions: number;
  maxHandshakes: number;
}

/** Per-gateway state that every generation of settings shares. */
interface Shared {
  stats: GatewayStats;
  localAddressToward: (peer: string) => string | undefined;
  handshakeDone: (id: number) => void;
  /** Protected mode, unwanted destinations, loops, lockout, limits: one per gateway. */
  safety: Safety;
}

function settingsFrom(options: ServeOptions, shared: Shared): Settings {
  const timeouts = {
    handshake: options.timeouts?.handshake ?? 10_000,
    connect: options.timeouts?.connect ?? 10_000,
    idle: options.timeouts?.idle ?? 300_000,
  };
  const rules = options.rules === undefined
    ? undefined
    : typeof options.rules === "function"
    ? options.rules
    : options.rules.length > 0
    ? compileRules([...options.rules])
    : undefined;
  const authenticator = options.authenticator ??
    (options.users?.length ? staticUsers(options.users) : undefined);
  const ruleConfigs = Array.isArray(options.rules) ? options.rules as RuleConfig[] : undefined;
  shared.safety.configure(options.safety ?? {}, {
    authenticated: authenticator !== undefined,
    rules: typeof options.rules === "function" ? "hook" : ruleConfigs,
  });
  const ctx: SessionContext = {
    authenticator,
    rules,
    ruleConfigs,
    resolver: options.resolver ??
      (options.nameservers?.length ? nameserverResolver(options.nameservers) : systemResolver),
    family: options.family ?? "auto",
    dialer: options.dialer ?? defaultDialer,
    happyEyeballsDelay: options.happyEyeballsDelay ?? 250,
    connectTimeout: timeouts.connect,
    outbound: options.outbound ?? {},
    bind: options.bind,
    udp: options.udp,
    proxyProtocol: compileProxyProtocol(options.proxyProtocol),
    shaping: options.bandwidth?.perClient || options.bandwidth?.perUser
      ? new Shaping(options.bandwidth)
      : undefined,
    routes: typeof options.routes === "function"
      ? options.routes
      : options.routes?.length
      ? compileRoutes(options.routes)
      : undefined,
    ...shared,
  };
  return {
    ctx,
    timeouts,
    maxSessions: options.maxSessions ?? 8192,
    maxHandshakes: options.maxHandshakes ?? 32,
  };
}

/** How often the sweeper must run to honour these timeouts. */
function tickFor(t: Required<Timeouts>): number {
  return Math.max(25, Math.min(1000, t.handshake / 4, t.connect / 10, (t.idle || Infinity) / 4));
}

/**
 * Starts a gateway. Binding happens before `serve` returns, so a taken or
 * invalid address throws a {@linkcode ListenError} and nothing is left open.
 *
 * @example
 * ```ts ignore
 * import { serve } from "./gateway.ts";
 * const gw = serve({ listen: ["127.0.0.1:0", "[::1]:0"] });
 * console.log(gw.addrs);
 * await gw.shutdown();
 * ```
 */
export function serve(options: ServeOptions = {}): Gateway {
  const log = options.logger ?? libraryLogger("gateway");
  const stats = newStats();
  // BIND listens where a live relay to the same peer already leaves from.
  const localAddressToward = (peer: string) => {
    return sessions.find((s) =>
      s.localAddress !== undefined && s.resolved !== undefined &&
      splitHostPort(s.resolved)?.host === peer
    )?.localAddress;
  };
  const gate = new HandshakeGate(0);
  const safety = new Safety(log, () => listeners.addrs);
  const shared: Shared = {
    stats,
    localAddressToward,
    handshakeDone: (id) => gate.release(id),
    safety,
  };
  let settings = settingsFrom(options, shared);
  gate.limit = settings.maxHandshakes;
  const startedAt = Date.now();

  const sessions = new LiveSet<Session>();
  const instance = options.instance ?? defaultInstance();
  let nextId = 1;
  let stopping = false;
  /** Readiness is 503 (set when shutdown starts; `stopping` follows the drain delay). */
  let draining = false;
  let lastRejectLog = 0;
  let drained: (() => void) | null = null;

  // One timer sweeps every session for the handshake, connect and idle timeouts.
  const sweep = () => {
    const now = performance.now();
    for (const s of sessions.snapshot()) {
      const t = s.timeouts ?? settings.timeouts;
      if (s.phase === "handshake") {
        if (now - s.lastActive > t.handshake) s.abort("handshake timeout");
      } else if (s.connectDeadline && now > s.connectDeadline) {
        s.connectDeadline = 0;
        s.pending?.abort(new ConnectTimeoutError(s.destination ?? "?", t.connect));
      } else if (s.phase === "relay" && t.idle > 0) {
        if (s.active) {
          s.active = false;
          s.lastActive = now;
        } else if (now - s.lastActive > t.idle) s.abort("idle timeout");
      }
    }
  };
  let tick = Infinity;
  let sweeper: ReturnType<typeof setInterval> | undefined;
  /** Runs the sweeper at least as often as `timeouts` need (a reload may shorten them). */
  const sweepFor = (timeouts: Required<Timeouts>) => {
    const wanted = tickFor(timeouts);
    if (wanted >= tick) return;
    clearInterval(sweeper);
    tick = wanted;
    const timer = setInterval(sweep, tick);
    Deno.unrefTimer(timer);
    sweeper = timer;
  };
  sweepFor(settings.timeouts);

  const finish = (s: Session) => {
    sessions.delete(s);
    safety.release(s);
    gate.release(s.id);
    if (s.type) {
      stats.relaysByType[s.type]++;
      stats.bytesByType[s.type].up += s.bytesUp;
      stats.bytesByType[s.type].down += s.bytesDown;
    }
    if (s.reply !== undefined) stats.replies[s.reply] = (stats.replies[s.reply] ?? 0) + 1;
    if (enabled(log.info)) logSession(s);
    if (stopping && sessions.size === 0) drained?.();
  };

  /** The one line per session, at info level. */
  const logSession = (s: Session) => {
    const durationMs = Date.now() - s.startedAt;
    const props = {
      id: s.id,
      client: formatAddr(s.client),
      user: s.user ?? "-",
      protocol: s.protocol ?? "-",
      command: s.command === undefined ? "-" : commandName(s.command),
      destination: s.destination ?? "-",
      resolved: s.resolved ?? "-",
      type: s.type ?? "-",
      reply: s.reply === undefined ? "-" : `${s.reply} (${replyText(s.reply)})`,
      bytesUp: s.bytesUp,
      bytesDown: s.bytesDown,
      durationMs,
      reason: s.closeReason ?? "closed",
    };
    log.info(
      "session {id} {type} {protocol} {client} user={user} {command} {destination} -> {resolved} reply={reply} up={bytesUp} down={bytesDown} {durationMs}ms: {reason}",
      props,
    );
  };

  const handle = (conn: Deno.TcpConn, from: Listening) => {
    const { ctx, timeouts, maxSessions } = settings;
    if (stopping || sessions.size >= maxSessions) {
      stats.sessionsRejected++;
      conn.close();
      const now = performance.now();
      if (!stopping && now - lastRejectLog > 1000) {
        lastRejectLog = now;
        log.warn("session limit {maxSessions} reached: closing new clients", { maxSessions });
      }
      return;
    }
    conn.setNoDelay(true);
    const s = new Session(nextId++, conn);
    s.lastActive = s.acceptedAt;
    sessions.add(s);
    gate.admit(s.id);
    s.timeouts = timeouts;
    stats.sessionsTotal++;
    runSession(s, { conn, ctx, protocols: from.protocols, onEnd: () => finish(s) });
  };

  const listeners = new Listeners({ onConn: handle, gate, stats, log });
  listeners.reusePort = options.reusePort ?? false;
  listeners.open(options.listen ?? DEFAULT_LISTEN, options.protocols ?? PROTOCOLS);
  const currentAddrs = () => listeners.addrs;

  const reload = (next: ServeOptions): void => {
    if (stopping) {
      throw new Error("cannot reload: expected a running gateway, found it shutting down");
    }
    const nextSettings = settingsFrom(next, shared);
    listeners.reusePort = next.reusePort ?? false;
    const { added, removed } = listeners.apply(
      next.listen ?? DEFAULT_LISTEN,
      next.protocols ?? PROTOCOLS,
    );
    settings = nextSettings;
    gate.limit = nextSettings.maxHandshakes;
    sweepFor(nextSettings.timeouts);
    log.info("reloaded: listening on {addrs} (added {added}, removed {removed})", {
      addrs: currentAddrs().map(formatAddr).join(" "),
      added: added.map((l) => formatAddr(l.listener.addr)).join(" ") || "none",
      removed: removed.map((l) => formatAddr(l.listener.addr)).join(" ") || "none",
    });
  };

  let finishedResolve!: () => void;
  const finished = new Promise<void>((r) => (finishedResolve = r));
  let shutdownPromise: Promise<void> | null = null;
  /** Ends the grace period early; set while it runs. */
  let endGrace: (() => void) | null = null;
  /** The shortest grace any shutdown call asked for. */
  let graceLimit = Infinity;
  /** Ends the drain delay early; set while it runs. */
  let endDrain: (() => void) | null = null;
  const waitDrained = (ms?: number) =>
    new Promise<void>((resolve) => {
      if (sessions.size === 0) return resolve();
      const timer = ms === undefined ? undefined : setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        if (drained === done) drained = null;
        if (endGrace === done) endGrace = null;
        resolve();
      }
      drained = done;
      if (ms !== undefined) endGrace = done;
    });

  const shutdown = (opts: { grace?: number; drainDelay?: number } = {}): Promise<void> => {
    const grace = opts.grace ?? 10_000;
    if (shutdownPromise) {
      // A later call with a shorter grace (a second SIGTERM) cuts the wait short.
      if (grace < graceLimit) {
        graceLimit = grace;
        endDrain?.();
        const cut = endGrace;
        if (cut) setTimeout(cut, grace);
      }
      return shutdownPromise;
    }
    graceLimit = grace;
    draining = true;
    const drainDelay = opts.drainDelay ?? 0;
    shutdownPromise = (async () => {
      if (drainDelay > 0) {
        // Readiness is 503 now; keep serving until the balancer has noticed.
        log.info("draining: readiness 503, still accepting for {drainDelay} ms", { drainDelay });
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, drainDelay);
          function done() {
            clearTimeout(timer);
            endDrain = null;
            resolve();
          }
          endDrain = done;
        });
      }
      stopping = true;
      await listeners.close();
      // After a drain delay, a session accepted just before the close is let finish.
      const endHandshakes = drainDelay === 0 || graceLimit === 0;
      for (const s of sessions.snapshot()) {
        if (s.phase !== "relay" && endHandshakes) s.abort("shutdown");
      }
      if (sessions.size > 0) {
        log.info("waiting up to {grace} ms for {count} relays to finish", {
          grace: graceLimit,
          count: sessions.size,
        });
      }
      await waitDrained(graceLimit);
      for (const s of sessions.snapshot()) s.abort("shutdown");
      await waitDrained();
      clearInterval(sweeper);
      finishedResolve();
    })();
    return shutdownPromise;
  };

  log.info("listening on {addrs}", { addrs: currentAddrs().map(formatAddr).join(" ") });
  safety.explain(currentAddrs(), options.users);
  return {
    get addrs() {
      return currentAddrs();
    },
    finished,
    stats,
    safety,
    startedAt,
    get draining() {
      return draining;
    },
    instance,
    sessions: () =>
      sessions.snapshot().sort((a, b) => a.id - b.id).map((s) => ({
        id: s.id,
        client: formatAddr(s.client),
        user: s.user,
        protocol: s.protocol,
        command: s.command === undefined ? undefined : commandName(s.command),
        destination: s.destination,
        resolved: s.resolved,
        type: s.type,
        phase: s.phase,
        bytesUp: s.bytesUp,
        bytesDown: s.bytesDown,
        startedAt: s.startedAt,
      })),
    closeSession(id: number, reason = "closed by the operator") {
      const s = sessions.find((s) => s.id === id);
      if (!s) return false;
      s.abort(reason);
      return true;
    },
    reload: (next: ServeOptions) => {
      try {
        reload(next);
        return Promise.resolve();
      } catch (error) {
        return Promise.reject(error);
      }
    },
    shutdown,
  };
}
