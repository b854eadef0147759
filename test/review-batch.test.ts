/**
 * Review of batches (sendMany / sendManySync) under overflow policies: a
 * batch that stops mid-way because a send throws (overflow "error") must
 * leave the messages before it sent, counted in err.sent, and their
 * channel ends moved (not handed back to the sender while also in the ring).
 */
import { suite, assert } from "./_harness.js";
import { ChannelClosedError, ChannelFullError, createChannel, type RecvChannel } from "../src/index.js";

const test = suite("review-batch");

function caught(run: () => unknown): unknown {
  try {
    run();
  } catch (err) {
    return err;
  }
  throw new Error("expected a throw");
}

test("sendMany into a full channel under overflow 'error': err.sent counts the values that went in", async () => {
  const [rx, tx] = createChannel<number>({ capacity: 3, overflow: "error", name: "batch-error" });
  const err = await tx.sendMany([1, 2, 3, 4, 5]).then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.instance(err, ChannelFullError);
  assert.equal(rx.recvManySync(10), [1, 2, 3]);
  assert.is((err as { sent: number }).sent, 3, "err.sent must say how many went in (3 are delivered)");
});

test("sendManySync into a full channel under overflow 'error': err.sent counts the values that went in", () => {
  const [rx, tx] = createChannel<number>({ capacity: 2, overflow: "error", name: "batch-error-sync" });
  const err = caught(() => tx.sendManySync([1, 2, 3]));
  assert.instance(err, ChannelFullError);
  assert.equal(rx.recvManySync(10), [1, 2]);
  assert.is((err as { sent: number }).sent, 2);
});

test("ends inside the messages a failed batch did send belong to their receiver, not to the sender any more", async () => {
  const [rx, tx] = createChannel<RecvChannel<string>>({ capacity: 2, overflow: "error", name: "carrier" });
  const pairs = Array.from({ length: 3 }, (_, i) => createChannel<string>({ name: `inner-${i}` }));
  const err = await tx.sendMany(pairs.map(([r]) => r)).then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.instance(err, ChannelFullError);
  // The two that went in moved: using them here must fail; the third came back.
  assert.throws(() => pairs[0]![0].tryRecv(), ChannelClosedError, /moved/);
  assert.throws(() => pairs[1]![0].tryRecv(), ChannelClosedError, /moved/);
  assert.equal(pairs[2]![0].tryRecv(), { ok: false, closed: false });
  const got = rx.recvManySync(10);
  assert.is(got.length, 2);
  for (let i = 0; i < 2; i++) {
    pairs[i]![1].trySend(`hello ${i}`);
    assert.equal(got[i]!.tryRecv(), { ok: true, value: `hello ${i}` });
    assert.is(got[i]!.stats().receivers, 1, "one receive handle, the receiver's");
  }
});

test("sendMany with an aborted signal at capacity 0: the offer its batch made is taken back (nothing is received that err.sent does not count)", async () => {
  const [rx, tx] = createChannel<number>({ capacity: 0, name: "rendezvous-aborted" });
  const controller = new AbortController();
  controller.abort(new Error("stop"));
  const err = await tx.sendMany([1, 2], { signal: controller.signal }).then(
    () => undefined,
    (e: unknown) => e,
  );
  assert.is((err as Error).message, "stop");
  const sent = (err as { sent: number }).sent;
  const got = rx.tryRecv();
  const received = got.ok ? [got.value] : [];
  assert.is(received.length, sent, `err.sent is ${sent} but ${JSON.stringify(received)} was received`);
  const stats = rx.stats();
  assert.equal([stats.length, stats.sent - stats.received], [0, 0], "nothing left offered or counted");
});

test.run();
