// Pure functions only: nothing here opens a socket, so naming the metadata
// and link-local addresses reaches nothing.
import assert from "node:assert/strict";
import {
  allowedExplicitly,
  classifyDestination,
  inspectDestination,
  unwrapIp,
} from "../../src/policy/destinations.ts";

const category = (host: string) => classifyDestination(host)?.category ?? null;

Deno.test("classifyDestination: each category, both families", () => {
  const cases: [string, string | null][] = [
    ["169.254.169.254", "metadata"],
    ["fd00:ec2::254", "metadata"],
    ["[fd00:ec2::254]", "metadata"],
    ["FD00:EC2:0::254", "metadata"],
    ["100.100.100.200", "metadata"],
    ["169.254.0.1", "link-local"],
    ["169.254.255.255", "link-local"],
    ["fe80::1", "link-local"],
    ["febf:ffff::1", "link-local"],
    ["224.0.0.1", "multicast"],
    ["239.255.255.250", "multicast"],
    ["ff02::1", "multicast"],
    ["ff0e::fb", "multicast"],
    ["255.255.255.255", "broadcast"],
    ["0.0.0.0", "unspecified"],
    ["0.1.2.3", "unspecified"],
    ["::", "unspecified"],
    ["[::]", "unspecified"],
    // Ordinary addresses and their neighbours.
    ["169.253.255.255", null],
    ["169.255.0.0", null],
    ["fec0::1", null],
    ["fe7f::1", null],
    ["223.255.255.255", null],
    ["240.0.0.1", null],
    ["255.255.255.254", null],
    ["1.0.0.0", null],
    ["fd00:ec2::253", null],
    ["100.100.100.201", null],
    ["192.0.2.1", null],
    ["2001:db8::1", null],
    ["127.0.0.1", null], // loopback has its own guard
    ["::1", null],
    ["example.test", null], // names are checked after resolution
    ["169.254.169.254.example.test", null],
  ];
  for (const [host, want] of cases) assert.equal(category(host), want, host);
});

Deno.test("classifyDestination unwraps every IPv6 form of an IPv4 address", () => {
  const cases: [string, string, string][] = [
    ["::ffff:169.254.169.254", "metadata", "169.254.169.254"],
    ["[::ffff:a9fe:a9fe]", "metadata", "169.254.169.254"],
    ["::169.254.169.254", "metadata", "169.254.169.254"], // IPv4-compatible
    ["64:ff9b::a9fe:a9fe", "metadata", "169.254.169.254"], // NAT64
    ["[64:ff9b::169.254.169.254]", "metadata", "169.254.169.254"],
    ["2002:a9fe:a9fe::1", "metadata", "169.254.169.254"], // 6to4
    ["::ffff:169.254.1.1", "link-local", "169.254.1.1"],
    ["64:ff9b::e000:1", "multicast", "224.0.0.1"],
    ["2002:ffff:ffff::", "broadcast", "255.255.255.255"],
    ["::ffff:0.0.0.0", "unspecified", "0.0.0.0"],
    ["64:ff9b::", "unspecified", "0.0.0.0"],
  ];
  for (const [host, want, address] of cases) {
    const v = classifyDestination(host);
    assert.equal(v?.category, want, host);
    assert.equal(v?.address, address, host);
  }
  // Not an embedding: NAT64 well-known prefix with bits in the suffix, other prefixes.
  assert.equal(category("64:ff9b:1::a9fe:a9fe"), null);
  assert.equal(category("64:ff9b::1:a9fe:a9fe"), null);
  assert.equal(category("2001:db8::a9fe:a9fe"), null);
  assert.equal(category("2003:a9fe:a9fe::1"), null);
});

Deno.test("classifyDestination's reason names the address and how to allow it", () => {
  const v = classifyDestination("[64:ff9b::a9fe:a9fe]")!;
  assert.equal(
    v.reason,
    "169.254.169.254 is a cloud metadata service, refused by default; " +
      "to allow it, add a rule with action: allow and a to: CIDR that contains it",
  );
  assert.match(classifyDestination("fe80::1")!.reason, /^\[fe80::1\] is a link-local address/);
});

Deno.test("unwrapIp", () => {
  assert.deepEqual(unwrapIp("192.0.2.1"), { host: "192.0.2.1", family: 4 });
  assert.deepEqual(unwrapIp("[::ffff:127.0.0.1]"), { host: "127.0.0.1", family: 4 });
  assert.deepEqual(unwrapIp("64:ff9b::7f00:1"), { host: "127.0.0.1", family: 4 });
  assert.deepEqual(unwrapIp("2002:7f00:1::"), { host: "127.0.0.1", family: 4 });
  assert.deepEqual(unwrapIp("::127.0.0.1"), { host: "127.0.0.1", family: 4 });
  assert.deepEqual(unwrapIp("::1"), { host: "::1", family: 6 });
  assert.deepEqual(unwrapIp("::"), { host: "::", family: 6 });
  assert.deepEqual(unwrapIp("2001:DB8:0::1"), { host: "2001:db8::1", family: 6 });
  assert.equal(unwrapIp("localhost"), null);
  assert.equal(unwrapIp("fe80::1%eth0"), null);
});

Deno.test("allowedExplicitly: only an allow rule whose to: CIDR contains the address", () => {
  const rules = [
    { action: "deny" as const, to: ["169.254.169.254/32"], users: ["mallory"] },
    { action: "allow" as const, to: ["169.254.169.254/32", ".test"] },
    { action: "allow" as const, to: ["fe80::/10"] },
    { action: "allow" as const, to: ["*"] },
    { action: "allow" as const, to: ["0.0.0.0/0", "::/0"] },
    { action: "allow" as const, from: ["192.0.2.0/24"] },
    { action: "allow" as const, to: ["::ffff:169.254.0.0/112"] },
  ];
  const allow = (rule: number) => ({ action: "allow" as const, rule });
  assert.equal(allowedExplicitly(rules, allow(1), "169.254.169.254"), true);
  assert.equal(allowedExplicitly(rules, allow(1), "[::ffff:169.254.169.254]"), true);
  assert.equal(allowedExplicitly(rules, allow(1), "64:ff9b::a9fe:a9fe"), true);
  assert.equal(allowedExplicitly(rules, allow(1), "169.254.169.253"), false);
  assert.equal(allowedExplicitly(rules, allow(2), "fe80::1"), true);
  assert.equal(allowedExplicitly(rules, allow(2), "169.254.0.1"), false);
  assert.equal(allowedExplicitly(rules, allow(3), "169.254.169.254"), false, '"*" is not explicit');
  assert.equal(allowedExplicitly(rules, allow(4), "169.254.169.254"), false, "/0 is not explicit");
  assert.equal(allowedExplicitly(rules, allow(4), "fe80::1"), false);
  assert.equal(allowedExplicitly(rules, allow(5), "169.254.169.254"), false, "no to:");
  assert.equal(allowedExplicitly(rules, allow(6), "169.254.1.2"), true, "a mapped CIDR is IPv4");
  assert.equal(allowedExplicitly(rules, { action: "deny", rule: 0 }, "169.254.169.254"), false);
  assert.equal(allowedExplicitly(rules, { action: "allow" }, "169.254.169.254"), false);
  assert.equal(allowedExplicitly([], { action: "allow" }, "169.254.169.254"), false);
  assert.equal(
    allowedExplicitly(rules, allow(1), "example.test"),
    false,
    "a name is not an address",
  );
});

Deno.test("inspectDestination: the same answers as unwrapIp and classifyDestination", () => {
  for (
    const host of [
      "192.0.2.1",
      "169.254.169.254",
      "169.254.1.1",
      "169.253.1.1",
      "224.0.0.1",
      "239.255.255.255",
      "240.0.0.1",
      "255.255.255.255",
      "0.1.2.3",
      "100.100.100.200",
      "[::ffff:169.254.169.254]",
      "64:ff9b::a9fe:a9fe",
      "fe80::1",
      "ff02::1",
      "::",
      "2001:db8::1",
      "example.test",
    ]
  ) {
    const seen = inspectDestination(host);
    const ip = unwrapIp(host);
    assert.deepEqual(seen && { host: seen.host, family: seen.family }, ip, host);
    assert.deepEqual(seen?.unwanted ?? null, classifyDestination(host), host);
  }
});
