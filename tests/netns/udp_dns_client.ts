/**
 * A DNS query over SOCKS5 UDP ASSOCIATE, with the project's Socks Lib; runs
 * inside a single-family client namespace:
 *
 *   deno run --cached-only --allow-net udp_dns_client.ts VIA QNAME SERVER:53 [SERVER:53...]
 *
 * One association; for each SERVER in turn (an address, or a name resolved by
 * the gateway), a query built by hand (12-byte header with a random id and RD,
 * one question for QNAME A/IN: 29 bytes for answer.test) is sent through the
 * gateway's UDP relay, retried up to 3 times (UDP), and the answer's A records
 * are parsed. Prints one JSON line:
 * {"ok": true, "results": [{"server", "from": {"host", "port"}, "rcode", "answers",
 *  "bytes", "queryBytes", "attempts"}], "relay": "...", "relayPort": n, "local": "...", "ms": n}
 * or {"ok": false, "error": "..."}.
 */
import { udpAssociate } from "../../src/client/mod.ts";

const [via, qname, ...servers] = Deno.args;
if (!via || !qname || servers.length === 0) {
  console.error("usage: udp_dns_client.ts VIA QNAME SERVER:PORT...");
  Deno.exit(2);
}

/** A standard query: 12-byte header (id, RD, QDCOUNT 1), QNAME, QTYPE A, QCLASS IN. */
function buildQuery(id: number, name: string): Uint8Array {
  const bytes = [id >> 8, id & 0xff, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
  for (const label of name.split(".").filter(Boolean)) {
    const l = new TextEncoder().encode(label);
    if (l.length > 63) throw new Error(`label too long: ${label}`);
    bytes.push(l.length, ...l);
  }
  bytes.push(0, 0, 1, 0, 1);
  return new Uint8Array(bytes);
}

function skipName(msg: Uint8Array, off: number): number {
  while (true) {
    if (off >= msg.length) throw new Error("truncated name");
    const len = msg[off];
    if ((len & 0xc0) === 0xc0) return off + 2; // compression pointer
    if (len === 0) return off + 1;
    off += 1 + len;
  }
}

/** The id, rcode and A records of a response. */
function parseResponse(msg: Uint8Array) {
  if (msg.length < 12) throw new Error(`response of ${msg.length} bytes, shorter than a header`);
  const v = new DataView(msg.buffer, msg.byteOffset, msg.byteLength);
  const id = v.getUint16(0);
  const flags = v.getUint16(2);
  if (!(flags & 0x8000)) throw new Error("not a response (QR = 0)");
  const qd = v.getUint16(4);
  const an = v.getUint16(6);
  let off = 12;
  for (let i = 0; i < qd; i++) off = skipName(msg, off) + 4;
  const answers: string[] = [];
  for (let i = 0; i < an; i++) {
    off = skipName(msg, off);
    const type = v.getUint16(off);
    const cls = v.getUint16(off + 2);
    const rdlen = v.getUint16(off + 8);
    off += 10;
    if (type === 1 && cls === 1 && rdlen === 4) answers.push(msg.slice(off, off + 4).join("."));
    off += rdlen;
  }
  return { id, rcode: flags & 0x0f, answers };
}

const started = performance.now();
const deadline = setTimeout(() => {
  console.log(JSON.stringify({ ok: false, error: "udp_dns_client: no answer within 20 s" }));
  Deno.exit(1);
}, 20_000);
try {
  await using udp = await udpAssociate({ via, timeout: 10_000 });
  const results = [];
  for (const server of servers) {
    const id = crypto.getRandomValues(new Uint16Array(1))[0];
    const query = buildQuery(id, qname);
    let attempts = 0;
    let result;
    while (!result && attempts < 3) {
      attempts++;
      await udp.send(query, server);
      try {
        while (true) {
          const d = await udp.receive({ signal: AbortSignal.timeout(3000) });
          const r = parseResponse(d.data);
          if (r.id !== id) continue; // a late answer to an earlier attempt
          result = { ...r, from: d.from, bytes: d.data.length };
          break;
        }
      } catch (e) {
        if ((e as Error).name !== "TimeoutError") throw e;
      }
    }
    if (!result) throw new Error(`no DNS answer from ${server} after ${attempts} attempts`);
    results.push({
      server,
      from: result.from,
      rcode: result.rcode,
      answers: result.answers,
      bytes: result.bytes,
      queryBytes: query.length,
      attempts,
    });
  }
  console.log(JSON.stringify({
    ok: true,
    results,
    relay: `${udp.relayAddr.hostname}:${udp.relayAddr.port}`,
    relayPort: udp.relayAddr.port,
    local: `${udp.localAddr.hostname}:${udp.localAddr.port}`,
    ms: Math.round(performance.now() - started),
  }));
} catch (e) {
  const err = e as Error;
  console.log(JSON.stringify({ ok: false, error: `${err.name}: ${err.message}` }));
  Deno.exitCode = 1;
} finally {
  clearTimeout(deadline);
}
