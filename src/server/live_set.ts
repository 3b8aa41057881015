/**
 * The set of live sessions, as an array with swap-remove.
 *
 * A `Map` keyed by session id churns its hash tables: every so many
 * deletions it allocates a new table, and a discarded table that has been
 * promoted to V8's old generation still points at young sessions, which the
 * next minor GC must then keep alive and promote in turn. Measured under
 * 32 clients doing short sessions: about 0.9 MB promoted per minor GC and
 * 2.4 ms pauses with a `Map`, against almost nothing with this array.
 *
 * @module
 */

/** What the set needs from a member: its position, kept up to date by the set. */
export interface Slotted {
  /** Index in the set's array; -1 when not in a set. */
  slot: number;
}

/** Live members with O(1) add and delete, no hashing and no table churn. */
export class LiveSet<T extends Slotted> {
  #items: T[] = [];

  /** How many members there are. */
  get size(): number {
    return this.#items.length;
  }

  /** Adds `item`, which must not be in a set already. */
  add(item: T): void {
    if (item.slot !== -1) {
      throw new Error(`expected an item in no set, found one at slot ${item.slot}`);
    }
    item.slot = this.#items.length;
    this.#items.push(item);
  }

  /** Removes `item`; does nothing when it is not a member. */
  delete(item: T): void {
    const i = item.slot;
    if (i < 0 || this.#items[i] !== item) return;
    const last = this.#items.pop()!;
    if (last !== item) {
      this.#items[i] = last;
      last.slot = i;
    }
    item.slot = -1;
  }

  /** The first member for which `test` is true. */
  find(test: (item: T) => boolean): T | undefined {
    return this.#items.find(test);
  }

  /** A copy of the members: safe to iterate while members are added or deleted. */
  snapshot(): T[] {
    return this.#items.slice();
  }
}
