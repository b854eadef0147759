/**
 * Order and exactly-once, as properties (fast-check): random per-item
 * delays, 1-8 workers, capacities 0-16, one or two stages, sync and async
 * stage code. "input": outputs in input order; "completion": every item
 * once; key: per-key order, and every item of a key on the same worker.
 */
import fc from "fast-check";
import { list, pipeline, stage } from "../src/index.js";
import { assert, seedFromEnv, suite } from "./_harness.js";

const test = suite("pipeline order");
const stages = new URL("./fixtures/pipeline-stages.ts", import.meta.url);
const RUNS = Number(process.env.PIPELINE_ORDER_RUNS ?? 10);

interface Item {
  key: string;
  seq: number;
  ms: number;
}
interface Seen extends Item {
  worker: number;
}

const scenario = fc.record({
  order: fc.constantFrom("input" as const, "completion" as const, "key" as const),
  workers: fc.integer({ min: 1, max: 8 }),
  capacity: fc.constantFrom(0, 1, 2, 4, 16),
  items: fc.integer({ min: 10, max: 120 }),
  keys: fc.integer({ min: 1, max: 6 }),
  slowShare: fc.double({ min: 0, max: 0.5, noNaN: true }),
  maxMs: fc.integer({ min: 1, max: 4 }),
  async: fc.boolean(),
  second: fc.option(fc.record({ workers: fc.integer({ min: 1, max: 4 }), capacity: fc.constantFrom(0, 3, 16) }), { nil: undefined }),
  delaySeed: fc.integer(),
});

test("zero order violations and every item exactly once, whatever the delays and worker counts", async () => {
  const seed = seedFromEnv();
  let runs = 0;
  let violations = 0;
  try {
    await fc.assert(
      fc.asyncProperty(scenario, async (sc) => {
        runs++;
        let r = sc.delaySeed >>> 0;
        const random = (): number => ((r = (Math.imul(r, 1664525) + 1013904223) >>> 0) / 2 ** 32);
        const items: Item[] = Array.from({ length: sc.items }, (_, seq) => ({
          key: `k${Math.floor(random() * sc.keys)}`,
          seq,
          ms: random() < sc.slowShare ? 1 + Math.floor(random() * sc.maxMs) : 0,
        }));
        const first = stage(stages, {
          name: "first",
          export: sc.async ? "keyedSleepAsync" : "keyedSleep",
          workers: sc.workers,
          capacity: sc.capacity,
          ...(sc.order === "key" ? { key: "key" } : { order: sc.order }),
        });
        const chain = [first];
        if (sc.second) chain.push(stage(stages, { name: "second", export: "passSleeping", workers: sc.second.workers, capacity: sc.second.capacity, ...(sc.order === "key" ? { key: "key" } : { order: sc.order }) }));
        const p = pipeline<Seen>({ source: items, stages: chain });
        const out: Seen[] = [];
        for await (const seen of p) out.push(seen);
        await p.done;
        // exactly once
        const seqs = out.map((x) => x.seq).sort((a, b) => a - b);
        assert.equal(seqs, items.map((x) => x.seq), `every item exactly once (${JSON.stringify(sc)})`);
        // order
        if (sc.order === "input") {
          for (let i = 0; i < out.length; i++) if (out[i]!.seq !== i) violations++;
        } else if (sc.order === "key") {
          const last = new Map<string, number>();
          const workerOf = new Map<string, number>();
          for (const x of out) {
            if ((last.get(x.key) ?? -1) > x.seq) violations++;
            last.set(x.key, x.seq);
            if (workerOf.has(x.key) && workerOf.get(x.key) !== x.worker) violations++;
            workerOf.set(x.key, x.worker);
          }
        }
        assert.is(violations, 0, `order violations in ${JSON.stringify(sc)}`);
        assert.is(list().length, 1, "no interpreter left");
      }),
      { numRuns: RUNS, seed, endOnFailure: true },
    );
  } catch (err) {
    console.error(`pipeline order property failed; replay with SEED=${seed}`);
    throw err;
  }
  assert.is(runs, RUNS);
}, { timeout: 240_000 });

test("volume: many items through small credit windows, a consumer that pauses; nothing lost, stuck or reordered", async () => {
  const seed = seedFromEnv();
  let r = seed >>> 0;
  const random = (): number => ((r = (Math.imul(r, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  const ITEMS = Number(process.env.PIPELINE_VOLUME_ITEMS ?? 20_000);
  for (let round = 0; round < 2; round++) {
    const chain = [0, 1].map((k) =>
      stage(stages, {
        export: "increment",
        name: `s${k}`,
        workers: 1 + Math.floor(random() * 3),
        capacity: [0, 1, 2, 5, 16, 100][Math.floor(random() * 6)]!,
        order: random() < 0.7 ? "input" : "completion",
      }),
    );
    const describe = `seed ${seed} round ${round}: ${chain.map((c) => `${c.workers}w cap ${c.capacity} ${c.order}`).join(", ")}`;
    const p = pipeline<number>({ source: Array.from({ length: ITEMS }, (_, i) => i), stages: chain });
    const seen = new Uint8Array(ITEMS + 2);
    let n = 0;
    let ordered = true;
    let previous = -1;
    for await (const value of p) {
      seen[value - 2]!++;
      if (value < previous) ordered = false;
      previous = value;
      if (++n % 997 === 0 && random() < 0.5) await new Promise((resolve) => setTimeout(resolve, 1 + Math.floor(random() * 5)));
    }
    await p.done;
    assert.is(n, ITEMS, describe);
    assert.ok(seen.subarray(0, ITEMS).every((x) => x === 1), `every item exactly once (${describe})`);
    if (chain.every((c) => c.order === "input")) assert.ok(ordered, `input order (${describe})`);
  }
}, { timeout: 120_000 });

test.run();
