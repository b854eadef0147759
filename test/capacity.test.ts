/**
 * Live resizing (setCapacity from either end) and large messages on
 * bounded channels.
 */
import { suite, assert, rng, seedFromEnv } from "./_harness.js";
import { ChannelClosedError, create, createChannel, DeadlockError, TimeoutError, type Interpreter } from "../src/index.js";
import { endOf } from "../src/transfer.js";
import { H } from "../src/ring.js";
import type { ReceiverOptions, SenderOptions } from "./fixtures/part2-worker.js";

const test = suite("capacity");
const worker = new URL("./fixtures/part2-worker.ts", import.meta.url);

test("raising the capacity lets a waiting sender in at once; lowering it keeps what is buffered", async () => {
  const [rx, tx] = createChannel<number>({ capacity: 1 });
  tx.trySend(1);
  const waiting = tx.send(2, { timeout: 5000 });
  rx.setCapacity(3); // from the receiving end
  await waiting;
  assert.is(tx.stats().capacity, 3);
  assert.is(rx.stats().length, 2);
  tx.setCapacity(1);
  assert.is(rx.stats().length, 2, "nothing buffered is discarded");
  assert.not.ok(tx.trySend(3), "above the new capacity, senders wait");
  assert.is(await rx.recv(), 1);
  assert.not.ok(tx.trySend(3), "still at the capacity");
  assert.is(await rx.recv(), 2);
  assert.ok(tx.trySend(3), "below it again");
  tx.setCapacity(Infinity);
  for (let i = 0; i < 100; i++) assert.ok(tx.trySend(i));
  assert.is(tx.stats().capacity, Infinity);
});

test("from a rendezvous to a buffer: an offered message stands and its sender completes; back to a rendezvous", async () => {
  const [rx, tx] = createChannel<string>({ capacity: 0 });
  const offering = tx.send("offered", { timeout: 5000 });
  let done = false;
  void offering.then(() => (done = true));
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.not.ok(done, "a rendezvous send waits for a receiver");
  rx.setCapacity(2);
  await offering;
  assert.is(rx.stats().length, 1);
  rx.setCapacity(0);
  await assert.rejects(tx.send("nobody", { timeout: 100 }), TimeoutError);
  assert.is(await rx.recv({ timeout: 1000 }), "offered");
  const meeting = tx.send("met", { timeout: 5000 });
  assert.is(await rx.recv({ timeout: 5000 }), "met");
  await meeting;
});

test("setCapacity refuses what createChannel refuses (RangeError naming the channel); the channel is unchanged", () => {
  const [rx, tx] = createChannel<number>({ capacity: 4, name: "knob" });
  for (const bad of [-1, 1.5, NaN, "3", undefined, null]) {
    assert.throws(() => tx.setCapacity(bad as never), RangeError, /setCapacity on channel \d+ "knob": capacity must be 0 \(rendezvous\), a positive integer \(bounded\) or Infinity/);
  }
  assert.is(rx.stats().capacity, 4);
  assert.ok(tx.trySend(1));
  rx.close();
  assert.throws(() => rx.setCapacity(2), ChannelClosedError);
});

test("a sender blocked in sendSync on a full channel is let in by setCapacity from another interpreter, no DeadlockError", async () => {
  const [rx, tx] = createChannel<number>({ capacity: 1, name: "tight" });
  const interp = await create({ name: "blocked sender" });
  try {
    tx.trySend(0);
    const sending = interp.exec(`tx.sendSync(1); tx.sendSync(2); tx.close();`, { bind: { tx } });
    await new Promise((resolve) => setTimeout(resolve, 100));
    rx.setCapacity(5);
    await sending;
    const got: number[] = [];
    for await (const v of rx) got.push(v);
    assert.equal(got, [0, 1, 2]);
  } finally {
    await interp.close();
  }
});

test("resize stress: capacity changed at random (0, 1, 7, Infinity and back) while 4 sender and 4 receiver interpreters run; every message once, per-sender order, no hang, no false DeadlockError (seeded)", async () => {
  const seed = seedFromEnv();
  const random = rng(seed);
  const interps: Interpreter[] = await Promise.all(Array.from({ length: 8 }, (_, i) => create({ name: `resize-${i}` })));
  const COUNT = 2500;
  try {
    const [rx, tx] = createChannel<[number, number]>({ capacity: 7, name: "resized" });
    const knob = tx.clone();
    // Sync waits without timeouts: the deadlock detector is watching every one of them.
    const senders = interps.slice(0, 4).map((interp, id) =>
      interp.call<number>(worker, "sender", tx.clone(), { id, count: COUNT, seed: Math.floor(random() * 2 ** 31), maxBatch: id % 2 === 0 ? 0 : 20, timeout: Infinity } satisfies SenderOptions),
    );
    tx.close();
    const receivers = interps.slice(4).map((interp, k) =>
      interp.call<Record<number, number[]>>(worker, "receiver", rx.clone(), { seed: Math.floor(random() * 2 ** 31), maxBatch: k % 2 === 0 ? 0 : 10, timeout: Infinity } satisfies ReceiverOptions),
    );
    rx.close();
    const sizes = [0, 1, 7, Infinity];
    let resizes = 0;
    let sendersDone = false;
    const all = Promise.all(senders).finally(() => (sendersDone = true));
    while (!sendersDone) {
      knob.setCapacity(sizes[Math.floor(random() * sizes.length)]!);
      resizes++;
      await new Promise((resolve) => setTimeout(resolve, Math.floor(random() * 3)));
    }
    await all;
    knob.close();
    const seen = await Promise.all(receivers);
    for (let id = 0; id < 4; id++) {
      const received = seen.flatMap((s) => s[id] ?? []).sort((a, b) => a - b);
      assert.is(received.length, COUNT, `seed=${seed}: sender ${id}`);
      for (let q = 0; q < COUNT; q++) if (received[q] !== q) assert.unreachable(`seed=${seed}: sender ${id} message ${q} missing or doubled`);
    }
    assert.ok(resizes > 10, `seed=${seed}: resized ${resizes} times`);
  } catch (err) {
    if (err instanceof DeadlockError || (err as Error).message?.includes("DeadlockError")) assert.unreachable(`seed=${seed}: false DeadlockError: ${(err as Error).message}`);
    throw err;
  } finally {
    await Promise.all(interps.map((i) => i.close()));
  }
}, { timeout: 240_000 });

test("a bounded channel with default options carries 1 MiB messages whole: its ring grows for them rather than streaming each", async () => {
  for (const capacity of [1, 4]) {
    const [rx, tx] = createChannel<Uint8Array>({ capacity });
    const interp = await create({ name: "big reader" });
    try {
      const reading = interp.exec(`for (let i = 0; i < 8; i++) { const m = rx.recvSync({ timeout: 20000 }); if (m.length !== 1 << 20 || m[12345] !== i) throw new Error("bad message " + i); }`, { bind: { rx } });
      for (let i = 0; i < 8; i++) {
        const message = new Uint8Array(1 << 20);
        message[12345] = i;
        await tx.send(message, { timeout: 20_000 });
      }
      await reading;
      const memory = endOf(tx)!.memory;
      assert.ok(memory.get(H.DATA_SIZE) >= (1 << 20) + 16, `capacity ${capacity}: the ring grew to hold a whole message (${memory.get(H.DATA_SIZE)} bytes)`);
      assert.ok(memory.get(H.DATA_SIZE) <= capacity * 4 * ((1 << 20) + 16), `capacity ${capacity}: and not far past what its capacity needs`);
    } finally {
      await interp.close();
    }
  }
}, { timeout: 120_000 });

test.run();
