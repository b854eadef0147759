/**
 * Batches: sendMany / sendManySync and recvMany / recvManySync. The same
 * guarantees as single operations (exactly once, per-sender order), with
 * `err.sent` on a timed-out or aborted sendMany.
 */
import { suite, assert, rng, seedFromEnv } from "./_harness.js";
import { ChannelClosedError, create, createChannel, NotShareableError, TimeoutError, type Interpreter, type SendChannel } from "../src/index.js";
import type { ReceiverOptions, SenderOptions } from "./fixtures/part2-worker.js";

const test = suite("batch");
const worker = new URL("./fixtures/part2-worker.ts", import.meta.url);

test("sendMany then recvMany: in order, exactly once, up to max at a time", async () => {
  const [rx, tx] = createChannel<number>({ capacity: 64 });
  await tx.sendMany([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.equal(await rx.recvMany(4), [0, 1, 2, 3]);
  assert.equal(await rx.recvMany(100), [4, 5, 6, 7, 8, 9]);
  tx.sendManySync(new Set([10, 11]));
  assert.equal(rx.recvManySync(1), [10]);
  assert.equal(rx.recvManySync(1), [11]);
  const later = rx.recvMany(10, { timeout: 5000 });
  tx.trySend(12);
  assert.equal(await later, [12], "recvMany waits for the first message");
});

test("a sendMany that times out says how many went in (err.sent): those are delivered, the rest are not", async () => {
  const [rx, tx] = createChannel<number>({ capacity: 3 });
  const err = await tx.sendMany([1, 2, 3, 4, 5], { timeout: 100 }).then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.instance(err, TimeoutError);
  assert.is((err as { sent: number }).sent, 3);
  assert.equal(rx.recvManySync(10), [1, 2, 3]);
  assert.is(rx.tryRecv().ok, false);
});

test("an aborted sendMany says how many went in", async () => {
  const [rx, tx] = createChannel<number>({ capacity: 2 });
  const controller = new AbortController();
  const sending = tx.sendMany([1, 2, 3, 4], { signal: controller.signal });
  setTimeout(() => controller.abort(new Error("stop")), 50);
  const err = await sending.then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.is((err as Error).message, "stop");
  assert.is((err as { sent: number }).sent, 2);
  assert.equal(await rx.recvMany(10), [1, 2]);
});

test("a value that cannot cross stops the batch there: err.sent counts those before it, nothing after it is sent", async () => {
  const [rx, tx] = createChannel<unknown>({ capacity: 100 });
  const err = await tx.sendMany([1, 2, () => 3, 4]).then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.instance(err, NotShareableError);
  // Values are encoded a batch at a time, ahead of writing: none of this batch went in.
  assert.is((err as { sent: number }).sent, 0);
  assert.is(rx.tryRecv().ok, false);
  tx.sendManySync([5, 6]);
  assert.equal(rx.recvManySync(10), [5, 6], "the channel is still usable");
});

test("recvMany's max must be a positive integer (RangeError naming the channel); the channel stays usable", async () => {
  const [rx, tx] = createChannel<number>({ name: "batches" });
  tx.trySend(1);
  for (const max of [0, -1, 1.5, NaN, Infinity]) {
    await assert.rejects(rx.recvMany(max), RangeError, /recvMany on channel \d+ "batches": max must be a positive integer/);
    assert.throws(() => rx.recvManySync(max), RangeError, /recvManySync.*positive integer/);
  }
  assert.equal(await rx.recvMany(5), [1]);
});

test("recvMany on a closed channel: what is buffered first, then ChannelClosedError", async () => {
  const [rx, tx] = createChannel<number>();
  tx.sendManySync([1, 2, 3]);
  tx.close();
  assert.equal(await rx.recvMany(2), [1, 2]);
  assert.equal(rx.recvManySync(2), [3]);
  await assert.rejects(rx.recvMany(2), ChannelClosedError);
});

test("sendMany at capacity 0 hands each value to a receiver in turn", async () => {
  const [rx, tx] = createChannel<number>({ capacity: 0 });
  const [outRx, outTx] = createChannel<number[]>();
  const interp = await create({ name: "taker" });
  try {
    const taking = interp.exec(`const got = []; for (let i = 0; i < 20; i++) got.push(rx.recvSync({ timeout: 10000 })); out.sendSync(got);`, {
      bind: { rx, out: outTx },
    });
    await tx.sendMany(Array.from({ length: 20 }, (_, i) => i), { timeout: 10_000 });
    await taking;
    assert.equal(await outRx.recv({ timeout: 5000 }), Array.from({ length: 20 }, (_, i) => i));
  } finally {
    await interp.close();
  }
});

test("sendMany carries channel ends like send", async () => {
  const [rx, tx] = createChannel<SendChannel<number>>({ capacity: 8 });
  const pairs = Array.from({ length: 5 }, () => createChannel<number>({ capacity: 1 }));
  await tx.sendMany(pairs.map(([, s]) => s));
  const ends = await rx.recvMany(10);
  assert.is(ends.length, 5);
  ends.forEach((s, i) => s.trySend(i));
  for (let i = 0; i < 5; i++) assert.is(await pairs[i]![0].recv({ timeout: 5000 }), i);
});

test("stress: 4 senders with random batches, 4 receivers with random recvMany, random capacities (seeded)", async () => {
  const seed = seedFromEnv();
  const random = rng(seed);
  const interps: Interpreter[] = await Promise.all(Array.from({ length: 8 }, (_, i) => create({ name: `batch-${i}` })));
  try {
    for (const capacity of [0, 1, 7, 64, Infinity]) {
      const [rx, tx] = createChannel<[number, number]>({ capacity, name: `batch cap ${capacity}` });
      const COUNT = capacity === 0 ? 500 : 3000;
      const senders = interps.slice(0, 4).map((interp, id) =>
        interp.call<number>(worker, "sender", tx.clone(), { id, count: COUNT, seed: Math.floor(random() * 2 ** 31), maxBatch: 1 + Math.floor(random() * 100), timeout: 60_000 } satisfies SenderOptions),
      );
      tx.close();
      const receivers = interps.slice(4).map((interp) =>
        interp.call<Record<number, number[]>>(worker, "receiver", rx.clone(), { seed: Math.floor(random() * 2 ** 31), maxBatch: 1 + Math.floor(random() * 100), timeout: 60_000 } satisfies ReceiverOptions),
      );
      rx.close();
      await Promise.all(senders);
      const seen = await Promise.all(receivers);
      for (let id = 0; id < 4; id++) {
        const all = seen.flatMap((s) => s[id] ?? []).sort((a, b) => a - b);
        assert.is(all.length, COUNT, `seed=${seed} capacity ${capacity}: sender ${id} messages received`);
        for (let q = 0; q < COUNT; q++) if (all[q] !== q) assert.unreachable(`seed=${seed} capacity ${capacity}: sender ${id} message ${q} missing or doubled`);
      }
    }
  } finally {
    await Promise.all(interps.map((i) => i.close()));
  }
}, { timeout: 240_000 });

test.run();
