/**
 * RFC 1929 username/password authentication: the authenticator hook and a
 * default that checks a fixed user list in constant time.
 *
 * @module
 */

import { credentialLengths, type Credentials } from "../protocol/codec.ts";

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

/** A configured user. */
export interface User {
  /** The user name. */
  username: string;
  /** The password. */
  password: string;
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
 * An authenticator that accepts exactly the given users. Password
 * comparison takes the same time whether or not the prefix matches.
 *
 * Throws a `RangeError` for a user RFC 1929 cannot carry (a name or password
 * that is empty or over 255 UTF-8 bytes: an empty password would let in a
 * client that sends none, a longer one could never match) and a `TypeError`
 * for a user name given twice.
 *
 * @example
 * ```ts
 * import { staticUsers } from "./auth.ts";
 * const auth = staticUsers([{ username: "alice", password: "s3cret" }]);
 * ```
 */
export function staticUsers(users: readonly User[]): Authenticator {
  const byName = new Map<string, string>();
  users.forEach(({ username, password }, i) => {
    const bad = credentialLengths({ username, password });
    if (bad) {
      throw new RangeError(
        `users[${i}]: expected a user name and a password of 1 to 255 UTF-8 bytes each ` +
          `(RFC 1929), found ${bad[0]} and ${bad[1]} bytes`,
      );
    }
    if (byName.has(username)) {
      throw new TypeError(`users[${i}]: expected each user name once, found "${username}" again`);
    }
    byName.set(username, password);
  });
  return ({ username, password }) => {
    const expected = byName.get(username);
    // Compare against something even for unknown users, to keep timing flat.
    const ok = equalConstantTime(password, expected ?? "\u0000unknown-user");
    return expected !== undefined && ok;
  };
}
