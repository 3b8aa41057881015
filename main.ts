/**
 * The `dualsocks` command line: run the gateway, check a config file.
 *
 * ```sh
 * deno task start                                   # loopback, both families
 * deno task start --listen 127.0.0.1:1081 --log-format json
 * deno run --allow-net --allow-read=gw.yaml main.ts --config gw.yaml
 * deno run --allow-read=gw.yaml main.ts check-config gw.yaml
 * ```
 *
 * @module
 */

import { parseArgs } from "node:util";
import { configure, dispose } from "@logtape/logtape";
import denoJson from "./deno.json" with { type: "json" };
import {
  type Config,
  ConfigError,
  DEFAULT_CONFIG,
  formatConfig,
  type HostPort,
  isLoopback,
  loadConfig,
  parseHostPort,
} from "./src/config/config.ts";
import { createAdminHandler } from "./src/admin/handler.ts";
import { joinHostPort } from "./src/protocol/address.ts";
import { optionsFromConfig } from "./src/config/options.ts";
import { ListenError, serve } from "./src/server/gateway.ts";
import { libraryLogger, logDirectly, logFormatter, withLevel } from "./src/log.ts";
import { bufferedSink } from "./src/log_sink.ts";
import { forward } from "./src/client/forward.ts";
import { hashPasswordCommand } from "./src/cli/hash_password.ts";

const HELP = `dualsocks ${denoJson.version}: a SOCKS5 IPv6/IPv4 gateway (RFC 3089)

Usage:
  dualsocks [serve] [options]        run the gateway
  dualsocks check-config FILE        validate FILE and print the effective configuration
  dualsocks hash-password [--username NAME]
                                     read a password (without echo) and print the
                                     password_hash line for the users: section
  dualsocks forward --listen HOST:PORT --to HOST:PORT --via URL [--via URL]...
                                     a local TCP forwarder through a gateway (or a chain
                                     of gateways, in order), for programs that cannot
                                     be socksified; URL: socks5://[user:pass@]HOST:PORT

Options:
  -c, --config FILE         YAML configuration file (see README)
  -l, --listen HOST:PORT    listen address, repeatable; IPv6 in brackets: [::1]:1080
                            (replaces the file's listen list)
      --log-format FORMAT   text (default) or json (one JSON object per line)
      --log-level LEVEL     debug, info (default), warning or error
      --admin HOST:PORT|off admin API and status page (default 127.0.0.1:9080);
                            beyond loopback it needs admin.token in the file
  -h, --help                show this help
  -V, --version             show the version

Without --config and --listen it listens on [::1]:1080 and 127.0.0.1:1080.
Logs go to standard error. SIGINT or SIGTERM: readiness turns 503, stop
accepting (after shutdown.drain_delay, default 0), let relays finish for
shutdown.grace (default 10 s), then exit 0. The same signal again within 1 s
counts once (deno task forwards it); a later one closes every relay at once.
SIGHUP (or POST /api/v1/reload): re-read the file and apply it to new
sessions; a bad file is logged and the running configuration kept.
`;

/** Thrown for a wrong command line; printed with a pointer to --help. */
class UsageError extends Error {}

function parse(args: string[]) {
  try {
    return parseArgs({
      args,
      allowPositionals: true,
      strict: true,
      options: {
        config: { type: "string", short: "c" },
        listen: { type: "string", short: "l", multiple: true },
        "log-format": { type: "string" },
        "log-level": { type: "string" },
        admin: { type: "string" },
        to: { type: "string" },
        via: { type: "string", multiple: true },
        help: { type: "boolean", short: "h" },
        version: { type: "boolean", short: "V" },
      },
    });
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
}

type Parsed = ReturnType<typeof parse>;

/** The file's config (or the default) with the command line's overrides. */
async function effectiveConfig(values: Parsed["values"], file?: string): Promise<Config> {
  const base = file ? await loadConfig(file) : structuredClone(DEFAULT_CONFIG) as Config;
  const config: Config = structuredClone(base);
  if (values.listen?.length) {
    config.listen = values.listen.map((text) => {
      try {
        return parseHostPort(text);
      } catch (error) {
        throw new UsageError(`--listen: ${(error as Error).message}`);
      }
    });
  }
  const format = values["log-format"];
  if (format !== undefined) {
    if (format !== "text" && format !== "json") {
      throw new UsageError(`--log-format: expected text or json, found "${format}"`);
    }
    config.log.format = format;
  }
  const level = values["log-level"];
  if (level !== undefined) {
    if (!["debug", "info", "warning", "error"].includes(level)) {
      throw new UsageError(
        `--log-level: expected debug, info, warning or error, found "${level}"`,
      );
    }
    config.log.level = level as Config["log"]["level"];
  }
  const admin = values.admin;
  if (admin !== undefined) {
    if (admin === "off") {
      config.admin.listen = null;
    } else {
      try {
        config.admin.listen = parseHostPort(admin);
      } catch (error) {
        throw new UsageError(`--admin: ${(error as Error).message} or off`);
      }
    }
  }
  const adminAt = config.admin.listen;
  if (adminAt && !isLoopback(adminAt.host) && config.admin.token === undefined) {
    throw new UsageError(
      `--admin ${
        joinHostPort(adminAt.host, adminAt.port)
      }: an admin API beyond loopback needs a token; expected admin.token in the config file, found none`,
    );
  }
  return config;
}

const sameHostPort = (a: HostPort | null, b: HostPort | null) =>
  a === b || (a !== null && b !== null && a.host === b.host && a.port === b.port);

async function setUpLogging(config: Config): Promise<void> {
  // Batched writes to standard error: a log line never waits for a write, a
  // slow reader drops (and counts) lines instead of growing the queue, and
  // `dispose()` at shutdown writes what is queued.
  const stderr = bufferedSink(Deno.stderr, { formatter: logFormatter(config.log.format) });
  await configure({
    sinks: { stderr },
    loggers: [
      { category: ["dualsocks"], lowestLevel: config.log.level, sinks: ["stderr"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["stderr"] },
    ],
  });
  // The same, minus LogTape's dispatch, for the library's loggers made from here on
  // (`dispose()` still writes what the sink holds).
  logDirectly(stderr, config.log.level);
}

/**
 * A stop signal this soon (ms) after the first one counts as the same signal:
 * `deno task` forwards a signal sent to the process group a second time.
 */
const SIGNAL_ECHO_MS = 1000;

/** How long the admin API waits before it listens again after its server failed. */
const ADMIN_RESTART_MS = 1000;

/**
 * Serves the admin API, or logs why it cannot and returns null: the gateway
 * runs on without it. When the server fails while running (its accept loop
 * ends on an error such as EMFILE, which would otherwise reject unhandled and
 * end the process, relays and all), it is logged and served again on the same
 * address a second later, and again until that works or the gateway stops.
 */
function serveAdmin(
  config: Config,
  handler: (req: Request) => Promise<Response>,
  log: ReturnType<typeof libraryLogger>,
): { shutdown(): Promise<void> } | null {
  const listen = config.admin.listen;
  if (!listen) return null;
  const start = (port: number): Deno.HttpServer<Deno.NetAddr> =>
    Deno.serve({ hostname: listen.host, port, onListen() {} }, handler);
  let server: Deno.HttpServer<Deno.NetAddr>;
  try {
    server = start(listen.port);
  } catch (error) {
    log.error("cannot listen for the admin API on {addr}: {reason}; running without it", {
      addr: joinHostPort(listen.host, listen.port),
      reason: error instanceof Deno.errors.AddrInUse
        ? "address already in use"
        : (error as Error).message,
    });
    return null;
  }
  const addr = joinHostPort(server.addr.hostname, server.addr.port);
  const port = server.addr.port; // the same one again, also when the file says 0
  log.info("admin API on http://{addr}/", { addr });
  let stopped = false;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let failures = 0;
  const watch = (s: Deno.HttpServer<Deno.NetAddr>) => {
    s.finished.catch((error) => {
      if (stopped) return;
      log.error("admin API on {addr} failed: {reason}; listening again in {ms} ms", {
        addr,
        reason: (error as Error).message,
        ms: ADMIN_RESTART_MS,
      });
      retry();
    });
  };
  const retry = () => {
    const t = setTimeout(() => {
      timer = undefined;
      if (stopped) return;
      try {
        server = start(port);
      } catch (error) {
        // Say so once, not every second while the cause lasts.
        if (failures++ === 0) {
          log.error("admin API on {addr}: cannot listen again yet: {reason}; retrying", {
            addr,
            reason: (error as Error).message,
          });
        }
        return retry();
      }
      failures = 0;
      log.info("admin API on http://{addr}/ again", { addr });
      watch(server);
    }, ADMIN_RESTART_MS);
    Deno.unrefTimer(t);
    timer = t;
  };
  watch(server);
  return {
    shutdown() {
      stopped = true;
      clearTimeout(timer);
      return server.shutdown();
    },
  };
}

async function runGateway(
  values: Parsed["values"],
  file: string | undefined,
  initial: Config,
): Promise<number> {
  await setUpLogging(initial);
  const log = libraryLogger("main");
  let config = initial;
  const gateway = serve({
    ...optionsFromConfig(config),
    logger: withLevel(libraryLogger("gateway"), config.log.level),
  });

  // Reloads run one at a time: the file again, with the same command line overrides.
  let queue: Promise<void> = Promise.resolve();
  const reload = (source: string): Promise<void> => {
    const run = queue.then(async () => {
      const next = await effectiveConfig(values, file);
      if (!sameHostPort(next.admin.listen, config.admin.listen)) {
        log.warn("{source}: admin.listen changed; restart to apply it", { source });
        next.admin.listen = config.admin.listen;
      }
      const adminAt = next.admin.listen;
      if (adminAt && !isLoopback(adminAt.host) && next.admin.token === undefined) {
        throw new ConfigError({
          file: file ?? "(command line)",
          path: "admin.token",
          expected: "a token",
          found: "nothing",
          message: `admin.token: expected a token while the admin API listens on ${
            joinHostPort(adminAt.host, adminAt.port)
          } (not loopback), found none`,
        });
      }
      await gateway.reload(optionsFromConfig(next));
      if (JSON.stringify(next.log) !== JSON.stringify(config.log)) {
        log.warn("{source}: log settings changed; restart to apply them", { source });
        next.log = config.log;
      }
      config = next;
    }).then(
      () => log.info("{source}: reloaded {file}", { source, file: file ?? "the command line" }),
      (error) => {
        log.error("{source}: reload failed, keeping the running configuration: {error}", {
          source,
          error: (error as Error).message,
        });
        throw error;
      },
    );
    queue = run.catch(() => {});
    return run;
  };

  const admin = serveAdmin(
    config,
    createAdminHandler(gateway, {
      token: () => config.admin.token,
      config: () => config,
      reload: () => reload("POST /api/v1/reload"),
    }),
    log,
  );

  // The first SIGINT/SIGTERM drains; one more within SIGNAL_ECHO_MS of it is
  // the same signal again (`deno task` forwards a signal sent to the whole
  // process group, so the gateway gets it twice) and is ignored; a later one
  // closes every relay at once.
  let firstSignalAt: number | undefined;
  const onSignal = (signal: Deno.Signal) => {
    const now = performance.now();
    if (firstSignalAt === undefined) {
      firstSignalAt = now;
      const { grace, drainDelay = 0 } = config.shutdown;
      log.info("{signal}: shutting down, readiness 503, drain {drainDelay} ms, grace {grace} ms", {
        signal,
        grace,
        drainDelay,
      });
      gateway.shutdown({ grace, drainDelay });
    } else if (now - firstSignalAt < SIGNAL_ECHO_MS) {
      log.info("{signal} again within {ms} ms: the same signal, still draining", {
        signal,
        ms: SIGNAL_ECHO_MS,
      });
    } else {
      log.warn("{signal} again: closing every relay now", { signal });
      gateway.shutdown({ grace: 0 });
    }
  };
  const remove = onStopSignals(onSignal);
  const onHangUp = () => void reload("SIGHUP").catch(() => {/* logged */});
  if (Deno.build.os !== "windows") Deno.addSignalListener("SIGHUP", onHangUp);
  await gateway.finished;
  remove();
  if (Deno.build.os !== "windows") Deno.removeSignalListener("SIGHUP", onHangUp);
  if (admin) {
    // The admin API answered (readiness 503) during the grace period; now it goes too.
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([admin.shutdown(), new Promise((r) => (timer = setTimeout(r, 2000)))]);
    clearTimeout(timer);
  }
  log.info("stopped");
  await dispose(); // flush the log sink before the process exits
  return 0;
}

/** Calls `onSignal` on SIGINT and SIGTERM; returns a function that removes the listeners. */
function onStopSignals(onSignal: (signal: Deno.Signal) => void): () => void {
  const handlers = (["SIGINT", "SIGTERM"] as const).map((sig) => {
    const handler = () => onSignal(sig);
    Deno.addSignalListener(sig, handler);
    return [sig, handler] as const;
  });
  return () => {
    for (const [sig, handler] of handlers) Deno.removeSignalListener(sig, handler);
  };
}

async function runForward(values: Parsed["values"]): Promise<number> {
  const missing = !values.listen?.length
    ? "--listen HOST:PORT"
    : !values.to
    ? "--to HOST:PORT"
    : !values.via?.length
    ? "--via socks5://HOST:PORT"
    : null;
  if (missing) throw new UsageError(`forward: expected ${missing}, found none`);
  if (values.config) throw new UsageError("forward: --config is for the gateway, not forward");
  const config = await effectiveConfig({ ...values, listen: undefined });
  await setUpLogging(config);
  const log = libraryLogger("forward");
  let forwarder;
  try {
    forwarder = forward({
      listen: values.listen!,
      to: values.to!,
      via: values.via!,
      onError: (error, client) =>
        log.warn("{client}: {error}", {
          client: `${client.hostname}:${client.port}`,
          error: (error as Error).message,
        }),
    });
  } catch (error) {
    if (error instanceof TypeError) throw new UsageError(error.message);
    console.error(`dualsocks: forward: cannot listen: ${(error as Error).message}`);
    return 1;
  }
  log.info("forwarding {listen} to {to} via {via}", {
    listen: forwarder.addrs.map((a) => `${a.hostname}:${a.port}`).join(" "),
    to: values.to,
    via: values.via!.join(" -> "),
  });
  const remove = onStopSignals(() => forwarder.shutdown());
  await forwarder.finished;
  remove();
  await dispose();
  return 0;
}

/**
 * Runs the command line with `args` and resolves to the exit code.
 *
 * @example
 * ```ts ignore
 * import { main } from "./main.ts";
 * Deno.exit(await main(["check-config", "dualsocks.yaml"]));
 * ```
 */
export async function main(args: string[]): Promise<number> {
  if (args[0] === "hash-password") return await hashPasswordCommand(args.slice(1));
  try {
    const { values, positionals } = parse(args);
    if (values.help) {
      console.log(HELP);
      return 0;
    }
    if (values.version) {
      console.log(`dualsocks ${denoJson.version}`);
      return 0;
    }
    const [command = "serve", ...rest] = positionals;
    if (command === "check-config") {
      const file = rest[0] ?? values.config;
      if (!file || rest.length > 1) {
        throw new UsageError("check-config: expected exactly one FILE");
      }
      console.log(formatConfig(await effectiveConfig(values, file)));
      console.error(`${file}: ok`);
      return 0;
    }
    if (command === "forward" && rest.length === 0) return await runForward(values);
    if (values.to || values.via) {
      throw new UsageError("--to and --via belong to the forward command");
    }
    if (command !== "serve" || rest.length > 0) {
      throw new UsageError(`unknown command "${positionals.join(" ")}"`);
    }
    return await runGateway(values, values.config, await effectiveConfig(values, values.config));
  } catch (error) {
    if (error instanceof UsageError) {
      console.error(`dualsocks: ${error.message}\nRun "dualsocks --help" for usage.`);
      return 2;
    }
    if (error instanceof ConfigError || error instanceof ListenError) {
      console.error(`dualsocks: ${error.message}`);
      return 1;
    }
    throw error;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
