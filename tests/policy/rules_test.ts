import assert from "node:assert/strict";
import {
  combineDecisions,
  compileRules,
  RULE_LIST_FIELDS,
  type RuleCommand,
  type RuleConfig,
  type RuleContext,
} from "../../src/policy/rules.ts";

function ctx(
  dest: string,
  opts: {
    client?: string;
    port?: number;
    user?: string;
    command?: RuleCommand;
  } = {},
): RuleContext {
  const c: RuleContext = {
    client: { host: opts.client ?? "127.0.0.1", port: 40000 },
    command: opts.command ?? "connect",
    destination: { host: dest, port: opts.port ?? 443 },
  };
  if (opts.user !== undefined) c.user = opts.user;
  return c;
}

Deno.test("no rules: everything is allowed, with no rule index", () => {
  const check = compileRules([]);
  assert.deepEqual(check(ctx("example.test")), { action: "allow" });
  assert.deepEqual(check(ctx("::1", { command: "udp" })), { action: "allow" });
  assert.equal(check(ctx("x.test")).rule, undefined);
});

Deno.test("rules present and none matches: denied by default", () => {
  const check = compileRules([{ action: "allow", to: ["example.test"] }]);
  assert.deepEqual(check(ctx("example.test")), { action: "allow", rule: 0 });
  const d = check(ctx("other.test"));
  assert.deepEqual(d, { action: "deny" });
  assert.ok(!("rule" in d));
});

Deno.test("first match wins", () => {
  const check = compileRules([
    { action: "deny", to: ["bad.example.test"] },
    { action: "allow", to: [".example.test"] },
    { action: "deny" },
  ]);
  assert.deepEqual(check(ctx("bad.example.test")), { action: "deny", rule: 0 });
  assert.deepEqual(check(ctx("good.example.test")), { action: "allow", rule: 1 });
  assert.deepEqual(check(ctx("elsewhere.test")), { action: "deny", rule: 2 });
  const reversed = compileRules([
    { action: "allow", to: [".example.test"] },
    { action: "deny", to: ["bad.example.test"] },
  ]);
  assert.deepEqual(reversed(ctx("bad.example.test")), { action: "allow", rule: 0 });
});

Deno.test("a rule with only an action matches everything", () => {
  const check = compileRules([{ action: "allow" }]);
  for (const dest of ["example.test", "192.0.2.1", "2001:db8::1", "[::1]"]) {
    for (const command of ["connect", "bind", "udp"] as const) {
      assert.deepEqual(check(ctx(dest, { command, client: "::1", port: 1 })), {
        action: "allow",
        rule: 0,
      });
    }
  }
});

Deno.test("exact names versus suffixes", () => {
  const check = compileRules([
    { action: "allow", to: ["example.test"] },
    { action: "allow", to: [".corp.test"] },
  ]);
  assert.equal(check(ctx("example.test")).rule, 0);
  assert.equal(check(ctx("www.example.test")).action, "deny"); // exact only
  assert.equal(check(ctx("corp.test")).rule, 1); // the suffix's own name
  assert.equal(check(ctx("a.corp.test")).rule, 1);
  assert.equal(check(ctx("a.b.corp.test")).rule, 1);
  assert.equal(check(ctx("evilcorp.test")).action, "deny"); // not a label boundary
  assert.equal(check(ctx("corp.test.evil")).action, "deny");
  assert.equal(check(ctx("test")).action, "deny");
});

Deno.test("name matching is case-insensitive and ignores a trailing dot", () => {
  const check = compileRules([
    { action: "allow", to: ["Example.TEST"] },
    { action: "allow", to: [".Corp.Test."] },
  ]);
  assert.equal(check(ctx("EXAMPLE.test")).rule, 0);
  assert.equal(check(ctx("example.test.")).rule, 0);
  assert.equal(check(ctx("WWW.CORP.TEST")).rule, 1);
  assert.equal(check(ctx("www.corp.test.")).rule, 1);
});

Deno.test("name rules never match literals; CIDR rules never match names", () => {
  const names = compileRules([{ action: "allow", to: [".test", "localhost"] }]);
  assert.equal(names(ctx("127.0.0.1")).action, "deny");
  assert.equal(names(ctx("::1")).action, "deny");
  assert.equal(names(ctx("localhost")).rule, 0);
  const cidrs = compileRules([{ action: "deny", to: ["0.0.0.0/0", "::/0"] }]);
  assert.equal(cidrs(ctx("192.0.2.1")).rule, 0);
  assert.equal(cidrs(ctx("2001:db8::1")).rule, 0);
  assert.deepEqual(cidrs(ctx("example.test")), { action: "deny" }); // default
  assert.equal(cidrs(ctx("example.test")).rule, undefined);
});

Deno.test('"*" matches any destination, names and literals', () => {
  const check = compileRules([{ action: "allow", to: ["*"], ports: [80] }]);
  assert.equal(check(ctx("example.test", { port: 80 })).rule, 0);
  assert.equal(check(ctx("192.0.2.1", { port: 80 })).rule, 0);
  assert.equal(check(ctx("[2001:db8::1]", { port: 80 })).rule, 0);
  assert.equal(check(ctx("example.test", { port: 81 })).action, "deny");
});

Deno.test("destination CIDRs: IPv4, IPv6, bracketed, bare host, mixed list", () => {
  const check = compileRules([{
    action: "deny",
    to: ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7", "[fe80::]/10", "example.test"],
  }]);
  for (
    const d of [
      "10.1.2.3",
      "2001:db8:ffff::1",
      "[2001:DB8::5]",
      "192.0.2.7",
      "fe80::1",
      "example.test",
    ]
  ) {
    assert.equal(check(ctx(d)).rule, 0, d);
  }
  for (const d of ["11.0.0.1", "2001:db9::1", "192.0.2.8", "fec0::1", "a.example.test"]) {
    assert.equal(check(ctx(d)).rule, undefined, d);
  }
});

Deno.test("CIDR prefix boundaries", () => {
  const check = compileRules([{
    action: "allow",
    from: ["192.168.1.128/25", "2001:db8:0:1::/64", "0.0.0.0/32"],
  }]);
  assert.equal(check(ctx("x.test", { client: "192.168.1.128" })).rule, 0);
  assert.equal(check(ctx("x.test", { client: "192.168.1.255" })).rule, 0);
  assert.equal(check(ctx("x.test", { client: "192.168.1.127" })).rule, undefined);
  assert.equal(check(ctx("x.test", { client: "2001:db8:0:1:ffff::1" })).rule, 0);
  assert.equal(check(ctx("x.test", { client: "2001:db8:0:2::1" })).rule, undefined);
  assert.equal(check(ctx("x.test", { client: "0.0.0.0" })).rule, 0);
  // High-bit addresses (signed 32-bit pitfalls).
  const high = compileRules([{ action: "allow", from: ["255.255.255.255/32", "128.0.0.0/1"] }]);
  assert.equal(high(ctx("x", { client: "255.255.255.255" })).rule, 0);
  assert.equal(high(ctx("x", { client: "200.1.2.3" })).rule, 0);
  assert.equal(high(ctx("x", { client: "127.255.255.255" })).rule, undefined);
  const v6high = compileRules([{ action: "allow", from: ["ffff::/16", "8000::/1"] }]);
  assert.equal(v6high(ctx("x", { client: "ffff::1" })).rule, 0);
  assert.equal(v6high(ctx("x", { client: "8000::1" })).rule, 0);
  assert.equal(v6high(ctx("x", { client: "7fff::1" })).rule, undefined);
});

Deno.test("IPv4-mapped IPv6 clients match IPv4 CIDRs, not IPv6 ones", () => {
  const check = compileRules([
    { action: "allow", from: ["127.0.0.0/8"] },
    { action: "deny", from: ["::/0"] },
  ]);
  assert.equal(check(ctx("x.test", { client: "::ffff:127.0.0.1" })).rule, 0);
  assert.equal(check(ctx("x.test", { client: "[::ffff:7f00:1]" })).rule, 0);
  assert.equal(check(ctx("x.test", { client: "::1" })).rule, 1);
  assert.equal(check(ctx("x.test", { client: "::ffff:10.0.0.1" })).rule, undefined);
  // A mapped CIDR is the IPv4 CIDR it denotes.
  const mapped = compileRules([{ action: "allow", from: ["::ffff:10.0.0.0/104"] }]);
  assert.equal(mapped(ctx("x", { client: "10.9.9.9" })).rule, 0);
  assert.equal(mapped(ctx("x", { client: "::ffff:10.9.9.9" })).rule, 0);
  assert.equal(mapped(ctx("x", { client: "11.0.0.1" })).rule, undefined);
  // Mapped destinations match IPv4 CIDRs too.
  const dest = compileRules([{ action: "deny", to: ["127.0.0.0/8"] }]);
  assert.equal(dest(ctx("::ffff:127.0.0.2")).rule, 0);
});

Deno.test("a client that is not an IP literal never matches a from rule", () => {
  const check = compileRules([{ action: "allow", from: ["0.0.0.0/0", "::/0"] }]);
  assert.equal(check(ctx("x", { client: "not-an-ip" })).action, "deny");
});

Deno.test("ports: single values and ranges, inclusive", () => {
  const check = compileRules([{ action: "allow", ports: [443, "8000-8080", " 22 ", "0"] }]);
  for (const port of [443, 8000, 8042, 8080, 22, 0]) {
    assert.equal(check(ctx("x.test", { port })).rule, 0, String(port));
  }
  for (const port of [442, 444, 7999, 8081, 21, 65535]) {
    assert.equal(check(ctx("x.test", { port })).rule, undefined, String(port));
  }
  const full = compileRules([{ action: "deny", ports: ["0-65535"] }]);
  assert.equal(full(ctx("x", { port: 65535 })).rule, 0);
});

Deno.test("commands", () => {
  const check = compileRules([
    { action: "deny", commands: ["bind", "udp"] },
    { action: "allow", commands: ["connect"] },
  ]);
  assert.deepEqual(check(ctx("x", { command: "bind" })), { action: "deny", rule: 0 });
  assert.deepEqual(check(ctx("x", { command: "udp" })), { action: "deny", rule: 0 });
  assert.deepEqual(check(ctx("x", { command: "connect" })), { action: "allow", rule: 1 });
});

Deno.test("users: exact, case-sensitive, never matching anonymous requests", () => {
  const check = compileRules([
    { action: "allow", users: ["alice", "Bob"] },
    { action: "deny", to: ["*"] },
  ]);
  assert.equal(check(ctx("x", { user: "alice" })).rule, 0);
  assert.equal(check(ctx("x", { user: "Bob" })).rule, 0);
  assert.equal(check(ctx("x", { user: "bob" })).rule, 1);
  assert.equal(check(ctx("x", { user: "ALICE" })).rule, 1);
  assert.equal(check(ctx("x")).rule, 1);
});

Deno.test("all fields of a rule must match together", () => {
  const check = compileRules([{
    action: "allow",
    from: ["2001:db8::/32"],
    to: [".example.test"],
    ports: [443],
    commands: ["connect"],
    users: ["alice"],
  }]);
  const ok = { client: "2001:db8::1", port: 443, user: "alice", command: "connect" as const };
  assert.equal(check(ctx("www.example.test", ok)).rule, 0);
  assert.equal(check(ctx("www.example.org", ok)).rule, undefined);
  assert.equal(check(ctx("www.example.test", { ...ok, client: "192.0.2.1" })).rule, undefined);
  assert.equal(check(ctx("www.example.test", { ...ok, port: 80 })).rule, undefined);
  assert.equal(check(ctx("www.example.test", { ...ok, user: "bob" })).rule, undefined);
  assert.equal(check(ctx("www.example.test", { ...ok, command: "bind" })).rule, undefined);
});

Deno.test("decisions are frozen and reused between calls", () => {
  const check = compileRules([{ action: "allow", to: ["a.test"] }]);
  const a = check(ctx("a.test"));
  assert.ok(Object.isFrozen(a));
  assert.equal(check(ctx("a.test")), a);
  assert.equal(check(ctx("b.test")), check(ctx("c.test")));
});

Deno.test("compileRules does not keep a reference to the input", () => {
  const rules: RuleConfig[] = [{ action: "allow", to: ["a.test"] }];
  const check = compileRules(rules);
  rules[0].to!.push("b.test");
  rules[0].action = "deny";
  assert.deepEqual(check(ctx("a.test")), { action: "allow", rule: 0 });
  assert.equal(check(ctx("b.test")).action, "deny");
  assert.equal(check(ctx("b.test")).rule, undefined);
});

Deno.test("invalid rules throw a TypeError naming the rule and the field", () => {
  const cases: [unknown, string][] = [
    [{ action: "permit" }, 'rules[0].action: expected allow or deny, found "permit"'],
    [{}, "rules[0].action: expected allow or deny, found undefined"],
    [
      { action: "allow", from: ["10.0.0.0/33"] },
      'rules[0].from[0]: expected a CIDR such as 192.0.2.0/24 or 2001:db8::/32, found "10.0.0.0/33"',
    ],
    [{ action: "allow", from: ["example.test"] }, "rules[0].from[0]: expected a CIDR"],
    [{ action: "allow", from: "10.0.0.0/8" }, "rules[0].from: expected a non-empty list"],
    [{ action: "allow", from: [] }, "rules[0].from: expected a non-empty list"],
    [
      { action: "allow", to: ["10.0.0.256"] },
      "rules[0].to[0]: expected a CIDR such as 192.0.2.0/24, a name",
    ],
    [{ action: "allow", to: ["*.example.test"] }, "rules[0].to[0]:"],
    [{ action: "allow", to: ["exa mple.test"] }, "rules[0].to[0]:"],
    [{ action: "allow", to: ["."] }, "rules[0].to[0]:"],
    [{ action: "allow", to: ["a..b"] }, "rules[0].to[0]:"],
    [{ action: "allow", to: ["::1:2:3:4:5:6:7:8:9"] }, "rules[0].to[0]:"],
    [{ action: "allow", to: [`${"a".repeat(64)}.test`] }, "rules[0].to[0]:"],
    [
      { action: "allow", to: [5] },
      'rules[0].to[0]: expected a CIDR such as 192.0.2.0/24, a name such as example.test, a suffix such as .test, or "*", found 5',
    ],
    [
      { action: "allow", ports: [65536] },
      'rules[0].ports[0]: expected a port 0-65535 or a range such as "8000-8080", found 65536',
    ],
    [{ action: "allow", ports: [1.5] }, "rules[0].ports[0]:"],
    [{ action: "allow", ports: [-1] }, "rules[0].ports[0]:"],
    [{ action: "allow", ports: ["80-"] }, "rules[0].ports[0]:"],
    [{ action: "allow", ports: ["90-80"] }, "rules[0].ports[0]:"],
    [{ action: "allow", ports: ["http"] }, "rules[0].ports[0]:"],
    [
      { action: "allow", commands: ["associate"] },
      'rules[0].commands[0]: expected one of connect, bind, udp, found "associate"',
    ],
    [
      { action: "allow", users: [""] },
      "rules[0].users[0]: expected a user name of 1-255 UTF-8 bytes",
    ],
    [{ action: "allow", users: [7] }, "rules[0].users[0]:"],
    [
      { action: "allow", form: ["10.0.0.0/8"] },
      "rules[0].form: unknown field; expected one of action, from, to, ports, commands, users",
    ],
    [null, "rules[0]: expected a rule object, found null"],
  ];
  for (const [rule, message] of cases) {
    assert.throws(
      () => compileRules([rule as RuleConfig]),
      (e: unknown) => {
        assert.ok(e instanceof TypeError, JSON.stringify(rule));
        assert.ok(
          e.message.startsWith(message),
          `${JSON.stringify(rule)}: ${e.message}`,
        );
        return true;
      },
    );
  }
  // The index is the failing rule's.
  assert.throws(
    () => compileRules([{ action: "allow" }, { action: "deny", ports: ["x"] }]),
    /^TypeError: rules\[1\]\.ports\[0\]:/,
  );
  assert.throws(() => compileRules("nope" as unknown as RuleConfig[]), TypeError);
});

Deno.test("RULE_LIST_FIELDS agrees with compileRules", () => {
  const samples: Record<string, unknown[]> = {
    from: ["10.0.0.0/8", "::1/128", "[2001:db8::]/32", "10.0.0.0/33", "x.test", 1],
    to: ["*", ".test", "example.test", "192.0.2.1", "a..b", "*.test", 1],
    ports: [1, "1-2", "2-1", 70000, "x"],
    commands: ["connect", "bind", "udp", "CONNECT", 1],
    users: ["alice", "", 1],
  };
  for (const [field, items] of Object.entries(samples)) {
    const spec = RULE_LIST_FIELDS[field as keyof typeof RULE_LIST_FIELDS];
    assert.equal(typeof spec.expected, "string");
    for (const item of items) {
      let compiles = true;
      try {
        compileRules([{ action: "allow", [field]: [item] }]);
      } catch {
        compiles = false;
      }
      assert.equal(spec.valid(item), compiles, `${field}: ${JSON.stringify(item)}`);
    }
  }
});

Deno.test("matching is fast enough for a hot path", () => {
  const rules: RuleConfig[] = [];
  for (let i = 0; i < 200; i++) {
    rules.push({ action: "deny", from: [`10.${i}.0.0/16`], to: [`.d${i}.test`], ports: [i] });
  }
  rules.push({ action: "allow" });
  const check = compileRules(rules);
  const c = ctx("www.example.test", { client: "2001:db8::1" });
  const start = performance.now();
  for (let i = 0; i < 20_000; i++) check(c);
  const elapsed = performance.now() - start;
  assert.equal(check(c).rule, 200);
  assert.ok(elapsed < 2000, `${elapsed}ms for 20k checks over 201 rules`);
});

Deno.test("combineDecisions: first match over name and resolved address", () => {
  const verdict = (rules: RuleConfig[], name: string, address: string) => {
    const check = compileRules(rules);
    return combineDecisions(check(ctx(name)), check(ctx(address)));
  };
  // A name allow-list keeps working for the resolved addresses.
  assert.deepEqual(
    verdict([{ action: "allow", to: [".example.test"] }], "www.example.test", "192.0.2.8"),
    { action: "allow", rule: 0 },
  );
  // An earlier CIDR deny wins over a later name allow.
  const guarded: RuleConfig[] = [
    { action: "deny", to: ["127.0.0.0/8", "::1/128"] },
    { action: "allow", to: [".example.test"] },
  ];
  assert.deepEqual(verdict(guarded, "www.example.test", "127.0.0.1"), {
    action: "deny",
    rule: 0,
  });
  assert.deepEqual(verdict(guarded, "www.example.test", "2001:db8::1"), {
    action: "allow",
    rule: 1,
  });
  // An earlier name allow wins over a later catch-all CIDR deny.
  assert.deepEqual(
    verdict(
      [{ action: "allow", to: ["example.test"] }, { action: "deny", to: ["0.0.0.0/0"] }],
      "example.test",
      "192.0.2.1",
    ),
    { action: "allow", rule: 0 },
  );
  // A CIDR allow-list admits names resolving inside it, and only those.
  const cidrOnly: RuleConfig[] = [{ action: "allow", to: ["10.0.0.0/8"] }];
  assert.deepEqual(verdict(cidrOnly, "intranet.test", "10.1.1.1"), { action: "allow", rule: 0 });
  assert.deepEqual(verdict(cidrOnly, "intranet.test", "192.0.2.1"), { action: "deny" });
});
