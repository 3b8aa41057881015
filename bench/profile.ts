/**
 * CPU profiling of a Deno process started with `--inspect=127.0.0.1:PORT`,
 * through the V8 inspector protocol (Profiler domain), and a self-time
 * summary of the resulting `.cpuprofile`.
 *
 * Standalone: `deno run -A bench/profile.ts FILE.cpuprofile [N]` prints the
 * top N (default 15) functions by self time.
 *
 * @module
 */

/** The subset of the V8 `.cpuprofile` format used here. */
export interface CpuProfile {
  nodes: {
    id: number;
    callFrame: {
      functionName: string;
      url: string;
      lineNumber: number;
      columnNumber: number;
    };
    hitCount?: number;
    children?: number[];
  }[];
  startTime: number;
  endTime: number;
  samples?: number[];
  timeDeltas?: number[];
}

/** One row of the self-time summary. */
export interface SelfTime {
  functionName: string;
  /** url:line (1-based), shortened relative to the repository */
  location: string;
  selfMs: number;
  /** percent of all non-idle sampled time */
  percent: number;
  /** the nearest caller in the project's code (else the direct caller)
   * that accounts for most of this function's self time */
  topCaller: string;
}

/** A connection to a V8 inspector session. */
export class Inspector {
  #ws: WebSocket;
  #id = 0;
  #pending = new Map<
    number,
    { resolve: (v: unknown) => void; reject: (e: Error) => void }
  >();

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    ws.onmessage = (ev) => {
      const msg = JSON.parse(String(ev.data));
      if (typeof msg.id !== "number") return; // an event
      const p = this.#pending.get(msg.id);
      if (!p) return;
      this.#pending.delete(msg.id);
      if (msg.error) p.reject(new Error(JSON.stringify(msg.error)));
      else p.resolve(msg.result);
    };
    ws.onclose = () => {
      for (const p of this.#pending.values()) {
        p.reject(new Error("inspector closed"));
      }
      this.#pending.clear();
    };
  }

  /** Connects to the first target of the inspector on 127.0.0.1:port. */
  static async connect(port: number, timeoutMs = 10000): Promise<Inspector> {
    const deadline = Date.now() + timeoutMs;
    let url = "";
    while (!url) {
      try {
        const res = await fetch(`http://127.0.0.1:${port}/json/list`);
        const list = await res.json() as { webSocketDebuggerUrl: string }[];
        url = list[0]?.webSocketDebuggerUrl ?? "";
      } catch {
        // not up yet
      }
      if (!url) {
        if (Date.now() > deadline) throw new Error("inspector not reachable");
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const ws = new WebSocket(url);
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error("ws open timeout")), 5000);
      ws.onopen = () => {
        clearTimeout(t);
        resolve();
      };
      ws.onerror = () => {
        clearTimeout(t);
        reject(new Error("ws error"));
      };
    });
    return new Inspector(ws);
  }

  /** Sends a protocol command; rejects after `timeoutMs`. */
  send(
    method: string,
    params: Record<string, unknown> = {},
    timeoutMs = 30000,
  ): Promise<unknown> {
    const id = ++this.#id;
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`${method}: timeout`));
      }, timeoutMs);
      this.#pending.set(id, {
        resolve: (v) => {
          clearTimeout(t);
          resolve(v);
        },
        reject: (e) => {
          clearTimeout(t);
          reject(e);
        },
      });
      this.#ws.send(JSON.stringify({ id, method, params }));
    });
  }

  /** Starts sampling every `intervalUs` microseconds. */
  async startProfiling(intervalUs = 100): Promise<void> {
    await this.send("Profiler.enable");
    await this.send("Profiler.setSamplingInterval", { interval: intervalUs });
    await this.send("Profiler.start");
  }

  async stopProfiling(): Promise<CpuProfile> {
    const r = await this.send("Profiler.stop") as { profile: CpuProfile };
    return r.profile;
  }

  close(): void {
    try {
      this.#ws.close();
    } catch {
      // already closed
    }
  }
}

function shortUrl(url: string, root?: string): string {
  if (!url) return "";
  let u = url;
  if (root && u.startsWith(`file://${root}/`)) {
    u = u.slice(`file://${root}/`.length);
  }
  const npm = u.indexOf("/node_modules/");
  if (npm >= 0) u = u.slice(npm + 1);
  const reg = u.indexOf("/registry.npmjs.org/");
  if (reg >= 0) u = "npm:" + u.slice(reg + "/registry.npmjs.org/".length);
  return u;
}

/**
 * Self time per function (grouped by name + url + line), sorted descending.
 * "(idle)" is excluded from the percentages and the list.
 */
export function selfTimes(profile: CpuProfile, root?: string): SelfTime[] {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  if (samples.length && deltas.length === samples.length) {
    // timeDeltas[i] is the time before sample i; charge the interval that
    // follows a sample to that sample's node.
    for (let i = 0; i < samples.length; i++) {
      const dt = i + 1 < deltas.length ? deltas[i + 1] : 0;
      selfUs.set(samples[i], (selfUs.get(samples[i]) ?? 0) + Math.max(dt, 0));
    }
  } else {
    const total = profile.endTime - profile.startTime;
    const hits = profile.nodes.reduce((a, n) => a + (n.hitCount ?? 0), 0) ||
      1;
    for (const n of profile.nodes) {
      selfUs.set(n.id, ((n.hitCount ?? 0) / hits) * total);
    }
  }
  const parent = new Map<number, number>();
  for (const n of profile.nodes) {
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const frameName = (id: number | undefined): string => {
    const n = id === undefined ? undefined : byId.get(id);
    if (!n) return "";
    const cf = n.callFrame;
    const loc = cf.url ? `${shortUrl(cf.url, root)}:${cf.lineNumber + 1}` : "";
    return `${cf.functionName || "(anonymous)"}${loc ? ` ${loc}` : ""}`;
  };
  const callers = new Map<string, Map<string, number>>();
  const groups = new Map<string, SelfTime>();
  let busyUs = 0;
  for (const [id, us] of selfUs) {
    const n = byId.get(id);
    if (!n) continue;
    const cf = n.callFrame;
    if (cf.functionName === "(idle)") continue;
    busyUs += us;
    const loc = cf.url ? `${shortUrl(cf.url, root)}:${cf.lineNumber + 1}` : "(native)";
    const name = cf.functionName || "(anonymous)";
    const key = `${name}\u0000${loc}`;
    const g = groups.get(key) ??
      {
        functionName: name,
        location: loc,
        selfMs: 0,
        percent: 0,
        topCaller: "",
      };
    g.selfMs += us / 1000;
    groups.set(key, g);
    const cm = callers.get(key) ?? new Map<string, number>();
    // Nearest caller in the project's own code (else the direct caller).
    let c = parent.get(id);
    while (c !== undefined) {
      const url = byId.get(c)?.callFrame.url ?? "";
      if (root && url.startsWith(`file://${root}/`)) break;
      c = parent.get(c);
    }
    const caller = frameName(c ?? parent.get(id));
    cm.set(caller, (cm.get(caller) ?? 0) + us);
    callers.set(key, cm);
  }
  for (const [key, g] of groups) {
    let best = "";
    let bestUs = -1;
    for (const [c, us] of callers.get(key) ?? []) {
      if (us > bestUs) [best, bestUs] = [c, us];
    }
    g.topCaller = best;
  }
  const out = [...groups.values()];
  for (const g of out) g.percent = busyUs ? (g.selfMs * 1000 / busyUs) * 100 : 0;
  out.sort((a, b) => b.selfMs - a.selfMs);
  return out;
}

/** Total sampled time and idle share of a profile, in ms. */
export function profileTotals(
  profile: CpuProfile,
): { totalMs: number; idleMs: number } {
  const idle = new Set(
    profile.nodes.filter((n) => n.callFrame.functionName === "(idle)").map((
      n,
    ) => n.id),
  );
  const samples = profile.samples ?? [];
  const deltas = profile.timeDeltas ?? [];
  let idleUs = 0;
  for (let i = 0; i + 1 < samples.length && i + 1 < deltas.length; i++) {
    if (idle.has(samples[i])) idleUs += deltas[i + 1];
  }
  return {
    totalMs: (profile.endTime - profile.startTime) / 1000,
    idleMs: idleUs / 1000,
  };
}

if (import.meta.main) {
  const [file, n] = Deno.args;
  if (!file) {
    console.error("usage: deno run -A bench/profile.ts FILE.cpuprofile [N]");
    Deno.exit(2);
  }
  const profile = JSON.parse(Deno.readTextFileSync(file)) as CpuProfile;
  const root = new URL("..", import.meta.url).pathname.replace(/\/$/, "");
  const t = profileTotals(profile);
  console.log(
    `total ${t.totalMs.toFixed(0)} ms, idle ${t.idleMs.toFixed(0)} ms`,
  );
  for (const r of selfTimes(profile, root).slice(0, Number(n ?? 15))) {
    console.log(
      `${r.selfMs.toFixed(1).padStart(9)} ms ${
        r.percent.toFixed(1).padStart(5)
      }%  ${r.functionName}  ${r.location}  <- ${r.topCaller}`,
    );
  }
}
