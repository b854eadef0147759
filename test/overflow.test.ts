/**
 * Overflow policies: what a send does when a channel has no room (its
 * capacity, or its byte budget), under "wait", "drop-newest",
 * "drop-oldest" and "error", for send, sendSync, trySend and select send
 * cases, at capacities 0, 1, n and Infinity.
 */
import { suite, assert, rng, seedFromEnv } from "./_harness.js";
import {
  ChannelClosedError,
  ChannelFullError,
  create,
  createChannel,
  ExecutionFailed,
  select,
  TimeoutError,
  type RecvChannel,
  type SendChannel,
} from "../src/index.js";

const test = suite("overflow");

function drain<T>(rx: RecvChannel<T>): T[] {
  const out: T[] = [];
  for (let r = rx.tryRecv(); r.ok; r = rx.tryRecv()) out.push(r.value);
  return out;
}

test("trySend under each policy at capacity 2: false, or true with the drop counted", () => {
  const expected = {
    wait: { tries: [true, true, false, false], got: [0, 1], dropped: 0 },
    error: { tries: [true, true, false, false], got: [0, 1], dropped: 0 },
    "drop-newest": { tries: [true, true, true, true], got: [0, 1], dropped: 2 },
    "drop-oldest": { tries: [true, true, true, true], got: [2, 3], dropped: 2 },
  } as const;
  for (const [overflow, want] of Object.entries(expected)) {
    const [rx, tx] = createChannel<number>({ capacity: 2, overflow: overflow as keyof typeof expected });
    const tries = [0, 1, 2, 3].map((i) => tx.trySend(i));
    assert.equal(tries, [...want.tries], `${overflow}: trySend results`);
    assert.equal(drain(rx), [...want.got], `${overflow}: what is received`);
    const stats = tx.stats();
    assert.is(stats.overflow, overflow);
    assert.is(stats.dropped, want.dropped, `${overflow}: dropped`);
    assert.is(stats.sent, stats.received + stats.dropped + stats.length, `${overflow}: sent = received + dropped + length`);
  }
});

test("send on a full channel: wait waits (TimeoutError), drop-newest and drop-oldest complete at once, error fails with ChannelFullError naming the channel", async () => {
  for (const overflow of ["wait", "drop-newest", "drop-oldest", "error"] as const) {
    const [rx, tx] = createChannel<string>({ capacity: 1, overflow, name: `full-${overflow}` });
    await tx.send("first");
    const sending = tx.send("second", { timeout: 200 });
    if (overflow === "wait") await assert.rejects(sending, TimeoutError);
    else if (overflow === "error") await assert.rejects(sending, ChannelFullError, /full-error.*full.*"error"/);
    else await sending;
    const got = drain(rx);
    assert.equal(got, overflow === "drop-oldest" ? ["second"] : ["first"], overflow);
    assert.is(tx.stats().dropped, overflow.startsWith("drop") ? 1 : 0);
  }
});

test("capacity 0: drop-newest discards a message no receiver waits for, error fails it, drop-oldest is refused", async () => {
  const [rx, tx] = createChannel<number>({ capacity: 0, overflow: "drop-newest" });
  await tx.send(1); // nobody waits: discarded at once
  assert.is(tx.stats().dropped, 1);
  const receiving = rx.recv({ timeout: 5000 });
  // The receive is registered once recv() returned (its first attempt runs synchronously).
  await tx.send(2);
  assert.is(await receiving, 2, "a waiting receiver gets the message");
  assert.is(tx.stats().dropped, 1);

  const [, errTx] = createChannel<number>({ capacity: 0, overflow: "error", name: "meet" });
  await assert.rejects(errTx.send(1), ChannelFullError, /meet.*no receiver is waiting/);
  assert.not.ok(errTx.trySend(1), "trySend keeps its meaning: false");

  assert.throws(() => createChannel({ capacity: 0, overflow: "drop-oldest" }), RangeError, /drop-oldest.*capacity above 0/);
  const [, dropOldest] = createChannel({ capacity: 2, overflow: "drop-oldest", name: "resized" });
  assert.throws(() => dropOldest.setCapacity(0), RangeError, /resized.*drop-oldest/);
  assert.is(dropOldest.stats().capacity, 2, "the refused change left the capacity alone");
});

test("an unknown overflow policy is a RangeError naming the option and what is allowed", () => {
  assert.throws(() => createChannel({ overflow: "drop" as never }), RangeError, /overflow must be one of "wait", "drop-newest", "drop-oldest", "error", got "drop"/);
  assert.throws(() => createChannel({ overflow: 3 as never }), RangeError, /overflow must be one of/);
});

test("the byte budget counts as room too: drop-oldest frees bytes, drop-newest and error refuse, at capacity Infinity", async () => {
  const big = new Uint8Array(1500);
  for (const overflow of ["drop-oldest", "drop-newest", "error"] as const) {
    const [rx, tx] = createChannel<Uint8Array>({ maxBufferBytes: 4096, bufferBytes: 4096, overflow });
    let errors = 0;
    for (let i = 0; i < 10; i++) {
      big[0] = i;
      try {
        await tx.send(big, { timeout: 1000 });
      } catch (err) {
        assert.instance(err, ChannelFullError);
        errors++;
      }
    }
    const got = drain(rx).map((b) => b[0]);
    const stats = tx.stats();
    if (overflow === "drop-oldest") assert.equal(got, [8, 9], "the newest messages remain, in order");
    else assert.equal(got, [0, 1], "the oldest messages remain");
    assert.is(stats.dropped + errors, 8, `${overflow}: every refused or discarded message is accounted for`);
    assert.is(errors, overflow === "error" ? 8 : 0);
  }
});

test("drop-oldest never reorders what remains, and counts every drop (seeded interleavings)", () => {
  const seed = seedFromEnv();
  const random = rng(seed);
  for (let round = 0; round < 50; round++) {
    const capacity = 1 + Math.floor(random() * 8);
    const [rx, tx] = createChannel<number>({ capacity, overflow: "drop-oldest" });
    let next = 0;
    let last = -1;
    let received = 0;
    for (let step = 0; step < 200; step++) {
      if (random() < 0.7) assert.ok(tx.trySend(next++));
      else {
        const r = rx.tryRecv();
        if (r.ok) {
          assert.ok(r.value > last, `seed=${seed}: ${r.value} after ${last}`);
          last = r.value;
          received++;
        }
      }
      assert.ok(tx.stats().length <= capacity, `seed=${seed}: never above capacity`);
    }
    const rest = drain(rx);
    for (const v of rest) assert.ok(v > last, `seed=${seed}: order`), (last = v);
    const stats = tx.stats();
    assert.is(received + rest.length + stats.dropped, next, `seed=${seed}: every message received or dropped, once`);
  }
});

test("drop-oldest never discards a message a receiver has started to take (a streamed one), whatever the interleaving", async () => {
  // A 64 KiB message through a 4 KiB ring streams: the receiver claims it with
  // its first piece. Small messages flood in meanwhile (they are admitted once
  // its sender has written the last piece, while the receiver still takes the
  // rest): drop-oldest may discard them, never the streamed one.
  const [rx, tx] = createChannel<Uint8Array>({ capacity: 2, overflow: "drop-oldest", maxBufferBytes: 4096, bufferBytes: 4096 });
  const [doneRx, doneTx] = createChannel<number>();
  const receiver = await create({ name: "slow taker" });
  const ROUNDS = 10;
  try {
    const taking = receiver.exec(
      `for (let round = 0; round < ${ROUNDS}; round++) {
         let big;
         for (;;) { const m = rx.recvSync({ timeout: 20000 }); if (m.length > 1) { big = m; break; } }
         for (let i = 0; i < big.length; i++) if (big[i] !== ((i + round) & 255)) throw new Error("round " + round + ": the streamed message arrived damaged at byte " + i);
         done.sendSync(round);
       }`,
      { bind: { rx: rx.clone(), done: doneTx } },
    );
    for (let round = 0; round < ROUNDS; round++) {
      const big = new Uint8Array(64 * 1024).map((_, i) => (i + round) & 0xff);
      const streaming = tx.send(big, { timeout: 20000 });
      for (let i = 0; i < 50; i++) {
        tx.trySend(new Uint8Array([i]));
        await new Promise((resolve) => setImmediate(resolve));
      }
      await streaming;
      assert.is(await doneRx.recv({ timeout: 20000 }), round, "the streamed message arrived whole");
    }
    await taking;
  } finally {
    await receiver.close();
  }
}, { timeout: 120_000 });

test("channel ends inside a discarded message are closed (drop-newest and drop-oldest)", async () => {
  for (const overflow of ["drop-newest", "drop-oldest"] as const) {
    const [carrierRx, carrierTx] = createChannel<{ reply: SendChannel<number> }>({ capacity: 1, overflow });
    const [firstRx, firstTx] = createChannel<number>();
    const [secondRx, secondTx] = createChannel<number>();
    assert.ok(carrierTx.trySend({ reply: firstTx }));
    assert.ok(carrierTx.trySend({ reply: secondTx })); // one of the two is discarded
    const [droppedRx, keptRx] = overflow === "drop-newest" ? [secondRx, firstRx] : [firstRx, secondRx];
    await assert.rejects(droppedRx.recv({ timeout: 5000 }), ChannelClosedError, /every send handle is closed/);
    const { reply } = (await carrierRx.recv({ timeout: 5000 })) as { reply: SendChannel<number> };
    reply.trySend(7);
    assert.is(await keptRx.recv({ timeout: 5000 }), 7);
    assert.throws(() => secondTx.trySend(1), ChannelClosedError, /moved/);
  }
});

test("select send cases: a dropping policy makes the case ready (dropped, counted); under error the case waits", async () => {
  const [, dropTx] = createChannel<number>({ capacity: 1, overflow: "drop-newest" });
  dropTx.trySend(0);
  const [slowRx] = createChannel<number>();
  const chosen = await select([slowRx, [dropTx, 1]], { timeout: 5000 });
  assert.is(chosen.index, 1);
  assert.is(dropTx.stats().dropped, 1);

  const [, errTx] = createChannel<number>({ capacity: 1, overflow: "error" });
  errTx.trySend(0);
  await assert.rejects(select([[errTx, 1]], { timeout: 100 }), TimeoutError);
});

test("sendSync inside an interpreter under each policy", async () => {
  const interp = await create({ name: "producer" });
  try {
    for (const overflow of ["drop-newest", "drop-oldest", "error"] as const) {
      const [rx, tx] = createChannel<number>({ capacity: 3, overflow });
      const run = interp.exec(
        `let failed = 0;
         for (let i = 0; i < 10; i++) { try { tx.sendSync(i, { timeout: 5000 }); } catch (e) { if (e.code !== "ERR_CHANNEL_FULL") throw e; failed++; } }
         tx.close();
         globalThis.failed = failed;`,
        { bind: { tx } },
      );
      await run;
      const got: number[] = [];
      for await (const v of rx) got.push(v);
      const expected = overflow === "drop-oldest" ? [7, 8, 9] : [0, 1, 2];
      assert.equal(got, expected, overflow);
    }
    const [, tx] = createChannel<number>({ capacity: 1, overflow: "error" });
    tx.trySend(0);
    const failing = interp.exec(`tx.sendSync(1)`, { bind: { tx } });
    await assert.rejects(failing, ExecutionFailed, /ChannelFullError/);
  } finally {
    await interp.close();
  }
});

test("a producer 10x faster than its consumer: drop counts are exact, nothing is received twice or out of order", async () => {
  for (const overflow of ["drop-newest", "drop-oldest"] as const) {
    const [rx, tx] = createChannel<number>({ capacity: 8, overflow });
    const producer = await create({ name: "flood" });
    const N = 20_000;
    const producing = producer.exec(`for (let i = 0; i < ${N}; i++) tx.sendSync(i); tx.close();`, { bind: { tx } });
    let received = 0;
    let last = -1;
    for await (const v of rx) {
      assert.ok(v > last, `${overflow}: ${v} after ${last}`);
      last = v;
      received++;
      if (received % 100 === 0) await new Promise((resolve) => setImmediate(resolve)); // a slow consumer
    }
    await producing;
    await producer.close();
    const stats = rx.stats();
    assert.is(stats.sent, N);
    assert.is(received + stats.dropped, N, `${overflow}: received ${received} + dropped ${stats.dropped}`);
    if (overflow === "drop-oldest") assert.is(last, N - 1, "the newest message survives drop-oldest");
  }
}, { timeout: 120_000 });

test.run();
