/**
 * A static file server for the netns HTTP proxy case: serves the files of ROOT
 * (a small Debian-format repository) on HOST:PORT, inside a destination namespace.
 *   deno run --allow-net --allow-read=ROOT http_repo_server.ts ROOT HOST PORT
 * Each request is logged to stderr with the peer's address.
 */
const [root, host, portStr] = Deno.args;
if (!root || !host || !portStr) {
  console.error("usage: http_repo_server.ts ROOT HOST PORT");
  Deno.exit(2);
}

Deno.serve({
  hostname: host,
  port: Number(portStr),
  onListen: ({ hostname, port }) => console.error(`repo listening on ${hostname}:${port}`),
}, async (req, info) => {
  const path = decodeURIComponent(new URL(req.url).pathname);
  const peer = info.remoteAddr as Deno.NetAddr;
  console.error(`repo: ${req.method} ${path} from ${peer.hostname} via ${req.headers.get("via")}`);
  if (path.split("/").includes("..")) return new Response("bad path\n", { status: 400 });
  try {
    const f = await Deno.open(`${root}${path}`, { read: true });
    const { size, isFile } = await f.stat();
    if (!isFile || req.method === "HEAD") {
      f.close();
      if (isFile) return new Response(null, { headers: { "content-length": String(size) } });
      return new Response("not a file\n", { status: 404 });
    }
    return new Response(f.readable, {
      headers: { "content-length": String(size) },
    });
  } catch {
    return new Response("not found\n", { status: 404 });
  }
});
