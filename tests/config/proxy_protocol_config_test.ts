import assert from "node:assert/strict";
import { configDocument, DEFAULT_CONFIG, parseConfig } from "../../src/config/config.ts";
import { optionsFromConfig } from "../../src/config/options.ts";

Deno.test("config: proxy_protocol is off by default, and trusted CIDRs turn it on", () => {
  assert.equal(DEFAULT_CONFIG.proxyProtocol, undefined);
  assert.equal(configDocument(DEFAULT_CONFIG).proxy_protocol, undefined);
  const config = parseConfig("proxy_protocol:\n  trusted: [192.0.2.0/24, '2001:db8::1']\n", {
    file: "gw.yaml",
  });
  assert.deepEqual(config.proxyProtocol, { trusted: ["192.0.2.0/24", "2001:db8::1"] });
  assert.deepEqual(optionsFromConfig(config).proxyProtocol, config.proxyProtocol);
  assert.deepEqual(configDocument(config).proxy_protocol, {
    trusted: ["192.0.2.0/24", "2001:db8::1"],
  });
});

Deno.test("config: proxy_protocol errors say where and what was expected", () => {
  const cases: [string, RegExp][] = [
    ["proxy_protocol: {}\n", /proxy_protocol\.trusted: required key is missing/],
    ["proxy_protocol:\n  trusted: ['*']\n", /proxy_protocol\.trusted\[0\]: expected a CIDR/],
    [
      "proxy_protocol:\n  trusted: [x.test]\n",
      /trusted\[0\]: expected a CIDR such as 192\.0\.2\.0\/24/,
    ],
    ["proxy_protocol:\n  trusted: []\n", /proxy_protocol\.trusted/],
    ["proxy_protocol:\n  trusted: [192.0.2.1]\n  other: 1\n", /proxy_protocol\.other.*unknown key/],
  ];
  for (const [text, message] of cases) {
    assert.throws(() => parseConfig(text, { file: "gw.yaml" }), message, text);
  }
});
