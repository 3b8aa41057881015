import assert from "node:assert/strict";
import {
  decodeProxyHeader,
  encodeProxyHeaderV1,
  encodeProxyHeaderV2,
  PROXY_V1_MAX_BYTES,
  PROXY_V2_DEFAULT_MAX_BYTES,
  PROXY_V2_SIGNATURE,
  type ProxyDecodeOptions,
  type ProxyHeader,
  sniffProxyHeader,
} from "../../src/protocol/proxy_protocol.ts";
import { ProtocolError } from "../../src/protocol/codec.ts";

const text = (s: string) => new TextEncoder().encode(s);
const FFFF6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";

/** Every strict prefix of a whole header must ask for more bytes. */
function assertPrefixesIncomplete(bytes: Uint8Array) {
  for (let i = 0; i < bytes.length; i++) {
    assert.equal(decodeProxyHeader(bytes.subarray(0, i)), null, `prefix of ${i} bytes`);
  }
}

function assertProtocolError(
  bytes: Uint8Array,
  kind: string,
  message: RegExp,
  options?: ProxyDecodeOptions,
) {
  assert.throws(() => decodeProxyHeader(bytes, options), (e: unknown) => {
    assert.ok(e instanceof ProtocolError, `expected a ProtocolError, found ${e}`);
    assert.equal(e.kind, kind, e.message);
    assert.match(e.message, message);
    return true;
  });
}

/** A v2 header from its parts: version/command, family/transport, then the block. */
function v2(verCmd: number, fam: number, block: number[], length = block.length): Uint8Array {
  return Uint8Array.of(...PROXY_V2_SIGNATURE, verCmd, fam, length >> 8, length & 0xff, ...block);
}

Deno.test("proxy v1: the specification's examples", () => {
  const examples: [string, ProxyHeader, number][] = [
    [
      "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
      {
        version: 1,
        command: "proxy",
        source: { hostname: "192.168.0.1", port: 56324 },
        destination: { hostname: "192.168.0.11", port: 443 },
      },
      47,
    ],
    [
      "PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
      {
        version: 1,
        command: "proxy",
        source: { hostname: "255.255.255.255", port: 65535 },
        destination: { hostname: "255.255.255.255", port: 65535 },
      },
      56,
    ],
    [
      `PROXY TCP6 ${FFFF6} ${FFFF6} 65535 65535\r\n`,
      {
        version: 1,
        command: "proxy",
        source: { hostname: FFFF6, port: 65535 },
        destination: { hostname: FFFF6, port: 65535 },
      },
      104,
    ],
    ["PROXY UNKNOWN\r\n", { version: 1, command: "local" }, 15],
    [`PROXY UNKNOWN ${FFFF6} ${FFFF6} 65535 65535\r\n`, { version: 1, command: "local" }, 107],
  ];
  for (const [line, value, size] of examples) {
    const bytes = text(line);
    assert.equal(bytes.length, size, `the specification counts ${size} bytes for ${line}`);
    assert.deepEqual(decodeProxyHeader(bytes), { value, length: size });
    assertPrefixesIncomplete(bytes);
    // Followed by the request it precedes, as in the specification.
    const withRequest = new Uint8Array([...bytes, ...text("GET / HTTP/1.1\r\nHost: x\r\n\r\n")]);
    assert.deepEqual(decodeProxyHeader(withRequest), { value, length: size });
  }
  assert.equal(PROXY_V1_MAX_BYTES, 107);
});

Deno.test("proxy v1: IPv6 addresses come out canonical, in upper or lower case", () => {
  const line = text("PROXY TCP6 2001:DB8:0:0:0:0:0:1 2001:db8::0:2 40000 1080\r\n");
  assert.deepEqual(decodeProxyHeader(line)?.value, {
    version: 1,
    command: "proxy",
    source: { hostname: "2001:db8::1", port: 40000 },
    destination: { hostname: "2001:db8::2", port: 1080 },
  });
  const ports = decodeProxyHeader(text("PROXY TCP4 192.0.2.1 192.0.2.2 0 0\r\n"))?.value;
  assert.deepEqual([ports?.source?.port, ports?.destination?.port], [0, 0]);
});

Deno.test("proxy v1: hostile and malformed lines are refused", () => {
  const cases: [string, string, RegExp][] = [
    [
      "PROXY TCP4 192.0.2.1 192.0.2.2 0443 80\r\n",
      "reserved",
      /without leading zeros, found "0443"/,
    ],
    ["PROXY TCP4 192.0.2.1 192.0.2.2 80 65536\r\n", "reserved", /found "65536"/],
    ["PROXY TCP4 192.0.2.1 192.0.2.2 80 +1\r\n", "reserved", /byte 0x2b/],
    ["PROXY TCP4 192.0.2.1 192.0.2.2 80 000000\r\n", "reserved", /found "000000"/],
    ["PROXY TCP4 192.0.2.1  192.0.2.2 80 443\r\n", "reserved", /single spaces/],
    ["PROXY TCP4 192.0.2.1 192.0.2.2 80 443 \r\n", "reserved", /single spaces/],
    ["PROXY TCP4 192.0.2.1 192.0.2.2 80\r\n", "reserved", /single spaces/],
    ["PROXY TCP4\r\n", "reserved", /single spaces/],
    ["PROXY \r\n", "reserved", /expected "TCP4", "TCP6" or "UNKNOWN"/],
    ["PROXY TCP5 192.0.2.1 192.0.2.2 80 443\r\n", "reserved", /found "TCP5 192/],
    ["PROXY tcp4 192.0.2.1 192.0.2.2 80 443\r\n", "reserved", /expected "TCP4"/],
    ["PROXY UNKNOWNX\r\n", "reserved", /expected "TCP4"/],
    ["PROXY TCP4 192.0.2.1 192.0.2.2 80 443\n", "reserved", /found a lone LF/],
    ["PROXY TCP4 192.0.2.1 192.0.2.2 80 443\rX", "reserved", /found a lone CR/],
    ["PROXY UNKNOWN\n", "reserved", /found a lone LF/],
    ["PROXY TCP4 192.000.2.1 192.0.2.2 80 443\r\n", "address-type", /IPv4 source address/],
    ["PROXY TCP4 192.0.2.1 2001:db8::2 80 443\r\n", "address-type", /IPv4 destination/],
    ["PROXY TCP6 192.0.2.1 2001:db8::2 80 443\r\n", "address-type", /IPv6 source address/],
    ["PROXY TCP6 2001:db8::1 2001:db8:::2 80 443\r\n", "address-type", /IPv6 destination/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 1 2\t\r\n", "reserved", /found byte 0x09/],
    ["PROXY TCP4 1.2.3.4 5.6.7.8 1 2\0\r\n", "reserved", /found byte 0x00/],
    ["proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "version", /expected "PROXY " or the v2 signature/],
    ["PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n", "version", /found "PROXYTCP4/],
  ];
  for (const [line, kind, message] of cases) assertProtocolError(text(line), kind, message);
});

Deno.test("proxy v1: refused early, before the CRLF, when no ending can make it valid", () => {
  assertProtocolError(text("PROXY X"), "reserved", /expected "TCP4"/);
  assertProtocolError(text("PROXY TCP6 ::1 zz"), "reserved", /found byte 0x7a/);
  assertProtocolError(text("PROXY UNKNOWN!"), "reserved", /expected "TCP4"/);
  assertProtocolError(text("PROXY TCP4 1.2.3.4\n"), "reserved", /lone LF/);
  // Still possible: wait.
  for (const partial of ["PROXY T", "PROXY UNKNOW", "PROXY UNKNOWN", "PROXY TCP4 1.2.3.4\r"]) {
    assert.equal(decodeProxyHeader(text(partial)), null, partial);
  }
});

Deno.test("proxy v1: the line is bounded to 107 bytes, CRLF included", () => {
  // UNKNOWN ignores its content, so it can fill the whole line.
  const at107 = text(`PROXY UNKNOWN ${"x".repeat(107 - 16)}\r\n`);
  assert.equal(at107.length, 107);
  assert.deepEqual(decodeProxyHeader(at107)?.value, { version: 1, command: "local" });
  const at108 = text(`PROXY UNKNOWN ${"x".repeat(108 - 16)}\r\n`);
  assertProtocolError(at108, "too-long", /at most 107 bytes ending in CRLF, found 108 bytes$/);
  // Without CRLF: refused at the 107th byte, not after megabytes.
  const flood = text(`PROXY UNKNOWN ${"x".repeat(1 << 16)}`);
  assertProtocolError(flood.subarray(0, 107), "too-long", /found 107 bytes without one/);
  assertProtocolError(flood, "too-long", /without one/);
  assert.equal(decodeProxyHeader(flood.subarray(0, 106)), null);
});

Deno.test("proxy v2: TCP over IPv4 and IPv6 round-trip, with every split point", () => {
  const headers: Omit<ProxyHeader, "version">[] = [
    {
      command: "proxy",
      source: { hostname: "192.0.2.1", port: 56324 },
      destination: { hostname: "198.51.100.11", port: 443 },
    },
    {
      command: "proxy",
      source: { hostname: "2001:db8::1", port: 0 },
      destination: { hostname: "2001:db8:ffff::abcd", port: 65535 },
    },
    { command: "local" },
  ];
  for (const h of headers) {
    const bytes = encodeProxyHeaderV2(h);
    assert.deepEqual(decodeProxyHeader(bytes), {
      value: { version: 2, ...h },
      length: bytes.length,
    });
    assertPrefixesIncomplete(bytes);
    const line = encodeProxyHeaderV1(h);
    assert.deepEqual(decodeProxyHeader(line), { value: { version: 1, ...h }, length: line.length });
  }
  // The bytes themselves, field by field.
  assert.deepEqual(
    [...encodeProxyHeaderV2(headers[0])],
    [
      ...PROXY_V2_SIGNATURE,
      0x21, // version 2, PROXY
      0x11, // AF_INET, STREAM
      0,
      12,
      192,
      0,
      2,
      1,
      198,
      51,
      100,
      11,
      0xdc,
      0x04,
      0x01,
      0xbb,
    ],
  );
  assert.deepEqual([...encodeProxyHeaderV2({ command: "local" })], [
    ...PROXY_V2_SIGNATURE,
    0x20,
    0x00,
    0,
    0,
  ]);
});

Deno.test("proxy v2: TLVs are skipped, but must tile the header exactly", () => {
  const source = { hostname: "192.0.2.1", port: 1 };
  const destination = { hostname: "192.0.2.2", port: 2 };
  const tlvs = [
    { type: 0x04, value: new Uint8Array(0) }, // PP2_TYPE_NOOP
    { type: 0x02, value: text("gw.test") }, // PP2_TYPE_AUTHORITY
    { type: 0xe0, value: new Uint8Array(300) }, // a custom one
  ];
  const bytes = encodeProxyHeaderV2({ command: "proxy", source, destination }, { tlvs });
  assert.equal(bytes.length, 16 + 12 + 3 + 10 + 303);
  assert.deepEqual(decodeProxyHeader(bytes), {
    value: { version: 2, command: "proxy", source, destination },
    length: bytes.length,
  });
  assertPrefixesIncomplete(bytes);
  const addresses = [192, 0, 2, 1, 192, 0, 2, 2, 0, 1, 0, 2];
  // One or two stray bytes after the addresses: not a TLV.
  assertProtocolError(v2(0x21, 0x11, [...addresses, 4]), "reserved", /at least 3 bytes.*found 1/);
  assertProtocolError(v2(0x21, 0x11, [...addresses, 4, 0]), "reserved", /found 2/);
  // A TLV longer than what is left of the header.
  assertProtocolError(
    v2(0x21, 0x11, [...addresses, 0x02, 0, 5, 0x61, 0x62]),
    "reserved",
    /expected TLV 0x02 of 5 bytes to fit the header, found 2 bytes left/,
  );
  // The same TLVs on LOCAL are discarded with the block, unchecked.
  const local = v2(0x20, 0x11, [...addresses, 4]);
  assert.deepEqual(decodeProxyHeader(local), {
    value: { version: 2, command: "local" },
    length: local.length,
  });
});

Deno.test("proxy v2: bounded before the bytes arrive; short address blocks refused", () => {
  const huge = v2(0x21, 0x11, [], 0xffff);
  assertProtocolError(huge, "too-long", /at most 2048 bytes, found a length field of 65535/);
  assert.equal(PROXY_V2_DEFAULT_MAX_BYTES, 2048);
  assert.equal(decodeProxyHeader(huge, { maxLength: 16 + 0xffff }), null);
  const tlvs = [{ type: 0xe1, value: new Uint8Array(100) }];
  const big = encodeProxyHeaderV2({ command: "local" }, { tlvs });
  assertProtocolError(big.subarray(0, 16), "too-long", /at most 64 bytes/, { maxLength: 64 });
  assert.equal(decodeProxyHeader(big, { maxLength: big.length })?.length, big.length);
  assertProtocolError(
    v2(0x21, 0x11, new Array(11).fill(0)),
    "address-type",
    /expected at least 12 address bytes for family 0x11, found a length field of 11/,
  );
  assertProtocolError(v2(0x21, 0x21, new Array(12).fill(0)), "address-type", /at least 36/);
  assertProtocolError(v2(0x21, 0x31, new Array(12).fill(0)), "address-type", /at least 216/);
});

Deno.test("proxy v2: families and transports it does not carry fall back to UNSPEC", () => {
  const cases: [number, number][] = [
    [0x00, 0], // AF_UNSPEC
    [0x00, 5], // AF_UNSPEC with opaque bytes (not TLVs)
    [0x12, 12], // UDP over IPv4
    [0x22, 36], // UDP over IPv6
    [0x31, 216], // UNIX stream
    [0x32, 216], // UNIX datagram
    [0x10, 3], // AF_INET, UNSPEC transport: no defined block
  ];
  for (const [fam, size] of cases) {
    const bytes = v2(0x21, fam, new Array(size).fill(7));
    assert.deepEqual(
      decodeProxyHeader(bytes),
      { value: { version: 2, command: "proxy" }, length: bytes.length },
      `family/transport 0x${fam.toString(16)}`,
    );
  }
  const unspec = encodeProxyHeaderV2({ command: "proxy" });
  assert.deepEqual([...unspec.subarray(12)], [0x21, 0x00, 0, 0]);
});

Deno.test("proxy v2: a wrong version, command, family or transport is refused at its byte", () => {
  const head = [...PROXY_V2_SIGNATURE];
  assertProtocolError(Uint8Array.of(...head, 0x11), "version", /version nibble 0x2, found 0x01/);
  assertProtocolError(Uint8Array.of(...head, 0x31), "version", /found 0x03/);
  assertProtocolError(
    Uint8Array.of(...head, 0x22),
    "reserved",
    /LOCAL \(0x0\) or PROXY \(0x1\), found 0x02/,
  );
  assertProtocolError(Uint8Array.of(...head, 0x2f), "reserved", /found 0x0f/);
  assertProtocolError(Uint8Array.of(...head, 0x21, 0x41), "address-type", /found 0x41/);
  assertProtocolError(Uint8Array.of(...head, 0x21, 0x13), "address-type", /found 0x13/);
  assertProtocolError(Uint8Array.of(...head, 0x20, 0xf0), "address-type", /found 0xf0/);
});

Deno.test("proxy: sniffing tells a header from anything else at the first differing byte", () => {
  const cases: [Uint8Array, 1 | 2 | "none" | null][] = [
    [new Uint8Array(0), null],
    [text("P"), null],
    [text("PROXY"), null],
    [text("PROXY "), 1],
    [text("PROXYX"), "none"],
    [text("PROPFIND / HTTP/1.1"), "none"],
    [text("POST"), "none"],
    [Uint8Array.of(5, 1, 0), "none"],
    [Uint8Array.of(4, 1, 0, 80), "none"],
    [Uint8Array.of(0x16, 3, 1), "none"], // a TLS ClientHello
    [PROXY_V2_SIGNATURE.subarray(0, 11), null],
    [PROXY_V2_SIGNATURE, 2],
    [text("\r\n\r\nQUIT\r\n"), "none"],
    [Uint8Array.of(...PROXY_V2_SIGNATURE.subarray(0, 11), 0x0d), "none"],
  ];
  for (const [bytes, expected] of cases) {
    assert.equal(sniffProxyHeader(bytes), expected, JSON.stringify([...bytes]));
  }
  assertProtocolError(
    Uint8Array.of(5, 1, 0),
    "version",
    /expected "PROXY " or the v2 signature, found "\\x05\\x01\\x00"/,
  );
});

Deno.test("proxy: encoders refuse what a header cannot say", () => {
  const one = { hostname: "192.0.2.1", port: 1 };
  assert.throws(
    () => encodeProxyHeaderV1({ command: "proxy", source: one }),
    /expected both source and destination, found only one/,
  );
  assert.throws(
    () =>
      encodeProxyHeaderV2({
        command: "proxy",
        source: one,
        destination: { hostname: "2001:db8::1", port: 1 },
      }),
    /expected two IP addresses of one family, found "192.0.2.1" and "2001:db8::1"/,
  );
  assert.throws(
    () =>
      encodeProxyHeaderV1({
        command: "proxy",
        source: one,
        destination: { hostname: "gw.test", port: 1 },
      }),
    TypeError,
  );
  assert.throws(
    () =>
      encodeProxyHeaderV1({ command: "proxy", source: one, destination: { ...one, port: 70000 } }),
    RangeError,
  );
  assert.throws(
    () =>
      encodeProxyHeaderV2({ command: "local" }, {
        tlvs: [{ type: 256, value: new Uint8Array(0) }],
      }),
    RangeError,
  );
  assert.deepEqual(
    new TextDecoder().decode(
      encodeProxyHeaderV1({ command: "local", source: one, destination: one }),
    ),
    "PROXY UNKNOWN\r\n",
  );
});

Deno.test("proxy: random bytes after either signature decode, wait, or throw ProtocolError", () => {
  let seed = 0xbeef;
  const random = () => (seed = (seed * 1103515245 + 12345) >>> 0) >>> 16;
  const alphabet = text("PROXY TCP4TCP6UNKNOWN 0123456789abcdef:. \r\n");
  let decoded = 0;
  for (let n = 0; n < 4000; n++) {
    const v1 = n % 2 === 0;
    const prefix = v1 ? text("PROXY ") : Uint8Array.of(
      ...PROXY_V2_SIGNATURE,
      0x20 | (random() % 3),
      random() & 0x3f,
      0,
      random() % 40,
    );
    const bytes = new Uint8Array(prefix.length + (random() % 120));
    bytes.set(prefix);
    for (let i = prefix.length; i < bytes.length; i++) {
      bytes[i] = v1 ? alphabet[random() % alphabet.length] : random() & 0xff;
    }
    try {
      const d = decodeProxyHeader(bytes);
      if (d) {
        decoded++;
        assert.ok(d.length <= bytes.length);
        assert.ok(d.value.version === (v1 ? 1 : 2));
      }
    } catch (e) {
      assert.ok(e instanceof ProtocolError, `${e}`);
    }
  }
  assert.ok(decoded > 0, "some random headers are valid");
});
