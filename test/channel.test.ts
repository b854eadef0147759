/**
 * Channel semantics in one thread (async API), for every capacity in the
 * matrix: rendezvous, fullness, FIFO, close with buffered items, timeouts,
 * abort, tryRecv/trySend. Cross-interpreter behaviour is in other files.
 */
import { suite, assert, withTimeout } from "./_harness.js";
import { ChannelClosedError, create, createChannel, MessageTooLargeError, NotShareableError, SendChannel, TimeoutError } from "../src/index.js";
import { control, mySlot, slotWord } from "../src/control.js";
import { endOf } from "../src/transfer.js";
import { R_FIRST, R_LAST, R_RAW_BUFFER, R_RAW_BYTES } from "../src/ring.js";
import { clearWait, publishWait, WaitOp, waitsSyncToReceive, waitsSyncToSend } from "../src/waiting.js";

const CAPACITIES = [0, 1, 2, 7, Infinity];
const test = suite("channel");

/** Resolves once `condition()` holds, checking on every macrotask turn (no fixed sleeps). */
async function until(condition: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`condition never held: ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

for (const capacity of CAPACITIES) {
  const label = `capacity ${capacity}`;

  test(`${label}: FIFO for one sender, every message once`, async () => {
    const [rx, tx] = createChannel<number>({ capacity });
    const received: number[] = [];
    const consumer = (async () => {
      for await (const value of rx) received.push(value);
    })();
    for (let i = 0; i < 500; i++) await tx.send(i);
    tx.close();
    await consumer;
    assert.equal(received, Array.from({ length: 500 }, (_, i) => i));
  });

  test(`${label}: buffered messages survive the senders' close, then ChannelClosedError`, async () => {
    const [rx, tx] = createChannel<string>({ capacity });
    const n = capacity === 0 ? 0 : Math.min(3, capacity);
    for (let i = 0; i < n; i++) assert.ok(tx.trySend(`m${i}`));
    tx.close();
    for (let i = 0; i < n; i++) assert.is(await rx.recv({ timeout: 5000 }), `m${i}`);
    await assert.rejects(rx.recv({ timeout: 5000 }), ChannelClosedError, /every send handle is closed/);
    // closed takes precedence over timed out, and never waits
    await assert.rejects(rx.recv({ timeout: 0 }), ChannelClosedError);
    assert.equal(rx.tryRecv(), { ok: false, closed: true });
    assert.ok(rx.stats().closed);
  });

  test(`${label}: recv times out on an empty channel, and a late message is still delivered`, async () => {
    const [rx, tx] = createChannel<number>({ capacity });
    await assert.rejects(rx.recv({ timeout: 30 }), TimeoutError, /timed out after 30 ms/);
    assert.throws(() => rx.recvSync({ timeout: 0 }), TimeoutError);
    assert.is(rx.stats().waitingReceivers, 0);
    const later = rx.recv({ timeout: 10_000 });
    await tx.send(42, { timeout: 10_000 });
    assert.is(await later, 42);
  });

  test(`${label}: an aborted recv takes nothing, the next recv gets the message`, async () => {
    const [rx, tx] = createChannel<number>({ capacity });
    const controller = new AbortController();
    const aborted = rx.recv({ signal: controller.signal });
    controller.abort(new Error("stop waiting"));
    await assert.rejects(aborted, Error, /stop waiting/);
    assert.is(rx.stats().waitingReceivers, 0);
    const sent = tx.send(7, { timeout: 10_000 });
    assert.is(await rx.recv({ timeout: 10_000 }), 7);
    await sent;
    // an already-aborted signal rejects at once and takes nothing
    const done = new AbortController();
    done.abort("already");
    if (capacity !== 0) {
      await tx.send(8);
      await assert.rejects(() => rx.recv({ signal: done.signal }).catch((reason) => Promise.reject(new Error(String(reason)))), Error, /already/);
      assert.is(await rx.recv({ timeout: 10_000 }), 8);
    }
  });

  test(`${label}: tryRecv says empty (not closed) on an open empty channel`, () => {
    const [rx, tx] = createChannel<number>({ capacity });
    assert.equal(rx.tryRecv(), { ok: false, closed: false });
    tx.close(); // used after the check: a send handle dropped unused may be closed by the garbage collector
  });

  test(`${label}: after every recv handle closes, senders fail at once`, async () => {
    const [rx, tx] = createChannel<number>({ capacity });
    const blocked = capacity === 0 ? tx.send(1) : undefined;
    rx.close();
    if (blocked) await assert.rejects(blocked, ChannelClosedError);
    assert.throws(() => tx.trySend(2), ChannelClosedError, /every receive handle is closed/);
    await assert.rejects(tx.send(3, { timeout: 5000 }), ChannelClosedError);
    assert.throws(() => tx.sendSync(4), ChannelClosedError);
    assert.ok(tx.stats().closed);
  });
}

test("capacity 0: trySend fails with no waiting receiver and leaves nothing behind", async () => {
  const [rx, tx] = createChannel<number>({ capacity: 0 });
  assert.is(tx.trySend(1), false);
  assert.equal(rx.tryRecv(), { ok: false, closed: false });
  await assert.rejects(rx.recv({ timeout: 20 }), TimeoutError);
  assert.is(tx.stats().length, 0);
});

test("capacity 0: trySend succeeds when a receiver is already waiting", async () => {
  const [rx, tx] = createChannel<number>({ capacity: 0 });
  const waiting = rx.recv({ timeout: 10_000 });
  await until(() => rx.stats().waitingReceivers === 1, "receiver parked");
  assert.ok(tx.trySend(8));
  assert.is(await waiting, 8);
});

test("capacity 0: send completes only after a receiver has taken the message", async () => {
  const [rx, tx] = createChannel<string>({ capacity: 0 });
  let sent = false;
  const sending = tx.send("hello").then(() => (sent = true));
  await until(() => tx.stats().waitingSenders === 1, "sender parked");
  assert.is(sent, false);
  assert.is(await rx.recv({ timeout: 10_000 }), "hello");
  await sending;
  assert.ok(sent);
});

test("capacity 0: a timed-out send is withdrawn and never received", async () => {
  const [rx, tx] = createChannel<number>({ capacity: 0 });
  await assert.rejects(tx.send(99, { timeout: 20 }), TimeoutError);
  assert.equal(rx.tryRecv(), { ok: false, closed: false });
  assert.is(tx.stats().length, 0);
  assert.is(tx.stats().sent, 0);
  const late = rx.recv({ timeout: 10_000 });
  await tx.send(100, { timeout: 10_000 });
  assert.is(await late, 100);
});

test("capacity 0: tryRecv takes from a sender that is waiting", async () => {
  const [rx, tx] = createChannel<number>({ capacity: 0 });
  const sending = tx.send(5);
  await until(() => tx.stats().waitingSenders === 1, "sender parked");
  assert.equal(rx.tryRecv(), { ok: true, value: 5 });
  await sending;
});

for (const capacity of [1, 2, 7]) {
  test(`capacity ${capacity}: exactly n trySends fit; one recv makes room for one more`, async () => {
    const [rx, tx] = createChannel<number>({ capacity });
    for (let i = 0; i < capacity; i++) assert.ok(tx.trySend(i), `trySend ${i}`);
    assert.is(tx.trySend(-1), false);
    assert.is(tx.stats().length, capacity);
    await assert.rejects(tx.send(-2, { timeout: 20 }), TimeoutError);
    assert.is(await rx.recv(), 0);
    assert.ok(tx.trySend(capacity));
    assert.is(tx.trySend(-3), false);
    const rest: number[] = [];
    for (let i = 0; i < capacity; i++) rest.push(await rx.recv());
    assert.equal(rest, Array.from({ length: capacity }, (_, i) => i + 1));
  });

  test(`capacity ${capacity}: a send on a full channel waits for room`, async () => {
    const [rx, tx] = createChannel<number>({ capacity });
    for (let i = 0; i < capacity; i++) await tx.send(i);
    let done = false;
    const waiting = tx.send(capacity).then(() => (done = true));
    await until(() => tx.stats().waitingSenders === 1, "sender parked");
    assert.is(done, false);
    assert.is(await rx.recv(), 0);
    await waiting;
    for (let i = 1; i <= capacity; i++) assert.is(await rx.recv(), i);
  });
}

test("capacity Infinity: 10,000 sends with no receiver, then all received in order", async () => {
  const [rx, tx] = createChannel<number>({ capacity: Infinity });
  for (let i = 0; i < 10_000; i++) assert.ok(tx.trySend(i));
  for (let i = 0; i < 10_000; i++) {
    const got = rx.tryRecv();
    if (!got.ok || got.value !== i) assert.unreachable(`message ${i}: ${JSON.stringify(got)}`);
  }
  assert.equal(rx.tryRecv(), { ok: false, closed: false });
});

test("capacity Infinity: the byte budget is the only limit", async () => {
  const [rx, tx] = createChannel<Uint8Array>({ capacity: Infinity, bufferBytes: 1024, maxBufferBytes: 4096 });
  let accepted = 0;
  while (tx.trySend(new Uint8Array(100))) accepted++;
  assert.ok(accepted > 10 && accepted < 40, `accepted ${accepted}`);
  assert.is(tx.stats().maxBufferBytes, 4096);
  await assert.rejects(tx.send(new Uint8Array(100), { timeout: 20 }), TimeoutError);
  await rx.recv();
  assert.ok(tx.trySend(new Uint8Array(100)));
});

test("stats count handles, messages and waiters", async () => {
  const [rx, tx] = createChannel<number>({ capacity: 4, name: "stats" });
  const tx2 = tx.clone();
  await tx.send(1);
  await tx2.send(2);
  const stats = rx.stats();
  assert.is(stats.name, "stats");
  assert.is(stats.capacity, 4);
  assert.is(stats.senders, 2);
  assert.is(stats.receivers, 1);
  assert.is(stats.length, 2);
  assert.is(stats.sent, 2);
  assert.ok(stats.bytes > 0);
  await rx.recv();
  assert.is(rx.stats().received, 1);
  tx.close();
  assert.is(rx.stats().senders, 1);
  assert.is(rx.stats().closed, false);
  tx2.close();
  assert.is(rx.stats().closed, false); // one message still buffered
  await rx.recv();
  assert.is(rx.stats().closed, true);
});

/**
 * Waits (polling each millisecond, at most 20 s) until `count` receive
 * operations (or send operations, for `side` "senders") are registered on
 * the channel of `end`: parties in other interpreters spin first, then
 * register and sleep.
 */
async function receiversRegistered(
  end: { stats(): { waitingReceivers: number; waitingSenders: number } },
  count: number,
  what: string,
  side: "receivers" | "senders" = "receivers",
): Promise<void> {
  const registered = () => (side === "receivers" ? end.stats().waitingReceivers : end.stats().waitingSenders);
  await withTimeout(
    (async () => {
      while (registered() !== count) await new Promise((resolve) => setTimeout(resolve, 1));
    })(),
    20_000,
    what,
  );
}

test("a party with async operations pending never counts as a sync waiter, whose one wake-up must be used at once", async () => {
  // A sender or receiver wakes only as many sync waiters as there are free
  // slots or messages (WAKE_FOR_ROOM, WAKE_FOR_MESSAGE); a party whose
  // registration may be an async operation, attempted only when its event
  // loop runs again, must not be counted among them (it is woken as well).
  const [rx, tx] = createChannel<string>({ capacity: 1, name: "counted" });
  assert.ok(tx.trySend("fills the one slot"));
  try {
    publishWait(WaitOp.SEND, tx.id, true); // as a sendSync with a timeout would (never a deadlock candidate)
    assert.ok(waitsSyncToSend(mySlot, tx.id), "a sendSync on the channel and nothing else pending: counted");
    const pendingSend = tx.send("waits for room"); // registered on the channel, driven by this thread's pump
    pendingSend.catch(() => {}); // awaited below; a failed assertion must not leave it unhandled
    assert.not.ok(waitsSyncToSend(mySlot, tx.id), "with an async send pending: not counted");
    publishWait(WaitOp.RECV, rx.id, true);
    assert.not.ok(waitsSyncToReceive(mySlot, rx.id), "with an async operation pending: not counted as a receiver either");
    clearWait();
    assert.is(await rx.recv({ timeout: 5000 }), "fills the one slot");
    await withTimeout(pendingSend, 5000, "the pending send");
    assert.is(await rx.recv({ timeout: 5000 }), "waits for room");
    publishWait(WaitOp.RECV, rx.id, true);
    assert.ok(waitsSyncToReceive(mySlot, rx.id), "nothing pending any more: counted again");
  } finally {
    clearWait();
    rx.close();
    tx.close();
  }
});

test("a message a probing receiver will take does not wake a sleeping receiver; a message beyond what probers take does", async () => {
  const [rx, tx] = createChannel<number>({ name: "probed" });
  const [acks, acksTx] = createChannel<number>({ capacity: 1 });
  const memory = endOf(rx)!.memory;
  const sleeper = await create({ name: "sleeper" });
  try {
    const served = sleeper.exec("out.sendSync(rx.recvSync({ timeout: 30_000 }))", { bind: { rx: rx.clone(), out: acksTx } });
    served.catch(() => {});
    // The sleeper spins first (unregistered), then registers and sleeps.
    await receiversRegistered(rx, 1, "the sleeper to register");
    const slots: number[] = [];
    memory.collectWaiters("recv", slots);
    assert.is(slots.length, 1);
    const parkWord = slotWord(slots[0]!, 2); // the party's park word (control.ts slot table)
    const parked = Atomics.load(control, parkWord);
    // Main poses as a receiver spinning for a message here (runSync sets this bit while it spins).
    memory.setProbing(mySlot, true);
    try {
      assert.ok(tx.trySend(1));
      assert.is(Atomics.load(control, parkWord), parked, "one message, one prober: the sleeper is left asleep");
      assert.ok(tx.trySend(2));
      assert.is.not(Atomics.load(control, parkWord), parked, "two messages, one prober: the sleeper is woken");
    } finally {
      memory.setProbing(mySlot, false);
    }
    assert.is(await acks.recv({ timeout: 20_000 }), 1);
    await withTimeout(served, 20_000, "the sleeper's exec");
    assert.equal(rx.tryRecv(), { ok: true, value: 2 });
  } finally {
    await sleeper.close();
  }
});

test("one message on a channel with several sleeping receivers wakes one of them, not all", async () => {
  const [rx, tx] = createChannel<number>({ name: "pool" });
  const [acks, acksTx] = createChannel<[string, number]>();
  const memory = endOf(rx)!.memory;
  const sleepers = await Promise.all([create({ name: "sleeper-a" }), create({ name: "sleeper-b" })]);
  try {
    const serving = sleepers.map((sleeper) =>
      sleeper.exec("for (const m of rx) out.sendSync([name, m]); out.close();", { bind: { rx: rx.clone(), out: acksTx.clone(), name: sleeper.name } }),
    );
    for (const s of serving) s.catch(() => {});
    rx.close();
    acksTx.close();
    await receiversRegistered(tx, 2, "both sleepers to register");
    const slots: number[] = [];
    memory.collectWaiters("recv", slots);
    assert.is(slots.length, 2);
    const parked = slots.map((slot) => Atomics.load(control, slotWord(slot, 2)));
    assert.ok(tx.trySend(1));
    const moved = slots.filter((slot, i) => Atomics.load(control, slotWord(slot, 2)) !== parked[i]);
    assert.is(moved.length, 1, "one message wakes one sleeper");
    const [first] = await acks.recv({ timeout: 20_000 });
    // Two more at once: whoever is asleep now is woken for them (both get served, none is left behind).
    assert.ok(tx.trySend(2));
    assert.ok(tx.trySend(3));
    const later = [await acks.recv({ timeout: 20_000 }), await acks.recv({ timeout: 20_000 })].map(([, m]) => m).sort();
    assert.equal(later, [2, 3]);
    assert.ok(["sleeper-a", "sleeper-b"].includes(first));
    tx.close();
    await withTimeout(Promise.all(serving), 20_000, "the sleepers' execs");
  } finally {
    tx.close(); // ends the sleepers' loops if an assertion failed first
    await Promise.all(sleepers.map((s) => s.close()));
  }
});

test("a message taken from a full bounded channel with several sleeping senders wakes one of them, not all", async () => {
  const [rx, tx] = createChannel<string>({ capacity: 1, name: "full" });
  const memory = endOf(rx)!.memory;
  assert.ok(tx.trySend("first"));
  const senders = await Promise.all([create({ name: "sender-a" }), create({ name: "sender-b" })]);
  try {
    const sending = senders.map((sender) => sender.exec("tx.sendSync(name, { timeout: 30_000 });", { bind: { tx: tx.clone(), name: sender.name } }));
    for (const s of sending) s.catch(() => {});
    await receiversRegistered(rx, 2, "both senders to register", "senders");
    const slots: number[] = [];
    memory.collectWaiters("send", slots);
    assert.is(slots.length, 2);
    const parked = slots.map((slot) => Atomics.load(control, slotWord(slot, 2)));
    assert.equal(rx.tryRecv(), { ok: true, value: "first" });
    const moved = slots.filter((slot, i) => Atomics.load(control, slotWord(slot, 2)) !== parked[i]);
    assert.is(moved.length, 1, "one free slot wakes one sleeping sender");
    // Each message taken frees the slot for the other: both get through, none is left behind.
    const got = [await rx.recv({ timeout: 20_000 }), await rx.recv({ timeout: 20_000 })].sort();
    assert.equal(got, ["sender-a", "sender-b"]);
    await withTimeout(Promise.all(sending), 20_000, "the senders' execs");
  } finally {
    rx.close(); // a sender still blocked (an assertion failed first) gets ChannelClosedError
    await Promise.all(senders.map((s) => s.close()));
  }
});

test("a receive pending on a busy thread does not absorb the wake-up that a sleeping receiver needs", async () => {
  const [rx, tx] = createChannel<number>({ name: "busy-and-asleep" });
  const [go, goTx] = createChannel<number>({ capacity: 1 });
  const [acks, acksTx] = createChannel<number>({ capacity: 1 });
  const [sender, sleeper] = await Promise.all([create({ name: "sender" }), create({ name: "sleeper" })]);
  const controller = new AbortController();
  try {
    const sending = sender.exec("go.recvSync({ timeout: 30_000 }); tx.sendSync(1);", { bind: { go, tx: tx.clone() } });
    const serving = sleeper.exec("out.sendSync(rx.recvSync({ timeout: 30_000 }))", { bind: { rx: rx.clone(), out: acksTx } });
    sending.catch(() => {});
    serving.catch(() => {});
    // Main registers an async receive, then stays busy: it blocks in a sync
    // receive on another channel, so its pending receive cannot run.
    const mine = rx.recv({ signal: controller.signal });
    mine.catch(() => {});
    await receiversRegistered(rx, 2, "main and the sleeper to register");
    assert.ok(goTx.trySend(1));
    // The sender's one message must reach the sleeper, which is the one waiting to take it.
    assert.is(acks.recvSync({ timeout: 20_000 }), 1);
    controller.abort();
    await assert.rejects(mine, DOMException, /abort/i);
    await withTimeout(Promise.all([sending, serving]), 20_000, "the sender's and sleeper's execs");
  } finally {
    controller.abort();
    await Promise.all([sender.close(), sleeper.close()]);
  }
});

test("a selectSync woken for a message that completes another case instead passes the wake-up on", async () => {
  // Each round: a selectSync on [rx, other] and a recvSync on rx both sleep; main sends
  // one message on each. When rx's wake-up goes to the selector and it takes `other`
  // (cases are tried in random order), the selector then waits for main's go-ahead, so
  // the message on rx can only reach the sleeper: through the wake-up the selector must
  // pass on. Over 24 rounds that case comes up with near certainty (each round it is
  // about even odds that the selector is the one woken, and even odds which case it takes).
  const rounds = 24;
  const [rx, tx] = createChannel<number>({ name: "select-or-sleeper" });
  const [other, otherTx] = createChannel<number>({ name: "other" });
  const [goOn, goOnTx] = createChannel<number>();
  const [acks, acksTx] = createChannel<string>();
  const [selector, sleeper] = await Promise.all([create({ name: "selector" }), create({ name: "sleeper" })]);
  let passedOn = 0;
  try {
    const selecting = selector.exec(
      `import { selectSync } from "interpreters";
       for (;;) {
         let r;
         try { r = selectSync([rx, other], { timeout: 30_000 }); } catch (e) { if (e.name === "ChannelClosedError") break; throw e; }
         out.sendSync((r.index === 0 ? "selector took rx " : "selector took other ") + r.value);
         goOn.recvSync({ timeout: 30_000 });
       }`,
      { bind: { rx: rx.clone(), other, goOn, out: acksTx.clone() } },
    );
    const sleeping = sleeper.exec(`for (const m of rx) out.sendSync("sleeper took rx " + m);`, { bind: { rx: rx.clone(), out: acksTx.clone() } });
    selecting.catch(() => {});
    sleeping.catch(() => {});
    rx.close();
    acksTx.close();
    for (let round = 0; round < rounds; round++) {
      await receiversRegistered(tx, 2, `round ${round}: the selector and the sleeper to register`);
      assert.ok(tx.trySend(round));
      assert.ok(otherTx.trySend(round));
      let rxTaken = false;
      let otherTaken = false;
      while (!(rxTaken && otherTaken)) {
        const ack = await acks.recv({ timeout: 20_000 });
        if (ack === `selector took rx ${round}`) {
          rxTaken = true;
          goOnTx.trySend(round); // `other` can only go to the selector: let it go on
        } else if (ack === `selector took other ${round}`) {
          otherTaken = true;
        } else if (ack === `sleeper took rx ${round}`) {
          rxTaken = true;
          if (otherTaken) passedOn++;
        } else {
          assert.unreachable(`round ${round}: unexpected ${ack}`);
        }
      }
      if (!goOnTx.stats().length && otherTaken) goOnTx.trySend(round);
    }
    otherTx.close();
    tx.close();
    goOnTx.trySend(-1);
    await withTimeout(Promise.all([selecting, sleeping]), 20_000, "the selector's and sleeper's execs");
    console.log(`    (${passedOn} of ${rounds} rounds: the selector took the other message first and the sleeper got rx)`);
  } finally {
    tx.close();
    otherTx.close();
    goOnTx.close();
    await Promise.all([selector.close(), sleeper.close()]);
  }
});

test("closing the send handle of a send still streaming withdraws the stream: other senders and the receiver go on", async () => {
  const [rx, tx] = createChannel<Uint8Array | number>({ bufferBytes: 4096, maxBufferBytes: 4096, name: "half-streamed" });
  const tx2 = tx.clone();
  const big = tx.send(new Uint8Array(100_000)); // streams its first pieces, then waits for room
  tx.close();
  await assert.rejects(big, ChannelClosedError, /closed/);
  const next = rx.recv({ timeout: 10_000 });
  await tx2.send(1, { timeout: 10_000 });
  assert.is(await next, 1); // no part of the withdrawn message is ever received
  assert.is(rx.stats().length, 0);
});

test("closing one of several send handles does not close the channel", async () => {
  const [rx, tx] = createChannel<number>({ capacity: 2 });
  const other = tx.clone();
  tx.close();
  tx.close(); // idempotent
  assert.throws(() => tx.trySend(1), ChannelClosedError, /this send handle is closed/);
  assert.throws(() => tx.clone(), ChannelClosedError);
  assert.ok(other.trySend(2));
  assert.is(await rx.recv(), 2);
});

test("a recv in progress on a handle that gets closed fails", async () => {
  const [rx, tx] = createChannel<number>({ capacity: 1 });
  const pending = rx.recv();
  rx.close();
  await assert.rejects(pending, ChannelClosedError, /this recv handle is closed/);
  tx.close();
});

test("invalid options are refused with RangeError", () => {
  for (const capacity of [-1, 1.5, NaN, -Infinity, "3" as unknown as number]) {
    assert.throws(() => createChannel({ capacity }), RangeError, /capacity/);
  }
  for (const key of ["bufferBytes", "maxBufferBytes", "maxMessageBytes"] as const) {
    for (const bad of [0, -5, 1.5, NaN]) assert.throws(() => createChannel({ [key]: bad }), RangeError, new RegExp(key));
  }
  assert.throws(() => createChannel({ bufferBytes: 8192, maxBufferBytes: 4096 }), RangeError, /must not exceed/);
});

test("invalid timeouts are refused with RangeError", async () => {
  const [rx, tx] = createChannel<number>({ capacity: 1 });
  await assert.rejects(rx.recv({ timeout: -1 }), RangeError);
  await assert.rejects(rx.recv({ timeout: NaN }), RangeError);
  assert.throws(() => rx.recvSync({ timeout: -5 }), RangeError);
  await assert.rejects(tx.send(1, { timeout: NaN }), RangeError);
  assert.equal(rx.tryRecv(), { ok: false, closed: false }); // nothing was sent
});

test("unshareable values fail with NotShareableError naming the path; the channel is unchanged", async () => {
  const [rx, tx] = createChannel<unknown>({ capacity: 4 });
  const err = assert.throws(() => tx.trySend({ handlers: [1, 2, () => 3] }), NotShareableError, /value\.handlers\[2\]/);
  assert.is((err as NotShareableError).path, "value.handlers[2]");
  await assert.rejects(tx.send(Symbol("s")), NotShareableError);
  assert.throws(() => tx.sendSync({ a: { b: new WeakMap() } }), NotShareableError, /value\.a\.b/);
  assert.is(tx.stats().length, 0);
  assert.is(tx.stats().sent, 0);
  await tx.send("fine");
  assert.is(await rx.recv(), "fine");
});

test("maxMessageBytes: a larger message fails at once, the channel stays usable", async () => {
  const [rx, tx] = createChannel<Uint8Array>({ capacity: 2, maxMessageBytes: 1000 });
  await assert.rejects(tx.send(new Uint8Array(2000)), MessageTooLargeError, /maxMessageBytes \(1000\)/);
  assert.throws(() => tx.trySend(new Uint8Array(1001)), MessageTooLargeError);
  assert.is(tx.stats().length, 0);
  await tx.send(new Uint8Array(10));
  assert.is((await rx.recv()).length, 10);
});

test("a 16 MiB message streams through a 64 KiB ring and arrives whole", async () => {
  const [rx, tx] = createChannel<Uint8Array>({ capacity: 1, bufferBytes: 65536, maxBufferBytes: 65536 });
  const big = new Uint8Array(16 * 1024 * 1024);
  for (let i = 0; i < big.length; i += 4096) big[i] = (i / 4096) & 0xff;
  big[big.length - 1] = 0xab;
  const receiving = rx.recv({ timeout: 60_000 });
  await tx.send(big, { timeout: 60_000 });
  const got = await receiving;
  assert.is(got.length, big.length);
  assert.ok(Buffer.compare(Buffer.from(got.buffer, got.byteOffset, got.length), Buffer.from(big)) === 0, "bytes differ");
  assert.ok(tx.stats().maxBufferBytes === 65536);
  assert.is(tx.stats().length, 0);
});

test("a top-level Uint8Array or ArrayBuffer travels as its bytes alone, 8-aligned, and arrives as a fresh exact copy", async () => {
  // Shared-memory copies go byte by byte (7-8x slower) unless both sides
  // share their alignment mod 8, so raw payloads carry no tag byte in front.
  const [rx, tx] = createChannel<Uint8Array | ArrayBuffer>({ capacity: Infinity, name: "raw" });
  const memory = endOf(rx)!.memory;
  const pattern = new Uint8Array(5003).map((_, i) => (i * 7 + 3) & 255);
  const cases: Array<{ value: Uint8Array | ArrayBuffer; kind: number; bytes: Uint8Array }> = [
    { value: pattern.subarray(0, 104), kind: R_RAW_BYTES, bytes: pattern.subarray(0, 104) },
    { value: pattern.subarray(3), kind: R_RAW_BYTES, bytes: pattern.subarray(3) }, // misaligned source, realigned on the way
    { value: pattern.subarray(5, 9), kind: R_RAW_BYTES, bytes: pattern.subarray(5, 9) }, // short and misaligned: as it is
    { value: pattern.slice(0, 24).buffer, kind: R_RAW_BUFFER, bytes: pattern.subarray(0, 24) },
    { value: new Uint8Array(0), kind: R_RAW_BYTES, bytes: new Uint8Array(0) },
  ];
  const received: Uint8Array[] = [];
  for (const { value, kind, bytes } of cases) {
    assert.ok(tx.trySend(value));
    const at = memory.headRecord();
    assert.is(memory.recordFlags(at), R_FIRST | R_LAST | kind, `flags of a ${bytes.length}-byte ${kind === R_RAW_BYTES ? "Uint8Array" : "ArrayBuffer"}`);
    assert.is(memory.recordLength(at), bytes.length, "the payload is the value's bytes, nothing in front");
    assert.equal([...memory.payload(at)], [...bytes]);
    const got = rx.tryRecv();
    assert.ok(got.ok);
    const view = kind === R_RAW_BYTES ? (got.value as Uint8Array) : new Uint8Array(got.value as ArrayBuffer);
    assert.ok(kind === R_RAW_BYTES ? got.value instanceof Uint8Array : got.value instanceof ArrayBuffer, "the value's type");
    assert.is(view.byteOffset, 0);
    assert.is(view.buffer.byteLength, bytes.length, "a buffer of its own, exactly as long");
    assert.equal([...view], [...bytes]);
    received.push(view);
  }
  received[0]![0] = 99; // copies, not views of one scratch buffer or of the sender's array
  assert.is(received[1]![0], pattern[3]);
  assert.is(pattern[0], 3);
});

test("a woken sender whose message needs more bytes than are free does not keep the wake-up a smaller message needs", async () => {
  // Capacity 2 in a 256-byte ring: after one take there is a slot and 144
  // bytes; "big" (a 176-byte record) does not fit, "small" (24) does.
  const [rx, tx] = createChannel<Uint8Array>({ capacity: 2, bufferBytes: 256, maxBufferBytes: 256, name: "mixed" });
  const [done, doneTx] = createChannel<string>({ capacity: 4, name: "done" });
  const memory = endOf(rx)!.memory;
  assert.ok(tx.trySend(new Uint8Array(96)) && tx.trySend(new Uint8Array(96)), "two 112-byte records: full by count");
  const senders = await Promise.all([create({ name: "big" }), create({ name: "small" })]);
  try {
    const code = "tx.sendSync(new Uint8Array(size), { timeout: 30_000 }); out.sendSync(name);";
    const sending = [
      senders[0]!.exec(code, { bind: { tx: tx.clone(), out: doneTx.clone(), size: 160, name: "big" } }),
    ];
    await receiversRegistered(rx, 1, "big to register", "senders");
    const bigSlot: number[] = [];
    memory.collectWaiters("send", bigSlot);
    sending.push(senders[1]!.exec(code, { bind: { tx: tx.clone(), out: doneTx.clone(), size: 8, name: "small" } }));
    for (const s of sending) s.catch(() => {});
    await receiversRegistered(rx, 2, "small to register", "senders");
    const slots: number[] = [];
    memory.collectWaiters("send", slots);
    memory.wakeRotation = slots.indexOf(bigSlot[0]!); // this thread's one wake-up for the free slot goes to "big"
    assert.ok(rx.tryRecv().ok);
    assert.is(await done.recv({ timeout: 10_000 }), "small", "the small message went in while the big one waits for bytes");
    assert.ok(rx.tryRecv().ok && rx.tryRecv().ok, "room for the big one");
    assert.is(await done.recv({ timeout: 10_000 }), "big");
    await withTimeout(Promise.all(sending), 20_000, "the senders' execs");
  } finally {
    rx.close();
    await Promise.all(senders.map((s) => s.close()));
  }
});

test("messages of every size around the word-copy limit arrive intact, one after another", async () => {
  // Small payloads are copied out word by word into a reused scratch buffer,
  // larger ones through a view: each size, odd ones included, on both sides of the limit.
  const [rx, tx] = createChannel<{ n: number; s: string }>({ capacity: Infinity, name: "sizes" });
  for (let n = 0; n <= 300; n++) assert.ok(tx.trySend({ n, s: String.fromCharCode(97 + (n % 26)).repeat(n) }));
  for (let n = 0; n <= 300; n++) {
    const got = rx.tryRecv();
    assert.ok(got.ok && got.value.n === n && got.value.s === String.fromCharCode(97 + (n % 26)).repeat(n), `message ${n}`);
  }
});

test("small messages of every size, with and without channel ends inside, are copied into a wrapping ring exactly (word copies on the send side)", async () => {
  // An encoded body up to 128 bytes goes into the ring a 32-bit word at a
  // time, after the attachment table if there is one; a small ring puts the
  // records at every offset and wraps them, two in flight at a time.
  const [rx, tx] = createChannel<{ n: number; s: string; end?: unknown }>({ bufferBytes: 1024, maxBufferBytes: 1024, name: "word-copies" });
  const [, spareTx] = createChannel<number>({ name: "carried" });
  const text = (n: number): string => Array.from({ length: n }, (_, i) => String.fromCharCode(32 + ((n * 7 + i * 13) % 95))).join("");
  const message = (n: number) => (n % 3 === 0 ? { n, s: text(n), end: spareTx.clone() } : { n, s: text(n) });
  const check = (n: number): void => {
    const got = rx.tryRecv();
    assert.ok(got.ok, `message ${n} is there`);
    if (!got.ok) return;
    assert.is(got.value.n, n);
    assert.is(got.value.s, text(n), `message ${n}'s text`);
    if (n % 3 === 0) {
      assert.ok(got.value.end instanceof SendChannel, `message ${n} carries a send end`);
      (got.value.end as SendChannel<number>).close();
    } else {
      assert.is(got.value.end, undefined);
    }
  };
  for (let n = 0; n <= 150; n += 2) {
    assert.ok(tx.trySend(message(n)), `send ${n}`);
    assert.ok(tx.trySend(message(n + 1)), `send ${n + 1}`);
    check(n);
    check(n + 1);
  }
  spareTx.close();
});

test("a raw Uint8Array or ArrayBuffer streamed through a small ring arrives whole, as its type", async () => {
  const [rx, tx] = createChannel<Uint8Array | ArrayBuffer>({ capacity: 1, bufferBytes: 4096, maxBufferBytes: 4096, name: "raw-stream" });
  const big = new Uint8Array(100_003).map((_, i) => (i * 13) & 255);
  for (const value of [big, big.subarray(1), big.slice().buffer]) {
    const receiving = rx.recv({ timeout: 10_000 });
    await tx.send(value, { timeout: 10_000 });
    const got = await receiving;
    const expected = value instanceof ArrayBuffer ? new Uint8Array(value) : value;
    const view = value instanceof ArrayBuffer ? new Uint8Array(got as ArrayBuffer) : (got as Uint8Array);
    assert.ok(value instanceof ArrayBuffer ? got instanceof ArrayBuffer : got instanceof Uint8Array, "the value's type");
    assert.is(view.buffer.byteLength, expected.length);
    assert.ok(Buffer.compare(Buffer.from(view.buffer, view.byteOffset, view.length), Buffer.from(expected.buffer, expected.byteOffset, expected.length)) === 0, "bytes differ");
  }
});

test("an unbounded channel grows under a stalled receiver, in order, nothing lost", async () => {
  const [rx, tx] = createChannel<{ i: number; pad: string }>({ capacity: Infinity, bufferBytes: 4096 });
  const pad = "x".repeat(200);
  for (let i = 0; i < 20_000; i++) assert.ok(tx.trySend({ i, pad }));
  assert.ok(tx.stats().bytes > 4 * 1024 * 1024, `ring holds ${tx.stats().bytes} bytes`);
  for (let i = 0; i < 20_000; i++) {
    const got = rx.tryRecv();
    assert.ok(got.ok && got.value.i === i && got.value.pad === pad, `message ${i}`);
  }
  assert.is(rx.stats().length, 0);
});

test("growth while wrapped keeps order (interleaved send/recv)", async () => {
  const [rx, tx] = createChannel<number[]>({ capacity: Infinity, bufferBytes: 256 });
  let next = 0;
  let expected = 0;
  for (let round = 0; round < 200; round++) {
    for (let k = 0; k < (round % 7) + 1; k++) assert.ok(tx.trySend([next++, round]));
    for (let k = 0; k < (round % 5); k++) {
      const got = rx.tryRecv();
      if (!got.ok) break;
      assert.is(got.value[0], expected++);
    }
  }
  while (expected < next) {
    const got = rx.tryRecv();
    assert.ok(got.ok);
    assert.is((got as { value: number[] }).value[0], expected++);
  }
});

test("an empty ring left mid-way takes a message that fits only from offset 0 (repositioned), or only after growing", () => {
  // Nearly the ring's size, with nothing buffered: repositioned to 0 (no growth allowed).
  const [rx, tx] = createChannel<Uint8Array>({ bufferBytes: 1024, maxBufferBytes: 1024 });
  assert.ok(tx.trySend(new Uint8Array(600)));
  assert.is(rx.tryRecv().ok, true);
  const nearlyAll = new Uint8Array(1000).fill(9);
  assert.ok(tx.trySend(nearlyAll), "a 1000-byte message into an empty 1024-byte ring whose tail is at 616");
  assert.equal(rx.tryRecv(), { ok: true, value: nearlyAll });
  // Larger than the ring: repositioning is not enough, the ring must grow as well.
  const [rx2, tx2] = createChannel<Uint8Array>({ bufferBytes: 1024 });
  assert.ok(tx2.trySend(new Uint8Array(600)));
  assert.is(rx2.tryRecv().ok, true);
  const larger = new Uint8Array(2000).fill(5);
  assert.ok(tx2.trySend(larger), "a 2000-byte message into an empty 1024-byte ring that may grow");
  assert.equal(rx2.tryRecv(), { ok: true, value: larger });
  assert.ok(tx2.stats().maxBufferBytes >= 2016);
});

test("a moved end says where it went; a clone kept before moving still works", async () => {
  const [carrierRx, carrierTx] = createChannel<unknown>({ capacity: 2, name: "carrier" });
  const [rx, tx] = createChannel<number>({ capacity: 2, name: "payload" });
  const kept = tx.clone();
  await carrierTx.send({ reply: tx });
  assert.throws(() => tx.trySend(1), ChannelClosedError, /moved into a message on channel \d+ "carrier"/);
  const { reply } = (await carrierRx.recv()) as { reply: typeof tx };
  await reply.send(5);
  await kept.send(6);
  assert.is(await rx.recv(), 5);
  assert.is(await rx.recv(), 6);
  assert.is(rx.stats().senders, 2);
});

test("an end inside a buffered message keeps its channel open; discarding the message releases it", async () => {
  const [carrierRx, carrierTx] = createChannel<unknown>({ capacity: 2 });
  const [rx, tx] = createChannel<number>({ capacity: 2 });
  await carrierTx.send(tx);
  assert.is(rx.stats().senders, 1); // in transit
  assert.is(rx.stats().closed, false);
  carrierRx.close(); // the carrier's buffer is discarded: the end in it is released
  assert.is(rx.stats().senders, 0);
  await assert.rejects(rx.recv({ timeout: 5000 }), ChannelClosedError);
});

test("a send that times out gives back the ends it carried", async () => {
  const [carrierRx, carrierTx] = createChannel<unknown>({ capacity: 0 });
  const [rx, tx] = createChannel<number>({ capacity: 1 });
  await assert.rejects(carrierTx.send(tx, { timeout: 10 }), TimeoutError);
  assert.ok(tx.trySend(3));
  assert.is(await rx.recv(), 3);
  carrierRx.close();
});

test("round trips of many types through a channel", async () => {
  const [rx, tx] = createChannel<unknown>({ capacity: Infinity });
  const sab = new SharedArrayBuffer(8);
  const values: unknown[] = [
    "héllo wörld ✓ 😀",
    "",
    42,
    -0,
    NaN,
    2n ** 100n,
    null,
    undefined,
    true,
    { nested: { deep: [1, { x: "y" }] } },
    new Map<unknown, unknown>([["a", 1], [2, { b: 3 }]]),
    new Set([1, "two", 3n]),
    new Date(1700000000000),
    new Uint8Array([1, 2, 3]),
    new Float64Array([1.5, -2.25]),
    new BigInt64Array([-5n]),
    new ArrayBuffer(3),
    [1, , 3],
  ];
  for (const value of values) await tx.send(value);
  for (const value of values) assert.equal(await rx.recv(), value);
  await tx.send({ shared: sab });
  const { shared } = (await rx.recv()) as { shared: SharedArrayBuffer };
  assert.is(shared, sab); // same thread: the very same buffer
});

test.run();
