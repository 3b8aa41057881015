/**
 * A gateway (or any command that logs JSON lines to standard error) run as
 * a child process, its log records parsed as they come: for the tests that
 * signal, restart and pool whole processes.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import denoJson from "../../deno.json" with { type: "json" };
import { describePredicate, forEachLine, killQuietly, waitExit } from "../helpers.ts";

/** The repository root, with a trailing slash. */
export const ROOT: string = fileURLToPath(new URL("../../", import.meta.url));
/** The command line's entry point. */
export const MAIN: string = `${ROOT}main.ts`;
/** Default bound of every wait on a process. */
export const WAIT_MS = 20_000;

/** One JSON log line of the gateway (LogTape's JSON Lines formatter). */
export interface LogRecord {
  /** The message template, e.g. `"listening on {addrs}"`. */
  message: string;
  /** `INFO`, `WARNING`... */
  level: string;
  /** The template's values. */
  properties: Record<string, unknown>;
}

/**
 * The flags the compile task bakes into the binary: its `--allow-*`
 * permissions, with the config directory /etc/dualsocks replaced by `dir`,
 * and its `--v8-flags`, so that a test runs `main.ts` as the binary runs.
 *
 * @example
 * ```ts ignore
 * binaryFlags("/tmp/x"); // ["--allow-net", "--allow-read=/tmp/x", ..., "--v8-flags=..."]
 * ```
 */
export function binaryFlags(dir: string): string[] {
  const flags = runtimeFlags(denoJson.tasks.compile);
  if (!flags.some((f) => f.startsWith("--allow-"))) {
    throw new Error("expected --allow-* flags in the compile task, found none");
  }
  return flags.map((f) => f.replace("/etc/dualsocks", dir));
}

/**
 * The `--allow-*` and `--v8-flags` flags of a `deno run` or `deno compile`
 * command line (a task, a unit's ExecStart), in order.
 *
 * @example
 * ```ts ignore
 * runtimeFlags("deno run --allow-net --v8-flags=--x=1 main.ts"); // ["--allow-net", "--v8-flags=--x=1"]
 * ```
 */
export function runtimeFlags(command: string): string[] {
  return command.split(/\s+/).filter((f) => f.startsWith("--allow-") || f.startsWith("--v8-flags"));
}

/** A running child process whose standard error is read as JSON log lines. */
export interface LoggingProcess extends AsyncDisposable {
  /** The process. */
  readonly child: Deno.ChildProcess;
  /** Every stderr line so far. */
  readonly lines: string[];
  /** The lines that parsed as JSON log records. */
  readonly records: LogRecord[];
  /** The first record `pred` accepts; rejects when stderr ends first, or after `ms`. */
  waitFor(pred: (r: LogRecord) => boolean, ms?: number): Promise<LogRecord>;
  /** The exit status once it exits by itself (bounded), with its stderr read to the end. */
  status(ms?: number): Promise<Deno.CommandStatus>;
}

/**
 * Spawns `cmd args` with stderr piped and parsed.
 *
 * @example
 * ```ts ignore
 * await using gw = spawnLogging(Deno.execPath(), ["run", "-A", MAIN, "--log-format", "json"]);
 * await gw.waitFor((r) => r.message.startsWith("listening on"));
 * ```
 */
export function spawnLogging(
  cmd: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): LoggingProcess {
  const child = new Deno.Command(cmd, {
    args,
    cwd: options.cwd,
    env: options.env,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const lines: string[] = [];
  const records: LogRecord[] = [];
  const waiters: { pred: (r: LogRecord) => boolean; resolve: (r: LogRecord) => void }[] = [];
  const pump = forEachLine(child.stderr, (line) => {
    lines.push(line);
    let record: LogRecord;
    try {
      record = JSON.parse(line);
      if (typeof record?.message !== "string") return;
    } catch {
      return;
    }
    records.push(record);
    for (const w of [...waiters]) {
      if (w.pred(record)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(record);
      }
    }
  });
  const outputEnded = pump.then(() => {}, () => {});
  const waitFor = (pred: (r: LogRecord) => boolean, ms = WAIT_MS) => {
    const found = records.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise<LogRecord>((resolve, reject) => {
      const fail = (why: string) => {
        const i = waiters.indexOf(waiter);
        if (i < 0) return;
        waiters.splice(i, 1);
        clearTimeout(timer);
        reject(
          new Error(`waitFor(${describePredicate(pred)}): ${why}; stderr:\n${lines.join("\n")}`),
        );
      };
      const waiter = {
        pred,
        resolve: (r: LogRecord) => {
          clearTimeout(timer);
          resolve(r);
        },
      };
      const timer = setTimeout(() => fail(`no matching line within ${ms} ms`), ms);
      waiters.push(waiter);
      outputEnded.then(() => fail("the process's stderr ended (it exited)"));
    });
  };
  return {
    child,
    lines,
    records,
    waitFor,
    status: (ms = WAIT_MS) => waitExit(child, cmd, { ms, output: pump }),
    async [Symbol.asyncDispose]() {
      killQuietly(child, "SIGKILL");
      await waitExit(child, cmd, { ms: 5_000, output: pump }).catch(() => {});
    },
  };
}

/** `HOST:PORT` -> `{ hostname, port }` (brackets removed). */
export function addrOf(text: string): { hostname: string; port: number } {
  const m = /^\[?([^\]]+)\]?:(\d+)$/.exec(text);
  if (!m) throw new Error(`expected HOST:PORT, found "${text}"`);
  return { hostname: m[1], port: Number(m[2]) };
}
