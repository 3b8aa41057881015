/**
 * Runs `safety_cases.ts` inside a network namespace with only loopback
 * (plus documentation addresses on lo), so that the metadata, link-local
 * and other addresses its cases name reach nothing, whatever the gateway does.
 */
import assert from "node:assert/strict";
import { run } from "../helpers.ts";

const CASES = new URL("./safety_cases.ts", import.meta.url).pathname;

Deno.test("destination safety, inside unshare --net: metadata, link-local, loops", async () => {
  const script = "ip link set lo up && ip addr add 192.0.2.1/24 dev lo && " +
    "ip -6 addr add 2001:db8::1/64 dev lo nodad && " +
    `exec "${Deno.execPath()}" test --allow-all --no-check "${CASES}"`;
  const out = await run("unshare", ["--net", "--map-root-user", "sh", "-c", script], {
    env: { DUALSOCKS_SAFETY_NETNS: "1", NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" },
    timeoutMs: 120_000,
  });
  assert.equal(out.code, 0, `${out.stdout}\n${out.stderr}`);
  assert.match(out.stdout, /ok \| 8 passed \| 0 failed/, out.stdout);
});
