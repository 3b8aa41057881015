import assert from "node:assert/strict";
import { enabled, type GatewayLogger, withLevel } from "../src/log.ts";

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
