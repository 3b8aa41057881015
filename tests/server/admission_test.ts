import assert from "node:assert/strict";
import { BUSY_GRACE_MS, HandshakeGate, IDLE_GRACE_MS } from "../../src/server/admission.ts";

/** Settles `p` into "resolved" or "pending" after `ms` (a timer that fires before the gate's). */
async function stateAfter(p: Promise<unknown>, ms: number): Promise<"resolved" | "pending"> {
  let done = false;
  p.then(() => (done = true));
  await new Promise((r) => setTimeout(r, ms));
  return done ? "resolved" : "pending";
}

/** Fails instead of hanging when the gate never opens. */
function bounded<T>(p: Promise<T>, ms = 5000): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`gate still shut after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Busy, with a grace time no test run comes near. */
const LONG = { busy: () => true, busyGraceMs: 60_000 };

Deno.test("gate: shut at the limit while busy, open again when a handshake ends", async () => {
  const gate = new HandshakeGate(2, LONG);
  assert.equal(await bounded(gate.ready()), false, "open: no wait");
  gate.admit(1);
  assert.equal(await bounded(gate.ready()), false);
  assert.equal(gate.shut, false);
  gate.admit(2);
  assert.equal(gate.size, 2);
  assert.equal(gate.shut, true);
  const ready = gate.ready();
  // Well past the idle grace: still shut, since the gateway is busy.
  assert.equal(await stateAfter(ready, IDLE_GRACE_MS * 4), "pending");
  gate.release(1);
  assert.equal(await bounded(ready), true, "it had to wait");
  assert.equal(gate.size, 1);
  gate.release(1); // a second release of the same session changes nothing
  assert.equal(gate.size, 1);
});

Deno.test("gate: a handshake stuck on the network stops counting after the grace time", async () => {
  // Not busy: a client that sends nothing must not hold the gate shut.
  // Busy: the grace is longer, but it still ends.
  for (const [busy, grace] of [[false, IDLE_GRACE_MS], [true, BUSY_GRACE_MS]] as const) {
    const gate = new HandshakeGate(1, { busy: () => busy });
    gate.admit(1);
    const t0 = performance.now();
    await bounded(gate.ready());
    assert.ok(performance.now() - t0 >= grace - 1, `waited for the grace (busy: ${busy})`);
    assert.equal(gate.size, 0);
  }
});

Deno.test("gate: every waiter wakes (one per listener), and limit 0 turns it off", async () => {
  const gate = new HandshakeGate(1, LONG);
  gate.admit(1);
  const a = gate.ready();
  const b = gate.ready();
  gate.release(1);
  assert.deepEqual(await bounded(Promise.all([a, b])), [true, true]);
  const off = new HandshakeGate(0);
  for (let id = 1; id <= 100; id++) off.admit(id);
  assert.equal(off.size, 0);
  await bounded(off.ready());
  // A reload may lower the limit under running handshakes.
  gate.admit(2);
  gate.admit(3);
  gate.limit = 1;
  const c = gate.ready();
  assert.equal(await stateAfter(c, IDLE_GRACE_MS * 4), "pending");
  gate.release(2);
  assert.equal(await stateAfter(c, IDLE_GRACE_MS * 4), "pending", "one still counts: 3");
  gate.release(3);
  await bounded(c);
  // The real CPU meter: a stalled handshake still stops counting.
  const real = new HandshakeGate(1);
  real.admit(1);
  await bounded(real.ready());
});
