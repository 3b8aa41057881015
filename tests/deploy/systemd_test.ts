/**
 * The systemd units under deploy/systemd: `systemd-analyze verify` finds
 * nothing to say about them (any warning fails: unknown keys and bad values
 * are only warnings to systemd), `systemd-analyze security --offline` rates
 * their exposure low, and the options a reviewer expects are there with the
 * values that let a drain finish. ExecStart's program is swapped for one
 * that exists here (verify checks it is executable). A broken copy of each
 * unit must fail the same checks.
 */
import assert from "node:assert/strict";
import denoJson from "../../deno.json" with { type: "json" };
import { DEFAULT_CONFIG } from "../../src/config/config.ts";
import { run } from "../helpers.ts";
import { ROOT, runtimeFlags } from "./gateway_process.ts";

const UNITS = ["dualsocks.service", "dualsocks-deno.service"] as const;
/** `systemd-analyze security` exposure, times ten (its --threshold scale): at most 2.0 of 10. */
const MAX_EXPOSURE = 20;
const inCi = Deno.env.get("CI") === "true";
const analyze = await run("systemd-analyze", ["--version"]).then((r) => r.code === 0, () => false);

/** The unit's `Key=value` lines of `[Service]` (repeated keys keep every value). */
function serviceKeys(text: string): Map<string, string[]> {
  const keys = new Map<string, string[]>();
  let section = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      section = header[1];
      continue;
    }
    if (section !== "Service") continue;
    const eq = line.indexOf("=");
    const [key, value] = [line.slice(0, eq), line.slice(eq + 1)];
    keys.set(key, [...(keys.get(key) ?? []), value]);
  }
  return keys;
}

/** Seconds in a systemd time span such as `30s`, `1min 30s` or `90`. */
function seconds(span: string): number {
  let total = 0;
  for (const [, n, unit = "s"] of span.matchAll(/(\d+)\s*(min|ms|s|h)?/g)) {
    total += Number(n) * ({ ms: 0.001, s: 1, min: 60, h: 3600 }[unit] ?? NaN);
  }
  return total;
}

/**
 * Writes `text` as `name` in a temp dir with ExecStart's program replaced by
 * an executable that exists, and returns what verify and security say: an
 * empty list when the unit is clean.
 */
async function problems(name: string, text: string): Promise<string[]> {
  const dir = await Deno.makeTempDir({ prefix: "dualsocks-unit-" });
  try {
    const stand = `${dir}/dualsocks`;
    await Deno.writeTextFile(stand, "#!/bin/sh\nexit 0\n");
    await Deno.chmod(stand, 0o755);
    const local = text
      .replaceAll("/usr/local/bin/dualsocks ", `${stand} `)
      .replaceAll("/usr/bin/deno ", `${Deno.execPath()} `);
    const file = `${dir}/${name}`;
    await Deno.writeTextFile(file, local);
    const found: string[] = [];
    const verify = await run("systemd-analyze", ["verify", "--man=no", file]);
    if (verify.code !== 0) found.push(`verify exited ${verify.code}`);
    // Unknown keys and unparsable values are warnings with a zero exit: any line naming
    // the unit counts.
    for (const line of `${verify.stdout}\n${verify.stderr}`.split("\n")) {
      if (line.includes(name)) found.push(line);
    }
    const security = await run("systemd-analyze", [
      "security",
      "--offline=true",
      `--threshold=${MAX_EXPOSURE}`,
      "--no-pager",
      file,
    ]);
    if (security.code !== 0) {
      const overall = /Overall exposure level[^\n]*/.exec(security.stdout)?.[0] ?? "";
      found.push(`security: exposure above ${MAX_EXPOSURE / 10}: ${overall}${security.stderr}`);
    }
    return found;
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const unitText = (name: string) => Deno.readTextFile(`${ROOT}deploy/systemd/${name}`);

for (const name of UNITS) {
  Deno.test({
    name: `systemd: ${name} passes systemd-analyze verify and security`,
    ignore: !analyze && !inCi,
    async fn() {
      assert.ok(analyze, "systemd-analyze is required under CI (apt-get install systemd)");
      assert.deepEqual(await problems(name, await unitText(name)), []);
    },
  });

  Deno.test(`systemd: ${name} has the sandbox, reload and stop settings`, async () => {
    const keys = serviceKeys(await unitText(name));
    const one = (key: string) => {
      const values = keys.get(key);
      assert.ok(values, `${name}: expected ${key}=, found none`);
      return values[values.length - 1];
    };
    assert.equal(one("DynamicUser"), "yes");
    assert.equal(one("NoNewPrivileges"), "yes");
    assert.equal(one("ProtectSystem"), "strict");
    assert.equal(one("CapabilityBoundingSet"), "", "no capability for ports >= 1024");
    assert.equal(one("AmbientCapabilities"), "");
    assert.deepEqual(
      one("RestrictAddressFamilies").split(/\s+/).sort(),
      ["AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX"],
    );
    assert.match(one("ExecReload"), /kill -HUP \$MAINPID$/);
    assert.equal(one("KillMode"), "mixed", "SIGTERM to the gateway, SIGKILL only at the end");
    assert.equal(one("KillSignal"), "SIGTERM");
    // The stop timeout must outlast the default grace (plus a margin), or SIGKILL cuts it.
    const grace = DEFAULT_CONFIG.shutdown.grace / 1000;
    assert.ok(
      seconds(one("TimeoutStopSec")) >= grace + 10,
      `${name}: expected TimeoutStopSec >= ${grace + 10}s, found ${one("TimeoutStopSec")}`,
    );
    const exec = one("ExecStart");
    assert.match(exec, /serve --config \/etc\/dualsocks\/dualsocks\.yaml$/);
    if (name === "dualsocks-deno.service") {
      // The same scoped permissions and V8 flags as the compiled binary.
      assert.deepEqual(runtimeFlags(exec), runtimeFlags(denoJson.tasks.compile));
    }
  });
}

Deno.test({
  name: "systemd: a broken unit fails the same checks",
  ignore: !analyze && !inCi,
  async fn() {
    assert.ok(analyze, "systemd-analyze is required under CI (apt-get install systemd)");
    const good = await unitText("dualsocks.service");
    const broken: [string, string][] = [
      [
        "an unknown key",
        good.replace("NoNewPrivileges=yes", "NoNewPrivileges=yes\nNoNewPrivilege=yes"),
      ],
      ["a bad value", good.replace("ProtectSystem=strict", "ProtectSystem=stricter")],
      ["a missing program", good.replace("/usr/local/bin/dualsocks ", "/nonexistent/dualsocks ")],
      [
        "no sandbox",
        good.split("\n").filter((l) => !/^(Protect|Private|Restrict|SystemCall|Capab)/.test(l))
          .join("\n"),
      ],
    ];
    for (const [what, text] of broken) {
      assert.notEqual(text, good, `${what}: the edit applies`);
      const found = await problems("dualsocks.service", text);
      assert.ok(found.length > 0, `${what}: expected a complaint, found none`);
    }
  },
});
