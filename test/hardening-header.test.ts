/**
 * Corrupted header words of a channel's memory (issue 18, point 3): every
 * word a bug or a hostile peer could overwrite must make the operations
 * that read it fail with CorruptDataError, not with an error that blames
 * something else (MessageTooLargeError, "every receive handle is closed"),
 * a nonsense statistic, a silently lost message or a hang. Each case is the
 * probe: corrupt one word of a working channel, then use the channel as
 * before. test/corruption.test.ts has the ring indices, record headers and
 * lock words; this file the rest of the header.
 */
import { suite, assert, rng, seedFromEnv } from "./_harness.js";
import { createChannel, CorruptDataError, select, type RecvChannel, type SendChannel } from "../src/index.js";
import { ChannelMemory, H } from "../src/ring.js";
import { endOf } from "../src/transfer.js";

const test = suite("hardening-header");

function memoryOf(handle: object): ChannelMemory {
  const end = endOf(handle);
  if (!end) throw new Error("not a channel handle");
  return end.memory;
}

/** Byte offsets of header words and tables that are not in H (ring.ts layout). */
const F64_SENT = 80 / 8;
const F64_RECEIVED = 144 / 8;
const F64_DROPPED = 96 / 8;
const HOLDERS_SEND_WORD = 320 / 4;
const HOLDERS_RECV_WORD = 1348 / 4;
const WAITS_RECV_WORD = 3400 / 4;
const RECV_WAITERS_WORD = 224 / 4;

/** Every thread's handles are corrupted under them; they must stay reachable, or a finalizer's close() would report on them. */
const keptAlive: unknown[] = [];

/** A channel with two messages buffered, like one in use. */
async function channelInUse(options: { capacity?: number } = {}): Promise<{ rx: RecvChannel<string>; tx: SendChannel<string>; memory: ChannelMemory }> {
  const [rx, tx] = createChannel<string>({ capacity: options.capacity ?? 8, bufferBytes: 1024, name: "victim" });
  keptAlive.push(rx, tx);
  await tx.send("a");
  await tx.send("b");
  return { rx, tx, memory: memoryOf(rx) };
}

const CORRUPT = /shared state is corrupt/;

/** Every way to send: each must fail with CorruptDataError naming what is wrong (and no message may go in). */
async function sendsFail(tx: SendChannel<string>, what: RegExp): Promise<void> {
  assert.throws(() => tx.trySend("x"), CorruptDataError, what);
  assert.throws(() => tx.sendSync("x", { timeout: 2000 }), CorruptDataError, what);
  await assert.rejects(() => tx.send("x", { timeout: 2000 }), CorruptDataError, what);
  await assert.rejects(() => select([[tx, "x"]], { timeout: 2000 }), CorruptDataError, what);
}

// ---- the words the issue found ----

test("maxMessageBytes overwritten with a negative number: CorruptDataError, not MessageTooLargeError", async () => {
  const { tx, rx, memory } = await channelInUse();
  Atomics.store(memory.header, H.MAX_MESSAGE_BYTES, -123456);
  await sendsFail(tx, /max message bytes -123456/);
  assert.throws(() => rx.tryRecv(), CorruptDataError, /max message bytes/);
  assert.throws(() => new ChannelMemory(memory.buffer), CorruptDataError, /max message bytes -123456/); // a thread meeting it first
});

test("maxMessageBytes overwritten with another plausible value: the creator's value is known, so it is detected too", async () => {
  const { tx, memory } = await channelInUse();
  Atomics.store(memory.header, H.MAX_MESSAGE_BYTES, 3);
  await sendsFail(tx, /max message bytes 3/);
});

test("the closed bits say no receiver is left while one is open: CorruptDataError, not 'every receive handle is closed'", async () => {
  const { tx, memory } = await channelInUse();
  Atomics.store(memory.header, H.CLOSED, 2);
  await sendsFail(tx, /closed to receivers with 1 receive handle open/);
});

test("messages counted in a way that makes the length negative or huge: stats() and a bounded send fail instead of reporting it", async () => {
  for (const word of [H.WITHDRAWN, H.SEQ_TAIL, H.REMOVED]) {
    const { rx, tx, memory } = await channelInUse({ capacity: 4 });
    Atomics.store(memory.header, word, -1945026266);
    assert.throws(() => rx.stats(), CorruptDataError, /messages buffered|seq head .* past seq tail/);
    if (word !== H.REMOVED) assert.throws(() => tx.trySend("x"), CorruptDataError, /messages buffered/); // a sender reads REMOVED only when its cached count says full
  }
  const { rx, memory } = await channelInUse({ capacity: 4 });
  Atomics.store(memory.header, H.WITHDRAWN, 1); // plausible: 1 message buffered where the ring holds 2
  assert.is(rx.stats().length, 1, "a plausible count is not detectable here; the messages are still received");
});

// ---- the closed bits and handle counts ----

test("the closed bits say no sender is left while one is open: receivers fail instead of reporting the channel closed", async () => {
  const [rx, tx] = createChannel<string>({ capacity: 4 });
  keptAlive.push(rx, tx);
  Atomics.store(memoryOf(rx).header, H.CLOSED, 1);
  assert.throws(() => rx.tryRecv(), CorruptDataError, /closed to senders with 1 send handle open/);
  assert.throws(() => rx.recvSync({ timeout: 2000 }), CorruptDataError, /closed to senders/);
  await sendsFail(tx, /closed to senders/);
});

test("closed bits that are no flags at all", async () => {
  const { rx, tx, memory } = await channelInUse();
  Atomics.store(memory.header, H.CLOSED, 0x40);
  await sendsFail(tx, /closed bits 0x40/);
  assert.is(rx.tryRecv().ok, true, "a receiver with messages buffered does not read them");
  assert.is(rx.tryRecv().ok, true);
  assert.throws(() => rx.tryRecv(), CorruptDataError, /closed bits 0x40/);
  assert.throws(() => rx.stats(), CorruptDataError, /closed bits/);
});

test("the closed bits cleared after every receiver left: a send fails instead of vanishing into a channel nobody can read", async () => {
  const [rx, tx] = createChannel<string>({ capacity: Infinity });
  keptAlive.push(tx);
  rx.close();
  Atomics.store(memoryOf(tx).header, H.CLOSED, 0);
  await sendsFail(tx, /no receive handle is open, yet the channel is not closed to receivers/);
});

test("the closed bits cleared after every sender left: a receive fails instead of waiting forever", async () => {
  const [rx, tx] = createChannel<string>({ capacity: Infinity });
  keptAlive.push(rx);
  tx.close();
  Atomics.store(memoryOf(rx).header, H.CLOSED, 0);
  assert.throws(() => rx.tryRecv(), CorruptDataError, /no send handle is open, yet the channel is not closed to senders/);
  assert.throws(() => rx.recvSync({ timeout: 2000 }), CorruptDataError, /no send handle is open/);
  await assert.rejects(() => rx.recv({ timeout: 2000 }), CorruptDataError, /no send handle is open/);
});

test("a handle count that disagrees with the table of holders: closing or stats() fails instead of never closing", async () => {
  for (const [word, value] of [[H.SEND_HANDLES, 7], [H.RECV_HANDLES, 5], [H.SEND_HANDLES, -2]] as const) {
    const { rx, tx, memory } = await channelInUse();
    Atomics.store(memory.header, word, value);
    assert.throws(() => rx.stats(), CorruptDataError, /handles? .*(table|count)/);
    const end = word === H.SEND_HANDLES ? tx : rx;
    assert.throws(() => end.close(), CorruptDataError, /handle/);
  }
  const { rx, memory } = await channelInUse();
  Atomics.add(memory.header, HOLDERS_SEND_WORD, 3); // the holder table itself
  assert.throws(() => rx.stats(), CorruptDataError, /send handles .* table/);
  Atomics.store(memory.header, HOLDERS_RECV_WORD + 300 - 256, -1); // a negative holder
  assert.throws(() => rx.stats(), CorruptDataError);
});

test("no receive handle counted while a receiver is open: a send fails instead of buffering for nobody", async () => {
  const { tx, memory } = await channelInUse();
  Atomics.store(memory.header, H.RECV_HANDLES, 0);
  await sendsFail(tx, /no receive handle is open/);
});

// ---- capacity, budgets ----

test("a capacity below -1: senders and stats() fail instead of treating it as unbounded", async () => {
  const { rx, tx, memory } = await channelInUse({ capacity: 2 });
  Atomics.store(memory.header, H.CAPACITY, -9);
  await sendsFail(tx, /capacity -9/);
  assert.throws(() => rx.stats(), CorruptDataError, /capacity -9/);
});

test("the ring's budget (maxBufferBytes) overwritten", async () => {
  for (const value of [-8, 12, 1 << 20]) {
    const { rx, tx, memory } = await channelInUse();
    Atomics.store(memory.header, H.MAX_DATA_SIZE, value);
    await sendsFail(tx, new RegExp(`max data size ${value}`));
    assert.throws(() => rx.stats(), CorruptDataError, /max data size/);
    if (value !== 1 << 20) assert.throws(() => new ChannelMemory(memory.buffer), CorruptDataError, /max data size/); // a plausible value is only caught by threads that knew the channel
  }
});

// ---- streams ----

test("a streaming sender or receiver named where no stream is under way", async () => {
  {
    const { tx, memory } = await channelInUse();
    Atomics.store(memory.header, H.STREAM_SENDER, 1); // this thread's own slot + 1, as if it were streaming
    await sendsFail(tx, /stream sender 1, but stream seq 0 is not the last admitted/);
  }
  {
    const [rx, tx] = createChannel<string>({ capacity: 4 });
    keptAlive.push(rx);
    tx.close();
    Atomics.store(memoryOf(rx).header, H.STREAM_SENDER, 77777);
    assert.throws(() => rx.recvSync({ timeout: 2000 }), CorruptDataError, /stream sender 77777/);
  }
  {
    const { rx, memory } = await channelInUse();
    Atomics.store(memory.header, H.STREAM_RECEIVER, 5); // a party "taking a stream" while whole messages wait at the head
    assert.throws(() => rx.recvSync({ timeout: 2000 }), CorruptDataError, /stream receiver 5/);
  }
});

// ---- counters and statistics ----

test("statistics that cannot be: negative, fractional or not a number", async () => {
  const cases: Array<[string, (memory: ChannelMemory) => void, RegExp]> = [
    ["sent", (m) => (m.counters[F64_SENT] = -1), /sent -1/],
    ["received", (m) => (m.counters[F64_RECEIVED] = 0.5), /received 0.5/],
    ["dropped", (m) => (m.counters[F64_DROPPED] = NaN), /dropped NaN/],
    ["waiting senders", (m) => Atomics.store(m.header, H.WAITING_SENDERS, -3), /waiting senders -3/],
    ["waiting receivers", (m) => Atomics.store(m.header, H.WAITING_RECEIVERS, 4), /waiting receivers 4/],
    ["a party's parked receives", (m) => Atomics.store(m.header, WAITS_RECV_WORD + 9, 2), /waiting receivers|waiter bitmap/],
    ["the receive waiter bitmap", (m) => Atomics.store(m.header, RECV_WAITERS_WORD, 1 << 4), /waiter bitmap/],
    ["senders short of bytes", (m) => Atomics.store(m.header, H.SENDERS_SHORT_OF_BYTES, 9), /short of bytes 9/],
    ["the seq of the newest message taken", (m) => Atomics.store(m.header, H.SEQ_HEAD, 1000), /seq head 1000/],
  ];
  for (const [what, corrupt, message] of cases) {
    const { rx, memory } = await channelInUse();
    corrupt(memory);
    assert.throws(() => rx.stats(), CorruptDataError, message, what);
  }
});

test("a rendezvous sender whose message was 'taken' past the last seq ever given out fails instead of returning", async () => {
  const [rx, tx] = createChannel<string>({ capacity: 0 });
  keptAlive.push(rx, tx);
  const memory = memoryOf(tx);
  const sending = tx.send("offered", { timeout: 5000 });
  while (rx.stats().length === 0) await new Promise((resolve) => setImmediate(resolve));
  Atomics.store(memory.header, H.SEQ_HEAD, 50);
  tx.setCapacity(0); // wakes the waiting sender, which re-checks
  await assert.rejects(() => sending, CorruptDataError, /seq head 50/);
});

/**
 * The header words a receive or a send reads, or stats() reports, that a
 * corruption cannot turn into a different but valid-looking ring: a seeded
 * fuzz writes a random, boundary or off-by-one value into one of them and
 * runs the same operations as on a good channel. Every error must be
 * CorruptDataError (or TimeoutError, where a plausible value, such as a
 * smaller capacity, makes a send wait), and whatever arrives must be what
 * was sent, in order, once. (Not fuzzed here: the ring's indices, whose
 * plausible values describe another ring and which corruption.test.ts
 * covers out of range; the lock words and journals, also there; TOKEN and
 * the tables, above.)
 */
const FUZZED_WORDS: Array<[string, number]> = [
  ["MAGIC", H.MAGIC], ["ID", H.ID], ["CAPACITY", H.CAPACITY], ["SEND_HANDLES", H.SEND_HANDLES], ["RECV_HANDLES", H.RECV_HANDLES],
  ["CLOSED", H.CLOSED], ["MAX_DATA_SIZE", H.MAX_DATA_SIZE], ["MAX_MESSAGE_BYTES", H.MAX_MESSAGE_BYTES], ["WITHDRAWN", H.WITHDRAWN],
  ["STREAM_SENDER", H.STREAM_SENDER], ["STREAM_RECEIVER", H.STREAM_RECEIVER], ["STREAM_SEQ", H.STREAM_SEQ],
  ["WAITING_SENDERS", H.WAITING_SENDERS], ["WAITING_RECEIVERS", H.WAITING_RECEIVERS], ["NAME_LEN", H.NAME_LEN], ["SEQ_TAIL", H.SEQ_TAIL],
  ["SENT (low word)", 20], ["SENT (high word)", 21], ["SENDERS_SHORT_OF_BYTES", H.SENDERS_SHORT_OF_BYTES], ["OVERFLOW", H.OVERFLOW],
  ["DROPPED (high word)", 25], ["SEQ_HEAD", H.SEQ_HEAD], ["REMOVED", H.REMOVED], ["RECEIVED (high word)", 37], ["OPTIONS", H.OPTIONS],
];

test("seeded fuzz: one header word overwritten, then the channel used as before: CorruptDataError or the right messages, never a misleading error", async () => {
  const seed = seedFromEnv();
  const random = rng(seed);
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)]!;
  const rounds = 600;
  const outcomes = { corrupt: 0, unaffected: 0, timedOut: 0 };
  for (let round = 0; round < rounds; round++) {
    const capacity = pick([1, 4, Infinity]);
    const [rx, tx] = createChannel<string>({ capacity, bufferBytes: 1024, name: "fuzzed" });
    keptAlive.push(rx, tx);
    const memory = memoryOf(rx);
    const sent = ["a", "b"];
    tx.sendSync("a", { timeout: 2000 });
    if (capacity !== 1) tx.sendSync("b", { timeout: 2000 });
    else sent.pop();
    const [name, word] = pick(FUZZED_WORDS);
    const old = Atomics.load(memory.header, word);
    const value = pick([
      () => (random() * 2 ** 32) | 0,
      () => pick([-2, -1, 0, 1, 2, 3, 5, 0x7fffffff, -0x80000000]),
      () => (old + pick([-1, 1])) | 0,
    ])();
    Atomics.store(memory.header, word, value);
    const what = `${name} ${old} -> ${value}, capacity ${capacity} (seed ${seed}, round ${round})`;
    const received: string[] = [];
    let corrupt = false;
    let timedOut = false;
    const attempt = (op: () => void): void => {
      try {
        op();
      } catch (err) {
        if (err instanceof CorruptDataError) corrupt = true;
        else if ((err as Error).name === "TimeoutError") timedOut = true;
        else throw new Error(`${what}: ${(err as Error).name}: ${(err as Error).message}`);
      }
    };
    attempt(() => {
      if (tx.trySend("x")) sent.push("x");
    });
    for (let i = 0; i < 2; i++) {
      attempt(() => {
        const got = rx.tryRecv();
        if (got.ok) received.push(got.value);
        else if (got.closed) throw new Error(`${what}: tryRecv reports the channel closed`);
      });
    }
    attempt(() => {
      tx.sendSync("y", { timeout: 100 });
      sent.push("y");
    });
    attempt(() => received.push(rx.recvSync({ timeout: 100 })));
    attempt(() => {
      const stats = rx.stats();
      if (!(stats.length >= 0 && stats.sent >= 0 && stats.senders >= 1 && stats.receivers >= 1)) throw new Error(`${what}: stats() ${JSON.stringify(stats)}`);
    });
    // What arrived was sent, in order, once.
    let next = 0;
    for (const value of received) {
      while (next < sent.length && sent[next] !== value) next++;
      assert.ok(next < sent.length, `${what}: received ${JSON.stringify(received)} of ${JSON.stringify(sent)}`);
      next++;
    }
    if (corrupt) outcomes.corrupt++;
    else if (timedOut) outcomes.timedOut++;
    else outcomes.unaffected++;
  }
  console.log(`[hardening-header] seed=${seed} ${rounds} overwritten words: ${outcomes.corrupt} detected (CorruptDataError), ${outcomes.timedOut} made a send or receive wait its timeout, ${outcomes.unaffected} changed nothing these operations read`);
  assert.ok(outcomes.corrupt > rounds / 3, `most overwritten words are detected: ${JSON.stringify(outcomes)} (seed ${seed})`);
}, { timeout: 120_000 });

test("a channel still works after all these probes on other channels (nothing global was damaged)", async () => {
  const [rx, tx] = createChannel<string>({ capacity: 2 });
  await tx.send("fine");
  assert.is(await rx.recv({ timeout: 5000 }), "fine");
  assert.is(rx.stats().length, 0);
});

test.run();
