/**
 * Review of capabilities (issue 18): the supervisor's table must not let a
 * registration replace a live channel, whatever the request says.
 */
import { suite, assert } from "./_harness.js";
import { create, createChannel, type SendChannel } from "../src/index.js";
import { refusedRequests } from "../src/control.js";

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

test.run();
