import assert from "node:assert/strict";
import { staticUsers } from "../../src/policy/auth.ts";

const info = {
  client: { transport: "tcp", hostname: "127.0.0.1", port: 1 } as const,
  signal: new AbortController().signal,
};

Deno.test("staticUsers accepts exactly its users", () => {
  const auth = staticUsers([{ username: "alice", password: "s3cret" }, {
    username: "bob",
    password: "pässwörd",
  }]);
  assert.equal(auth({ username: "alice", password: "s3cret" }, info), true);
  assert.equal(auth({ username: "bob", password: "pässwörd" }, info), true);
  assert.equal(auth({ username: "alice", password: "s3cre" }, info), false);
  assert.equal(auth({ username: "alice", password: "s3crets" }, info), false);
  assert.equal(auth({ username: "carol", password: "s3cret" }, info), false);
});

Deno.test("staticUsers refuses users that RFC 1929 cannot carry, and duplicates", () => {
  // An empty password would let in a client that sends PLEN=0.
  assert.throws(
    () => staticUsers([{ username: "alice", password: "" }]),
    (e: Error) =>
      e instanceof RangeError && e.message ===
        "users[0]: expected a user name and a password of 1 to 255 UTF-8 bytes each (RFC 1929), " +
          "found 5 and 0 bytes",
  );
  assert.throws(
    () => staticUsers([{ username: "", password: "pw" }]),
    /users\[0\]: .* found 0 and 2 bytes/,
  );
  // 128 two-byte characters: 256 bytes, which no client can send.
  assert.throws(
    () =>
      staticUsers([{ username: "a", password: "x" }, { username: "b", password: "é".repeat(128) }]),
    /users\[1\]: .* found 1 and 256 bytes/,
  );
  assert.throws(
    () => staticUsers([{ username: "a", password: "x" }, { username: "a", password: "y" }]),
    (e: Error) =>
      e instanceof TypeError &&
      e.message === 'users[1]: expected each user name once, found "a" again',
  );
  // The limits themselves are fine.
  staticUsers([{ username: "u".repeat(255), password: "p".repeat(255) }]);
});
