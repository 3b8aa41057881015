/**
 * dualsocks: a SOCKS5 IPv6/IPv4 gateway, the mechanism of RFC 3089.
 *
 * An IPv6-only client reaches IPv4-only services (and the reverse) through a
 * dual-stack SOCKS5 server that terminates one connection per family and
 * relays between them. This module embeds that gateway: one options object,
 * sane defaults, and hooks (resolver, rules, dialer, authenticator, logger)
 * to replace any part without forking the server.
 *
 * @example Start a gateway on loopback, both families, any free port
 * ```ts ignore
 * import { serve } from "@dualsocks/dualsocks";
 *
 * const gateway = serve({ listen: ["[::1]:0", "127.0.0.1:0"] });
 * console.log(gateway.addrs); // the real ports
 * await gateway.shutdown({ grace: 1000 });
 * ```
 *
 * @example Replace the resolver: names only this gateway knows
 * ```ts ignore
 * import { serve } from "@dualsocks/dualsocks";
 *
 * const gateway = serve({
 *   listen: ["127.0.0.1:1080"],
 *   resolver: async (name) =>
 *     name === "v4only.test" ? [{ address: "192.0.2.80", family: 4 }] : [],
 * });
 * ```
 *
 * @module
 */

export {
  DEFAULT_LISTEN,
  type Gateway,
  type ListenAddress,
  ListenError,
  serve,
  type ServeOptions,
  type SessionInfo,
  type Timeouts,
} from "./src/server/gateway.ts";
export {
  type FamilyPolicy,
  type Nameserver,
  nameserverResolver,
  type ResolvedAddress,
  type ResolveOptions,
  type Resolver,
  systemResolver,
} from "./src/server/resolver.ts";
export {
  defaultDialer,
  type Dialer,
  type DialOptions,
  type DialTarget,
  type RelayConn,
} from "./src/server/dialer.ts";
export { type Protocol, PROTOCOLS, type RelayType, type RulesHook } from "./src/server/session.ts";
export { compileRoutes, type RouteConfig, type RouteTable } from "./src/server/routes.ts";
export type { BindServerOptions } from "./src/server/bind.ts";
export type { UdpServerOptions } from "./src/server/udp.ts";
export type { CommandName, GatewayStats, Histogram } from "./src/server/stats.ts";
export { ConnectTimeoutError, GatewayError, ResolveError } from "./src/server/errors.ts";
export { type Authenticator, type AuthInfo, staticUsers, type User } from "./src/policy/auth.ts";
export {
  Safety,
  type SafetyOptions,
  type SafetyStats,
  type SafetySubject,
} from "./src/server/safety.ts";
export type { SessionLimit } from "./src/policy/limits.ts";
export {
  type LockoutEntry,
  type LockoutOptions,
  type LoginFailure,
  type LoginGate,
  LoginLockout,
} from "./src/policy/lockout.ts";
export {
  combineDecisions,
  compileRules,
  type RuleCommand,
  type RuleConfig,
  type RuleContext,
  type RuleDecision,
} from "./src/policy/rules.ts";
export type { GatewayLogger } from "./src/log.ts";
export type { Family } from "./src/protocol/address.ts";
export type { Credentials } from "./src/protocol/codec.ts";
export { Reply, replyText } from "./src/protocol/constants.ts";
export {
  type Config,
  ConfigError,
  type ConfigUser,
  DEFAULT_CONFIG,
  formatConfig,
  type HostPort,
  type ListenEntry,
  loadConfig,
  type LockoutConfig,
  parseConfig,
} from "./src/config/config.ts";
export { optionsFromConfig } from "./src/config/options.ts";

// The Socks Lib: the client half of RFC 3089 (connect, chains, fake-IP
// name delegation, socksify, forward, BIND and UDP ASSOCIATE).
export * from "./src/client/mod.ts";
export { type ConfigDocument, configDocument, isLoopback } from "./src/config/config.ts";
export {
  type AdminHandler,
  type AdminHandlerOptions,
  createAdminHandler,
} from "./src/admin/handler.ts";
export {
  type GatewaySnapshot,
  gatewaySnapshot,
  METRICS_CONTENT_TYPE,
  renderMetrics,
  type TypeSnapshot,
} from "./src/admin/metrics.ts";
export { type BandwidthLimit, TokenBucket } from "./src/policy/bandwidth.ts";
export type { BandwidthOptions } from "./src/server/shaping.ts";
