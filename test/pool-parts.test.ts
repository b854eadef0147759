/**
 * The pool's parts without threads: the queue it gives tinypool (FIFO,
 * front pushes for redeliveries, removal of an entry, hooks told of every
 * entry in and out, compaction) and the task table (a task starts at most
 * once; a cancelled one never starts; entries are reused).
 */
import type { Task } from "tinypool";
import { suite, assert } from "./_harness.js";
import { PoolTaskQueue } from "../src/pool/task-queue.js";
import { slotOfState, TaskState, TaskTable, TaskTableView } from "../src/pool/task-table.js";
import { isPlainData } from "../src/pool/protocol.js";
import { createChannel, Lock } from "../src/index.js";

const test = suite("pool-parts");

function entry(name: string): Task & { name: string } {
  return { name, cancel() {} } as unknown as Task & { name: string };
}

test("the queue: first in first out, front pushes, remove, removeLast, hooks, compaction", () => {
  const inside = new Set<string>();
  const queue = new PoolTaskQueue({
    entered: (t) => inside.add((t as unknown as { name: string }).name),
    left: (t) => inside.delete((t as unknown as { name: string }).name),
  });
  const [a, b, c, d] = ["a", "b", "c", "d"].map(entry);
  queue.push(a!);
  queue.push(b!);
  queue.toFront = true;
  queue.push(c!);
  queue.toFront = false;
  queue.push(d!);
  assert.is(queue.size, 4);
  assert.equal([...inside].sort(), ["a", "b", "c", "d"]);
  assert.is(queue.shift(), c);
  queue.remove(b!);
  queue.remove(b!); // not there: no-op
  assert.is(queue.removeLast(), d);
  assert.is(queue.shift(), a);
  assert.is(queue.shift(), null);
  assert.is(queue.removeLast(), null);
  assert.equal([...inside], []);
  // Many entries through: the head compacts, order holds.
  const names: string[] = [];
  for (let i = 0; i < 5000; i++) queue.push(entry(`e${i}`));
  for (let i = 0; i < 5000; i++) names.push((queue.shift() as unknown as { name: string }).name);
  assert.equal(names, Array.from({ length: 5000 }, (_, i) => `e${i}`));
  assert.is(queue.size, 0);
});

test("the task table: started at most once, cancelled never starts, finished names its thread, entries reused", () => {
  const table = new TaskTable();
  const view = new TaskTableView(table.buffer);
  const a = table.allocate();
  assert.is(table.state(a), TaskState.QUEUED);
  assert.ok(view.start(a, 3));
  assert.not.ok(view.start(a, 4), "a second delivery does not start it again");
  assert.not.ok(table.cancel(a), "a started task cannot be cancelled");
  assert.is(slotOfState(table.state(a)), 3);
  view.finish(a, 3);
  assert.ok(table.state(a) < -1);
  assert.is(slotOfState(table.state(a)), 3);
  const b = table.allocate();
  assert.ok(table.cancel(b));
  assert.not.ok(view.start(b, 5), "a cancelled task never starts");
  assert.is(slotOfState(table.state(b)), -1);
  table.release(a);
  assert.is(table.allocate(), a, "a released entry is reused");
  assert.is(table.state(a), TaskState.QUEUED);
  // Growth: the thread's view sees entries allocated after it was made.
  const many = Array.from({ length: 3000 }, () => table.allocate());
  const last = many[many.length - 1]!;
  assert.ok(view.start(last, 7));
  assert.is(slotOfState(table.state(last)), 7);
});

test("isPlainData: only primitives, plain objects and arrays pass; everything else is left to the codec", () => {
  assert.ok(isPlainData([1, "a", null, undefined, true, 2n, { a: [1, { b: "c" }] }, Object.create(null)]));
  const [rx] = createChannel();
  for (const value of [new Map(), new Set(), new Date(), new Uint8Array(1), new SharedArrayBuffer(8), new Lock(), rx, () => 1, Symbol("s"), new Proxy({}, {}), new (class A {})(), /x/, new Error("e")]) {
    assert.not.ok(isPlainData([value]), String(value?.constructor?.name ?? typeof value));
  }
  const cycle: Record<string, unknown> = {};
  cycle.self = cycle;
  assert.not.ok(isPlainData(cycle), "a cycle: the codec decides");
  let deep: unknown = 1;
  for (let i = 0; i < 40; i++) deep = [deep];
  assert.not.ok(isPlainData(deep), "too deep: the codec decides");
  rx.close();
});

test.run();
