/**
 * What one session line costs: time per record for LogTape's stream sink
 * (one awaited write per record), for our batched sink behind LogTape, and
 * for what `main.ts` does (the library's loggers straight to the batched
 * sink), text and JSON, writing to a file, measured in this process: the
 * time inside the logging calls (`performance.now()` around each batch of
 * 1,000), and the process's CPU time (`process.cpuUsage()`, every thread)
 * from the first record until the last one is written.
 *
 * Usage: `deno run -A bench/log_cost.ts [records]` (default 50000)
 *
 * @module
 */

import {
  configure,
  getConfig,
  getLogger,
  getStreamSink,
  getTextFormatter,
  reset,
  type Sink,
} from "@logtape/logtape";
import { cpuUsage } from "node:process";
import { bufferedSink } from "../src/log_sink.ts";
import { libraryLogger, logDirectly, logFormatter } from "../src/log.ts";

const N = Number(Deno.args[0] ?? 50000);
const TEMPLATE =
  "session {id} {type} {protocol} {client} user={user} {command} {destination} -> {resolved} reply={reply} up={bytesUp} down={bytesDown} {durationMs}ms: {reason}";

function props(i: number) {
  return {
    id: i,
    client: "127.0.0.1:43210",
    user: "-",
    protocol: "socks5",
    command: "connect",
    destination: "127.0.0.1:5201",
    resolved: "127.0.0.1:5201",
    type: "A",
    reply: "0 (succeeded)",
    bytesUp: 1,
    bytesDown: 0,
    durationMs: 3,
    reason: "done",
  };
}

const text = logFormatter("text");
const textInspect = getTextFormatter({
  timestamp: "date-time-tz",
  value: (v, inspect) => typeof v === "string" ? v : inspect(v),
});
const json = logFormatter("json");

async function measure(
  name: string,
  makeSink: (file: Deno.FsFile) => Sink,
  direct = false,
) {
  const path = await Deno.makeTempFile({ suffix: ".log" });
  const file = await Deno.open(path, { write: true, append: true });
  await configure({
    reset: true,
    sinks: { out: makeSink(file) },
    loggers: [
      { category: ["bench"], lowestLevel: "info", sinks: ["out"] },
      { category: ["logtape", "meta"], lowestLevel: "warning", sinks: ["out"] },
    ],
  });
  // Like main.ts: LogTape configured, and the library's loggers straight to the sink.
  const handle = direct ? logDirectly(getConfig()!.sinks.out, "info") : undefined;
  const log = direct ? libraryLogger("gateway") : getLogger(["bench", "gateway"]);
  // Warm up, then measure: the time spent in the logging calls themselves
  // (the event loop's turns between batches left out: a timer's 4 ms clamp
  // would count as cost), and the process's CPU time (user + system, every
  // thread) until everything is written.
  for (let i = 0; i < 2000; i++) log.info(TEMPLATE, props(i));
  await new Promise((r) => setTimeout(r, 200));
  const cpu0 = cpuUsage();
  let calls = 0;
  for (let i = 0; i < N; i += 1000) {
    const t = performance.now();
    for (let k = i; k < Math.min(N, i + 1000); k++) log.info(TEMPLATE, props(k));
    calls += performance.now() - t;
    // Let the event loop turn now and then, as a gateway's does between sessions.
    await new Promise((r) => setTimeout(r, 0));
  }
  handle?.[Symbol.dispose]();
  await reset();
  const cpu = cpuUsage(cpu0);
  try {
    file.close();
  } catch {
    // LogTape's stream sink closed it
  }
  const size = Deno.statSync(path).size;
  Deno.removeSync(path);
  console.log(
    `${name.padEnd(44)} ${(calls * 1000 / N).toFixed(2).padStart(6)} µs/record in the calls, ${
      ((cpu.user + cpu.system) / N).toFixed(2).padStart(6)
    } µs/record CPU until written; ${(size / (N + 2000)).toFixed(0)} bytes/line`,
  );
}

const nothing: Sink = () => {};
await measure("baseline: LogTape, sink does nothing", () => nothing);
await measure(
  "LogTape stream sink, text (before)",
  (f) => getStreamSink(f.writable, { formatter: textInspect }),
);
await measure(
  "bufferedSink, text (inspect values)",
  (f) => bufferedSink(f, { formatter: textInspect }),
);
await measure("bufferedSink, text", (f) => bufferedSink(f, { formatter: text }));
await measure("bufferedSink, json", (f) => bufferedSink(f, { formatter: json }));
await measure(
  "logDirectly + bufferedSink, text (main.ts)",
  (f) => bufferedSink(f, { formatter: text }),
  true,
);
await measure(
  "logDirectly + bufferedSink, json (main.ts)",
  (f) => bufferedSink(f, { formatter: json }),
  true,
);
