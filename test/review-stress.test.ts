/**
 * Review stress (seeded): senders and receivers in interpreters on one
 * channel under each overflow policy, with random single sends, trySends
 * and batches, random single and batched receives, and the capacity changed
 * at random meanwhile. Every message carries a channel end of its own (an
 * ack channel; see fixtures/review-overflow-worker.ts), which proves each
 * message's fate exactly once: delivered (acked once), dropped (its end
 * closed by the library) or refused (the end back with its sender). Replay
 * with SEED=<n>; REVIEW_STRESS_COUNT=<n> messages per sender (default 150).
 */
import { suite, assert, rng, seedFromEnv } from "./_harness.js";
import { create, createChannel, type Interpreter } from "../src/index.js";
import type { Message, SenderReport, StressReceiverOptions, StressSenderOptions } from "./fixtures/review-overflow-worker.js";

const test = suite("review-stress");
const worker = new URL("./fixtures/review-overflow-worker.ts", import.meta.url);
const COUNT = Number(process.env.REVIEW_STRESS_COUNT ?? 150);
const SEED = seedFromEnv();
console.log(`  review-stress: seed=${SEED} (replay with SEED=${SEED})`);

for (const overflow of ["drop-newest", "drop-oldest", "error", "wait"] as const) {
  test(`${overflow}: 3 senders, 2 receivers, ends in every message, random capacities: each message delivered, dropped or refused exactly once`, async () => {
    const random = rng(SEED + overflow.length);
    const interps: Interpreter[] = await Promise.all(Array.from({ length: 5 }, (_, i) => create({ name: `${overflow}-${i}` })));
    try {
      const sizes = overflow === "drop-oldest" ? [1, 2, 5, Infinity] : [0, 1, 2, 5, Infinity];
      const [rx, tx] = createChannel<Message>({ capacity: 2, overflow, bufferBytes: 1024, maxBufferBytes: 1 << 16, name: `stress-${overflow}` });
      const knob = tx.clone();
      const senders = interps.slice(0, 3).map((interp, id) =>
        interp.call<SenderReport>(worker, "sender", tx.clone(), { id, count: COUNT, seed: Math.floor(random() * 2 ** 31), timeout: 30_000 } satisfies StressSenderOptions),
      );
      tx.close();
      const receivers = interps.slice(3).map((interp) => interp.call<number>(worker, "receiver", rx.clone(), { seed: Math.floor(random() * 2 ** 31), timeout: 30_000 } satisfies StressReceiverOptions));
      rx.close();
      let done = false;
      const all = Promise.all(senders).finally(() => (done = true));
      let resizes = 0;
      while (!done) {
        knob.setCapacity(sizes[Math.floor(random() * sizes.length)]!);
        resizes++;
        await new Promise((resolve) => setTimeout(resolve, 1 + Math.floor(random() * 3)));
      }
      const reports = await all;
      const stats = knob.stats();
      knob.close();
      const taken = (await Promise.all(receivers)).reduce((a, b) => a + b, 0);
      const delivered = reports.reduce((n, r) => n + r.delivered, 0);
      const dropped = reports.reduce((n, r) => n + r.dropped, 0);
      const refused = reports.reduce((n, r) => n + r.refused, 0);
      const where = `seed=${SEED} ${overflow}: delivered ${delivered} dropped ${dropped} refused ${refused} taken ${taken}, stats sent ${stats.sent} received ${stats.received} dropped ${stats.dropped} length ${stats.length}`;
      assert.is(delivered + dropped + refused, 3 * COUNT, where);
      assert.is(delivered, taken, where);
      assert.is(stats.dropped, dropped, where);
      assert.is(stats.sent, delivered + dropped, where);
      assert.is(stats.received, delivered, where);
      if (overflow === "wait") assert.is(dropped, 0, where); // refused: trySends that found no room
      console.log(`    ${where}; ${resizes} resizes`);
    } finally {
      await Promise.all(interps.map((i) => i.close()));
    }
  }, { timeout: 180_000 });
}

test.run();
