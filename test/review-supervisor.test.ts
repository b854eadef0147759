/**
 * Review of the supervisor's fetch logic (workers/supervisor.ts): a fetch
 * waits only while a registration is on its way, and is then answered with
 * what it asked for if any registration made it resolvable, null only if
 * none did. Registrations come from different parties on different ports,
 * which the supervisor may handle in any order; these tests put the
 * supervisor in such an order deterministically: main's registrations
 * stand for those of the other threads, and a registration "on its way"
 * is one counted in P_POSTED (postToSupervisor counts before it posts)
 * and posted later.
 */
import { suite, assert } from "./_harness.js";
import { ChannelClosedError, create, createChannel, type Interpreter, type RecvChannel, type SendChannel } from "../src/index.js";
import { control, MAX_PARTIES, P_POSTED, PartyState, refusedRequests, slotId, slotState, slotWord } from "../src/control.js";
import { End } from "../src/handle.js";
import { handleFor } from "../src/transfer.js";
import { postToSupervisor } from "../src/supervisor-link.js";
import { lock, unlock } from "../src/mutex.js";
import { allocateChannelId } from "../src/registry.js";
import { ChannelMemory, createChannelMemory, H } from "../src/ring.js";

const test = suite("review-supervisor");

async function pollUntil(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

/** A channel's memory made by hand and not registered yet. */
function unregisteredChannel(name: string): { id: number; buffer: SharedArrayBuffer; memory: ChannelMemory } {
  const id = allocateChannelId();
  const buffer = createChannelMemory({ id, capacity: Infinity, bufferBytes: 64, maxBufferBytes: 4096, maxMessageBytes: 4000, name, overflow: 0 });
  return { id, buffer, memory: new ChannelMemory(buffer) };
}

/**
 * In `fetcher`: posts a fetch of generation 1 of channel `id`'s data area,
 * then a request the supervisor refuses (a marker: handled after the
 * fetch, on the same port), then waits for the fetch's answer and sends
 * its byte length (or "null") on the returned channel.
 */
async function fetchDataInInterpreter(fetcher: Interpreter, id: number, token: readonly number[]): Promise<{ answer: Promise<unknown>; run: Promise<void> }> {
  const [outRx, outTx] = createChannel<unknown>();
  const run = fetcher.exec(
    `import { workerData, receiveMessageOnPort } from "node:worker_threads";
     const port = workerData.__interpretersSupervisor;
     const boot = workerData.__interpreters;
     const flags = new Int32Array(boot.control);
     const flag = 16 + boot.slot * 16 + 3; // this party's fetch flag (control.ts)
     Atomics.store(flags, flag, 0);
     port.postMessage({ type: "fetch", kind: "data", id: ${id}, gen: 1, token: ${JSON.stringify(token)}, slot: boot.slot });
     port.postMessage({ type: "exited", slot: 0, id: 0 }); // refused: this party did not create slot 0
     const until = Date.now() + 20000;
     while (Atomics.load(flags, flag) === 0 && Date.now() < until) Atomics.wait(flags, flag, 0, 50);
     let answer = "no answer";
     for (let m; (m = receiveMessageOnPort(port)); ) if (m.message.kind === "fetch") answer = m.message.buffer ? m.message.buffer.byteLength : "null";
     out.sendSync(answer);`,
    { bind: { out: outTx } },
  );
  return { answer: outRx.recv({ timeout: 30_000 }), run };
}

test("a data generation registered before its channel, fetched while the channel's registration is on its way: answered with the buffer", async () => {
  const fetcher = await create({ name: "fetcher" });
  try {
    const { id, buffer, memory } = unregisteredChannel("late-channel");
    const gen1 = new SharedArrayBuffer(128);
    // The grower's registration of generation 1 is handled first (kept aside: its channel is unknown yet).
    postToSupervisor({ type: "data", id, token: memory.token(), gen: 1, buffer: gen1 });
    // The creator's registration of the channel is on its way.
    Atomics.add(control, slotWord(0, P_POSTED), 1);
    const refused = refusedRequests();
    const { answer, run } = await fetchDataInInterpreter(fetcher, id, memory.token());
    await pollUntil(() => refusedRequests() > refused, "the supervisor to handle the fetch (and the marker after it)");
    // Now it arrives (counted already).
    Atomics.sub(control, slotWord(0, P_POSTED), 1);
    postToSupervisor({ type: "channel", id, buffer });
    assert.is(await answer, 128, "the fetch gets generation 1, which the channel's registration made known");
    await run;
  } finally {
    await fetcher.close();
  }
});

test("a data generation fetched before either registration arrives: the data's registration alone does not answer it null while the channel's is on its way", async () => {
  const fetcher = await create({ name: "fetcher" });
  const grower = await create({ name: "grower" });
  try {
    const { id, buffer, memory } = unregisteredChannel("later-channel");
    Atomics.add(control, slotWord(0, P_POSTED), 1); // the creator's registration is on its way
    const refused = refusedRequests();
    const { answer, run } = await fetchDataInInterpreter(fetcher, id, memory.token());
    await pollUntil(() => refusedRequests() > refused, "the supervisor to handle the fetch (and the marker after it)");
    // The grower's registration of generation 1 arrives (from its own port), then a marker after it.
    await grower.exec(
      `import { workerData } from "node:worker_threads";
       const { postToSupervisor } = await import(${JSON.stringify(new URL("../src/supervisor-link.ts", import.meta.url).href)});
       postToSupervisor({ type: "data", id: ${id}, token: ${JSON.stringify(memory.token())}, gen: 1, buffer: new SharedArrayBuffer(256) });
       workerData.__interpretersSupervisor.postMessage({ type: "exited", slot: 0, id: 0 });`,
    );
    await pollUntil(() => refusedRequests() > refused + 1, "the supervisor to handle the data registration (and the marker after it)");
    Atomics.sub(control, slotWord(0, P_POSTED), 1);
    postToSupervisor({ type: "channel", id, buffer });
    assert.is(await answer, 256, "the fetch gets generation 1 once the channel is known");
    await run;
  } finally {
    await fetcher.close();
    await grower.close();
  }
});

test("an end carried in a message the supervisor discards (its receiver died) is released even if its channel's registration arrives after the death", async () => {
  const holder = await create({ name: "holder" });
  try {
    const [carrierRx, carrierTx] = createChannel<RecvChannel<string>>({ name: "carrier" });
    await holder.exec("globalThis.kept = r;", { bind: { r: carrierRx } }); // the carrier's only receive end
    // Channel "inner", made here; its registration is counted as posted (as createChannel does) but not handled yet.
    const { id, buffer, memory } = unregisteredChannel("inner");
    Atomics.add(control, slotWord(0, P_POSTED), 1);
    const innerRx = handleFor(End.acquire(memory, "recv")) as RecvChannel<string>;
    const innerTx = handleFor(End.acquire(memory, "send")) as SendChannel<string>;
    carrierTx.sendSync(innerRx); // inner's receive end now travels in the carrier
    let slot = -1;
    for (let s = 1; s < MAX_PARTIES; s++) if (slotId(s) === holder.id && slotState(s) === PartyState.LIVE) slot = s;
    await holder.terminate(); // the supervisor releases the carrier's last receive end: its message is discarded
    await pollUntil(() => slotState(slot) === PartyState.FREE, "the supervisor to clean up after the holder");
    assert.is(memory.get(H.RECV_HANDLES), 1, "inner's receive end is still in transit (its channel was not registered)");
    // The registration arrives.
    Atomics.sub(control, slotWord(0, P_POSTED), 1);
    postToSupervisor({ type: "channel", id, buffer });
    await pollUntil(() => memory.load(H.RECV_HANDLES) === 0, "the end inside the discarded message to be released (no receiver of inner is left)");
    assert.throws(() => innerTx.trySend("anyone?"), ChannelClosedError);
    carrierTx.close();
    innerTx.close();
  } finally {
    await holder.terminate();
  }
});

function slotOf(interpreter: Interpreter): number {
  for (let s = 1; s < MAX_PARTIES; s++) if (slotId(s) === interpreter.id && slotState(s) === PartyState.LIVE) return s;
  throw new Error(`no live slot for interpreter ${interpreter.id}`);
}

test("a fetch that waits on a dead party's registration that never comes (killed between counting and posting it) is answered when that party's slot is freed", async () => {
  const dying = await create({ name: "dying" });
  const fetcher = await create({ name: "fetcher" });
  try {
    const [rx, tx] = createChannel<string>({ name: "held" });
    await dying.exec("globalThis.kept = t;", { bind: { t: tx } });
    const slot = slotOf(dying);
    // The party counts a registration (postToSupervisor counts before posting) and is killed before posting it.
    Atomics.add(control, slotWord(slot, P_POSTED), 1);
    // Its cleanup waits while a live party (main, here) holds a lock of a channel it held.
    const memory = (await import("../src/transfer.js")).endOf(rx)!.memory;
    lock(memory.header, H.SEND_LOCK, 0, () => {});
    let locked = true;
    try {
      await dying.terminate();
      await pollUntil(() => slotState(slot) === PartyState.EXITED, "the supervisor to notice the death");
      // A fetch of an id nobody has: it waits, since the dead party looks behind.
      const refused = refusedRequests();
      const [outRx, outTx] = createChannel<string>();
      const run = fetcher.exec(
        `import { workerData, receiveMessageOnPort } from "node:worker_threads";
         const port = workerData.__interpretersSupervisor;
         const boot = workerData.__interpreters;
         const flags = new Int32Array(boot.control);
         const flag = 16 + boot.slot * 16 + 3;
         Atomics.store(flags, flag, 0);
         port.postMessage({ type: "fetch", kind: "channel", id: 2000000000, token: [1, 2, 3, 4], slot: boot.slot });
         port.postMessage({ type: "exited", slot: 0, id: 0 }); // a marker the supervisor refuses
         const until = Date.now() + 20000;
         while (Atomics.load(flags, flag) === 0 && Date.now() < until) Atomics.wait(flags, flag, 0, 50);
         let answer = "no answer";
         for (let m; (m = receiveMessageOnPort(port)); ) if (m.message.kind === "fetch") answer = String(m.message.buffer);
         out.sendSync(answer);`,
        { bind: { out: outTx } },
      );
      await pollUntil(() => refusedRequests() > refused, "the supervisor to take the fetch");
      unlock(memory.header, H.SEND_LOCK);
      locked = false;
      await pollUntil(() => slotState(slot) === PartyState.FREE, "the supervisor to free the dead party's slot");
      const started = Date.now();
      assert.is(await outRx.recv({ timeout: 30_000 }), "null", "answered (null: no such channel) once the slot is freed");
      assert.ok(Date.now() - started < 5000, `answered ${Date.now() - started} ms after the slot was freed`);
      await run;
    } finally {
      if (locked) unlock(memory.header, H.SEND_LOCK);
    }
    rx.close();
  } finally {
    await dying.terminate();
    await fetcher.close();
  }
}, { timeout: 60_000 });

test("an answer that comes after its fetch gave up (10 s) is not taken as the answer to the next fetch", async () => {
  const dying = await create({ name: "dying" });
  const fetcher = await create({ name: "fetcher" });
  try {
    const [heldRx, heldTx] = createChannel<string>({ name: "held" });
    await dying.exec("globalThis.kept = t;", { bind: { t: heldTx } });
    const slot = slotOf(dying);
    Atomics.add(control, slotWord(slot, P_POSTED), 1); // a registration counted, never posted (killed in between)
    const memory = (await import("../src/transfer.js")).endOf(heldRx)!.memory;
    lock(memory.header, H.SEND_LOCK, 0, () => {}); // its cleanup waits while a live party holds a lock
    const step = new Int32Array(new SharedArrayBuffer(8));
    const [endsRx, endsTx] = createChannel<SendChannel<string>>({ name: "ends" });
    const [liveRx, liveTx] = createChannel<string>({ name: "live" });
    let locked = true;
    try {
      await dying.terminate();
      await pollUntil(() => slotState(slot) === PartyState.EXITED, "the supervisor to notice the death");
      const run = fetcher.exec(
        `import { channelById } from ${JSON.stringify(new URL("../src/registry.ts", import.meta.url).href)};
         let first = "answered";
         try { channelById(2000000000, [1, 2, 3, 4]); } catch (e) { first = e.name + ": " + e.message; }
         Atomics.store(step, 0, 1); Atomics.notify(step, 0);
         if (Atomics.wait(step, 1, 0, 30000) === "timed-out") throw new Error("no second step");
         const tx = ends.recvSync({ timeout: 10000 }); // an end of a live channel: fetched by its capability
         tx.sendSync("second fetch answered with its own answer");
         tx.close();
         globalThis.first = first;`,
        { bind: { step, ends: endsRx } },
      );
      await pollUntil(() => Atomics.load(step, 0) === 1, "the first fetch to give up (10 s)", 30_000);
      unlock(memory.header, H.SEND_LOCK);
      locked = false;
      await pollUntil(() => slotState(slot) === PartyState.FREE, "the supervisor to free the dead party's slot (and answer the first fetch, late)");
      await endsTx.send(liveTx);
      Atomics.store(step, 1, 1);
      Atomics.notify(step, 1);
      await run;
      assert.is(await liveRx.recv({ timeout: 5000 }), "second fetch answered with its own answer");
    } finally {
      if (locked) unlock(memory.header, H.SEND_LOCK);
    }
    heldRx.close();
  } finally {
    await dying.terminate();
    await fetcher.close();
  }
}, { timeout: 90_000 });

test.run();
