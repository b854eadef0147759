/**
 * Backpressure end to end: a source that could produce items more than 100
 * times faster than the last stage takes them, run long enough that an
 * unbounded design would hold hundreds of MiB (GiBs, in fact). Items in
 * flight never exceed the bound the contract states, and RSS stays flat
 * after warm-up (two seconds past the first output). The flow runs for
 * PIPELINE_MEMORY_SECONDS (default 6) after the first output (longer: a soak); PIPELINE_MEMORY_TRACE=1 prints memory each second.
 */
import { pipeline, stage } from "../src/index.js";
import { assert, suite } from "./_harness.js";

const test = suite("pipeline memory");
const stages = new URL("./fixtures/pipeline-stages.ts", import.meta.url);
const SECONDS = Number(process.env.PIPELINE_MEMORY_SECONDS ?? 6);
const ITEM_BYTES = 4 * 1024;
const MiB = 1024 * 1024;

function makeItem(index: number): Uint8Array {
  const bytes = new Uint8Array(ITEM_BYTES);
  new DataView(bytes.buffer).setUint32(0, index, true);
  return bytes;
}

test("a source 100x faster than the last stage: in-flight within the bound, RSS flat", async () => {
  // How fast the source alone can go, given a core (CPU time: the machine may be busy with other work).
  const probeStart = process.cpuUsage();
  for (let i = 0; i < 20_000; i++) makeItem(i);
  const probe = process.cpuUsage(probeStart);
  const sourceItemsPerSecond = 20_000 / ((probe.user + probe.system) / 1e6);

  let pulled = 0;
  let stop = false;
  function* source(): Generator<Uint8Array> {
    while (!stop) yield makeItem(pulled++);
  }
  const first = stage(stages, { export: "passBytes", name: "pass", capacity: 16 });
  const last = stage(stages, { export: "slowBytes", name: "slow", capacity: 16, workers: 2 });
  if (process.env.PIPELINE_MEMORY_TRACE) setInterval(() => console.log(Math.round(process.memoryUsage().rss / MiB), Math.round(process.memoryUsage().heapUsed / MiB), Math.round(process.memoryUsage().external / MiB), Math.round(process.memoryUsage().arrayBuffers / MiB)), 1000).unref();
  const bound = first.capacity + first.workers + last.capacity + last.workers + 1; // the contract's bound (no reorder window beyond the credits here)
  const outputWindow = 32;
  const p = pipeline<number>({ source: source(), stages: [first, last], name: "flood" });

  const started = Date.now();
  let consumed = 0;
  let firstOutputAt = 0;
  let worstInFlight = 0;
  let worstHeld = 0;
  const rss: Array<{ at: number; mib: number }> = [];
  const sampler = setInterval(() => {
    worstHeld = Math.max(worstHeld, pulled - consumed);
    worstInFlight = Math.max(worstInFlight, p.stats().inFlight);
    rss.push({ at: Date.now() - started, mib: process.memoryUsage().rss / MiB });
  }, 50);
  for await (const index of p) {
    assert.is(index, consumed, "outputs in input order");
    if (consumed++ === 0) firstOutputAt = Date.now() - started;
    worstHeld = Math.max(worstHeld, pulled - consumed);
    if (Date.now() - started - firstOutputAt > SECONDS * 1000) break; // SECONDS of steady flow, however long the start took
  }
  stop = true;
  clearInterval(sampler);
  const elapsed = (Date.now() - started) / 1000;
  const measuredSlow = consumed / elapsed;
  const unboundedMiB = (sourceItemsPerSecond * elapsed * ITEM_BYTES) / MiB;

  // Warm-up: until two seconds past the first output (the interpreters start,
  // and each isolate's heap finds its size as garbage arrays come and go).
  const warmFrom = firstOutputAt + 2000;
  const warm = rss.filter((s) => s.at > warmFrom);
  const warmMin = Math.min(...warm.map((s) => s.mib));
  const warmMax = Math.max(...warm.map((s) => s.mib));
  // Medians of the first and the second half of the warm window: each spans seconds, so a
  // garbage collection's saw-tooth (tens of MiB in one isolate) does not read as growth.
  const median = (xs: number[]): number => xs.sort((a, b) => a - b)[xs.length >> 1]!;
  const half = Math.floor(warm.length / 2);
  const firstWarm = median(warm.slice(0, half).map((s) => s.mib));
  const lastWarm = median(warm.slice(half).map((s) => s.mib));
  console.log(
    `  source ${Math.round(sourceItemsPerSecond)} items/s vs last stage ${measuredSlow.toFixed(0)} items/s (${(sourceItemsPerSecond / measuredSlow).toFixed(0)}x);` +
      ` an unbounded queue would have taken ~${Math.round(unboundedMiB)} MiB in ${elapsed.toFixed(1)} s;` +
      ` held at most ${worstHeld} items (bound ${bound} + output window ${outputWindow}), stats().inFlight at most ${worstInFlight};` +
      ` RSS after warm-up ${warmMin.toFixed(0)}-${warmMax.toFixed(0)} MiB, ${firstWarm.toFixed(0)} -> ${lastWarm.toFixed(0)} MiB`,
  );
  assert.ok(sourceItemsPerSecond > 100 * measuredSlow, `the source must be 100x faster than the last stage: ${sourceItemsPerSecond} vs ${measuredSlow}`);
  assert.ok(unboundedMiB > 300, `long enough that an unbounded design would grow by hundreds of MiB (${unboundedMiB})`);
  assert.ok(worstInFlight <= bound, `stats().inFlight ${worstInFlight} exceeds the bound ${bound}`);
  assert.ok(worstHeld <= bound + outputWindow, `${worstHeld} items pulled and not yet consumed exceeds the bound ${bound} + the output window ${outputWindow}`);
  assert.ok(lastWarm - firstWarm < 32, `RSS grew from ${firstWarm.toFixed(0)} to ${lastWarm.toFixed(0)} MiB after warm-up`);
  const stats = await p.done; // resolves: the consumer left the loop
  assert.ok(stats.stages[1]!.out >= consumed, `the last stage sent at least what was consumed (${stats.stages[1]!.out} vs ${consumed})`);
}, { timeout: 60_000 + SECONDS * 2000 });

test.run();
