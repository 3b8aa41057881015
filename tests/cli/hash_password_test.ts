import assert from "node:assert/strict";
import { parsePasswordHash, verifyPassword } from "../../src/policy/password.ts";

const SCRIPT = new URL("../../src/cli/hash_password.ts", import.meta.url).pathname;
const decoder = new TextDecoder();

/** Runs the command with `input` on a pipe; bounded by a timeout. */
async function run(args: string[], input: string | Uint8Array) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", SCRIPT, ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000),
  }).spawn();
  const w = child.stdin.getWriter();
  await w.write(typeof input === "string" ? new TextEncoder().encode(input) : input);
  await w.close();
  const out = await child.output();
  return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
}

function hashOf(line: string): string {
  const m = /password_hash: ("[^"]+")/.exec(line);
  assert.ok(m, `no password_hash line in ${JSON.stringify(line)}`);
  return JSON.parse(m[1]);
}

Deno.test("hash-password from standard input prints a line that verifies", async () => {
  const r = await run(["--ln", "10"], "pässwörd 1\n");
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^password_hash: "\$scrypt\$ln=10,r=8,p=1\$[^"]+"\n$/);
  const stored = hashOf(r.stdout);
  assert.equal(await verifyPassword("pässwörd 1", stored), true, "the newline is not part of it");
  assert.equal(await verifyPassword("pässwörd 1\n", stored), false);
  // CRLF, no newline at all, and a whole users entry; the default cost.
  const crlf = await run(["-u", "alice"], "s3cret\r\n");
  assert.equal(crlf.code, 0, crlf.stderr);
  assert.match(crlf.stdout, /^- username: "alice"\n {2}password_hash: "\$scrypt\$ln=15,/);
  assert.equal(await verifyPassword("s3cret", hashOf(crlf.stdout)), true);
  const bare = await run(["--ln", "10"], "s3cret");
  assert.equal(await verifyPassword("s3cret", hashOf(bare.stdout)), true);
});

Deno.test("hash-password refuses what RFC 1929 cannot carry, and bad options", async () => {
  const cases: [string[], string, number, RegExp][] = [
    [[], "\n", 1, /expected a password of 1 to 255 bytes of UTF-8 \(RFC 1929\), found 0 bytes/],
    [[], "x".repeat(256), 1, /found 256 bytes/],
    [[], "one\ntwo\n", 1, /expected one line on standard input, found several/],
    [[], "\xff", 1, /./], // replaced below by invalid bytes
    [["--ln", "30"], "pw", 2, /--ln: password hash: expected ln 10-20/],
    [["--ln", "x"], "pw", 2, /--ln: expected an integer, found "x"/],
    [["--bogus"], "pw", 2, /Usage: dualsocks hash-password/],
  ];
  for (const [args, input, code, message] of cases) {
    const r = input === "\xff"
      ? await run(args, Uint8Array.of(0xff, 0x0a))
      : await run(args, input);
    assert.equal(r.code, code, `${args} ${JSON.stringify(input)}: ${r.stderr}`);
    assert.equal(r.stdout, "", "nothing printed on failure");
    assert.match(
      r.stderr,
      input === "\xff" ? /expected a password in UTF-8, found invalid bytes/ : message,
    );
  }
});

/**
 * Runs the command on a pseudo-terminal (util-linux `script`), typing each
 * answer only once its prompt has appeared: the terminal's own echo is on
 * until the command switches it off, so typing early would echo.
 */
async function runOnTerminal(answers: string[], args: string[] = ["--ln", "10"]) {
  const command = [Deno.execPath(), "run", "--no-prompt", SCRIPT, ...args]
    .map((a) => `'${a}'`).join(" ");
  const child = new Deno.Command("script", {
    args: ["-qec", command, "/dev/null"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000),
  }).spawn();
  const writer = child.stdin.getWriter();
  let seen = "";
  let prompts = 0;
  for await (const chunk of child.stdout) {
    seen += decoder.decode(chunk);
    const count = seen.split("assword: ").length - 1;
    while (prompts < count && prompts < answers.length) {
      await writer.write(new TextEncoder().encode(answers[prompts++]));
    }
  }
  await writer.close().catch(() => {});
  const status = await child.status;
  await child.stderr.cancel();
  return { code: status.code, output: seen };
}

Deno.test("hash-password on a terminal: asked twice, never echoed", async () => {
  const r = await runOnTerminal(["hunter2-xyz\r", "hunter2-xyz\r"]);
  assert.equal(r.code, 0, r.output);
  assert.match(r.output, /Password: /);
  assert.match(r.output, /Repeat password: /);
  assert.ok(!r.output.includes("hunter2"), `echoed: ${JSON.stringify(r.output)}`);
  const stored = hashOf(r.output);
  parsePasswordHash(stored);
  assert.equal(await verifyPassword("hunter2-xyz", stored), true);
  // Backspace removes a whole character, Ctrl-U starts again.
  const edited = await runOnTerminal(["wrong\x15pé\x7fw\r", "pw\r"]);
  assert.equal(edited.code, 0, edited.output);
  assert.equal(await verifyPassword("pw", hashOf(edited.output)), true);
});

Deno.test("hash-password on a terminal: different answers or Ctrl-C print nothing", async () => {
  const differ = await runOnTerminal(["one\r", "two\r"]);
  assert.equal(differ.code, 1);
  assert.match(differ.output, /the two passwords differ; nothing printed/);
  assert.ok(!differ.output.includes("password_hash"));
  const cancelled = await runOnTerminal(["abc\x03"]);
  assert.equal(cancelled.code, 130);
  assert.match(cancelled.output, /cancelled/);
  assert.ok(!cancelled.output.includes("password_hash"));
});
