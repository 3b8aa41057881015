import assert from "node:assert/strict";
import { ConfigError, DEFAULT_CONFIG, formatConfig, parseConfig } from "../../src/config/config.ts";
import { optionsFromConfig } from "../../src/config/options.ts";

Deno.test("config: protocols for all listeners, and per listener as a mapping", () => {
  assert.deepEqual(DEFAULT_CONFIG.protocols, ["socks5", "socks4", "http"]);
  const config = parseConfig(
    'listen:\n  - "[::1]:0"\n  - address: "127.0.0.1:8080"\n    protocols: [http]\nprotocols: [socks5]\n',
    { file: "gw.yaml" },
  );
  assert.deepEqual(config.listen, [
    { host: "::1", port: 0 },
    { host: "127.0.0.1", port: 8080, protocols: ["http"] },
  ]);
  assert.deepEqual(config.protocols, ["socks5"]);
  const options = optionsFromConfig(config);
  assert.deepEqual(options.protocols, ["socks5"]);
  // What check-config prints reads back the same.
  assert.deepEqual(parseConfig(formatConfig(config), { file: "again.yaml" }).listen, config.listen);
});

Deno.test("config: bad protocols name the file, key, line and what was expected", () => {
  const bad = (text: string, pattern: RegExp) =>
    assert.throws(() => parseConfig(text, { file: "gw.yaml" }), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.match(e.message, pattern);
      return true;
    });
  bad(
    "protocols: [gopher]\n",
    /gw\.yaml:1:\d+: protocols\[0\]: expected one of socks5, socks4, http, found "gopher"/,
  );
  bad("protocols: []\n", /protocols: expected a non-empty list of protocols/);
  bad("protocols: [http, http]\n", /protocols\[1\]: .*duplicate "http"/);
  bad(
    'listen:\n  - address: "127.0.0.1:1"\n    protocols: [smtp]\n',
    /gw\.yaml:3:\d+: listen\[0\]\.protocols\[0\]: expected one of socks5, socks4, http/,
  );
  bad(
    "listen:\n  - protocols: [http]\n",
    /gw\.yaml:2:\d+: listen\[0\]\.address: required key is missing or empty; expected HOST:PORT/,
  );
});
