import assert from "node:assert/strict";
import { configDocument, parseConfig } from "../../src/config/config.ts";
import { optionsFromConfig } from "../../src/config/options.ts";
import { hashPassword } from "../../src/policy/password.ts";

const HASH = await hashPassword("s3cret", { ln: 10 });

Deno.test("safety keys: password_hash, allow_open_relay, lockout, per-client and per-user limits", () => {
  const config = parseConfig(
    [
      "users:",
      "  - username: alice",
      `    password_hash: "${HASH}"`,
      "  - { username: bob, password: clear }",
      "allow_open_relay: true",
      "lockout: { threshold: 5, delay: 100ms, max_delay: 2s, duration: 30m, ipv6_prefix: 56 }",
      "limits:",
      "  per_client: { sessions: 64, rate: 20, burst: 40 }",
      "  per_user: { sessions: 8, rate: 0.5 }",
      "",
    ].join("\n"),
    { file: "gw.yaml" },
  );
  assert.deepEqual(config.users, [
    { username: "alice", passwordHash: HASH },
    { username: "bob", password: "clear" },
  ]);
  assert.equal(config.allowOpenRelay, true);
  assert.deepEqual(config.lockout, {
    threshold: 5,
    delay: 100,
    maxDelay: 2000,
    duration: 1_800_000,
    ipv6Prefix: 56,
  });
  assert.deepEqual(config.limits.perClient, { sessions: 64, rate: 20, burst: 40 });
  assert.deepEqual(config.limits.perUser, { sessions: 8, rate: 0.5 });
  const options = optionsFromConfig(config);
  assert.deepEqual(options.safety, {
    allowOpenRelay: true,
    lockout: {
      threshold: 5,
      baseDelay: 100,
      maxDelay: 2000,
      lockout: 1_800_000,
      window: 1_800_000,
      ipv6Prefix: 56,
    },
    perClient: { sessions: 64, rate: 20, burst: 40 },
    perUser: { sessions: 8, rate: 0.5 },
  });
  // The document redacts hashes like passwords and round-trips the rest.
  const doc = configDocument(config);
  assert.deepEqual(doc.users, [
    { username: "alice", password_hash: "<redacted>" },
    { username: "bob", password: "<redacted>" },
  ]);
  assert.equal(doc.allow_open_relay, true);
  assert.deepEqual(doc.lockout, {
    threshold: 5,
    delay: "100ms",
    max_delay: "2s",
    duration: "30m",
    ipv6_prefix: 56,
  });
  assert.deepEqual(doc.limits.per_user, { sessions: 8, rate: 0.5 });
});

Deno.test("safety keys: defaults stay absent; threshold 0 turns the lockout off", () => {
  const plain = parseConfig("listen: ['127.0.0.1:1080']\n", { file: "gw.yaml" });
  assert.equal(plain.allowOpenRelay, undefined);
  assert.equal(plain.lockout, undefined);
  assert.equal(plain.limits.perClient, undefined);
  assert.equal(optionsFromConfig(plain).safety?.lockout, undefined);
  const off = parseConfig("lockout: { threshold: 0 }\n", { file: "gw.yaml" });
  assert.equal(optionsFromConfig(off).safety?.lockout, false);
});

Deno.test("safety keys: errors say what was expected and found", () => {
  const error = (text: string) => {
    try {
      parseConfig(text, { file: "gw.yaml" });
    } catch (e) {
      return (e as Error).message;
    }
    throw new Error(`accepted: ${text}`);
  };
  assert.match(
    error(`users:\n  - { username: a, password: x, password_hash: "${HASH}" }\n`),
    /users\[0\]: expected a password or a password_hash, found both/,
  );
  assert.match(
    error("users:\n  - { username: a }\n"),
    /users\[0\]\.password: required key is missing or empty; expected a password or a password_hash/,
  );
  // A hostile cost, refused when the file is read; the hash is not echoed.
  const hostile = HASH.replace("ln=10", "ln=20");
  const m = error(`users:\n  - { username: a, password_hash: "${hostile}" }\n`);
  assert.match(
    m,
    /users\[0\]\.password_hash: expected a password hash "\$scrypt\$ln=N,r=N,p=N\$SALT\$HASH"/,
  );
  assert.ok(!m.includes(hostile.slice(-20)), "the hash is not echoed");
  assert.match(error("allow_open_relay: yes please\n"), /allow_open_relay: expected true or false/);
  assert.match(
    error("lockout: { ipv6_prefix: 16 }\n"),
    /lockout\.ipv6_prefix: expected a prefix length from 32 to 128/,
  );
  assert.match(
    error("lockout: { treshold: 5 }\n"),
    /unknown key; expected one of threshold, delay/,
  );
  assert.match(
    error("limits: { per_client: { rate: -1 } }\n"),
    /limits\.per_client\.rate: expected a number, 0 or more/,
  );
  assert.match(
    error("limits: { per_user: { sessions: 1.5 } }\n"),
    /limits\.per_user\.sessions: expected a whole number/,
  );
});
