/**
 * Protocol dispatch: one listener, every protocol. The client's first byte
 * tells SOCKS5 (5), SOCKS4/4a (4) and HTTP (a letter: a method name) apart;
 * the session then runs that protocol's front door, which ends in the shared
 * pipeline of `session.ts` and `commands.ts`. A new front door is one file
 * and one line in {@linkcode DOORS}.
 *
 * @module
 */

import { BufferedReader } from "../io/buffered_reader.ts";
import { ProtocolError } from "../protocol/codec.ts";
import { Reply } from "../protocol/constants.ts";
import type { CommandCall } from "./commands.ts";
import { describeError, replyFor } from "./errors.ts";
import { httpDoor } from "./http_proxy.ts";
import { applyProxyHeader } from "./proxy_header.ts";
import { socks4Door } from "./socks4.ts";
import { socks5Door } from "./socks5.ts";
import {
  end,
  type Protocol,
  type Session,
  type SessionContext,
  type Started,
  writeAll,
} from "./session.ts";

/** What a front door gets, and what it leaves for the dispatcher's error path. */
export interface DoorCall {
  /** The client connection. */
  conn: Deno.Conn;
  /** Its reader: the first byte is still unread. */
  reader: BufferedReader;
  /** The session. */
  s: Session;
  /** The gateway's settings for it. */
  ctx: SessionContext;
  /**
   * Set by the door once it can answer a failure: the bytes that refuse a
   * request with a SOCKS5 reply code (mapped to the door's own protocol).
   */
  refuse?: (code: number, error: unknown) => Uint8Array;
  /** Set by the door when it runs a shared command (whose first reply may have gone out). */
  command?: CommandCall;
}

/** A front door: reads its protocol's request, runs it, returns the relay if one started. */
export type Door = (call: DoorCall) => Promise<Started>;

/** The front doors by protocol. */
export const DOORS: Partial<Record<Protocol, Door>> = {
  socks5: socks5Door,
  socks4: socks4Door,
  http: httpDoor,
};

/**
 * The protocol a first byte announces: 5 SOCKS5, 4 SOCKS4, an ASCII letter
 * the start of an HTTP method; `undefined` for anything else.
 *
 * @example
 * ```ts
 * import { sniff } from "./front_door.ts";
 * sniff(0x05); // "socks5"
 * sniff("C".charCodeAt(0)); // "http"
 * ```
 */
export function sniff(first: number): Protocol | undefined {
  if (first === 0x05) return "socks5";
  if (first === 0x04) return "socks4";
  if ((first >= 0x41 && first <= 0x5a) || (first >= 0x61 && first <= 0x7a)) return "http";
  return undefined;
}

const peekByte = (buf: Uint8Array) => ({ value: buf[0], length: 0 });

/** How {@linkcode runSession} runs a session. */
export interface RunSessionOptions {
  /** The client connection. */
  conn: Deno.Conn;
  /** The gateway's settings for the session. */
  ctx: SessionContext;
  /** The protocols its listener serves. */
  protocols: ReadonlySet<Protocol>;
  /** Called once when the session is over and every socket is closed. */
  onEnd: () => void;
}

/**
 * Runs one session to its end, then calls `options.onEnd`. Never throws:
 * every outcome is recorded in `s.closeReason` and every socket is closed.
 * Once the relay runs, no async frame of the handshake stays suspended, and
 * the relay's end reaches `onEnd` through one callback (idle relays stay
 * small).
 *
 * @example
 * ```ts ignore
 * runSession(session, { conn, ctx, protocols: new Set(["socks5"]), onEnd: () => done(session) });
 * ```
 */
export function runSession(s: Session, options: RunSessionOptions): void {
  const { onEnd } = options;
  const over = () => {
    end(s);
    onEnd();
  };
  openDoor(options.conn, s, options.ctx, options.protocols).then((started) => {
    if (started) started.relaying.then(over, over);
    else over();
  }, (error) => {
    s.closeReason ??= describeError(error);
    over();
  });
}

/** The handshake and command of one session: the relay if one started, else `undefined` (then the caller ends the session). */
async function openDoor(
  conn: Deno.Conn,
  s: Session,
  ctx: SessionContext,
  protocols: ReadonlySet<Protocol>,
): Promise<Started> {
  const call: DoorCall = { conn, reader: new BufferedReader(conn), s, ctx };
  let started: Started;
  try {
    if (ctx.proxyProtocol && !(await applyProxyHeader(call.reader, s, ctx))) return undefined;
    const first = await call.reader.decode(peekByte, "first byte");
    const protocol = sniff(first);
    const door = protocol && protocols.has(protocol) ? DOORS[protocol] : undefined;
    if (!door) {
      ctx.stats.sessionsByProtocol.other++;
      s.closeReason = protocol
        ? `protocol ${protocol} is not enabled on this listener`
        : `unrecognised protocol (first byte 0x${first.toString(16).padStart(2, "0")})`;
      return undefined;
    }
    s.protocol = protocol;
    ctx.stats.sessionsByProtocol[protocol!]++;
    started = await door(call);
  } catch (error) {
    if (s.aborted) return undefined;
    s.closeReason ??= describeError(error);
    // Before the request is decoded there is nothing to reply to, except a
    // malformed request that the codec gave a reply code (e.g. bad ATYP -> 8).
    const code = error instanceof ProtocolError
      ? error.reply
      : s.command !== undefined
      ? replyFor(error)
      : undefined;
    if (code === Reply.NOT_ALLOWED) ctx.stats.ruleDenials++;
    if (!call.command?.replied && code !== undefined && call.refuse) {
      s.reply = code;
      await writeAll(conn, call.refuse(code, error)).catch(() => {});
    }
    return undefined;
  }
  // Returned, not awaited: this frame ends now and the relay runs on.
  return started;
}
