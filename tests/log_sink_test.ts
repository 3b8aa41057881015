import assert from "node:assert/strict";
import { configure, getLogger, type LogRecord, reset } from "@logtape/logtape";
import { bufferedSink, type LogWriter } from "../src/log_sink.ts";
import { jsonLine } from "../src/log.ts";
import { DEFAULT_CONFIG } from "../src/config/config.ts";

const decoder = new TextDecoder();
/** The gateway's session line (src/server/gateway.ts). */
const SESSION_TEMPLATE =
  "session {id} {type} {protocol} {client} user={user} {command} {destination} -> {resolved} reply={reply} up={bytesUp} down={bytesDown} {durationMs}ms: {reason}";

function record(message: string, level: LogRecord["level"] = "info"): LogRecord {
  return {
    category: ["dualsocks", "test"],
    level,
    message: [message],
    rawMessage: message,
    timestamp: 0,
    properties: {},
  };
}

const line = (r: LogRecord) => `${r.level} ${r.message.join("")}\n`;

/** A writer that keeps every write; `gate` (when set) holds each write until it resolves. */
function recorder(maxPerWrite = Infinity) {
  const writes: string[] = [];
  let gate: Promise<void> | undefined;
  let open: () => void = () => {};
  let wrote: () => void = () => {};
  let next = new Promise<void>((r) => (wrote = r));
  const writer: LogWriter = {
    async write(p) {
      if (gate) await gate;
      const n = Math.min(p.length, maxPerWrite);
      writes.push(decoder.decode(p.subarray(0, n)));
      wrote();
      next = new Promise<void>((r) => (wrote = r));
      return n;
    },
  };
  return {
    writer,
    writes,
    text: () => writes.join(""),
    /** Resolves at the next write. */
    nextWrite: () => next,
    hold() {
      gate = new Promise<void>((r) => (open = r));
    },
    release() {
      gate = undefined;
      open();
    },
  };
}

/** `p`, or a failure after 10 s (keeps the test bounded when a timer never fires). */
async function within<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`expected ${what} within 10 s`)), 10_000);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

Deno.test("log sink: records are written in one batch, not one write each", async () => {
  const out = recorder();
  const sink = bufferedSink(out.writer, { formatter: line });
  for (let i = 0; i < 100; i++) sink(record(`r${i}`));
  assert.equal(out.writes.length, 0); // nothing written (or awaited) per record
  await sink.flush();
  assert.equal(out.writes.length, 1);
  assert.equal(out.text(), Array.from({ length: 100 }, (_, i) => `info r${i}\n`).join(""));
  assert.equal(sink.dropped, 0);
});

Deno.test("log sink: the timer writes a lone record, and an error goes at once", async () => {
  const out = recorder();
  const sink = bufferedSink(out.writer, { formatter: line, flushInterval: 20 });
  sink(record("quiet"));
  assert.equal(out.writes.length, 0);
  await within(out.nextWrite(), "the flush timer to write");
  assert.equal(out.text(), "info quiet\n");
  // An error does not wait for the timer (whose interval is now an hour).
  const slow = bufferedSink(out.writer, { formatter: line, flushInterval: 3_600_000 });
  const written = out.nextWrite();
  slow(record("bad", "error"));
  await within(written, "the error to be written at once");
  assert.equal(out.text(), "info quiet\nerror bad\n");
  await slow[Symbol.asyncDispose]();
  await sink[Symbol.asyncDispose]();
});

Deno.test("log sink: a full batch starts a write before the timer", async () => {
  const out = recorder();
  const sink = bufferedSink(out.writer, {
    formatter: line,
    flushInterval: 3_600_000,
    batchSize: 50,
  });
  const written = out.nextWrite();
  for (let i = 0; i < 10; i++) sink(record(`record ${i}`)); // 14 characters each
  await within(written, "a write once 50 characters were queued");
  await sink.flush();
  assert.equal(out.text().split("\n").length - 1, 10);
});

Deno.test("log sink: a slow output drops and counts records instead of growing, then says so", async () => {
  const out = recorder();
  out.hold(); // standard error is stuck
  const sink = bufferedSink(out.writer, { formatter: line, maxBuffered: 1000 });
  sink(record("first", "error")); // starts a write that hangs
  for (let i = 0; i < 500; i++) sink(record(`r${String(i).padStart(3, "0")}`)); // 10 characters
  // 1000 characters at most are held: "error first\n" (12) and 98 more records.
  assert.equal(sink.dropped, 500 - 98);
  out.release();
  await sink.flush();
  const lines = out.text().trimEnd().split("\n");
  assert.equal(lines[0], "error first");
  assert.equal(lines[1], "info r000");
  assert.equal(lines[98], "info r097");
  assert.equal(lines[99], "warning dropped 402 log records: the log output could not keep up");
  assert.equal(lines.length, 100);
  // Room again: records are queued and written.
  sink(record("after"));
  await sink.flush();
  assert.ok(out.text().endsWith("info after\n"));
  assert.equal(sink.dropped, 402);
});

Deno.test("log sink: partial writes are completed in order", async () => {
  const out = recorder(7);
  const sink = bufferedSink(out.writer, { formatter: line });
  for (let i = 0; i < 20; i++) sink(record(`line ${i}`));
  await sink.flush();
  assert.ok(out.writes.length > 1);
  assert.equal(out.text(), Array.from({ length: 20 }, (_, i) => `info line ${i}\n`).join(""));
});

Deno.test("log sink: a failed output drops and counts the rest without throwing", async () => {
  let calls = 0;
  const sink = bufferedSink({
    write() {
      calls++;
      return Promise.reject(new Deno.errors.BrokenPipe("stderr is gone"));
    },
  }, { formatter: line });
  sink(record("a"));
  sink(record("b"));
  await sink.flush();
  sink(record("c"));
  await sink.flush();
  assert.equal(sink.dropped, 3);
  assert.equal(calls, 1); // no retry per batch once the output failed
});

Deno.test("log sink: LogTape's configure and dispose write through it to a file", async () => {
  const path = await Deno.makeTempFile({ suffix: ".log" });
  const file = await Deno.open(path, { write: true, append: true });
  try {
    await configure({
      sinks: { file: bufferedSink(file, { formatter: line }) },
      loggers: [
        { category: ["dualsocks"], lowestLevel: "info", sinks: ["file"] },
        { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["file"] },
      ],
    });
    getLogger(["dualsocks", "test"]).info("session {id} done", { id: 7 });
    getLogger(["dualsocks", "test"]).debug("below the level");
    await reset(); // disposes the sinks: the queued line is written
    assert.equal(await Deno.readTextFile(path), "info session 7 done\n");
  } finally {
    file.close();
    await Deno.remove(path);
  }
});

Deno.test("log sink: lines spread over many chunks, some logged during a write, arrive whole and in order", async () => {
  const out = recorder();
  const sink = bufferedSink(out.writer, { formatter: line, flushInterval: 3_600_000 });
  const expected: string[] = [];
  const log = (i: number, level: LogRecord["level"] = "info") => {
    const text = `record ${i} ${"x".repeat(i % 300)}`; // lines of 10 to 310 bytes
    expected.push(`${level} ${text}\n`);
    sink(record(text, level));
  };
  out.hold(); // the first write hangs while more lines come in
  for (let i = 0; i < 10; i++) log(i);
  log(10, "error"); // written at once: one chunk, whose write hangs
  for (let i = 11; i < 3000; i++) log(i); // about 480 KB: several 64 KiB chunks
  const first = out.nextWrite();
  out.release();
  await within(first, "the held write to finish");
  for (let i = 3000; i < 6000; i++) log(i); // chunks written before are reused now
  await sink.flush();
  assert.equal(sink.dropped, 0);
  assert.equal(out.text(), expected.join(""));
});

Deno.test("log sink: the session lines of a default gateway's relays all ending at once are all kept", async () => {
  // max_sessions relays closing in one turn of the event loop (a client pool
  // killed, a drain's grace ending) log their lines before the first write can
  // finish: the default bound must hold them, in the longer JSON format, with
  // IPv6 addresses and a long name.
  const out = recorder();
  const sink = bufferedSink(out.writer, { formatter: jsonLine });
  const count = DEFAULT_CONFIG.limits.maxSessions;
  const name = `${"a".repeat(60)}.${"b".repeat(60)}.example`;
  let bytes = 0;
  for (let id = 1; id <= count; id++) {
    const properties = {
      id,
      client: `[2001:db8:ffff:ffff:ffff:ffff:ffff:${(id % 65536).toString(16)}]:54321`,
      user: "-",
      protocol: "socks5",
      command: "connect",
      destination: `${name}:443`,
      resolved: "[2001:db8:1234:5678:9abc:def0:1234:5678]:443",
      type: "B",
      reply: "0 (succeeded)",
      bytesUp: 123456789,
      bytesDown: 987654321,
      durationMs: 3600000,
      reason: "client closed",
    };
    const r: LogRecord = {
      category: ["dualsocks", "gateway"],
      level: "info",
      message: ["session ", id, ""],
      rawMessage: SESSION_TEMPLATE,
      timestamp: Date.UTC(2026, 11, 3) + id,
      properties,
    };
    bytes += jsonLine(r).length;
    sink(r);
  }
  await within(sink.flush(), "the lines to be written");
  assert.equal(sink.dropped, 0, `dropped ${sink.dropped} of ${count} lines (${bytes} bytes)`);
  assert.equal(out.text().split("\n").length - 1, count);
});
