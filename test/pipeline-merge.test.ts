/**
 * merge: weighted deficit round robin. A trickle next to a flood waits at
 * most one round, measured in items; weights share the turns; ends and
 * errors; a merged source feeds a pipeline.
 */
import { createChannel, merge, pipeline, stage } from "../src/index.js";
import { assert, suite } from "./_harness.js";

const test = suite("pipeline merge");
const stages = new URL("./fixtures/pipeline-stages.ts", import.meta.url);

function* flood(tag: string): Generator<string> {
  for (let i = 0; ; i++) yield `${tag}${i}`;
}

test("a flood and a trickle at weights 1:1: each trickle item waits at most one round (one flood item)", async () => {
  const [trickleRx, trickleTx] = createChannel<string>({ capacity: 1 });
  const merged = merge<string>([flood("f"), trickleRx], { weights: [1, 1] });
  let emitted = 0;
  let sentAt = -1;
  let trickled = 0;
  let worstWait = 0;
  for await (const item of merged) {
    emitted++;
    if (item.startsWith("t")) {
      const waited = emitted - 1 - sentAt; // flood items emitted between the send and this item
      worstWait = Math.max(worstWait, waited);
      sentAt = -1;
      if (++trickled === 200) break;
    } else if (sentAt < 0 && emitted % 37 === 0) {
      assert.ok(trickleTx.trySend(`t${trickled}`));
      sentAt = emitted;
    }
  }
  assert.is(trickled, 200);
  assert.ok(worstWait <= 1, `a trickle item waited ${worstWait} flood items`);
});

test("weights share the turns while both are backlogged (3:1), fractions carry over (1.5:1)", async () => {
  const counts = async (weights: number[], total: number): Promise<Record<string, number>> => {
    const seen: Record<string, number> = { a: 0, b: 0 };
    let n = 0;
    for await (const item of merge([flood("a"), flood("b")], { weights })) {
      seen[item[0]!]!++;
      if (++n === total) break;
    }
    return seen;
  };
  assert.equal(await counts([3, 1], 400), { a: 300, b: 100 });
  assert.equal(await counts([1.5, 1], 500), { a: 300, b: 200 });
  assert.equal(await counts([1, 1], 10), { a: 5, b: 5 });
});

test("mixed sources end when all end; an async trickle is served within a round too", async () => {
  async function* slow(): AsyncGenerator<string> {
    for (let i = 0; i < 5; i++) {
      await new Promise((resolve) => setTimeout(resolve, 2));
      yield `s${i}`;
    }
  }
  const [rx, tx] = createChannel<string>();
  for (let i = 0; i < 3; i++) tx.trySend(`c${i}`);
  tx.close();
  const out: string[] = [];
  for await (const item of merge<string>([["a0", "a1", "a2", "a3"], slow(), rx])) out.push(item);
  assert.equal(out.filter((x) => x[0] === "a"), ["a0", "a1", "a2", "a3"]);
  assert.equal(out.filter((x) => x[0] === "s"), ["s0", "s1", "s2", "s3", "s4"]);
  assert.equal(out.filter((x) => x[0] === "c"), ["c0", "c1", "c2"]);
  assert.equal(await collectAll(merge([])), []);
});

test("a source that throws: merge throws it and returns the others", async () => {
  let returned = false;
  function* other(): Generator<number> {
    try {
      for (let i = 0; ; i++) yield i;
    } finally {
      returned = true;
    }
  }
  async function* failing(): AsyncGenerator<number> {
    yield 1;
    throw new RangeError("source broke");
  }
  await assert.rejects(collectAll(merge<number>([other(), failing()])), RangeError, /source broke/);
  assert.ok(returned);
  assert.throws(() => merge([[1]], { weights: [0] }), RangeError, /weights\[0\]/);
  assert.throws(() => merge([[1], [2]], { weights: [1] }), RangeError, /one weight per source/);
  assert.throws(() => merge([42 as never]), TypeError, /sources\[0\]/);
});

test("a merged source feeds a pipeline", async () => {
  const [rx, tx] = createChannel<number>();
  for (let i = 100; i < 110; i++) tx.trySend(i);
  tx.close();
  const p = pipeline<number>({ source: merge<number>([[1, 2, 3], rx]), stages: [stage(stages, { export: "double" })] });
  const out = await collectAll(p);
  assert.equal(out.sort((a, b) => a - b), [2, 4, 6, ...Array.from({ length: 10 }, (_, i) => (100 + i) * 2)]);
});

async function collectAll<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

test.run();
