/**
 * Process helpers for the benchmark: every child runs in its own process
 * group (via `setsid`), is tracked, and is killed with its whole group on
 * stop, on errors and on Ctrl-C. Plus /proc readers (RSS, PSS, fds, tree).
 *
 * @module
 */

/** A child process started by the benchmark. */
export interface Managed {
  name: string;
  /** pid of the child = its process group id (setsid). */
  pid: number;
  child: Deno.ChildProcess;
  status: Promise<Deno.CommandStatus>;
  exited: boolean;
  exitStatus?: Deno.CommandStatus;
  piped: { stdin: boolean; stdout: boolean; stderr: boolean };
}

const live = new Set<Managed>();
let stopping = false;

/** Thrown by {@linkcode spawnManaged} once {@linkcode killAll} has run. */
export class StoppingError extends Error {}

export interface SpawnOptions {
  cwd?: string;
  env?: Record<string, string>;
  stdin?: "piped" | "null";
  stdout?: "piped" | "null";
  stderr?: "piped" | "null";
}

/** Starts `cmd args` in a new session/process group and tracks it. */
export function spawnManaged(
  name: string,
  cmd: string,
  args: string[],
  opts: SpawnOptions = {},
): Managed {
  if (stopping) throw new StoppingError(`stopping: not starting ${name}`);
  const child = new Deno.Command("setsid", {
    args: [cmd, ...args],
    cwd: opts.cwd,
    env: opts.env,
    stdin: opts.stdin ?? "null",
    stdout: opts.stdout ?? "null",
    stderr: opts.stderr ?? "null",
  }).spawn();
  const m: Managed = {
    name,
    pid: child.pid,
    child,
    status: child.status,
    exited: false,
    piped: {
      stdin: opts.stdin === "piped",
      stdout: opts.stdout === "piped",
      stderr: opts.stderr === "piped",
    },
  };
  m.status = child.status.then((s) => {
    m.exited = true;
    m.exitStatus = s;
    return s;
  });
  live.add(m);
  return m;
}

function killGroup(pgid: number, sig: Deno.Signal): void {
  try {
    Deno.kill(-pgid, sig);
  } catch {
    // group already gone
  }
}

/** pids whose process group is `pgid` (zombies excluded). */
export function groupMembers(pgid: number): number[] {
  const out: number[] = [];
  for (const st of allStats()) {
    if (st.pgrp === pgid && st.state !== "Z") out.push(st.pid);
  }
  return out;
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Waits for `p` at most `ms`; resolves to undefined on timeout. */
export async function withTimeout<T>(
  p: Promise<T>,
  ms: number,
): Promise<T | undefined> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<undefined>((r) => {
    timer = setTimeout(() => r(undefined), ms);
  });
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Stops a managed child: SIGTERM to its group, SIGKILL after `graceMs`,
 * then SIGKILL to whatever is left in the group (bounded: ~3 s more).
 */
export async function stopManaged(
  m: Managed,
  graceMs = 3000,
): Promise<Deno.CommandStatus | undefined> {
  if (!m.exited) killGroup(m.pid, "SIGTERM");
  let status = await withTimeout(m.status, graceMs);
  if (!status) {
    killGroup(m.pid, "SIGKILL");
    status = await withTimeout(m.status, 3000);
  }
  for (let i = 0; i < 30; i++) {
    if (groupMembers(m.pid).length === 0) break;
    killGroup(m.pid, "SIGKILL");
    await sleep(100);
  }
  await closeStreams(m);
  live.delete(m);
  return status;
}

async function closeStreams(m: Managed): Promise<void> {
  const streams = [];
  if (m.piped.stdout) streams.push(m.child.stdout);
  if (m.piped.stderr) streams.push(m.child.stderr);
  for (const s of streams) {
    try {
      if (!s.locked) await s.cancel();
    } catch {
      // already consumed
    }
  }
  if (m.piped.stdin) {
    try {
      if (!m.child.stdin.locked) await m.child.stdin.close();
    } catch {
      // already closed
    }
  }
}

/** SIGKILLs every tracked group (for Ctrl-C and fatal errors). */
export async function killAll(): Promise<void> {
  stopping = true; // no new children from here on
  const all = [...live];
  for (const m of all) killGroup(m.pid, "SIGKILL");
  await Promise.all(all.map((m) => stopManaged(m, 500)));
}

export interface RunResult {
  code: number;
  signal: Deno.Signal | null;
  stdout: string;
  stderr: string;
  timedOut: boolean;
}

async function readAll(stream: ReadableStream<Uint8Array>): Promise<string> {
  const chunks: Uint8Array[] = [];
  for await (const c of stream) chunks.push(c);
  let n = 0;
  for (const c of chunks) n += c.length;
  const all = new Uint8Array(n);
  let o = 0;
  for (const c of chunks) {
    all.set(c, o);
    o += c.length;
  }
  return new TextDecoder().decode(all);
}

/** Runs a command to completion (or kills its group after `timeoutMs`). */
export async function run(
  name: string,
  cmd: string,
  args: string[],
  timeoutMs: number,
  opts: SpawnOptions = {},
): Promise<RunResult> {
  const m = spawnManaged(name, cmd, args, {
    ...opts,
    stdout: "piped",
    stderr: "piped",
  });
  const out = readAll(m.child.stdout);
  const err = readAll(m.child.stderr);
  let timedOut = false;
  let status = await withTimeout(m.status, timeoutMs);
  if (!status) {
    timedOut = true;
    killGroup(m.pid, "SIGKILL");
    status = await m.status;
  }
  const [stdout, stderr] = await Promise.all([out, err]);
  await stopManaged(m, 100);
  return { code: status.code, signal: status.signal, stdout, stderr, timedOut };
}

/** Reads lines from a child's stdout, one at a time. */
export class LineReader {
  #reader: ReadableStreamDefaultReader<string>;
  #buf = "";
  #done = false;
  constructor(stream: ReadableStream<Uint8Array>) {
    this.#reader = stream.pipeThrough(new TextDecoderStream()).getReader();
  }
  /** Next line, or undefined on EOF or after `timeoutMs`. */
  async next(timeoutMs: number): Promise<string | undefined> {
    const deadline = Date.now() + timeoutMs;
    while (true) {
      const nl = this.#buf.indexOf("\n");
      if (nl >= 0) {
        const line = this.#buf.slice(0, nl);
        this.#buf = this.#buf.slice(nl + 1);
        return line;
      }
      if (this.#done) return undefined;
      const left = deadline - Date.now();
      if (left <= 0) return undefined;
      const r = await withTimeout(this.#reader.read(), left);
      if (!r) return undefined;
      if (r.done) this.#done = true;
      else this.#buf += r.value;
    }
  }
  async cancel(): Promise<void> {
    try {
      await this.#reader.cancel();
    } catch {
      // already closed
    }
  }
}

// ---------------------------------------------------------------- /proc --

interface Stat {
  pid: number;
  ppid: number;
  pgrp: number;
  state: string;
}

function readStat(pid: number): Stat | undefined {
  try {
    const s = Deno.readTextFileSync(`/proc/${pid}/stat`);
    const rest = s.slice(s.lastIndexOf(")") + 2).split(" ");
    return {
      pid,
      state: rest[0],
      ppid: Number(rest[1]),
      pgrp: Number(rest[2]),
    };
  } catch {
    return undefined;
  }
}

function allStats(): Stat[] {
  const out: Stat[] = [];
  for (const e of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(e.name)) continue;
    const st = readStat(Number(e.name));
    if (st) out.push(st);
  }
  return out;
}

/** `root` and all its descendants (zombies excluded). */
export function processTree(root: number): number[] {
  const stats = allStats();
  const kids = new Map<number, number[]>();
  for (const st of stats) {
    if (st.state === "Z") continue;
    const list = kids.get(st.ppid) ?? [];
    list.push(st.pid);
    kids.set(st.ppid, list);
  }
  const out: number[] = [];
  const seen = new Set<number>();
  const queue = [root];
  while (queue.length) {
    const p = queue.shift()!;
    if (seen.has(p)) continue;
    seen.add(p);
    if (p === root && !stats.some((s) => s.pid === root && s.state !== "Z")) {
      continue;
    }
    out.push(p);
    queue.push(...(kids.get(p) ?? []));
  }
  return out;
}

/**
 * CPU seconds (user + system, including reaped children) consumed so far by
 * the process tree rooted at `root`.
 */
export function cpuSeconds(root: number): number {
  const hz = 100; // USER_HZ on Linux
  let ticks = 0;
  for (const pid of processTree(root)) {
    try {
      const s = Deno.readTextFileSync(`/proc/${pid}/stat`);
      const f = s.slice(s.lastIndexOf(")") + 2).split(" ");
      // fields 14-17 (utime stime cutime cstime) are f[11..14]
      ticks += Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
    } catch {
      // gone
    }
  }
  return ticks / hz;
}

/** Memory and descriptor usage of a set of processes. */
export interface MemSample {
  /** kB, summed VmRSS */
  rssKiB: number;
  /** kB, summed Pss from smaps_rollup */
  pssKiB: number;
  fds: number;
  threads: number;
  processes: number;
}

function statusField(text: string, field: string): number {
  const m = text.match(new RegExp(`^${field}:\\s+(\\d+)`, "m"));
  return m ? Number(m[1]) : 0;
}

/** Sums memory/fd usage over the process tree rooted at `root`. */
export function sampleTree(root: number): MemSample {
  const s: MemSample = {
    rssKiB: 0,
    pssKiB: 0,
    fds: 0,
    threads: 0,
    processes: 0,
  };
  for (const pid of processTree(root)) {
    try {
      const status = Deno.readTextFileSync(`/proc/${pid}/status`);
      s.rssKiB += statusField(status, "VmRSS");
      s.threads += statusField(status, "Threads");
      const roll = Deno.readTextFileSync(`/proc/${pid}/smaps_rollup`);
      s.pssKiB += statusField(roll, "Pss");
      let n = 0;
      for (const _ of Deno.readDirSync(`/proc/${pid}/fd`)) n++;
      s.fds += n;
      s.processes++;
    } catch {
      // process went away while sampling
    }
  }
  return s;
}

/** The soft "Max open files" limit of `pid`, or -1. */
export function nofileLimit(pid: number): number {
  try {
    const t = Deno.readTextFileSync(`/proc/${pid}/limits`);
    const m = t.match(/^Max open files\s+(\d+)/m);
    return m ? Number(m[1]) : -1;
  } catch {
    return -1;
  }
}

// --------------------------------------------------------------- ports --

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** Polls until 127.0.0.1:port accepts, `m` exits, or `timeoutMs` passes. */
export async function waitPort(
  port: number,
  timeoutMs: number,
  m?: Managed,
): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (m?.exited) return false;
    try {
      const c = await Deno.connect({ hostname: "127.0.0.1", port });
      c.close();
      return true;
    } catch {
      await sleep(100);
    }
  }
  return false;
}

export { sleep };
