/**
 * Review of capabilities (issue 18): the supervisor's table must not let a
 * registration replace a live channel, whatever the request says.
 */
import { suite, assert } from "./_harness.js";
import { create, createChannel, type RecvChannel, type SendChannel } from "../src/index.js";
import { endOf } from "../src/transfer.js";
import { H } from "../src/ring.js";
import { MAX_PARTIES, PartyState, refusedRequests, slotId, slotState } from "../src/control.js";

const test = suite("review-capabilities");
const internals = (file: string) => JSON.stringify(new URL(`../src/${file}`, import.meta.url).href);

async function pollUntil(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

test("a registration whose request names a free id but whose memory carries a live channel's id does not replace that channel", async () => {
  const [victimRx, victimTx] = createChannel<string>({ name: "victim" });
  const [carrierRx, carrierTx] = createChannel<SendChannel<string>>({ name: "carrier" });
  const attacker = await create({ name: "attacker" });
  const user = await create({ name: "user" });
  try {
    const refused = refusedRequests();
    await attacker.exec(
      `import { workerData } from "node:worker_threads";
       import { createChannelMemory } from ${internals("ring.ts")};
       const buffer = createChannelMemory({ id: ${victimRx.id}, capacity: 1, bufferBytes: 64, maxBufferBytes: 64, maxMessageBytes: 64, name: "impostor", overflow: 0 });
       workerData.__interpretersSupervisor.postMessage({ type: "channel", id: 2000000001, buffer });
       workerData.__interpretersSupervisor.postMessage({ type: "exited", slot: 0, id: 0 }); // a marker, refused, handled after it`,
    );
    await pollUntil(() => refusedRequests() > refused, "the supervisor to handle the forged registration (and the marker after it)");
    // An interpreter that never saw the victim gets its send end in a message: it must fetch it from the supervisor.
    await carrierTx.send(victimTx);
    await user.exec(`const tx = carrier.recvSync({ timeout: 10000 }); tx.sendSync("still reachable"); tx.close();`, { bind: { carrier: carrierRx } });
    assert.is(await victimRx.recv({ timeout: 5000 }), "still reachable");
    assert.ok(refusedRequests() - refused >= 2, "the forged registration is refused and counted");
  } finally {
    await attacker.close();
    await user.close();
  }
});

test("a forged end (a victim's id without its capability) in a message the supervisor discards releases nothing of the victim", async () => {
  const [victimRx, victimTx] = createChannel<string>({ name: "victim" });
  const [parkRx, parkTx] = createChannel<RecvChannel<string>>({ name: "park" });
  await parkTx.send(victimRx); // the victim's only receive end now travels (counted in transit)
  const victim = endOf(victimTx)!.memory;
  assert.is(victim.get(H.RECV_HANDLES), 1);
  const [carrierRx, carrierTx] = createChannel<unknown>({ name: "carrier" });
  const attacker = await create({ name: "attacker" });
  try {
    await attacker.exec(
      `import { endOf } from ${internals("transfer.ts")};
       import { SendOp, locked } from ${internals("channel-ops.ts")};
       import { R_ATTACH } from ${internals("ring.ts")};
       // A record whose attachment table names the victim's receive end, with a made-up capability.
       const payload = new Uint8Array(33);
       const view = new DataView(payload.buffer);
       view.setUint32(0, 1, true);
       view.setUint8(4, 2); // kind: receive end
       view.setUint32(8, ${victimRx.id}, true);
       for (let w = 0; w < 4; w++) view.setInt32(12 + 4 * w, 7, true);
       payload[32] = 1;
       const message = { length: payload.length, flags: R_ATTACH, copyTo(target, words, at, from, count) { target.set(payload.subarray(from, from + count), at); } };
       const memory = endOf(tx).memory;
       const op = new SendOp(memory, message, false, () => {});
       if (!locked(memory, () => op.attempt())) throw new Error("not written");
       globalThis.kept = rx; // the carrier's only receive end: released by the supervisor when this interpreter dies`,
      { bind: { tx: carrierTx, rx: carrierRx } },
    );
    await attacker.terminate();
    await pollUntil(() => attackerGone(attacker.id), "the supervisor to clean up after the attacker");
    assert.is(victim.load(H.RECV_HANDLES), 1, "the victim's receive end is still counted (in transit)");
    const rx = await parkRx.recv({ timeout: 5000 });
    victimTx.sendSync("still open");
    assert.is(await rx.recv({ timeout: 5000 }), "still open");
  } finally {
    await attacker.terminate();
  }
});

function attackerGone(id: number): boolean {
  for (let slot = 1; slot < MAX_PARTIES; slot++) if (slotId(slot) === id && slotState(slot) !== PartyState.FREE) return false;
  return true;
}

test.run();
