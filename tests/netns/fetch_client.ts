/**
 * Deno fetch through a SOCKS5 proxy; runs inside a client namespace.
 *   deno run --allow-net fetch_client.ts PROXY_URL TARGET_URL
 * Prints one JSON line: {"ok": true, "status": n, "body": "..."} or {"ok": false, "error": "..."}.
 */
const [proxyUrl, target] = Deno.args;
if (!proxyUrl || !target) {
  console.error("usage: fetch_client.ts PROXY_URL TARGET_URL");
  Deno.exit(2);
}
const client = Deno.createHttpClient({ proxy: { url: proxyUrl } });
const started = performance.now();
try {
  const res = await fetch(target, { client, signal: AbortSignal.timeout(15_000) });
  const body = await res.text();
  console.log(
    JSON.stringify({
      ok: true,
      status: res.status,
      body,
      ms: Math.round(performance.now() - started),
    }),
  );
} catch (e) {
  const err = e as Error;
  console.log(
    JSON.stringify({
      ok: false,
      error: `${err.name}: ${err.message}${err.cause ? ` (cause: ${err.cause})` : ""}`,
    }),
  );
  Deno.exitCode = 1;
} finally {
  client.close();
}
