import assert from "node:assert/strict";
import { HttpError, type HttpHeader } from "../../src/protocol/http.ts";
import { ChunkedScanner, requestFraming, responseFraming } from "../../src/protocol/http_body.ts";

const te = new TextEncoder();

function assertStatus(fn: () => unknown, status: number, match?: RegExp) {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof HttpError, `expected HttpError, found ${e}`);
    assert.equal(e.status, status, e.message);
    if (match) assert.match(e.message, match);
    return true;
  });
}

const r11 = (headers: HttpHeader[]) => requestFraming({ version: "1.1", headers });

Deno.test("http framing: requests", () => {
  assert.deepEqual(r11([]), { kind: "none" });
  assert.deepEqual(r11([["Content-Length", "0"]]), { kind: "none" });
  assert.deepEqual(r11([["Content-Length", "12"]]), { kind: "length", length: 12 });
  assert.deepEqual(r11([["content-length", "12, 12"], ["Content-Length", "12"]]), {
    kind: "length",
    length: 12,
  });
  assert.deepEqual(r11([["Transfer-Encoding", "chunked"]]), { kind: "chunked" });
  assert.deepEqual(r11([["Transfer-Encoding", "gzip"], ["transfer-encoding", "Chunked"]]), {
    kind: "chunked",
  });
  assertStatus(() => r11([["Content-Length", "12"], ["Content-Length", "13"]]), 400, /conflicting/);
  assertStatus(() => r11([["Content-Length", "12, 13"]]), 400, /conflicting/);
  for (const bad of ["-1", "1.5", "0x10", "", "1 2", "+3", "9".repeat(16)]) {
    assertStatus(() => r11([["Content-Length", bad]]), 400, /Content-Length digits/);
  }
  assertStatus(
    () => r11([["Transfer-Encoding", "chunked"], ["Content-Length", "3"]]),
    400,
    /found both/,
  );
  assertStatus(() => r11([["Transfer-Encoding", "gzip"]]), 400, /end in chunked/);
  assertStatus(() => r11([["Transfer-Encoding", "chunked, gzip"]]), 400, /end in chunked/);
  assertStatus(() => r11([["Transfer-Encoding", "chunked, chunked"]]), 400, /once/);
  assertStatus(() => r11([["Transfer-Encoding", ""]]), 400);
  assertStatus(() => r11([["Transfer-Encoding", "foo, chunked"]]), 501, /"foo"/);
  assertStatus(
    () => requestFraming({ version: "1.0", headers: [["Transfer-Encoding", "chunked"]] }),
    400,
    /HTTP\/1.0/,
  );
});

Deno.test("http framing: responses", () => {
  const res = (status: number, headers: HttpHeader[], method = "GET", version = "1.1" as const) =>
    responseFraming({ version, status, headers }, method);
  const cl: HttpHeader[] = [["Content-Length", "5"]];
  assert.deepEqual(res(200, cl), { kind: "length", length: 5 });
  assert.deepEqual(res(200, cl, "HEAD"), { kind: "none" });
  for (const status of [100, 101, 199, 204, 304]) {
    assert.deepEqual(res(status, cl), { kind: "none" });
  }
  assert.deepEqual(res(200, cl, "CONNECT"), { kind: "none" });
  assert.deepEqual(res(407, cl, "CONNECT"), { kind: "length", length: 5 });
  assert.deepEqual(res(200, []), { kind: "close" });
  assert.deepEqual(res(200, [["Content-Length", "0"]]), { kind: "none" });
  assert.deepEqual(res(200, [["Transfer-Encoding", "chunked"]]), { kind: "chunked" });
  // TE overrides CL; a coding not ending in chunked, or HTTP/1.0, reads to the close.
  assert.deepEqual(res(200, [["Transfer-Encoding", "chunked"], ...cl]), { kind: "chunked" });
  assert.deepEqual(res(200, [["Transfer-Encoding", "gzip"]]), { kind: "close" });
  assert.deepEqual(
    responseFraming(
      { version: "1.0", status: 200, headers: [["Transfer-Encoding", "chunked"]] },
      "GET",
    ),
    { kind: "close" },
  );
  assertStatus(() => res(200, [["Content-Length", "5"], ["Content-Length", "6"]]), 502);
  assertStatus(() => res(200, [["Content-Length", "five"]]), 502);
});

/** Feeds `text` to a scanner in the given piece sizes; returns bytes counted and the scanner. */
function feed(text: string | Uint8Array, pieces: number[] = [], options = {}) {
  const all = typeof text === "string" ? te.encode(text) : text;
  const s = new ChunkedScanner(options);
  let used = 0;
  let at = 0;
  let k = 0;
  while (at < all.length && !s.done) {
    const size = pieces[k++ % Math.max(1, pieces.length)] ?? all.length;
    const piece = all.subarray(at, at + size);
    const n = s.scan(piece);
    assert.ok(n <= piece.length);
    if (!s.done) assert.equal(n, piece.length, "every byte belongs to the body until it ends");
    used += n;
    at += piece.length;
  }
  return { used, done: s.done, scanner: s };
}

Deno.test("http chunked: whole bodies, split at every position", () => {
  const bodies = [
    "0\r\n\r\n",
    "3\r\nabc\r\n0\r\n\r\n",
    'A;name=value;x="q d"\r\n0123456789\r\n00000\r\n\r\n',
    "1 ;ext\r\nx\r\n0\r\nTrailer-A: 1\r\nTrailer-B: 2\r\n\r\n",
    "fF\r\n" + "z".repeat(255) + "\r\n0\r\n\r\n",
  ];
  for (const body of bodies) {
    const next = "GET http://a.test/ HTTP/1.1\r\n\r\n";
    const whole = feed(body + next);
    assert.equal(whole.used, te.encode(body).length, body);
    assert.ok(whole.done);
    assert.equal(whole.scanner.scan(te.encode("more")), 0);
    for (let split = 1; split < body.length; split++) {
      const r = feed(body + next, [split]);
      assert.equal(r.used, te.encode(body).length, `${JSON.stringify(body)} in pieces of ${split}`);
      assert.ok(r.done);
    }
    // An unfinished body is not done.
    assert.equal(feed(body.slice(0, -1)).done, false);
  }
});

Deno.test("http chunked: a large chunk passes in bulk", () => {
  const size = 5 * 1024 * 1024;
  const s = new ChunkedScanner();
  assert.equal(s.scan(te.encode(size.toString(16) + "\r\n")), 8);
  const block = new Uint8Array(65536);
  for (let i = 0; i < size / block.length; i++) assert.equal(s.scan(block), block.length);
  assert.equal(s.done, false);
  assert.equal(s.scan(te.encode("\r\n0\r\n\r\nX")), 7);
  assert.ok(s.done);
});

Deno.test("http chunked: malformed bodies are 400 (502 for a response)", () => {
  const cases: [string, RegExp][] = [
    ["\r\n", /hex chunk size/],
    ["g\r\n", /hex chunk size/],
    ["-1\r\n", /hex chunk size/],
    [";ext\r\n", /hex chunk size/],
    ["3x\r\n", /after the chunk size/],
    ["3\n", /after the chunk size/],
    ["3\rx", /LF after CR/],
    ["3\r\nabcd", /CRLF after the chunk data/],
    ["3\r\nabc\n", /CRLF after the chunk data/],
    ["3\r\nabc\rx", /CRLF after the chunk data/],
    ["3;a\x00b\r\n", /chunk extension/],
    ["3;a\nb\r\n", /chunk extension/],
    ["1".repeat(14) + "\r\n", /13 hex digits/],
    ["0\r\nX: 1\nY", /trailer field/],
    ["0\r\n\n", /trailer field/],
    ["0\r\nX: 1\rY", /LF after CR/],
    ["0\r\n\rX", /LF after CR/],
  ];
  for (const [body, match] of cases) {
    assertStatus(() => feed(body), 400, match);
    assertStatus(() => feed(body, [], { errorStatus: 502 }), 502, match);
  }
  // Leading zeros are fine (bounded by the line limit).
  assert.ok(feed("0".repeat(20) + "1\r\nx\r\n0\r\n\r\n").done);
});

Deno.test("http chunked: bounds on extensions and trailers", () => {
  const ext = "1;" + "e".repeat(5000) + "\r\nx\r\n0\r\n\r\n";
  assertStatus(() => feed(ext), 400, /at most 4096 bytes/);
  assert.ok(feed(ext, [], { maxLineBytes: 6000 }).done);
  const trailers = "0\r\n" + "T: v\r\n".repeat(3000) + "\r\n";
  assertStatus(() => feed(trailers), 400, /16384 bytes of trailers/);
  assert.ok(feed(trailers, [], { maxTrailerBytes: 20000 }).done);
  // The bound holds across pieces: one trailer line that never ends.
  const s = new ChunkedScanner({ maxTrailerBytes: 100 });
  s.scan(te.encode("0\r\nX: "));
  assertStatus(() => {
    for (let i = 0; i < 200; i++) s.scan(te.encode("a"));
  }, 400);
});

Deno.test("http chunked: data spans take the body out of its framing", () => {
  const text = "3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: 1\r\n\r\n";
  for (let split = 1; split <= text.length; split++) {
    const s = new ChunkedScanner();
    let data = "";
    for (let at = 0; at < text.length; at += split) {
      const piece = te.encode(text.slice(at, at + split));
      s.scan(piece, (a, b) => {
        data += new TextDecoder().decode(piece.subarray(a, b));
      });
    }
    assert.equal(data, "abc0123456789abcdef", `pieces of ${split}`);
    assert.ok(s.done);
  }
});
