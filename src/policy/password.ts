/**
 * Salted slow password hashes: scrypt from `node:crypto`, stored in the
 * PHC string format with the cost inside the string, so that a file can
 * hold hashes of different costs and a cost can be raised for new hashes
 * without breaking old ones:
 *
 * ```
 * $scrypt$ln=15,r=8,p=1$<salt>$<hash>
 * ```
 *
 * - `ln` is log2 of scrypt's CPU/memory cost N, `r` the block size and `p`
 *   the parallelism (the parameter names of passlib's scrypt strings);
 * - salt and hash are base64 without padding (the PHC format; `.` is read
 *   as `+`, as passlib writes it). The defaults are a 16-byte random salt
 *   and a 32-byte hash.
 *
 * The default cost, `ln=15,r=8,p=1`, takes 32 MiB and about 0.1 s per
 * verification on a current CPU: slow for a guesser, bearable for a login.
 *
 * A stored string from a hostile or mistaken configuration cannot make a
 * login take minutes or exhaust memory: the accepted costs are bounded
 * ({@linkcode SCRYPT_LIMITS}: at most 128 MiB, `128 * N * r`, and at most
 * `N * r * p` = 2^20, the work of `ln=17,r=8,p=1`, about half a second), and
 * {@linkcode parsePasswordHash} refuses anything beyond them when the
 * configuration is read. Verification is asynchronous (node's `scrypt` runs
 * off the event loop), so one login never stalls the other sessions.
 *
 * @module
 */

import { randomBytes, scrypt, timingSafeEqual } from "node:crypto";

/**
 * The parsed form of a stored scrypt hash.
 *
 * @example
 * ```ts
 * import { parsePasswordHash, type ScryptHash } from "./password.ts";
 * const h: ScryptHash = parsePasswordHash(
 *   "$scrypt$ln=10,r=8,p=1$c2FsdHNhbHQ$YRh2IsHIwK/6T5lIc4QxtEJvR54pdrKplJVcfDPN3lw",
 * );
 * h.ln; // 10
 * ```
 */
export interface ScryptHash {
  /** log2 of scrypt's cost parameter N. */
  ln: number;
  /** scrypt's block size. */
  r: number;
  /** scrypt's parallelism. */
  p: number;
  /** The salt. */
  salt: Uint8Array;
  /** The derived key. */
  hash: Uint8Array;
}

/**
 * The cost of a new hash: scrypt's `ln` (log2 N), `r` and `p`, each bounded
 * by {@linkcode SCRYPT_LIMITS}.
 *
 * @example
 * ```ts
 * import type { HashPasswordOptions } from "./password.ts";
 * const cheap: HashPasswordOptions = { ln: 12 };
 * ```
 */
export interface HashPasswordOptions {
  /** log2 of N; default 15. */
  ln?: number;
  /** Block size; default 8. */
  r?: number;
  /** Parallelism; default 1. */
  p?: number;
}

/**
 * The bounds on what a stored hash may ask for.
 *
 * @example
 * ```ts
 * import { SCRYPT_LIMITS } from "./password.ts";
 * SCRYPT_LIMITS.maxMemory; // 134217728 (128 MiB)
 * ```
 */
export const SCRYPT_LIMITS: Readonly<{
  minLn: number;
  maxLn: number;
  maxR: number;
  maxP: number;
  maxMemory: number;
  maxWork: number;
  minSalt: number;
  maxSalt: number;
  minHash: number;
  maxHash: number;
}> = Object.freeze({
  /** Below 2^10 a hash is too cheap to slow anyone down. */
  minLn: 10,
  maxLn: 20,
  maxR: 32,
  maxP: 16,
  /** scrypt's memory, 128 * N * r bytes. */
  maxMemory: 128 * 1024 * 1024,
  /** N * r * p: proportional to the time one verification takes. */
  maxWork: 2 ** 20,
  minSalt: 8,
  maxSalt: 64,
  minHash: 16,
  maxHash: 64,
});

/**
 * The default cost of {@linkcode hashPassword}.
 *
 * @example
 * ```ts
 * import { DEFAULT_SCRYPT_COST } from "./password.ts";
 * DEFAULT_SCRYPT_COST.ln; // 15
 * ```
 */
export const DEFAULT_SCRYPT_COST: Readonly<Required<HashPasswordOptions>> = Object.freeze({
  ln: 15,
  r: 8,
  p: 1,
});

const PREFIX = "$scrypt$";
const B64 = /^[A-Za-z0-9+/.]+$/;
const PARAMS = /^ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})$/;
const encoder = new TextEncoder();

function b64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/=+$/, "");
}

function unb64(text: string, what: string, min: number, max: number): Uint8Array {
  if (!B64.test(text) || text.length % 4 === 1) {
    throw new TypeError(`password hash: expected the ${what} in base64, found "${text}"`);
  }
  const padded = text.replaceAll(".", "+") + "=".repeat((4 - text.length % 4) % 4);
  const raw = atob(padded);
  const out = Uint8Array.from(raw, (c) => c.charCodeAt(0));
  if (out.length < min || out.length > max) {
    throw new RangeError(
      `password hash: expected a ${what} of ${min} to ${max} bytes, found ${out.length}`,
    );
  }
  return out;
}

/** Throws unless `ln`, `r`, `p` lie within {@linkcode SCRYPT_LIMITS}. */
function checkCost(ln: number, r: number, p: number): void {
  const L = SCRYPT_LIMITS;
  const int = (v: number, lo: number, hi: number) => Number.isInteger(v) && v >= lo && v <= hi;
  if (!int(ln, L.minLn, L.maxLn) || !int(r, 1, L.maxR) || !int(p, 1, L.maxP)) {
    throw new RangeError(
      `password hash: expected ln ${L.minLn}-${L.maxLn}, r 1-${L.maxR}, p 1-${L.maxP}, ` +
        `found ln=${ln},r=${r},p=${p}`,
    );
  }
  const memory = 128 * 2 ** ln * r;
  const work = 2 ** ln * r * p;
  if (memory > L.maxMemory || work > L.maxWork) {
    throw new RangeError(
      `password hash: expected a cost of at most ${L.maxMemory / 2 ** 20} MiB and N*r*p ` +
        `<= 2^${Math.log2(L.maxWork)} (ln=17,r=8,p=1), found ln=${ln},r=${r},p=${p} ` +
        `(${memory / 2 ** 20} MiB, N*r*p = 2^${Math.log2(work).toFixed(1)})`,
    );
  }
}

/**
 * Whether `text` is meant as a stored scrypt hash (starts with
 * `$scrypt$`); {@linkcode parsePasswordHash} says whether it is a valid one.
 *
 * @example
 * ```ts
 * import { isPasswordHash } from "./password.ts";
 * isPasswordHash("$scrypt$ln=15,r=8,p=1$..."); // true
 * isPasswordHash("s3cret"); // false
 * ```
 */
export function isPasswordHash(text: string): boolean {
  return text.startsWith(PREFIX);
}

/**
 * Parses a stored hash, refusing costs beyond {@linkcode SCRYPT_LIMITS}:
 * a `TypeError` for a string of the wrong shape, a `RangeError` for a cost,
 * salt or hash length out of bounds. Both say what was expected and found.
 *
 * @example
 * ```ts
 * import { parsePasswordHash } from "./password.ts";
 * parsePasswordHash(
 *   "$scrypt$ln=10,r=8,p=1$c2FsdHNhbHQ$YRh2IsHIwK/6T5lIc4QxtEJvR54pdrKplJVcfDPN3lw",
 * ).r; // 8
 * ```
 */
export function parsePasswordHash(stored: string): ScryptHash {
  if (typeof stored !== "string" || !stored.startsWith(PREFIX)) {
    throw new TypeError(
      `password hash: expected "$scrypt$ln=N,r=N,p=N$SALT$HASH", found ${
        typeof stored === "string" ? `"${stored.slice(0, 16)}..."` : typeof stored
      }`,
    );
  }
  const parts = stored.slice(PREFIX.length).split("$");
  const m = parts.length === 3 ? PARAMS.exec(parts[0]) : null;
  if (!m) {
    throw new TypeError(
      `password hash: expected "$scrypt$ln=N,r=N,p=N$SALT$HASH", found ${
        parts.length === 3 ? `parameters "${parts[0]}"` : `${parts.length + 1} $-separated fields`
      }`,
    );
  }
  const [ln, r, p] = [Number(m[1]), Number(m[2]), Number(m[3])];
  checkCost(ln, r, p);
  const L = SCRYPT_LIMITS;
  return {
    ln,
    r,
    p,
    salt: unb64(parts[1], "salt", L.minSalt, L.maxSalt),
    hash: unb64(parts[2], "hash", L.minHash, L.maxHash),
  };
}

function derive(
  password: string,
  salt: Uint8Array,
  length: number,
  cost: { ln: number; r: number; p: number },
): Promise<Uint8Array> {
  const N = 2 ** cost.ln;
  // OpenSSL needs 128 * r * (N + p + 2) bytes; node's default maxmem is 32 MiB.
  const maxmem = 128 * cost.r * (N + cost.p + 2) + 65536;
  return new Promise((resolve, reject) =>
    scrypt(
      encoder.encode(password),
      salt,
      length,
      { N, r: cost.r, p: cost.p, maxmem },
      (error, key) => error ? reject(error) : resolve(new Uint8Array(key)),
    )
  );
}

/**
 * Hashes `password` with a fresh 16-byte random salt, returning the string
 * to store. Rejects with a `RangeError` for a cost beyond
 * {@linkcode SCRYPT_LIMITS}.
 *
 * @example
 * ```ts
 * import { hashPassword, verifyPassword } from "./password.ts";
 * const stored = await hashPassword("s3cret");
 * await verifyPassword("s3cret", stored); // true
 * ```
 */
export async function hashPassword(
  password: string,
  options: HashPasswordOptions = {},
): Promise<string> {
  const { ln, r, p } = { ...DEFAULT_SCRYPT_COST, ...options };
  checkCost(ln, r, p);
  const salt = new Uint8Array(randomBytes(16));
  const hash = await derive(password, salt, 32, { ln, r, p });
  return `${PREFIX}ln=${ln},r=${r},p=${p}$${b64(salt)}$${b64(hash)}`;
}

/**
 * Checks `password` against a stored hash (a string or one already parsed
 * with {@linkcode parsePasswordHash}) in constant time. Rejects like
 * {@linkcode parsePasswordHash} for a malformed string.
 *
 * @example
 * ```ts
 * import { hashPassword, verifyPassword } from "./password.ts";
 * const stored = await hashPassword("s3cret", { ln: 10 });
 * await verifyPassword("guess", stored); // false
 * ```
 */
export async function verifyPassword(
  password: string,
  stored: string | ScryptHash,
): Promise<boolean> {
  const h = typeof stored === "string" ? parsePasswordHash(stored) : stored;
  const key = await derive(password, h.salt, h.hash.length, h);
  return timingSafeEqual(key, h.hash);
}

const dummies = new Map<string, Promise<ScryptHash>>();

/**
 * A hash of a random password nobody knows, with the given cost: verify an
 * unknown user's password against it so that a login for a name that does
 * not exist costs the same time as one for a name that does. Made once per
 * cost and reused.
 *
 * @example
 * ```ts
 * import { dummyPasswordHash, verifyPassword } from "./password.ts";
 * await verifyPassword("anything", await dummyPasswordHash({ ln: 10 })); // false
 * ```
 */
export function dummyPasswordHash(cost: HashPasswordOptions = {}): Promise<ScryptHash> {
  const { ln, r, p } = { ...DEFAULT_SCRYPT_COST, ...cost };
  const key = `${ln},${r},${p}`;
  let made = dummies.get(key);
  if (!made) {
    made = hashPassword(b64(new Uint8Array(randomBytes(24))), { ln, r, p }).then(
      parsePasswordHash,
    );
    made.catch(() => dummies.delete(key));
    dummies.set(key, made);
  }
  return made;
}
