/**
 * Helpers for the admin tests: the handler served on loopback, JSON calls,
 * a strict Prometheus text parser, and bounded polling.
 *
 * @module
 */

import assert from "node:assert/strict";
import { type AdminHandlerOptions, createAdminHandler } from "../../src/admin/handler.ts";
import type { Gateway } from "../../src/server/gateway.ts";
import { readN, withTimeout, writeAll } from "../helpers.ts";

/** How long one admin API call, or one echo, may take. */
const CALL_MS = 10_000;

/** The admin handler served by `Deno.serve` on 127.0.0.1, port 0. */
export function serveAdmin(gateway: Gateway, options: AdminHandlerOptions = {}) {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    createAdminHandler(gateway, options),
  );
  const base = `http://127.0.0.1:${server.addr.port}`;
  return {
    base,
    server,
    [Symbol.asyncDispose]: () => server.shutdown(),
  };
}

/** A response with its body read (so no stream is left open). */
export interface Answer {
  status: number;
  headers: Headers;
  text: string;
  // deno-lint-ignore no-explicit-any
  json: any;
}

/**
 * Fetches `url` and reads the whole body; parses it as JSON when it is JSON.
 * Aborts (rejecting) when the answer takes longer than `ms`, unless `init` has its own signal.
 */
export async function call(url: string, init: RequestInit = {}, ms = CALL_MS): Promise<Answer> {
  const res = await fetch(url, { signal: AbortSignal.timeout(ms), ...init }).catch((error) => {
    if (error instanceof DOMException && error.name === "TimeoutError") {
      throw new Error(`${init.method ?? "GET"} ${url}: no answer within ${ms} ms`);
    }
    throw error;
  });
  const text = await res.text().catch((error) => {
    if (error instanceof DOMException && error.name === "TimeoutError") {
      throw new Error(`${init.method ?? "GET"} ${url}: body not read within ${ms} ms`);
    }
    throw error;
  });
  const json = text && res.headers.get("content-type")?.startsWith("application/json")
    ? JSON.parse(text)
    : undefined;
  return { status: res.status, headers: res.headers, text, json };
}

/** Asserts a JSON error body `{ status, error, message }` matching `message`. */
export function assertProblem(answer: Answer, status: number, message?: RegExp) {
  assert.equal(answer.status, status, answer.text);
  assert.match(answer.headers.get("content-type") ?? "", /^application\/json/);
  assert.equal(answer.json.status, status);
  assert.equal(typeof answer.json.error, "string");
  assert.equal(typeof answer.json.message, "string");
  if (message) assert.match(answer.json.message, message);
}

/** Polls `fn` until it returns a truthy value, at most `ms` milliseconds. */
export async function until<T>(
  what: string,
  fn: () => T | Promise<T>,
  ms = 10_000,
): Promise<NonNullable<T>> {
  const deadline = performance.now() + ms;
  let last: unknown;
  while (performance.now() < deadline) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (error) {
      last = error;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error(`${what}: not within ${ms} ms${last ? ` (last error: ${last})` : ""}`);
}

/** One sample of the Prometheus text format. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** A parsed exposition: families with their type and help, and every sample. */
export interface Exposition {
  types: Map<string, string>;
  help: Map<string, string>;
  samples: Sample[];
  /** The value of the one sample with this name and these labels (exactly). */
  get(name: string, labels?: Record<string, string>): number | undefined;
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/y;

/**
 * Parses the Prometheus text format strictly: every sample belongs to a
 * family declared by `# TYPE` before it, label values are quoted and
 * escaped, and values are numbers.
 */
export function parseExposition(text: string): Exposition {
  assert.ok(text.endsWith("\n"), "the exposition ends with a newline");
  const types = new Map<string, string>();
  const help = new Map<string, string>();
  const samples: Sample[] = [];
  for (const line of text.slice(0, -1).split("\n")) {
    const meta = /^# (HELP|TYPE) (\S+) (.+)$/.exec(line);
    if (meta) {
      const map = meta[1] === "HELP" ? help : types;
      assert.ok(!map.has(meta[2]), `one ${meta[1]} line for ${meta[2]}`);
      map.set(meta[2], meta[3]);
      continue;
    }
    const m = SAMPLE.exec(line);
    assert.ok(m, `a sample line, found ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    if (m[2]) {
      LABEL.lastIndex = 0;
      while (LABEL.lastIndex < m[2].length) {
        const l = LABEL.exec(m[2]);
        assert.ok(l, `labels, found ${JSON.stringify(m[2])}`);
        labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
      }
    }
    const value = m[3] === "+Inf" ? Infinity : Number(m[3]);
    assert.ok(!Number.isNaN(value), `a number, found ${m[3]}`);
    const family = m[1].replace(/_(bucket|sum|count)$/, "");
    assert.ok(
      types.has(m[1]) || (types.get(family) === "histogram"),
      `# TYPE declared before ${m[1]}`,
    );
    samples.push({ name: m[1], labels, value });
  }
  return {
    types,
    help,
    samples,
    get(name, want = {}) {
      const found = samples.filter((s) =>
        s.name === name &&
        Object.keys(s.labels).length === Object.keys(want).length &&
        Object.entries(want).every(([k, v]) => s.labels[k] === v)
      );
      assert.ok(found.length <= 1, `one sample ${name} ${JSON.stringify(want)}`);
      return found[0]?.value;
    },
  };
}

/** Sends `text` and expects it echoed back within `ms`. */
export async function echo(conn: Deno.Conn, text: string, ms = CALL_MS): Promise<void> {
  const bytes = new TextEncoder().encode(text);
  await withTimeout(writeAll(conn, bytes), ms, `sending ${JSON.stringify(text)}`);
  const back = await withTimeout(
    readN(conn, bytes.length),
    ms,
    `the echo of ${JSON.stringify(text)}`,
  );
  assert.equal(new TextDecoder().decode(back), text);
}

/** Resolves to `null` at EOF, or rejects when the connection stays open longer than `ms`. */
export async function eof(conn: Deno.Conn, ms = 5000): Promise<null> {
  const buf = new Uint8Array(1024);
  const deadline = performance.now() + ms;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no EOF within ${ms} ms`)), ms);
  });
  try {
    while (performance.now() < deadline) {
      const n = await Promise.race([
        conn.read(buf).catch((e) => {
          // A reset is an end too.
          if (e instanceof Deno.errors.ConnectionReset) return null;
          throw e;
        }),
        late,
      ]);
      if (n === null) return null;
    }
    throw new Error(`no EOF within ${ms} ms`);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Whether TCP connects to `addr` are refused (nothing listens), polling a
 * little: a listener closes asynchronously, and a connect that races the
 * close is reset instead of refused.
 */
export function refused(addr: { hostname: string; port: number }): Promise<boolean> {
  return until(`connects to ${addr.hostname} port ${addr.port} refused`, async () => {
    try {
      const c = await Deno.connect(addr);
      c.close();
      return false;
    } catch (error) {
      if (
        error instanceof Deno.errors.ConnectionRefused ||
        error instanceof Deno.errors.ConnectionReset
      ) return true;
      throw error;
    }
  }, 5000);
}
