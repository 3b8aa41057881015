import assert from "node:assert/strict";
import {
  decodeAuthStatus,
  decodeCredentials,
  decodeGreeting,
  decodeMethodSelection,
  decodeReply,
  decodeRequest,
  decodeUdpHeader,
  encodeAuthStatus,
  encodeCredentials,
  encodeGreeting,
  encodeMethodSelection,
  encodeReply,
  encodeRequest,
  encodeUdpDatagram,
  ProtocolError,
  type SocksAddress,
  toSocksAddress,
} from "../../src/protocol/codec.ts";
import { BufferedReader, UnexpectedEofError } from "../../src/io/buffered_reader.ts";
import { readAll } from "../helpers.ts";

const ADDRESSES: SocksAddress[] = [
  { type: "ipv4", host: "192.0.2.1" },
  { type: "ipv4", host: "0.0.0.0" },
  { type: "ipv6", host: "2001:db8::1" },
  { type: "ipv6", host: "::" },
  { type: "ipv6", host: "2001:db8:0:1:2:3:4:5" },
  { type: "domain", host: "v4only.test" },
  { type: "domain", host: "x".repeat(255) },
  { type: "domain", host: "bücher.test" },
];

/** Every strict prefix of a whole message must ask for more bytes. */
function assertPrefixesIncomplete(bytes: Uint8Array, decode: (b: Uint8Array) => unknown) {
  for (let i = 0; i < bytes.length; i++) {
    assert.equal(decode(bytes.subarray(0, i)), null, `prefix of ${i} bytes`);
  }
}

Deno.test("codec: greeting and method selection round-trip", () => {
  for (const methods of [[0], [0, 2], [2], Array.from({ length: 255 }, (_, i) => i)]) {
    const bytes = encodeGreeting({ methods });
    assert.deepEqual(decodeGreeting(bytes), { value: { methods }, length: bytes.length });
    assertPrefixesIncomplete(bytes, decodeGreeting);
  }
  // NMETHODS = 0 decodes (the server answers 0xFF), but cannot be encoded.
  assert.deepEqual(decodeGreeting(Uint8Array.of(5, 0)), { value: { methods: [] }, length: 2 });
  assert.throws(() => encodeGreeting({ methods: [] }), RangeError);
  for (const m of [0, 2, 0xff]) {
    assert.deepEqual(decodeMethodSelection(encodeMethodSelection(m)), { value: m, length: 2 });
  }
});

Deno.test("codec: credentials and auth status round-trip", () => {
  for (
    const c of [{ username: "a", password: "b" }, {
      username: "ü".repeat(127),
      password: "p".repeat(255),
    }]
  ) {
    const bytes = encodeCredentials(c);
    assert.deepEqual(decodeCredentials(bytes), { value: c, length: bytes.length });
    assertPrefixesIncomplete(bytes, decodeCredentials);
  }
  assert.throws(() => encodeCredentials({ username: "", password: "x" }), RangeError);
  assert.throws(() => encodeCredentials({ username: "x", password: "p".repeat(256) }), RangeError);
  assert.deepEqual(decodeAuthStatus(encodeAuthStatus(true)), { value: true, length: 2 });
  assert.deepEqual(decodeAuthStatus(encodeAuthStatus(false)), { value: false, length: 2 });
});

Deno.test("codec: requests, replies and UDP headers round-trip for every address type", () => {
  for (const address of ADDRESSES) {
    for (const port of [0, 80, 65535]) {
      for (const command of [1, 2, 3, 9]) {
        const bytes = encodeRequest({ command, address, port });
        assert.deepEqual(decodeRequest(bytes), {
          value: { command, address, port },
          length: bytes.length,
        });
        assertPrefixesIncomplete(bytes, decodeRequest);
      }
      const reply = encodeReply({ reply: 4, address, port });
      assert.deepEqual(decodeReply(reply), {
        value: { reply: 4, address, port },
        length: reply.length,
      });
      const data = Uint8Array.of(1, 2, 3);
      const dgram = encodeUdpDatagram({ frag: 0, address, port }, data);
      const h = decodeUdpHeader(dgram);
      assert.deepEqual(h.value, { frag: 0, address, port });
      assert.deepEqual(dgram.subarray(h.length), data);
    }
  }
});

Deno.test("codec: an IPv4 reply carries the address's bytes and the port, big-endian", () => {
  const reply = encodeReply({
    reply: 0,
    address: { type: "ipv4", host: "203.0.113.254" },
    port: 0x1f90,
  });
  assert.deepEqual([...reply], [5, 0, 0, 1, 203, 0, 113, 254, 0x1f, 0x90]);
  for (const host of ["203.0.113", "203.0.113.256", "203.0.113.01", "::1", ""]) {
    assert.throws(
      () => encodeReply({ reply: 0, address: { type: "ipv4", host }, port: 1 }),
      TypeError,
      host,
    );
  }
});

Deno.test("codec: a message followed by more bytes reports its own length", () => {
  const req = encodeRequest({ command: 1, address: { type: "domain", host: "a.test" }, port: 1 });
  const joined = new Uint8Array([...req, 0x47, 0x45, 0x54]);
  assert.equal(decodeRequest(joined)?.length, req.length);
});

Deno.test("codec: a leading byte-order mark is kept as text, in names and credentials", () => {
  // TextDecoder drops it by default: EF BB BF alone decoded as an empty name
  // that slipped past the emptiness check, and EF BB BF 61 as plain "a".
  const bom = [0xef, 0xbb, 0xbf];
  assert.equal(
    decodeRequest(Uint8Array.of(5, 1, 0, 3, 3, ...bom, 0, 80))?.value.address.host,
    "\ufeff",
  );
  const request = Uint8Array.of(5, 1, 0, 3, 4, ...bom, 0x61, 0, 80);
  const decoded = decodeRequest(request)!.value;
  assert.equal(decoded.address.host, "\ufeffa");
  assert.deepEqual([...encodeRequest(decoded)], [...request], "re-encodes to the same bytes");
  const creds = decodeCredentials(Uint8Array.of(1, 4, ...bom, 0x61, 1, 0x70))!.value;
  assert.deepEqual(creds, { username: "\ufeffa", password: "p" });
});

Deno.test("codec: malformed messages are typed errors", () => {
  const cases: [string, () => unknown, string, number | undefined][] = [
    ["greeting v4", () => decodeGreeting(Uint8Array.of(4, 1, 0)), "version", undefined],
    ["creds v5", () => decodeCredentials(Uint8Array.of(5, 1, 0x61)), "version", undefined],
    ["request v4", () => decodeRequest(Uint8Array.of(4, 1, 0, 1)), "version", 1],
    ["request rsv", () => decodeRequest(Uint8Array.of(5, 1, 7, 1)), "reserved", 1],
    ["request atyp 2", () => decodeRequest(Uint8Array.of(5, 1, 0, 2)), "address-type", 8],
    ["request atyp 0", () => decodeRequest(Uint8Array.of(5, 1, 0, 0, 1)), "address-type", 8],
    ["empty domain", () => decodeRequest(Uint8Array.of(5, 1, 0, 3, 0, 0, 80)), "empty-domain", 1],
    ["reply atyp", () => decodeReply(Uint8Array.of(5, 0, 0, 9)), "address-type", 8],
    [
      "non-UTF-8 domain",
      () => decodeRequest(Uint8Array.of(5, 1, 0, 3, 2, 0xff, 0xfe, 0, 80)),
      "domain-encoding",
      1,
    ],
    [
      "non-UTF-8 password",
      () => decodeCredentials(Uint8Array.of(1, 1, 0x61, 2, 0xc3, 0x28)),
      "credentials-encoding",
      undefined,
    ],
    ["udp short", () => decodeUdpHeader(Uint8Array.of(0, 0, 0)), "too-long", undefined],
    [
      "udp rsv",
      () => decodeUdpHeader(Uint8Array.of(0, 1, 0, 1, 1, 2, 3, 4, 0, 1)),
      "reserved",
      undefined,
    ],
    ["udp atyp", () => decodeUdpHeader(Uint8Array.of(0, 0, 0, 5, 1)), "address-type", 8],
    [
      "udp truncated",
      () => decodeUdpHeader(Uint8Array.of(0, 0, 0, 1, 1, 2)),
      "too-long",
      undefined,
    ],
  ];
  for (const [name, fn, kind, reply] of cases) {
    assert.throws(fn, (e: unknown) => {
      assert.ok(e instanceof ProtocolError, name);
      assert.equal(e.kind, kind, name);
      assert.equal(e.reply, reply, name);
      assert.match(e.message, /expected|truncated/, name);
      return true;
    }, name);
  }
  // Encoders refuse what cannot go on the wire.
  assert.throws(() =>
    encodeRequest({ command: 1, address: { type: "domain", host: "" }, port: 1 })
  );
  assert.throws(() =>
    encodeRequest({ command: 1, address: { type: "ipv4", host: "::1" }, port: 1 })
  );
  assert.throws(() => encodeReply({ reply: 0, address: toSocksAddress("::1"), port: 70000 }));
});

Deno.test("codec: toSocksAddress picks the address type and unmaps IPv4-mapped IPv6", () => {
  assert.deepEqual(toSocksAddress("192.0.2.1"), { type: "ipv4", host: "192.0.2.1" });
  assert.deepEqual(toSocksAddress("[2001:DB8::1]"), { type: "ipv6", host: "2001:db8::1" });
  assert.deepEqual(toSocksAddress("::ffff:192.0.2.9"), { type: "ipv4", host: "192.0.2.9" });
  assert.deepEqual(toSocksAddress("dual.test"), { type: "domain", host: "dual.test" });
});

/** A byte source that hands out a fixed byte sequence `step` bytes per read. */
function chunked(bytes: Uint8Array, step: number) {
  let off = 0;
  return {
    read(p: Uint8Array): Promise<number | null> {
      if (off >= bytes.length) return Promise.resolve(null);
      const n = Math.min(step, p.length, bytes.length - off);
      p.set(bytes.subarray(off, off + n));
      off += n;
      return Promise.resolve(n);
    },
  };
}

Deno.test("buffered reader: messages in one segment or one byte at a time, rest kept", async () => {
  const greeting = encodeGreeting({ methods: [0, 2] });
  const creds = encodeCredentials({ username: "alice", password: "s3cret" });
  const request = encodeRequest({
    command: 1,
    address: { type: "domain", host: "v6only.test" },
    port: 443,
  });
  const early = new TextEncoder().encode("GET / HTTP/1.0\r\n\r\n");
  const all = new Uint8Array([...greeting, ...creds, ...request, ...early]);
  const restLengths: number[] = [];
  for (const step of [1, 2, 7, all.length]) {
    const source = chunked(all, step);
    const r = new BufferedReader(source, 8);
    assert.deepEqual(await r.decode(decodeGreeting, "greeting"), { methods: [0, 2] });
    assert.deepEqual(await r.decode(decodeCredentials, "credentials"), {
      username: "alice",
      password: "s3cret",
    });
    assert.equal((await r.decode(decodeRequest, "request")).address.host, "v6only.test");
    // Bytes after the request are kept for the relay: what was read past the
    // request, followed by what the source still holds, is the early data.
    const rest = r.takeRest();
    restLengths.push(rest.length);
    assert.deepEqual(new Uint8Array([...rest, ...await readAll(source)]), early);
  }
  assert.ok(restLengths.some((n) => n > 0), `some reads went past the request: ${restLengths}`);
  const r = new BufferedReader(chunked(request.subarray(0, 5), 1));
  await assert.rejects(() => r.decode(decodeRequest, "request"), UnexpectedEofError);
});
