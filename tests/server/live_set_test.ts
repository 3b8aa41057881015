import assert from "node:assert/strict";
import { LiveSet } from "../../src/server/live_set.ts";

const item = (id: number) => ({ id, slot: -1 });

Deno.test("live set: add, delete in any order, find, and slots kept right", () => {
  const set = new LiveSet<ReturnType<typeof item>>();
  const items = Array.from({ length: 6 }, (_, i) => item(i));
  for (const it of items) set.add(it);
  assert.equal(set.size, 6);
  set.delete(items[1]); // the last one moves into slot 1
  set.delete(items[5]); // now the last: nothing moves
  set.delete(items[1]); // not a member any more: nothing happens
  assert.equal(set.size, 4);
  assert.deepEqual(set.snapshot().map((x) => x.id).sort(), [0, 2, 3, 4]);
  for (const [i, x] of set.snapshot().entries()) assert.equal(x.slot, i, `slot of ${x.id}`);
  assert.equal(items[1].slot, -1);
  assert.equal(set.find((x) => x.id === 3), items[3]);
  assert.equal(set.find((x) => x.id === 5), undefined);
  // A member of another set is not removed by this one.
  const other = new LiveSet<ReturnType<typeof item>>();
  const stranger = item(9);
  other.add(stranger);
  set.delete(stranger);
  assert.equal(other.size, 1);
  assert.equal(set.size, 4);
});

Deno.test("live set: a snapshot can be walked while members leave", () => {
  const set = new LiveSet<ReturnType<typeof item>>();
  for (let i = 0; i < 100; i++) set.add(item(i));
  const seen: number[] = [];
  for (const x of set.snapshot()) {
    seen.push(x.id);
    set.delete(x); // as a session's abort may end it during a sweep
  }
  assert.equal(seen.length, 100);
  assert.equal(new Set(seen).size, 100);
  assert.equal(set.size, 0);
});
