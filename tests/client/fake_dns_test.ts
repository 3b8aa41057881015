import assert from "node:assert/strict";
import { FakeDns, FakeDnsExhaustedError } from "../../src/client/mod.ts";

Deno.test("FakeDns: the fake address is in the family the application asked for", () => {
  const dns = new FakeDns();
  const v4 = dns.lookup("v6only.test", 4);
  const v6 = dns.lookup("v4only.test", 6);
  assert.equal(v4, "0.0.0.1"); // 0.0.0.0 itself is never handed out
  assert.equal(v6, "100::1"); // RFC 6666 discard-only prefix
  assert.ok(dns.isFake(v4));
  assert.ok(dns.isFake(v6));
  assert.ok(dns.isFake("[100::1]"));
  assert.ok(!dns.isFake("192.0.2.1"));
  assert.ok(!dns.isFake("100:0:0:1::1")); // outside 100::/64
  assert.ok(!dns.isFake("example.test"));
  // The same name asked by both families gets one fake address in each.
  assert.equal(dns.lookup("v4only.test", 4), "0.0.0.2");
  assert.equal(dns.reverse("0.0.0.2"), "v4only.test");
  assert.equal(dns.size, 3);
  assert.throws(() => dns.lookup("x.test", 5 as 4), /expected family 4 or 6, found 5/);
});

Deno.test("FakeDns: the same name twice (case-insensitive, trailing dot) gives the same address", () => {
  const dns = new FakeDns();
  const a = dns.lookup("Example.Test", 6);
  assert.equal(dns.lookup("example.test", 6), a);
  assert.equal(dns.lookup("EXAMPLE.TEST.", 6), a);
  assert.notEqual(dns.lookup("other.test", 6), a);
  assert.equal(dns.reverse(a), "example.test");
});

Deno.test("FakeDns: IP literals", () => {
  const dns = new FakeDns();
  // Same family: returned as is (normalized), nothing mapped.
  assert.equal(dns.lookup("192.0.2.1", 4), "192.0.2.1");
  assert.equal(dns.lookup("[2001:DB8::1]", 6), "2001:db8::1");
  assert.equal(dns.size, 0);
  // The other family: mapped like a name (an IPv4 application cannot hold IPv6).
  const f4 = dns.lookup("2001:db8::1", 4);
  assert.ok(dns.isFake(f4));
  assert.equal(dns.reverse(f4), "2001:db8::1");
  assert.equal(dns.lookup("[2001:0db8:0::1]", 4), f4); // normalized key
  const f6 = dns.lookup("192.0.2.1", 6);
  assert.ok(dns.isFake(f6));
  assert.equal(dns.reverse(f6), "192.0.2.1");
  // A fake of the other family stands for its name.
  const n4 = dns.lookup("both.test", 4);
  assert.equal(dns.reverse(dns.lookup(n4, 6)), "both.test");
  assert.throws(() => dns.lookup("0.0.0.200", 6), /fake IPv4 address with no name mapped/);
  // Not a name at all.
  assert.throws(() => dns.lookup("", 4), /expected a name of 1 to 255 bytes/);
  assert.throws(() => dns.lookup("a b", 4), /expected a name/);
  assert.throws(() => dns.lookup("x".repeat(256), 4), /expected a name of 1 to 255 bytes/);
});

Deno.test("FakeDns: reverse of unknown and non-fake addresses", () => {
  const dns = new FakeDns();
  dns.lookup("a.test", 4);
  assert.equal(dns.reverse("0.0.0.1"), "a.test");
  assert.equal(dns.reverse("0.0.0.2"), undefined); // fake, never handed out
  assert.equal(dns.reverse("0.0.0.0"), undefined); // the network address
  assert.equal(dns.reverse("0.255.255.255"), undefined);
  assert.equal(dns.reverse("100::ffff:ffff:ffff:ffff"), undefined);
  assert.equal(dns.reverse("192.0.2.1"), undefined); // not fake
  assert.equal(dns.reverse("a.test"), undefined); // not an address
  assert.throws(() => dns.pin("0.0.0.2"), /expected a mapped fake address, found "0.0.0.2"/);
});

Deno.test("FakeDns: custom ranges and validation", () => {
  const dns = new FakeDns({ ipv4Range: "198.18.0.0/15", ipv6Range: "fd00:dead:beef::/48" });
  assert.equal(dns.lookup("a.test", 4), "198.18.0.1");
  assert.equal(dns.lookup("a.test", 6), "fd00:dead:beef::1");
  for (let i = 0; i < 300; i++) dns.lookup(`n${i}.test`, 4);
  assert.equal(dns.lookup("n299.test", 4), "198.18.1.45"); // slot 300 -> offset 301
  assert.equal(dns.reverse("198.18.1.45"), "n299.test");
  assert.throws(
    () => new FakeDns({ ipv4Range: "100::/64" }),
    /expected ipv4Range to be an IPv4 CIDR/,
  );
  assert.throws(
    () => new FakeDns({ ipv6Range: "nonsense" }),
    /expected ipv6Range to be an IPv6 CIDR/,
  );
  assert.throws(() => new FakeDns({ ipv4Range: "192.0.2.1/32" }), /at least 2 addresses/);
  assert.throws(
    () => new FakeDns({ maxEntries: 0 }),
    /maxEntries to be a positive integer, found 0/,
  );
});

Deno.test("FakeDns: exhaustion with a small range, LRU recycling, pinned entries kept", () => {
  const dns = new FakeDns({ ipv4Range: "0.0.0.0/30" }); // 0.0.0.1 .. 0.0.0.3
  const a = dns.lookup("a.test", 4);
  const b = dns.lookup("b.test", 4);
  const c = dns.lookup("c.test", 4);
  assert.deepEqual([a, b, c], ["0.0.0.1", "0.0.0.2", "0.0.0.3"]);
  // Use a, so b is now the least recently used; pin b: c is recycled instead.
  dns.lookup("a.test", 4);
  const releaseB = dns.pin(b);
  const d = dns.lookup("d.test", 4);
  assert.equal(d, c);
  assert.equal(dns.reverse(c), "d.test");
  assert.equal(dns.reverse(b), "b.test");
  // Pin everything: the next new name cannot be placed.
  const releaseA = dns.pin(a);
  const releaseD = dns.pin(d);
  assert.throws(() => dns.lookup("e.test", 4), (err: unknown) => {
    assert.ok(err instanceof FakeDnsExhaustedError);
    assert.equal(err.family, 4);
    assert.match(
      err.message,
      /all 3 IPv4 fake addresses of 0\.0\.0\.0\/30 are pinned by live connections/,
    );
    return true;
  });
  // Known names still answer while exhausted.
  assert.equal(dns.lookup("b.test", 4), b);
  // Pins nest; releasing twice is harmless.
  const releaseB2 = dns.pin(b);
  releaseB();
  releaseB();
  assert.throws(() => dns.lookup("e.test", 4), FakeDnsExhaustedError);
  releaseB2();
  assert.equal(dns.lookup("e.test", 4), b); // b was the only unpinned entry
  assert.equal(dns.reverse(b), "e.test");
  releaseA();
  releaseD();
  // IPv6 is an independent pool.
  assert.equal(dns.lookup("e.test", 6), "100::1");
});

Deno.test("FakeDns: maxEntries bounds the table below the range size", () => {
  const dns = new FakeDns({ maxEntries: 2 });
  dns.lookup("a.test", 6);
  dns.lookup("b.test", 6);
  assert.equal(dns.lookup("c.test", 6), "100::1"); // recycled a
  assert.equal(dns.reverse("100::1"), "c.test");
  assert.equal(dns.reverse("100::3"), undefined);
  assert.equal(dns.size, 2);
});

Deno.test("FakeDns: persistence round trip keeps addresses and LRU order", async () => {
  const dir = await Deno.makeTempDir({ prefix: "dualsocks-fakedns-" });
  try {
    const dns = new FakeDns({ ipv4Range: "0.0.0.0/29", maxEntries: 5 }); // 5 slots of 7
    const names = ["a.test", "b.test", "c.test", "d.test", "e.test"];
    const v4 = names.map((n) => dns.lookup(n, 4));
    const v6 = dns.lookup("v6.test", 6);
    const x = dns.lookup("2001:db8::9", 4);
    dns.lookup("c.test", 4); // b is now the least recently used
    const release = dns.pin(dns.lookup("d.test", 4)); // pinned entries are saved too
    const path = `${dir}/fake-dns.json`;
    await dns.save(path);
    release();

    const copy = await FakeDns.load(path);
    assert.equal(copy.ipv4Range, "0.0.0.0/29");
    assert.equal(copy.maxEntries, 5);
    assert.equal(copy.size, dns.size);
    for (const [i, n] of names.entries()) {
      if (n === "a.test") continue; // recycled for 2001:db8::9
      assert.equal(copy.lookup(n, 4), v4[i], n);
    }
    assert.equal(copy.reverse(x), "2001:db8::9");
    assert.equal(copy.reverse(v6), "v6.test");
    // Same LRU order after loading: b.test goes first.
    const bAddr = v4[1];
    const fresh = FakeDns.fromJSON(dns.toJSON());
    fresh.lookup("new.test", 4);
    assert.equal(fresh.reverse(bAddr), "new.test");

    await Deno.writeTextFile(`${dir}/bad.json`, "{nope");
    await assert.rejects(FakeDns.load(`${dir}/bad.json`), /expected JSON/);
    await Deno.writeTextFile(`${dir}/other.json`, '{"format":"something"}');
    await assert.rejects(
      FakeDns.load(`${dir}/other.json`),
      /expected \{"format": "dualsocks-fakedns"/,
    );
    await assert.rejects(FakeDns.load(`${dir}/missing.json`), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("FakeDns: 1,000,000 entries", () => {
  const dns = new FakeDns({ maxEntries: 1_000_000 });
  let last = "";
  for (let i = 0; i < 1_000_000; i++) last = dns.lookup(`host${i}.example.test`, 4);
  assert.equal(dns.size, 1_000_000);
  assert.equal(last, "0.15.66.64"); // offset 1,000,000 = 0x0F4240
  assert.equal(dns.reverse(last), "host999999.example.test");
  assert.equal(dns.lookup("host0.example.test", 4), "0.0.0.1");
  // Full: a new name recycles the least recently used (host1 now).
  assert.equal(dns.lookup("one-more.test", 4), "0.0.0.2");
  assert.equal(dns.reverse("0.0.0.2"), "one-more.test");
  // IPv6 pool of the same size, addresses computed from the index.
  const six = new FakeDns({ maxEntries: 1_000_000 });
  for (let i = 0; i < 1_000_000; i++) last = six.lookup(`h${i}`, 6);
  assert.equal(last, "100::f:4240");
  assert.equal(six.reverse("100::f:4240"), "h999999");
});
