/**
 * `dualsocks hash-password`: reads a password and prints the line to put in
 * the configuration file, a salted scrypt hash (see `src/policy/password.ts`).
 *
 * ```sh
 * dualsocks hash-password --username alice      # asks twice, without echo
 * printf '%s\n' "$PW" | dualsocks hash-password  # from standard input
 * ```
 *
 * From a terminal the password is read in raw mode (`Deno.stdin.setRaw`),
 * so it is not echoed, and asked twice; Ctrl-C cancels. Otherwise standard
 * input is read to its end, and one trailing newline is dropped. The password
 * must be 1 to 255 bytes of UTF-8, what RFC 1929 can carry.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { credentialLengths } from "../protocol/codec.ts";
import { DEFAULT_SCRYPT_COST, hashPassword } from "../policy/password.ts";

const USAGE = `Usage: dualsocks hash-password [--username NAME] [--ln N]

Reads a password (twice, without echo, from a terminal; else the whole of
standard input, one trailing newline dropped) and prints the line for the
configuration file: password_hash: "$scrypt$ln=${DEFAULT_SCRYPT_COST.ln},r=8,p=1$SALT$HASH".

  -u, --username NAME  print a whole users entry for NAME
      --ln N           scrypt cost: N = 2^ln (default ${DEFAULT_SCRYPT_COST.ln}, 10-17 with r=8)
  -h, --help           show this help
`;

/** Thrown to end the command with a message and an exit code. */
class CommandError extends Error {
  constructor(message: string, readonly code: number) {
    super(message);
  }
}

const MAX_INPUT = 64 * 1024;
const strict = new TextDecoder("utf-8", { fatal: true });
const encoder = new TextEncoder();

async function readAll(stream: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  const chunks: Uint8Array[] = [];
  let size = 0;
  for await (const chunk of stream) {
    size += chunk.length;
    if (size > MAX_INPUT) {
      throw new CommandError(
        `expected a password of at most 255 bytes on standard input, found over ${MAX_INPUT}`,
        1,
      );
    }
    chunks.push(chunk);
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

function decode(bytes: Uint8Array): string {
  try {
    return strict.decode(bytes);
  } catch {
    throw new CommandError("expected a password in UTF-8, found invalid bytes", 1);
  }
}

/** Reads one line from a terminal in raw mode: no echo, Enter ends it. */
async function readHidden(prompt: string): Promise<string> {
  const bytes: number[] = [];
  const buf = new Uint8Array(256);
  // Raw before the prompt: whatever is typed once the prompt shows is not echoed.
  Deno.stdin.setRaw(true);
  try {
    await Deno.stderr.write(encoder.encode(prompt));
    for (;;) {
      const n = await Deno.stdin.read(buf);
      if (n === null) break;
      for (const b of buf.subarray(0, n)) {
        if (b === 0x0d || b === 0x0a) return decode(Uint8Array.from(bytes));
        if (b === 0x03) throw new CommandError("cancelled", 130); // Ctrl-C
        if (b === 0x04) { // Ctrl-D
          if (bytes.length === 0) throw new CommandError("cancelled", 130);
          return decode(Uint8Array.from(bytes));
        }
        if (b === 0x15) bytes.length = 0; // Ctrl-U: start again
        else if (b === 0x7f || b === 0x08) { // backspace: one whole UTF-8 character
          while (bytes.length > 0 && (bytes.pop()! & 0xc0) === 0x80);
        } else if (b >= 0x20 || b === 0x09) {
          if (bytes.length > MAX_INPUT) throw new CommandError("password too long", 1);
          bytes.push(b);
        }
      }
    }
    return decode(Uint8Array.from(bytes));
  } finally {
    Deno.stdin.setRaw(false);
    await Deno.stderr.write(encoder.encode("\n"));
  }
}

async function readPassword(): Promise<string> {
  if (Deno.stdin.isTerminal()) {
    const first = await readHidden("Password: ");
    const again = await readHidden("Repeat password: ");
    if (first !== again) throw new CommandError("the two passwords differ; nothing printed", 1);
    return first;
  }
  let text = decode(await readAll(Deno.stdin.readable));
  if (text.endsWith("\r\n")) text = text.slice(0, -2);
  else if (text.endsWith("\n")) text = text.slice(0, -1);
  if (/[\r\n]/.test(text)) {
    throw new CommandError("expected one line on standard input, found several", 1);
  }
  return text;
}

/**
 * Runs `dualsocks hash-password` with the arguments after the command name,
 * printing the configuration line on standard output and any error on
 * standard error; resolves to the exit code (0, 1 for a bad password or
 * input, 2 for a wrong command line, 130 when cancelled).
 *
 * @example
 * ```ts ignore
 * import { hashPasswordCommand } from "./hash_password.ts";
 * Deno.exit(await hashPasswordCommand(["--username", "alice"]));
 * ```
 */
export async function hashPasswordCommand(args: string[]): Promise<number> {
  try {
    let values;
    try {
      ({ values } = parseArgs({
        args,
        strict: true,
        options: {
          username: { type: "string", short: "u" },
          ln: { type: "string" },
          help: { type: "boolean", short: "h" },
        },
      }));
    } catch (error) {
      throw new CommandError(`${(error as Error).message}\n${USAGE}`, 2);
    }
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    const ln = values.ln === undefined ? DEFAULT_SCRYPT_COST.ln : Number(values.ln);
    if (!Number.isInteger(ln)) {
      throw new CommandError(`--ln: expected an integer, found "${values.ln}"\n${USAGE}`, 2);
    }
    if (values.username !== undefined) {
      const u = encoder.encode(values.username).length;
      if (u < 1 || u > 255) {
        throw new CommandError(`--username: expected 1 to 255 bytes of UTF-8, found ${u}`, 2);
      }
    }
    const password = await readPassword();
    const bad = credentialLengths({ username: "u", password });
    if (bad) {
      throw new CommandError(
        `expected a password of 1 to 255 bytes of UTF-8 (RFC 1929), found ${bad[1]} bytes`,
        1,
      );
    }
    let hash: string;
    try {
      hash = await hashPassword(password, { ln });
    } catch (error) {
      throw new CommandError(`--ln: ${(error as Error).message}`, 2);
    }
    const line = `password_hash: ${JSON.stringify(hash)}`;
    console.log(
      values.username === undefined
        ? line
        : `- username: ${JSON.stringify(values.username)}\n  ${line}`,
    );
    return 0;
  } catch (error) {
    if (!(error instanceof CommandError)) throw error;
    console.error(`dualsocks: hash-password: ${error.message}`);
    return error.code;
  }
}

if (import.meta.main) Deno.exit(await hashPasswordCommand(Deno.args));
