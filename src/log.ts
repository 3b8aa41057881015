/**
 * The logger the library writes to. The library never configures logging:
 * by default it logs through LogTape's `getLogger(["dualsocks", ...])`,
 * which is silent until the application (our `main.ts`, or yours) calls
 * LogTape's `configure()`. Embedding code may pass any object of this shape.
 *
 * @module
 */

import { getLogger, type LogRecord } from "@logtape/logtape";

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

/**
 * The library's default logger, under the LogTape category
 * `["dualsocks", ...sub]`: LogTape's `getLogger`, or, after
 * {@linkcode logDirectly}, a logger that hands its records straight to that
 * sink.
 *
 * @example
 * ```ts
 * import { libraryLogger } from "./log.ts";
 * libraryLogger("gateway").info("listening on {addrs}", { addrs: "127.0.0.1:1080" });
 * ```
 */
export function libraryLogger(...sub: string[]): GatewayLogger {
  const category = ["dualsocks", ...sub];
  return direct ? directLogger(category, direct) : getLogger(category);
}

const LEVELS = { debug: 0, info: 1, warning: 2, error: 3 } as const;
const NOTHING = () => {};

/** Where {@linkcode logDirectly} sends the library's records, if it was called. */
let direct: { sink: (record: LogRecord) => void; min: number } | undefined;

/**
 * Makes {@linkcode libraryLogger} hand every record at `lowestLevel` or
 * above straight to `sink`, skipping LogTape's dispatch (its category tree,
 * filters and record copies cost about 10 µs a record, which is most of the
 * cost of one log line per session). The records are LogTape's `LogRecord`s,
 * so LogTape's formatters and sinks work on them. For an application that
 * sends the `["dualsocks"]` category to one sink anyway, as `main.ts` does;
 * loggers made before the call keep going through LogTape. Dispose the
 * result to go back to LogTape.
 *
 * @example
 * ```ts
 * import { libraryLogger, logDirectly } from "./log.ts";
 * const lines: string[] = [];
 * using _ = logDirectly((record) => lines.push(record.message.join("")), "info");
 * libraryLogger("main").info("up on {port}", { port: 1080 });
 * // lines: ["up on 1080"]
 * ```
 */
export function logDirectly(
  sink: (record: LogRecord) => void,
  lowestLevel: keyof typeof LEVELS,
): Disposable {
  const mine = { sink, min: LEVELS[lowestLevel] };
  direct = mine;
  return {
    [Symbol.dispose]() {
      if (direct === mine) direct = undefined;
    },
  };
}

/** Templates split once: text, key, text, key, ..., text. */
const templates = new Map<string, string[]>();

function parseTemplate(template: string): string[] {
  let parts = templates.get(template);
  if (parts) return parts;
  parts = [];
  let text = "";
  for (let i = 0; i < template.length; i++) {
    const c = template[i];
    if (c === "{" && template[i + 1] === "{") {
      text += "{";
      i++;
    } else if (c === "}" && template[i + 1] === "}") {
      text += "}";
      i++;
    } else if (c === "{" && template.indexOf("}", i + 1) > i) {
      const end = template.indexOf("}", i + 1);
      parts.push(text, template.slice(i + 1, end).trim());
      text = "";
      i = end;
    } else text += c;
  }
  parts.push(text);
  // Bounded: the library logs a fixed set of templates.
  if (templates.size < 1000) templates.set(template, parts);
  return parts;
}

function directLogger(
  category: readonly string[],
  to: { sink: (record: LogRecord) => void; min: number },
): GatewayLogger {
  const at = (level: LogRecord["level"]) => (template: string, properties = {}): void => {
    const parts = parseTemplate(template);
    const message: unknown[] = new Array(parts.length);
    for (let i = 0; i < parts.length; i++) {
      message[i] = i & 1 ? (properties as Record<string, unknown>)[parts[i]] : parts[i];
    }
    to.sink({ category, level, message, rawMessage: template, timestamp: Date.now(), properties });
  };
  return {
    debug: to.min <= 0 ? at("debug") : NOTHING,
    info: to.min <= 1 ? at("info") : NOTHING,
    warn: to.min <= 2 ? at("warning") : NOTHING,
    error: at("error"),
  };
}

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
  const pass = (method: GatewayLogger["info"]) =>
    method === NOTHING ? NOTHING : method.bind(logger);
  return {
    debug: min <= 0 ? pass(logger.debug) : NOTHING,
    info: min <= 1 ? pass(logger.info) : NOTHING,
    warn: min <= 2 ? pass(logger.warn) : NOTHING,
    error: pass(logger.error),
  };
}

/** A control character (a newline, an escape sequence...). */
// deno-lint-ignore no-control-regex -- finding control characters is the point
const CONTROL = /[\x00-\x1f\x7f]/;

/**
 * How the text format renders a property value: strings as they are (quoted
 * as JSON when they hold a control character, so that no client-supplied
 * name can forge a log line), numbers and booleans by `String`, the rest by
 * `inspect`. Cheaper than LogTape's default, which inspects every value.
 *
 * @example
 * ```ts
 * import { textValue } from "./log.ts";
 * textValue("evil\nline", (v) => String(v)); // '"evil\\nline"'
 * textValue(42, (v) => String(v)); // "42"
 * ```
 */
export function textValue(value: unknown, inspect: (value: unknown) => string): string {
  if (typeof value === "string") return CONTROL.test(value) ? JSON.stringify(value) : value;
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  return inspect(value);
}

/** LogTape's level abbreviations, as its text lines show them. */
const ABBREVIATIONS: Record<LogRecord["level"], string> = {
  trace: "TRC",
  debug: "DBG",
  info: "INF",
  warning: "WRN",
  error: "ERR",
  fatal: "FTL",
};

/** Joined categories, by category array (a logger's array is reused for each of its records). */
const joined = new WeakMap<readonly string[], { text: string; json: string }>();

function categoryOf(category: readonly string[]): { text: string; json: string } {
  let c = joined.get(category);
  if (!c) {
    c = { text: category.join("·"), json: JSON.stringify(category.join(".")) };
    joined.set(category, c);
  }
  return c;
}

/** Templates as JSON strings (bounded: the library logs a fixed set of templates). */
const jsonHeads = new Map<string, string>();

/** The UTC second a timestamp falls in, as `YYYY-MM-DD HH:MM:SS.`, computed once per second. */
let second = NaN;
let secondText = "";

/**
 * A timestamp as LogTape's `date-time-tz` renders it
 * (`2026-12-03 05:40:12.345 +00`), with the date and time up to the second
 * built once per second rather than once per line.
 *
 * @example
 * ```ts
 * import { utcTimestamp } from "./log.ts";
 * utcTimestamp(0); // "1970-01-01 00:00:00.000 +00"
 * ```
 */
export function utcTimestamp(ms: number): string {
  const s = Math.floor(ms / 1000);
  if (s !== second) {
    const iso = new Date(s * 1000).toISOString(); // YYYY-MM-DDTHH:MM:SS.000Z
    secondText = `${iso.slice(0, 10)} ${iso.slice(11, 20)}`;
    second = s;
  }
  const frac = ms - s * 1000;
  return `${secondText}${frac < 10 ? "00" : frac < 100 ? "0" : ""}${frac} +00`;
}

const inspect = (value: unknown) =>
  Deno.inspect(value, { strAbbreviateSize: Infinity, iterableLimit: Infinity });

/**
 * One record as a text line, in LogTape's text format
 * (`2026-12-03 05:40:12.345 +00 [INF] dualsocks·gateway: message`), values
 * by {@linkcode textValue}. Written here rather than configured from
 * LogTape's `getTextFormatter` because it runs once per session: the
 * timestamp is built once per second and the category once per logger.
 *
 * @example
 * ```ts
 * import { textLine } from "./log.ts";
 * textLine({
 *   category: ["dualsocks"], level: "info", message: ["up on ", 1080, ""],
 *   rawMessage: "up on {port}", timestamp: 0, properties: { port: 1080 },
 * }); // "1970-01-01 00:00:00.000 +00 [INF] dualsocks: up on 1080\n"
 * ```
 */
export function textLine(record: LogRecord): string {
  const parts = record.message;
  // Concatenated, not joined: no array per line, and the encoder flattens
  // the result once (bench/log_cost.ts: 0.3-0.9 µs a line less than a join).
  let message = parts[0] as string;
  for (let i = 1; i < parts.length; i += 2) {
    message += textValue(parts[i], inspect) + ((parts[i + 1] ?? "") as string);
  }
  return `${utcTimestamp(record.timestamp)} [${ABBREVIATIONS[record.level]}] ${
    categoryOf(record.category).text
  }: ${message}\n`;
}

/**
 * One record as a JSON line, the fields of LogTape's JSON Lines formatter
 * with `message: "template"`: `@timestamp`, `level`, `message` (the
 * template), `logger` and `properties`.
 *
 * @example
 * ```ts
 * import { jsonLine } from "./log.ts";
 * jsonLine({
 *   category: ["dualsocks"], level: "warning", message: ["up on ", 1080, ""],
 *   rawMessage: "up on {port}", timestamp: 0, properties: { port: 1080 },
 * }); // '{"@timestamp":"1970-01-01T00:00:00.000Z","level":"WARN",...}\n'
 * ```
 */
export function jsonLine(record: LogRecord): string {
  // The same bytes as JSON.stringify of the whole object, with the parts that
  // repeat (the template and the logger) encoded once.
  const raw = record.rawMessage;
  const template = typeof raw === "string" ? raw : raw.join("{}");
  let head = jsonHeads.get(template);
  if (head === undefined) {
    head = JSON.stringify(template);
    if (jsonHeads.size < 1000) jsonHeads.set(template, head);
  }
  const level = record.level === "warning" ? "WARN" : record.level.toUpperCase();
  return `{"@timestamp":"${
    new Date(record.timestamp).toISOString()
  }","level":"${level}","message":${head},"logger":${
    categoryOf(record.category).json
  },"properties":${JSON.stringify(record.properties)}}\n`;
}

/**
 * The formatter of a log format: `text` ({@linkcode textLine}) or `json`
 * ({@linkcode jsonLine}, one JSON object per line, the message as its
 * template, the values as properties).
 *
 * @example
 * ```ts
 * import { logFormatter } from "./log.ts";
 * import { bufferedSink } from "./log_sink.ts";
 * const sink = bufferedSink(Deno.stderr, { formatter: logFormatter("json") });
 * ```
 */
export function logFormatter(format: "text" | "json"): (record: LogRecord) => string {
  return format === "json" ? jsonLine : textLine;
}
