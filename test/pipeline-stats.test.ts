/**
 * Statistics: busy / back-pressured / idle per stage (summing to about
 * 1000 ms per second), the bottleneck by Flink's rule, service times, the
 * 'stats' event, livePipelines() for the inspector, overflow counts.
 */
import { livePipelines } from "../src/pipeline/registry.js";
import { inspect, pipeline, stage, StageFailed, type PipelineStats } from "../src/index.js";
import { assert, suite } from "./_harness.js";

const test = suite("pipeline stats");
const stages = new URL("./fixtures/pipeline-stages.ts", import.meta.url);
const s = (exportName: string, options: Parameters<typeof stage>[1] = {}) => stage(stages, { export: exportName, ...options });

function* items(ms: number): Generator<{ value: number; ms: number }> {
  for (let i = 0; ; i++) yield { value: i, ms };
}

test("the slow middle stage is the bottleneck: busy, the one before back-pressured, the one after idle", async () => {
  const p = pipeline<number>({
    source: items(4),
    stages: [s("passItem", { name: "before" }), s("sleepThen", { name: "slow" }), s("double", { name: "after" })],
    name: "bottlenecked",
  });
  const events: PipelineStats[] = [];
  p.on("stats", (stats) => events.push(stats));
  let seen = 0;
  let firstAt = 0;
  let stats: PipelineStats | undefined;
  for await (const value of p) {
    assert.is(value, seen * 2);
    if (seen++ === 0) firstAt = Date.now();
    if (firstAt && Date.now() - firstAt > 2500 && events.length >= 2) {
      stats = p.stats();
      assert.ok(livePipelines().some((x) => x.name === "bottlenecked"), "listed while it runs");
      const shown = inspect().pipelines.find((x) => x.name === "bottlenecked");
      assert.equal(shown?.stages.map((st) => st.name), ["before", "slow", "after"], "inspect() shows the running pipeline's stages");
      break;
    }
  }
  const [before, slow, after] = stats!.stages;
  const describe = JSON.stringify(stats);
  for (const st of stats!.stages) {
    const sum = st.busyMsPerSecond + st.backpressuredMsPerSecond + st.idleMsPerSecond;
    assert.ok(Math.abs(sum - 1000) <= 2, `${st.name}: busy + back-pressured + idle = ${sum}`);
  }
  assert.is(stats!.bottleneck, "slow", describe);
  assert.ok(slow!.busyMsPerSecond > 800, describe);
  assert.ok(before!.backpressuredMsPerSecond > 600, describe);
  assert.ok(after!.idleMsPerSecond > 600, describe);
  // A 4 ms sleep takes at least 4 ms, and (this stage being the bottleneck) at most about the time per item.
  assert.ok(slow!.serviceUs.p50 >= 3500, `p50 of a 4 ms sleep: ${slow!.serviceUs.p50} µs`);
  assert.ok(slow!.serviceUs.p50 <= (1.5e6 / slow!.itemsPerSecond) * 1.2, `p50 ${slow!.serviceUs.p50} µs against ${slow!.itemsPerSecond} items/s`);
  assert.ok(slow!.serviceUs.p99 >= slow!.serviceUs.p50);
  assert.ok(slow!.itemsPerSecond > 0 && slow!.itemsPerSecond <= 260, describe);
  assert.ok(stats!.inFlight <= 17 + 17 + 17, describe);
  assert.ok(events.length >= 2, `'stats' events: ${events.length}`);
  assert.ok(events.every((e) => e.name === "bottlenecked" && e.stages.length === 3));
  const final = await p.done;
  assert.ok(final.elapsedMs >= 2500);
  assert.not.ok(livePipelines().some((x) => x.name === "bottlenecked"), "gone once done settled");
});

test("overflow drop-newest and drop-oldest count every item they drop; error fails naming the item", async () => {
  const source = Array.from({ length: 300 }, (_, value) => ({ value, ms: 3 }));
  for (const overflow of ["drop-newest", "drop-oldest"] as const) {
    const p = pipeline<number>({ source, stages: [s("sleepThen", { name: overflow, capacity: 4, overflow })] });
    const out: number[] = [];
    for await (const value of p) out.push(value);
    const [st] = (await p.done).stages;
    assert.ok(st!.dropped > 0, `${overflow}: something was dropped`);
    assert.is(st!.in + st!.dropped, 300, `${overflow}: every item processed or counted as dropped`);
    assert.is(out.length, st!.in);
    for (let i = 1; i < out.length; i++) assert.ok(out[i]! > out[i - 1]!, "what gets through keeps its order");
    if (overflow === "drop-oldest") assert.is(out[out.length - 1], 299, "the newest item survives drop-oldest");
    else assert.is(out[0], 0, "the first item gets in under drop-newest");
  }
  const p = pipeline({ source, stages: [s("sleepThen", { name: "strict", capacity: 2, overflow: "error" })] });
  let failure: unknown;
  try {
    for await (const _ of p) void _;
  } catch (err) {
    failure = err;
  }
  const err = failure as StageFailed;
  assert.instance(err, StageFailed);
  assert.is(err.stage, "strict");
  assert.is(err.worker, -1);
  assert.is(err.remote.name, "ChannelFullError");
  assert.ok(err.item!.index > 0);
  assert.match(err.message, /full/);
});

test("statistics off: counts are kept, times are not measured", async () => {
  const p = pipeline<number>({ source: Array.from({ length: 50 }, (_, i) => i), stages: [s("double")], stats: false });
  let n = 0;
  for await (const _ of p) n++;
  const [st] = (await p.done).stages;
  assert.is(n, 50);
  assert.is(st!.in, 50);
  assert.is(st!.out, 50);
  assert.is(st!.busyMsPerSecond + st!.backpressuredMsPerSecond + st!.idleMsPerSecond, 0);
  assert.equal(st!.serviceUs, { p50: 0, p99: 0 });
});

test("a 'stats' listener that throws fails the pipeline with its error (not the process)", async () => {
  const p = pipeline({ source: items(5), stages: [s("sleepThen")] });
  p.on("stats", () => {
    throw new RangeError("listener broke");
  });
  let failure: unknown;
  try {
    for await (const _ of p) void _;
  } catch (err) {
    failure = err;
  }
  assert.instance(failure, RangeError);
  assert.match((failure as Error).message, /listener broke/);
});

test.run();
