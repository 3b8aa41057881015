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
  /** Bytes queued that start a write before the timer; default 64 Ki. */
  batchSize?: number;
  /**
   * Bytes queued or being written beyond which records are dropped; default
   * 8 Mi: the lines of 8,192 sessions (the default `max_sessions`) that end
   * in the same moment, at up to 1 KiB each, before the first write finishes.
   */
  maxBuffered?: number;
}

/** The chunks, in order, in one array. */
function concat(chunks: readonly Uint8Array[]): Uint8Array {
  let size = 0;
  for (const c of chunks) size += c.length;
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/** Newlines in `bytes`: the records they hold. */
function countLines(bytes: Uint8Array): number {
  let n = 0;
  for (let i = 0; i < bytes.length; i++) if (bytes[i] === 10) n++;
  return n;
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
  const maxBuffered = options.maxBuffered ?? 8 * 1024 * 1024;
  const encoder = new TextEncoder();
  // Lines are encoded into byte chunks as they are logged, so that a
  // queued line is no JavaScript string waiting for its batch: strings that
  // wait 100 ms outlive the young generation and cost old-generation
  // collections; bytes in a chunk cost nothing to the collector.
  const chunkSize = Math.max(4096, Math.min(batchSize, 64 * 1024));
  const spare: Uint8Array<ArrayBuffer>[] = [];
  let chunk: Uint8Array<ArrayBuffer> = new Uint8Array(chunkSize);
  let used = 0;
  /** Filled chunks (or parts of them) waiting for the writer, in order. */
  let queue: Uint8Array[] = [];
  /** Bytes queued (in `queue` and `chunk`) plus those being written. */
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

  /** Moves the bytes of the current chunk to the queue. */
  const seal = (): void => {
    if (used === 0) return;
    queue.push(chunk.subarray(0, used));
    chunk = spare.pop() ?? new Uint8Array(chunkSize);
    used = 0;
  };

  /** Appends `line` to the current chunk (a line too long for one gets its own). */
  const append = (line: string): number => {
    if (used + line.length * 3 > chunkSize) {
      seal();
      if (line.length * 3 > chunkSize) {
        const bytes = encoder.encode(line);
        queue.push(bytes);
        return bytes.length;
      }
    }
    const { written } = encoder.encodeInto(line, chunk.subarray(used));
    used += written;
    return written;
  };

  const writeAll = async (data: Uint8Array): Promise<void> => {
    for (let off = 0; off < data.length;) off += await writer.write(data.subarray(off));
  };

  const drain = async (): Promise<void> => {
    seal();
    while (queue.length > 0) {
      const batch = queue;
      queue = [];
      if (dropped > reported) {
        batch.push(encoder.encode(droppedNotice(dropped - reported)));
        buffered += batch[batch.length - 1].length;
        reported = dropped;
      }
      // One write for the whole batch, as soon as the loop lets it run: a
      // burst (thousands of relays closing at once) must not wait for one
      // write per chunk, each a turn of the event loop.
      const bytes = batch.length === 1 ? batch[0] : concat(batch);
      try {
        if (!broken) await writeAll(bytes);
      } catch {
        broken = true; // the output is gone: count, do not retry per batch
      }
      if (broken) dropped += countLines(bytes);
      buffered -= bytes.length;
      // Written (or given up): the chunks can take new lines.
      for (const c of batch) {
        if (c.buffer.byteLength === chunkSize && spare.length < 4) {
          spare.push(new Uint8Array(c.buffer as ArrayBuffer));
        }
      }
      seal();
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
    buffered += append(line);
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
    if (dropped > reported && !broken && queue.length === 0 && used === 0) {
      queue.push(new Uint8Array(0));
    }
    // A write in progress, then what was queued meanwhile.
    while (writing || queue.length > 0 || used > 0) await start();
  };
  sink[Symbol.asyncDispose] = () => sink.flush();
  return sink satisfies Sink;
}
