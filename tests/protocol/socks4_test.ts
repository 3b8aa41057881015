import assert from "node:assert/strict";
import {
  decodeSocks4Reply,
  decodeSocks4Request,
  encodeSocks4Reply,
  encodeSocks4Request,
  SOCKS4_MAX_FIELD_BYTES,
  Socks4Command,
  Socks4Reply,
  socks4ReplyCode,
  socks4ReplyText,
  type Socks4Request,
} from "../../src/protocol/socks4.ts";
import { ProtocolError } from "../../src/protocol/codec.ts";
import { Reply } from "../../src/protocol/constants.ts";
import { normalizeIp } from "../../src/protocol/address.ts";
import { BufferedReader } from "../../src/io/buffered_reader.ts";

const text = (s: string) => new TextEncoder().encode(s);

/** Every strict prefix of a whole message must ask for more bytes. */
function assertPrefixesIncomplete(bytes: Uint8Array, decode: (b: Uint8Array) => unknown) {
  for (let i = 0; i < bytes.length; i++) {
    assert.equal(decode(bytes.subarray(0, i)), null, `prefix of ${i} bytes`);
  }
}

function assertProtocolError(fn: () => unknown, kind: string, message: RegExp) {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ProtocolError, `expected a ProtocolError, found ${e}`);
    assert.equal(e.kind, kind);
    assert.match(e.message, message);
    return true;
  });
}

Deno.test("socks4: the document's CONNECT request, byte by byte", () => {
  // VN=4 CD=1 DSTPORT=80 DSTIP=192.0.2.1 USERID="alice" NUL
  const bytes = Uint8Array.of(4, 1, 0, 80, 192, 0, 2, 1, ...text("alice"), 0);
  assert.deepEqual(decodeSocks4Request(bytes), {
    value: { command: 1, hostname: "192.0.2.1", port: 80, userId: "alice", socks4a: false },
    length: bytes.length,
  });
  assertPrefixesIncomplete(bytes, decodeSocks4Request);
});

Deno.test("socks4: SOCKS4a names, an empty USERID, BIND, and the 0.0.0.x rule", () => {
  const a = Uint8Array.of(4, 2, 0x1f, 0x90, 0, 0, 0, 0xff, 0, ...text("v6only.test"), 0);
  assert.deepEqual(decodeSocks4Request(a), {
    value: {
      command: Socks4Command.BIND,
      hostname: "v6only.test",
      port: 8080,
      userId: "",
      socks4a: true,
    },
    length: a.length,
  });
  assertPrefixesIncomplete(a, decodeSocks4Request);
  // 0.0.0.0 is not 4a (x must be non-zero): a plain SOCKS4 request to 0.0.0.0.
  const zero = Uint8Array.of(4, 1, 0, 80, 0, 0, 0, 0, 0, ...text("v6only.test"), 0);
  assert.deepEqual(decodeSocks4Request(zero), {
    value: { command: 1, hostname: "0.0.0.0", port: 80, userId: "", socks4a: false },
    length: 9,
  });
  // 0.0.1.1 is an address, not the 4a marker.
  assert.equal(
    decodeSocks4Request(Uint8Array.of(4, 1, 0, 80, 0, 0, 1, 1, 0))?.value.socks4a,
    false,
  );
});

Deno.test("socks4: a request followed by early data reports its own length", () => {
  const req = encodeSocks4Request({ command: 1, hostname: "a.test", port: 80, userId: "u" });
  const joined = new Uint8Array([...req, ...text("GET / HTTP/1.1\r\n")]);
  assert.equal(decodeSocks4Request(joined)?.length, req.length);
  const plain = encodeSocks4Request({ command: 1, hostname: "192.0.2.1", port: 80, userId: "" });
  assert.equal(decodeSocks4Request(new Uint8Array([...plain, 0, 0, 0]))?.length, 9);
});

Deno.test("socks4: every split point of a request over a real reader gives the same request", async () => {
  const req = encodeSocks4Request({
    command: 1,
    hostname: "bücher.test",
    port: 443,
    userId: "ålice",
  });
  const rest = text("early");
  const whole = new Uint8Array([...req, ...rest]);
  for (let cut = 0; cut <= whole.length; cut++) {
    const chunks = [whole.subarray(0, cut), whole.subarray(cut)].filter((c) => c.length > 0);
    const source = {
      read(p: Uint8Array): Promise<number | null> {
        const c = chunks.shift();
        if (!c) return Promise.resolve(null);
        p.set(c);
        return Promise.resolve(c.length);
      },
    };
    const reader = new BufferedReader(source);
    const value = await reader.decode(decodeSocks4Request, "SOCKS4 request");
    assert.deepEqual(value, {
      command: 1,
      hostname: "bücher.test",
      port: 443,
      userId: "ålice",
      socks4a: true,
    });
    const after = [...reader.takeRest(), ...chunks.flatMap((c) => [...c])];
    assert.deepEqual(after, [...rest], `cut at ${cut}`);
  }
});

Deno.test("socks4: USERID and name are bounded to 255 bytes, before their NUL arrives", () => {
  const max = "u".repeat(SOCKS4_MAX_FIELD_BYTES);
  const ok = Uint8Array.of(4, 1, 0, 80, 0, 0, 0, 1, ...text(max), 0, ...text("n".repeat(255)), 0);
  assert.equal(decodeSocks4Request(ok)?.value.userId, max);
  assert.equal(decodeSocks4Request(ok)?.value.hostname, "n".repeat(255));
  // 255 bytes and no NUL yet: the NUL may be next.
  assert.equal(decodeSocks4Request(Uint8Array.of(4, 1, 0, 80, 1, 2, 3, 4, ...text(max))), null);
  // The 256th byte is not NUL: no need to wait for more.
  assertProtocolError(
    () => decodeSocks4Request(Uint8Array.of(4, 1, 0, 80, 1, 2, 3, 4, ...text(max + "x"))),
    "too-long",
    /expected a USERID of at most 255 bytes ended by NUL, found 256 bytes without one/,
  );
  const longName = Uint8Array.of(4, 1, 0, 80, 0, 0, 0, 1, 0, ...text("n".repeat(256)));
  assertProtocolError(
    () => decodeSocks4Request(longName),
    "too-long",
    /expected a SOCKS4a domain name of at most 255 bytes/,
  );
  // A hostile client streaming megabytes without a NUL is refused at byte 264.
  const flood = new Uint8Array(1 << 20).fill(0x41);
  flood.set([4, 1, 0, 80, 1, 2, 3, 4]);
  assertProtocolError(() => decodeSocks4Request(flood), "too-long", /USERID/);
});

Deno.test("socks4: malformed requests are typed errors with a reply code", () => {
  assertProtocolError(
    () => decodeSocks4Request(Uint8Array.of(5)),
    "version",
    /SOCKS4 request: expected version 0x04, found 0x05/,
  );
  assertProtocolError(
    () => decodeSocks4Request(Uint8Array.of(4, 1, 0, 80, 0, 0, 0, 1, 0, 0)),
    "empty-domain",
    /expected a domain name of 1 to 255 bytes, found an empty one/,
  );
  assertProtocolError(
    () => decodeSocks4Request(Uint8Array.of(4, 1, 0, 80, 0, 0, 0, 1, 0, 0xc3, 0x28, 0)),
    "domain-encoding",
    /expected a domain name in UTF-8, found invalid bytes/,
  );
  assertProtocolError(
    () => decodeSocks4Request(Uint8Array.of(4, 1, 0, 80, 1, 2, 3, 4, 0xff, 0)),
    "credentials-encoding",
    /expected a USERID in UTF-8/,
  );
  // A lone surrogate encoded in UTF-8 (CESU) is not UTF-8 either.
  assertProtocolError(
    () => decodeSocks4Request(Uint8Array.of(4, 1, 0, 80, 0, 0, 0, 1, 0, 0xed, 0xa0, 0x80, 0)),
    "domain-encoding",
    /UTF-8/,
  );
  try {
    decodeSocks4Request(Uint8Array.of(4, 1, 0, 80, 0, 0, 0, 1, 0, 0));
    assert.fail("expected a throw");
  } catch (e) {
    assert.ok(e instanceof ProtocolError);
    assert.equal(e.reply, Reply.GENERAL_FAILURE);
    assert.equal(socks4ReplyCode(e.reply!), Socks4Reply.REJECTED);
  }
  // An unknown command is not a decoding error: the server answers 0x5B.
  assert.equal(decodeSocks4Request(Uint8Array.of(4, 9, 0, 80, 1, 2, 3, 4, 0))?.value.command, 9);
});

Deno.test("socks4: a leading byte-order mark is kept as text", () => {
  const req = Uint8Array.of(4, 1, 0, 80, 0, 0, 0, 1, 0xef, 0xbb, 0xbf, 0, 0xef, 0xbb, 0xbf, 0);
  assert.deepEqual(decodeSocks4Request(req)?.value, {
    command: 1,
    hostname: "\ufeff",
    port: 80,
    userId: "\ufeff",
    socks4a: true,
  });
});

Deno.test("socks4: requests round-trip; what SOCKS4 cannot carry is refused", () => {
  const requests: Socks4Request[] = [
    { command: 1, hostname: "192.0.2.1", port: 0, userId: "", socks4a: false },
    { command: 2, hostname: "203.0.113.255", port: 65535, userId: "bob", socks4a: false },
    { command: 1, hostname: "v6only.test", port: 80, userId: "ü".repeat(127), socks4a: true },
    { command: 1, hostname: "x".repeat(255), port: 443, userId: "u".repeat(255), socks4a: true },
  ];
  for (const r of requests) {
    const bytes = encodeSocks4Request(r);
    assert.deepEqual(decodeSocks4Request(bytes), { value: r, length: bytes.length });
    assertPrefixesIncomplete(bytes, decodeSocks4Request);
  }
  const base = { command: 1, port: 80, userId: "" };
  assert.throws(
    () => encodeSocks4Request({ ...base, hostname: "2001:db8::1" }),
    /expected an IPv4 address or a name, found IPv6 "2001:db8::1"/,
  );
  assert.throws(() => encodeSocks4Request({ ...base, hostname: "x".repeat(256) }), RangeError);
  assert.throws(() => encodeSocks4Request({ ...base, hostname: "a\0b" }), /with a NUL/);
  assert.throws(() => encodeSocks4Request({ ...base, hostname: "a", userId: "\0" }), RangeError);
  assert.throws(() => encodeSocks4Request({ ...base, hostname: "a", port: 65536 }), RangeError);
});

Deno.test("socks4: replies carry IPv4; an IPv6 address goes as 0.0.0.0 with its port", () => {
  assert.deepEqual(
    [...encodeSocks4Reply({ reply: Socks4Reply.GRANTED, hostname: "192.0.2.1", port: 1080 })],
    [0, 0x5a, 4, 56, 192, 0, 2, 1],
  );
  assert.deepEqual(
    [...encodeSocks4Reply({ reply: Socks4Reply.GRANTED, hostname: "2001:db8::1", port: 40000 })],
    [0, 0x5a, 0x9c, 0x40, 0, 0, 0, 0],
  );
  assert.deepEqual(
    [...encodeSocks4Reply({
      reply: Socks4Reply.REJECTED,
      hostname: "::ffff:198.51.100.7",
      port: 1,
    })],
    [0, 0x5b, 0, 1, 198, 51, 100, 7],
  );
  assert.throws(
    () => encodeSocks4Reply({ reply: 0x5a, hostname: "gw.test", port: 1 }),
    /SOCKS4 reply: expected an IP address, found "gw.test"/,
  );
  assert.throws(
    () => encodeSocks4Reply({ reply: 0x5a, hostname: "0.0.0.0", port: -1 }),
    RangeError,
  );
  for (const code of [0x5a, 0x5b, 0x5c, 0x5d]) {
    const bytes = encodeSocks4Reply({ reply: code, hostname: "203.0.113.9", port: 65535 });
    assert.deepEqual(decodeSocks4Reply(bytes), {
      value: { reply: code, hostname: "203.0.113.9", port: 65535 },
      length: 8,
    });
    assertPrefixesIncomplete(bytes, decodeSocks4Reply);
  }
  assertProtocolError(
    () => decodeSocks4Reply(Uint8Array.of(4, 0x5a)),
    "version",
    /SOCKS4 reply: expected version 0x00, found 0x04/,
  );
});

Deno.test("socks4: every SOCKS5 reply code maps to granted or rejected", () => {
  for (const code of Object.values(Reply)) {
    assert.equal(
      socks4ReplyCode(code),
      code === Reply.SUCCEEDED ? Socks4Reply.GRANTED : Socks4Reply.REJECTED,
      `SOCKS5 reply ${code}`,
    );
  }
  assert.equal(socks4ReplyCode(0xff), Socks4Reply.REJECTED);
  assert.equal(socks4ReplyText(0x5b), "request rejected or failed");
  assert.equal(
    socks4ReplyText(0x5d),
    "request rejected: the client and identd report different user-ids",
  );
  assert.equal(socks4ReplyText(0x42), "unassigned SOCKS4 reply code 0x42");
});

Deno.test("socks4: random bytes after the version either decode, wait, or throw ProtocolError", () => {
  let seed = 0x5eed;
  const random = () => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 16;
  for (let n = 0; n < 3000; n++) {
    const bytes = new Uint8Array(1 + (random() % 300));
    for (let i = 0; i < bytes.length; i++) bytes[i] = random() % 4 === 0 ? 0 : random() & 0xff;
    bytes[0] = 4;
    if (random() % 2 && bytes.length >= 8) bytes.set([0, 0, 0, 1], 4);
    try {
      const d = decodeSocks4Request(bytes);
      if (d) {
        assert.ok(d.length <= bytes.length && d.length >= 9);
        // A decoded request re-encodes to the same bytes, unless it is a 4a request
        // with another marker than 0.0.0.1, or a 4a name that is an IP literal.
        const v = d.value;
        if (!v.socks4a || (bytes[7] === 1 && normalizeIp(v.hostname) === null)) {
          assert.deepEqual([...encodeSocks4Request(v)], [...bytes.subarray(0, d.length)]);
        }
      }
    } catch (e) {
      assert.ok(e instanceof ProtocolError, `input ${bytes.length} bytes: ${e}`);
    }
  }
});
