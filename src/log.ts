/**
 * The logger the library writes to. The library never configures logging:
 * by default it logs through LogTape's `getLogger(["dualsocks", ...])`,
 * which is silent until the application (our `main.ts`, or yours) calls
 * LogTape's `configure()`. Embedding code may pass any object of this shape.
 *
 * @module
 */

import { getLogger } from "@logtape/logtape";

/** The logging hook: LogTape's `Logger` fits it, and so do thin adapters. */
export interface GatewayLogger {
  /** Detail for debugging. */
  debug(message: string, properties?: Record<string, unknown>): void;
  /** Normal operation: start, stop, one line per closed session. */
  info(message: string, properties?: Record<string, unknown>): void;
  /** Something an operator should look at. */
  warn(message: string, properties?: Record<string, unknown>): void;
  /** A failure. */
  error(message: string, properties?: Record<string, unknown>): void;
}

/** The library's default logger, under the LogTape category `["dualsocks", ...sub]`. */
export function libraryLogger(...sub: string[]): GatewayLogger {
  return getLogger(["dualsocks", ...sub]);
}

const LEVELS = { debug: 0, info: 1, warning: 2, error: 3 } as const;
const NOTHING = () => {};

/**
 * `false` when `method` is a level that {@linkcode withLevel} switched off,
 * so that a caller can skip building the properties too. Any other logger
 * method counts as enabled.
 *
 * @example
 * ```ts
 * import { enabled, libraryLogger, withLevel } from "./log.ts";
 * const logger = withLevel(libraryLogger("gateway"), "warning");
 * enabled(logger.info); // false
 * enabled(logger.warn); // true
 * ```
 */
export function enabled(method: GatewayLogger["info"]): boolean {
  return method !== NOTHING;
}

/**
 * Wraps `logger` so that calls below `level` return at once, before any
 * record is built: LogTape builds a whole record before it looks at the
 * level, and the gateway logs once per session.
 *
 * @example
 * ```ts
 * import { libraryLogger, withLevel } from "./log.ts";
 * const logger = withLevel(libraryLogger("gateway"), "warning");
 * logger.info("dropped without a record");
 * ```
 */
export function withLevel(logger: GatewayLogger, level: keyof typeof LEVELS): GatewayLogger {
  const min = LEVELS[level];
  return {
    debug: min <= 0 ? logger.debug.bind(logger) : NOTHING,
    info: min <= 1 ? logger.info.bind(logger) : NOTHING,
    warn: min <= 2 ? logger.warn.bind(logger) : NOTHING,
    error: logger.error.bind(logger),
  };
}
