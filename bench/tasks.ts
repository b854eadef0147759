/**
 * P6: tiny offloaded tasks, main thread submitting to 2 workers.
 *
 *   node dist/bench/tasks.js --system lib|piscina|tinypool
 *
 * lib: one request channel whose recv end is shared (cloned) by 2
 * interpreters, each serving `for (const req of requests)
 * replies.sendSync({ id, r })`, and one reply channel back to main, where a
 * dispatcher (`for await` over the replies) resolves the submitter's
 * promise by id. piscina / tinypool: `pool.run(x)` with 2 threads.
 *
 * The same driver for all: `submit(x): Promise<result>`, every result
 * checked. Warm-up with 64 in flight, then 1.5 s of sequential tasks (so
 * that the JIT is done with the sleep-and-wake paths the latency phase
 * takes); then single-task latency (one in
 * flight, sequential, timed with performance.now()); then throughput with
 * 64 concurrent lanes for a fixed time (and at least a minimum count) (tasks completed / elapsed).
 * For lib, the notes also give the wake-ups sent to the two interpreters
 * per task in the latency phase (their park words): 1 or less when one
 * request wakes at most one of them.
 */
import { fileURLToPath } from "node:url";
import { Piscina } from "piscina";
import Tinypool from "tinypool";
import { create, createChannel } from "../src/index.js";
import { slotOf, wakeupsSentTo } from "./lib/parties.js";
import { count, phase, runChild, sized, summarize } from "./lib/common.js";
import { task, type TaskReply, type TaskRequest } from "./lib/interp-side.js";

const INTERP_SIDE = new URL("./lib/interp-side.js", import.meta.url);
const POOL_TASK = fileURLToPath(new URL("./lib/pool-task.js", import.meta.url));
const IN_FLIGHT = 64;

interface System {
  submit(x: number): Promise<number>;
  /** Shuts down; returns the number of tasks the workers report having served, if they can tell. */
  close(): Promise<number | undefined>;
  bad(): number;
  /** Wake-ups sent to the workers so far (lib only: their park words). */
  wakeups?(): number;
}



async function libSystem(): Promise<System> {
  const [a, b] = await Promise.all([create({ name: "server-1" }), create({ name: "server-2" })]);
  const [requests, requestsTx] = createChannel<TaskRequest>({ name: "requests" });
  const [replies, repliesTx] = createChannel<TaskReply>({ name: "replies" });
  const requests2 = requests.clone();
  const repliesTx2 = repliesTx.clone();
  const served = [
    a.call<number>(INTERP_SIDE, "taskServer", requests, repliesTx),
    b.call<number>(INTERP_SIDE, "taskServer", requests2, repliesTx2),
  ];
  for (const s of served) s.catch(() => {});
  const pending = new Map<number, (r: number) => void>();
  let unknown = 0;
  const dispatching = (async () => {
    for await (const reply of replies) {
      const resolve = pending.get(reply.id);
      if (resolve === undefined) {
        unknown++;
        continue;
      }
      pending.delete(reply.id);
      resolve(reply.r);
    }
  })();
  dispatching.catch(() => {});
  let nextId = 0;
  const slots = [slotOf(a.id), slotOf(b.id)];
  return {
    submit(x) {
      return new Promise<number>((resolve, reject) => {
        const id = nextId++;
        pending.set(id, resolve);
        requestsTx.send({ id, x }).catch(reject);
      });
    },
    async close() {
      requestsTx.close();
      const counts = await Promise.all(served);
      await dispatching;
      await Promise.all([a.terminate(), b.terminate()]);
      return counts[0]! + counts[1]!;
    },
    bad: () => unknown + pending.size,
    wakeups: () => wakeupsSentTo(slots[0]!) + wakeupsSentTo(slots[1]!),
  };
}

/** piscina and tinypool share the API this bench uses: run(x), destroy(). */
function poolSystem(pool: { run(x: number): Promise<unknown>; destroy(): Promise<unknown> }): System {
  return {
    submit: (x) => pool.run(x) as Promise<number>,
    async close() {
      await pool.destroy();
      return undefined;
    },
    bad: () => 0,
  };
}

runChild(async (args) => {
  const name = args.system ?? "lib";
  phase(`start ${name}`);
  const system = name === "lib" ? await libSystem() : name === "piscina"
        ? poolSystem(new Piscina({ filename: POOL_TASK, minThreads: 2, maxThreads: 2 }))
        : poolSystem(new Tinypool({ filename: POOL_TASK, minThreads: 2, maxThreads: 2 }));
  let wrong = 0;
  let completed = 0;
  let x = 0;
  const one = async (): Promise<void> => {
    const input = x++;
    const r = await system.submit(input);
    if (r !== task(input)) wrong++;
    completed++;
  };
  const lanes = async (until: () => boolean): Promise<void> => {
    await Promise.all(
      Array.from({ length: IN_FLIGHT }, async () => {
        while (!until()) await one();
      }),
    );
  };

  phase("warm-up");
  const warmupTasks = count(5000, 1000);
  const warmDeadline = performance.now() + sized(0.3, 0.05) * 1000;
  await lanes(() => completed >= warmupTasks || performance.now() >= warmDeadline);
  // Then sequential tasks, the latency phase's own code paths (each side
  // sleeps and is woken for every task), until the JIT has compiled them:
  // V8 compiles on background threads that compete for the two cores.
  // Without this, single-task p99 measured the compiler, not the system:
  // 2.7-4.1 ms for lib (whose channel code runs in JS on both sides) against
  // 140-200 us after it; piscina and tinypool get the same warm-up.
  const seqWarmDeadline = performance.now() + sized(1.5, 0.1) * 1000;
  while (performance.now() < seqWarmDeadline) await one();

  phase("latency (1 in flight)");
  const latSeconds = sized(0.5, 0.1);
  const lat = new Float64Array(1_000_000);
  const minLatencySamples = count(1000, 100);
  let n = 0;
  const wakeupsBefore = system.wakeups?.();
  const latStart = performance.now();
  while (n < lat.length) {
    const t = performance.now();
    await one();
    const t2 = performance.now();
    lat[n++] = t2 - t;
    if (t2 - latStart >= latSeconds * 1000 && n >= minLatencySamples) break;
  }
  const latency = summarize(lat, n);
  // Wrapping int32 counts: the difference is exact as long as it is below 2^31.
  const wakeupsPerTask = wakeupsBefore === undefined ? undefined : ((system.wakeups!() - wakeupsBefore) | 0) / n;

  phase(`throughput (${IN_FLIGHT} in flight)`);
  const before = completed;
  const tputSeconds = sized(0.75, 0.1);
  // At least this many tasks too, so that one stall at the start cannot leave a tiny sample.
  const minTasks = before + count(5000, 1000);
  const t0 = performance.now();
  const deadline = t0 + tputSeconds * 1000;
  await lanes(() => x >= minTasks && performance.now() >= deadline);
  const elapsed = (performance.now() - t0) / 1000;
  const tasks = completed - before;

  phase("close");
  const served = await system.close();
  const metrics = {
    tasksPerSec: tasks / elapsed,
    p50us: latency.p50us,
    p99us: latency.p99us,
    tasks,
    latencySamples: latency.samples,
  };
  const wakeupNote = wakeupsPerTask === undefined ? "" : `, ${wakeupsPerTask.toFixed(2)} wake-ups sent to the interpreters per task`;
  const notes = `${tasks} tasks in ${elapsed.toFixed(2)} s with ${IN_FLIGHT} in flight; latency over ${latency.samples} sequential tasks (mean ${latency.meanus.toFixed(1)} µs, max ${latency.maxus.toFixed(0)} µs${wakeupNote}); every result checked`;
  let error: string | undefined;
  if (wrong !== 0) error = `${wrong} tasks returned a wrong result`;
  else if (system.bad() !== 0) error = `${system.bad()} replies unmatched or missing`;
  else if (served !== undefined && served !== completed) error = `servers served ${served} tasks, main completed ${completed}`;
  return { metrics, notes, error };
});
