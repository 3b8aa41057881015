/**
 * Reads whole protocol messages from a byte stream that delivers them in
 * arbitrary pieces: one byte at a time, or greeting, credentials and request
 * in a single segment (optimistic clients). Bytes that follow the last
 * decoded message are kept and handed over with {@linkcode BufferedReader.takeRest}.
 *
 * @module
 */

import type { Decoded } from "../protocol/codec.ts";
import { giveBuffer, takeBuffer } from "./buffer_pool.ts";

/** The reading half of a connection. */
export interface ByteSource {
  /** Reads into `p`, resolving to the byte count or `null` at EOF. */
  read(p: Uint8Array): Promise<number | null>;
}

const EMPTY: Uint8Array<ArrayBuffer> = new Uint8Array(0);

/** Raised when the peer closes in the middle of a message. */
export class UnexpectedEofError extends Error {
  /** Creates the error; `what` names the message that was cut short. */
  constructor(what: string, got: number) {
    super(`${what}: connection closed after ${got} bytes of the message`);
    this.name = "UnexpectedEofError";
  }
}

/** A small growable buffer in front of a {@linkcode ByteSource}. */
export class BufferedReader {
  #src: ByteSource;
  #buf: Uint8Array<ArrayBuffer> = EMPTY;
  /** The buffer came from the pool (and goes back with {@linkcode takeRest}). */
  #pooled = false;
  #start = 0;
  #end = 0;

  /**
   * Wraps `src`; `size` is the initial buffer size. The default buffer is
   * taken from a pool at the first read and given back by {@linkcode takeRest}.
   */
  constructor(src: ByteSource, size = 512) {
    this.#src = src;
    if (size !== 512) this.#buf = new Uint8Array(size);
  }

  /**
   * Decodes one message with `decode`, reading more bytes until it has one.
   * Throws {@linkcode UnexpectedEofError} at EOF mid-message, and whatever
   * `decode` throws for malformed bytes.
   */
  async decode<T>(
    decode: (buf: Uint8Array) => Decoded<T> | null,
    what: string,
  ): Promise<T> {
    while (true) {
      // No view of an empty buffer: the first pass of nearly every call.
      const d = this.#end > this.#start ? decode(this.#buf.subarray(this.#start, this.#end)) : null;
      if (d) {
        this.#start += d.length;
        if (this.#start === this.#end) this.#start = this.#end = 0;
        return d.value;
      }
      const had = this.#end - this.#start;
      if (!(await this.#fill())) throw new UnexpectedEofError(what, had);
    }
  }

  async #fill(): Promise<boolean> {
    if (this.#end === this.#buf.length) {
      const pending = this.#end - this.#start;
      // SOCKS messages are under 600 bytes; grow only for a longer backlog.
      const next = this.#buf.length === 0
        ? takeBuffer(0)
        : pending * 2 > this.#buf.length
        ? new Uint8Array(this.#buf.length * 2)
        : this.#buf;
      if (next === this.#buf) next.copyWithin(0, this.#start, this.#end);
      else {
        next.set(this.#buf.subarray(this.#start, this.#end), 0);
        const fromPool = this.#buf.length === 0;
        this.#release();
        this.#pooled = fromPool;
        this.#buf = next;
      }
      this.#start = 0;
      this.#end = pending;
    }
    const n = await this.#src.read(this.#end === 0 ? this.#buf : this.#buf.subarray(this.#end));
    if (n === null) return false;
    this.#end += n;
    return true;
  }

  /**
   * Returns the bytes read past the last decoded message (data an
   * optimistic client sent ahead of the reply), and empties the buffer.
   */
  takeRest(): Uint8Array<ArrayBuffer> {
    const rest = this.#start === this.#end ? EMPTY : this.#buf.slice(this.#start, this.#end);
    // The reader is done: its buffer goes back (a relay may live for hours).
    this.#release();
    this.#buf = EMPTY;
    this.#start = this.#end = 0;
    return rest;
  }

  /** Gives a pooled buffer back, once. */
  #release(): void {
    if (this.#pooled) giveBuffer(0, this.#buf);
    this.#pooled = false;
  }
}
