/**
 * The floor: the least a SOCKS5 relay on Deno can do, for the benchmark only.
 *
 * No authentication, CONNECT to IPv4 literals only, no rules, no limits, no
 * timeouts, no logging, no error replies: a malformed or other request just
 * closes the connection. It measures what Deno's own per-operation cost
 * leaves for a gateway, so that `deno task bench --only ...,floor` can show
 * how much of dualsocks' time is its own. Never run it anywhere else.
 *
 * Usage: `deno run --allow-net bench/floor_relay.ts HOST PORT`
 *
 * @module
 */

const [hostname = "127.0.0.1", port = "1080"] = Deno.args;
const listener = Deno.listen({ hostname, port: Number(port) });
Deno.addSignalListener("SIGTERM", () => Deno.exit(0));

/** Reads until `buf` holds at least `n` bytes; returns how many it holds, or 0 at EOF. */
async function readAtLeast(conn: Deno.Conn, buf: Uint8Array, have: number, n: number) {
  while (have < n) {
    const got = await conn.read(buf.subarray(have));
    if (got === null) return 0;
    have += got;
  }
  return have;
}

async function pump(from: Deno.Conn, to: Deno.Conn): Promise<void> {
  const buf = new Uint8Array(16 * 1024);
  try {
    for (;;) {
      const n = await from.read(buf);
      if (n === null) break;
      for (let off = 0; off < n;) off += await to.write(buf.subarray(off, n));
    }
    await to.closeWrite();
  } catch {
    // the other side is gone: the session ends
  }
}

async function session(client: Deno.TcpConn): Promise<void> {
  let target: Deno.TcpConn | undefined;
  try {
    client.setNoDelay(true);
    const buf = new Uint8Array(512);
    // Greeting: VER NMETHODS METHODS...; answer NO AUTH.
    let have = await readAtLeast(client, buf, 0, 2);
    if (
      have === 0 || buf[0] !== 5 || (have = await readAtLeast(client, buf, have, 2 + buf[1])) === 0
    ) return;
    const rest = have - (2 + buf[1]);
    buf.copyWithin(0, 2 + buf[1], have);
    await client.write(Uint8Array.of(5, 0));
    // Request: VER CMD RSV ATYP=1 A.B.C.D PORT.
    if ((await readAtLeast(client, buf, rest, 10)) === 0) return;
    if (buf[0] !== 5 || buf[1] !== 1 || buf[3] !== 1) return;
    target = await Deno.connect({
      hostname: `${buf[4]}.${buf[5]}.${buf[6]}.${buf[7]}`,
      port: (buf[8] << 8) | buf[9],
    });
    target.setNoDelay(true);
    const bound = target.localAddr as Deno.NetAddr;
    const [a, b, c, d] = bound.hostname.split(".").map(Number);
    await client.write(Uint8Array.of(5, 0, 0, 1, a, b, c, d, bound.port >> 8, bound.port & 255));
    await Promise.all([pump(client, target), pump(target, client)]);
  } catch {
    // connect refused, reset...: the session ends
  } finally {
    target?.close();
    client.close();
  }
}

for await (const conn of listener) session(conn);
