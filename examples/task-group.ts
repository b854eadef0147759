/**
 * `node dist/examples/task-group.js`: a group of three workers; one fails
 * on bad input. The group cancels the others (a blocked receive in main is
 * rejected with the reason, the interpreters are terminated, even the one
 * blocked in a synchronous receive) and rethrows the first error, with the
 * others attached. Nothing started in the group outlives it.
 */
import { createChannel, list, TaskGroup, type GroupError } from "interpreters";

const [resultsRx, resultsTx] = createChannel<string>({ capacity: 16, name: "results" });
const [idleRx] = createChannel<string>({ capacity: 0, name: "idle" });
const started = performance.now();
try {
  await TaskGroup.run(async (group) => {
    const workers = await Promise.all(["w1", "w2", "w3"].map((name) => group.create({ name })));
    for (const [i, worker] of workers.entries()) {
      group.spawn(() =>
        worker.exec(
          i === 2
            ? `await new Promise((r) => setTimeout(r, 100)); throw new RangeError("w3: input line 7 is not a number");`
            : `out.sendSync("${worker.name} ready"); idle.recvSync(); // waits forever unless cancelled`,
          { bind: i === 2 ? {} : { out: resultsTx.clone(), idle: idleRx.clone() } },
        ),
      );
    }
    // main waits too, on the group's signal
    group.spawn(async (signal) => {
      for (;;) console.log(`  main received: ${await resultsRx.recv({ signal })}`);
    });
  });
} catch (err) {
  const e = err as GroupError;
  console.log(`\ngroup failed after ${(performance.now() - started).toFixed(0)} ms with: ${e.name}: ${e.message}`);
  for (const other of e.suppressed ?? []) console.log(`  also: ${(other as Error).name}: ${(other as Error).message}`);
}
console.log(`interpreters still alive: ${list().map((i) => `${i.id} "${i.name}"`).join(", ")}`);
