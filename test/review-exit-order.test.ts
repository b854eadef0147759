/**
 * Review of the supervisor's handling of a death reported twice: by the
 * dead interpreter's port closing (after every message it posted) and by
 * its creator's "exited" message, which comes on another port and may be
 * handled first. Releasing the dead party on "exited" while registrations
 * it posted are still queued on its own port forgets what those register.
 */
import { suite, assert } from "./_harness.js";
import { ChannelClosedError, create, createChannel, TimeoutError, type RecvChannel } from "../src/index.js";

const test = suite("review-exit-order");
const indexUrl = JSON.stringify(new URL("../src/index.ts", import.meta.url).href);

test("an interpreter that creates a channel and exits while the supervisor is busy with its earlier requests: its end of that channel is still released", async () => {
  const dying = await create({ name: "dying" });
  const user = await create({ name: "user" });
  try {
    const [outRx, outTx] = createChannel<RecvChannel<string>>({ name: "out" });
    const [resultRx, resultTx] = createChannel<string>({ name: "result" });
    const using = user.exec(
      `const xr = out.recvSync({ timeout: 30000 });
       let result;
       try { xr.recvSync({ timeout: 10000 }); result = "received?"; } catch (e) { result = e.name; }
       done.sendSync(result);`,
      { bind: { out: outRx, done: resultTx } },
    );
    const dyingRun = dying.exec(
      `import { workerData } from "node:worker_threads";
       import { createChannel } from ${indexUrl};
       const port = workerData.__interpretersSupervisor;
       const boot = workerData.__interpreters;
       const flags = new Int32Array(boot.control);
       const flag = 16 + boot.slot * 16 + 3; // this party's fetch flag: raised with each answer
       Atomics.store(flags, flag, 0);
       // Work that keeps the supervisor busy (standing in for a loaded machine):
       // requests queued on this party's port, whose answers are never read.
       for (let i = 0; i < 3000; i++) port.postMessage({ type: "ids", count: 2048, slot: boot.slot });
       Atomics.wait(flags, flag, 0, 20000); // the supervisor has started on them
       const [xr, xt] = createChannel({ name: "x" }); // its registration is queued behind the work
       globalThis.kept = xt; // the only send end, held until this interpreter exits
       out.sendSync(xr);
       process.exit(0);`,
      { bind: { out: outTx } },
    ).catch(() => "exited");
    await dyingRun;
    await using;
    const result = await resultRx.recv({ timeout: 30_000 });
    assert.is(result, ChannelClosedError.name, `the user of x got ${result} (${TimeoutError.name}: the dead party's send end of x was never released)`);
  } finally {
    await dying.terminate();
    await user.close();
  }
}, { timeout: 90_000 });

test.run();
