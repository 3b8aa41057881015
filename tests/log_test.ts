import assert from "node:assert/strict";
import { getJsonLinesFormatter, getTextFormatter, type LogRecord } from "@logtape/logtape";
import {
  enabled,
  type GatewayLogger,
  libraryLogger,
  logDirectly,
  logFormatter,
  textValue,
  utcTimestamp,
  withLevel,
} from "../src/log.ts";

Deno.test("log: withLevel drops the levels below it before any record is built", () => {
  const seen: string[] = [];
  const sink: GatewayLogger = {
    debug: (m) => seen.push(`debug ${m}`),
    info: (m) => seen.push(`info ${m}`),
    warn: (m) => seen.push(`warn ${m}`),
    error: (m) => seen.push(`error ${m}`),
  };
  const logger = withLevel(sink, "warning");
  assert.deepEqual(
    [enabled(logger.debug), enabled(logger.info), enabled(logger.warn), enabled(logger.error)],
    [false, false, true, true],
  );
  // A logger that withLevel did not wrap: every level counts as enabled.
  assert.ok(enabled(sink.debug) && enabled(sink.info));
  logger.debug("a");
  logger.info("b");
  logger.warn("c");
  logger.error("d");
  assert.deepEqual(seen, ["warn c", "error d"]);
  assert.ok(enabled(withLevel(sink, "debug").debug));
});

Deno.test("log: logDirectly hands LogTape records straight to a sink, at its level", () => {
  const records: LogRecord[] = [];
  {
    using _ = logDirectly((r) => records.push(r), "info");
    const logger = libraryLogger("gateway");
    assert.equal(enabled(logger.debug), false);
    logger.debug("dropped {x}", { x: 1 });
    logger.info("session {id} {{literal}} to {destination}: {reason}", {
      id: 7,
      destination: "192.0.2.1:80",
      reason: "done",
    });
    logger.warn("no properties");
    // withLevel over it keeps what is off off.
    assert.equal(enabled(withLevel(logger, "debug").debug), false);
  }
  assert.equal(records.length, 2);
  const [info, warn] = records;
  assert.deepEqual(info.category, ["dualsocks", "gateway"]);
  assert.equal(info.level, "info");
  assert.deepEqual(info.message, [
    "session ",
    7,
    " {literal} to ",
    "192.0.2.1:80",
    ": ",
    "done",
    "",
  ]);
  assert.equal(info.rawMessage, "session {id} {{literal}} to {destination}: {reason}");
  assert.deepEqual(info.properties, { id: 7, destination: "192.0.2.1:80", reason: "done" });
  assert.equal(typeof info.timestamp, "number");
  assert.deepEqual([warn.level, warn.message], ["warning", ["no properties"]]);
  // Disposed: back to LogTape (which has no configuration here, so nothing reaches `records`).
  libraryLogger("gateway").error("after");
  assert.equal(records.length, 2);
});

Deno.test("log: the text format quotes control characters and the JSON one is one line", () => {
  const inspect = (v: unknown) => `<${typeof v}>`;
  assert.equal(textValue("plain", inspect), "plain");
  assert.equal(
    textValue("evil\n2026-12-02 [INF] forged", inspect),
    '"evil\\n2026-12-02 [INF] forged"',
  );
  assert.equal(textValue("esc\x1b[31m", inspect), '"esc\\u001b[31m"');
  assert.equal(textValue(42, inspect), "42");
  assert.equal(textValue(true, inspect), "true");
  assert.equal(textValue({ a: 1 }, inspect), "<object>");
  const record: LogRecord = {
    category: ["dualsocks", "gateway"],
    level: "info",
    message: ["user=", "a\nb", " up=", 5, ""],
    rawMessage: "user={user} up={bytesUp}",
    timestamp: 0,
    properties: { user: "a\nb", bytesUp: 5 },
  };
  const text = logFormatter("text")(record);
  assert.match(text, /\[INF\] dualsocks·gateway: user="a\\nb" up=5\n$/);
  assert.equal(text.split("\n").length, 2);
  const json = logFormatter("json")(record);
  assert.equal(json.split("\n").length, 2);
  const parsed = JSON.parse(json);
  assert.equal(parsed.message, "user={user} up={bytesUp}");
  assert.deepEqual(parsed.properties, { user: "a\nb", bytesUp: 5 });
});

Deno.test("log: our text and JSON lines are the ones LogTape's formatters write", () => {
  // The lines used to come from LogTape's formatters; tools that parse them must see no change.
  const text = getTextFormatter({ timestamp: "date-time-tz", value: textValue });
  const json = getJsonLinesFormatter({ message: "template" });
  const category = ["dualsocks", "gateway"];
  const records: LogRecord[] = [];
  // Timestamps across second, minute, day and year boundaries, and every millisecond width.
  const stamps = [
    0,
    7,
    42,
    999,
    1000,
    59_999,
    60_000,
    86_399_999,
    1_796_276_201_690,
    1_798_761_599_999,
  ];
  for (const [i, timestamp] of stamps.entries()) {
    records.push({
      category,
      level: (["debug", "info", "warning", "error", "fatal", "trace"] as const)[i % 6],
      message: ["session ", i, " ", "a\nb", " user=", "-", " err=", new Error("boom"), " list=", [
        1,
        "x",
      ], ""],
      rawMessage: "session {id} {name} user={user} err={error} list={list}",
      timestamp,
      properties: { id: i, name: "a\nb", user: "-", error: "boom", list: [1, "x"] },
    });
  }
  records.push({
    category: ["dualsocks"],
    level: "info",
    message: ["no values"],
    rawMessage: "no values",
    timestamp: 1_796_276_201_001,
    properties: {},
  });
  // A tagged-template record (LogTape's logger.info`...`): the template's pieces joined by {}.
  const strings = Object.assign(["up on ", " after ", " ms"], {
    raw: ["up on ", " after ", " ms"],
  });
  records.push({
    category,
    level: "info",
    message: ["up on ", 1080, " after ", 3, " ms"],
    rawMessage: strings as unknown as TemplateStringsArray,
    timestamp: 5,
    properties: {},
  });
  for (const r of records) {
    assert.equal(logFormatter("text")(r), text(r));
    assert.equal(logFormatter("json")(r), json(r));
  }
  // The per-second cache does not leak one second's text into the next.
  assert.equal(utcTimestamp(1_000), "1970-01-01 00:00:01.000 +00");
  assert.equal(utcTimestamp(999), "1970-01-01 00:00:00.999 +00");
  assert.equal(utcTimestamp(1_001), "1970-01-01 00:00:01.001 +00");
});
