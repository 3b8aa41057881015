/**
 * Turns a validated {@linkcode Config} into {@linkcode ServeOptions}.
 *
 * @module
 */

import type { Config } from "./config.ts";
import type { ServeOptions } from "../server/gateway.ts";

/**
 * The gateway options a configuration file describes. Hooks (resolver,
 * dialer, authenticator, logger) are left to their defaults; set them on the
 * returned object to replace a part.
 *
 * @example
 * ```ts ignore
 * import { loadConfig, optionsFromConfig, serve } from "@dualsocks/dualsocks";
 * const gateway = serve(optionsFromConfig(await loadConfig("dualsocks.yaml")));
 * ```
 */
export function optionsFromConfig(config: Config): ServeOptions {
  return {
    listen: config.listen,
    protocols: config.protocols,
    users: config.users,
    nameservers: config.resolver.nameservers,
    family: config.resolver.family,
    happyEyeballsDelay: config.resolver.happyEyeballsDelay,
    outbound: config.outbound,
    rules: config.rules,
    timeouts: config.timeouts,
    maxSessions: config.limits.maxSessions,
    maxHandshakes: config.limits.maxHandshakes,
    routes: config.routes,
    bind: config.bind,
    udp: config.udp,
    proxyProtocol: config.proxyProtocol,
    reusePort: config.reusePort,
    instance: config.instanceName,
    bandwidth: config.limits.bandwidth,
    safety: {
      allowOpenRelay: config.allowOpenRelay,
      lockout: config.lockout?.threshold === 0 ? false : config.lockout && {
        threshold: config.lockout.threshold,
        baseDelay: config.lockout.delay,
        maxDelay: config.lockout.maxDelay,
        lockout: config.lockout.duration,
        window: config.lockout.duration,
        ipv6Prefix: config.lockout.ipv6Prefix,
      },
      perClient: config.limits.perClient,
      perUser: config.limits.perUser,
    },
  };
}
