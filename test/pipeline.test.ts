/**
 * Pipelines: what flows through (functions, filters, generators, sinks,
 * sources of every kind), errors that name the stage and the item, deaths,
 * hangs, cancellation in every form, and no interpreter left behind.
 */
import { create, createChannel, list, NotShareableError, pipeline, Pipeline, stage, StageFailed, DeadlockError, ChannelClosedError } from "../src/index.js";
import { suite, assert, withTimeout } from "./_harness.js";

const test = suite("pipeline");
const stages = new URL("./fixtures/pipeline-stages.ts", import.meta.url);
const s = (exportName: string, options: Parameters<typeof stage>[1] = {}) => stage(stages, { export: exportName, ...options });
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

async function collect<T>(p: Pipeline<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of p) out.push(item);
  return out;
}

/** Only the main interpreter is left. */
function assertNoInterpreters(what: string): void {
  const live = list();
  assert.is(live.length, 1, `${what}: interpreters still live: ${live.map((i) => `${i.id} "${i.name}"`).join(", ")}`);
}

async function settled(p: Pipeline<unknown>): Promise<unknown> {
  try {
    await p.done;
    return undefined;
  } catch (err) {
    return err;
  }
}

test("items flow through function stages in order, with several workers", async () => {
  const p = pipeline<number>({ source: range(500), stages: [s("double"), s("increment", { workers: 3 }), s("increment", { workers: 2, capacity: 0 })] });
  const out = await collect(p);
  assert.equal(out, range(500).map((n) => n * 2 + 2));
  const stats = await p.done;
  assert.is(stats.stages.length, 3);
  assert.equal(stats.stages.map((x) => x.name), ["pipeline-stages.double", "pipeline-stages.increment", "pipeline-stages.increment-2"]);
  for (const st of stats.stages) {
    assert.is(st.in, 500);
    assert.is(st.out, 500);
  }
  assert.is(stats.inFlight, 0);
  assertNoInterpreters("after done");
});

test("undefined filters; generators (sync and async) get the items and keep state; context names stage and worker", async () => {
  const filtered = await collect(pipeline<number>({ source: range(20), stages: [s("evens")] }));
  assert.equal(filtered, range(10).map((n) => n * 2));
  const pairs = await collect(pipeline({ source: [1, 2, 3, 4], stages: [s("pairs")] }));
  assert.equal(pairs, [[1, 2], [2, 3], [3, 4]]);
  const sum = await collect(pipeline({ source: range(101), stages: [s("sumAll")] }));
  assert.equal(sum, [5050]);
  const names = await collect(pipeline<string>({ source: range(4), stages: [s("whoAmI", { name: "who", workers: 2, order: "completion" })] }));
  assert.is(names.length, 4);
  for (const name of names) assert.ok(name === "who#0" || name === "who#1", name);
  assertNoInterpreters("after the pipelines");
});

test("async stages, async generator and RecvChannel sources, and a sink (closed at the end)", async () => {
  async function* numbers(): AsyncGenerator<number> {
    for (let i = 0; i < 50; i++) {
      if (i % 10 === 0) await new Promise((resolve) => setTimeout(resolve, 1));
      yield i;
    }
  }
  const viaAsync = await collect(pipeline<number>({ source: numbers(), stages: [s("slowAsync", { workers: 2 })] }));
  assert.equal(viaAsync, range(50));

  const [sourceRx, sourceTx] = createChannel<number>({ capacity: 4 });
  const [sinkRx, sinkTx] = createChannel<number>({ capacity: 8 });
  const p = pipeline<number>({ source: sourceRx, stages: [s("double")], sink: sinkTx });
  const feeding = (async () => {
    for (let i = 0; i < 100; i++) await sourceTx.send(i);
    sourceTx.close();
  })();
  const received: number[] = [];
  for await (const value of sinkRx) received.push(value); // ends: the pipeline closed its sink handle, the worker its own
  await feeding;
  await p.done;
  assert.equal(received, range(100).map((n) => n * 2));
  assert.throws(() => sinkTx.trySend(1), ChannelClosedError);
  assert.throws(() => p[Symbol.asyncIterator](), TypeError, /sink/);
  assertNoInterpreters("after the sink pipeline");
});

test("bad options are refused with the option named, and nothing starts", () => {
  assert.throws(() => stage(stages, { workers: 0 }), RangeError, /workers/);
  assert.throws(() => stage(stages, { capacity: -1 }), RangeError, /capacity/);
  assert.throws(() => stage(stages, { capacity: 1.5 }), RangeError, /capacity/);
  assert.throws(() => stage(stages, { overflow: "sometimes" as never }), RangeError, /overflow/);
  assert.throws(() => stage(stages, { capacity: 0, overflow: "drop-oldest" }), RangeError, /drop-oldest/);
  assert.throws(() => stage(stages, { order: "random" as never }), RangeError, /order/);
  assert.throws(() => stage(stages, { key: "id", order: "input" }), RangeError, /key/);
  assert.throws(() => stage(stages, { onError: "ignore" as never }), RangeError, /onError/);
  assert.throws(() => pipeline({ source: 42 as never, stages: [s("double")] }), TypeError, /source/);
  assert.throws(() => pipeline({ source: [], stages: [] }), TypeError, /stages/);
  assert.throws(() => pipeline({ source: [], stages: [{ name: "fake" } as never] }), TypeError, /stage\(\)/);
  assert.throws(() => pipeline({ source: [], stages: [s("double")], sink: {} as never }), TypeError, /sink/);
  assert.is(stage(stages).name, "pipeline-stages");
  assert.is(stage(stages, { export: "double" }).name, "pipeline-stages.double");
  assertNoInterpreters("after refusals");
});

test("a throwing stage fails the pipeline with StageFailed: stage, worker, item index and preview, remote stack", async () => {
  const p = pipeline<number>({ source: range(40), stages: [s("double"), s("failOn13", { name: "picky", workers: 2 })], name: "throws" });
  // 13 is never an output of double (odd): feed it straight
  const q = pipeline<number>({ source: range(40), stages: [s("increment"), s("failOn13", { name: "picky" })], name: "throws" });
  await collect(p); // no 13 reaches it: completes
  let thrown: unknown;
  try {
    await collect(q);
  } catch (err) {
    thrown = err;
  }
  assertNoInterpreters("right after the iteration threw");
  const err = thrown as StageFailed;
  assert.instance(err, StageFailed);
  assert.is(err.code, "ERR_STAGE_FAILED");
  assert.is(err.stage, "picky");
  assert.is(err.worker, 0);
  assert.equal(err.item, { index: 12, preview: "13" });
  assert.is(err.remote.name, "RangeError");
  assert.match(err.remote.message, /unlucky 13/);
  assert.match(err.remote.stack, /failOn13/);
  assert.match(err.message, /stage "picky" worker 0 failed on item 12 13: RangeError: unlucky 13/);
  assert.is(await settled(q), err);
});

test("onError skip: the item is counted in failed, a 'skip' event carries StageFailed, the rest goes on", async () => {
  const p = pipeline<number>({ source: range(30), stages: [s("failOn13", { onError: "skip", workers: 2 })] });
  const skipped: StageFailed[] = [];
  p.on("skip", (err) => skipped.push(err));
  const out = await collect(p);
  assert.equal(out, range(30).filter((n) => n !== 13));
  const stats = await p.done;
  assert.is(stats.stages[0]!.failed, 1);
  assert.is(skipped.length, 1);
  assert.equal(skipped[0]!.item, { index: 13, preview: "13" });
  assert.is(skipped[0]!.remote.name, "RangeError");

  const g = pipeline<number>({ source: range(23).slice(1), stages: [s("failingGenerator", { onError: "skip" })] });
  const fromGenerator = await collect(g);
  assert.equal(fromGenerator, range(23).slice(1).filter((n) => n % 5 !== 0));
  assert.is((await g.done).stages[0]!.failed, 4);
  assertNoInterpreters("after skipping");
});

test("items and outputs that cannot cross to an interpreter are named by their position", async () => {
  const p = pipeline({ source: [1, 2, { handler: () => 3 }], stages: [s("passItem")] });
  const err = (await settled(p)) as NotShareableError;
  assert.instance(err, NotShareableError);
  assert.match(err.message, /source item 2 .*handler.* cannot be sent to stage "pipeline-stages.passItem"/);
  assert.is(err.path, "value.handler");
  const q = pipeline({ source: [1, 2, 3], stages: [s("makeFunction")] });
  const failed = (await settled(q)) as StageFailed;
  assert.instance(failed, StageFailed);
  assert.is(failed.item?.index, 1);
  assert.is(failed.remote.name, "NotShareableError");
  assert.match(failed.remote.message, /the output for item 1 cannot be sent to the next stage/);
  assertNoInterpreters("after unshareable items");
});

test("a stage module that cannot load, an export that is not a function, a non-Error thrown: each a clear StageFailed", async () => {
  const missing = pipeline({ source: [1], stages: [stage(new URL("./fixtures/pipeline-missing.ts", import.meta.url))] });
  const e1 = (await settled(missing)) as StageFailed;
  assert.instance(e1, StageFailed);
  assert.is(e1.item, undefined);
  assert.match(e1.message, /pipeline-missing/);
  const notFunction = pipeline({ source: [1], stages: [s("notAFunction")] });
  const e2 = (await settled(notFunction)) as StageFailed;
  assert.match(e2.message, /export "notAFunction" .* is a number/);
  const plain = pipeline({ source: [1], stages: [s("throwString")] });
  const e3 = (await settled(plain)) as StageFailed;
  assert.match(e3.message, /a plain string/);
  assert.equal(e3.item, { index: 0, preview: "1" });
  assertNoInterpreters("after load failures");
});

test("an interpreter that dies by process.exit or out of memory fails the pipeline, naming the item", async () => {
  const exits = pipeline({ source: range(20), stages: [s("double"), s("exitOn7", { name: "quitter" })] });
  // double makes 7 impossible; feed exitOn7 directly
  await settled(exits);
  const direct = pipeline({ source: range(20), stages: [s("exitOn7", { name: "quitter" })] });
  const err = (await settled(direct)) as StageFailed;
  assertNoInterpreters("after the exit");
  assert.instance(err, StageFailed);
  assert.is(err.stage, "quitter");
  assert.is(err.item?.index, 7);
  assert.is(err.item?.preview, "7");
  assert.match(err.message, /died while processing item 7/);
  assert.match(err.remote.message, /code 3/);

  const oom = pipeline({ source: range(10), stages: [s("oomOn5", { name: "hog", resourceLimits: { maxOldGenerationSizeMb: 32, maxYoungGenerationSizeMb: 8 } })] });
  const oomErr = (await settled(oom)) as StageFailed;
  assertNoInterpreters("after the out-of-memory death");
  assert.instance(oomErr, StageFailed);
  assert.is(oomErr.stage, "hog");
  assert.is(oomErr.item?.index, 5);
  assert.match(oomErr.message, /memory/i);
}, { timeout: 60_000 });

test("a stage stuck in a synchronous wait on itself ends in DeadlockError, not a hang", async () => {
  const p = pipeline({ source: [1, 2], stages: [s("selfDeadlock", { name: "stuck" })] });
  const err = (await withTimeout(settled(p), 20_000, "the deadlocked pipeline")) as StageFailed;
  assert.instance(err, StageFailed);
  assert.is(err.stage, "stuck");
  assert.is(err.remote.name, DeadlockError.name);
  assert.equal(err.item, { index: 0, preview: "1" });
  assertNoInterpreters("after the deadlock");
});

test("cancel() is prompt with workers blocked in recvSync and in Atomics.wait; done rejects with the reason", async () => {
  const [rx, tx] = createChannel<number>({ capacity: 0, name: "never sent on" });
  const p = pipeline({ source: [{ rx }], stages: [s("recvFromItem", { name: "waiting" })] });
  const q = pipeline({ source: range(4), stages: [s("blockForever", { name: "blocked", workers: 2 })] });
  await waitUntil(() => p.stats().stages[0]!.in === 1 && q.stats().stages[0]!.in >= 2, "both stages to take their items");
  const started = Date.now();
  const reason = new Error("enough");
  await Promise.all([p.cancel(reason), q.cancel()]);
  assert.ok(Date.now() - started < 5000, `cancel took ${Date.now() - started} ms`);
  assert.is(await settled(p), reason);
  const abort = (await settled(q)) as DOMException;
  assert.is(abort.name, "AbortError");
  assertNoInterpreters("after cancel");
  tx.close();
});

test("the signal, leaving for-await early, and await using each stop the pipeline promptly", async () => {
  const controller = new AbortController();
  const p = pipeline({ source: range(1_000_000), stages: [s("blockForever")], signal: controller.signal });
  await waitUntil(() => p.stats().stages[0]!.in > 0, "the stage to start");
  controller.abort(new Error("stop now"));
  assert.match(String(((await settled(p)) as Error).message), /stop now/);
  assertNoInterpreters("after the signal");

  let returned = false;
  function* endless(): Generator<number> {
    try {
      for (let i = 0; ; i++) yield i;
    } finally {
      returned = true;
    }
  }
  const q = pipeline<number>({ source: endless(), stages: [s("double", { workers: 2 })] });
  let seen = 0;
  for await (const value of q) {
    assert.is(value, seen * 2);
    if (++seen === 100) break;
  }
  assertNoInterpreters("right after break");
  const stats = await q.done; // leaving the loop is not a failure
  assert.ok(stats.stages[0]!.in >= 100);
  assert.ok(returned, "the source's iterator was returned");

  {
    await using r = pipeline({ source: range(1_000_000), stages: [s("blockForever", { workers: 2 })] });
    await waitUntil(() => r.stats().stages[0]!.in > 0, "the stage to start");
  }
  assertNoInterpreters("after await using");

  const already = new AbortController();
  already.abort(new Error("before start"));
  const t = pipeline({ source: [1], stages: [s("double")], signal: already.signal });
  assert.match(((await settled(t)) as Error).message, /before start/);
});

test("a generator that returns early stops the stages and the source before it; done resolves", async () => {
  let returned = false;
  function* endless(): Generator<number> {
    try {
      for (let i = 0; ; i++) yield i;
    } finally {
      returned = true;
    }
  }
  const p = pipeline<number>({ source: endless(), stages: [s("double", { workers: 2 }), s("firstThree")] });
  assert.equal(await collect(p), [0, 2, 4]);
  await p.done;
  assert.ok(returned);
  assertNoInterpreters("after the early return");
});

test("a source that throws rejects done with its own error; a sink whose reader leaves stops the pipeline like a break", async () => {
  function* broken(): Generator<number> {
    yield 1;
    yield 2;
    throw new TypeError("the source broke");
  }
  const p = pipeline({ source: broken(), stages: [s("double")] });
  const err = (await settled(p)) as Error;
  assert.instance(err, TypeError);
  assert.is(err.message, "the source broke");
  assertNoInterpreters("after the source threw");

  const [sinkRx, sinkTx] = createChannel<number>({ capacity: 4 });
  const q = pipeline<number>({ source: range(1_000_000), stages: [s("double", { workers: 2 })], sink: sinkTx });
  const first = await sinkRx.recv({ timeout: 20_000 });
  assert.is(first, 0);
  sinkRx.close(); // the only reader leaves
  const stats = await withTimeout(q.done, 20_000, "the pipeline after its sink's reader left");
  assert.ok(stats.stages[0]!.in < 1_000_000, "it stopped early");
  assertNoInterpreters("after the sink's reader left");
});

/**
 * A stand-in for InterpreterPool (API.md "Pools of interpreters"; on its
 * own branch until it reaches main): each task runs in a fresh interpreter,
 * an abort terminates it. Enough to check how stages use a pool's run().
 */
function standInPool(size = Infinity): { tasks: string[]; run<R>(task: { module: string | URL; export?: string; args?: unknown[]; signal?: AbortSignal }): Promise<R> } {
  const tasks: string[] = [];
  let running = 0;
  const queue: Array<() => void> = [];
  return {
    tasks,
    async run<R>(task: { module: string | URL; export?: string; args?: unknown[]; signal?: AbortSignal }): Promise<R> {
      tasks.push(task.export ?? "default");
      if (running >= size) {
        // Wait for a free interpreter (or an abort, which removes the task).
        await new Promise<void>((resolve, reject) => {
          queue.push(resolve);
          task.signal?.addEventListener("abort", () => reject(task.signal!.reason), { once: true });
        });
      }
      running++;
      let interpreter;
      try {
        interpreter = await create({ name: "stand-in pool" });
      } catch (err) {
        running--;
        queue.shift()?.();
        throw err;
      }
      const onAbort = (): void => void interpreter.terminate();
      task.signal?.addEventListener("abort", onAbort, { once: true });
      try {
        return await interpreter.call<R>(task.module, task.export, ...(task.args ?? []));
      } finally {
        task.signal?.removeEventListener("abort", onAbort);
        await interpreter.close();
        running--;
        queue.shift()?.();
      }
    },
  };
}

test("stages on a pool: each worker is a task of the pool's run(); cancelling aborts the tasks", async () => {
  const pool = standInPool();
  const p = pipeline<number>({ source: range(100), stages: [s("double", { pool, workers: 2 }), s("increment")] });
  assert.equal(await collect(p), range(100).map((n) => n * 2 + 1));
  assert.equal(pool.tasks, ["runStage", "runStage"]);
  const q = pipeline({ source: range(10), stages: [s("blockForever", { pool })] });
  await waitUntil(() => q.stats().stages[0]!.in > 0, "the pooled stage to start");
  await q.cancel();
  assertNoInterpreters("after cancelling a pooled stage");
  // A pool too small for the pipeline: a keyed stage's second worker never gets an interpreter.
  const tiny = standInPool(1);
  const starved = pipeline({ source: range(1000).map((n) => ({ key: `k${n % 2}`, seq: n, ms: 0 })), stages: [s("keyedSleep", { pool: tiny, workers: 2, key: "key", name: "keyed" })] });
  const err = (await withTimeout(settled(starved), 40_000, "the starved pipeline")) as StageFailed;
  assert.instance(err, StageFailed);
  assert.is(err.stage, "keyed");
  assert.match(err.message, /never got an interpreter from its pool/);
  assertNoInterpreters("after the starved pipeline");
  assert.throws(() => stage(stages, { pool: {} as never }), TypeError, /pool/);
  assert.throws(() => stage(stages, { pool, resourceLimits: {} }), TypeError, /resourceLimits and pool/);
});

async function waitUntil(condition: () => boolean, what: string, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

test.run();
