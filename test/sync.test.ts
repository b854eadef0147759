/**
 * Shareable sync primitives (Lock, Semaphore, Event): mutual exclusion
 * across interpreters, permits, wake-ups in every interpreter, timeouts and
 * abort, release of a dead holder's locks, deadlock detection of lock
 * waits, and passing primitives around (shared, never moved).
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { suite, assert, withTimeout } from "./_harness.js";
import {
  create,
  createChannel,
  type DeadlockParty,
  Event,
  ExecutionFailed,
  type Interpreter,
  InterpretersError,
  isShareable,
  Lock,
  Semaphore,
  TimeoutError,
} from "../src/index.js";

const test = suite("sync");
const repoRoot = fileURLToPath(new URL("..", import.meta.url));
/** Every blocking call inside interpreters is bounded by this (ms). */
const BOUND = 20_000;

async function withInterpreters<T>(names: string[], body: (interps: Interpreter[]) => Promise<T>): Promise<T> {
  const interps: Interpreter[] = [];
  try {
    for (const name of names) interps.push(await create({ name }));
    return await body(interps);
  } finally {
    await Promise.all(interps.map((i) => i.terminate()));
  }
}

// ---- Lock ----

test("Lock: 4 interpreters × 100,000 non-atomic increments under the lock lose no update", async () => {
  const lock = new Lock();
  const counter = new SharedArrayBuffer(4);
  await withInterpreters(["inc0", "inc1", "inc2", "inc3"], async (interps) => {
    const started = performance.now();
    await Promise.all(
      interps.map((interp) =>
        interp.exec(
          `
          const v = new Int32Array(counter);
          for (let i = 0; i < 100000; i++) {
            lock.acquireSync({ timeout: ${BOUND} });
            v[0] = v[0] + 1; // a plain read-modify-write: only the lock makes it safe
            lock.release();
          }
        `,
          { bind: { lock, counter } },
        ),
      ),
    );
    console.log(`    400,000 lock/increment/unlock in ${(performance.now() - started).toFixed(0)} ms`);
  });
  assert.is(new Int32Array(counter)[0], 400_000);
  assert.ok(lock.tryAcquire(), "the lock is free at the end");
  lock.release();
}, { timeout: 180_000 }); // ~2 s on a quiet machine; a contended lock on an oversubscribed one is slow (seen: 30 s at load 45)

test("Lock: async and sync acquirers in several interpreters and main, mixed", async () => {
  const lock = new Lock();
  const counter = new SharedArrayBuffer(4);
  const v = new Int32Array(counter);
  await withInterpreters(["sync", "async"], async ([syncer, asyncer]) => {
    const runs = [
      syncer!.exec(`const v = new Int32Array(counter); for (let i = 0; i < 20000; i++) { lock.acquireSync({ timeout: ${BOUND} }); v[0] = v[0] + 1; lock.release(); }`, {
        bind: { lock, counter },
      }),
      asyncer!.exec(`const v = new Int32Array(counter); for (let i = 0; i < 2000; i++) { await lock.acquire({ timeout: ${BOUND} }); const x = v[0]; await null; v[0] = x + 1; lock.release(); }`, {
        bind: { lock, counter },
      }),
    ];
    // Two async tasks of the main thread contend too (the lock is the main thread's while either holds it).
    const task = async (): Promise<void> => {
      for (let i = 0; i < 1000; i++) {
        await lock.acquire({ timeout: BOUND });
        const x = v[0]!;
        await null; // hold it across a turn of the event loop
        v[0] = x + 1;
        lock.release();
      }
    };
    await Promise.all([...runs, task(), task()]);
  });
  assert.is(v[0], 24_000);
});

test("Lock: tryAcquire; release by a non-owner or of a free lock throws", async () => {
  const lock = new Lock();
  assert.ok(lock.tryAcquire());
  assert.not.ok(lock.tryAcquire(), "not re-entrant");
  await withInterpreters(["intruder"], async ([intruder]) => {
    await intruder!.exec(`if (lock.tryAcquire()) throw new Error("acquired a held lock");`, { bind: { lock } });
    const err = (await assert.rejects(intruder!.exec(`lock.release();`), ExecutionFailed)) as ExecutionFailed;
    assert.is(err.remote.name, "InterpretersError");
    assert.match(err.remote.message, /release of lock \d+ by interpreter \d+ "intruder": it is held by the main interpreter; only the interpreter that acquired a lock may release it/);
    lock.release();
    await intruder!.exec(`if (!lock.tryAcquire()) throw new Error("free lock not acquired"); lock.release();`);
  });
  assert.throws(() => lock.release(), InterpretersError, /release of lock \d+ by the main interpreter: it is not held/);
});

test("Lock: timeouts, abort and bad timeouts (async and sync)", async () => {
  const lock = new Lock();
  lock.acquireSync({ timeout: 0 }); // free: timeout 0 still succeeds
  // Held by this thread: another acquire waits for a release.
  await assert.rejects(lock.acquire({ timeout: 50 }), TimeoutError, /acquire of lock \d+ timed out after 50 ms/);
  await assert.rejects(lock.acquire({ timeout: 0 }), TimeoutError);
  assert.throws(() => lock.acquireSync({ timeout: 50 }), TimeoutError, /acquireSync of lock \d+ timed out after 50 ms/);
  assert.throws(() => lock.acquireSync({ timeout: 0 }), TimeoutError);
  await assert.rejects(lock.acquire({ timeout: -1 }), RangeError, /timeout/);
  await assert.rejects(lock.acquire({ timeout: Number.NaN }), RangeError);
  assert.throws(() => lock.acquireSync({ timeout: -5 }), RangeError);

  const aborted = new AbortController();
  aborted.abort(new Error("already"));
  await assert.rejects(lock.acquire({ signal: aborted.signal }), Error, /already/);
  const controller = new AbortController();
  const pending = lock.acquire({ signal: controller.signal, timeout: BOUND });
  controller.abort(new Error("changed my mind"));
  await assert.rejects(pending, Error, /changed my mind/);

  // A waiting acquire completes on release; the aborted one took nothing.
  const waiting = lock.acquire({ timeout: BOUND });
  lock.release();
  await waiting;
  assert.not.ok(lock.tryAcquire());
  lock.release();
  assert.ok(lock.tryAcquire(), "free after the last release");
  lock.release();

  // Held by another interpreter: main's waits time out, then succeed after its release.
  await withInterpreters(["holder"], async ([holder]) => {
    const [goRx, goTx] = createChannel<number>({ name: "go" });
    const [heldRx, heldTx] = createChannel<number>({ name: "held" });
    const holding = holder!.exec(`lock.acquireSync({ timeout: ${BOUND} }); held.sendSync(1); go.recvSync({ timeout: ${BOUND} }); lock.release();`, {
      bind: { lock, go: goRx, held: heldTx },
    });
    await heldRx.recv({ timeout: BOUND });
    await assert.rejects(lock.acquire({ timeout: 50 }), TimeoutError);
    const after = lock.acquire({ timeout: BOUND });
    await goTx.send(1);
    await after;
    await holding;
    lock.release();
  });
});

test("Lock: a lock held by an interpreter that is terminated is released; its waiters get it", async () => {
  const lock = new Lock();
  await withInterpreters(["holder", "waiter"], async ([holder, waiter]) => {
    const [heldRx, heldTx] = createChannel<number>({ name: "held" });
    const [gotRx, gotTx] = createChannel<string>({ name: "got" });
    // The holder keeps the lock and sleeps (bounded), never releasing it.
    void holder!
      .exec(`lock.acquireSync({ timeout: ${BOUND} }); held.sendSync(1); Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ${BOUND});`, {
        bind: { lock, held: heldTx },
      })
      .catch(() => {});
    await heldRx.recv({ timeout: BOUND });
    const waiting = waiter!.exec(`lock.acquireSync({ timeout: ${BOUND} }); got.sendSync("waiter"); lock.release();`, { bind: { lock, got: gotTx } });
    const mainGot = lock.acquire({ timeout: BOUND }).then(() => {
      lock.release();
      return "main";
    });
    assert.not.ok(lock.tryAcquire());
    await holder!.terminate();
    assert.is(await mainGot, "main");
    assert.is(await gotRx.recv({ timeout: BOUND }), "waiter");
    await waiting;
  });
  assert.ok(lock.tryAcquire());
  lock.release();
});

test("Lock: a lock created inside an interpreter is released when that interpreter is terminated", async () => {
  await withInterpreters(["creator"], async ([creator]) => {
    const [rx, tx] = createChannel<Lock>({ name: "locks" });
    void creator!
      .exec(
        `
        import { Lock } from "interpreters";
        const lock = new Lock();
        lock.acquireSync();
        out.sendSync(lock);
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ${BOUND});
      `,
        { bind: { out: tx } },
      )
      .catch(() => {});
    const lock = await rx.recv({ timeout: BOUND });
    assert.ok(lock instanceof Lock);
    assert.not.ok(lock.tryAcquire());
    const acquired = lock.acquire({ timeout: BOUND });
    await creator!.terminate();
    await acquired;
    lock.release();
  });
});

test("Lock: async acquire keeps the process alive until it completes", async () => {
  const { code, output } = await runChild(
    `
    import { create, Lock } from "./src/index.ts";
    const lock = new Lock();
    const holder = await create({ name: "holder" });
    // The interpreter takes the lock and releases it a little later, on its own timer; exec returns at once.
    await holder.exec("lock.acquireSync({ timeout: 10000 }); setTimeout(() => lock.release(), 300);", { bind: { lock } });
    await lock.acquire(); // nothing but this wait keeps the main thread alive now
    console.log("acquired");
    lock.release();
    await holder.close();
    `,
    "async acquire keep-alive child",
  );
  assert.is(code, 0, output);
  assert.match(output, /acquired/);
});

// ---- Semaphore ----

test("Semaphore(n) never admits n + 1 holders, and does admit n", async () => {
  const n = 3;
  const semaphore = new Semaphore(n);
  // Deterministic: n permits, then none.
  for (let i = 0; i < n; i++) assert.ok(semaphore.tryAcquire(), `permit ${i + 1}`);
  assert.not.ok(semaphore.tryAcquire(), `permit ${n + 1}`);
  for (let i = 0; i < n; i++) semaphore.release();

  const stats = new SharedArrayBuffer(12); // [inside now, most ever inside, holders that ever entered]
  await withInterpreters(["s0", "s1", "s2", "s3", "s4", "s5"], async (interps) => {
    await Promise.all(
      interps.map((interp) =>
        interp.exec(
          `
          const s = new Int32Array(stats);
          for (let i = 0; i < 3000; i++) {
            semaphore.acquireSync({ timeout: ${BOUND} });
            const inside = Atomics.add(s, 0, 1) + 1;
            for (let seen = Atomics.load(s, 1); inside > seen; seen = Atomics.load(s, 1)) Atomics.compareExchange(s, 1, seen, inside);
            const entered = Atomics.add(s, 2, 1) + 1;
            if (entered <= n) {
              // The first n holders meet here before leaving: they can only all arrive if n are admitted at once.
              if (entered === n) Atomics.notify(s, 2);
              for (let seen; (seen = Atomics.load(s, 2)) < n; ) {
                if (Atomics.wait(s, 2, seen, ${BOUND}) === "timed-out") throw new Error("only " + seen + " holders admitted at once");
              }
            }
            Atomics.sub(s, 0, 1);
            semaphore.release();
          }
        `,
          { bind: { semaphore, stats, n } },
        ),
      ),
    );
  });
  const [inside, most, entered] = new Int32Array(stats);
  assert.is(entered, 6 * 3000);
  assert.is(inside, 0);
  assert.ok(most! <= n, `${most} holders at once, over ${n}`);
  assert.is(most, n, "the semaphore admitted n holders at once");
  for (let i = 0; i < n; i++) assert.ok(semaphore.tryAcquire(), "every permit came back");
  assert.not.ok(semaphore.tryAcquire());
}, { timeout: 180_000 });

test("Semaphore: timeouts, abort, bad arguments; any party may release", async () => {
  assert.throws(() => new Semaphore(-1), RangeError, /permits must be an integer/);
  assert.throws(() => new Semaphore(1.5), RangeError);
  assert.throws(() => new Semaphore(undefined as unknown as number), RangeError);
  const semaphore = new Semaphore(0);
  assert.not.ok(semaphore.tryAcquire());
  await assert.rejects(semaphore.acquire({ timeout: 50 }), TimeoutError, /acquire of semaphore \d+ timed out after 50 ms/);
  assert.throws(() => semaphore.acquireSync({ timeout: 50 }), TimeoutError, /acquireSync of semaphore/);
  assert.throws(() => semaphore.acquireSync({ timeout: 0 }), TimeoutError);
  await assert.rejects(semaphore.acquire({ timeout: -1 }), RangeError);
  const controller = new AbortController();
  const aborted = semaphore.acquire({ signal: controller.signal });
  controller.abort(new Error("stop"));
  await assert.rejects(aborted, Error, /stop/);

  // Released by another interpreter (permits are not owned): two waiting acquires, two releases.
  await withInterpreters(["releaser"], async ([releaser]) => {
    const first = semaphore.acquire({ timeout: BOUND });
    const second = semaphore.acquire({ timeout: BOUND });
    await releaser!.exec(`semaphore.release(); semaphore.release(); semaphore.release();`, { bind: { semaphore } });
    await Promise.all([first, second]);
  });
  assert.ok(semaphore.tryAcquire(), "the third permit is there; the aborted acquire took none");
  assert.not.ok(semaphore.tryAcquire());
});

test("Semaphore: permits held by a terminated interpreter are not returned (they are not owned)", async () => {
  const semaphore = new Semaphore(1);
  await withInterpreters(["taker"], async ([taker]) => {
    await taker!.exec(`semaphore.acquireSync({ timeout: ${BOUND} });`, { bind: { semaphore } });
    await taker!.terminate();
  });
  assert.not.ok(semaphore.tryAcquire());
  semaphore.release(); // anyone may give it back
  assert.ok(semaphore.tryAcquire());
});

// ---- Event ----

test("Event: set in one interpreter wakes sync waiters in others and an async waiter in main", async () => {
  const event = new Event();
  assert.not.ok(event.isSet());
  await withInterpreters(["w0", "w1", "w2", "setter"], async (interps) => {
    const [readyRx, readyTx] = createChannel<string>({ name: "ready" });
    const [wokeRx, wokeTx] = createChannel<string>({ name: "woke" });
    const waiters = interps.slice(0, 3).map((interp) =>
      interp.exec(
        `import { current } from "interpreters";
         ready.sendSync(current().name);
         event.waitSync({ timeout: ${BOUND} });
         woke.sendSync(current().name);`,
        { bind: { event, ready: readyTx.clone(), woke: wokeTx.clone() } },
      ),
    );
    const mainWoke = event.wait({ timeout: BOUND });
    for (let i = 0; i < 3; i++) await readyRx.recv({ timeout: BOUND });
    assert.not.ok(event.isSet());
    await interps[3]!.exec(`event.set();`, { bind: { event } });
    await mainWoke;
    const woke = [];
    for (let i = 0; i < 3; i++) woke.push(await wokeRx.recv({ timeout: BOUND }));
    assert.equal(woke.sort(), ["w0", "w1", "w2"]);
    await Promise.all(waiters);
    // Still set: waits return at once, everywhere.
    assert.ok(event.isSet());
    await event.wait({ timeout: 0 });
    await interps[0]!.exec(`if (!event.isSet()) throw new Error("not set"); event.waitSync({ timeout: 0 }); event.clear();`);
    assert.not.ok(event.isSet());
    await assert.rejects(event.wait({ timeout: 0 }), TimeoutError);
  });
});

test("Event: a wait in progress when set() is called returns even if clear() follows at once", async () => {
  const event = new Event();
  await withInterpreters(["pulser"], async ([pulser]) => {
    const waiting = event.wait({ timeout: BOUND });
    await pulser!.exec(`event.set(); event.clear();`, { bind: { event } });
    await waiting;
    assert.not.ok(event.isSet());
  });
});

test("Event: timeouts, abort and bad timeouts", async () => {
  const event = new Event();
  await assert.rejects(event.wait({ timeout: 50 }), TimeoutError, /wait on event \d+ timed out after 50 ms/);
  assert.throws(() => event.waitSync({ timeout: 50 }), TimeoutError, /waitSync on event \d+ timed out/);
  assert.throws(() => event.waitSync({ timeout: -1 }), RangeError);
  await assert.rejects(event.wait({ timeout: "5" as unknown as number }), RangeError);
  const controller = new AbortController();
  const aborted = event.wait({ signal: controller.signal });
  controller.abort(new Error("enough"));
  await assert.rejects(aborted, Error, /enough/);
  const waiting = event.wait({ timeout: BOUND });
  event.set();
  await waiting;
  event.waitSync({ timeout: 0 });
});

// ---- passing primitives around ----

test("isShareable: Lock, Semaphore, Event, alone or nested", () => {
  assert.ok(isShareable(new Lock()));
  assert.ok(isShareable(new Semaphore(2)));
  assert.ok(isShareable(new Event()));
  assert.ok(isShareable({ locks: [new Lock(), new Lock()], gate: new Event() }));
});

test("primitives sent through a channel arrive as working primitives over the same state, and come back", async () => {
  const lock = new Lock();
  const semaphore = new Semaphore(1);
  const event = new Event();
  await withInterpreters(["peer"], async ([peer]) => {
    const [toPeerRx, toPeerTx] = createChannel<unknown>({ name: "to-peer" });
    const [fromPeerRx, fromPeerTx] = createChannel<unknown>({ name: "from-peer" });
    const running = peer!.exec(
      `
      import { Lock, Semaphore, Event } from "interpreters";
      const { lock, semaphore, event, again } = inp.recvSync({ timeout: ${BOUND} });
      if (!(lock instanceof Lock) || !(semaphore instanceof Semaphore) || !(event instanceof Event)) throw new Error("wrong classes");
      if (again !== lock) throw new Error("one lock, two instances in one message");
      lock.acquireSync({ timeout: ${BOUND} });
      semaphore.acquireSync({ timeout: ${BOUND} });
      out.sendSync({ ids: [lock.id, semaphore.id, event.id], lock });
      event.waitSync({ timeout: ${BOUND} });
      lock.release();
      semaphore.release();
      out.sendSync("released");
    `,
      { bind: { inp: toPeerRx, out: fromPeerTx } },
    );
    await toPeerTx.send({ lock, semaphore, event, again: lock });
    const reply = (await fromPeerRx.recv({ timeout: BOUND })) as { ids: number[]; lock: Lock };
    assert.equal(reply.ids, [lock.id, semaphore.id, event.id]);
    // Shared, not moved: our instances still work, and see the peer's state.
    assert.not.ok(lock.tryAcquire(), "held by the peer");
    assert.not.ok(semaphore.tryAcquire(), "permit taken by the peer");
    assert.ok(reply.lock instanceof Lock);
    assert.is(reply.lock.id, lock.id);
    assert.not.ok(reply.lock.tryAcquire());
    event.set();
    assert.is(await fromPeerRx.recv({ timeout: BOUND }), "released");
    assert.ok(reply.lock.tryAcquire());
    assert.not.ok(lock.tryAcquire(), "the instance that came back is the same lock");
    lock.release();
    assert.ok(semaphore.tryAcquire());
    await running;
  });
});

test("primitives passed by bind, prepareMain and call arguments are the same primitives", async () => {
  const lock = new Lock();
  const semaphore = new Semaphore(2);
  const event = new Event();
  await withInterpreters(["bound"], async ([bound]) => {
    await bound!.prepareMain({ event });
    await bound!.exec(`lock.acquireSync({ timeout: ${BOUND} }); semaphore.acquireSync({ timeout: ${BOUND} }); event.set();`, { bind: { lock, semaphore } });
    assert.ok(event.isSet());
    assert.not.ok(lock.tryAcquire());
    assert.ok(semaphore.tryAcquire());
    assert.not.ok(semaphore.tryAcquire());
    const probe = `data:text/javascript,${encodeURIComponent(`
      export function probe(lock, semaphore, event) {
        return { tags: [lock, semaphore, event].map((x) => Object.prototype.toString.call(x)), locked: !lock.tryAcquire(), set: event.isSet() };
      }
      export function release(lock) { lock.release(); return true; }`)}`;
    const seen = await bound!.call<{ tags: string[]; locked: boolean; set: boolean }>(probe, "probe", lock, semaphore, event);
    assert.equal(seen.tags, [`[object Lock ${lock.id}]`, `[object Semaphore ${semaphore.id}]`, `[object Event ${event.id}]`]);
    assert.ok(seen.locked);
    assert.ok(seen.set);
    assert.ok(await bound!.call<boolean>(probe, "release", lock), "the interpreter that acquired it releases it");
    assert.ok(lock.tryAcquire());
    lock.release();
  });
});

// ---- deadlock detection ----

interface Outcome {
  name: string;
  error: string;
  message: string;
  cycle: DeadlockParty[];
}

/** Runs each body in its own interpreter; every outcome (or error) comes back on a channel. */
async function runParties(parties: Array<{ name: string; body: string; bind: Record<string, unknown> }>, prelude?: (interps: Interpreter[]) => Promise<void>): Promise<Outcome[]> {
  const [reportRx, reportTx] = createChannel<Outcome>({ name: "report" });
  return withInterpreters(
    parties.map((p) => p.name),
    async (interps) => {
      const runs = parties.map((party, i) =>
        interps[i]!.exec(
          `import { current } from "interpreters";
           try { ${party.body}
             report.sendSync({ name: current().name, error: "none", message: "", cycle: [] });
           } catch (e) {
             report.sendSync({ name: current().name, error: e.name, message: e.message, cycle: e.cycle ?? [] });
           }`,
          { bind: { ...party.bind, report: reportTx.clone() } },
        ),
      );
      await prelude?.(interps);
      const outcomes: Outcome[] = [];
      for (let i = 0; i < parties.length; i++) outcomes.push(await reportRx.recv({ timeout: BOUND }));
      await Promise.all(runs);
      return outcomes.sort((a, b) => a.name.localeCompare(b.name));
    },
  );
}

/** A channel on which main says "go" once every party holds its first lock. */
async function lockstep(count: number): Promise<{ held: unknown[]; go: unknown[]; start: () => Promise<void> }> {
  const [heldRx, heldTx] = createChannel<number>({ name: "held" });
  const [goRx, goTx] = createChannel<number>({ name: "go" });
  return {
    held: Array.from({ length: count }, () => heldTx.clone()),
    go: Array.from({ length: count }, () => goRx.clone()),
    start: async () => {
      for (let i = 0; i < count; i++) await heldRx.recv({ timeout: BOUND });
      for (let i = 0; i < count; i++) await goTx.send(i);
    },
  };
}

test("deadlock: two interpreters each holding one lock and acquiring the other's", async () => {
  const a = new Lock();
  const b = new Lock();
  const steps = await lockstep(2);
  const body = (mine: string, theirs: string): string =>
    `${mine}.acquireSync({ timeout: ${BOUND} }); held.sendSync(1); go.recvSync({ timeout: ${BOUND} }); ${theirs}.acquireSync();`;
  const outcomes = await runParties(
    [
      { name: "A", body: body("a", "b"), bind: { a, b, held: steps.held[0], go: steps.go[0] } },
      { name: "B", body: body("b", "a"), bind: { a, b, held: steps.held[1], go: steps.go[1] } },
    ],
    steps.start,
  );
  for (const outcome of outcomes) {
    assert.is(outcome.error, "DeadlockError", `${outcome.name}: ${outcome.error} ${outcome.message}`);
    assert.equal(outcome.cycle.map((p) => p.op), ["acquire", "acquire"]);
    assert.equal(outcome.cycle.map((p) => p.interpreter.name).sort(), ["A", "B"]);
    assert.ok(outcome.cycle.every((p) => p.channel === undefined), "lock waits name no channel");
    // The sentence starts from the party in the lowest slot: either may come first.
    const aFirst = `interpreter \\d+ "A" waits to acquire lock ${b.id}, held by interpreter \\d+ "B", which waits to acquire lock ${a.id}, held by interpreter \\d+ "A"`;
    const bFirst = `interpreter \\d+ "B" waits to acquire lock ${a.id}, held by interpreter \\d+ "A", which waits to acquire lock ${b.id}, held by interpreter \\d+ "B"`;
    assert.match(outcome.message, new RegExp(`${aFirst}|${bFirst}`));
    assert.match(outcome.message, /no party outside this cycle can release those locks/);
  }
  console.log(`    ${outcomes[0]!.message}`);
});

test("deadlock: a sync acquire of a lock this interpreter holds", async () => {
  const lock = new Lock();
  const [outcome] = await runParties([{ name: "twice", body: "lock.acquireSync(); lock.acquireSync();", bind: { lock } }]);
  assert.is(outcome!.error, "DeadlockError", outcome!.message);
  assert.match(outcome!.message, new RegExp(`interpreter \\d+ "twice" waits to acquire lock ${lock.id}, held by itself`));
});

test("deadlock: a cycle through a lock and a channel", async () => {
  const lock = new Lock();
  const [rx, tx] = createChannel<number>({ capacity: 0, name: "reply" });
  const steps = await lockstep(1);
  const outcomes = await runParties(
    [
      // A holds the lock and waits for B's message; B waits for the lock first.
      { name: "A", body: `lock.acquireSync({ timeout: ${BOUND} }); held.sendSync(1); inp.recvSync();`, bind: { lock, inp: rx, held: steps.held[0] } },
      { name: "B", body: `go.recvSync({ timeout: ${BOUND} }); lock.acquireSync(); out.sendSync(1);`, bind: { lock, out: tx, go: steps.go[0] } },
    ],
    steps.start,
  );
  for (const outcome of outcomes) assert.is(outcome.error, "DeadlockError", `${outcome.name}: ${outcome.message}`);
  const a = outcomes.find((o) => o.name === "A")!;
  assert.equal(a.cycle.map((p) => `${p.interpreter.name}:${p.op}`).sort(), ["A:recv", "B:acquire"]);
  assert.match(a.message, /"A"(, which)? waits to recv on channel \d+ "reply", whose only sender is interpreter \d+ "B"/);
  assert.match(a.message, new RegExp(`waits to acquire lock ${lock.id}, held by interpreter \\d+ "A"`));
});

test("not reported: a lock wait with a timeout (it times out instead, and the other completes)", async () => {
  const a = new Lock();
  const b = new Lock();
  const steps = await lockstep(2);
  const outcomes = await runParties(
    [
      // A waits for b without a timeout; B gives up on a after 2.5 s (past the detection time) and lets b go.
      { name: "A", body: `a.acquireSync({ timeout: ${BOUND} }); held.sendSync(1); go.recvSync({ timeout: ${BOUND} }); b.acquireSync();`, bind: { a, b, held: steps.held[0], go: steps.go[0] } },
      {
        name: "B",
        body: `b.acquireSync({ timeout: ${BOUND} }); held.sendSync(1); go.recvSync({ timeout: ${BOUND} });
               try { a.acquireSync({ timeout: 2500 }); throw new Error("acquired a held lock"); }
               catch (e) { if (e.name !== "TimeoutError") throw e; b.release(); }`,
        bind: { a, b, held: steps.held[1], go: steps.go[1] },
      },
    ],
    steps.start,
  );
  for (const outcome of outcomes) assert.is(outcome.error, "none", `${outcome.name}: ${outcome.error}: ${outcome.message}`);
});

test("not reported: Semaphore and Event waits (any party may release or set them)", async () => {
  const semaphore = new Semaphore(0);
  const event = new Event();
  const outcomes = await runParties(
    [
      { name: "S", body: `semaphore.acquireSync({ timeout: ${BOUND} });`, bind: { semaphore } },
      { name: "E", body: `event.waitSync({ timeout: ${BOUND} }); semaphore.release();`, bind: { event, semaphore } },
    ],
    async () => {
      // Both stay blocked well past the detection time; then main (which could act all along) sets the event.
      await new Promise((resolve) => setTimeout(resolve, 2500));
      event.set();
    },
  );
  for (const outcome of outcomes) assert.is(outcome.error, "none", `${outcome.name}: ${outcome.error}: ${outcome.message}`);
});

/** Runs `script` (ESM, importing ./src/index.ts) in a child Node process. */
function runChild(script: string, what: string): Promise<{ code: number | null; output: string }> {
  return withTimeout(
    new Promise((resolve) => {
      const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
      let output = "";
      child.stdout.on("data", (d: Buffer) => (output += d));
      child.stderr.on("data", (d: Buffer) => (output += d));
      child.on("exit", (code) => resolve({ code, output }));
    }),
    60_000,
    what,
  );
}

test("deadlock: the main thread waiting for a lock held by an interpreter that waits on main", async () => {
  const { code, output } = await runChild(
    `
    import { create, createChannel, Lock } from "./src/index.ts";
    const lock = new Lock();
    const worker = await create({ name: "W" });
    const [rx, tx] = createChannel({ capacity: 0, name: "from-main" });
    const [heldRx, heldTx] = createChannel({ name: "held" });
    const running = worker.exec("lock.acquireSync({ timeout: 10000 }); held.sendSync(1); inp.recvSync();", { bind: { lock, inp: rx, held: heldTx } });
    running.catch((e) => console.log("worker:", e.remote?.name));
    await heldRx.recv({ timeout: 10000 });
    try { lock.acquireSync(); console.log("no error"); }
    catch (e) { console.log("main:", e.name, e.message); }
    tx.close();
    await running.catch(() => {});
    await worker.terminate();
    `,
    "main-thread lock deadlock child",
  );
  assert.is(code, 0, output);
  assert.match(output, /main: DeadlockError deadlock: the main interpreter waits to acquire lock \d+, held by interpreter \d+ "W", which waits to recv on channel \d+ "from-main", whose only sender is the main interpreter/);
  assert.match(output, /worker: DeadlockError/);
});

test.run();
