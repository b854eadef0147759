/**
 * select / selectSync: exactly one case completes, the others are left
 * untouched; fair choice among ready cases; closed cases reject instead of
 * spinning; every capacity, rendezvous included; across interpreters.
 */
import { suite, assert } from "./_harness.js";
import { ChannelClosedError, create, createChannel, NotShareableError, select, selectSync, TimeoutError } from "../src/index.js";

const test = suite("select");

test("a ready recv case completes; the other is untouched", async () => {
  const [aRx, aTx] = createChannel<string>({ capacity: 4 });
  const [bRx] = createChannel<string>({ capacity: 4 });
  aTx.trySend("a1");
  const result = await select([bRx, aRx], { timeout: 5000 });
  assert.equal(result, { index: 1, value: "a1" });
  assert.is(bRx.stats().waitingReceivers, 0);
  assert.is(aRx.stats().waitingReceivers, 0);
});

test("selectSync: a send case on a channel with room", () => {
  const [rx, tx] = createChannel<number>({ capacity: 1 });
  const [otherRx] = createChannel<number>({ capacity: 1 });
  const result = selectSync([otherRx, [tx, 7]], { timeout: 1000 });
  assert.equal(result, { index: 1 });
  assert.equal(rx.tryRecv(), { ok: true, value: 7 });
});

test("nothing ready: TimeoutError, and nothing was sent or taken", async () => {
  const [aRx, aTx] = createChannel<number>({ capacity: 1 });
  const [bRx, bTx] = createChannel<number>({ capacity: 0 });
  aTx.trySend(1); // a is full
  await assert.rejects(select([[aTx, 2], [bTx, 3]], { timeout: 30 }), TimeoutError);
  assert.throws(() => selectSync([[aTx, 2], [bTx, 3]], { timeout: 0 }), TimeoutError);
  assert.equal(aRx.tryRecv(), { ok: true, value: 1 });
  assert.equal(aRx.tryRecv(), { ok: false, closed: false });
  assert.equal(bRx.tryRecv(), { ok: false, closed: false });
  assert.is(bRx.stats().waitingSenders, 0);
});

test("waits until any case becomes ready", async () => {
  const [aRx] = createChannel<number>({ capacity: 0 });
  const [bRx, bTx] = createChannel<number>({ capacity: 0 });
  const waiting = select([aRx, bRx], { timeout: 10_000 });
  await bTx.send(5, { timeout: 10_000 });
  assert.equal(await waiting, { index: 1, value: 5 });
});

test("a select send case completes a rendezvous with a waiting receiver", async () => {
  const [rx, tx] = createChannel<string>({ capacity: 0 });
  const [otherRx] = createChannel<string>({ capacity: 0 });
  const receiving = rx.recv({ timeout: 10_000 });
  const result = await select([otherRx, [tx, "hi"]], { timeout: 10_000 });
  assert.is(result.index, 1);
  assert.is(await receiving, "hi");
  // and the other way round: the select waits first, the receiver comes later
  const late = select([[tx, "later"]], { timeout: 10_000 });
  await new Promise((resolve) => setImmediate(resolve));
  assert.is(await rx.recv({ timeout: 10_000 }), "later");
  assert.equal(await late, { index: 0 });
});

test("no self-pairing: send and recv on the same rendezvous channel time out", async () => {
  const [rx, tx] = createChannel<number>({ capacity: 0 });
  assert.throws(() => selectSync([[tx, 1], rx], { timeout: 100 }), TimeoutError);
  assert.equal(rx.tryRecv(), { ok: false, closed: false });
  // on an unbounded channel the send case is chosen
  const [urx, utx] = createChannel<number>({ capacity: Infinity });
  assert.equal(selectSync([urx, [utx, 9]], { timeout: 100 }), { index: 1 });
  assert.equal(urx.tryRecv(), { ok: true, value: 9 });
});

test("an async select that starts taking a streamed message stops waiting on its other cases", async () => {
  const [bigRx, bigTx] = createChannel<Uint8Array>({ bufferBytes: 4096, maxBufferBytes: 4096, name: "big" });
  const [jobsRx, jobsTx] = createChannel<number>({ name: "jobs" });
  // Cases are tried in random order; the jobs case registers only when it comes first: 16 tries.
  for (let i = 0; i < 16; i++) {
    const sending = bigTx.send(new Uint8Array(100_000).fill(i)); // streams its first pieces, then waits for room
    const selecting = select([bigRx, jobsRx], { timeout: 20_000 }); // its first round claims the stream
    assert.is(jobsRx.stats().waitingReceivers, 0, `try ${i}: the jobs case was withdrawn when the select committed to the stream`);
    const result = await selecting;
    assert.is(result.index, 0);
    assert.is((result.value as Uint8Array).length, 100_000);
    assert.is((result.value as Uint8Array)[99_999], i);
    await sending;
  }
  assert.ok(jobsTx.trySend(1)); // untouched: still there for the next receiver
  assert.equal(jobsRx.tryRecv(), { ok: true, value: 1 });
});

test("fair: two always-ready channels are each chosen 45-55% of 10,000 times", () => {
  const [aRx, aTx] = createChannel<number>({ capacity: Infinity });
  const [bRx, bTx] = createChannel<number>({ capacity: Infinity });
  const n = 10_000;
  for (let i = 0; i < n; i++) {
    aTx.trySend(i);
    bTx.trySend(i);
  }
  let first = 0;
  for (let i = 0; i < n; i++) if (selectSync([aRx, bRx], { timeout: 1000 }).index === 0) first++;
  assert.ok(first > 0.45 * n && first < 0.55 * n, `case 0 chosen ${first} of ${n}`);
});

test("a closed recv case rejects with ChannelClosedError (no spinning)", async () => {
  const [aRx, aTx] = createChannel<number>({ capacity: 1 });
  const [bRx] = createChannel<number>({ capacity: 1 });
  aTx.close();
  await assert.rejects(select([aRx, bRx], { timeout: 5000 }), ChannelClosedError);
  assert.throws(() => selectSync([bRx, aRx]), ChannelClosedError);
  assert.is(bRx.stats().waitingReceivers, 0);
});

test("a send case whose receivers are gone rejects with ChannelClosedError", async () => {
  const [rx, tx] = createChannel<number>({ capacity: 1 });
  rx.close();
  await assert.rejects(select([[tx, 1]]), ChannelClosedError);
});

test("an unshareable send value fails before anything happens", async () => {
  const [rx, tx] = createChannel<unknown>({ capacity: 1 });
  await assert.rejects(select([rx, [tx, { f: () => 1 }]]), NotShareableError, /value\.f/);
  assert.is(rx.stats().waitingReceivers, 0);
  assert.throws(() => selectSync([]), RangeError);
});

test("abort: rejects with the reason, nothing taken", async () => {
  const [rx, tx] = createChannel<number>({ capacity: 1 });
  const controller = new AbortController();
  const waiting = select([rx], { signal: controller.signal });
  controller.abort(new Error("enough"));
  await assert.rejects(waiting, Error, /enough/);
  tx.trySend(3);
  assert.equal(rx.tryRecv(), { ok: true, value: 3 });
});

test("each send case delivers its own value, not the bytes of the case encoded after it", async () => {
  // Values of equal encoded length: a case sharing the encoder's scratch
  // with the next would deliver the next one's value, silently.
  for (const pick of [0, 1]) {
    const [aRx, aTx] = createChannel<{ which: string }>({ capacity: 0, name: "a" });
    const [bRx, bTx] = createChannel<{ which: string }>({ capacity: 0, name: "b" });
    const selecting = select([[aTx, { which: "A" }], [bTx, { which: "B" }]], { timeout: 10_000 });
    const got = await [aRx, bRx][pick]!.recv({ timeout: 10_000 });
    assert.equal(got, { which: ["A", "B"][pick] });
    assert.equal(await selecting, { index: pick });
  }
  const receiver = await create({ name: "b-receiver" });
  try {
    const [aRx, aTx] = createChannel<{ which: string }>({ capacity: 0, name: "a" });
    const [bRx, bTx] = createChannel<{ which: string }>({ capacity: 0, name: "b" });
    const [outRx, outTx] = createChannel<unknown>({ capacity: 1, name: "out" });
    const receiving = receiver.exec(`out.sendSync(b.recvSync({ timeout: 10000 }));`, { bind: { b: bRx, out: outTx } });
    const result = selectSync([[aTx, { which: "A" }], [bTx, { which: "B" }]], { timeout: 10_000 });
    assert.equal(result, { index: 1 });
    await receiving;
    assert.equal(await outRx.recv({ timeout: 10_000 }), { which: "B" });
    assert.is(aRx.stats().length, 0, "the other case was withdrawn");
  } finally {
    await receiver.terminate();
  }
});

test("exactly one completes when two senders race into one selector (capacity 0)", async () => {
  const receiver = await create({ name: "selector" });
  const s1 = await create({ name: "s1" });
  const s2 = await create({ name: "s2" });
  try {
    for (let round = 0; round < 20; round++) {
      const [aRx, aTx] = createChannel<string>({ capacity: 0 });
      const [bRx, bTx] = createChannel<string>({ capacity: 0 });
      const [outRx, outTx] = createChannel<unknown>({ capacity: Infinity });
      const selecting = receiver.exec(
        // After its one case, the selector closes both receive ends: the losing offer then fails at once (no timing involved).
        `import { selectSync } from "interpreters"; out.sendSync(selectSync([a, b], { timeout: 20000 })); a.close(); b.close(); out.close();`,
        { bind: { a: aRx, b: bRx, out: outTx.clone() } },
      );
      const sender = (interp: typeof s1, tx: typeof aTx, tag: string) =>
        interp.exec(`try { tx.sendSync("${tag}", { timeout: 20000 }); out.sendSync("${tag} delivered"); } catch (e) { out.sendSync("${tag} " + e.name); } out.close(); tx.close();`, {
          bind: { tx, out: outTx.clone() },
        });
      const sends = [sender(s1, aTx, "a"), sender(s2, bTx, "b")];
      outTx.close();
      await Promise.all([selecting, ...sends]);
      const results: unknown[] = [];
      for await (const r of outRx) results.push(r);
      const delivered = results.filter((r) => typeof r === "string" && r.endsWith("delivered"));
      const refused = results.filter((r) => typeof r === "string" && r.endsWith("ChannelClosedError"));
      assert.is(delivered.length, 1, JSON.stringify(results));
      assert.is(refused.length, 1, JSON.stringify(results));
      const chosen = results.find((r) => typeof r === "object") as { index: number; value: string };
      assert.is(chosen.value, ["a", "b"][chosen.index]);
      assert.ok((delivered[0] as string).startsWith(chosen.value));
    }
  } finally {
    await Promise.all([receiver, s1, s2].map((i) => i.terminate()));
  }
});

test("fan-in across interpreters at every capacity: every message once", async () => {
  for (const capacity of [0, 1, 7, Infinity]) {
    const producers = await Promise.all([0, 1, 2].map((i) => create({ name: `producer-${i}` })));
    try {
      const channels = producers.map(() => createChannel<number>({ capacity }));
      const runs = producers.map((p, i) =>
        p.exec(`for (let k = 0; k < 300; k++) out.sendSync(${i} * 1000 + k, { timeout: 20000 }); out.close();`, { bind: { out: channels[i]![1] } }),
      );
      const seen = new Set<number>();
      const open = channels.map((c) => c[0]);
      while (open.length > 0) {
        try {
          const { index, value } = await select(open, { timeout: 20_000 });
          assert.not.ok(seen.has(value as number), `duplicate ${value}`);
          seen.add(value as number);
          void index;
        } catch (err) {
          if (!(err instanceof ChannelClosedError)) throw err;
          // drop the closed channel(s) and go on with the rest
          for (let i = open.length - 1; i >= 0; i--) if (open[i]!.stats().closed) open.splice(i, 1);
        }
      }
      await Promise.all(runs);
      assert.is(seen.size, 900, `capacity ${capacity}`);
    } finally {
      await Promise.all(producers.map((p) => p.terminate()));
    }
  }
}, { timeout: 120_000 });

test.run();
