/**
 * RFC 1929 username/password authentication: the authenticator hook and a
 * default that checks a fixed user list in constant time.
 *
 * @module
 */

import { credentialLengths, type Credentials } from "../protocol/codec.ts";
import {
  dummyPasswordHash,
  parsePasswordHash,
  type ScryptHash,
  verifyPassword,
} from "./password.ts";

/** What an authenticator knows about the client. */
export interface AuthInfo {
  /** The client's address. */
  client: Deno.NetAddr;
  /** Aborted when the session ends (handshake timeout, shutdown): stop waiting then. */
  signal: AbortSignal;
}

/**
 * The authenticator hook: resolve to `true` to accept the credentials.
 * When a gateway has an authenticator, NO AUTH is not accepted.
 */
export type Authenticator = (
  credentials: Credentials,
  info: AuthInfo,
) => boolean | Promise<boolean>;

/**
 * A configured user: a clear `password`, or a `passwordHash` made by
 * `dualsocks hash-password` (`$scrypt$ln=15,r=8,p=1$SALT$HASH`, see
 * `password.ts`). Exactly one of the two.
 */
export interface User {
  /** The user name. */
  username: string;
  /** The password, in clear (still accepted; the gateway warns at startup). */
  password?: string;
  /** A salted scrypt hash of the password. */
  passwordHash?: string;
}

const encoder = new TextEncoder();

function equalConstantTime(a: string, b: string): boolean {
  const x = encoder.encode(a);
  const y = encoder.encode(b);
  let diff = x.length ^ y.length;
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    diff |= (x[i % (x.length || 1)] ?? 0) ^ (y[i % (y.length || 1)] ?? 0);
  }
  return diff === 0;
}

/**
 * An authenticator that accepts exactly the given users. A clear password
 * is compared in constant time; a hashed one is checked with scrypt off the
 * event loop, and a name that is not configured is checked against a hash
 * of the same cost (the first hashed user's), so that whether a user exists
 * does not show in the time a login takes.
 *
 * Throws a `RangeError` for a user RFC 1929 cannot carry (a name or password
 * that is empty or over 255 UTF-8 bytes: an empty password would let in a
 * client that sends none, a longer one could never match) or a hash whose
 * cost is out of bounds, and a `TypeError` for a user name given twice, a
 * user with both or neither of `password` and `passwordHash`, or a
 * malformed hash.
 *
 * @example
 * ```ts
 * import { staticUsers } from "./auth.ts";
 * const auth = staticUsers([{ username: "alice", password: "s3cret" }]);
 * ```
 */
export function staticUsers(users: readonly User[]): Authenticator {
  const byName = new Map<string, string | ScryptHash>();
  let cost: ScryptHash | undefined;
  users.forEach(({ username, password, passwordHash }, i) => {
    if ((password === undefined) === (passwordHash === undefined)) {
      throw new TypeError(
        `users[${i}]: expected a password or a password_hash, found ${
          password === undefined ? "neither" : "both"
        }`,
      );
    }
    const bad = credentialLengths({ username, password: password ?? "hashed" });
    if (bad) {
      throw new RangeError(
        `users[${i}]: expected a user name and a password of 1 to 255 UTF-8 bytes each ` +
          `(RFC 1929), found ${bad[0]} and ${bad[1]} bytes`,
      );
    }
    if (byName.has(username)) {
      throw new TypeError(`users[${i}]: expected each user name once, found "${username}" again`);
    }
    if (passwordHash !== undefined) {
      let h: ScryptHash;
      try {
        h = parsePasswordHash(passwordHash);
      } catch (error) {
        const E = error instanceof RangeError ? RangeError : TypeError;
        throw new E(`users[${i}]: ${(error as Error).message}`);
      }
      cost ??= h;
      byName.set(username, h);
    } else byName.set(username, password!);
  });
  if (!cost) {
    return ({ username, password }) => {
      const expected = byName.get(username) as string | undefined;
      // Compare against something even for unknown users, to keep timing flat.
      const ok = equalConstantTime(password, expected ?? "\u0000unknown-user");
      return expected !== undefined && ok;
    };
  }
  const dummy = dummyPasswordHash(cost);
  dummy.catch(() => {}); // reported when first needed
  return async ({ username, password }) => {
    const expected = byName.get(username);
    if (typeof expected === "string") return equalConstantTime(password, expected);
    const ok = await verifyPassword(password, expected ?? await dummy);
    return expected !== undefined && ok;
  };
}
