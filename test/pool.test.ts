/**
 * InterpreterPool: tasks run in pool interpreters (current(), list(),
 * channel ends moved in and out, Locks shared, deadlock detection), errors
 * and bad input name the pool and leave it usable, maxQueue refuses at
 * once, stats() counts, close()/terminate()/asyncDispose, options reach the
 * interpreters, and an idle pool never keeps the process alive.
 * Deaths and aborts: pool-death.test.ts; the seeded stress: pool-stress.test.ts.
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { suite, assert, withTimeout } from "./_harness.js";
import {
  ChannelClosedError,
  ChannelFullError,
  create,
  createChannel,
  ExecutionFailed,
  InterpreterClosedError,
  InterpreterPool,
  list,
  Lock,
  NotShareableError,
  type RecvChannel,
} from "../src/index.js";

const test = suite("pool");
const tasks = new URL("./fixtures/pool-tasks.ts", import.meta.url);
const repoRoot = fileURLToPath(new URL("..", import.meta.url));

/** One pool for the tests that need no pool of their own (threads start once). */
const shared = new InterpreterPool({ name: "shared", maxInterpreters: 2 });
const sharedPool = (): InterpreterPool => shared;

test.after(async () => {
  await shared.terminate();
});

test("call and run: results, and every pool thread is an interpreter named after the pool", async () => {
  assert.is(await shared.call<number>(tasks, "default", 2, 3), 5);
  assert.is(await shared.call<number>(tasks, undefined, 4, 5), 9);
  assert.is(await shared.run<number>({ module: tasks, export: "square", args: [7] }), 49);
  const who = await shared.call<{ id: number; name: string }>(tasks, "whoAmI");
  assert.match(who.name, /^shared-\d+$/);
  assert.ok(who.id > 0);
  assert.ok(list().some((i) => i.id === who.id && i.name === who.name), "list() shows the pool interpreter");
  const squares = await Promise.all(Array.from({ length: 20 }, (_, i) => shared.call<number>(tasks, "square", i)));
  assert.equal(squares, Array.from({ length: 20 }, (_, i) => i * i));
});

test("module specifiers resolve as for Interpreter.call: URL, href, absolute path, relative to the calling file, bare", async () => {
  assert.is(await shared.call<number>(tasks.href, "square", 3), 9);
  assert.is(await shared.call<number>(fileURLToPath(tasks), "square", 4), 16);
  assert.is(await shared.call<number>("./fixtures/pool-tasks.ts", "square", 5), 25, "relative to this file, not to the current directory");
  assert.is(await shared.call<string>("node:path", "basename", "/a/b/c.txt"), "c.txt");
  assert.is(await shared.call<boolean>("uvu/assert", "ok", true), undefined, "a bare specifier, resolved from this file");
  const err = (await assert.rejects(shared.call("./fixtures/pool-no-such-module.ts", "x"), ExecutionFailed)) as ExecutionFailed;
  assert.match(err.message, /cannot import "\.\/fixtures\/pool-no-such-module\.ts", resolved against file:\/\/.*\/test\/pool\.test\.ts \(the calling file\)/);
  assert.match(err.message, /pool "shared"/);
});

test("a task that throws rejects with ExecutionFailed (remote name, message, stack) naming the pool; the pool goes on", async () => {
  const err = (await assert.rejects(shared.call(tasks, "fail", "bad thing"), ExecutionFailed)) as ExecutionFailed;
  assert.is(err.remote.name, "RangeError");
  assert.is(err.remote.message, "bad thing");
  assert.ok(err.remote.stack.includes("fail"), err.remote.stack);
  assert.match(err.message, /^RangeError: bad thing \(call of fail from .*pool-tasks\.ts on pool "shared", interpreter \d+ "shared-\d+"\)$/);
  assert.is(await shared.call<number>(tasks, "square", 5), 25);
});

test("bad input is refused with an error naming the pool, and the pool stays usable", async () => {
  await assert.rejects(shared.call(new URL("./fixtures/pool-no-such-module.ts", import.meta.url), "x"), ExecutionFailed, /pool-no-such-module.*pool "shared"/);
  await assert.rejects(shared.call(tasks, "notAFunction"), ExecutionFailed, /export "notAFunction" .* is a number, not a function.*pool "shared"/);
  await assert.rejects(shared.call(tasks, "noSuchExport"), ExecutionFailed, /export "noSuchExport" .* is missing/);
  await assert.rejects(shared.call(tasks, "square", () => 1), NotShareableError, /value\[0\]/);
  await assert.rejects(shared.call(tasks, "returnsFunction"), ExecutionFailed, /result cannot be sent back.*pool "shared"/);
  await assert.rejects(shared.run({ module: 42 as never }), TypeError, /call of default on pool "shared": module must be a URL or a non-empty string/);
  await assert.rejects(shared.run({ module: tasks, export: 3 as never }), TypeError, /export must be a string/);
  await assert.rejects(shared.run({ module: tasks, args: "x" as never }), TypeError, /args must be an array/);
  await assert.rejects(shared.run(null as never), TypeError, /pool "shared"/);
  // A channel end in arguments that cannot cross stays here, open.
  const [rx, tx] = createChannel<number>({ capacity: 1 });
  await assert.rejects(shared.call(tasks, "produce", tx, () => 1), NotShareableError);
  tx.sendSync(1);
  assert.is(rx.recvSync({ timeout: 1000 }), 1);
  assert.is(await shared.call<number>(tasks, "square", 6), 36);
});

test("bad options are refused with RangeError or TypeError naming the pool", () => {
  assert.throws(() => new InterpreterPool({ name: "q", maxQueue: -1 }), RangeError, /InterpreterPool "q": maxQueue must be an integer >= 0 or Infinity, got -1/);
  assert.throws(() => new InterpreterPool({ name: "q", maxQueue: 1.5 }), RangeError, /maxQueue/);
  assert.throws(() => new InterpreterPool({ name: "q", maxInterpreters: 0 }), RangeError, /"q": maxInterpreters must be an integer >= 1/);
  assert.throws(() => new InterpreterPool({ name: "q", maxInterpreters: 1000 }), RangeError, /at most 254/);
  assert.throws(() => new InterpreterPool({ name: "q", minInterpreters: 3, maxInterpreters: 2 }), RangeError, /minInterpreters \(3\) must not exceed maxInterpreters \(2\)/);
  assert.throws(() => new InterpreterPool({ name: "q", idleTimeout: -5 }), RangeError, /idleTimeout/);
  assert.throws(() => new InterpreterPool({ name: "q", env: { A: 1 as never } }), TypeError, /env\.A must be a string/);
  assert.throws(() => new InterpreterPool({ name: "" }), TypeError, /name must be a non-empty string/);
});

test("maxQueue: refused at once with ChannelFullError naming the pool while all interpreters are busy; usable after", async () => {
  for (const maxQueue of [0, 1]) {
    const pool = new InterpreterPool({ name: `limited-${maxQueue}`, maxInterpreters: 1, maxQueue });
    try {
      const [goRx, goTx] = createChannel<string>({ capacity: 1 });
      const [startedRx, startedTx] = createChannel<string>({ capacity: 1 });
      const blocked = pool.call(tasks, "block", goRx, startedTx);
      assert.is(await startedRx.recv({ timeout: 20_000 }), "started");
      const waiting = Array.from({ length: maxQueue }, (_, i) => pool.call<number>(tasks, "square", i + 2));
      const err = await assert.rejects(pool.call(tasks, "square", 3), ChannelFullError, new RegExp(`pool "limited-${maxQueue}".*maxQueue ${maxQueue}`));
      assert.is((err as ChannelFullError).code, "ERR_CHANNEL_FULL");
      assert.is(pool.stats().queued, maxQueue);
      goTx.sendSync("go");
      assert.is(await blocked, "go");
      assert.equal(await Promise.all(waiting), Array.from({ length: maxQueue }, (_, i) => (i + 2) ** 2));
      assert.is(await pool.call<number>(tasks, "square", 8), 64);
    } finally {
      await pool.close();
    }
  }
});

test("arguments are taken as they were at the call, even when the task waits in the queue", async () => {
  const pool = new InterpreterPool({ name: "snapshot", maxInterpreters: 1 });
  try {
    const [goRx, goTx] = createChannel<string>({ capacity: 1 });
    const [startedRx, startedTx] = createChannel<string>({ capacity: 1 });
    const blocked = pool.call(tasks, "block", goRx, startedTx);
    await startedRx.recv({ timeout: 20_000 });
    const numbers = [2, 3];
    const object = { a: 1 };
    const plain = pool.run<number>({ module: tasks, export: "default", args: numbers });
    const encoded = pool.call<number>(tasks, "echo", object);
    numbers[0] = 100;
    object.a = 100;
    goTx.sendSync("go");
    await blocked;
    assert.is(await plain, 5);
    assert.equal(await encoded, { a: 1 });
  } finally {
    await pool.close();
  }
});

test("channel ends passed as arguments move into tasks and are used there; ends in results move back", async () => {
  const [rx, tx] = createChannel<number>({ capacity: 4, name: "numbers" });
  const producing = shared.call<number>(tasks, "produce", tx, 1000);
  const summing = shared.call<number>(tasks, "sumAll", rx);
  assert.throws(() => tx.trySend(1), ChannelClosedError, /moved/);
  assert.is(await producing, 1000);
  assert.is(await summing, (999 * 1000) / 2);
  assert.is(rx.stats().senders + rx.stats().receivers, 0, "both ends released once the tasks ended");
  const made = await shared.call<RecvChannel<number>>(tasks, "channelOf", [1, 2, 3]);
  const got: number[] = [];
  for await (const value of made) got.push(value);
  assert.equal(got, [1, 2, 3]);
});

test("a Lock is shared between this thread and pool tasks, and released when its holder's thread dies", async () => {
  const lock = new Lock();
  lock.acquireSync({ timeout: 1000 });
  assert.is(await shared.call<boolean>(tasks, "tryLock", lock), false);
  lock.release();
  assert.is(await shared.call<boolean>(tasks, "tryLock", lock), true);
  const [startedRx, startedTx] = createChannel<string>({ capacity: 1 });
  const [releaseRx, releaseTx] = createChannel<string>({ capacity: 1 });
  const holding = shared.call<string>(tasks, "holdLock", lock, startedTx, releaseRx);
  assert.is(await startedRx.recv({ timeout: 20_000 }), "holding");
  assert.is(lock.tryAcquire(), false);
  releaseTx.sendSync("go");
  assert.is(await holding, "released");
  const [startedRx2, startedTx2] = createChannel<string>({ capacity: 1 });
  const dying = shared.call(tasks, "lockThenExit", lock, startedTx2);
  assert.is(await startedRx2.recv({ timeout: 20_000 }), "holding");
  await assert.rejects(dying, InterpreterClosedError, /exited \(code 7\)/);
  assert.is(lock.tryAcquire(), true, "the dead thread's lock was released before the task rejected");
  lock.release();
});

test("SharedArrayBuffers and Locks inside arguments and results are shared, not copied", async () => {
  const shared = new SharedArrayBuffer(8);
  const back = await sharedPool().call<{ shared: SharedArrayBuffer }>(tasks, "writeShared", { shared }, 42);
  assert.is(Atomics.load(new Int32Array(shared), 0), 42, "the task wrote into this very buffer");
  Atomics.store(new Int32Array(back.shared), 1, 7);
  assert.is(Atomics.load(new Int32Array(shared), 1), 7, "the result holds the same buffer");
  const lock = new Lock();
  const { lock: returned } = await sharedPool().call<{ lock: Lock }>(tasks, "lockBack", lock);
  lock.acquireSync({ timeout: 1000 });
  assert.is(returned.tryAcquire(), false, "the same lock");
  lock.release();
});

test("a deadlock inside a pool interpreter is detected and named", async () => {
  const err = (await assert.rejects(shared.call(tasks, "selfDeadlock"), ExecutionFailed, /DeadlockError/)) as ExecutionFailed;
  assert.is(err.remote.name, "DeadlockError");
  assert.match(err.remote.message, /interpreter \d+ "shared-\d+" waits to recv on channel \d+ "mine", whose only sender is itself/);
});

test("stats() counts interpreters, busy, queued, completed and failed", async () => {
  const pool = new InterpreterPool({ name: "counted", maxInterpreters: 1 });
  try {
    assert.equal(pool.stats(), { interpreters: 0, busy: 0, queued: 0, completed: 0, failed: 0 });
    const [goRx, goTx] = createChannel<string>({ capacity: 1 });
    const [startedRx, startedTx] = createChannel<string>({ capacity: 1 });
    const blocked = pool.call(tasks, "block", goRx, startedTx);
    await startedRx.recv({ timeout: 20_000 });
    const queued = [pool.call(tasks, "square", 2), pool.call(tasks, "fail", "x")];
    assert.equal(pool.stats(), { interpreters: 1, busy: 1, queued: 2, completed: 0, failed: 0 });
    goTx.sendSync("go");
    await blocked;
    await Promise.allSettled(queued);
    assert.equal(pool.stats(), { interpreters: 1, busy: 0, queued: 0, completed: 2, failed: 1 });
  } finally {
    await pool.close();
  }
  assert.is(pool.stats().interpreters, 0);
});

test("close(): queued tasks finish, then every interpreter ends; later calls are refused naming the pool", async () => {
  const pool = new InterpreterPool({ name: "closing", maxInterpreters: 1 });
  const results = Array.from({ length: 5 }, (_, i) => pool.call<unknown>(tasks, "sleep", 5, i));
  const closed = pool.close();
  await assert.rejects(pool.call(tasks, "square", 1), InterpreterClosedError, /call of square on pool "closing": the pool is closing/);
  assert.equal(await Promise.all(results), [0, 1, 2, 3, 4]);
  await closed;
  assert.is(pool.stats().interpreters, 0);
  assert.not.ok(list().some((i) => i.name.startsWith("closing-")), "its interpreters are gone");
  await assert.rejects(pool.call(tasks, "square", 1), InterpreterClosedError, /the pool is closed; create a new InterpreterPool/);
  await pool.close(); // idempotent
});

test("Symbol.asyncDispose closes the pool", async () => {
  let pool: InterpreterPool | undefined;
  {
    await using p = new InterpreterPool({ name: "disposed", maxInterpreters: 1 });
    pool = p;
    assert.is(await p.call<number>(tasks, "square", 3), 9);
  }
  await assert.rejects(pool.call(tasks, "square", 1), InterpreterClosedError, /closed/);
  assert.not.ok(list().some((i) => i.name.startsWith("disposed-")));
});

test("terminate(): queued tasks are rejected, running ones end with their interpreters, their ends released", async () => {
  const pool = new InterpreterPool({ name: "doomed", maxInterpreters: 1 });
  const [holdRx, holdTx] = createChannel<string>({ capacity: 1, name: "held by the running task" });
  const [startedRx, startedTx] = createChannel<string>({ capacity: 1 });
  const running = pool.call(tasks, "block", holdRx, startedTx);
  await startedRx.recv({ timeout: 20_000 });
  const [queuedRx, queuedTx] = createChannel<number>({ capacity: 1, name: "in a queued task" });
  const queued = pool.call(tasks, "produce", queuedTx, 3);
  const runningFails = assert.rejects(running, InterpreterClosedError, /pool "doomed": the pool was terminated while the task ran/);
  const queuedFails = assert.rejects(queued, InterpreterClosedError, /the pool was terminated before the task started/);
  await pool.terminate();
  await runningFails;
  await queuedFails;
  assert.is(holdTx.stats().receivers, 0, "the running task's end was released");
  await assert.rejects(queuedRx.recv({ timeout: 10_000 }), ChannelClosedError); // never ran; its end released
  await assert.rejects(pool.call(tasks, "square", 1), InterpreterClosedError, /closed/);
});

test("minInterpreters start at once; idleTimeout ends the idle ones above it", async () => {
  const pool = new InterpreterPool({ name: "sized", minInterpreters: 1, maxInterpreters: 2, idleTimeout: 50 });
  try {
    assert.is(pool.stats().interpreters, 1);
    const [goRx, goTx] = createChannel<string>({ capacity: 1 });
    const [startedRx, startedTx] = createChannel<string>({ capacity: 1 });
    const blocked = pool.call(tasks, "block", goRx, startedTx);
    await startedRx.recv({ timeout: 20_000 });
    assert.is(await pool.call<number>(tasks, "square", 3), 9); // needs the second interpreter
    assert.is(pool.stats().interpreters, 2);
    goTx.sendSync("go");
    await blocked;
    const deadline = performance.now() + 20_000;
    while (pool.stats().interpreters > 1 && performance.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20));
    assert.is(pool.stats().interpreters, 1, "back to minInterpreters");
  } finally {
    await pool.close();
  }
});

test("env and resourceLimits reach the interpreters", async () => {
  const pool = new InterpreterPool({ name: "configured", maxInterpreters: 1, env: { POOL_GREETING: "hello" }, resourceLimits: { maxOldGenerationSizeMb: 32 } });
  try {
    assert.is(await pool.call<string>(tasks, "envOf", "POOL_GREETING"), "hello");
    const err = (await assert.rejects(pool.call(tasks, "eatMemory"), ExecutionFailed, /memory.*call of eatMemory .*pool "configured".*the interpreter died; the pool replaces it/)) as ExecutionFailed;
    assert.match(err.remote.message, /memory/);
    assert.is(await pool.call<string>(tasks, "envOf", "POOL_GREETING"), "hello", "its replacement works");
  } finally {
    await pool.close();
  }
});

test("a pool created inside an interpreter: its threads are interpreters too", async () => {
  const outer = await create({ name: "pool owner" });
  try {
    const [rx, tx] = createChannel<string>({ capacity: 1 });
    await outer.exec(
      `
      import { InterpreterPool } from "interpreters";
      const pool = new InterpreterPool({ name: "nested", maxInterpreters: 1 });
      const who = await pool.call(tasks, "whoAmI");
      out.sendSync(who.name + " " + (await pool.call(tasks, "square", 9)));
      await pool.close();
    `,
      { bind: { out: tx, tasks: tasks.href } },
    );
    assert.is(await rx.recv({ timeout: 10_000 }), "nested-1 81");
  } finally {
    await outer.close();
  }
});

function runNode(args: string[], what: string): Promise<{ code: number | null; output: string }> {
  return withTimeout(
    new Promise((resolve) => {
      const child = spawn(process.execPath, args, { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
      let output = "";
      child.stdout.on("data", (d) => (output += d));
      child.stderr.on("data", (d) => (output += d));
      child.on("exit", (code) => resolve({ code, output }));
    }),
    60_000,
    what,
  );
}

const idleScript = (entry: string, module: string): string => `
  import { InterpreterPool } from ${JSON.stringify(entry)};
  const pool = new InterpreterPool({ minInterpreters: 1, maxInterpreters: 2, idleTimeout: 60_000 });
  console.log("square", await pool.call(${module}, "square", 12));
  // No close(): the idle pool (two threads kept for a minute) must not keep the process alive.
`;

test("an idle pool does not keep the process alive (from source)", async () => {
  const { code, output } = await runNode(["--import", "tsx", "--input-type=module", "-e", idleScript("./src/index.ts", JSON.stringify(tasks.href))], "source child exits");
  assert.is(code, 0, output);
  assert.match(output, /square 144/);
});

test("under tsx with the built package, pool threads import .ts task modules (the TypeScript loader an interpreter gets)", async () => {
  const { code, output } = await runNode(["--import", "tsx", "test/fixtures/pool-tsx-main.ts"], "node --import tsx pool-tsx-main.ts");
  assert.is(code, 0, output);
  assert.match(output, /typed: ts-pool-1: 49/);
});

test("the built package works: pool threads run dist/workers/pool-worker.js", async () => {
  const module = `"data:text/javascript,export const square = (x) => x * x;"`;
  const { code, output } = await runNode(["--input-type=module", "-e", idleScript("interpreters", module)], "built child exits");
  assert.is(code, 0, output);
  assert.match(output, /square 144/);
});

test.run();
