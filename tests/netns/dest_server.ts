/**
 * Destination HTTP server for the netns suite; runs inside a destination namespace.
 *   deno run --allow-net --allow-read=BLOB dest_server.ts NAME HOST PORT BLOB
 * GET /peer  -> {"server": NAME, "peer": "<address the TCP peer had>", "peerPort": n, "local": HOST}
 * GET /blob  -> the bytes of BLOB (the 16 MiB checksum test)
 * GET /hello -> "hello from NAME\n"
 */
const [name, host, portStr, blobPath] = Deno.args;
if (!name || !host || !portStr || !blobPath) {
  console.error("usage: dest_server.ts NAME HOST PORT BLOB");
  Deno.exit(2);
}

Deno.serve({
  hostname: host,
  port: Number(portStr),
  onListen: ({ hostname, port }) => console.error(`dest ${name} listening on ${hostname}:${port}`),
}, async (req, info) => {
  const url = new URL(req.url);
  const peer = info.remoteAddr as Deno.NetAddr;
  console.error(`dest ${name}: ${req.method} ${url.pathname} from ${peer.hostname}:${peer.port}`);
  switch (url.pathname) {
    case "/peer":
      return Response.json({ server: name, peer: peer.hostname, peerPort: peer.port, local: host });
    case "/blob": {
      const f = await Deno.open(blobPath, { read: true });
      const { size } = await f.stat();
      return new Response(f.readable, {
        headers: { "content-type": "application/octet-stream", "content-length": String(size) },
      });
    }
    case "/hello":
      return new Response(`hello from ${name}\n`);
    default:
      return new Response("not found\n", { status: 404 });
  }
});
