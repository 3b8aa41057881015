import assert from "node:assert/strict";
import { Reply } from "../../src/protocol/constants.ts";
import { decodeRequestHead, decodeResponseHead } from "../../src/protocol/http.ts";
import {
  encodeRequestHead,
  encodeResponse,
  encodeResponseHead,
  forwardHeaders,
  httpStatusFor,
  keepAlive,
  parseProxyAuthorization,
} from "../../src/protocol/http_message.ts";

const td = new TextDecoder();
const te = new TextEncoder();

Deno.test("http message: hop-by-hop fields removed, Via added, Host replaced", () => {
  const headers: [string, string][] = [
    ["Host", "b.test"],
    ["Connection", "keep-alive, X-Secret"],
    ["connection", "Upgrade"],
    ["Keep-Alive", "timeout=5"],
    ["Proxy-Connection", "keep-alive"],
    ["Proxy-Authorization", "Basic YTpi"],
    ["Proxy-Authenticate", "Basic"],
    ["TE", "trailers"],
    ["Trailer", "X-T"],
    ["Upgrade", "websocket"],
    ["x-secret", "1"],
    ["Via", "1.1 other"],
    ["Accept", "*/*"],
    ["Transfer-Encoding", "chunked"],
  ];
  assert.deepEqual(forwardHeaders(headers, { host: "a.test:8080", version: "1.0" }), [
    ["Host", "a.test:8080"],
    ["Via", "1.1 other"],
    ["Accept", "*/*"],
    ["Transfer-Encoding", "chunked"],
    ["Via", "1.0 dualsocks"],
  ]);
  // Without host, Host stays; Content-Length goes only when Transfer-Encoding is there.
  assert.deepEqual(
    forwardHeaders([["Host", "x"], ["Content-Length", "3"]], { connection: "close" }),
    [
      ["Host", "x"],
      ["Content-Length", "3"],
      ["Via", "1.1 dualsocks"],
      ["Connection", "close"],
    ],
  );
  assert.deepEqual(
    forwardHeaders([["Transfer-Encoding", "chunked"], ["Content-Length", "3"]], { via: "gw" }),
    [["Transfer-Encoding", "chunked"], ["Via", "1.1 gw"]],
  );
});

Deno.test("http message: keep-alive per RFC 9112 9.3", () => {
  assert.equal(keepAlive({ version: "1.1", headers: [] }), true);
  assert.equal(keepAlive({ version: "1.1", headers: [["Connection", "Close"]] }), false);
  assert.equal(
    keepAlive({ version: "1.1", headers: [["Connection", "keep-alive, close"]] }),
    false,
  );
  assert.equal(keepAlive({ version: "1.0", headers: [] }), false);
  assert.equal(keepAlive({ version: "1.0", headers: [["Connection", "Keep-Alive"]] }), true);
  assert.equal(keepAlive({ version: "1.0", headers: [["Proxy-Connection", "keep-alive"]] }), true);
  assert.equal(keepAlive({ version: "1.1", headers: [["Proxy-Connection", "close"]] }), false);
});

Deno.test("http message: request and response heads round-trip through the decoders", () => {
  const head = decodeRequestHead(
    Uint8Array.from(
      "POST http://a.test/x?y HTTP/1.0\r\nHost: a.test\r\nX-Latin: caf\xe9\r\nContent-Length: 2\r\n\r\n",
      (c) => c.charCodeAt(0),
    ),
  )!.value;
  const out = encodeRequestHead({
    method: head.method,
    path: head.path,
    headers: forwardHeaders(head.headers, { host: head.authority, version: head.version }),
  });
  assert.equal(
    String.fromCharCode(...out),
    "POST /x?y HTTP/1.1\r\nHost: a.test\r\nX-Latin: caf\xe9\r\nContent-Length: 2\r\nVia: 1.0 dualsocks\r\n\r\n",
  );
  const again = decodeRequestHead(out);
  assert.equal(again!.value.form, "origin");
  assert.equal(again!.length, out.length);
  const res = encodeResponseHead({ status: 404, reason: "Nope", headers: [["X", "1"]] });
  assert.deepEqual(decodeResponseHead(res)!.value, {
    version: "1.1",
    status: 404,
    reason: "Nope",
    headers: [["X", "1"]],
  });
  assert.throws(() => encodeRequestHead({ method: "G T", path: "/", headers: [] }), TypeError);
  assert.throws(() => encodeRequestHead({ method: "GET", path: "/ x", headers: [] }), TypeError);
  assert.throws(
    () => encodeRequestHead({ method: "GET", path: "/", headers: [["X", "a\r\nInjected: 1"]] }),
    TypeError,
  );
  assert.throws(() => encodeResponseHead({ status: 99, reason: "", headers: [] }), TypeError);
  assert.throws(
    () => encodeResponseHead({ status: 200, reason: "", headers: [["X", "\u0100"]] }),
    TypeError,
  );
});

Deno.test("http message: the proxy's own answers", () => {
  const text = td.decode(encodeResponse(502, { body: "cannot connect to a.test:80: refused" }));
  assert.equal(
    text,
    "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 37\r\n" +
      "Connection: close\r\n\r\ncannot connect to a.test:80: refused\n",
  );
  const auth = td.decode(
    encodeResponse(407, {
      headers: [["Proxy-Authenticate", 'Basic realm="dualsocks"']],
      body: "ü",
      close: false,
    }),
  );
  assert.match(auth, /^HTTP\/1.1 407 Proxy Authentication Required\r\n/);
  assert.match(auth, /Proxy-Authenticate: Basic realm="dualsocks"\r\n/);
  assert.match(auth, /Content-Length: 3\r\n/);
  assert.doesNotMatch(auth, /Connection/);
  assert.equal(
    td.decode(encodeResponse(200, { reason: "Connection established" })),
    "HTTP/1.1 200 Connection established\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
  );
});

Deno.test("http message: Basic Proxy-Authorization", () => {
  const basic = (text: string) => "Basic " + btoa(String.fromCharCode(...te.encode(text)));
  assert.deepEqual(parseProxyAuthorization(basic("alice:s3cret")), {
    username: "alice",
    password: "s3cret",
  });
  assert.deepEqual(parseProxyAuthorization(basic("bob:a:b")), { username: "bob", password: "a:b" });
  assert.deepEqual(parseProxyAuthorization(basic("ü:ß")), { username: "ü", password: "ß" });
  assert.deepEqual(parseProxyAuthorization("bAsIc   " + btoa("a:")), {
    username: "a",
    password: "",
  });
  for (
    const bad of [
      "Bearer abc",
      "Basic",
      "Basic ",
      "Basic !!!!",
      "Basic YWxpY2U", // not a multiple of 4
      "Basic " + btoa("no-colon"),
      "Basic " + btoa("\xff\xfe:x"), // not UTF-8
      "Basic " + btoa("a:b") + " extra",
      "Digest username=a",
    ]
  ) {
    assert.equal(parseProxyAuthorization(bad), null, bad);
  }
});

Deno.test("http message: status table for SOCKS5 replies", () => {
  assert.equal(httpStatusFor(Reply.SUCCEEDED), 200);
  assert.equal(httpStatusFor(Reply.GENERAL_FAILURE), 502);
  assert.equal(httpStatusFor(Reply.NOT_ALLOWED), 403);
  assert.equal(httpStatusFor(Reply.NETWORK_UNREACHABLE), 502);
  assert.equal(httpStatusFor(Reply.HOST_UNREACHABLE), 502);
  assert.equal(httpStatusFor(Reply.HOST_UNREACHABLE, { timeout: true }), 504);
  assert.equal(httpStatusFor(Reply.CONNECTION_REFUSED), 502);
  assert.equal(httpStatusFor(Reply.TTL_EXPIRED), 504);
  assert.equal(httpStatusFor(Reply.COMMAND_NOT_SUPPORTED), 501);
  assert.equal(httpStatusFor(Reply.ADDRESS_TYPE_NOT_SUPPORTED), 502);
  assert.equal(httpStatusFor(99), 502);
});
