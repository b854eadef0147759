/**
 * Review of ring growth by replacement (ring.ts grow/replaceData): a party
 * killed inside the critical section that grew a wrapped ring must leave a
 * channel that its rollback restores exactly (the records, the padding
 * before the wrap, and the order), whatever the growth copied meanwhile.
 */
import { suite, assert, withTimeout } from "./_harness.js";
import { create, createChannel, type Interpreter } from "../src/index.js";
import { endOf } from "../src/transfer.js";
import { H } from "../src/ring.js";
import { MAX_PARTIES, PartyState, slotId, slotState } from "../src/control.js";
import { postToSupervisor } from "../src/supervisor-link.js";

const test = suite("review-growth");
/** The very module instance the library uses in every thread (tests run from source). */
const OPS_URL = new URL("../src/channel-ops.ts", import.meta.url).href;

const hookSource = (point: string): string => `
  const ops = await import(${JSON.stringify(OPS_URL)});
  ops.setTestHook((point) => {
    if (point !== ${JSON.stringify(point)}) return;
    Atomics.store(reached, 0, 1);
    Atomics.notify(reached, 0);
    for (;;) {} // holding both channel locks, until terminated
  });
`;

function memoryOf(handle: object) {
  const end = endOf(handle);
  if (!end) throw new Error("not a channel handle");
  return end.memory;
}

async function waitFlag(flag: Int32Array, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (Atomics.load(flag, 0) === 0) {
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`timed out waiting for ${what}`);
    const result = Atomics.waitAsync(flag, 0, 0, left);
    if (result.async) await result.value;
  }
}

const filled = (length: number, value: number): Uint8Array => new Uint8Array(length).fill(value);

test("killed right after growing a wrapped ring (padding before the wrap): the rollback leaves the padding, the channel delivers B, C, then more", async () => {
  const grower = await create({ name: "grower" });
  try {
    const [rx, tx] = createChannel<Uint8Array>({ capacity: Infinity, bufferBytes: 1024, maxBufferBytes: 1 << 16, name: "wrapped-growth" });
    const memory = memoryOf(rx);
    // Records of 400 bytes (16 + 384): A at 0, B at 400; A taken; C does not fit in the 224 bytes
    // at the end, so it goes at 0 after a padding record at 800. The ring is full and wrapped.
    tx.sendSync(filled(384, 1));
    tx.sendSync(filled(384, 2));
    assert.equal(rx.recvSync({ timeout: 5000 }), filled(384, 1));
    tx.sendSync(filled(384, 3));
    assert.equal([memory.header[H.HEAD], memory.header[H.TAIL], memory.usedBytes(), memory.header[H.DATA_SIZE]], [400, 400, 1024, 1024], "wrapped and full");
    const reached = new Int32Array(new SharedArrayBuffer(4));
    // D needs the ring to grow: the grower unwraps it (moving C after B) and is killed before publishing D.
    const run = grower.exec(`${hookSource("send:committed")} t.sendSync(new Uint8Array(384).fill(4));`, { bind: { t: tx.clone(), reached } }).then(
      () => "finished",
      () => "failed",
    );
    await waitFlag(reached, "the grower to reach send:committed after growing the ring");
    assert.is(Atomics.load(memory.header, H.DATA_GEN), 1, "the ring was replaced by a larger one");
    await withTimeout(grower.terminate(), 20_000, "terminate the grower");
    assert.is(await run, "failed");
    assert.equal(await rx.recv({ timeout: 10_000 }), filled(384, 2), "B");
    assert.equal(await rx.recv({ timeout: 10_000 }), filled(384, 3), "C");
    assert.equal(rx.tryRecv(), { ok: false, closed: false }, "nothing else (D was rolled back)");
    for (let i = 5; i < 12; i++) tx.sendSync(filled(100 * i, i));
    for (let i = 5; i < 12; i++) assert.equal(rx.recvSync({ timeout: 5000 }), filled(100 * i, i), `message ${i}`);
    const stats = rx.stats();
    assert.equal([stats.length, stats.bytes, stats.sent, stats.received], [0, 0, 10, 10]);
    tx.close();
    rx.close();
  } finally {
    await grower.terminate();
  }
}, { timeout: 60_000 });

async function pollUntil(condition: () => boolean, what: string, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

function slotOf(interpreter: Interpreter): number {
  for (let s = 1; s < MAX_PARTIES; s++) if (slotId(s) === interpreter.id && slotState(s) === PartyState.LIVE) return s;
  throw new Error(`no live slot for interpreter ${interpreter.id}`);
}

const pattern = (length: number, seed: number): Uint8Array => new Uint8Array(length).map((_, i) => (i * 7 + seed) & 255);

test("a generation published by a grower that died before naming it (DATA_GEN) neither blocks the supervisor's cleanup nor shadows the real one made next", async () => {
  const holder = await create({ name: "holder" });
  const reader = await create({ name: "reader" });
  try {
    const [rx, tx] = createChannel<Uint8Array>({ capacity: Infinity, bufferBytes: 1024, maxBufferBytes: 1 << 20, name: "regrown" });
    const memory = memoryOf(rx);
    tx.sendSync(pattern(3000, 1)); // grows: generation 1, published to the supervisor
    assert.equal(rx.recvSync({ timeout: 5000 }), pattern(3000, 1));
    assert.is(memory.load(H.DATA_GEN), 1);
    // A grower published generation 2 (replaceData: publish, then the DATA_GEN store) and was killed in between.
    postToSupervisor({ type: "data", id: memory.id, token: memory.token(), gen: 2, buffer: new SharedArrayBuffer(16384) });
    // A party holding an end dies: the supervisor must map generation 1 (DATA_GEN) to clean up.
    await holder.exec("globalThis.kept = t;", { bind: { t: tx.clone() } });
    const slot = slotOf(holder);
    await holder.terminate();
    await pollUntil(() => slotState(slot) === PartyState.FREE, "the supervisor to clean up after the holder (it needs generation 1)");
    assert.is(tx.stats().senders, 1, "the holder's end was released");
    // The ring grows again for real: generation 2, another buffer. A thread that never saw it fetches it.
    tx.sendSync(pattern(20_000, 2));
    assert.is(memory.load(H.DATA_GEN), 2);
    const [okRx, okTx] = createChannel<boolean>();
    await reader.exec(
      `const got = r.recvSync({ timeout: 10000 });
       let same = got.length === 20000;
       for (let i = 0; same && i < got.length; i++) same = got[i] === ((i * 7 + 2) & 255);
       ok.sendSync(same);`,
      { bind: { r: rx.clone(), ok: okTx } },
    );
    assert.ok(await okRx.recv({ timeout: 5000 }), "the reader got the message from the real generation 2");
    tx.close();
    rx.close();
  } finally {
    await holder.terminate();
    await reader.close();
  }
}, { timeout: 60_000 });

test.run();
