/**
 * The Socks Lib mapping table of RFC 3089 section 3 ("DNS name resolving
 * delegation"): names are never resolved locally; each one gets a fake
 * address from a reserved space, in the family the application asked for,
 * and a connect to that fake address is turned into a SOCKS request carrying
 * the name (ATYP DOMAINNAME), which the dual-stack gateway resolves for real.
 *
 * @module
 */

import {
  type Family,
  formatIPv4,
  formatIPv6,
  normalizeIp,
  parseCidr,
  parseIPv4,
  parseIPv6,
} from "../protocol/address.ts";
import { FakeDnsExhaustedError } from "./errors.ts";

/** Options of {@linkcode FakeDns}. */
export interface FakeDnsOptions {
  /**
   * The IPv4 fake space, as a CIDR. Its first (network) address is never
   * handed out.
   *
   * @default {"0.0.0.0/8"}
   */
  ipv4Range?: string;
  /**
   * The IPv6 fake space, as a CIDR. Its first (network) address is never
   * handed out. The default is the RFC 6666 discard-only prefix.
   *
   * @default {"100::/64"}
   */
  ipv6Range?: string;
  /**
   * The most entries kept per family. When a family is full, its least
   * recently used entry that no connection pins is recycled.
   *
   * @default {65536}
   */
  maxEntries?: number;
}

/** The JSON form written by {@linkcode FakeDns.save} and read by {@linkcode FakeDns.load}. */
export interface FakeDnsSnapshot {
  /** Always `"dualsocks-fakedns"`. */
  format: "dualsocks-fakedns";
  /** Always `1`. */
  version: 1;
  /** The IPv4 fake space. */
  ipv4Range: string;
  /** The IPv6 fake space. */
  ipv6Range: string;
  /** The per-family bound. */
  maxEntries: number;
  /** IPv4 entries as `[slot, name]`, least recently used first. */
  ipv4: [number, string][];
  /** IPv6 entries as `[slot, name]`, least recently used first. */
  ipv6: [number, string][];
}

const encoder = new TextEncoder();
const FORMAT = "dualsocks-fakedns";
const DEFAULT_IPV4_RANGE = "0.0.0.0/8";
const DEFAULT_IPV6_RANGE = "100::/64";
const DEFAULT_MAX_ENTRIES = 65536;
const MAX_SLOTS = 0x7fffffff;

/** Cheap pre-check: only these strings can be IP literals. */
function maybeLiteral(text: string): boolean {
  return typeof text === "string" && (text.includes(":") || /^[\d.]+$/.test(text));
}

/** Canonical key of a name: lower case, without one trailing dot. */
function nameKey(name: string): string {
  let key = name.toLowerCase();
  if (key.length > 1 && key.endsWith(".")) key = key.slice(0, -1);
  return key;
}

function checkName(name: string): void {
  if (typeof name !== "string") {
    throw new TypeError(`FakeDns: expected a name as a string, found ${typeof name}`);
  }
  // Byte length: the string length unless there is non-ASCII text.
  const length = /[^\u0020-\u007e]/.test(name) ? encoder.encode(name).length : name.length;
  if (length < 1 || length > 255 || /[\s/]/.test(name)) {
    throw new TypeError(
      `FakeDns: expected a name of 1 to 255 bytes without spaces or slashes, found "${name}"`,
    );
  }
}

/**
 * One family's table: slots 0..capacity-1 map to the addresses base+1,
 * base+2, ... computed on demand. An intrusive doubly linked list over the
 * slots keeps the least recently used order of the unpinned entries, so
 * every operation is O(1).
 */
class Pool {
  readonly family: Family;
  readonly range: string;
  readonly capacity: number;
  readonly #base: Uint8Array;
  readonly #mask: Uint8Array;
  #names: string[] = [];
  #byName = new Map<string, number>();
  #prev = new Int32Array(0);
  #next = new Int32Array(0);
  #pins = new Uint32Array(0);
  #head = -1;
  #tail = -1;
  #allocated = 0;
  #free: number[] = [];

  constructor(family: Family, range: string, maxEntries: number) {
    const cidr = parseCidr(range);
    const what = family === 4 ? "ipv4Range" : "ipv6Range";
    if (!cidr || cidr.family !== family) {
      throw new TypeError(
        `FakeDns: expected ${what} to be an IPv${family} CIDR such as ${
          family === 4 ? DEFAULT_IPV4_RANGE : DEFAULT_IPV6_RANGE
        }, found "${range}"`,
      );
    }
    const bits = cidr.bytes.length * 8;
    const size = 2 ** (bits - cidr.prefix);
    if (size < 2) {
      throw new RangeError(
        `FakeDns: expected ${what} to hold at least 2 addresses (the first is never used), found "${range}"`,
      );
    }
    this.family = family;
    this.range = range;
    this.capacity = Math.min(maxEntries, size - 1, MAX_SLOTS);
    this.#mask = new Uint8Array(cidr.bytes.length);
    for (let i = 0, b = cidr.prefix; i < this.#mask.length; i++, b -= 8) {
      this.#mask[i] = b >= 8 ? 0xff : b <= 0 ? 0 : (0xff << (8 - b)) & 0xff;
    }
    this.#base = cidr.bytes.map((v, i) => v & this.#mask[i]);
  }

  get size(): number {
    return this.#byName.size;
  }

  address(slot: number): string {
    const bytes = this.#base.slice();
    let offset = slot + 1;
    for (let k = bytes.length - 1; offset > 0; k--) {
      bytes[k] |= offset % 256;
      offset = Math.floor(offset / 256);
    }
    return this.family === 4 ? formatIPv4(bytes) : formatIPv6(bytes);
  }

  /** The slot of an address (canonical literal of this family), or -1. */
  slotOf(host: string): number {
    const bytes = this.family === 4 ? parseIPv4(host) : parseIPv6(host);
    if (!bytes) return -1;
    let offset = 0;
    for (let i = 0; i < bytes.length; i++) {
      if ((bytes[i] & this.#mask[i]) !== this.#base[i]) return -1;
      offset = offset * 256 + (bytes[i] & ~this.#mask[i] & 0xff);
      if (offset > Number.MAX_SAFE_INTEGER / 512) return -2; // inside, but never handed out
    }
    return offset === 0 ? -2 : offset - 1;
  }

  /** True when `host` (canonical literal of this family) lies in the range. */
  contains(host: string): boolean {
    return this.slotOf(host) !== -1;
  }

  nameAt(slot: number): string | undefined {
    if (slot < 0 || slot >= this.#allocated) return undefined;
    return this.#names[slot] || undefined;
  }

  lookup(key: string): string {
    let slot = this.#byName.get(key);
    if (slot === undefined) {
      slot = this.#alloc();
      this.#names[slot] = key;
      this.#byName.set(key, slot);
      this.#link(slot);
    } else {
      this.touch(slot);
    }
    return this.address(slot);
  }

  touch(slot: number): void {
    if (this.#pins[slot] === 0 && this.#tail !== slot) {
      this.#unlink(slot);
      this.#link(slot);
    }
  }

  pin(slot: number): void {
    if (this.#pins[slot]++ === 0) this.#unlink(slot);
  }

  unpin(slot: number): void {
    if (this.#pins[slot] > 0 && --this.#pins[slot] === 0) this.#link(slot);
  }

  /** Entries in least recently used order, pinned ones (in use) last. */
  entries(): [number, string][] {
    const out: [number, string][] = [];
    for (let s = this.#head; s !== -1; s = this.#next[s]) out.push([s, this.#names[s]]);
    for (let s = 0; s < this.#allocated; s++) {
      if (this.#pins[s] > 0 && this.#names[s]) out.push([s, this.#names[s]]);
    }
    return out;
  }

  restore(entries: unknown): void {
    if (!Array.isArray(entries)) {
      throw new TypeError(`FakeDns.load: expected a list of IPv${this.family} entries`);
    }
    const used = new Set<number>();
    const keys = new Set<string>();
    let top = 0;
    for (const entry of entries) {
      const [slot, name] = Array.isArray(entry) ? entry : [];
      if (
        !Number.isInteger(slot) || slot < 0 || slot >= this.capacity || used.has(slot) ||
        typeof name !== "string" || keys.has(nameKey(name))
      ) {
        throw new TypeError(
          `FakeDns.load: expected IPv${this.family} entries [slot, name] with distinct slots below ${this.capacity} and distinct names, found ${
            JSON.stringify(entry)
          }`,
        );
      }
      checkName(name);
      used.add(slot);
      keys.add(nameKey(name));
      top = Math.max(top, slot + 1);
    }
    this.#grow(top);
    this.#allocated = top;
    for (const [slot, name] of entries as [number, string][]) {
      const key = nameKey(name);
      this.#names[slot] = key;
      this.#byName.set(key, slot);
      this.#link(slot);
    }
    for (let s = top - 1; s >= 0; s--) if (!used.has(s)) this.#free.push(s);
  }

  #alloc(): number {
    if (this.#free.length > 0) return this.#free.pop()!;
    if (this.#allocated < this.capacity) {
      this.#grow(this.#allocated + 1);
      return this.#allocated++;
    }
    const victim = this.#head;
    if (victim === -1) {
      throw new FakeDnsExhaustedError(
        this.family,
        `FakeDns: all ${this.capacity} IPv${this.family} fake addresses of ${this.range} are pinned by live connections, ` +
          `so none can be recycled; close connections, or raise maxEntries or widen ipv${this.family}Range`,
      );
    }
    this.#unlink(victim);
    this.#byName.delete(this.#names[victim]);
    this.#names[victim] = "";
    return victim;
  }

  #grow(needed: number): void {
    if (needed <= this.#prev.length) return;
    let size = Math.max(1024, this.#prev.length);
    while (size < needed) size *= 2;
    size = Math.min(size, Math.max(needed, this.capacity));
    const prev = new Int32Array(size);
    const next = new Int32Array(size);
    const pins = new Uint32Array(size);
    prev.set(this.#prev);
    next.set(this.#next);
    pins.set(this.#pins);
    this.#prev = prev;
    this.#next = next;
    this.#pins = pins;
  }

  #link(slot: number): void {
    this.#prev[slot] = this.#tail;
    this.#next[slot] = -1;
    if (this.#tail === -1) this.#head = slot;
    else this.#next[this.#tail] = slot;
    this.#tail = slot;
  }

  #unlink(slot: number): void {
    const p = this.#prev[slot];
    const n = this.#next[slot];
    if (p === -1) this.#head = n;
    else this.#next[p] = n;
    if (n === -1) this.#tail = p;
    else this.#prev[n] = p;
    this.#prev[slot] = this.#next[slot] = -1;
  }
}

/**
 * The per-process mapping table of fake addresses (RFC 3089 section 3).
 *
 * - {@linkcode FakeDns.lookup} returns a fake address **in the family the
 *   application asked for**, whatever the destination's real family is.
 *   The same name (case-insensitive, trailing dot ignored) gets the same
 *   address while it stays mapped.
 * - An IP literal of the asked family is returned as is (normalized); a
 *   literal of the other family cannot be held by the application, so it is
 *   mapped like a name (the gateway accepts a literal sent as DOMAINNAME).
 * - The table is bounded (`maxEntries` per family). When full, the least
 *   recently used entry is recycled, but never one that a live connection
 *   {@linkcode FakeDns.pin}s; if all are pinned, a
 *   {@linkcode FakeDnsExhaustedError} is thrown.
 * - All operations are O(1): addresses are computed from a slot index,
 *   nothing is generated ahead.
 *
 * A recycled address that some code kept is harmless: it maps to another
 * name or to none (then connecting to it fails with
 * `UnmappedFakeAddressError`), it never reaches a real host.
 *
 * @example
 * ```ts
 * import { FakeDns } from "./fake_dns.ts";
 * const dns = new FakeDns();
 * const v4 = dns.lookup("v6only.test", 4); // "0.0.0.1"
 * const v6 = dns.lookup("v4only.test", 6); // "100::1"
 * dns.reverse(v4); // "v6only.test"
 * dns.isFake("192.0.2.1"); // false
 * dns.lookup("192.0.2.1", 4); // "192.0.2.1" (same family: as is)
 * dns.lookup("2001:db8::1", 4); // a fake IPv4 address mapped to "2001:db8::1"
 * ```
 */
export class FakeDns {
  readonly #v4: Pool;
  readonly #v6: Pool;
  readonly #maxEntries: number;

  /** Creates an empty table. Throws for a malformed range or bound. */
  constructor(options: FakeDnsOptions = {}) {
    const max = options.maxEntries ?? DEFAULT_MAX_ENTRIES;
    if (!Number.isInteger(max) || max < 1) {
      throw new RangeError(`FakeDns: expected maxEntries to be a positive integer, found ${max}`);
    }
    this.#maxEntries = max;
    this.#v4 = new Pool(4, options.ipv4Range ?? DEFAULT_IPV4_RANGE, max);
    this.#v6 = new Pool(6, options.ipv6Range ?? DEFAULT_IPV6_RANGE, max);
  }

  /** The IPv4 fake space (CIDR). */
  get ipv4Range(): string {
    return this.#v4.range;
  }

  /** The IPv6 fake space (CIDR). */
  get ipv6Range(): string {
    return this.#v6.range;
  }

  /** The per-family bound on entries, as configured. */
  get maxEntries(): number {
    return this.#maxEntries;
  }

  /** The number of names currently mapped, both families together. */
  get size(): number {
    return this.#v4.size + this.#v6.size;
  }

  /**
   * Returns the fake address of `name` in `family` (allocating one when
   * needed). IP literals follow the family rules described on the class.
   * Throws a {@linkcode FakeDnsExhaustedError} when the family is full and
   * every entry is pinned, a `TypeError` for something that is not a name.
   *
   * @example
   * ```ts
   * import { FakeDns } from "./fake_dns.ts";
   * const dns = new FakeDns();
   * dns.lookup("Example.Test", 6) === dns.lookup("example.test.", 6); // true
   * ```
   */
  lookup(name: string, family: 4 | 6): string {
    if (family !== 4 && family !== 6) {
      throw new TypeError(`FakeDns.lookup: expected family 4 or 6, found ${family}`);
    }
    const pool = family === 4 ? this.#v4 : this.#v6;
    const ip = maybeLiteral(name) ? normalizeIp(name) : null;
    if (ip) {
      if (ip.family === family) return ip.host;
      const other = ip.family === 4 ? this.#v4 : this.#v6;
      const slot = other.slotOf(ip.host);
      if (slot !== -1) {
        // A fake of the other family: hand out the name behind it.
        const mapped = other.nameAt(slot);
        if (mapped === undefined) {
          throw new TypeError(
            `FakeDns.lookup: ${ip.host} is a fake IPv${ip.family} address with no name mapped to it`,
          );
        }
        return pool.lookup(mapped);
      }
      return pool.lookup(ip.host);
    }
    checkName(name);
    return pool.lookup(nameKey(name));
  }

  /**
   * Returns the name mapped to a fake address (brackets allowed), or
   * `undefined` when the address is not fake or maps to nothing. A hit
   * counts as a use for the least-recently-used order.
   *
   * @example
   * ```ts
   * import { FakeDns } from "./fake_dns.ts";
   * const dns = new FakeDns();
   * dns.reverse(dns.lookup("a.test", 6)); // "a.test"
   * dns.reverse("100::ffff"); // undefined
   * ```
   */
  reverse(address: string): string | undefined {
    const hit = this.#find(address);
    if (!hit) return undefined;
    const name = hit.pool.nameAt(hit.slot);
    if (name !== undefined) hit.pool.touch(hit.slot);
    return name;
  }

  /**
   * True when `address` (an IP literal, brackets allowed) lies in one of the
   * fake spaces, mapped or not.
   *
   * @example
   * ```ts
   * import { FakeDns } from "./fake_dns.ts";
   * new FakeDns().isFake("0.0.0.7"); // true
   * ```
   */
  isFake(address: string): boolean {
    const ip = normalizeIp(address);
    if (!ip) return false;
    return (ip.family === 4 ? this.#v4 : this.#v6).contains(ip.host);
  }

  /**
   * Pins a mapped fake address so that its entry is not recycled while a
   * connection uses it. Returns the release function (calling it more than
   * once is harmless). Pins nest: an entry is recyclable again after every
   * pin was released. Throws a `TypeError` for an address that is not a
   * mapped fake.
   *
   * @example
   * ```ts
   * import { FakeDns } from "./fake_dns.ts";
   * const dns = new FakeDns();
   * const release = dns.pin(dns.lookup("a.test", 4));
   * // ... the connection lives ...
   * release();
   * ```
   */
  pin(address: string): () => void {
    const hit = this.#find(address);
    if (!hit || hit.pool.nameAt(hit.slot) === undefined) {
      throw new TypeError(`FakeDns.pin: expected a mapped fake address, found "${address}"`);
    }
    const { pool, slot } = hit;
    pool.pin(slot);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      pool.unpin(slot);
    };
  }

  /**
   * The table as plain JSON data (pins are not saved: they belong to live
   * connections of this process).
   *
   * @example
   * ```ts
   * import { FakeDns } from "./fake_dns.ts";
   * const dns = new FakeDns();
   * dns.lookup("a.test", 4);
   * FakeDns.fromJSON(dns.toJSON()).reverse("0.0.0.1"); // "a.test"
   * ```
   */
  toJSON(): FakeDnsSnapshot {
    return {
      format: FORMAT,
      version: 1,
      ipv4Range: this.#v4.range,
      ipv6Range: this.#v6.range,
      maxEntries: this.#maxEntries,
      ipv4: this.#v4.entries(),
      ipv6: this.#v6.entries(),
    };
  }

  /**
   * Rebuilds a table from {@linkcode FakeDns.toJSON} data: every name keeps
   * its fake address, and the least-recently-used order is kept.
   *
   * @example
   * ```ts
   * import { FakeDns } from "./fake_dns.ts";
   * const copy = FakeDns.fromJSON(new FakeDns().toJSON());
   * copy.size; // 0
   * ```
   */
  static fromJSON(data: FakeDnsSnapshot): FakeDns {
    if (!data || typeof data !== "object" || data.format !== FORMAT || data.version !== 1) {
      throw new TypeError(
        `FakeDns.load: expected {"format": "${FORMAT}", "version": 1, ...}, found ${
          JSON.stringify(data)?.slice(0, 80)
        }`,
      );
    }
    const dns = new FakeDns({
      ipv4Range: data.ipv4Range,
      ipv6Range: data.ipv6Range,
      maxEntries: data.maxEntries,
    });
    dns.#v4.restore(data.ipv4);
    dns.#v6.restore(data.ipv6);
    return dns;
  }

  /**
   * Writes the table to `path` as JSON (atomically: a temporary file next to
   * it is renamed over it), so that a restarted process keeps its mappings
   * with {@linkcode FakeDns.load}.
   *
   * @example
   * ```ts ignore
   * import { FakeDns } from "./fake_dns.ts";
   * const path = "/var/lib/app/fake-dns.json";
   * const dns = await FakeDns.load(path).catch(() => new FakeDns());
   * globalThis.addEventListener("unload", () => dns.saveSync(path));
   * ```
   */
  async save(path: string | URL): Promise<void> {
    const tmp = `${path instanceof URL ? path.pathname : path}.${Deno.pid}.tmp`;
    await Deno.writeTextFile(tmp, JSON.stringify(this));
    await Deno.rename(tmp, path);
  }

  /**
   * The synchronous form of {@linkcode FakeDns.save}, usable from an
   * `unload` handler.
   *
   * @example
   * ```ts ignore
   * import { FakeDns } from "./fake_dns.ts";
   * new FakeDns().saveSync("/tmp/fake-dns.json");
   * ```
   */
  saveSync(path: string | URL): void {
    const tmp = `${path instanceof URL ? path.pathname : path}.${Deno.pid}.tmp`;
    Deno.writeTextFileSync(tmp, JSON.stringify(this));
    Deno.renameSync(tmp, path);
  }

  /**
   * Reads a table written by {@linkcode FakeDns.save}. Rejects with
   * `Deno.errors.NotFound` when there is no file, and with a `TypeError`
   * when the file is not such a table.
   *
   * @example
   * ```ts ignore
   * import { FakeDns } from "./fake_dns.ts";
   * const dns = await FakeDns.load("/tmp/fake-dns.json");
   * ```
   */
  static async load(path: string | URL): Promise<FakeDns> {
    const text = await Deno.readTextFile(path);
    let data: FakeDnsSnapshot;
    try {
      data = JSON.parse(text);
    } catch (cause) {
      throw new TypeError(`FakeDns.load: expected JSON in ${path}, found something else`, {
        cause,
      });
    }
    return FakeDns.fromJSON(data);
  }

  #find(address: string): { pool: Pool; slot: number } | undefined {
    const ip = normalizeIp(typeof address === "string" ? address : "");
    if (!ip) return undefined;
    const pool = ip.family === 4 ? this.#v4 : this.#v6;
    const slot = pool.slotOf(ip.host);
    return slot < 0 ? undefined : { pool, slot };
  }
}
