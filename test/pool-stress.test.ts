/**
 * InterpreterPool under a seeded mix of tasks: results, throws, threads
 * killed by process.exit or an uncaught error, aborts at random moments,
 * channel ends moved in, a Lock taken (and sometimes held by a dying
 * thread). Every task settles exactly once with an outcome its kind
 * allows, every end passed in is released, the Lock ends free, and the
 * pool's counters add up.
 *
 * SEED replays a run; POOL_STRESS_TASKS (default 150) and
 * POOL_STRESS_ROUNDS (default 1) make a longer soak.
 */
import { suite, assert, rng, seedFromEnv } from "./_harness.js";
import { ChannelClosedError, createChannel, ExecutionFailed, InterpreterClosedError, InterpreterPool, list, Lock, type RecvChannel } from "../src/index.js";

const test = suite("pool-stress");
const tasks = new URL("./fixtures/pool-tasks.ts", import.meta.url);
const TASKS = Number(process.env.POOL_STRESS_TASKS ?? 150);
const ROUNDS = Number(process.env.POOL_STRESS_ROUNDS ?? 1);

type Kind = "value" | "throw" | "exit" | "crash" | "ends" | "lock" | "lockExit";

interface Planned {
  i: number;
  kind: Kind;
  abortAfterMs: number | undefined;
  /** For "ends": the receive end of the channel whose send end the task got, and how many it sends. */
  rx?: RecvChannel<number>;
  count?: number;
  /** Values of rx already taken by the test (the abort trigger takes the first). */
  taken?: number;
}

function pick(random: () => number): Kind {
  const r = random();
  if (r < 0.03) return "exit";
  if (r < 0.06) return "crash";
  if (r < 0.16) return "throw";
  if (r < 0.4) return "ends";
  if (r < 0.5) return "lock";
  if (r < 0.52) return "lockExit";
  return "value";
}

async function round(seed: number): Promise<void> {
  const random = rng(seed);
  const maxInterpreters = 1 + Math.floor(random() * 3);
  const pool = new InterpreterPool({ name: `stress-${seed}`, maxInterpreters });
  const lock = new Lock();
  const planned: Planned[] = [];
  const outcomes: Array<Promise<void>> = [];
  const settledCount = new Array<number>(TASKS).fill(0);
  const problems: string[] = [];
  const tally = { resolved: 0, rejected: 0, aborted: 0 };
  try {
    for (let i = 0; i < TASKS; i++) {
      const kind = pick(random);
      const abortAfterMs = random() < 0.2 ? Math.floor(random() * 30) : undefined;
      const plan: Planned = { i, kind, abortAfterMs };
      planned.push(plan);
      const controller = abortAfterMs === undefined ? undefined : new AbortController();
      const reason = new Error(`abort ${i}`);
      let args: unknown[];
      let exportName: string;
      switch (kind) {
        case "value":
          exportName = "sleep";
          args = [Math.floor(random() * 4), i];
          break;
        case "throw":
          exportName = "fail";
          args = [`fail ${i}`];
          break;
        case "exit":
          exportName = "exitThread";
          args = [1];
          break;
        case "crash":
          exportName = "crashSoon";
          args = [`crash ${i}`];
          break;
        case "ends": {
          const [rx, tx] = createChannel<number>({ capacity: Infinity, name: `ends ${i}` });
          plan.rx = rx;
          plan.count = 1 + Math.floor(random() * 40);
          exportName = "sendCount";
          args = [tx, plan.count];
          break;
        }
        case "lock":
        case "lockExit":
          exportName = "lockedWork";
          args = [lock, Math.floor(random() * 3), kind === "lockExit", i];
          break;
      }
      const promise = pool.run({ module: tasks, export: exportName, args, signal: controller?.signal });
      if (controller && kind === "ends" && random() < 0.5) {
        // Abort once the task has sent its first value: it is running then.
        plan.taken = 1;
        plan.rx!.recv({ timeout: 60_000 }).then(
          () => controller.abort(reason),
          () => {},
        );
      } else if (controller) {
        setTimeout(() => controller.abort(reason), abortAfterMs);
      }
      outcomes.push(
        promise.then(
          (value) => {
            settledCount[i]!++;
            tally.resolved++;
            const expected = kind === "ends" ? plan.count : i;
            if (!["value", "ends", "lock"].includes(kind)) problems.push(`task ${i} (${kind}) resolved with ${String(value)}`);
            else if (value !== expected) problems.push(`task ${i} (${kind}) resolved with ${String(value)}, expected ${expected}`);
          },
          (err: unknown) => {
            settledCount[i]!++;
            if (controller && err === reason) {
              tally.aborted++;
              return; // aborted: allowed for every kind
            }
            tally.rejected++;
            const ok =
              (kind === "throw" && err instanceof ExecutionFailed && err.remote.message === `fail ${i}`) ||
              ((kind === "exit" || kind === "lockExit") && err instanceof InterpreterClosedError) ||
              (kind === "crash" && err instanceof ExecutionFailed && err.remote.message === `crash ${i}`);
            if (!ok) problems.push(`task ${i} (${kind}) rejected with ${(err as Error)?.constructor?.name}: ${(err as Error)?.message}`);
          },
        ),
      );
      // Submit in bursts, so that the queue both fills and drains.
      if (random() < 0.1) await new Promise((resolve) => setTimeout(resolve, Math.floor(random() * 10)));
    }
    await Promise.all(outcomes);
    const stats = pool.stats();
    assert.is(stats.completed + stats.failed, TASKS, `every task counted once: ${JSON.stringify(stats)}`);
    assert.is(stats.busy + stats.queued, 0);
    assert.equal(settledCount.filter((n) => n !== 1), [], "every task settled exactly once");
    for (const plan of planned) {
      if (plan.kind !== "ends") continue;
      // The task's end is released whatever happened; what it sent is a prefix of 0..count-1, in order.
      let next = plan.taken ?? 0;
      for (;;) {
        let value: number;
        try {
          value = await plan.rx!.recv({ timeout: 20_000 });
        } catch (err) {
          if (!(err instanceof ChannelClosedError)) problems.push(`ends of task ${plan.i}: ${(err as Error).message}`);
          break;
        }
        if (value !== next) problems.push(`ends of task ${plan.i}: got ${value}, expected ${next}`);
        next++;
      }
      if (next > plan.count!) problems.push(`ends of task ${plan.i}: ${next} values for ${plan.count}`);
    }
    assert.ok(lock.tryAcquire(), "the Lock is free: every holder released it or died");
    lock.release();
  } finally {
    await pool.close();
  }
  assert.not.ok(list().some((i) => i.name.startsWith(`stress-${seed}-`)), "every interpreter of the pool is gone");
  assert.equal(problems, [], `seed ${seed}`);
  const kinds = planned.reduce<Record<string, number>>((n, p) => ((n[p.kind] = (n[p.kind] ?? 0) + 1), n), {});
  console.log(`    seed ${seed}: ${TASKS} tasks on ${maxInterpreters} interpreters, ${planned.filter((p) => p.abortAfterMs !== undefined).length} aborted at random, kinds ${JSON.stringify(kinds)}, outcomes ${JSON.stringify(tally)}`);
}

test("a seeded mix of tasks, deaths and aborts: every task settles once as its kind allows, every end and the Lock are released", async () => {
  const first = seedFromEnv();
  for (let r = 0; r < ROUNDS; r++) {
    const seed = (first + r) >>> 0;
    try {
      await round(seed);
    } catch (err) {
      console.log(`    FAILED with SEED=${seed}`);
      throw err;
    }
  }
}, { timeout: 150_000 * ROUNDS });

test.run();
