/**
 * Streamed messages withdrawn while a receiver still takes an older one
 * (seeded stress). A message larger than the ring streams in pieces; once
 * its last piece is in, its sender is done and the next stream may start
 * while a receiver is still taking the old one's pieces. If that next
 * stream is withdrawn (its send timed out, or its sender died), only its
 * own taker may be told to drop what it has: telling the old message's
 * taker lost a message whose send had returned (found by the 1,000-kill
 * chaos run: "1 accepted messages never received, but only 0 receivers
 * were killed"). Senders here time out mid-stream often; every message
 * whose send returned must be received exactly once, and no other.
 * Replay with SEED=<n>; STREAM_WITHDRAW_COUNT=<n> messages per sender.
 */
import { suite, assert, rng, seedFromEnv } from "./_harness.js";
import { create, createChannel, type Interpreter } from "../src/index.js";

const test = suite("stream-withdraw");
const worker = new URL("./fixtures/stream-withdraw-worker.ts", import.meta.url);
const COUNT = Number(process.env.STREAM_WITHDRAW_COUNT ?? 400);
const SEED = seedFromEnv();
console.log(`  stream-withdraw: seed=${SEED} (replay with SEED=${SEED})`);

test("3 senders timing out mid-stream, 2 receivers: every accepted message received exactly once, no withdrawn one", async () => {
  const random = rng(SEED);
  const ring = 4096;
  const interps: Interpreter[] = await Promise.all(Array.from({ length: 5 }, (_, i) => create({ name: `sw-${i}` })));
  try {
    const [rx, tx] = createChannel<Uint8Array>({ capacity: Infinity, bufferBytes: ring, maxBufferBytes: ring, name: "stream-withdraw" });
    const senders = interps
      .slice(0, 3)
      .map((interp, id) => interp.call<number[]>(worker, "sender", tx.clone(), { id, count: COUNT, seed: Math.floor(random() * 2 ** 31), ring }));
    tx.close();
    const receivers = interps.slice(3).map((interp) => interp.call<Array<[number, number]>>(worker, "receiver", rx.clone(), Math.floor(random() * 2 ** 31)));
    rx.close();
    const accepted = await Promise.all(senders);
    const taken = await Promise.all(receivers);
    const seen = new Map<string, number>();
    taken.forEach((list, r) => {
      const last = new Map<number, number>();
      for (const [id, q] of list) {
        const key = `${id}:${q}`;
        assert.not.ok(seen.has(key), `seed=${SEED}: message (${id}, ${q}) received twice`);
        seen.set(key, r);
        assert.ok((last.get(id) ?? -1) < q, `seed=${SEED}: receiver ${r} took (${id}, ${q}) after (${id}, ${last.get(id)})`);
        last.set(id, q);
      }
    });
    const acceptedKeys = new Set(accepted.flatMap((qs, id) => qs.map((q) => `${id}:${q}`)));
    const lost = [...acceptedKeys].filter((key) => !seen.has(key));
    const unexpected = [...seen.keys()].filter((key) => !acceptedKeys.has(key));
    const total = accepted.reduce((n, qs) => n + qs.length, 0);
    assert.equal(lost, [], `seed=${SEED}: accepted messages never received (of ${total} accepted)`);
    assert.equal(unexpected, [], `seed=${SEED}: received messages whose send did not return (withdrawn)`);
    console.log(`    ${total} of ${3 * COUNT} sends accepted, ${3 * COUNT - total} withdrawn (timed out); all accepted received once`);
  } finally {
    await Promise.all(interps.map((i) => i.close()));
  }
});

test.run();
