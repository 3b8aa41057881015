import assert from "node:assert/strict";
import type { LogRecord } from "@logtape/logtape";
import {
  enabled,
  type GatewayLogger,
  libraryLogger,
  logDirectly,
  logFormatter,
  textValue,
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
