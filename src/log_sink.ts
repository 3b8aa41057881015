/**
 * A buffered LogTape sink: records are formatted when they are logged,
 * queued, and written in batches (one `write` per batch, never one awaited
 * write per record), on a timer and as soon as a batch is full. Errors are
 * written at once. The queue is bounded: when the writer (standard error, a
 * pipe to a slow reader) cannot keep up, new records are dropped and
 * counted, and a warning with the count is written once the queue drains.
 * Dispose it (LogTape's `dispose()` does) to write what is queued.
 *
 * @module
 */

import type { LogRecord, Sink } from "@logtape/logtape";

/** Where a {@linkcode bufferedSink} writes: `Deno.stderr`, a file, a socket. */
export interface LogWriter {
  /** Writes some of `p`; resolves to the byte count written. */
  write(p: Uint8Array): Promise<number>;
}

/**
 * The settings of a {@linkcode bufferedSink}.
 *
 * @example
 * ```ts
 * import type { BufferedSinkOptions } from "./log_sink.ts";
 * const options: BufferedSinkOptions = { flushInterval: 50, maxBuffered: 4 * 1024 * 1024 };
 * ```
 */
export interface BufferedSinkOptions {
  /** Turns a record into its line (with the newline); default: LogTape-like text. */
  formatter?: (record: LogRecord) => string;
  /** Milliseconds a record may wait for its batch; default 100. */
  flushInterval?: number;
  /** Characters queued that start a write before the timer; default 64 Ki. */
  batchSize?: number;
  /** Characters queued or being written beyond which records are dropped; default 1 Mi. */
  maxBuffered?: number;
}

/** A LogTape sink that writes in batches; see {@linkcode bufferedSink}. */
export interface BufferedSink extends AsyncDisposable {
  /** Queues one record. */
  (record: LogRecord): void;
  /** Records dropped so far because the queue was full or the writer failed. */
  readonly dropped: number;
  /** Writes what is queued now; resolves when it is written. */
  flush(): Promise<void>;
}

const plainText = (record: LogRecord): string => {
  let message = "";
  for (let i = 0; i < record.message.length; i++) {
    const part = record.message[i];
    message += typeof part === "string" ? part : JSON.stringify(part);
  }
  return `${new Date(record.timestamp).toISOString()} [${record.level}] ${
    record.category.join("·")
  }: ${message}\n`;
};

/**
 * A sink for LogTape's `configure()` that writes batches to `writer`.
 * The returned function never waits: formatting is the only work done per
 * record. A writer that fails (standard error closed) drops every record
 * after, counted in `dropped`.
 *
 * @example
 * ```ts
 * import { configure, dispose, getLogger, getTextFormatter } from "@logtape/logtape";
 * import { bufferedSink } from "./log_sink.ts";
 * await configure({
 *   sinks: { stderr: bufferedSink(Deno.stderr, { formatter: getTextFormatter() }) },
 *   loggers: [{ category: ["app"], lowestLevel: "info", sinks: ["stderr"] }],
 * });
 * getLogger(["app"]).info("one line, written with the next batch");
 * await dispose(); // writes what is queued
 * ```
 */
export function bufferedSink(writer: LogWriter, options: BufferedSinkOptions = {}): BufferedSink {
  const format = options.formatter ?? plainText;
  const interval = options.flushInterval ?? 100;
  const batchSize = options.batchSize ?? 64 * 1024;
  const maxBuffered = options.maxBuffered ?? 1024 * 1024;
  const encoder = new TextEncoder();
  let queue: string[] = [];
  /** Characters queued plus those being written. */
  let buffered = 0;
  let dropped = 0;
  let reported = 0;
  let writing: Promise<void> | null = null;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let broken = false;

  const droppedNotice = (count: number): string =>
    format({
      category: ["dualsocks", "log"],
      level: "warning",
      message: [`dropped ${count} log records: the log output could not keep up`],
      rawMessage: "dropped {count} log records: the log output could not keep up",
      timestamp: Date.now(),
      properties: { count },
    });

  const writeAll = async (data: Uint8Array): Promise<void> => {
    for (let off = 0; off < data.length;) off += await writer.write(data.subarray(off));
  };

  const drain = async (): Promise<void> => {
    while (queue.length > 0) {
      const batch = queue;
      queue = [];
      let text = batch.join("");
      const size = text.length;
      if (dropped > reported) {
        text += droppedNotice(dropped - reported);
        reported = dropped;
      }
      try {
        if (!broken) await writeAll(encoder.encode(text));
        else dropped += batch.length;
      } catch {
        broken = true; // the output is gone: count, do not retry per batch
        dropped += batch.length;
      }
      buffered -= size;
    }
  };

  const start = (): Promise<void> => {
    if (timer !== undefined) {
      clearTimeout(timer);
      timer = undefined;
    }
    if (writing) return writing;
    const run = drain().finally(() => {
      writing = null;
    });
    writing = run;
    return run;
  };

  const onTimer = () => {
    timer = undefined;
    start();
  };

  const sink = ((record: LogRecord): void => {
    const line = format(record);
    if (broken || buffered + line.length > maxBuffered) {
      dropped++;
      return;
    }
    queue.push(line);
    buffered += line.length;
    if (writing) return; // the running write takes it with the next batch
    if (buffered >= batchSize || record.level === "error" || record.level === "fatal") {
      start();
    } else if (timer === undefined) {
      timer = setTimeout(onTimer, interval);
      Deno.unrefTimer(timer);
    }
  }) as BufferedSink;

  Object.defineProperty(sink, "dropped", { get: () => dropped });
  sink.flush = async () => {
    // Say what was dropped even when nothing else is left to write.
    if (dropped > reported && !broken && queue.length === 0) queue.push("");
    // A write in progress, then what was queued meanwhile.
    while (writing || queue.length > 0) await start();
  };
  sink[Symbol.asyncDispose] = () => sink.flush();
  return sink satisfies Sink;
}
