/** The config keys of the pool: reuse_port, instance_name, shutdown.drain_delay. */
import assert from "node:assert/strict";
import {
  configDocument,
  DEFAULT_CONFIG,
  formatConfig,
  parseConfig,
} from "../../src/config/config.ts";
import { optionsFromConfig } from "../../src/config/options.ts";

const parse = (text: string) => parseConfig(text, { file: "gw.yaml" });

Deno.test("config: reuse_port, instance_name and drain_delay are absent by default", () => {
  assert.equal(DEFAULT_CONFIG.reusePort, undefined);
  assert.equal(DEFAULT_CONFIG.instanceName, undefined);
  assert.equal(DEFAULT_CONFIG.shutdown.drainDelay, undefined);
  const doc = configDocument(DEFAULT_CONFIG);
  assert.equal(doc.reuse_port, undefined);
  assert.equal(doc.instance_name, undefined);
  assert.deepEqual(doc.shutdown, { grace: "10s" });
  const options = optionsFromConfig(DEFAULT_CONFIG);
  assert.equal(options.reusePort, undefined);
  assert.equal(options.instance, undefined);
});

Deno.test("config: the pool keys parse, reach the options and round-trip", () => {
  const config = parse(
    "reuse_port: true\ninstance_name: gw-a/1\nshutdown:\n  grace: 30s\n  drain_delay: 1500ms\n",
  );
  assert.equal(config.reusePort, true);
  assert.equal(config.instanceName, "gw-a/1");
  assert.deepEqual(config.shutdown, { grace: 30_000, drainDelay: 1500 });
  const options = optionsFromConfig(config);
  assert.equal(options.reusePort, true);
  assert.equal(options.instance, "gw-a/1");
  const doc = configDocument(config);
  assert.equal(doc.reuse_port, true);
  assert.equal(doc.instance_name, "gw-a/1");
  assert.deepEqual(doc.shutdown, { grace: "30s", drain_delay: "1500ms" });
  assert.deepEqual(parse(formatConfig(config)), config);
  assert.equal(parse("reuse_port: false\n").reusePort, false);
});

Deno.test("config: pool key errors say where and what was expected", () => {
  const cases: [string, RegExp][] = [
    ["reuse_port: yes please\n", /reuse_port: expected true or false/],
    ["instance_name: ''\n", /instance_name: expected an instance name of 1-128 printable/],
    ["instance_name: 'a b'\n", /instance_name: expected an instance name/],
    [`instance_name: ${"x".repeat(129)}\n`, /instance_name: expected an instance name/],
    ["shutdown:\n  drain_delay: soon\n", /shutdown\.drain_delay: expected a duration/],
    [
      "shutdown:\n  drain: 1s\n",
      /shutdown\.drain: unknown key; expected one of grace, drain_delay/,
    ],
  ];
  for (const [text, message] of cases) assert.throws(() => parse(text), message, text);
});
