/**
 * InterpreterPool: tasks that kill their thread (process.exit, an uncaught
 * error, resource limits) and aborted tasks (queued, running, finished).
 * Each rejects once, after the ends and Locks its thread held are released;
 * the thread is replaced, and tasks queued behind it still run.
 */
import { suite, assert } from "./_harness.js";
import { ChannelClosedError, createChannel, ExecutionFailed, InterpreterClosedError, InterpreterPool } from "../src/index.js";

const test = suite("pool-death");
const tasks = new URL("./fixtures/pool-tasks.ts", import.meta.url);

/** A task blocked in `block` until `go` is sent (or its thread ends). */
async function startBlocked(pool: InterpreterPool, signal?: AbortSignal) {
  const [goRx, goTx] = createChannel<string>({ capacity: 1, name: "go" });
  const [startedRx, startedTx] = createChannel<string>({ capacity: 1, name: "started" });
  const running = pool.run({ module: tasks, export: "block", args: [goRx, startedTx], signal });
  assert.is(await startedRx.recv({ timeout: 20_000 }), "started");
  return { running, goTx };
}

test("a task that calls process.exit rejects with InterpreterClosedError after its ends are released; the thread is replaced", async () => {
  const pool = new InterpreterPool({ name: "exits", maxInterpreters: 1 });
  try {
    const [rx, tx] = createChannel<string>({ capacity: 1, name: "last words" });
    const err = await assert.rejects(pool.call(tasks, "sendThenExit", tx, "bye"), InterpreterClosedError, /call of sendThenExit .*pool "exits", interpreter \d+ "exits-1": the interpreter exited \(code 0\) while the task ran; the pool replaces it/);
    assert.is((err as InterpreterClosedError).code, "ERR_INTERPRETER_CLOSED");
    assert.is(rx.stats().senders, 0, "released before the rejection");
    assert.is(rx.recvSync({ timeout: 1000 }), "bye");
    assert.throws(() => rx.recvSync({ timeout: 1000 }), ChannelClosedError);
    const who = await pool.call<{ name: string }>(tasks, "whoAmI");
    assert.is(who.name, "exits-2");
  } finally {
    await pool.close();
  }
});

test("a thread that dies of an uncaught error or its resource limits: ExecutionFailed naming the cause; the pool goes on", async () => {
  const pool = new InterpreterPool({ name: "crashes", maxInterpreters: 1, resourceLimits: { maxOldGenerationSizeMb: 32 } });
  try {
    const crash = (await assert.rejects(pool.call(tasks, "crashSoon", "timer boom"), ExecutionFailed, /^Error: timer boom \(call of crashSoon .*pool "crashes".*the interpreter died; the pool replaces it\)$/)) as ExecutionFailed;
    assert.is(crash.remote.message, "timer boom");
    await assert.rejects(pool.call(tasks, "eatMemory"), ExecutionFailed, /memory/);
    assert.is(await pool.call<number>(tasks, "square", 11), 121);
  } finally {
    await pool.close();
  }
});

test("tasks queued behind a task that kills the only thread still run (the pool starts a thread for them)", async () => {
  const pool = new InterpreterPool({ name: "refilled", maxInterpreters: 1 });
  try {
    const dying = pool.call(tasks, "exitThread", 3);
    const queued = Array.from({ length: 5 }, (_, i) => pool.call<number>(tasks, "square", i));
    await assert.rejects(dying, InterpreterClosedError, /code 3/);
    assert.equal(await Promise.all(queued), [0, 1, 4, 9, 16]);
    const again = [pool.call(tasks, "crashSoon", "boom"), ...Array.from({ length: 3 }, (_, i) => pool.call<number>(tasks, "square", i + 5))];
    await assert.rejects(again[0]!, ExecutionFailed, /boom/);
    assert.equal(await Promise.all(again.slice(1)), [25, 36, 49]);
    assert.is(pool.stats().failed, 2);
    assert.is(pool.stats().completed, 8);
  } finally {
    await pool.close();
  }
});

test("abort of a queued task: removed at once, rejected with the reason, never run; the ends it was given are released", async () => {
  const pool = new InterpreterPool({ name: "aborts-queued", maxInterpreters: 1 });
  try {
    const { running, goTx } = await startBlocked(pool);
    const controller = new AbortController();
    const [rx, tx] = createChannel<number>({ capacity: 4, name: "never produced" });
    const queued = pool.run({ module: tasks, export: "produce", args: [tx, 3], signal: controller.signal });
    assert.is(pool.stats().queued, 1);
    controller.abort(new Error("not needed after all"));
    await assert.rejects(queued, Error, /not needed after all/);
    assert.is(pool.stats().queued, 0);
    await assert.rejects(rx.recv({ timeout: 10_000 }), ChannelClosedError); // nothing was sent: it never ran
    goTx.sendSync("go");
    assert.is(await running, "go");
    assert.is(await pool.call<number>(tasks, "square", 2), 4);
  } finally {
    await pool.close();
  }
});

test("abort of a running task: its interpreter is ended, the rejection comes after its ends are released", async () => {
  const pool = new InterpreterPool({ name: "aborts-running", maxInterpreters: 1 });
  try {
    const controller = new AbortController();
    const [holdRx, holdTx] = createChannel<string>({ capacity: 1, name: "held" });
    const [startedRx, startedTx] = createChannel<string>({ capacity: 1 });
    const running = pool.run({ module: tasks, export: "block", args: [holdRx, startedTx], signal: controller.signal });
    assert.is(await startedRx.recv({ timeout: 20_000 }), "started");
    const queued = pool.call<number>(tasks, "square", 3);
    controller.abort(new RangeError("stop it"));
    await assert.rejects(running, RangeError, /stop it/);
    assert.is(holdTx.stats().receivers, 0, "the running task's end was released before the rejection");
    assert.is(await queued, 9, "the task queued behind it runs on a new interpreter");
  } finally {
    await pool.close();
  }
});

test("an abort after the task finished changes nothing; an already-aborted signal is refused at once", async () => {
  const pool = new InterpreterPool({ name: "aborts-late", maxInterpreters: 1 });
  try {
    const controller = new AbortController();
    assert.is(await pool.run<number>({ module: tasks, export: "square", args: [4], signal: controller.signal }), 16);
    controller.abort();
    assert.is(await pool.call<number>(tasks, "square", 5), 25);
    await assert.rejects(pool.run({ module: tasks, export: "square", args: [1], signal: controller.signal }), Error, /aborted/);
    const reason = new TypeError("no");
    await assert.rejects(pool.run({ module: tasks, export: "square", args: [1], signal: AbortSignal.abort(reason) }), TypeError, /^no$/);
    assert.equal(pool.stats().failed, 0, "refused tasks are not counted as failed");
  } finally {
    await pool.close();
  }
});

test.run();
