/**
 * One system of `npm run bench:pool` (bench/pool.ts runs this file once per
 * system and repetition, each in a fresh process):
 *
 *   node dist/bench/pool-child.js --system pool|tinypool|tinypool-events|piscina [--payload number|object]
 *
 * pool: InterpreterPool, 2 interpreters. tinypool: Tinypool with its
 * defaults (threads idle in Atomics.wait). tinypool-events: Tinypool with
 * `useAtomics: false`, as InterpreterPool configures it (threads idle in
 * their event loop). piscina: Piscina with its defaults. All with 2
 * threads started up front, all running the same tiny task, every result
 * checked: `--payload number` (default) bench/lib/pool-task.ts's `task(x)`,
 * a number in and out; `--payload object` bench/pool-object-task.ts, a
 * small object in and out ({ id, name, values: [4] }).
 *
 * Phases: cold start (construct, first result); warm-up (64 in flight,
 * then sequential for ~1.5 s so that the JIT is done with the paths the
 * latency phase takes, as bench/tasks.ts); latency (one task in flight,
 * sequential, p50/p99); throughput (64 in flight for a fixed time and at
 * least a minimum count).
 */
import { fileURLToPath } from "node:url";
import { Piscina } from "piscina";
import Tinypool from "tinypool";
import { InterpreterPool } from "../src/index.js";
import { count, phase, runChild, sized, summarize } from "./lib/common.js";
import { task } from "./lib/interp-side.js";
import { checkItem, type Item, makeItem } from "./pool-object-task.js";

const NUMBER_TASK = new URL("./lib/pool-task.js", import.meta.url);
const OBJECT_TASK = new URL("./pool-object-task.js", import.meta.url);
const IN_FLIGHT = 64;

interface System {
  submit(input: unknown): Promise<unknown>;
  close(): Promise<void>;
}

function makeSystem(name: string, module: URL): System {
  switch (name) {
    case "pool": {
      const pool = new InterpreterPool({ name: "bench", minInterpreters: 2, maxInterpreters: 2 });
      return { submit: (input) => pool.call(module, "default", input), close: () => pool.close() };
    }
    case "tinypool":
    case "tinypool-events": {
      const pool = new Tinypool({ filename: fileURLToPath(module), minThreads: 2, maxThreads: 2, useAtomics: name === "tinypool" });
      return { submit: (input) => pool.run(input), close: () => pool.destroy() };
    }
    case "piscina": {
      const pool = new Piscina({ filename: fileURLToPath(module), minThreads: 2, maxThreads: 2 });
      return { submit: (input) => pool.run(input), close: () => pool.destroy() };
    }
    default:
      throw new Error(`unknown system ${name}`);
  }
}

runChild(async (args) => {
  const name = args.system ?? "pool";
  const objects = args.payload === "object";
  const inputOf = (x: number): unknown => (objects ? makeItem(x) : x);
  const isRight = (x: number, out: unknown): boolean => (objects ? checkItem(x, out as Item) : out === task(x));
  let wrong = 0;
  let completed = 0;
  let x = 0;

  phase(`cold start ${name}`);
  const coldStart = performance.now();
  const system = makeSystem(name, objects ? OBJECT_TASK : NUMBER_TASK);
  if (!isRight(1, await system.submit(inputOf(1)))) wrong++;
  const coldMs = performance.now() - coldStart;

  const one = async (): Promise<void> => {
    const input = x++;
    if (!isRight(input, await system.submit(inputOf(input)))) wrong++;
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
  const seqWarmDeadline = performance.now() + sized(1.5, 0.1) * 1000;
  while (performance.now() < seqWarmDeadline) await one();

  phase("latency (1 in flight)");
  const latSeconds = sized(0.5, 0.1);
  const lat = new Float64Array(1_000_000);
  const minLatencySamples = count(1000, 100);
  let n = 0;
  const latStart = performance.now();
  while (n < lat.length) {
    const t = performance.now();
    await one();
    const t2 = performance.now();
    lat[n++] = t2 - t;
    if (t2 - latStart >= latSeconds * 1000 && n >= minLatencySamples) break;
  }
  const latency = summarize(lat, n);

  phase(`throughput (${IN_FLIGHT} in flight)`);
  const before = completed;
  const tputSeconds = sized(0.75, 0.1);
  const minTasks = x + count(5000, 1000);
  const t0 = performance.now();
  const deadline = t0 + tputSeconds * 1000;
  await lanes(() => x >= minTasks && performance.now() >= deadline);
  const elapsed = (performance.now() - t0) / 1000;
  const tasks = completed - before;

  phase("close");
  await system.close();
  return {
    metrics: { tasksPerSec: tasks / elapsed, p50us: latency.p50us, p99us: latency.p99us, coldMs, tasks, latencySamples: latency.samples },
    notes: `${tasks} tasks in ${elapsed.toFixed(2)} s with ${IN_FLIGHT} in flight; latency over ${latency.samples} sequential tasks (mean ${latency.meanus.toFixed(1)} µs, max ${latency.maxus.toFixed(0)} µs); first result ${coldMs.toFixed(0)} ms after construction; every result checked`,
    error: wrong !== 0 ? `${wrong} tasks returned a wrong result` : undefined,
  };
});
