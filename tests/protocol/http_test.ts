import assert from "node:assert/strict";
import {
  decodeRequestHead,
  decodeResponseHead,
  headerTokens,
  HttpError,
  type HttpRequestHead,
  MAX_HEADER_BYTES,
  reasonPhrase,
} from "../../src/protocol/http.ts";

const te = new TextEncoder();
const bytes = (text: string) => te.encode(text);

function req(text: string, options?: Parameters<typeof decodeRequestHead>[1]) {
  return decodeRequestHead(bytes(text), options);
}

function assertStatus(fn: () => unknown, status: number, match?: RegExp) {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof HttpError, `expected HttpError, found ${e}`);
    assert.equal(e.status, status, e.message);
    assert.equal(e.reason, reasonPhrase(status));
    if (match) assert.match(e.message, match);
    return true;
  });
}

/** Every split of `text` into two reads decodes the same, and every prefix asks for more. */
function assertSplitsAgree(text: string) {
  const all = bytes(text);
  const whole = decodeRequestHead(all);
  assert.ok(whole);
  for (let i = 0; i < whole.length; i++) {
    assert.equal(decodeRequestHead(all.subarray(0, i)), null, `prefix of ${i} bytes`);
    // The codec is stateless: a reader re-decodes its whole buffer after each read.
    assert.deepEqual(decodeRequestHead(all.subarray(0, whole.length)), whole);
  }
}

Deno.test("http head: absolute-form GET with CRLF", () => {
  const text = "GET http://V6only.Test:8080/a/b?c=d#frag HTTP/1.1\r\nHost: v6only.test:8080\r\n" +
    "User-Agent: curl/8\r\nAccept: */*\r\n\r\n";
  const d = req(text)!;
  assert.equal(d.length, bytes(text).length);
  const expected: HttpRequestHead = {
    method: "GET",
    target: "http://V6only.Test:8080/a/b?c=d#frag",
    version: "1.1",
    headers: [["Host", "v6only.test:8080"], ["User-Agent", "curl/8"], ["Accept", "*/*"]],
    form: "absolute",
    destination: { hostname: "v6only.test", port: 8080 },
    authority: "V6only.Test:8080",
    path: "/a/b?c=d",
  };
  assert.deepEqual(d.value, expected);
  assertSplitsAgree(text);
});

Deno.test("http head: bare LF line ends, default port, empty paths", () => {
  const d = req("GET http://192.0.2.1 HTTP/1.0\nX-A: 1\n\n")!;
  assert.equal(d.length, 38);
  assert.deepEqual(d.value.destination, { hostname: "192.0.2.1", port: 80 });
  assert.equal(d.value.path, "/");
  assert.equal(d.value.version, "1.0");
  assert.deepEqual(d.value.headers, [["X-A", "1"]]);
  assert.equal(req("OPTIONS http://a.test HTTP/1.1\r\nHost: a.test\r\n\r\n")!.value.path, "*");
  assert.equal(req("GET http://a.test?q HTTP/1.1\r\nHost: a.test\r\n\r\n")!.value.path, "/?q");
  assert.equal(req("GET http://a.test:/x HTTP/1.1\r\n\r\n")!.value.destination!.port, 80);
  assertSplitsAgree("GET http://192.0.2.1 HTTP/1.0\nX-A: 1\r\n\n");
});

Deno.test("http head: CONNECT authority-form with names, IPv4 and IPv6", () => {
  for (
    const [target, hostname, port] of [
      ["v4only.test:443", "v4only.test", 443],
      ["EXAMPLE.test:1", "example.test", 1],
      ["192.0.2.7:65535", "192.0.2.7", 65535],
      ["[2001:db8::1]:443", "2001:db8::1", 443],
    ] as const
  ) {
    const text = `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`;
    const d = req(text)!.value;
    assert.equal(d.form, "authority");
    assert.deepEqual(d.destination, { hostname, port });
    assert.equal(d.authority, target);
    assert.equal(d.path, "");
    assertSplitsAgree(text);
  }
  // No Host is fine for CONNECT.
  assert.ok(req("CONNECT a.test:443 HTTP/1.1\r\n\r\n"));
  for (
    const bad of [
      "a.test",
      "a.test:",
      "a.test:0",
      "a.test:65536",
      "a.test:123456",
      "2001:db8::1:443",
      "[2001:db8::1]",
      "[2001:db8::zz]:443",
      "[2001:db8::1%25eth0]:443",
      "http://a.test:443",
      "/x",
      "a.test:44x",
      "user@a.test:443",
      ":443",
    ]
  ) {
    assertStatus(() => req(`CONNECT ${bad} HTTP/1.1\r\n\r\n`), 400, /CONNECT host:port/);
  }
});

Deno.test("http head: origin-form and asterisk decode with no destination", () => {
  const d = req("GET /index.html HTTP/1.1\r\nHost: a.test\r\n\r\n")!.value;
  assert.equal(d.form, "origin");
  assert.equal(d.destination, null);
  assert.equal(d.path, "/index.html");
  assert.equal(d.authority, "a.test");
  assert.equal(req("OPTIONS * HTTP/1.1\r\nHost: a.test\r\n\r\n")!.value.form, "asterisk");
  // HTTP/1.0 needs no Host; HTTP/1.1 does (RFC 9112 3.2).
  assert.equal(req("GET / HTTP/1.0\r\n\r\n")!.value.authority, "");
  assertStatus(() => req("GET / HTTP/1.1\r\n\r\n"), 400, /Host/);
});

Deno.test("http head: Host consistency (absolute-form wins, one valid Host)", () => {
  const d = req("GET http://a.test/ HTTP/1.1\r\nHost: b.test\r\n\r\n")!.value;
  assert.deepEqual(d.destination, { hostname: "a.test", port: 80 });
  assert.equal(d.authority, "a.test");
  // Absolute-form without Host: accepted, the proxy sends the target's authority.
  assert.ok(req("GET http://a.test/ HTTP/1.1\r\n\r\n"));
  assertStatus(
    () => req("GET http://a.test/ HTTP/1.1\r\nHost: a.test\r\nhost: a.test\r\n\r\n"),
    400,
    /at most one Host/,
  );
  assertStatus(() => req("GET http://a.test/ HTTP/1.1\r\nHost: a b\r\n\r\n"), 400, /Host/);
  assertStatus(() => req("GET http://a.test/ HTTP/1.1\r\nHost: a.test:0\r\n\r\n"), 400, /Host/);
  assert.ok(req("GET http://a.test/ HTTP/1.1\r\nHost:\r\n\r\n"));
});

Deno.test("http head: absolute URIs that are not http", () => {
  assertStatus(() => req("GET https://a.test/ HTTP/1.1\r\n\r\n"), 501, /CONNECT for https/);
  assertStatus(() => req("GET ftp://a.test/ HTTP/1.1\r\n\r\n"), 501, /"ftp"/);
  assertStatus(() => req("GET http://u:p@a.test/ HTTP/1.1\r\n\r\n"), 400, /user information/);
  assertStatus(() => req("GET http:///x HTTP/1.1\r\n\r\n"), 400, /http:\/\/host/);
  assertStatus(() => req("GET http://a.test:99999/ HTTP/1.1\r\n\r\n"), 400);
  assertStatus(() => req("GET http://[::1/ HTTP/1.1\r\n\r\n"), 400);
  assertStatus(() => req("GET a.test:80 HTTP/1.1\r\n\r\n"), 400, /absolute http/);
  assert.deepEqual(req("GET http://[2001:db8::2]:81/ HTTP/1.1\r\n\r\n")!.value.destination, {
    hostname: "2001:db8::2",
    port: 81,
  });
});

Deno.test("http head: garbage request lines are 400 as soon as the line is whole", () => {
  for (
    const line of [
      "GET  http://a.test/ HTTP/1.1",
      "GET http://a.test/  HTTP/1.1",
      "GET http://a.test/",
      "GET",
      "G@T http://a.test/ HTTP/1.1",
      "GET http://a.test/ HTTP/1.1 extra",
      " GET http://a.test/ HTTP/1.1",
      "GET http://a.test/\x7f HTTP/1.1",
      "GET http://a.test/\xe9 HTTP/1.1",
      "GET http://a.test/ HTTP/1.x",
      "GET http://a.test/ http/1.1",
      "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ]
  ) {
    // The rest of the head has not arrived: the first line alone is refused.
    assertStatus(
      () => decodeRequestHead(Uint8Array.from(line + "\r\n", (c) => c.charCodeAt(0))),
      400,
    );
  }
  assertStatus(() => req("GET http://a.test/ HTTP/1.1\r\r\n\r\n"), 400, /bare CR/);
  assertStatus(() => req("GET http://a.test/ HTTP/1.1\0\r\n\r\n"), 400, /NUL/);
});

Deno.test("http head: versions other than 1.0 and 1.1 are 505", () => {
  for (const v of ["HTTP/2.0", "HTTP/0.9", "HTTP/1.2", "HTTP/3"]) {
    assertStatus(() => req(`GET http://a.test/ ${v}\r\n\r\n`), 505, /HTTP\/1.0 or HTTP\/1.1/);
  }
});

Deno.test("http head: malformed header fields are 400", () => {
  const cases: [string, RegExp][] = [
    ["X-A: 1\r\n folded", /obsolete line folding/],
    ["X-A: 1\r\n\tfolded", /obsolete line folding/],
    ["X-A : 1", /whitespace before the colon/],
    ["X-A\t: 1", /whitespace before the colon/],
    ["X A: 1", /field name token/],
    [": 1", /field name token/],
    ["X-A 1", /"name: value"/],
    ["X-A: a\x00b", /NUL/],
    ["X-A: a\rb", /bare CR/],
    ["X-A: a\x01b", /control characters/],
    ["X-A: a\x7fb", /control characters/],
  ];
  for (const [field, match] of cases) {
    assertStatus(
      () => req(`GET http://a.test/ HTTP/1.1\r\n${field}\r\n\r\n`),
      400,
      match,
    );
  }
  // OWS trimmed, HTAB and obs-text kept (as Latin-1), empty values allowed.
  const d = decodeRequestHead(
    Uint8Array.from(
      "GET http://a.test/ HTTP/1.1\r\nX-A: \t a\tb \t\r\nX-B:\r\nX-C: caf\xe9\r\n\r\n",
      (c) => c.charCodeAt(0),
    ),
  )!;
  assert.deepEqual(d.value.headers, [["X-A", "a\tb"], ["X-B", ""], ["X-C", "caf\xe9"]]);
});

Deno.test("http head: empty lines before the request line are skipped", () => {
  const d = req("\r\n\nGET http://a.test/ HTTP/1.1\r\n\r\n")!;
  assert.equal(d.length, 34);
  assert.equal(d.value.method, "GET");
  assert.equal(req("\r\n\r\n"), null);
});

Deno.test("http head: pipelined requests: the length stops at the first head", () => {
  const first = "GET http://a.test/1 HTTP/1.1\r\nHost: a.test\r\n\r\n";
  const second = "GET http://b.test/2 HTTP/1.1\nHost: b.test\n\n";
  const all = bytes(first + second + "GET http://c.test/");
  const d1 = decodeRequestHead(all)!;
  assert.equal(d1.length, bytes(first).length);
  assert.equal(d1.value.path, "/1");
  const d2 = decodeRequestHead(all.subarray(d1.length))!;
  assert.equal(d2.length, bytes(second).length);
  assert.equal(d2.value.destination!.hostname, "b.test");
  assert.equal(decodeRequestHead(all.subarray(d1.length + d2.length)), null);
});

Deno.test("http head: limits: huge head, no end of headers, too many fields, long line", () => {
  // No end of headers: null while under the limit, 431 once the buffer passes it.
  const start = "GET http://a.test/ HTTP/1.1\r\n";
  const under = start + "X: " + "a".repeat(MAX_HEADER_BYTES - start.length - 10) + "\r\n";
  assert.equal(req(under), null);
  assertStatus(() => req(under + "Y: " + "b".repeat(20)), 431, /within 32768 bytes/);
  // The same without any line end in the fields.
  assertStatus(() => req(start + "X: " + "a".repeat(MAX_HEADER_BYTES)), 431);
  // A whole head over the limit is 431 even though its end is there.
  assertStatus(() => req(start + "X: " + "a".repeat(MAX_HEADER_BYTES) + "\r\n\r\n"), 431);
  // Smaller limits by option; a head exactly at the limit is fine.
  const small = start + "X: 1\r\n\r\n";
  assert.ok(req(small, { maxHeaderBytes: small.length }));
  assertStatus(() => req(small, { maxHeaderBytes: small.length - 1 }), 431);
  // Header count.
  const fields = (n: number) => Array.from({ length: n }, (_, i) => `X-${i}: ${i}\r\n`).join("");
  assert.equal(req(start + fields(100) + "\r\n")!.value.headers.length, 100);
  assertStatus(() => req(start + fields(101) + "\r\n"), 431, /at most 100 header fields/);
  assertStatus(() => req(start + fields(3) + "\r\n", { maxHeaders: 2 }), 431);
  // Request line: 414 once it passes 8 KiB, with or without its end.
  const long = "GET http://a.test/" + "p".repeat(8200);
  assertStatus(() => req(long), 414);
  assertStatus(() => req(long + " HTTP/1.1\r\n\r\n"), 414);
  assert.equal(req("GET http://a.test/" + "p".repeat(8000)), null);
  assertStatus(() => req("GET http://a.test/ HTTP/1.1\r\n\r\n", { maxRequestLineBytes: 10 }), 414);
  // Endless empty lines are bounded too.
  assertStatus(() => req("\r\n".repeat(MAX_HEADER_BYTES)), 431);
});

Deno.test("http head: responses", () => {
  const text = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: b\r\n\r\nabc";
  const d = decodeResponseHead(bytes(text))!;
  assert.equal(d.length, text.length - 3);
  assert.deepEqual(d.value, {
    version: "1.1",
    status: 200,
    reason: "OK",
    headers: [["Content-Length", "3"], ["X-A", "b"]],
  });
  for (let i = 0; i < d.length; i++) {
    assert.equal(decodeResponseHead(bytes(text.slice(0, i))), null);
  }
  assert.equal(decodeResponseHead(bytes("HTTP/1.0 204\n\n"))!.value.reason, "");
  assert.equal(
    decodeResponseHead(bytes("HTTP/1.1 404 Not  Found \r\n\r\n"))!.value.reason,
    "Not  Found ",
  );
  // Broken upstreams are 502 for the client.
  for (
    const bad of [
      "HTTP/1.1 20 OK\r\n\r\n",
      "HTTP/1.1 099 x\r\n\r\n",
      "HTTP/1.1 2000 OK\r\n\r\n",
      "HTTP/2.0 200 OK\r\n\r\n",
      "SSH-2.0-OpenSSH\r\n\r\n",
      "HTTP/1.1 200 OK\r\nX : 1\r\n\r\n",
      "HTTP/1.1 200 OK\r\n folded\r\n\r\n",
      "HTTP/1.1 200 O\x01K\r\n\r\n",
    ]
  ) {
    assertStatus(() => decodeResponseHead(bytes(bad)), 502);
  }
  assertStatus(
    () => decodeResponseHead(bytes("HTTP/1.1 200 OK\r\nX: " + "a".repeat(40000))),
    502,
    /within/,
  );
  assertStatus(
    () => decodeResponseHead(bytes("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n"), { maxHeaders: 1 }),
    502,
  );
});

Deno.test("http head: header tokens", () => {
  const headers: [string, string][] = [["Connection", " Keep-Alive ,, X-A"], [
    "connection",
    "close",
  ]];
  assert.deepEqual(headerTokens(headers, "CONNECTION"), ["keep-alive", "x-a", "close"]);
  assert.deepEqual(headerTokens(headers, "upgrade"), []);
});
