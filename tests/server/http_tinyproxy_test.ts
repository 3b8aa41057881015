/**
 * dualsocks' HTTP front door next to tinyproxy (Debian's) on the same
 * requests: what both do alike is asserted for both; where they differ
 * (README "HTTP proxy"), dualsocks' side is asserted and tinyproxy's is the
 * recorded behaviour of tinyproxy 1.11 (a change there fails this test, so
 * the comparison stays true). Loopback only.
 */

import assert from "node:assert/strict";
import { serve } from "../../src/server/gateway.ts";
import { gatewayAddr, recordingLogger, run, stopChild } from "../helpers.ts";
import { origin, raw, statuses } from "./http_helpers.ts";

const installed =
  (await run("sh", ["-c", "command -v tinyproxy"]).catch(() => ({ code: 1 }))).code === 0;

async function startTinyproxy(dir: string) {
  // tinyproxy takes a port number, not 0: bind one, note it, free it.
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  await Deno.writeTextFile(
    `${dir}/tinyproxy.conf`,
    `Port ${port}\nListen 127.0.0.1\nTimeout 10\nMaxClients 20\nLogLevel Critical\nAllow 127.0.0.1\n`,
  );
  const child = new Deno.Command("tinyproxy", {
    args: ["-d", "-c", `${dir}/tinyproxy.conf`],
    stdin: "null",
    stdout: "null",
    stderr: "null",
  }).spawn();
  // Ready when it accepts (bounded; no fixed sleep: each failed attempt is a refused connect).
  const until = performance.now() + 10_000;
  while (true) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      break;
    } catch (error) {
      if (performance.now() > until) {
        await stopChild(child, "tinyproxy");
        throw new Error(`tinyproxy did not listen on ${port}: ${error}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return { child, addr: { hostname: "127.0.0.1", port } };
}

Deno.test({
  name:
    "http vs tinyproxy: same answers for bad framing and non-proxy requests; documented differences",
  ignore: !installed && Deno.env.get("CI") !== "true",
  async fn() {
    await using o = origin("127.0.0.1");
    const gw = serve({ listen: ["127.0.0.1:0"], logger: recordingLogger() });
    const dir = await Deno.makeTempDir();
    const tiny = await startTinyproxy(dir);
    try {
      const ours = gatewayAddr(gw, 4);
      const A = o.authority;
      const both = async (req: string) => {
        const [d, t] = await Promise.all([raw(ours, req), raw(tiny.addr, req)]);
        return { d: statuses(d), t: statuses(t), dText: d, tText: t };
      };
      // Alike: a download by sha256, garbage, TE with CL, obsolete folding, origin-form.
      const get = await both(
        `GET http://${A}/bytes/200000 HTTP/1.1\r\nHost: ${A}\r\nConnection: close\r\n\r\n`,
      );
      assert.deepEqual([get.d, get.t], [[200], [200]]);
      for (
        const req of [
          "HELLO WORLD\r\n\r\n",
          `POST http://${A}/echo HTTP/1.1\r\nHost: ${A}\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
          `GET http://${A}/echo HTTP/1.1\r\nHost: ${A}\r\nX-A: 1\r\n folded\r\nConnection: close\r\n\r\n`,
          `GET /echo HTTP/1.1\r\nHost: ${A}\r\nConnection: close\r\n\r\n`,
        ]
      ) {
        const r = await both(req);
        assert.deepEqual([r.d, r.t], [[400], [400]], JSON.stringify(req.slice(0, 40)));
      }
      // Differences (dualsocks | tinyproxy 1.11):
      // two Host fields: 400 (RFC 9112 3.2) | forwarded.
      const hosts = await both(
        `GET http://${A}/echo HTTP/1.1\r\nHost: ${A}\r\nHost: b\r\nConnection: close\r\n\r\n`,
      );
      assert.deepEqual([hosts.d, hosts.t], [[400], [200]]);
      // more than 100 header fields: 431 | forwarded.
      const many = Array.from({ length: 101 }, (_, i) => `X-${i}: ${i}\r\n`).join("");
      const fields = await both(
        `GET http://${A}/echo HTTP/1.1\r\nHost: ${A}\r\n${many}Connection: close\r\n\r\n`,
      );
      assert.deepEqual([fields.d, fields.t], [[431], [200]]);
      // https:// in absolute form: 501 | 400.
      const https = await both(`GET https://${A}/ HTTP/1.1\r\nHost: ${A}\r\n\r\n`);
      assert.deepEqual([https.d, https.t], [[501], [400]]);
      // Two pipelined requests: both answered | only the first (tinyproxy closes).
      const piped = await both(
        `GET http://${A}/echo?1 HTTP/1.1\r\nHost: ${A}\r\n\r\nGET http://${A}/echo?2 HTTP/1.1\r\nHost: ${A}\r\nConnection: close\r\n\r\n`,
      );
      assert.deepEqual([piped.d, piped.t], [[200, 200], [200]]);
      // Connection refused: 502 with a text body | 500 "Unable to connect" with an HTML page.
      const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const dead = (l.addr as Deno.NetAddr).port;
      l.close();
      const refused = await both(
        `GET http://127.0.0.1:${dead}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
      );
      assert.deepEqual([refused.d, refused.t], [[502], [500]]);
      assert.match(refused.dText, /text\/plain[^]*cannot reach 127\.0\.0\.1:\d+: .*refused/i);
    } finally {
      await stopChild(tiny.child, "tinyproxy");
      await gw.shutdown({ grace: 0 });
      await Deno.remove(dir, { recursive: true });
    }
  },
});
