/**
 * The HTTP proxy front door (RFC 9110, RFC 9112): `CONNECT host:port`
 * tunnels, and plain forwarding of absolute-form `http://` requests on a
 * keep-alive client connection (also to different destinations, one at a
 * time). Basic `Proxy-Authorization` checks the same users as SOCKS5's
 * login; failures are answered from the status table of
 * `protocol/http_message.ts` with a short text body naming the destination
 * and the reason. The pipeline (rules, resolution, dialing, relay, log,
 * metrics) is the shared one of `session.ts`.
 *
 * Timeouts: until the first request head is whole, the handshake timeout
 * (answered 408 just before the gateway's sweeper would cut the session);
 * after it, the idle timeout, also between keep-alive requests.
 *
 * @module
 */

import { joinHostPort } from "../protocol/address.ts";
import { Command, Reply } from "../protocol/constants.ts";
import {
  decodeRequestHead,
  decodeResponseHead,
  headerValues,
  HttpError,
  type HttpRequestHead,
  type HttpResponseHead,
} from "../protocol/http.ts";
import { requestFraming, responseFraming } from "../protocol/http_body.ts";
import {
  encodeRequestHead,
  encodeResponse,
  encodeResponseHead,
  forwardHeaders,
  keepAlive,
  parseProxyAuthorization,
} from "../protocol/http_message.ts";
import { type CommandCall, connectCommand } from "./commands.ts";
import type { RelayConn } from "./dialer.ts";
import { describeError, replyFor } from "./errors.ts";
import type { DoorCall } from "./front_door.ts";
import {
  closeQuietly,
  CutShortError,
  failure,
  Input,
  readerOf,
  streamBody,
} from "./http_forward.ts";
import {
  authenticate,
  openConnection,
  requested,
  type Session,
  type Started,
  writeAll,
} from "./session.ts";

const CONNECTED = new TextEncoder().encode("HTTP/1.1 200 Connection established\r\n\r\n");
const CHALLENGE: [string, string][] = [["Proxy-Authenticate", 'Basic realm="dualsocks"']];

interface Upstream {
  conn: RelayConn;
  input: Input;
  key: string;
}

/** What happened to one request: go on with the next one on the connection, or stop. */
type Next = "next" | "stop";

/**
 * Serves one HTTP client connection: requests one after another until the
 * client closes, a request or response says close, or a CONNECT turns the
 * connection into a tunnel (returned as the started relay).
 *
 * @example
 * ```ts ignore
 * const started = await httpDoor(call);
 * ```
 */
export async function httpDoor(call: DoorCall): Promise<Started> {
  return await new HttpConnection(call).run();
}

class HttpConnection {
  #call: DoorCall;
  #s: Session;
  #input: Input;
  #upstream?: Upstream;
  #authorized?: string;
  #first = true;

  constructor(call: DoorCall) {
    this.#call = call;
    this.#s = call.s;
    this.#input = new Input(call.conn, call.reader.takeRest());
  }

  async #answer(status: number, message: string, close: boolean, headers?: [string, string][]) {
    if (close) this.#s.closeReason ??= `answered ${status}: ${message}`;
    const bytes = encodeResponse(status, { body: `dualsocks: ${message}`, close, headers });
    await writeAll(this.#call.conn, bytes).catch(() => {});
  }

  /** Answers 408 just before the gateway's handshake timeout would close the session. */
  #headTimer(): ReturnType<typeof setTimeout> {
    const { s } = this.#call;
    const t = s.timeouts?.handshake ?? 10_000;
    const delay = s.acceptedAt + t - Math.min(250, t / 10) - performance.now();
    return setTimeout(() => {
      s.closeReason ??= `handshake timeout: no whole request head after ${t} ms (answered 408)`;
      this.#answer(408, `no whole request head after ${t} ms`, true).finally(() =>
        s.abort("handshake timeout")
      );
    }, Math.max(0, delay));
  }

  async #head(): Promise<HttpRequestHead | null | undefined> {
    const timer = this.#first ? this.#headTimer() : undefined;
    try {
      return await this.#input.head(decodeRequestHead, "request head");
    } catch (error) {
      if (this.#s.aborted) return undefined;
      if (error instanceof HttpError) {
        await this.#answer(error.status, error.message, true);
        return undefined;
      }
      if (error instanceof CutShortError) {
        this.#s.closeReason ??= error.message;
        return undefined;
      }
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  async run(): Promise<Started> {
    const { s, ctx } = this.#call;
    try {
      while (true) {
        const head = await this.#head();
        if (head === undefined) return undefined;
        if (head === null) {
          s.closeReason ??= "client closed";
          return undefined;
        }
        s.active = true;
        if (ctx.authenticator) {
          const login = await this.#login(head);
          if (login === "stop") return undefined;
          if (login === "again") continue;
        }
        const dest = head.destination;
        if (!dest) {
          await this.#answer(
            400,
            `this is a proxy: expected CONNECT host:port or an absolute http:// URI, found ${head.form}-form ${
              JSON.stringify(head.target.slice(0, 60))
            }`,
            true,
          );
          return undefined;
        }
        const key = joinHostPort(dest.hostname, dest.port);
        if (this.#first) requested(s, ctx, Command.CONNECT, key);
        else s.destination = key;
        if (head.method === "CONNECT") return await this.#connect(head, key);
        const next = await this.#forward(head, key);
        if (next === "stop") return undefined;
        if (this.#first) {
          // Past the first request: the handshake gate opens, the idle timeout governs.
          this.#first = false;
          ctx.handshakeDone?.(s.id);
          s.phase = "relay";
          s.lastActive = performance.now();
        }
      }
    } finally {
      this.#dropUpstream();
    }
  }

  /** Basic credentials on every request; a value already checked on this connection is not checked again. */
  async #login(head: HttpRequestHead): Promise<"ok" | "again" | "stop"> {
    const { s, ctx } = this.#call;
    const values = headerValues(head.headers, "proxy-authorization");
    if (values.length === 1 && values[0] === this.#authorized) return "ok";
    const creds = values.length === 1 ? parseProxyAuthorization(values[0]) : null;
    if (!creds) {
      // No (usable) credentials: the challenge; the client may retry on this connection.
      let framing;
      try {
        framing = requestFraming(head);
      } catch {
        framing = undefined;
      }
      const keep = keepAlive(head) && framing?.kind === "none";
      s.closeReason = "proxy authentication required";
      await this.#answer(407, "proxy authentication required", !keep, CHALLENGE);
      return keep ? "again" : "stop";
    }
    if (s.user !== undefined && creds.username !== s.user) {
      await this.#answer(407, `one user per connection: already "${s.user}"`, true, CHALLENGE);
      return "stop";
    }
    if (!(await authenticate(s, ctx, creds))) {
      await this.#answer(
        407,
        `authentication failed for user "${creds.username}"`,
        true,
        CHALLENGE,
      );
      return "stop";
    }
    this.#authorized = values[0];
    return "ok";
  }

  /** CONNECT: the shared command, with HTTP's replies; its failures are answered by the front door. */
  async #connect(head: HttpRequestHead, key: string): Promise<Started> {
    const { conn, s, ctx } = this.#call;
    this.#dropUpstream();
    this.#call.refuse = (code, error) => failure(code, error, key);
    const command: CommandCall = {
      conn,
      reader: await readerOf(this.#input.rest()),
      host: head.destination!.hostname,
      port: head.destination!.port,
      s,
      ctx,
      replier: { success: () => CONNECTED, failure: (code) => failure(code, undefined, key) },
    };
    this.#call.command = command;
    return await connectCommand(command);
  }

  async #open(key: string, head: HttpRequestHead, bodyless: boolean): Promise<Upstream | Next> {
    const { s, ctx } = this.#call;
    let conn: RelayConn;
    try {
      conn = await openConnection(s, ctx, head.destination!.hostname, head.destination!.port);
    } catch (error) {
      if (s.aborted) return "stop";
      const code = replyFor(error);
      s.reply = code;
      if (code === Reply.NOT_ALLOWED) ctx.stats.ruleDenials++;
      // The request's body was not read: keep the connection only without one.
      const keep = bodyless && keepAlive(head);
      if (!keep) s.closeReason = describeError(error);
      await writeAll(this.#call.conn, failure(code, error, key)).catch(() => {});
      return keep ? "next" : "stop";
    }
    if (this.#first) s.reply = Reply.SUCCEEDED;
    return { conn, input: new Input(conn), key };
  }

  /** Forwards one absolute-form request and its response. */
  async #forward(head: HttpRequestHead, key: string): Promise<Next> {
    const { s } = this.#call;
    let framing;
    try {
      framing = requestFraming(head);
    } catch (error) {
      if (!(error instanceof HttpError)) throw error;
      await this.#answer(error.status, error.message, true);
      return "stop";
    }
    if (this.#upstream && this.#upstream.key !== key) this.#dropUpstream();
    const bodyless = framing.kind === "none";
    const requestHead = encodeRequestHead({
      method: head.method,
      path: head.path,
      headers: forwardHeaders(head.headers, { host: head.authority, version: head.version }),
    });
    // A reused connection the upstream closed meanwhile: once more on a new one (bodyless only).
    let up: Upstream;
    let res: HttpResponseHead | null = null;
    let body: Promise<void> = Promise.resolve();
    let bodyDone = bodyless;
    let bodyError: unknown;
    let lastError: unknown;
    for (let attempt = 0;; attempt++) {
      const reused = this.#upstream !== undefined;
      if (!this.#upstream) {
        const opened = await this.#open(key, head, bodyless);
        if (typeof opened === "string") return opened;
        this.#upstream = opened;
      }
      up = this.#upstream;
      try {
        await writeAll(up.conn, requestHead);
        s.bytesUp += requestHead.length;
        if (!bodyless) {
          const upConn = up.conn;
          body = streamBody(this.#input, upConn, framing, {
            count: (n) => {
              s.bytesUp += n;
              s.active = true;
            },
            errorStatus: 400,
            what: "request body",
          }).then(() => {
            bodyDone = true;
          }, (error) => {
            bodyError = error;
            closeQuietly(upConn); // the response read below ends too
          });
        }
        res = await this.#response(up, head);
      } catch (error) {
        if (s.aborted) return "stop";
        res = null;
        lastError = error;
      }
      const stale = reused && bodyless && attempt === 0 && !(lastError instanceof HttpError);
      if (res !== null || !stale) break;
      this.#dropUpstream();
      lastError = undefined;
    }
    if (res === null) {
      await body;
      this.#dropUpstream();
      bodyError ??= lastError;
      if (bodyError instanceof CutShortError) {
        s.closeReason ??= bodyError.message;
        return "stop";
      }
      const e = bodyError instanceof HttpError ? bodyError : new HttpError(
        502,
        `no response from ${key}${bodyError ? `: ${describeError(bodyError)}` : ""}`,
      );
      await this.#answer(e.status, e.message, true);
      return "stop";
    }
    return await this.#respond(head, res, up!, () => bodyDone, body);
  }

  /** Reads the final response head, passing 1xx interim responses on (to HTTP/1.1 clients). */
  async #response(up: Upstream, head: HttpRequestHead): Promise<HttpResponseHead | null> {
    while (true) {
      const res = await up.input.head(decodeResponseHead, "response head");
      if (res === null || res.status >= 200) return res;
      if (res.status === 101) {
        throw new HttpError(502, `${up.key} switched protocols, which this proxy does not relay`);
      }
      if (head.version === "1.1") {
        const interim = encodeResponseHead({
          status: res.status,
          reason: res.reason,
          headers: forwardHeaders(res.headers, { version: res.version }),
        });
        await writeAll(this.#call.conn, interim);
        this.#s.bytesDown += interim.length;
      }
    }
  }

  #dropUpstream(): void {
    if (this.#upstream) {
      closeQuietly(this.#upstream.conn);
      this.#s.disown(this.#upstream.conn);
    }
    this.#upstream = undefined;
  }

  async #respond(
    head: HttpRequestHead,
    res: HttpResponseHead,
    up: Upstream,
    bodyDone: () => boolean,
    body: Promise<void>,
  ): Promise<Next> {
    const { conn, s } = this.#call;
    let framing;
    try {
      framing = responseFraming(res, head.method);
    } catch (error) {
      this.#dropUpstream();
      if (!(error instanceof HttpError)) throw error;
      await this.#answer(error.status, `${up.key}: ${error.message}`, true);
      return "stop";
    }
    // HTTP/1.0 clients cannot read chunked framing: the data, then the close.
    const dechunk = framing.kind === "chunked" && head.version === "1.0";
    const keep = keepAlive(head) && framing.kind !== "close" && !dechunk;
    const headers = forwardHeaders(res.headers, { version: res.version })
      .filter(([name]) => !(dechunk && name.toLowerCase() === "transfer-encoding"));
    if (!keep) headers.push(["Connection", "close"]);
    else if (head.version === "1.0") headers.push(["Connection", "keep-alive"]);
    const out = encodeResponseHead({ status: res.status, reason: res.reason, headers });
    try {
      await writeAll(conn, out);
      s.bytesDown += out.length;
      await streamBody(up.input, conn, framing, {
        count: (n) => {
          s.bytesDown += n;
          s.active = true;
        },
        errorStatus: 502,
        dechunk,
        what: `response body from ${up.key}`,
      });
    } catch (error) {
      // The head went out: nothing more to answer, only the close.
      this.#dropUpstream();
      if (s.aborted) return "stop";
      s.closeReason ??= describeError(error);
      return "stop";
    }
    // The upstream answered before the request body was all sent: neither
    // connection is at a message boundary any more.
    if (!bodyDone()) await Promise.race([body, Promise.resolve()]);
    const clean = bodyDone();
    if (!clean || !keepAlive(res) || framing.kind === "close") this.#dropUpstream();
    if (!clean || !keep) {
      s.closeReason ??= clean
        ? "closed after the response (no keep-alive)"
        : "response before the end of the request body";
      return "stop";
    }
    return "next";
  }
}
