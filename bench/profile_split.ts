/**
 * Splits V8 CPU profiles (`deno run --cpu-prof`, or `bench/run.ts
 * --profile`) into where the time goes: each native operation (op_close,
 * op_write...), garbage collection, logging (LogTape, src/log*.ts and the
 * session line), the gateway's own JavaScript (src/), Deno's JavaScript
 * (ext:), and the rest; per session when the session count is given. Prints
 * a Markdown table, one column per profile.
 *
 * Usage: `deno run -A bench/profile_split.ts NAME=FILE.cpuprofile[:SESSIONS] ...`
 *
 * @module
 */

import { type CpuProfile, selfTimes } from "./profile.ts";

const ROOT = new URL("..", import.meta.url).pathname.replace(/\/$/, "");

function category(fn: string, loc: string, caller: string): string {
  if (loc === "(native)") {
    if (fn.startsWith("op_")) return fn;
    if (fn === "(garbage collector)") return "garbage collector";
    return "other native (V8 program, ...)";
  }
  if (/logtape|src\/log(_sink)?\.ts/.test(loc) || /logSession/.test(fn) || /log\.ts/.test(caller)) {
    return "logging (JS)";
  }
  if (loc.startsWith("src/") || loc.startsWith("bench/") || loc.startsWith("main.ts")) {
    return "gateway / relay JS";
  }
  if (loc.startsWith("ext:")) return "Deno's JS (ext:)";
  return "other JS";
}

const columns: { name: string; sessions?: number; split: Map<string, number>; busy: number }[] = [];
for (const arg of Deno.args) {
  const m = arg.match(/^([^=]+)=(.+?)(?::(\d+))?$/);
  if (!m) throw new Error(`expected NAME=FILE[:SESSIONS], found "${arg}"`);
  const profile: CpuProfile = JSON.parse(Deno.readTextFileSync(m[2]));
  const split = new Map<string, number>();
  let busy = 0;
  for (const t of selfTimes(profile, ROOT)) {
    const c = category(t.functionName, t.location, t.topCaller);
    split.set(c, (split.get(c) ?? 0) + t.selfMs);
    busy += t.selfMs;
  }
  columns.push({ name: m[1], sessions: m[3] ? Number(m[3]) : undefined, split, busy });
}
// Operations under 1% of every column go together.
for (const c of columns) {
  for (const [k, ms] of [...c.split]) {
    if (!k.startsWith("op_")) continue;
    if (columns.every((o) => (o.split.get(k) ?? 0) / o.busy < 0.01)) {
      c.split.delete(k);
      c.split.set(
        "other ops (each under 1%)",
        (c.split.get("other ops (each under 1%)") ?? 0) + ms,
      );
    }
  }
}
const cats = [...new Set(columns.flatMap((c) => [...c.split.keys()]))].sort((a, b) =>
  (columns[0].split.get(b) ?? 0) - (columns[0].split.get(a) ?? 0)
);
const cell = (c: typeof columns[number], ms: number) =>
  `${(ms / c.busy * 100).toFixed(1)}%${
    c.sessions ? ` ${(ms * 1000 / c.sessions).toFixed(1)} µs` : ""
  }`;
console.log(`| where (self time) | ${columns.map((c) => c.name).join(" | ")} |`);
console.log(`|---|${columns.map(() => "---:").join("|")}|`);
for (const k of cats) {
  console.log(`| ${k} | ${columns.map((c) => cell(c, c.split.get(k) ?? 0)).join(" | ")} |`);
}
console.log(`| **busy in all** | ${columns.map((c) => cell(c, c.busy)).join(" | ")} |`);
