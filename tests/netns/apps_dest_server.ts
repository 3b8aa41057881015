/**
 * A WebSocket echo (plain HTTP) and an HTTPS server for the socksify
 * application cases; runs inside a destination namespace:
 *   deno run --allow-net --allow-read=CERT,KEY apps_dest_server.ts NAME HOST WS_PORT TLS_PORT CERT KEY
 * The WebSocket echoes "NAME PEER: <message>"; HTTPS GET /peer answers the
 * same JSON as dest_server.ts ({"server", "peer", "peerPort", "local"}).
 * Every request is logged to stderr with its peer.
 */
const [name, host, wsPort, tlsPort, certPath, keyPath] = Deno.args;
if (!name || !host || !wsPort || !tlsPort || !certPath || !keyPath) {
  console.error("usage: apps_dest_server.ts NAME HOST WS_PORT TLS_PORT CERT KEY");
  Deno.exit(2);
}

Deno.serve({
  hostname: host,
  port: Number(wsPort),
  onListen: ({ port }) => console.error(`apps ${name} ws listening on ${host}:${port}`),
}, (req, info) => {
  const peer = (info.remoteAddr as Deno.NetAddr).hostname;
  console.error(`apps ${name}: ws ${req.method} ${new URL(req.url).pathname} from ${peer}`);
  if (req.headers.get("upgrade") !== "websocket") {
    return new Response("websocket only\n", { status: 400 });
  }
  const { socket, response } = Deno.upgradeWebSocket(req);
  socket.onmessage = (e) => socket.send(`${name} ${peer}: ${e.data}`);
  return response;
});

Deno.serve({
  hostname: host,
  port: Number(tlsPort),
  cert: await Deno.readTextFile(certPath),
  key: await Deno.readTextFile(keyPath),
  onListen: ({ port }) => console.error(`apps ${name} https listening on ${host}:${port}`),
}, (req, info) => {
  const peer = info.remoteAddr as Deno.NetAddr;
  console.error(
    `apps ${name}: https ${req.method} ${new URL(req.url).pathname} from ${peer.hostname}`,
  );
  return Response.json({ server: name, peer: peer.hostname, peerPort: peer.port, local: host });
});
