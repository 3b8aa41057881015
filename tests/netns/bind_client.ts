/**
 * SOCKS5 BIND across families with the project's Socks Lib, FTP style; runs
 * inside a single-family client namespace:
 *
 *   deno run --cached-only --allow-net bind_client.ts VIA PEER:PORT [CONTROL:PORT]
 *
 * With CONTROL, a CONNECT to it is opened first and kept open for the whole
 * run (the "FTP control connection": a live relay to the peer, whose gateway
 * address BIND should listen on); a `GET /peer` over it proves it is live.
 * Then BIND for PEER, and, once the peer has connected to the bound address:
 * read one line from it, answer `welcome <line>`, and wait for its EOF.
 *
 * Prints one JSON line per event, for the test to follow:
 *   {"event":"control","record":{...}}     the CONNECT is up (what the peer saw)
 *   {"event":"bound","host":"...","port":n} first BIND reply: tell the peer
 *   {"event":"accepted","peer":{...}}      second BIND reply: who came
 *   {"event":"data","received":"..."}      the peer's line
 *   {"event":"done"}
 *   {"event":"error","name":"...","message":"...","reply":n}
 */
import { bind, connect, type SocksConn } from "../../src/client/mod.ts";

const [via, peer, control] = Deno.args;
if (!via || !peer) {
  console.error("usage: bind_client.ts VIA PEER:PORT [CONTROL:PORT]");
  Deno.exit(2);
}

const out = (o: Record<string, unknown>) => console.log(JSON.stringify(o));
const enc = new TextEncoder();
const dec = new TextDecoder();

/** Reads until `done(text)` holds or EOF; returns the text. */
async function readUntil(conn: Deno.Conn, done: (text: string) => boolean): Promise<string> {
  let text = "";
  const buf = new Uint8Array(4096);
  while (!done(text)) {
    const n = await conn.read(buf);
    if (n === null) break;
    text += dec.decode(buf.subarray(0, n), { stream: true });
  }
  return text;
}

const watchdog = setTimeout(() => {
  out({ event: "error", name: "Timeout", message: "bind_client: not done within 40 s" });
  Deno.exit(1);
}, 40_000);
let ctrl: SocksConn | undefined;
try {
  if (control) {
    ctrl = await connect(control, { via, timeout: 10_000 });
    // HTTP/1.1 keep-alive: the connection stays open after the answer.
    await ctrl.write(enc.encode(`GET /peer HTTP/1.1\r\nHost: control\r\n\r\n`));
    const resp = await readUntil(ctrl, (t) => {
      const i = t.indexOf("\r\n\r\n");
      if (i < 0) return false;
      const len = Number(/content-length:\s*(\d+)/i.exec(t.slice(0, i))?.[1] ?? "0");
      return t.length >= i + 4 + len;
    });
    const body = resp.slice(resp.indexOf("\r\n\r\n") + 4);
    out({ event: "control", record: JSON.parse(body), bound: ctrl.boundAddr });
  }
  const binding = await bind(peer, { via, timeout: 10_000 });
  out({ event: "bound", host: binding.boundAddr.hostname, port: binding.boundAddr.port });
  const conn = await binding.accept({ signal: AbortSignal.timeout(30_000) });
  out({ event: "accepted", peer: conn.target });
  const line = (await readUntil(conn, (t) => t.includes("\n"))).trim();
  await conn.write(enc.encode(`welcome ${line}\n`));
  await conn.closeWrite();
  await readUntil(conn, () => false); // the peer's EOF
  conn.close();
  out({ event: "data", received: line });
  out({ event: "done" });
} catch (e) {
  const err = e as Error & { reply?: number };
  out({ event: "error", name: err.name, message: err.message, reply: err.reply ?? null });
  Deno.exitCode = 1;
} finally {
  ctrl?.close();
  clearTimeout(watchdog);
}
