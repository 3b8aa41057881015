import assert from "node:assert/strict";
import {
  dummyPasswordHash,
  hashPassword,
  isPasswordHash,
  parsePasswordHash,
  SCRYPT_LIMITS,
  verifyPassword,
} from "../../src/policy/password.ts";

// Made by Python's hashlib.scrypt, an independent implementation:
// hashlib.scrypt(b"pw", salt=b"saltsalt", n=1024, r=8, p=1, dklen=32)
const PYTHON_PW = "$scrypt$ln=10,r=8,p=1$c2FsdHNhbHQ$YRh2IsHIwK/6T5lIc4QxtEJvR54pdrKplJVcfDPN3lw";
// hashlib.scrypt("pässwörd".encode(), salt=b"0123456789abcdef", n=4096, r=4, p=2, dklen=24)
const PYTHON_UTF8 = "$scrypt$ln=12,r=4,p=2$MDEyMzQ1Njc4OWFiY2RlZg$73XQdPIhV86IH9u1RIrmWhaM6De47fFm";

Deno.test("verifyPassword agrees with another scrypt implementation", async () => {
  assert.equal(await verifyPassword("pw", PYTHON_PW), true);
  assert.equal(await verifyPassword("pW", PYTHON_PW), false);
  assert.equal(await verifyPassword("pässwörd", PYTHON_UTF8), true);
  assert.equal(await verifyPassword("passwörd", PYTHON_UTF8), false);
  // passlib writes "." for "+" in its base64.
  assert.equal(await verifyPassword("pw", PYTHON_PW.replaceAll("+", ".")), true);
});

Deno.test("hashPassword: salted, cost in the string, verifies", async () => {
  const a = await hashPassword("s3cret", { ln: 10 });
  const b = await hashPassword("s3cret", { ln: 10 });
  assert.match(a, /^\$scrypt\$ln=10,r=8,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$/);
  assert.notEqual(a, b, "a fresh salt each time");
  assert.equal(isPasswordHash(a), true);
  assert.equal(isPasswordHash("s3cret"), false);
  assert.equal(await verifyPassword("s3cret", a), true);
  assert.equal(await verifyPassword("s3cret", parsePasswordHash(b)), true);
  assert.equal(await verifyPassword("s3cre", a), false);
  assert.equal(await verifyPassword("s3cret ", a), false);
  // The default cost.
  assert.match(await hashPassword("x"), /^\$scrypt\$ln=15,r=8,p=1\$/);
});

Deno.test("a verification does not block the event loop", async () => {
  const stored = await hashPassword("s3cret", { ln: 15 });
  let ticks = 0;
  const timer = setInterval(() => ticks++, 1);
  try {
    // Wait for the timer to run at least once while the hash is computed.
    const tickSeen = new Promise<void>((resolve) => {
      const poll = setInterval(() => {
        if (ticks > 0) {
          clearInterval(poll);
          resolve();
        }
      }, 0);
    });
    const verifying = verifyPassword("s3cret", stored);
    let settled = false;
    verifying.then(() => settled = true);
    await tickSeen;
    assert.equal(settled, false, "timers ran while scrypt was still working");
    assert.equal(await verifying, true);
  } finally {
    clearInterval(timer);
  }
});

Deno.test("parsePasswordHash refuses hostile costs and malformed strings", () => {
  const salt = "c2FsdHNhbHQ";
  const hash = "YRh2IsHIwK/6T5lIc4QxtEJvR54pdrKplJVcfDPN3lw";
  const h = (params: string) => `$scrypt$${params}$${salt}$${hash}`;
  // Minutes of work or gigabytes of memory.
  assert.throws(
    () => parsePasswordHash(h("ln=20,r=8,p=1")),
    /at most 128 MiB .* found ln=20,r=8,p=1/,
  );
  assert.throws(() => parsePasswordHash(h("ln=17,r=8,p=2")), /N\*r\*p <= 2\^20/);
  assert.throws(() => parsePasswordHash(h("ln=16,r=32,p=1")), RangeError);
  assert.throws(() => parsePasswordHash(h("ln=21,r=8,p=1")), /expected ln 10-20/);
  assert.throws(() => parsePasswordHash(h("ln=9,r=8,p=1")), /expected ln 10-20, .* found ln=9/);
  assert.throws(() => parsePasswordHash(h("ln=15,r=0,p=1")), RangeError);
  assert.throws(() => parsePasswordHash(h("ln=15,r=8,p=17")), RangeError);
  assert.throws(() => parsePasswordHash(h("ln=999,r=8,p=1")), TypeError);
  assert.throws(() => parsePasswordHash(h("N=1024,r=8,p=1")), /found parameters "N=1024,r=8,p=1"/);
  // The largest accepted cost parses (it is not computed here).
  assert.equal(parsePasswordHash(h("ln=17,r=8,p=1")).ln, 17);
  assert.equal(SCRYPT_LIMITS.maxWork, 2 ** 20);
  // Shapes.
  assert.throws(() => parsePasswordHash("s3cret"), /expected "\$scrypt\$ln=N,r=N,p=N\$SALT\$HASH"/);
  assert.throws(() => parsePasswordHash(`$scrypt$ln=10,r=8,p=1$${salt}`), /found 3 \$-separated/);
  assert.throws(() => parsePasswordHash(h("ln=10,r=8,p=1") + "$x"), TypeError);
  assert.throws(() => parsePasswordHash(`$scrypt$ln=10,r=8,p=1$c2Fs!$${hash}`), /salt in base64/);
  assert.throws(
    () => parsePasswordHash(`$scrypt$ln=10,r=8,p=1$c2Fs$${hash}`),
    /salt of 8 to 64 bytes, found 3/,
  );
  assert.throws(
    () => parsePasswordHash(`$scrypt$ln=10,r=8,p=1$${salt}$YRh2`),
    /hash of 16 to 64 bytes, found 3/,
  );
});

Deno.test("hashPassword refuses a cost beyond the limits", async () => {
  await assert.rejects(hashPassword("x", { ln: 18 }), RangeError);
  await assert.rejects(hashPassword("x", { ln: 9 }), RangeError);
  await assert.rejects(hashPassword("x", { ln: 10.5 }), RangeError);
});

Deno.test("dummyPasswordHash: same cost, matches nothing, made once", async () => {
  const d = await dummyPasswordHash({ ln: 11, r: 4 });
  assert.equal(d.ln, 11);
  assert.equal(d.r, 4);
  assert.equal(d.p, 1);
  assert.equal(d.hash.length, 32);
  assert.equal(await dummyPasswordHash({ ln: 11, r: 4 }), d);
  assert.equal(await verifyPassword("", d), false);
  assert.equal(await verifyPassword("s3cret", d), false);
  assert.notEqual(await dummyPasswordHash({ ln: 10 }), d);
});
