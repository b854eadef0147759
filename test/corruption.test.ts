/**
 * Shared memory is a trust boundary too: a corrupt index, length or lock
 * word in a channel's memory raises CorruptDataError; it never reads out of
 * range and never spins forever.
 */
import { suite, assert } from "./_harness.js";
import { ChannelClosedError, create, createChannel, CorruptDataError } from "../src/index.js";
import { H } from "../src/ring.js";
import { MAX_PARTIES, PartyState, slotId, slotState, SUPERVISOR_SLOT } from "../src/control.js";
import { lockOwner } from "../src/mutex.js";
import { endOf } from "../src/transfer.js";

const test = suite("corruption");

/**
 * Warnings these tests cause on purpose. When the supervisor meets a channel
 * whose shared state is corrupt, it gives up on it and says so once, with
 * process.emitWarning in its own thread ("the supervisor cannot clean up
 * channel N ..."); a handle of such a channel that is garbage-collected
 * warns that it could not be closed. Node prints a worker's warnings on
 * this process's stderr. For the channels corrupted here on purpose
 * (every channel whose memory a test reaches with memoryOf), those lines are expected: they are captured here,
 * not printed, and the tests that cause them assert them
 * (expectWarningAbout). Every other line of stderr is printed as usual, so
 * a warning about any other channel still shows.
 */
const corruptedOnPurpose = new Set<number>();
const capturedWarnings: string[] = [];
const EXPECTED_WARNING = /^\(node:\d+\) Warning: interpreters: (?:the supervisor cannot clean up channel (\d+)|a garbage-collected handle of channel (\d+))/;
const TRACE_HINT = /^\(Use `.* --trace-warnings \.\.\.` to show where the warning was created\)$/;
const writeToStderr = process.stderr.write.bind(process.stderr) as (chunk: unknown, ...rest: unknown[]) => boolean;
let lastLineCaptured = false;
process.stderr.write = ((chunk: unknown, ...rest: unknown[]): boolean => {
  const text = typeof chunk === "string" ? chunk : Buffer.from(chunk as Uint8Array).toString("utf8");
  const printed = text.split(/(?<=\n)/).filter((line) => {
    const match = EXPECTED_WARNING.exec(line);
    const id = Number(match?.[1] ?? match?.[2]);
    if (match && corruptedOnPurpose.has(id)) {
      capturedWarnings.push(line.trim());
      lastLineCaptured = true;
      return false;
    }
    const hint = lastLineCaptured && TRACE_HINT.test(line.trim()); // printed once, after the first warning
    lastLineCaptured = false;
    return !hint;
  });
  if (printed.length === 0) {
    const callback = rest.find((arg) => typeof arg === "function") as (() => void) | undefined;
    callback?.();
    return true;
  }
  return writeToStderr(printed.join(""), ...rest);
}) as typeof process.stderr.write;

/** Resolves once a warning about channel `id` (captured above) has arrived; fails after 10 s. */
async function expectWarningAbout(id: number, what: RegExp): Promise<string> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const found = capturedWarnings.find((line) => new RegExp(`channel ${id}\\b`).test(line) && what.test(line));
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`no warning ${what} about channel ${id} within 10 s; captured: ${capturedWarnings.join(" | ") || "none"}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** The shared memory of `handle`'s channel, to tamper with: warnings about that channel are expected from now on. */
function memoryOf(handle: object) {
  const end = endOf(handle);
  if (!end) throw new Error("not a channel handle");
  corruptedOnPurpose.add(end.memory.id);
  return end.memory;
}

async function corruptAndRecv(field: number, value: number, what: RegExp): Promise<void> {
  const [rx, tx] = createChannel<string>({ capacity: 8, bufferBytes: 1024 });
  await tx.send("a");
  await tx.send("b");
  Atomics.store(memoryOf(rx).header, field, value);
  assert.throws(() => rx.tryRecv(), CorruptDataError, what);
}

test("a head index out of range or misaligned", async () => {
  await corruptAndRecv(H.HEAD, 1 << 20, /head/);
  await corruptAndRecv(H.HEAD, 3, /head/);
  await corruptAndRecv(H.HEAD, -8, /head/);
});

async function corruptAndSend(field: number, value: number, what: RegExp): Promise<void> {
  const [rx, tx] = createChannel<string>({ capacity: 8, bufferBytes: 1024 });
  await tx.send("a");
  Atomics.store(memoryOf(rx).header, field, value);
  assert.throws(() => tx.trySend("b"), CorruptDataError, what);
  assert.throws(() => tx.sendSync("b", { timeout: 5000 }), CorruptDataError, what);
}

test("a tail index out of range or misaligned", async () => {
  await corruptAndSend(H.TAIL, 1 << 24, /tail/);
  await corruptAndSend(H.TAIL, 12, /tail/);
});

test("a data size larger than the buffer", async () => {
  await corruptAndRecv(H.DATA_SIZE, 1 << 30, /data size/);
});

test("byte counters that put more bytes in the ring than it has, or fewer than none", async () => {
  await corruptAndRecv(H.WRITTEN, 1 << 20, /used bytes/);
  await corruptAndRecv(H.READ, 1 << 20, /used bytes/);
  await corruptAndRecv(H.READ, -(1 << 20), /used bytes/);
  await corruptAndSend(H.WRITTEN, 1 << 20, /used bytes/);
});

test("padding that claims more bytes than are in use", async () => {
  const [rx, tx] = createChannel<string>({ capacity: 8, bufferBytes: 1024 });
  await tx.send("a");
  const memory = memoryOf(rx);
  memory.dataWords[(memory.get(H.HEAD) >>> 2) + 1] = 16; // R_PAD: "skip to the end", with 1000 bytes to go
  assert.throws(() => rx.tryRecv(), CorruptDataError, /padding/);
});

test("a record length that runs past the ring", async () => {
  const [rx, tx] = createChannel<string>({ capacity: 8, bufferBytes: 1024 });
  await tx.send("hello");
  const memory = memoryOf(rx);
  memory.dataWords[memory.get(H.HEAD) >>> 2] = 100_000;
  assert.throws(() => rx.tryRecv(), CorruptDataError, /length 100000/);
  memory.dataWords[memory.get(H.HEAD) >>> 2] = -1;
  assert.throws(() => rx.tryRecv(), CorruptDataError, /length -1/);
});

test("a record whose total exceeds maxMessageBytes", async () => {
  const [rx, tx] = createChannel<string>({ capacity: 8, bufferBytes: 1024, maxMessageBytes: 4096 });
  await tx.send("hello");
  const memory = memoryOf(rx);
  memory.dataWords[(memory.get(H.HEAD) >>> 2) + 3] = 1 << 30;
  assert.throws(() => rx.tryRecv(), CorruptDataError, /total/);
});

test("a used-bytes count that disagrees with the records (a walk that would not end)", async () => {
  const [rx, tx] = createChannel<string>({ capacity: 8, bufferBytes: 1024 });
  await tx.send("a");
  const memory = memoryOf(rx);
  Atomics.store(memory.header, H.WRITTEN, (memory.get(H.READ) + (1 << 20)) | 0);
  assert.throws(() => rx.close(), CorruptDataError); // closing the last receiver walks the ring
});

test("payload bytes that are not a valid encoding", async () => {
  const [rx, tx] = createChannel<unknown>({ capacity: 8, bufferBytes: 1024 });
  await tx.send({ a: 1, b: "two" });
  const memory = memoryOf(rx);
  const start = memory.get(H.HEAD) + 16;
  memory.data.fill(0xff, start, start + memory.dataWords[memory.get(H.HEAD) >>> 2]!);
  assert.throws(() => rx.tryRecv(), CorruptDataError);
});

/** Channels left with a lock word naming a party that cannot exist: the supervisor meets them at the next death. */
const impossibleOwners: Array<{ id: number }> = [];

test("a lock word naming a party that cannot exist fails instead of waiting forever", () => {
  for (const lockWord of [H.SEND_LOCK, H.RECV_LOCK]) {
    const [rx, tx] = createChannel<string>({ capacity: 1 });
    impossibleOwners.push(rx, tx); // kept: a collected handle of it would warn that it could not be closed
    Atomics.store(memoryOf(rx).header, lockWord, 4000);
    assert.throws(() => rx.stats(), CorruptDataError, /cannot exist/);
    const fastPath = lockWord === H.SEND_LOCK ? () => tx.sendSync("x", { timeout: 5000 }) : () => rx.recvSync({ timeout: 5000 });
    assert.throws(fastPath, CorruptDataError, /cannot exist/);
  }
});

test("a lock left by a party whose slot is free is taken over", () => {
  for (const lockWord of [H.SEND_LOCK, H.RECV_LOCK]) {
    const [rx, tx] = createChannel<string>({ capacity: 1 });
    Atomics.store(memoryOf(rx).header, lockWord, 200 + 1); // slot 200: never used in this test
    assert.ok(tx.trySend("after takeover"));
    assert.equal(rx.tryRecv(), { ok: true, value: "after takeover" });
  }
});

test("probing marks that name a sleeping receiver or no live party do not keep a message from the receiver asleep", async () => {
  // A sender wakes only as many sleeping receivers as there are messages no
  // probing (spinning) receiver will take; false marks must not make it skip
  // the one that needs waking (it would sleep until its timeout).
  const receiver = await create({ name: "sleeper" });
  try {
    let slot = -1;
    for (let s = 1; s < MAX_PARTIES; s++) if (slotId(s) === receiver.id && slotState(s) === PartyState.LIVE) slot = s;
    assert.ok(slot > 0, "the receiver's slot");
    for (const markedSlot of [slot, 200]) { // the sleeper's own slot; a slot no party holds
      const [rx, tx] = createChannel<string>({ capacity: Infinity, name: "marked" });
      const [outRx, outTx] = createChannel<string>({ capacity: 1, name: "out" });
      const receiving = receiver.exec(`out.sendSync(rx.recvSync({ timeout: 30000 }));`, { bind: { rx, out: outTx } });
      const memory = memoryOf(tx);
      const deadline = Date.now() + 10_000;
      while (memory.get(H.WAITING_RECEIVERS) === 0) {
        if (Date.now() > deadline) throw new Error("the receiver never registered");
        await new Promise((resolve) => setImmediate(resolve));
      }
      memory.setProbing(markedSlot, true);
      assert.ok(tx.trySend(`to ${markedSlot}`));
      assert.is(await outRx.recv({ timeout: 10_000 }), `to ${markedSlot}`);
      await receiving;
      memory.setProbing(markedSlot, false);
    }
  } finally {
    await receiver.terminate();
  }
});

test("a channel with a corrupt lock word does not stop the supervisor: a dead interpreter's other channels are still released", async () => {
  const warnings: string[] = [];
  const onWarning = (warning: Error) => warnings.push(warning.message);
  process.on("warning", onWarning);
  try {
    const [corruptRx] = createChannel<string>({ capacity: 1, name: "corrupt" });
    Atomics.store(memoryOf(corruptRx).header, H.SEND_LOCK, 4000);
    for (let round = 0; round < 2; round++) { // the supervisor still works after the first cleanup
      const [rx, tx] = createChannel<string>({ capacity: 1, name: `held-${round}` });
      const holder = await create({ name: `holder-${round}` });
      await holder.exec(`globalThis.kept = rx;`, { bind: { rx } });
      await holder.terminate(); // the supervisor releases what it held, on every channel
      await assert.rejects(tx.send("x", { timeout: 10_000 }), ChannelClosedError, /every receive handle is closed/);
    }
    assert.ok(!warnings.some((w) => /supervisor failed/.test(w)), warnings.join("; "));
    // It said which channel it gave up on, and only once over the two deaths.
    await expectWarningAbout(corruptRx.id, /the supervisor cannot clean up channel \d+ "corrupt".*shared state is corrupt/);
    const reports = capturedWarnings.filter((line) => line.includes(`the supervisor cannot clean up channel ${corruptRx.id} "corrupt"`));
    assert.is(reports.length, 1, reports.join("\n"));
    // The channels of the lock-word test above, met at these deaths (or earlier ones), were reported too.
    for (const handle of impossibleOwners.filter((_, i) => i % 2 === 0)) {
      await expectWarningAbout(handle.id, /the supervisor cannot clean up.*lock word names party 3999, which cannot exist/);
    }
  } finally {
    process.off("warning", onWarning);
  }
});

const SEND_JOURNAL_VALID_WORD = 4480 / 4; // ring.ts layout
const SEND_JOURNAL_UNDO_WORD = 4484 / 4;
const SEND_JOURNAL_ENTRIES_WORD = 4624 / 4;
/** A party slot no interpreter holds in these tests. */
const FREE_SLOT = 200;
/**
 * Handles of the channels corrupted below, kept reachable: were one
 * garbage-collected while its channel's lock is stuck, its finalizer's
 * close() would block this (main) thread.
 */
const keptAlive: unknown[] = [];

/** A send lock held by a party that is gone, and a journal whose rollback fails. */
function lockedByTheGoneWithCorruptJournal(header: Int32Array): void {
  Atomics.store(header, SEND_JOURNAL_VALID_WORD, 2); // a section that held both locks
  Atomics.store(header, SEND_JOURNAL_UNDO_WORD, 1);
  Atomics.store(header, SEND_JOURNAL_ENTRIES_WORD, 99); // an undo entry naming no area
  Atomics.store(header, H.SEND_LOCK, FREE_SLOT + 1);
}

/** The slot of live interpreter `id`. */
function slotOf(id: number): number {
  for (let s = 1; s < MAX_PARTIES; s++) if (slotId(s) === id && slotState(s) === PartyState.LIVE) return s;
  throw new Error(`no live slot for interpreter ${id}`);
}

/**
 * Has `user` (which holds `tx` as a global) try a send and report what
 * happened on `out`: "sent", "full" or the error's name, or, if it hangs,
 * who holds the send lock.
 */
async function trySendFrom(user: Awaited<ReturnType<typeof create>>, outRx: ReturnType<typeof createChannel<string>>[0], header: Int32Array): Promise<string> {
  const running = user.exec(`try { out.sendSync(tx.trySend("x") ? "sent" : "full"); } catch (e) { out.sendSync(e.name); }`);
  running.catch(() => {});
  return outRx.recv({ timeout: 5_000 }).catch((e: Error) => `no answer in 5 s (${e.name}): the send lock is held by slot ${lockOwner(header, H.SEND_LOCK)} (the supervisor is ${SUPERVISOR_SLOT})`);
}

const halfRecoverable: Array<{ what: string; corrupt: (header: Int32Array) => void }> = [
  {
    what: "the send lock names a party whose slot is free, the receive lock word a party that cannot exist",
    corrupt: (header) => {
      Atomics.store(header, H.SEND_LOCK, FREE_SLOT + 1);
      Atomics.store(header, H.RECV_LOCK, 4000);
    },
  },
  { what: "the send lock names a party whose slot is free, and its journal cannot be rolled back", corrupt: lockedByTheGoneWithCorruptJournal },
];

for (const { what, corrupt } of halfRecoverable) {
  test(`a channel the supervisor gives up on is not left locked by the supervisor: ${what}`, async () => {
    const [rx, tx] = createChannel<string>({ capacity: 1, name: "half-recovered" });
    const header = memoryOf(rx).header;
    keptAlive.push(rx, tx);
    const [outRx, outTx] = createChannel<string>({ capacity: 1, name: "verdict" });
    const user = await create({ name: "user" });
    const bystander = await create({ name: "bystander" });
    try {
      const clone = tx.clone();
      keptAlive.push(clone);
      await user.exec("globalThis.tx = tx; globalThis.out = out;", { bind: { tx: clone, out: outTx } });
      const bystanderSlot = slotOf(bystander.id);
      assert.is(slotState(FREE_SLOT), PartyState.FREE);
      corrupt(header);
      await bystander.terminate(); // after a death the supervisor cleans up every channel, this one included
      const deadline = Date.now() + 10_000;
      while (slotState(bystanderSlot) !== PartyState.FREE) { // freed once the supervisor is done with every channel
        if (Date.now() > deadline) throw new Error("the supervisor never finished the bystander's cleanup");
        await new Promise((resolve) => setTimeout(resolve, 1));
      }
      const outcome = await trySendFrom(user, outRx, header);
      assert.ok(/^(CorruptDataError|sent)$/.test(outcome), `the user's trySend must answer (an error or success), not hang: ${outcome}`);
      await expectWarningAbout(rx.id, /the supervisor cannot clean up channel \d+ "half-recovered".*shared state is corrupt/);
    } finally {
      await user.terminate();
    }
  });
}

test("a party that takes over a gone owner's lock and cannot roll back its journal releases the lock: the next party does not hang", async () => {
  const [rx, tx] = createChannel<string>({ capacity: 1, name: "corrupt-journal" });
  const header = memoryOf(rx).header;
  keptAlive.push(rx, tx);
  const [outRx, outTx] = createChannel<string>({ capacity: 1, name: "verdict" });
  const user = await create({ name: "user" });
  try {
    const clone = tx.clone();
    keptAlive.push(clone);
    await user.exec("globalThis.tx = tx; globalThis.out = out;", { bind: { tx: clone, out: outTx } });
    lockedByTheGoneWithCorruptJournal(header);
    // This thread waits for the lock, finds its owner gone, takes it over, and its rollback fails.
    assert.throws(() => tx.trySend("y"), CorruptDataError, /journal entry/);
    const outcome = await trySendFrom(user, outRx, header);
    assert.ok(/^(CorruptDataError|sent|full)$/.test(outcome), `the next party's trySend must answer, not hang: ${outcome}`);
  } finally {
    await user.terminate();
  }
});

test.run();
