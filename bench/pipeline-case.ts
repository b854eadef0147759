/**
 * One case of `npm run bench:pipeline` in a fresh process (the parent,
 * bench/pipeline.ts, runs every case several times round-robin). Prints one
 * BENCH_RESULT line with:
 *   itemsPerSec  steady throughput: items after the first 5% of outputs, over the time they took
 *   totalMs      from the start (interpreters included) to the last output
 *   cpuMs        CPU time of the whole process (all threads) over the run
 *   cpuUsPerItem CPU time of the whole process per item, steady part only
 *
 * Cases: cpu-pipeline-2x1, cpu-thread-2, cpu-pipeline-1x2, cpu-thread-1
 * (the two pipelines also as -cNNN: capacity NNN per stage),
 * cpu-workers-2 (two plain worker_threads: the machine's ceiling now),
 * trivial-pipeline-K (K stages, numbers), trivial-pipeline-3-objects,
 * trivial-node-3, trivial-node-3-objects, trivial-pipeline-3-nostats.
 */
import { Readable, Transform, Writable } from "node:stream";
import { pipeline as streamPipeline } from "node:stream/promises";
import { pipeline, stage } from "../src/index.js";
import { runChild } from "./lib/common.js";
import { increment, spin, touch } from "./pipeline-stages.js";

const stages = new URL(`./pipeline-stages.${import.meta.url.endsWith(".ts") ? "ts" : "js"}`, import.meta.url);

interface Timing {
  itemsPerSec: number;
  totalMs: number;
  cpuMs: number;
  /** CPU time of the whole process per item over the steady part (after the first 5% of outputs), in µs. */
  cpuUsPerItem: number;
}

/** Times the outputs of `outputs`: steady throughput after the first 5%. */
async function timeOutputs(total: number, outputs: AsyncIterable<unknown>, check: (value: unknown, i: number) => void): Promise<Timing> {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const warm = Math.floor(total * 0.05);
  let tWarm = 0;
  let cpuWarm = cpu0;
  let n = 0;
  for await (const value of outputs) {
    check(value, n);
    if (++n === warm) {
      tWarm = performance.now();
      cpuWarm = process.cpuUsage();
    }
  }
  const tEnd = performance.now();
  if (n !== total) throw new Error(`expected ${total} outputs, got ${n}`);
  const cpu = process.cpuUsage(cpu0);
  const steady = process.cpuUsage(cpuWarm);
  return { itemsPerSec: ((total - warm) / (tEnd - tWarm)) * 1000, totalMs: tEnd - t0, cpuMs: (cpu.user + cpu.system) / 1000, cpuUsPerItem: (steady.user + steady.system) / (total - warm) };
}

/** Times an inline loop the same way. */
function timeLoop(total: number, body: (i: number) => unknown, check: (value: unknown, i: number) => void): Timing {
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  const warm = Math.floor(total * 0.05);
  let tWarm = 0;
  let cpuWarm = cpu0;
  for (let i = 0; i < total; i++) {
    check(body(i), i);
    if (i + 1 === warm) {
      tWarm = performance.now();
      cpuWarm = process.cpuUsage();
    }
  }
  const tEnd = performance.now();
  const cpu = process.cpuUsage(cpu0);
  const steady = process.cpuUsage(cpuWarm);
  return { itemsPerSec: ((total - warm) / (tEnd - tWarm)) * 1000, totalMs: tEnd - t0, cpuMs: (cpu.user + cpu.system) / 1000, cpuUsPerItem: (steady.user + steady.system) / (total - warm) };
}

function* numbers(total: number): Generator<number> {
  for (let i = 0; i < total; i++) yield i;
}

function* objects(total: number): Generator<{ id: number; name: string }> {
  for (let i = 0; i < total; i++) yield { id: i, name: "item" };
}

const same = (): void => {};

runChild(async (args) => {
  const name = args.case!;
  const total = Number(args.items);
  let timing: Timing;
  let notes = "";
  // "-cNNN": the same case with capacity NNN per stage (else the default).
  const capacitySuffix = /-c(\d+)$/.exec(name);
  const cpuOptions = capacitySuffix ? { capacity: Number(capacitySuffix[1]) } : {};
  const cpuName = capacitySuffix ? name.slice(0, capacitySuffix.index) : name;
  if (cpuName === "cpu-pipeline-2x1") {
    const p = pipeline({ source: numbers(total), stages: [stage(stages, { export: "spin", name: "a", ...cpuOptions }), stage(stages, { export: "spin", name: "b", ...cpuOptions })] });
    timing = await timeOutputs(total, p, (v, i) => void (i % 997 === 0 && v !== spin(spin(i)) && fail(v, i)));
    notes = JSON.stringify((await p.done).stages.map((s) => [s.name, s.busyMsPerSecond, s.backpressuredMsPerSecond, s.idleMsPerSecond]));
  } else if (name === "cpu-thread-2") {
    timing = timeLoop(total, (i) => spin(spin(i)), same);
  } else if (cpuName === "cpu-pipeline-1x2") {
    const p = pipeline({ source: numbers(total), stages: [stage(stages, { export: "spin", workers: 2, ...cpuOptions })] });
    timing = await timeOutputs(total, p, (v, i) => void (i % 997 === 0 && v !== spin(i) && fail(v, i)));
    notes = JSON.stringify((await p.done).stages.map((s) => [s.name, s.busyMsPerSecond, s.backpressuredMsPerSecond, s.idleMsPerSecond]));
  } else if (name === "cpu-thread-1") {
    timing = timeLoop(total, (i) => spin(i), same);
  } else if (name === "cpu-workers-2") {
    timing = await twoPlainWorkers(total);
  } else if (name.startsWith("trivial-pipeline-")) {
    const objectItems = name.endsWith("-objects");
    const statsOn = !name.endsWith("-nostats");
    const k = Number(name.split("-")[2]);
    const capacity = Number(args.capacity ?? 4096);
    const chain = Array.from({ length: k }, (_, j) => stage(stages, { export: objectItems ? "touch" : "increment", name: `t${j}`, capacity }));
    const p = pipeline({ source: objectItems ? objects(total) : numbers(total), stages: chain, stats: statsOn });
    timing = await timeOutputs(total, p, objectItems ? (v, i) => void ((v as { id: number }).id !== i + k && fail(v, i)) : (v, i) => void (v !== i + k && fail(v, i)));
    notes = JSON.stringify((await p.done).stages.map((s) => [s.name, s.busyMsPerSecond, s.backpressuredMsPerSecond, s.idleMsPerSecond]));
  } else if (name.startsWith("trivial-node-3")) {
    const objectItems = name.endsWith("-objects");
    const transform = (): Transform =>
      new Transform({ objectMode: true, transform(chunk, _encoding, callback) { callback(null, objectItems ? touch(chunk) : increment(chunk)); } });
    let n = 0;
    let bad = 0;
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const warm = Math.floor(total * 0.05);
    let tWarm = 0;
    let cpuWarm = cpu0;
    await streamPipeline(
      Readable.from(objectItems ? objects(total) : numbers(total)),
      transform(),
      transform(),
      transform(),
      new Writable({
        objectMode: true,
        write(chunk, _encoding, callback) {
          const expected = n + 3;
          if ((objectItems ? chunk.id : chunk) !== expected) bad++;
          if (++n === warm) {
            tWarm = performance.now();
            cpuWarm = process.cpuUsage();
          }
          callback();
        },
      }),
    );
    const tEnd = performance.now();
    if (n !== total || bad) throw new Error(`node stream: ${n} outputs, ${bad} wrong`);
    const cpu = process.cpuUsage(cpu0);
    const steady = process.cpuUsage(cpuWarm);
    timing = { itemsPerSec: ((total - warm) / (tEnd - tWarm)) * 1000, totalMs: tEnd - t0, cpuMs: (cpu.user + cpu.system) / 1000, cpuUsPerItem: (steady.user + steady.system) / (total - warm) };
  } else {
    throw new Error(`unknown case ${name}`);
  }
  return { metrics: { ...timing }, notes };
});

/**
 * The machine's own ceiling for CPU-parallel work right now: the same spin
 * in two plain worker_threads (no library), each doing half the items, timed
 * from their start (after a warm-up) to the last one's end. On an idle
 * 2-core machine this is about 2x one thread; on a busy one, much less.
 */
async function twoPlainWorkers(total: number): Promise<Timing> {
  const { Worker } = await import("node:worker_threads");
  const spinModule = new URL(`./pipeline-stages.${import.meta.url.endsWith(".ts") ? "ts" : "js"}`, import.meta.url).href;
  const code = `
    const { parentPort, workerData } = require("node:worker_threads");
    import(workerData.module).then(({ spin }) => {
      for (let i = 0; i < 200; i++) spin(i);
      parentPort.postMessage("ready");
      parentPort.once("message", () => {
        let s = 0;
        for (let i = 0; i < workerData.n; i++) s += spin(i);
        parentPort.postMessage(s);
      });
    });`;
  const cpu0 = process.cpuUsage();
  const workers = [0, 1].map(() => new Worker(code, { eval: true, workerData: { module: spinModule, n: Math.ceil(total / 2) } }));
  await Promise.all(workers.map((w) => new Promise((resolve) => w.once("message", resolve))));
  const t0 = performance.now();
  const cpuStart = process.cpuUsage();
  const done = Promise.all(workers.map((w) => new Promise((resolve) => w.once("message", resolve))));
  for (const w of workers) w.postMessage("go");
  await done;
  const tEnd = performance.now();
  const steady = process.cpuUsage(cpuStart);
  const cpu = process.cpuUsage(cpu0);
  await Promise.all(workers.map((w) => w.terminate()));
  return { itemsPerSec: (total / (tEnd - t0)) * 1000, totalMs: tEnd - t0, cpuMs: (cpu.user + cpu.system) / 1000, cpuUsPerItem: (steady.user + steady.system) / total };
}

function fail(value: unknown, i: number): never {
  throw new Error(`wrong output ${JSON.stringify(value)} for item ${i}`);
}
