/**
 * TaskGroup: tasks and interpreters started in a group belong to it; a
 * failure cancels the rest (pending channel waits rejected with the reason,
 * interpreters terminated, their sync waits ended), the group waits for all
 * and rethrows the first error with the others attached. Nothing outlives it.
 */
import { suite, assert } from "./_harness.js";
import { ChannelClosedError, createChannel, InterpreterClosedError, list, Lock, select, TaskGroup, type GroupError } from "../src/index.js";

const test = suite("task-group");

test("run: waits for every task and returns the body's result", async () => {
  const order: string[] = [];
  const result = await TaskGroup.run(async (group) => {
    group.spawn(async () => {
      await new Promise((resolve) => setTimeout(resolve, 20));
      order.push("slow");
    });
    group.spawn(() => order.push("fast"));
    return 42;
  });
  assert.is(result, 42);
  assert.equal(order.sort(), ["fast", "slow"]);
});

test("a failing task cancels the others: their channel waits reject with the reason", async () => {
  const [rx] = createChannel<number>({ capacity: 0, name: "never" });
  const boom = new Error("boom");
  let waitError: unknown;
  const err = (await assert.rejects(
    TaskGroup.run(async (group) => {
      group.spawn(async (signal) => {
        try {
          await rx.recv({ signal });
        } catch (e) {
          waitError = e;
          throw e;
        }
      });
      group.spawn(async () => {
        await new Promise((resolve) => setTimeout(resolve, 10));
        throw boom;
      });
    }),
    Error,
    /boom/,
  )) as GroupError;
  assert.is(err, boom);
  assert.is(waitError, boom); // rejected with the group's reason, not a new error
  assert.is(err.suppressed, undefined); // the echo of the cancellation is not repeated
  assert.is(rx.stats().waitingReceivers, 0);
});

test("a failing member takes the group's interpreters down, blocked sync waits included", async () => {
  const [jobsRx, jobsTx] = createChannel<number>({ capacity: 0, name: "jobs" });
  let ids: number[] = [];
  const err = (await assert.rejects(
    TaskGroup.run(async (group) => {
      const a = await group.create({ name: "blocked-a" });
      const b = await group.create({ name: "blocked-b" });
      ids = [a.id, b.id];
      group.spawn(() => a.exec("jobs.recvSync()", { bind: { jobs: jobsRx } })); // blocks forever
      group.spawn(() => b.exec("await new Promise(() => {})")); // never settles
      group.spawn(() => {
        throw new RangeError("bad input in member 3");
      });
    }),
    RangeError,
    /member 3/,
  )) as GroupError;
  // the interpreters' execs failed because they were terminated: attached, not lost
  assert.ok(err.suppressed && err.suppressed.length === 2, String(err.suppressed));
  for (const other of err.suppressed!) assert.instance(other, InterpreterClosedError);
  assert.not.ok(list().some((i) => ids.includes(i.id)), "group interpreters outlived the group");
  // the end bound into the terminated interpreter was released
  await assert.rejects(jobsTx.send(1, { timeout: 10_000 }), ChannelClosedError);
});

test("await using: the group's interpreters do not outlive the block", async () => {
  let id = -1;
  {
    await using group = new TaskGroup();
    const worker = await group.create({ name: "scoped" });
    id = worker.id;
    const [rx, tx] = createChannel<string>({ capacity: 1 });
    group.spawn(() => worker.exec("out.sendSync('done'); out.close();", { bind: { out: tx } }));
    assert.is(await rx.recv({ timeout: 10_000 }), "done");
  }
  assert.not.ok(list().some((i) => i.id === id));
});

test("an interpreter of the group dying of an uncaught error cancels the group", async () => {
  const [rx, tx] = createChannel<number>({ capacity: 0 });
  await assert.rejects(
    TaskGroup.run(async (group) => {
      const crasher = await group.create({ name: "crasher" });
      await crasher.exec("setTimeout(() => { throw new TypeError('late crash'); }, 5)");
      group.spawn((signal) => rx.recv({ signal }));
    }),
    Error,
    /late crash/,
  );
  tx.close(); // used after the wait: a send handle dropped unused may be closed by the garbage collector
});

test("waits inside a task join the group's cancellation even without its signal", async () => {
  const [rx, tx] = createChannel<number>({ capacity: 0, name: "forgotten-signal" });
  const lock = new Lock();
  await lock.acquire();
  const outcomes: string[] = [];
  await assert.rejects(
    TaskGroup.run(async (group) => {
      group.spawn(() => rx.recv().catch((e) => (outcomes.push(`recv: ${(e as Error).message}`), Promise.reject(e))));
      group.spawn(() => select([rx]).catch((e) => (outcomes.push(`select: ${(e as Error).message}`), Promise.reject(e))));
      group.spawn(() => lock.acquire().catch((e) => (outcomes.push(`acquire: ${(e as Error).message}`), Promise.reject(e))));
      group.spawn(async () => {
        await new Promise((resolve) => setTimeout(resolve, 10));
        throw new Error("stop all");
      });
    }),
    Error,
    /stop all/,
  );
  assert.equal(outcomes.sort(), ["acquire: stop all", "recv: stop all", "select: stop all"]);
  assert.is(rx.stats().waitingReceivers, 0);
  lock.release();
  tx.close();
});

test("spawn after the group finished is refused", async () => {
  let saved: TaskGroup | undefined;
  await TaskGroup.run(async (group) => {
    saved = group;
  });
  assert.throws(() => saved!.spawn(() => 1), Error, /finished/);
});

test.run();
