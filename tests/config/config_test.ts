import assert from "node:assert/strict";
import {
  type Config,
  configDocument,
  ConfigError,
  DEFAULT_CONFIG,
  formatConfig,
  isLoopback,
  loadConfig,
  parseConfig,
  parseDuration,
  parseHostPort,
} from "../../src/config/config.ts";
import { optionsFromConfig } from "../../src/config/options.ts";

const FILE = "dualsocks.yaml";
const parse = (text: string): Config => parseConfig(text, { file: FILE });

/** Asserts that parsing throws a ConfigError with these fields. */
function assertConfigError(
  text: string,
  want: {
    path: string;
    line?: number;
    column?: number;
    message?: string | RegExp;
    expected?: string | RegExp;
    found?: string;
  },
): ConfigError {
  let error: unknown;
  try {
    parse(text);
  } catch (e) {
    error = e;
  }
  assert.ok(
    error instanceof ConfigError,
    `expected a ConfigError, got ${error}`,
  );
  assert.equal(error.name, "ConfigError");
  assert.equal(error.file, FILE);
  assert.equal(error.path, want.path, error.message);
  if ("line" in want) assert.equal(error.line, want.line, error.message);
  if ("column" in want) assert.equal(error.column, want.column, error.message);
  if (typeof want.message === "string") {
    assert.equal(error.message, want.message);
  } else if (want.message) assert.match(error.message, want.message);
  if (typeof want.expected === "string") {
    assert.equal(error.expected, want.expected);
  } else if (want.expected) assert.match(error.expected, want.expected);
  if (want.found !== undefined) assert.equal(error.found, want.found);
  // Every message starts with FILE:LINE:COLUMN when a position is known.
  if (error.line !== undefined) {
    assert.ok(
      error.message.startsWith(`${FILE}:${error.line}:${error.column}: `),
      error.message,
    );
  }
  return error;
}

// --- defaults ---------------------------------------------------------------

Deno.test("DEFAULT_CONFIG has the documented values", () => {
  assert.deepEqual(DEFAULT_CONFIG, {
    listen: [{ host: "::1", port: 1080 }, { host: "127.0.0.1", port: 1080 }],
    protocols: ["socks5", "socks4", "http"],
    users: [],
    resolver: { family: "auto", nameservers: [], happyEyeballsDelay: 250 },
    outbound: {},
    timeouts: { handshake: 10_000, connect: 10_000, idle: 300_000 },
    limits: { maxSessions: 8192, maxHandshakes: 32 },
    rules: [],
    shutdown: { grace: 10_000 },
    log: { format: "text", level: "info" },
    admin: { listen: { host: "127.0.0.1", port: 9080 } },
    routes: [],
    bind: { acceptTimeout: 60_000, strictPeer: true },
    udp: { advertise: {}, nameCacheTtl: 30_000 },
  });
});

Deno.test("DEFAULT_CONFIG is deeply frozen", () => {
  assert.ok(Object.isFrozen(DEFAULT_CONFIG));
  assert.ok(Object.isFrozen(DEFAULT_CONFIG.listen));
  assert.ok(Object.isFrozen(DEFAULT_CONFIG.listen[0]));
  assert.ok(Object.isFrozen(DEFAULT_CONFIG.timeouts));
  assert.ok(Object.isFrozen(DEFAULT_CONFIG.outbound));
  assert.throws(() => {
    (DEFAULT_CONFIG.limits as { maxSessions: number }).maxSessions = 1;
  }, TypeError);
});

Deno.test("empty documents give the defaults, as a mutable copy", () => {
  for (const text of ["", "\n", "# only a comment\n", "---\n", "~\n"]) {
    const config = parse(text);
    assert.deepEqual(config, DEFAULT_CONFIG, JSON.stringify(text));
    assert.ok(!Object.isFrozen(config.listen));
    config.listen.push({ host: "::", port: 1 }); // does not touch the default
  }
  assert.equal(DEFAULT_CONFIG.listen.length, 2);
});

Deno.test("a key with no value takes the default", () => {
  const config = parse("listen:\ntimeouts:\n  idle: ~\nlog: {}\n");
  assert.deepEqual(config, DEFAULT_CONFIG);
});

Deno.test("missing keys in a section take their defaults", () => {
  const config = parse("timeouts:\n  idle: 0\n");
  assert.deepEqual(config.timeouts, {
    handshake: 10_000,
    connect: 10_000,
    idle: 0,
  });
});

// --- every key ----------------------------------------------------------------

const FULL = `
listen: ["[::1]:1080", "127.0.0.1:1080", "[::]:0", "[2001:DB8:0:0::1]:9050"]
users:
  - username: alice
    password: secret
  - username: "ünïcode"
    password: "pass word"
resolver:
  family: prefer-ipv6
  nameservers: ["[2001:db8::53]:53", "192.0.2.53", "2001:db8::54", "[2001:db8::55]", "192.0.2.56:5353"]
  happy_eyeballs_delay: 300ms
outbound:
  ipv4: 192.0.2.10
  ipv6: "[2001:db8::10]"
timeouts:
  handshake: 5s
  connect: 1.5
  idle: 1h
limits:
  max_sessions: 10
  max_handshakes: 0
rules:
  - action: deny
    to: ["127.0.0.0/8", "::1/128"]
  - action: allow
    from: ["2001:db8::/32"]
    to: [".example.test", "*"]
    ports: [443, "8000-8080"]
    commands: [connect, udp]
    users: [alice]
shutdown:
  grace: 0
log:
  format: json
  level: debug
admin:
  listen: "[::]:9081"
  token: correct-horse-battery-staple
`;

Deno.test("every key is parsed and normalized", () => {
  assert.deepEqual(parse(FULL), {
    listen: [
      { host: "::1", port: 1080 },
      { host: "127.0.0.1", port: 1080 },
      { host: "::", port: 0 },
      { host: "2001:db8::1", port: 9050 },
    ],
    protocols: ["socks5", "socks4", "http"],
    users: [
      { username: "alice", password: "secret" },
      { username: "ünïcode", password: "pass word" },
    ],
    resolver: {
      family: "prefer-ipv6",
      nameservers: [
        { host: "2001:db8::53", port: 53 },
        { host: "192.0.2.53", port: 53 },
        { host: "2001:db8::54", port: 53 },
        { host: "2001:db8::55", port: 53 },
        { host: "192.0.2.56", port: 5353 },
      ],
      happyEyeballsDelay: 300,
    },
    outbound: { ipv4: "192.0.2.10", ipv6: "2001:db8::10" },
    timeouts: { handshake: 5000, connect: 1500, idle: 3_600_000 },
    limits: { maxSessions: 10, maxHandshakes: 0 },
    rules: [
      { action: "deny", to: ["127.0.0.0/8", "::1/128"] },
      {
        action: "allow",
        from: ["2001:db8::/32"],
        to: [".example.test", "*"],
        ports: [443, "8000-8080"],
        commands: ["connect", "udp"],
        users: ["alice"],
      },
    ],
    shutdown: { grace: 0 },
    log: { format: "json", level: "debug" },
    admin: { listen: { host: "::", port: 9081 }, token: "correct-horse-battery-staple" },
    routes: [],
    bind: { acceptTimeout: 60_000, strictPeer: true },
    udp: { advertise: {}, nameCacheTtl: 30_000 },
  });
});

Deno.test("each family policy and log level is accepted", () => {
  for (
    const f of ["auto", "prefer-ipv6", "prefer-ipv4", "ipv6-only", "ipv4-only"]
  ) {
    assert.equal(parse(`resolver: {family: ${f}}`).resolver.family, f);
  }
  for (const l of ["debug", "info", "warning", "error"]) {
    assert.equal(parse(`log: {level: ${l}}`).log.level, l);
  }
});

Deno.test("anchors and aliases are resolved", () => {
  const config = parse(
    "timeouts:\n  handshake: &t 3s\n  connect: *t\n",
  );
  assert.equal(config.timeouts.connect, 3000);
  assertConfigError("timeouts:\n  connect: *nope\n", {
    path: "timeouts.connect",
    line: 2,
    column: 12,
    message: /unknown alias \*nope/,
  });
});

Deno.test("outbound keys are absent unless set", () => {
  const config = parse("outbound:\n  ipv6: 2001:db8::10\n");
  assert.deepEqual(config.outbound, { ipv6: "2001:db8::10" });
  assert.ok(!("ipv4" in config.outbound));
});

// --- errors -------------------------------------------------------------------

Deno.test("error: unbracketed IPv6 in listen, with the brief's exact message", () => {
  const e = assertConfigError(
    'listen:\n  - "[::1]:1080"\n  - 127.0.0.1:1080\n  - "::1:1080"\n',
    {
      path: "listen[2]",
      line: 4,
      column: 5,
      found: '"::1:1080"',
      expected: "HOST:PORT with an IP literal host (IPv6 in brackets)",
    },
  );
  assert.equal(
    e.message,
    'dualsocks.yaml:4:5: listen[2]: expected HOST:PORT with an IP literal host (IPv6 in brackets), found "::1:1080"',
  );
});

Deno.test("error: listen entries that are not IP literals or have bad ports", () => {
  for (
    const [item, found] of [
      ['"localhost:1080"', '"localhost:1080"'],
      ['"127.0.0.1"', '"127.0.0.1"'],
      ['"127.0.0.1:65536"', '"127.0.0.1:65536"'],
      ['"256.0.0.1:1"', '"256.0.0.1:1"'],
      ["1080", "1080"],
      ["[1, 2]", "a list"],
    ]
  ) {
    assertConfigError(`listen: [${item}]`, {
      path: "listen[0]",
      line: 1,
      column: 10,
      found,
    });
  }
  assertConfigError("listen: []", {
    path: "listen",
    line: 1,
    column: 9,
    found: "an empty list",
    expected: /non-empty list/,
  });
  assertConfigError('listen: "[::1]:1080"', {
    path: "listen",
    line: 1,
    column: 9,
    expected: /list of HOST:PORT/,
  });
  assertConfigError('listen: ["[::1]:1080", "[0::1]:1080"]', {
    path: "listen[1]",
    line: 1,
    column: 24,
    message: /duplicate "\[::1\]:1080"; already given as listen\[0\]/,
  });
  // Port 0 may repeat (each bind gets its own ephemeral port).
  assert.equal(parse('listen: ["[::1]:0", "[::1]:0"]').listen.length, 2);
});

Deno.test("error: unknown key, at every level", () => {
  const e = assertConfigError(
    "log:\n  level: info\ntimeouts:\n  handshake: 5s\n  idle: 0\n\n  conect: 3s\n",
    {
      path: "timeouts.conect",
      line: 7,
      column: 3,
      found: '"conect"',
      expected: "one of handshake, connect, idle",
    },
  );
  assert.equal(
    e.message,
    "dualsocks.yaml:7:3: timeouts.conect: unknown key; expected one of handshake, connect, idle",
  );
  assertConfigError("listn: []\n", {
    path: "listn",
    line: 1,
    column: 1,
    message: /unknown key; expected one of listen, protocols, users, resolver/,
  });
  assertConfigError("users:\n  - username: a\n    pasword: b\n", {
    path: "users[0].pasword",
    line: 3,
    column: 5,
    message: /unknown key; expected one of username, password, password_hash$/,
  });
  assertConfigError("rules:\n  - action: allow\n    port: [1]\n", {
    path: "rules[0].port",
    line: 3,
    column: 5,
    message: /expected one of action, from, to, ports, commands, users$/,
  });
  assertConfigError("resolver: {famliy: auto}", {
    path: "resolver.famliy",
    line: 1,
    column: 12,
  });
});

Deno.test("error: not a positive integer, with the brief's exact message", () => {
  const e = assertConfigError("limits:\n  max_sessions: many\n", {
    path: "limits.max_sessions",
    line: 2,
    column: 17,
  });
  assert.equal(
    e.message,
    'dualsocks.yaml:2:17: limits.max_sessions: expected a positive integer, found "many"',
  );
  for (const [v, found] of [["0", "0"], ["-1", "-1"], ["1.5", "1.5"]]) {
    assertConfigError(`limits: {max_sessions: ${v}}`, {
      path: "limits.max_sessions",
      line: 1,
      column: 24,
      found,
    });
  }
  assert.equal(parse("limits: {max_sessions: 1e3}").limits.maxSessions, 1000);
  // max_handshakes: 0 turns the gate off, so 0 is valid there but not below.
  assert.equal(parse("limits: {max_handshakes: 0}").limits.maxHandshakes, 0);
  assertConfigError("limits: {max_handshakes: -1}", {
    path: "limits.max_handshakes",
    line: 1,
    column: 26,
    found: "-1",
  });
});

Deno.test("error: enums list their choices", () => {
  assertConfigError("resolver:\n  family: ipv6\n", {
    path: "resolver.family",
    line: 2,
    column: 11,
    message:
      'dualsocks.yaml:2:11: resolver.family: expected one of auto, prefer-ipv6, prefer-ipv4, ipv6-only, ipv4-only, found "ipv6"',
  });
  assertConfigError("log: {format: xml}", {
    path: "log.format",
    line: 1,
    column: 15,
    message: /expected text or json, found "xml"$/,
  });
  assertConfigError("log: {level: warn}", {
    path: "log.level",
    line: 1,
    column: 14,
    message: /expected one of debug, info, warning, error, found "warn"$/,
  });
});

Deno.test("error: durations", () => {
  assertConfigError("timeouts:\n  idle: forever\n", {
    path: "timeouts.idle",
    line: 2,
    column: 9,
    found: '"forever"',
    expected: /^a duration such as 250ms/,
  });
  assertConfigError("timeouts: {idle: -1}", {
    path: "timeouts.idle",
    line: 1,
    column: 18,
    found: "-1",
  });
  assertConfigError("timeouts: {connect: 0}", {
    path: "timeouts.connect",
    line: 1,
    column: 21,
    expected: /^a positive duration/,
  });
  assertConfigError("timeouts: {handshake: 0s}", {
    path: "timeouts.handshake",
    expected: /^a positive duration/,
  });
  assertConfigError("shutdown: {grace: 1000h}", {
    path: "shutdown.grace",
    line: 1,
    column: 19,
    expected: /at most 596h/,
  });
  assertConfigError("resolver: {happy_eyeballs_delay: [1]}", {
    path: "resolver.happy_eyeballs_delay",
    found: "a list",
  });
});

Deno.test("error: outbound addresses must match their family", () => {
  assertConfigError("outbound:\n  ipv4: 2001:db8::1\n", {
    path: "outbound.ipv4",
    line: 2,
    column: 9,
    message: /expected an IPv4 literal such as 192.0.2.10, found "2001:db8::1"$/,
  });
  assertConfigError("outbound:\n  ipv6: 192.0.2.1\n", {
    path: "outbound.ipv6",
    line: 2,
    column: 9,
    message: /expected an IPv6 literal/,
  });
  assertConfigError('outbound: {ipv6: "::ffff:192.0.2.1"}', {
    path: "outbound.ipv6",
  });
  assertConfigError("outbound: {ipv4: example.test}", {
    path: "outbound.ipv4",
  });
});

Deno.test("error: nameservers", () => {
  assertConfigError(
    'resolver:\n  nameservers: ["192.0.2.1", "dns.example:53"]\n',
    {
      path: "resolver.nameservers[1]",
      line: 2,
      column: 30,
      found: '"dns.example:53"',
      expected: /^an IP literal with an optional :PORT/,
    },
  );
  assertConfigError('resolver:\n  nameservers:\n    - "[2001:db8::53]:0"\n', {
    path: "resolver.nameservers[0]",
    line: 3,
    column: 7,
    found: '"[2001:db8::53]:0"',
    expected: /:PORT from 1 to 65535/,
  });
  assertConfigError('resolver: {nameservers: ["192.0.2.1", "192.0.2.1:53"]}', {
    path: "resolver.nameservers[1]",
    message: /duplicate "192.0.2.1:53"/,
  });
});

Deno.test("error: users", () => {
  assertConfigError("users:\n  - username: alice\n", {
    path: "users[0].password",
    line: 2,
    column: 5,
    message: /required key is missing/,
  });
  assertConfigError("users:\n  - username:\n    password: x\n", {
    path: "users[0].username",
    line: 2,
    column: 5,
  });
  assertConfigError(`users: [{username: "${"x".repeat(256)}", password: p}]`, {
    path: "users[0].username",
    line: 1,
    column: 20,
    expected: "a user name of 1-255 UTF-8 bytes",
  });
  // 128 two-byte characters are 256 bytes: counted in bytes, not characters.
  assertConfigError(`users: [{username: "${"é".repeat(128)}", password: p}]`, {
    path: "users[0].username",
  });
  assertConfigError("users: [{username: 42, password: p}]", {
    path: "users[0].username",
    found: "42",
  });
  assertConfigError("users: alice", { path: "users", found: '"alice"' });
  assertConfigError(
    "users:\n  - {username: a, password: b}\n  - {username: a, password: c}\n",
    {
      path: "users[1]",
      line: 3,
      column: 5,
      message: /duplicate "a"; already given as users\[0\]/,
    },
  );
});

Deno.test("error: invalid passwords are never echoed", () => {
  const secret = "s3cr3t-".repeat(40); // 280 bytes
  const e = assertConfigError(
    `users:\n  - username: a\n    password: "${secret}"\n`,
    {
      path: "users[0].password",
      line: 3,
      column: 15,
      found: "a string of 280 bytes",
    },
  );
  assert.ok(!e.message.includes("s3cr3t"));
  const n = assertConfigError("users: [{username: a, password: 987654}]", {
    path: "users[0].password",
  });
  assert.ok(!n.message.includes("987654"), n.message);
});

Deno.test("error: rules", () => {
  assertConfigError("rules:\n  - to: [example.test]\n", {
    path: "rules[0].action",
    line: 2,
    column: 5,
    message:
      "dualsocks.yaml:2:5: rules[0].action: required key is missing or empty; expected allow or deny",
  });
  assertConfigError("rules:\n  - action: permit\n", {
    path: "rules[0].action",
    line: 2,
    column: 13,
    message: /expected allow or deny, found "permit"$/,
  });
  assertConfigError(
    'rules:\n  - action: allow\n    from: ["10.0.0.0/8", "10.0.0.0/33"]\n',
    {
      path: "rules[0].from[1]",
      line: 3,
      column: 26,
      found: '"10.0.0.0/33"',
      expected: /^a CIDR such as/,
    },
  );
  assertConfigError("rules:\n  - action: allow\n    from: [example.test]\n", {
    path: "rules[0].from[0]",
    line: 3,
    column: 12,
  });
  assertConfigError(
    'rules:\n  - action: allow\n    to: ["10.0.0.256"]\n',
    { path: "rules[0].to[0]", line: 3, column: 10 },
  );
  assertConfigError(
    'rules:\n  - action: deny\n  - action: allow\n    ports: [443, "9000-8000"]\n',
    {
      path: "rules[1].ports[1]",
      line: 4,
      column: 18,
      found: '"9000-8000"',
    },
  );
  assertConfigError("rules: [{action: allow, ports: [70000]}]", {
    path: "rules[0].ports[0]",
  });
  assertConfigError("rules: [{action: allow, commands: [CONNECT]}]", {
    path: "rules[0].commands[0]",
    message: /expected one of connect, bind, udp, found "CONNECT"$/,
  });
  assertConfigError("rules: [{action: allow, from: []}]", {
    path: "rules[0].from",
    found: "an empty list",
    expected: /^a non-empty list/,
  });
  assertConfigError("rules: [{action: allow, to: example.test}]", {
    path: "rules[0].to",
    found: '"example.test"',
  });
  assertConfigError("rules: {action: allow}", {
    path: "rules",
    found: "a mapping",
  });
});

Deno.test("error: rule users must be configured users", () => {
  assertConfigError(
    "rules:\n  - action: allow\n    users: [alice, bob]\nusers:\n  - {username: alice, password: x}\n",
    {
      path: "rules[0].users[1]",
      line: 3,
      column: 20,
      message: /unknown user "bob"; expected one of the configured users \(alice\)$/,
    },
  );
  assertConfigError("rules:\n  - action: allow\n    users: [bob]\n", {
    path: "rules[0].users[0]",
    message: /no users are configured/,
  });
});

Deno.test("error: an unquoted * in rules gets a hint", () => {
  assertConfigError("rules:\n  - action: allow\n    to: [*]\n", {
    path: "",
    line: 3,
    column: 10,
    message: /invalid YAML: .*\(write "\*" in quotes\)$/,
  });
});

Deno.test("error: YAML syntax errors carry the parser's position", () => {
  const e = assertConfigError('listen: [\n  "[::1]:1080"\nlog:\n', {
    path: "",
    expected: "valid YAML",
  });
  assert.match(e.message, /^dualsocks\.yaml:\d+:\d+: invalid YAML: /);
  assertConfigError("timeouts:\n\tidle: 0\n", {
    path: "",
    line: 2,
    column: 1,
    message: /invalid YAML: Tabs are not allowed/,
  });
  assertConfigError("listen: []\n---\nlog: {}\n", {
    path: "",
    line: 2,
    column: 1,
    message: /multiple documents/,
  });
});

Deno.test("error: duplicate keys name the path and both positions", () => {
  assertConfigError("log:\n  level: info\n  format: json\n  level: debug\n", {
    path: "log.level",
    line: 4,
    column: 3,
    message: "dualsocks.yaml:4:3: log.level: duplicate key; first given at line 2, column 3",
  });
  assertConfigError("limits: {}\nlog: {}\nlimits: {}\n", {
    path: "limits",
    line: 3,
    column: 1,
  });
});

Deno.test("error: the top level must be a mapping", () => {
  assertConfigError("- listen\n", {
    path: "",
    line: 1,
    column: 1,
    message: "dualsocks.yaml:1:1: expected a mapping of settings at the top level, found a list",
  });
  assertConfigError("hello\n", {
    path: "",
    line: 1,
    column: 1,
    found: '"hello"',
  });
  assertConfigError("42\n", { path: "", found: "42" });
});

Deno.test("error: a section that is not a mapping", () => {
  assertConfigError("timeouts: 10s\n", {
    path: "timeouts",
    line: 1,
    column: 11,
    message:
      'dualsocks.yaml:1:11: timeouts: expected a mapping with keys handshake, connect, idle, found "10s"',
  });
  assertConfigError("? [a]\n: 1\n", { path: "", line: 1, column: 3 });
});

Deno.test("ConfigError can be built directly and has the documented fields", () => {
  const e = new ConfigError({
    file: "f.yaml",
    path: "a.b",
    line: 3,
    column: 4,
    expected: "x",
    found: "y",
  });
  assert.ok(e instanceof Error);
  assert.equal(e.message, "f.yaml:3:4: a.b: expected x, found y");
  const noPos = new ConfigError({
    file: "f",
    path: "",
    expected: "x",
    found: "y",
  });
  assert.equal(noPos.message, "f: expected x, found y");
  assert.equal(noPos.line, undefined);
});

// --- loadConfig ------------------------------------------------------------------

Deno.test("loadConfig reads a file and reports errors against its path", async () => {
  const path = await Deno.makeTempFile({ suffix: ".yaml" });
  try {
    await Deno.writeTextFile(path, "limits:\n  max_sessions: 7\n");
    assert.equal((await loadConfig(path)).limits.maxSessions, 7);
    await Deno.writeTextFile(path, "limits:\n  max_sessions: 0\n");
    await assert.rejects(() => loadConfig(path), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.equal(e.file, path);
      assert.equal(e.line, 2);
      assert.equal(e.column, 17);
      assert.ok(e.message.startsWith(`${path}:2:17: limits.max_sessions: `));
      return true;
    });
  } finally {
    await Deno.remove(path);
  }
});

Deno.test("loadConfig on a missing file", async () => {
  const dir = await Deno.makeTempDir();
  const path = `${dir}/nope.yaml`;
  try {
    await assert.rejects(() => loadConfig(path), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.equal(e.message, `cannot read config file ${path}: not found`);
      assert.equal(e.file, path);
      assert.equal(e.line, undefined);
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadConfig on a directory reports the OS reason", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(() => loadConfig(dir), (e: unknown) => {
      assert.ok(e instanceof ConfigError);
      assert.ok(e.message.startsWith(`cannot read config file ${dir}: `));
      return true;
    });
  } finally {
    await Deno.remove(dir);
  }
});

Deno.test({
  name: "loadConfig without read permission tells how to grant it",
  permissions: { read: false },
  fn: async () => {
    await assert.rejects(
      () => loadConfig("/etc/dualsocks.yaml"),
      (e: unknown) => {
        assert.ok(e instanceof ConfigError);
        assert.equal(
          e.message,
          "cannot read config file /etc/dualsocks.yaml: the process lacks read permission; run with --allow-read=/etc/dualsocks.yaml",
        );
        return true;
      },
    );
  },
});

// --- formatConfig ---------------------------------------------------------------

const RESTORED_TOKEN = "restored-token-0123456789";

/** What an operator does to a saved copy of check-config's output: put secrets back. */
function restoreSecrets(text: string): string {
  return text.replaceAll("<redacted-token>", RESTORED_TOKEN).replaceAll("<redacted>", "restored");
}

Deno.test("formatConfig round-trips every setting and redacts passwords", () => {
  const config = parse(FULL);
  const text = formatConfig(config);
  assert.ok(!text.includes("secret"), text);
  assert.ok(!text.includes("pass word"), text);
  assert.match(text, /password: <redacted>/);
  assert.ok(!text.includes("correct-horse"), text);
  assert.match(text, /token: <redacted-token>/);
  assert.match(text, /happy_eyeballs_delay: 300ms/);
  assert.match(text, /max_sessions: 10/);
  // Saved as it is, the output would give every user and the admin API a
  // secret anyone can know: it is refused, naming the key and its line.
  const refused = assertConfigError(text, {
    path: "users[0].password",
    expected: "a password of your own",
  });
  assert.match(refused.message, /the placeholder <redacted>, which check-config/);
  assertConfigError(text.replaceAll("<redacted>", "restored"), {
    path: "admin.token",
    expected: "a token of your own",
  });
  const back = parse(restoreSecrets(text));
  assert.deepEqual(back.users.map((u) => u.password), ["restored", "restored"]);
  assert.equal(back.admin.token, RESTORED_TOKEN);
  back.users = config.users;
  back.admin.token = config.admin.token;
  assert.deepEqual(back, config);
});

Deno.test("formatConfig round-trips the defaults and odd values", () => {
  assert.deepEqual(parse(formatConfig(DEFAULT_CONFIG)), DEFAULT_CONFIG);
  const config = parse(
    'users: [{username: "123", password: "yes"}]\n' +
      "timeouts: {handshake: 1234ms, connect: 90s, idle: 0}\n" +
      'rules: [{action: allow, to: ["*"], users: ["123"], ports: ["1-2", 3]}]\n',
  );
  const back = parse(restoreSecrets(formatConfig(config)));
  assert.equal(back.users[0].username, "123");
  back.users = config.users;
  assert.deepEqual(back, config);
  assert.deepEqual(back.timeouts, {
    handshake: 1234,
    connect: 90_000,
    idle: 0,
  });
});

// --- parseHostPort ----------------------------------------------------------------

Deno.test("parseHostPort accepts IP literals and normalizes them", () => {
  assert.deepEqual(parseHostPort("[::1]:1080"), { host: "::1", port: 1080 });
  assert.deepEqual(parseHostPort("127.0.0.1:0"), {
    host: "127.0.0.1",
    port: 0,
  });
  assert.deepEqual(parseHostPort("0.0.0.0:65535"), {
    host: "0.0.0.0",
    port: 65535,
  });
  assert.deepEqual(parseHostPort("[2001:DB8:0::1]:80"), {
    host: "2001:db8::1",
    port: 80,
  });
  assert.deepEqual(parseHostPort("[::ffff:127.0.0.1]:80"), {
    host: "127.0.0.1",
    port: 80,
  });
  assert.deepEqual(parseHostPort(" [::]:1 "), { host: "::", port: 1 });
});

Deno.test("parseHostPort with a default port accepts bare literals", () => {
  const o = { defaultPort: 53 };
  assert.deepEqual(parseHostPort("192.0.2.53", o), {
    host: "192.0.2.53",
    port: 53,
  });
  assert.deepEqual(parseHostPort("2001:db8::53", o), {
    host: "2001:db8::53",
    port: 53,
  });
  assert.deepEqual(parseHostPort("[2001:db8::53]", o), {
    host: "2001:db8::53",
    port: 53,
  });
  assert.deepEqual(parseHostPort("[2001:db8::53]:5353", o), {
    host: "2001:db8::53",
    port: 5353,
  });
  // Unbracketed, the whole text is the address: the last group is not a port.
  assert.deepEqual(parseHostPort("::1:1080", o), {
    host: "::1:1080",
    port: 53,
  });
});

Deno.test("parseHostPort rejects everything else with a TypeError", () => {
  for (
    const bad of [
      "::1:1080",
      "::1",
      "[::1]",
      "[::1]1080",
      "127.0.0.1",
      "127.0.0.1:",
      "127.0.0.1:65536",
      "127.0.0.1:-1",
      "127.0.0.1:http",
      "localhost:1080",
      "example.test:80",
      "[example.test]:80",
      "[fe80::1%eth0]:80",
      "1.2.3:80",
      "",
      ":1080",
    ]
  ) {
    assert.throws(
      () => parseHostPort(bad),
      (e: unknown) => {
        assert.ok(e instanceof TypeError, bad);
        assert.equal(
          e.message,
          `expected HOST:PORT with an IP literal host (IPv6 in brackets), found ${
            JSON.stringify(bad)
          }`,
        );
        return true;
      },
    );
  }
  assert.throws(
    () => parseHostPort("dns.example", { defaultPort: 53 }),
    /expected an IP literal with an optional :PORT/,
  );
});

// --- parseDuration ----------------------------------------------------------------

Deno.test("parseDuration accepts numbers of seconds and unit strings", () => {
  const cases: [unknown, number][] = [
    [0, 0],
    [10, 10_000],
    [1.5, 1500],
    [0.25, 250],
    ["0", 0],
    ["10", 10_000],
    ["250ms", 250],
    ["10s", 10_000],
    ["1.5s", 1500],
    ["5m", 300_000],
    ["1h", 3_600_000],
    ["1m30s", 90_000],
    ["1h2m3s4ms", 3_723_004],
    [" 7s ", 7000],
    ["0.5ms", 1], // rounded to whole milliseconds
    ["596h", 596 * 3_600_000],
  ];
  for (const [input, ms] of cases) {
    assert.equal(parseDuration(input), ms, JSON.stringify(input));
  }
});

Deno.test("parseDuration returns null for non-durations", () => {
  for (
    const bad of [
      -1,
      "-1s",
      NaN,
      Infinity,
      "",
      "s",
      "ms",
      "10 s",
      "10sec",
      "1d",
      "1.s",
      ".5s",
      "5s5",
      "10S",
      "1e3",
      "597h", // beyond what timers can hold
      null,
      undefined,
      true,
      [10],
      { s: 1 },
    ]
  ) {
    assert.equal(parseDuration(bad), null, String(bad));
  }
});

// --- admin ----------------------------------------------------------------------

Deno.test("admin: listen address, off, and token", () => {
  assert.deepEqual(parse("admin:\n  listen: 127.0.0.1:0\n").admin, {
    listen: { host: "127.0.0.1", port: 0 },
  });
  assert.deepEqual(parse('admin: {listen: "[::1]:9090"}').admin, {
    listen: { host: "::1", port: 9090 },
  });
  assert.equal(parse("admin: {listen: off}").admin.listen, null);
  assert.equal(parse("admin: {listen: false}").admin.listen, null);
  // No value means the default, as everywhere in the file.
  assert.deepEqual(parse("admin: {listen: ~}").admin, DEFAULT_CONFIG.admin);
  const token = "0123456789abcdef";
  assert.equal(parse(`admin: {token: ${token}}`).admin.token, token);
  assert.equal(formatConfig(parse("admin: {listen: off}")).includes("listen: off"), true);
  assert.equal(parse(formatConfig(parse("admin: {listen: off}"))).admin.listen, null);
});

Deno.test("error: admin listen and token", () => {
  assertConfigError("admin:\n  listen: ::1:9080\n", {
    path: "admin.listen",
    line: 2,
    column: 11,
    expected: "HOST:PORT with an IP literal host (IPv6 in brackets), or off",
    found: '"::1:9080"',
  });
  assertConfigError("admin: {listen: on}", { path: "admin.listen", found: '"on"' });
  const short = assertConfigError("admin: {token: hunter2}", {
    path: "admin.token",
    line: 1,
    column: 16,
    expected: "a token of 16-4096 printable ASCII characters without spaces",
    found: "a string of 7 characters",
  });
  assert.ok(!short.message.includes("hunter2"), short.message);
  const spaced = assertConfigError('admin: {token: "correct horse battery staple"}', {
    path: "admin.token",
    found: "a string of 28 characters with spaces or non-ASCII characters",
  });
  assert.ok(!spaced.message.includes("horse"), spaced.message);
  assertConfigError("admin: {token: 12345678901234567890}", {
    path: "admin.token",
    found: "a number value",
  });
});

Deno.test("error: an admin listener beyond loopback needs a token", () => {
  for (const listen of ["0.0.0.0:9080", '"[::]:9080"', "192.0.2.1:9080", '"[2001:db8::1]:1"']) {
    const e = assertConfigError(`log: {level: info}\nadmin:\n  listen: ${listen}\n`, {
      path: "admin.token",
      line: 3,
      column: 11,
      expected: "a token of 16-4096 printable ASCII characters without spaces",
      found: "nothing",
    });
    assert.match(e.message, /required when admin\.listen \(.+\) is not a loopback address/);
  }
  const ok = parse('admin:\n  listen: "[::]:9080"\n  token: 0123456789abcdef0123\n');
  assert.equal(ok.admin.token, "0123456789abcdef0123");
  for (const listen of ["127.0.0.2:1", '"[::1]:1"', '"[::ffff:127.0.0.1]:1"']) {
    assert.equal(parse(`admin: {listen: ${listen}}`).admin.token, undefined, listen);
  }
});

Deno.test("isLoopback", () => {
  for (const h of ["127.0.0.1", "127.255.0.9", "::1", "[::1]", "::ffff:127.0.0.1"]) {
    assert.ok(isLoopback(h), h);
  }
  for (const h of ["0.0.0.0", "::", "192.0.2.1", "2001:db8::1", "::2", "localhost", ""]) {
    assert.ok(!isLoopback(h), h);
  }
});

Deno.test("configDocument is plain data that reads back, secrets redacted", () => {
  const config = parse(FULL);
  const doc = configDocument(config);
  const json = JSON.stringify(doc);
  assert.ok(!json.includes("secret") && !json.includes("correct-horse"), json);
  assert.equal(doc.admin.listen, "[::]:9081");
  assert.equal(doc.timeouts.idle, "1h");
  // JSON is YAML: the document parses back to the same configuration, once
  // real secrets replace the placeholders (which are refused).
  assertConfigError(json, { path: "users[0].password" });
  const back = parse(restoreSecrets(json));
  back.users = config.users;
  back.admin.token = config.admin.token;
  assert.deepEqual(back, config);
});

Deno.test("routes, bind and udp: parsed, defaulted, redacted and round-tripped", () => {
  const c = parse(`routes:
  - to: [".corp.test", "198.51.100.0/24"]
    ports: [443]
    via: ["socks5://[2001:db8::7]:1080", "socks5://bob:s3cret@192.0.2.8:1080"]
bind:
  accept_timeout: 30s
  strict_peer: false
udp:
  advertise:
    ipv4: 203.0.113.5
  port_range: "40000-40100"
  name_cache_ttl: 10s
`);
  assert.deepEqual(c.routes, [{
    to: [".corp.test", "198.51.100.0/24"],
    ports: [443],
    via: ["socks5://[2001:db8::7]:1080", "socks5://bob:s3cret@192.0.2.8:1080"],
  }]);
  assert.deepEqual(c.bind, { acceptTimeout: 30_000, strictPeer: false });
  assert.deepEqual(c.udp, {
    advertise: { ipv4: "203.0.113.5" },
    portRange: [40000, 40100],
    nameCacheTtl: 10_000,
  });
  const text = formatConfig(c);
  assert.doesNotMatch(text, /s3cret/);
  const again = parse(text);
  assert.deepEqual({ ...again, routes: [] }, { ...c, routes: [] });
  assert.equal(again.routes[0].via[1], "socks5://bob:<redacted>@192.0.2.8:1080");
  // A URL without a scheme, and a password with a raw "@", are redacted whole.
  const bare = parse(
    `routes:\n  - via: ["bob:hunter2@192.0.2.8:1080", "socks5://bob:hun@ter2@192.0.2.9"]\n`,
  );
  assert.deepEqual(configDocument(bare).routes[0].via, [
    "bob:<redacted>@192.0.2.8:1080",
    "socks5://bob:<redacted>@192.0.2.9",
  ]);
  assert.doesNotMatch(formatConfig(bare), /hunter2|ter2/);
  // Defaults.
  assert.deepEqual(parse("{}").bind, { acceptTimeout: 60_000, strictPeer: true });
  assert.deepEqual(parse("{}").udp, { advertise: {}, nameCacheTtl: 30_000 });
  assert.deepEqual(parse("{}").routes, []);
});

Deno.test("routes, bind and udp: errors name the key, line and column", () => {
  assertConfigError("routes:\n  - to: ['*']\n", {
    path: "routes[0].via",
    line: 2,
    column: 5,
    message: /required key is missing/,
  });
  assertConfigError("routes:\n  - via: ['http://192.0.2.1:80']\n", {
    path: "routes[0].via[0]",
    line: 2,
    column: 11,
    expected: /gateway URL/,
  });
  const e = assertConfigError("routes:\n  - via: ['socks5://u:hunter2@']\n", {
    path: "routes[0].via[0]",
  });
  assert.doesNotMatch(e.message, /hunter2/, "a password never reaches an error message");
  // Without a scheme, and with a raw "@" in the password, too.
  const bare = assertConfigError("routes:\n  - via: ['alice:hun@ter2@192.0.2.1:0']\n", {
    path: "routes[0].via[0]",
  });
  assert.match(bare.message, /alice:<redacted>@192\.0\.2\.1:0/);
  assert.doesNotMatch(bare.message, /hun|ter2/, "no part of the password is shown");
  assertConfigError("udp:\n  port_range: 50000-40000\n", {
    path: "udp.port_range",
    line: 2,
    column: 15,
    expected: /LOW-HIGH/,
  });
  assertConfigError("udp:\n  advertise:\n    ipv6: 192.0.2.1\n", {
    path: "udp.advertise.ipv6",
    line: 3,
    column: 11,
  });
  assertConfigError("bind:\n  strict_peer: maybe\n", {
    path: "bind.strict_peer",
    expected: "true or false",
  });
});

Deno.test("optionsFromConfig passes the limits on to the gateway", () => {
  const options = optionsFromConfig(parse("limits: {max_sessions: 7, max_handshakes: 3}"));
  assert.equal(options.maxSessions, 7);
  assert.equal(options.maxHandshakes, 3);
  assert.equal(optionsFromConfig(DEFAULT_CONFIG).maxHandshakes, 32);
});
