import assert from "node:assert/strict";
import {
  cidrContains,
  formatIPv6,
  ipFamily,
  ipv4Number,
  joinHostPort,
  normalizeIp,
  parseCidr,
  parseIPv4,
  parseIPv6,
  splitHostPort,
} from "../../src/protocol/address.ts";

Deno.test("address: IPv4 literals", () => {
  assert.deepEqual(parseIPv4("192.0.2.255"), Uint8Array.of(192, 0, 2, 255));
  for (const bad of ["256.0.0.1", "1.2.3", "1.2.3.4.5", "01.2.3.4", "a.b.c.d", "", "1.2.3.-4"]) {
    assert.equal(parseIPv4(bad), null, bad);
    assert.equal(ipv4Number(bad), -1, bad);
  }
  assert.equal(ipv4Number("192.0.2.255"), 0xc00002ff);
  assert.equal(ipv4Number("255.255.255.255"), 0xffffffff);
  assert.equal(ipv4Number("0.0.0.0"), 0);
});

Deno.test("address: IPv6 literals parse and format canonically (RFC 5952)", () => {
  const cases: [string, string][] = [
    ["::", "::"],
    ["::1", "::1"],
    ["2001:DB8:0:0:0:0:0:1", "2001:db8::1"],
    ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"],
    ["::ffff:192.0.2.1", "::ffff:c000:201"],
    ["64:ff9b::198.51.100.7", "64:ff9b::c633:6407"],
    ["1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"],
  ];
  for (const [input, canonical] of cases) {
    const bytes = parseIPv6(input);
    assert.ok(bytes, input);
    assert.equal(formatIPv6(bytes), canonical, input);
  }
  for (
    const bad of [":::", "1::2::3", "12345::", "1:2:3:4:5:6:7:8:9", "fe80::1%eth0", "[::1]", "g::"]
  ) {
    assert.equal(parseIPv6(bad), null, bad);
  }
});

Deno.test("address: families, normalization and host:port", () => {
  assert.equal(ipFamily("[::1]"), 6);
  assert.equal(ipFamily("127.0.0.1"), 4);
  assert.equal(ipFamily("localhost"), null);
  assert.deepEqual(normalizeIp("[::FFFF:198.51.100.1]"), { host: "198.51.100.1", family: 4 });
  assert.deepEqual(splitHostPort("[2001:db8::1]:1080"), { host: "2001:db8::1", port: 1080 });
  assert.deepEqual(splitHostPort("v4only.test:80"), { host: "v4only.test", port: 80 });
  for (const bad of ["::1:1080", "[::1]1080", "host:65536", "host:", ":80", "[nothex]:1"]) {
    assert.equal(splitHostPort(bad), null, bad);
  }
  assert.equal(joinHostPort("::1", 1), "[::1]:1");
  assert.equal(joinHostPort("192.0.2.1", 1), "192.0.2.1:1");
});

Deno.test("address: CIDR matching", () => {
  const v4 = parseCidr("192.0.2.0/25")!;
  assert.ok(cidrContains(v4, "192.0.2.127"));
  assert.ok(!cidrContains(v4, "192.0.2.128"));
  assert.ok(cidrContains(v4, "::ffff:192.0.2.1"), "IPv4-mapped matches IPv4 prefix");
  const v6 = parseCidr("2001:db8::/32")!;
  assert.ok(cidrContains(v6, "2001:db8:ffff::1"));
  assert.ok(!cidrContains(v6, "2001:db9::1"));
  assert.ok(!cidrContains(v6, "192.0.2.1"));
  assert.ok(cidrContains(parseCidr("0.0.0.0/0")!, "203.0.113.9"));
  assert.equal(parseCidr("192.0.2.0/33"), null);
  assert.equal(parseCidr("example.test/8"), null);
  // An IPv4-mapped prefix is the IPv4 CIDR it stands for (the client's
  // direct list matches by it, as the gateway's rules do).
  const mapped = parseCidr("::ffff:10.0.0.0/104")!;
  assert.deepEqual({ ...mapped, bytes: [...mapped.bytes] }, {
    family: 4,
    bytes: [10, 0, 0, 0],
    prefix: 8,
  });
  assert.ok(cidrContains(mapped, "10.1.2.3"));
  assert.ok(cidrContains(mapped, "::ffff:10.0.0.1"));
  assert.ok(!cidrContains(mapped, "11.0.0.1"));
  assert.ok(cidrContains(parseCidr("[::ffff:7f00:1]")!, "127.0.0.1"), "a bare mapped host");
  // Shorter than 96 bits, or not ::ffff:, it stays IPv6.
  assert.equal(parseCidr("::ffff:0.0.0.0/95")!.family, 6);
  assert.equal(parseCidr("::fffe:10.0.0.0/104")!.family, 6);
});
