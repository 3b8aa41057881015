/**
 * An "unmodified" Deno application, socksified with the project's Socks Lib
 * (RFC 3089 section 3: DNS name resolving delegation through fake addresses).
 * Runs inside a single-family client namespace:
 *
 *   deno run --cached-only --allow-net socksify_client.ts VIA NAME A|AAAA
 *
 * `app()` only uses `Deno.resolveDns` and `Deno.connect`, as any program
 * would; `socksify()` replaces them for the whole process. Prints one JSON
 * line: {"ok": true, "fake": "100::1", "mapped": NAME, "status": 200,
 * "body": "...", "remote": "...", "bound": "..."} or {"ok": false, "error": "..."}.
 */
import { socksify } from "../../src/client/mod.ts";

const [via, name, recordType] = Deno.args;
if (!via || !name || (recordType !== "A" && recordType !== "AAAA")) {
  console.error("usage: socksify_client.ts VIA NAME A|AAAA");
  Deno.exit(2);
}

/** The application: written against the plain Deno API, knows nothing of SOCKS. */
async function app(host: string, type: "A" | "AAAA") {
  const [address] = await Deno.resolveDns(host, type);
  const conn = await Deno.connect({ hostname: address, port: 80 });
  try {
    await conn.write(
      new TextEncoder().encode(`GET /peer HTTP/1.0\r\nHost: ${host}\r\nConnection: close\r\n\r\n`),
    );
    const chunks: Uint8Array[] = [];
    const buf = new Uint8Array(16 * 1024);
    while (true) {
      const n = await conn.read(buf);
      if (n === null) break;
      chunks.push(buf.slice(0, n));
    }
    const text = new TextDecoder().decode(
      chunks.reduce((a, b) => {
        const c = new Uint8Array(a.length + b.length);
        c.set(a);
        c.set(b, a.length);
        return c;
      }, new Uint8Array()),
    );
    const [head, ...rest] = text.split("\r\n\r\n");
    return {
      address,
      status: Number(head.split(" ")[1]),
      body: rest.join("\r\n\r\n"),
      remote: conn.remoteAddr,
      local: conn.localAddr,
    };
  } finally {
    conn.close();
  }
}

const timer = setTimeout(() => {
  console.log(JSON.stringify({ ok: false, error: "socksify_client: no answer within 15 s" }));
  Deno.exit(1);
}, 15_000);
try {
  using socks = socksify({ via, timeout: 10_000 });
  const r = await app(name, recordType);
  console.log(JSON.stringify({
    ok: true,
    fake: r.address,
    isFake: socks.fakeDns.isFake(r.address),
    mapped: socks.fakeDns.reverse(r.address) ?? null,
    status: r.status,
    body: r.body,
    remote: `${r.remote.hostname}:${r.remote.port}`,
    local: `${r.local.hostname}:${r.local.port}`,
  }));
} catch (e) {
  const err = e as Error;
  console.log(JSON.stringify({ ok: false, error: `${err.name}: ${err.message}` }));
  Deno.exitCode = 1;
} finally {
  clearTimeout(timer);
}
