/**
 * The admin API: a web-standard `(Request) => Promise<Response>` handler for
 * the people who operate a gateway. `main.ts` serves it with `Deno.serve` on
 * its own listener; embedding code can mount it in any server that speaks
 * `Request` and `Response`.
 *
 * | route | method | answer |
 * | ----- | ------ | ------ |
 * | `/` (+ `status.css`, `status.js`) | GET | the live status page |
 * | `/healthz` | GET | 200 while the process serves |
 * | `/readyz` | GET | 200, or 503 once draining |
 * | `/metrics` | GET | Prometheus text format |
 * | `/api/v1/stats` | GET | counters as JSON |
 * | `/api/v1/sessions` | GET | the live sessions |
 * | `/api/v1/sessions/{id}` | GET, DELETE | one session; DELETE cuts it |
 * | `/api/v1/config` | GET | the running configuration, secrets redacted |
 * | `/api/v1/reload` | POST | calls the `reload` option |
 *
 * Errors are JSON objects `{ status, error, message }`; an unknown route is
 * 404 and a known route with another method 405 (with `Allow`). HEAD works
 * wherever GET does.
 *
 * @module
 */

import { type Config, configDocument, isLoopback } from "../config/config.ts";
import { splitHostPort } from "../protocol/address.ts";
import type { Gateway, SessionInfo } from "../server/gateway.ts";
import { gatewaySnapshot, METRICS_CONTENT_TYPE, renderMetrics } from "./metrics.ts";
import { STATUS_CSS, STATUS_HTML, STATUS_JS } from "./status_page.ts";

/** A web-standard request handler, as `Deno.serve` takes it. */
export type AdminHandler = (request: Request) => Promise<Response>;

/** Options for {@linkcode createAdminHandler}. */
export interface AdminHandlerOptions {
  /**
   * Called by `POST /api/v1/reload`: loads the new configuration and applies
   * it (typically with `gateway.reload`). Rejecting refuses the reload: the
   * error's message is returned with status 422 and the old configuration
   * keeps running. Without it, the route answers 501.
   */
  reload?: () => Promise<unknown>;
  /**
   * The running configuration for `GET /api/v1/config` (secrets are
   * redacted before it is sent). A function, so that it follows reloads.
   * Without it, the route answers 501.
   */
  config?: Config | (() => Config);
  /**
   * The bearer token required on `/metrics` and `/api/` (compared in
   * constant time); a function, so that it follows reloads. The status page,
   * `/healthz` and `/readyz` need none. Without a token, requests must come
   * with a `Host` that is an IP address or `localhost`, which defeats DNS
   * rebinding; serve such a handler on loopback only.
   */
  token?: string | (() => string | undefined);
}

type Method = "GET" | "POST" | "DELETE";

interface Route {
  pattern: RegExp;
  /** Open to everyone, even when a token is set. */
  public?: boolean;
  methods: Partial<Record<Method, (match: RegExpExecArray, req: Request) => Promise<Response>>>;
}

const REASONS: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  422: "Unprocessable Content",
  500: "Internal Server Error",
  501: "Not Implemented",
  503: "Service Unavailable",
};

const COMMON_HEADERS = {
  "cache-control": "no-store",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
};

const PAGE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "connect-src 'self'",
  "img-src 'self' data:",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

const ROUTE_NAMES = [
  "/",
  "/healthz",
  "/readyz",
  "/metrics",
  "/api/v1/stats",
  "/api/v1/sessions",
  "/api/v1/sessions/{id}",
  "/api/v1/config",
  "/api/v1/reload",
  "/api/v1/lockouts",
].join(", ");

function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(`${JSON.stringify(body, null, 2)}\n`, {
    status,
    headers: { ...COMMON_HEADERS, "content-type": "application/json", ...headers },
  });
}

/** An error response: `{ status, error, message }` plus any `extra` fields. */
function problem(
  status: number,
  message: string,
  options: { headers?: Record<string, string>; extra?: Record<string, unknown> } = {},
): Response {
  return json(
    { status, error: REASONS[status] ?? "Error", message, ...options.extra },
    status,
    options.headers,
  );
}

function text(body: string, contentType: string, headers: Record<string, string> = {}): Response {
  return new Response(body, {
    headers: { ...COMMON_HEADERS, "content-type": contentType, ...headers },
  });
}

const encoder = new TextEncoder();

/** Compares two secrets in time that depends on neither (both are hashed first). */
async function sameSecret(given: string, expected: string): Promise<boolean> {
  const [a, b] = await Promise.all([
    crypto.subtle.digest("SHA-256", encoder.encode(given)),
    crypto.subtle.digest("SHA-256", encoder.encode(expected)),
  ]);
  const x = new Uint8Array(a);
  const y = new Uint8Array(b);
  let diff = 0;
  for (let i = 0; i < x.length; i++) diff |= x[i] ^ y[i];
  return diff === 0;
}

/** The host part of a `Host` header value, without brackets or port. */
function hostOf(host: string): string {
  const hp = splitHostPort(host);
  if (hp) return hp.host;
  return host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
}

function isAddressHost(host: string): boolean {
  const h = hostOf(host).toLowerCase();
  return h === "localhost" || h.endsWith(".localhost") || isLoopback(h) ||
    /^[\d.]+$/.test(h) || h.includes(":");
}

function sessionJson(s: SessionInfo, now: number) {
  return {
    id: s.id,
    client: s.client,
    user: s.user ?? null,
    command: s.command ?? null,
    destination: s.destination ?? null,
    resolved: s.resolved ?? null,
    type: s.type ?? null,
    phase: s.phase,
    bytesUp: s.bytesUp,
    bytesDown: s.bytesDown,
    startedAt: new Date(s.startedAt).toISOString(),
    ageSeconds: Math.max(0, (now - s.startedAt) / 1000),
  };
}

function parseId(text: string): number | Response {
  const id = /^[1-9]\d{0,15}$/.test(text) ? Number(text) : NaN;
  if (!Number.isSafeInteger(id)) {
    let shown = text;
    try {
      shown = decodeURIComponent(text);
    } catch { /* malformed escapes: show the raw text */ }
    return problem(
      400,
      `expected a session id (a positive integer), found ${JSON.stringify(shown)}`,
    );
  }
  return id;
}

function describeError(error: unknown): { message: string; extra: Record<string, unknown> } {
  if (!(error instanceof Error)) return { message: String(error), extra: {} };
  const extra: Record<string, unknown> = { name: error.name };
  for (const key of ["file", "path", "line", "column", "address"]) {
    const v = (error as unknown as Record<string, unknown>)[key];
    if (v !== undefined && v !== "") extra[key] = v;
  }
  return { message: error.message, extra };
}

/**
 * Creates the admin API handler for `gateway`. It holds no state of its own
 * beyond the options: mount it anywhere, or several times.
 *
 * @example Serve it on loopback, beside the gateway
 * ```ts ignore
 * import { createAdminHandler, serve } from "@dualsocks/dualsocks";
 *
 * const gateway = serve({ listen: ["127.0.0.1:1080"] });
 * const admin = Deno.serve(
 *   { hostname: "127.0.0.1", port: 9080 },
 *   createAdminHandler(gateway),
 * );
 * // curl http://127.0.0.1:9080/metrics
 * ```
 *
 * @example With a token, a configuration and a reload callback
 * ```ts ignore
 * import { createAdminHandler, loadConfig, optionsFromConfig, serve } from "@dualsocks/dualsocks";
 *
 * let config = await loadConfig("gw.yaml");
 * const gateway = serve(optionsFromConfig(config));
 * const handler = createAdminHandler(gateway, {
 *   token: () => config.admin.token,
 *   config: () => config,
 *   reload: async () => {
 *     const next = await loadConfig("gw.yaml"); // a ConfigError is sent back as 422
 *     await gateway.reload(optionsFromConfig(next));
 *     config = next;
 *   },
 * });
 * const res = await handler(new Request("http://127.0.0.1/readyz"));
 * res.status; // 200, or 503 while draining
 * ```
 */
export function createAdminHandler(
  gateway: Gateway,
  options: AdminHandlerOptions = {},
): AdminHandler {
  const tokenNow = () => typeof options.token === "function" ? options.token() : options.token;
  const configNow = () => typeof options.config === "function" ? options.config() : options.config;

  const page = (body: string, type: string) => () =>
    Promise.resolve(
      text(body, type, {
        "content-security-policy": PAGE_CSP,
        "x-frame-options": "DENY",
      }),
    );

  const routes: Route[] = [
    {
      pattern: /^\/$/,
      public: true,
      methods: { GET: page(STATUS_HTML, "text/html; charset=utf-8") },
    },
    {
      pattern: /^\/status\.css$/,
      public: true,
      methods: { GET: page(STATUS_CSS, "text/css; charset=utf-8") },
    },
    {
      pattern: /^\/status\.js$/,
      public: true,
      methods: { GET: page(STATUS_JS, "text/javascript; charset=utf-8") },
    },
    {
      pattern: /^\/healthz$/,
      public: true,
      methods: { GET: () => Promise.resolve(json({ status: "ok" })) },
    },
    {
      pattern: /^\/readyz$/,
      public: true,
      methods: {
        GET: () =>
          Promise.resolve(
            gateway.draining
              ? problem(503, "draining: the gateway is shutting down and accepts no new clients", {
                extra: { ready: false },
              })
              : json({ status: "ready", ready: true }),
          ),
      },
    },
    {
      pattern: /^\/metrics$/,
      methods: {
        GET: () => Promise.resolve(text(renderMetrics(gateway), METRICS_CONTENT_TYPE)),
      },
    },
    {
      pattern: /^\/api\/v1\/stats$/,
      methods: { GET: () => Promise.resolve(json(gatewaySnapshot(gateway))) },
    },
    {
      pattern: /^\/api\/v1\/lockouts$/,
      methods: {
        GET: () =>
          Promise.resolve(json({
            lockedNow: gateway.safety?.lockout?.lockedCount ?? 0,
            lockoutsTotal: gateway.safety?.lockout?.lockoutsTotal ?? 0,
            clients: gateway.safety?.lockouts() ?? [],
          })),
      },
    },
    {
      pattern: /^\/api\/v1\/sessions$/,
      methods: {
        GET: () => {
          const now = Date.now();
          return Promise.resolve(
            json({ sessions: gateway.sessions().map((s) => sessionJson(s, now)) }),
          );
        },
      },
    },
    {
      pattern: /^\/api\/v1\/sessions\/([^/]+)$/,
      methods: {
        GET: (m) => {
          const id = parseId(m[1]);
          if (id instanceof Response) return Promise.resolve(id);
          const s = gateway.sessions().find((s) => s.id === id);
          return Promise.resolve(
            s ? json(sessionJson(s, Date.now())) : problem(404, `no live session with id ${id}`),
          );
        },
        DELETE: (m) => {
          const id = parseId(m[1]);
          if (id instanceof Response) return Promise.resolve(id);
          const closed = gateway.closeSession(id, "closed through the admin API");
          return Promise.resolve(
            closed ? json({ id, closed: true }) : problem(404, `no live session with id ${id}`),
          );
        },
      },
    },
    {
      pattern: /^\/api\/v1\/config$/,
      methods: {
        GET: () => {
          const config = configNow();
          return Promise.resolve(
            config
              ? json(configDocument(config))
              : problem(501, "no configuration: the admin handler was created without one"),
          );
        },
      },
    },
    {
      pattern: /^\/api\/v1\/reload$/,
      methods: {
        POST: async () => {
          if (!options.reload) {
            return problem(
              501,
              "reload is not available: the admin handler has no reload callback",
            );
          }
          if (gateway.draining) {
            return problem(503, "cannot reload: the gateway is shutting down");
          }
          try {
            await options.reload();
          } catch (error) {
            const { message, extra } = describeError(error);
            return problem(422, `reload rejected, the running configuration is kept: ${message}`, {
              extra,
            });
          }
          return json({
            reloaded: true,
            listen: gatewaySnapshot(gateway).listen,
          });
        },
      },
    },
  ];

  const authorize = async (req: Request): Promise<Response | null> => {
    const token = tokenNow();
    if (token === undefined) {
      const host = req.headers.get("host") ?? new URL(req.url).host;
      if (!isAddressHost(host)) {
        return problem(
          403,
          `expected a Host that is an IP address or localhost (no admin token is set), found ${
            JSON.stringify(host)
          }`,
        );
      }
      return null;
    }
    const header = req.headers.get("authorization");
    const challenge = { "www-authenticate": 'Bearer realm="dualsocks admin"' };
    const m = header ? /^Bearer +(\S+) *$/i.exec(header) : null;
    if (!m) {
      return problem(
        401,
        `expected an "Authorization: Bearer TOKEN" header, found ${
          header ? "another scheme" : "none"
        }`,
        { headers: challenge },
      );
    }
    if (!(await sameSecret(m[1], token))) {
      return problem(401, "expected the admin token, found a wrong one", {
        headers: {
          ...challenge,
          "www-authenticate": `${challenge["www-authenticate"]}, error="invalid_token"`,
        },
      });
    }
    return null;
  };

  /** Refuses cross-site requests that change state (a page elsewhere posting to loopback). */
  const sameOrigin = (req: Request): Response | null => {
    const origin = req.headers.get("origin");
    if (origin === null) return null;
    const host = req.headers.get("host") ?? new URL(req.url).host;
    let originHost: string;
    try {
      originHost = new URL(origin).host;
    } catch {
      originHost = origin;
    }
    if (originHost === host) return null;
    return problem(403, `expected a same-origin request, found Origin ${JSON.stringify(origin)}`);
  };

  return async (req: Request): Promise<Response> => {
    try {
      const url = new URL(req.url);
      const route = routes.find((r) => r.pattern.test(url.pathname));
      if (!route) {
        return problem(
          404,
          `expected one of ${ROUTE_NAMES}, found ${JSON.stringify(url.pathname)}`,
        );
      }
      const match = route.pattern.exec(url.pathname)!;
      const head = req.method === "HEAD";
      const method = (head ? "GET" : req.method) as Method;
      // Own properties only: "constructor" or "toString" are HTTP methods too.
      const run = Object.hasOwn(route.methods, method) ? route.methods[method] : undefined;
      const allow = Object.keys(route.methods);
      if (allow.includes("GET")) allow.push("HEAD");
      if (!run) {
        return problem(
          405,
          `expected ${allow.join(", ")} on ${url.pathname}, found ${req.method}`,
          { headers: { allow: allow.join(", ") } },
        );
      }
      if (!route.public) {
        const denied = await authorize(req);
        if (denied) return denied;
      }
      if (method !== "GET") {
        const refused = sameOrigin(req);
        if (refused) return refused;
      }
      const res = await run(match, req);
      return head ? new Response(null, { status: res.status, headers: res.headers }) : res;
    } catch (error) {
      return problem(500, `internal error: ${(error as Error)?.message ?? String(error)}`);
    }
  };
}
