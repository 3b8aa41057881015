/**
 * "Unmodified" applications under socksify, run in the IPv6-only client
 * namespace: they use the plain `fetch`, `WebSocket`, the npm `pg` driver
 * and `node:https`, knowing nothing of SOCKS; `socksify()` routes the whole
 * process through the gateway (an IPv6 literal URL: the door makes that work
 * for fetch and WebSocket too).
 *
 *   deno run --cached-only -A socksify_apps_client.ts apps VIA NAME CA_FILE
 *   deno run --cached-only -A socksify_apps_client.ts lib NAME VIA [VIA...]
 *
 * `apps` prints {"ok": true, "fetch": {...}, "ws": "...", "pg": {...}, "https": {...}}.
 * `lib` runs `connect({ hostname: NAME, port: 80 }, { via })` (VIAs = one
 * chain) and `connect({ hostname: "nxdomain.test", port: 80 })` and prints
 * {"ok": true, "peer": {...}, "via": [...], "error": {"name", "reply", "message"}}.
 */
import https from "node:https";
import pg from "pg";
import { connect, socksify, SocksReplyError } from "../../src/client/mod.ts";

const [mode, ...args] = Deno.args;
const timer = setTimeout(() => {
  console.log(JSON.stringify({ ok: false, error: "socksify_apps_client: no answer within 25 s" }));
  Deno.exit(1);
}, 25_000);

async function httpGet(conn: Deno.Conn, host: string): Promise<string> {
  await conn.write(
    new TextEncoder().encode(`GET /peer HTTP/1.0\r\nHost: ${host}\r\nConnection: close\r\n\r\n`),
  );
  const text = new TextDecoder().decode(await new Response(conn.readable).arrayBuffer());
  return text.split("\r\n\r\n").slice(1).join("\r\n\r\n");
}

/** The applications: plain APIs only. */
async function apps(name: string, ca: string) {
  const res = await fetch(`http://${name}/peer`);
  const fetched = await res.json();

  const ws = new WebSocket(`ws://${name}:8080/`);
  const echoed = await new Promise<string>((resolve, reject) => {
    ws.onopen = () => ws.send("hello over socks");
    ws.onmessage = (e) => resolve(String(e.data));
    ws.onerror = (e) => reject(new Error(`WebSocket error: ${(e as ErrorEvent).message}`));
  });
  ws.close();

  const db = new pg.Client({ host: name, port: 5432, user: "dstest", database: "postgres" });
  await db.connect();
  const q = await db.query(
    "select inet_client_addr()::text as peer, $1::int + 1 as answer, version() as version",
    [41],
  );
  await db.end();

  const secure = await new Promise<unknown>((resolve, reject) => {
    https.get({ host: name, port: 8443, path: "/peer", ca }, (r) => {
      let body = "";
      r.setEncoding("utf8");
      r.on("data", (d) => body += d);
      r.on("end", () => resolve(JSON.parse(body)));
    }).on("error", reject);
  });
  return { fetch: fetched, ws: echoed, pg: q.rows[0], https: secure };
}

try {
  if (mode === "apps") {
    const [via, name, caFile] = args;
    const ca = await Deno.readTextFile(caFile);
    using _socks = socksify({ via, timeout: 10_000 });
    console.log(JSON.stringify({ ok: true, ...(await apps(name, ca)) }));
  } else if (mode === "lib") {
    const [name, ...via] = args;
    const conn = await connect({ hostname: name, port: 80 }, { via, timeout: 10_000 });
    const peer = JSON.parse(await httpGet(conn, name));
    const err = await connect({ hostname: "nxdomain.test", port: 80 }, { via, timeout: 10_000 })
      .then((c) => (c.close(), null), (e) => e);
    console.log(JSON.stringify({
      ok: true,
      peer,
      via: conn.via,
      error: err && {
        name: err.name,
        reply: err instanceof SocksReplyError ? err.reply : null,
        message: err.message,
      },
    }));
  } else {
    console.error("usage: socksify_apps_client.ts apps VIA NAME CA_FILE | lib NAME VIA...");
    Deno.exitCode = 2;
  }
} catch (e) {
  const err = e as Error;
  console.log(JSON.stringify({ ok: false, error: `${err.name}: ${err.message}` }));
  Deno.exitCode = 1;
} finally {
  clearTimeout(timer);
}
