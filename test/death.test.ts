/**
 * Death of an interpreter. When an interpreter exits, throws, is terminated
 * or is killed by its resourceLimits, every end it held is closed; messages
 * it had fully sent stay deliverable; a half-written message is rolled back
 * and never delivered; a lock it held inside a channel's shared state is
 * recovered; every party waiting on it is woken with ChannelClosedError.
 *
 * 1. One test per cause of death (process.exit, an uncaught throw in a
 *    timer, terminate(), out of memory under resourceLimits): the dying
 *    interpreter holds the only send end of A (k messages fully sent), the
 *    only send end of B (main and a witness interpreter wait to receive),
 *    and the only receive end of D (main waits to send).
 * 2. Killed inside a critical section, at exact points reached through
 *    channel-ops.ts `setTestHook` (the hook spins holding the channel lock
 *    until the thread is terminated): "send:committed" and "recv:copied"
 *    (before a one-lock section's commit point: undone), "send:published"
 *    and "recv:freed" (just after it: kept);
 *    killed while streaming a message larger than the ring, on either side;
 *    killed right after growing the ring.
 * 3. Seeded chaos: sender and receiver interpreters on one channel, killed
 *    at random moments; SharedArrayBuffer logs (which survive the kill)
 *    prove exactly-once delivery up to the windows a kill opens (see
 *    chaosRound), and no wait may stall (a lost wake-up fails the test even
 *    if the wait's own deadline rescued it).
 * 4. Deaths around other parties' critical sections: a receiver killed
 *    between taking a message that carries a channel end and claiming that
 *    end; a party that dies while another holds a channel lock, which is
 *    then killed there too. The last test runs last on purpose: when it
 *    fails, the supervisor is stuck for the rest of the process.
 *
 * The seed comes from $SEED (else a fresh one) and is printed; failures
 * say `seed=<n>`. Replay: `SEED=<n> node --import tsx test/run.ts death`.
 * Long mode: `CHAOS_KILLS=1000 FILE_TIMEOUT_MS=3600000 node --import tsx test/run.ts death`.
 * DEATH_TESTS=<regex> runs only the matching tests (e.g. DEATH_TESTS=chaos).
 * CHAOS_GROW=0 keeps chaos rings at their full size; CHAOS_MULTI=1 sometimes kills
 * two parties at once; DEATH_DEBUG=1 prints per-round timings.
 *
 * Synchronisation is by flags and shared state, never by sleeping: the only
 * timers are deadlines and (in the chaos test) the choice of kill moments.
 */
import { suite, assert, rng, seedFromEnv, withTimeout } from "./_harness.js";
import {
  ChannelClosedError,
  create,
  createChannel,
  ExecutionFailed,
  InterpreterClosedError,
  list,
  type CreateOptions,
  type Interpreter,
} from "../src/index.js";
import { endOf } from "../src/transfer.js";
import { H } from "../src/ring.js";
import { lockOwner } from "../src/mutex.js";
import { control, PartyState, slotId, slotState } from "../src/control.js";
import { wakeParty } from "../src/waiting.js";
import { planOf, verifyMessage, type ChaosOptions } from "./fixtures/death-chaos.js";

const suiteTest = suite("death");
/** DEATH_TESTS=<regex>: run only the tests whose title matches (e.g. DEATH_TESTS=chaos). */
const only = process.env.DEATH_TESTS ? new RegExp(process.env.DEATH_TESTS) : undefined;
const test = ((title: string, body: () => unknown, opts?: { timeout?: number }) =>
  only && !only.test(title) ? suiteTest.skip(title) : suiteTest(title, body, opts)) as typeof suiteTest;
test.run = () => suiteTest.run();
const SEED = seedFromEnv();
console.log(`  death: seed=${SEED} (replay with SEED=${SEED})`);
const random = rng(SEED);
/** The very module instance the library uses in every thread (tests run from source). */
const OPS_URL = new URL("../src/channel-ops.ts", import.meta.url).href;
const chaosFixture = new URL("./fixtures/death-chaos.ts", import.meta.url);
/** The lock word's "someone sleeps on it" bit (mutex.ts). */
const CONTENDED = 1 << 30;
/** Main's party slot: a streamed message claimed by main has STREAM_RECEIVER = 0 + 1. */
const MAIN_SLOT_PLUS_ONE = 1;

// ---------------------------------------------------------------- helpers

function memoryOf(handle: object) {
  const end = endOf(handle);
  if (!end) throw new Error("not a channel handle");
  return end.memory;
}

function newFlag(): Int32Array {
  return new Int32Array(new SharedArrayBuffer(8));
}

/** Waits (without blocking the event loop) until `flag[index]` is non-zero. */
async function waitFlag(flag: Int32Array, index: number, what: string, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (Atomics.load(flag, index) === 0) {
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`seed=${SEED}: timed out after ${ms} ms waiting for ${what}`);
    const result = Atomics.waitAsync(flag, index, 0, left);
    if (result.async) await result.value;
  }
}

/**
 * Polls `condition` once per event-loop turn (setImmediate; or a 1 ms timer
 * when `idle`, for conditions that take a while) until it holds.
 */
async function pollUntil(condition: () => boolean, what: string, options: { ms?: number; idle?: boolean } = {}): Promise<void> {
  const ms = options.ms ?? 60_000; // generous: seen to take over 20 s at load 27
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`seed=${SEED}: timed out after ${ms} ms waiting for ${what}`);
    await new Promise((resolve) => (options.idle ? setTimeout(resolve, 1) : setImmediate(resolve)));
  }
}

/**
 * Blocks the main thread (Atomics.wait in 1 ms steps) until `condition`
 * holds: used where main must not run its own pending channel operations
 * meanwhile. Progress is made by other threads (the supervisor).
 */
function blockUntil(condition: () => boolean, what: string, ms = 20_000): number {
  const started = performance.now();
  const nap = new Int32Array(new SharedArrayBuffer(4));
  while (!condition()) {
    if (performance.now() - started > ms) throw new Error(`seed=${SEED}: timed out after ${ms} ms (main blocked) waiting for ${what}`);
    Atomics.wait(nap, 0, 0, 1);
  }
  return performance.now() - started;
}

/**
 * True once interpreter `id`'s thread is gone as far as the library knows:
 * no party slot holds it as LIVE or STARTING (the supervisor marks a slot
 * EXITED when it notices the death, FREE once it has cleaned up).
 */
function threadGone(id: number): boolean {
  for (let slot = 1; slot < 256; slot++) {
    if (slotId(slot) !== id) continue;
    const state = slotState(slot);
    if (state === PartyState.LIVE || state === PartyState.STARTING) return false;
  }
  return true;
}

/** Bytes the records of exactly these values take in a ring (measured on a scratch channel). */
async function bytesOf(values: unknown[]): Promise<number> {
  const [rx, tx] = createChannel<unknown>({ capacity: Infinity });
  for (const value of values) await tx.send(value, { timeout: 1000 });
  const bytes = rx.stats().bytes;
  tx.close();
  rx.close();
  return bytes;
}

/** Settles to the value or the error, never rejects. */
function outcome<T>(promise: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> {
  return promise.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error }),
  );
}

function isOutcome(value: unknown): value is Outcome<unknown> {
  return typeof value === "object" && value !== null && "ok" in value && ("value" in value || "error" in value);
}

function describeError(error: unknown): string {
  if (error instanceof ExecutionFailed) return `${error.message}\n${error.remote.stack}`;
  return error instanceof Error ? `${error.constructor.name}: ${error.message}` : String(error);
}

type Outcome<T> = { ok: true; value: T } | { ok: false; error: unknown };

/** Expects ChannelClosedError from `promise` (an operation, or its outcome() taken early so that no rejection goes unhandled). */
/** Closes the last send handle: `rx`, drained, must then fail with ChannelClosedError. */
async function closeLastSender(tx: { close(): void }, rx: { recv(options: { timeout: number }): Promise<unknown> }): Promise<void> {
  tx.close();
  await expectClosed(rx.recv({ timeout: 5000 }), "recv after the last sender closed");
}

async function expectClosed(promise: Promise<unknown>, what: string): Promise<void> {
  const result = (await withTimeout(promise.then(
    (value) => (isOutcome(value) ? value : { ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error }),
  ), 20_000, `seed=${SEED}: ${what}`)) as Outcome<unknown>;
  if (result.ok) throw new Error(`seed=${SEED}: ${what}: completed, expected ChannelClosedError`);
  if (!(result.error instanceof ChannelClosedError)) throw new Error(`seed=${SEED}: ${what}: expected ChannelClosedError, got ${describeError(result.error)}`);
}

const hookSource = (point: string): string => `
  const ops = await import(${JSON.stringify(OPS_URL)});
  ops.setTestHook((point) => {
    if (point !== ${JSON.stringify(point)}) return;
    Atomics.store(reached, 0, 1);
    Atomics.notify(reached, 0);
    for (;;) {} // holding the channel lock, until terminated
  });
`;

/** Like hookSource, but the spin ends (and the operation goes on) once `reached[1]` is set. */
const releasableHookSource = (point: string): string => `
  const ops = await import(${JSON.stringify(OPS_URL)});
  ops.setTestHook((point) => {
    if (point !== ${JSON.stringify(point)}) return;
    ops.setTestHook(undefined);
    Atomics.store(reached, 0, 1);
    Atomics.notify(reached, 0);
    while (Atomics.load(reached, 1) === 0) {} // holding the channel lock, until released
  });
`;

// ---------------------------------------------------------------- 1. one test per cause

interface Cause {
  key: string;
  title: string;
  options?: CreateOptions;
  /** Code the interpreter runs to die once told to; undefined: main terminates it instead. */
  die?: string;
  /** What the pending exec settles with. */
  exec: "resolves" | typeof InterpreterClosedError | typeof ExecutionFailed;
  exitCode?: number;
  /** The 'error' event's remote message, if the cause is an uncaught error. */
  error?: RegExp;
}

const causes: Cause[] = [
  { key: "exit", title: "process.exit inside exec", die: "process.exit(7);", exec: InterpreterClosedError, exitCode: 7 },
  {
    key: "throw",
    title: "an uncaught throw in a setTimeout",
    die: `setTimeout(() => { throw new Error("boom in a timer"); }, 0);`,
    exec: "resolves",
    error: /^boom in a timer$/,
  },
  { key: "terminate", title: "terminate() while it waits in recvSync", exec: InterpreterClosedError },
  {
    key: "oom",
    title: "resourceLimits (maxOldGenerationSizeMb: 16), allocating until it dies",
    options: { resourceLimits: { maxOldGenerationSizeMb: 16 } },
    die: `const hoard = []; for (;;) hoard.push(new Array(1 << 16).fill(hoard.length));`,
    exec: ExecutionFailed,
    error: /memory/i,
  },
];

for (const cause of causes) {
  test(`dies by ${cause.title}: its k sent messages are delivered, then ChannelClosedError; waiters on both sides wake`, async () => {
    const k = 1 + Math.floor(random() * 5);
    const where = `seed=${SEED} cause=${cause.key} k=${k}`;
    const dying = await create({ name: `dying-${cause.key}`, ...cause.options });
    const witness = await create({ name: "witness" });
    try {
      const [rxA, txA] = createChannel<string>({ name: "A" }); // capacity Infinity: k sends complete at once
      const [rxB, txB] = createChannel<string>({ capacity: 0, name: "B" });
      const [rxD, txD] = createChannel<number>({ capacity: 1, name: "D" });
      const [rxGo, txGo] = createChannel<string>({ capacity: 1, name: "go" });
      const ready = newFlag();
      const events: string[] = [];
      const errored = new Promise<ExecutionFailed>((resolve) =>
        dying.once("error", (err) => {
          events.push("error");
          resolve(err);
        }),
      );
      const exited = new Promise<number>((resolve) =>
        dying.once("exit", (code) => {
          events.push("exit");
          resolve(code);
        }),
      );
      const running = outcome(
        dying.exec(
          `
          for (let i = 0; i < ${k}; i++) a.sendSync("A" + i, { timeout: 10000 });
          Atomics.store(ready, 0, 1);
          Atomics.notify(ready, 0);
          go.recvSync({ timeout: 30000 });
          ${cause.die ?? ""}
        `,
          { bind: { a: txA, b: txB, d: rxD, go: rxGo, ready } },
        ),
      );
      await waitFlag(ready, 0, `${where}: ${dying.name} to send ${k} messages`);
      const before = rxA.stats();
      assert.is(before.length, k, where);
      assert.is(before.senders, 1, where);

      // Parties waiting on the dying interpreter: main and the witness to receive on B, main to send on D.
      const mainRecvB = outcome(rxB.recv({ timeout: 20_000 }));
      const witnessRun = outcome(
        witness.exec(
          `
          import { ChannelClosedError } from "interpreters";
          try { rb.recvSync({ timeout: 20000 }); throw new Error("the witness received a message on B"); }
          catch (e) { if (!(e instanceof ChannelClosedError)) throw e; }
          rb.close();
        `,
          { bind: { rb: rxB.clone() } },
        ),
      );
      await txD.send(0, { timeout: 1000 }); // D is full now
      const mainSendD = outcome(txD.send(1, { timeout: 20_000 }));
      await pollUntil(() => rxB.stats().waitingReceivers >= 2 && txD.stats().waitingSenders >= 1, `${where}: waiters to register`, { idle: true });

      const killedAt = performance.now();
      if (cause.die === undefined) await withTimeout(dying.terminate(), 20_000, `${where}: terminate`);
      else await txGo.send("die", { timeout: 1000 });
      const code = await withTimeout(exited, 20_000, `${where}: 'exit' of ${dying.name}`);
      await expectClosed(mainRecvB, `${where}: main's recv on B`);
      await expectClosed(mainSendD, `${where}: main's send on D`);
      const woken = performance.now() - killedAt;
      const witnessed = await withTimeout(witnessRun, 20_000, `${where}: the witness's recvSync on B`);
      assert.ok(witnessed.ok, `${where}: witness: ${witnessed.ok ? "" : describeError(witnessed.error)}`);

      // How the interpreter's own exec ended, its exit code, its 'error' event.
      const ran = await withTimeout(running, 20_000, `${where}: the dying exec to settle`);
      if (cause.exec === "resolves") assert.ok(ran.ok, `${where}: exec should resolve: ${ran.ok ? "" : describeError(ran.error)}`);
      else assert.ok(!ran.ok && ran.error instanceof cause.exec, `${where}: exec should reject with ${cause.exec.name}, got ${ran.ok ? "success" : describeError(ran.error)}`);
      if (cause.exitCode !== undefined) assert.is(code, cause.exitCode, where);
      else assert.is.not(code, 0, where);
      if (cause.error) {
        const err = await withTimeout(errored, 5000, `${where}: 'error' event`);
        assert.match(err.remote.message, cause.error, where);
        assert.equal(events, ["error", "exit"], where);
      } else {
        assert.equal(events, ["exit"], where);
      }
      assert.not.ok(list().some((i) => i.id === dying.id), `${where}: still listed`);

      // A: every end it held is closed, yet its k fully sent messages are delivered, in order, then closed.
      const a = rxA.stats();
      assert.equal([a.senders, a.length, a.sent, a.closed], [0, k, k, false], where);
      for (let i = 0; i < k; i++) assert.is(await rxA.recv({ timeout: 5000 }), `A${i}`, where);
      await expectClosed(rxA.recv({ timeout: 5000 }), `${where}: recv on drained A`);
      assert.equal([rxA.stats().closed, rxA.stats().bytes], [true, 0], where);
      // B: no sender is left; D and go: no receiver is left.
      assert.equal([rxB.stats().senders, rxB.stats().waitingReceivers, rxB.stats().closed], [0, 0, true], where);
      const d = txD.stats();
      assert.equal([d.receivers, d.length, d.bytes, d.waitingSenders, d.closed], [0, 0, 0, 0, true], where);
      assert.throws(() => txD.trySend(2), ChannelClosedError);
      assert.is(txGo.stats().receivers, 0, where);
      console.log(`    ${cause.key}: k=${k}, waiters woken ${woken.toFixed(0)} ms after the kill began`);
      rxA.close();
      rxB.close();
      txD.close();
      txGo.close();
    } finally {
      await dying.terminate();
      await witness.close();
    }
  }, { timeout: 90_000 });
}

// ---------------------------------------------------------------- 2. killed inside a critical section

test("killed holding the lock at send:committed: the half-published message is rolled back; the lock is recovered", async () => {
  const stuck = await create({ name: "stuck-sender" });
  const contender = await create({ name: "contender" });
  try {
    const [rx, tx] = createChannel<string>({ capacity: 8, name: "journal-send" });
    const rx2 = rx.clone();
    const memory = memoryOf(rx);
    await tx.send("main-0", { timeout: 1000 });
    const reached = newFlag();
    const stuckRun = outcome(
      stuck.exec(
        `
        t.sendSync("good-1");
        t.sendSync("good-2");
        ${hookSource("send:committed")}
        t.sendSync("POISON");
        throw new Error("the hook returned");
      `,
        { bind: { t: tx.clone(), reached } },
      ),
    );
    // The contender sends as soon as the hook is reached: it blocks on the lock the stuck sender holds.
    const contenderRun = outcome(
      contender.exec(
        `
        if (Atomics.wait(reached, 0, 0, 20000) === "timed-out") throw new Error("the stuck sender never reached the hook");
        t.sendSync("after-1", { timeout: 20000 });
        t.close();
      `,
        { bind: { t: tx.clone(), reached } },
      ),
    );
    await waitFlag(reached, 0, "the stuck sender to reach send:committed");
    // From here until the stuck sender is dead, main must not take the lock (stats() would wait on it).
    await pollUntil(() => (Atomics.load(memory.header, H.SEND_LOCK) & CONTENDED) !== 0, "the contender to block on the send lock");
    const owner = lockOwner(memory.header, H.SEND_LOCK);
    assert.ok(owner > 0, `lock owner ${owner}`);
    const killedAt = performance.now();
    await withTimeout(stuck.terminate(), 20_000, "terminate the stuck sender");
    const contended = await withTimeout(contenderRun, 20_000, "the contender's send after recovery");
    const recovered = performance.now() - killedAt;
    assert.ok(contended.ok, `contender: ${contended.ok ? "" : describeError(contended.error)}`);
    const stuckOutcome = await stuckRun;
    assert.ok(!stuckOutcome.ok && stuckOutcome.error instanceof InterpreterClosedError, "the stuck exec rejects with InterpreterClosedError");
    assert.is(Atomics.load(memory.header, H.SEND_LOCK), 0, "lock word free");

    // The rolled-back POISON is not counted anywhere; the stats describe exactly the 4 real messages.
    const expected = ["main-0", "good-1", "good-2", "after-1"];
    const stats = rx.stats();
    assert.equal(
      { length: stats.length, bytes: stats.bytes, sent: stats.sent, received: stats.received, senders: stats.senders, receivers: stats.receivers },
      { length: 4, bytes: await bytesOf(expected), sent: 4, received: 0, senders: 1, receivers: 2 },
    );
    assert.equal([stats.waitingSenders, stats.waitingReceivers, stats.closed], [0, 0, false]);
    const got: string[] = [];
    for (let i = 0; i < 4; i++) got.push(await (i % 2 ? rx2 : rx).recv({ timeout: 5000 }));
    assert.equal(got, expected);
    assert.equal(rx2.tryRecv(), { ok: false, closed: false });
    // The channel keeps working for everyone else.
    await tx.send("main-1", { timeout: 5000 });
    assert.is(await rx2.recv({ timeout: 5000 }), "main-1");
    await closeLastSender(tx, rx);
    const end = rx.stats();
    assert.equal([end.length, end.bytes, end.sent, end.received, end.senders, end.closed], [0, 0, 5, 5, 0, true]);
    console.log(`    lock recovered and the contender's send done ${recovered.toFixed(0)} ms after terminate()`);
    rx.close();
    rx2.close();
  } finally {
    await stuck.terminate();
    await contender.close();
  }
}, { timeout: 60_000 });

test("killed holding the lock at recv:copied: the message stays and goes to another receiver exactly once", async () => {
  const stuck = await create({ name: "stuck-receiver" });
  const other = await create({ name: "other-receiver" });
  try {
    const [rx, tx] = createChannel<string>({ capacity: 4, name: "journal-recv" });
    const [reportRx, reportTx] = createChannel<string>({ name: "report" });
    await tx.send("first", { timeout: 1000 });
    await tx.send("second", { timeout: 1000 });
    const memory = memoryOf(rx);
    const reached = newFlag();
    const stuckRun = outcome(
      stuck.exec(
        `
        ${hookSource("recv:copied")}
        report.sendSync("the stuck receiver got " + r.recvSync({ timeout: 20000 }));
      `,
        { bind: { r: rx.clone(), report: reportTx.clone(), reached } },
      ),
    );
    const otherRun = outcome(
      other.exec(
        `
        if (Atomics.wait(reached, 0, 0, 20000) === "timed-out") throw new Error("the stuck receiver never reached the hook");
        report.sendSync(r.recvSync({ timeout: 20000 }));
        r.close();
        report.close();
      `,
        { bind: { r: rx.clone(), report: reportTx.clone(), reached } },
      ),
    );
    reportTx.close();
    await waitFlag(reached, 0, "the stuck receiver to reach recv:copied");
    await pollUntil(() => (Atomics.load(memory.header, H.RECV_LOCK) & CONTENDED) !== 0, "the other receiver to block on the receive lock");
    await withTimeout(stuck.terminate(), 20_000, "terminate the stuck receiver");
    const otherOutcome = await withTimeout(otherRun, 20_000, "the other receiver's recv after recovery");
    assert.ok(otherOutcome.ok, `other receiver: ${otherOutcome.ok ? "" : describeError(otherOutcome.error)}`);
    assert.ok(!(await stuckRun).ok);
    assert.is(await reportRx.recv({ timeout: 5000 }), "first");
    await expectClosed(reportRx.recv({ timeout: 5000 }), "the report channel (the stuck receiver never reported)");

    const stats = rx.stats();
    assert.equal(
      { length: stats.length, bytes: stats.bytes, sent: stats.sent, received: stats.received, senders: stats.senders, receivers: stats.receivers },
      { length: 1, bytes: await bytesOf(["second"]), sent: 2, received: 1, senders: 1, receivers: 1 },
    );
    assert.is(await rx.recv({ timeout: 5000 }), "second");
    assert.equal(rx.tryRecv(), { ok: false, closed: false });
    await tx.send("third", { timeout: 5000 });
    assert.is(await rx.recv({ timeout: 5000 }), "third");
    await closeLastSender(tx, rx);
    assert.equal([rx.stats().received, rx.stats().length, rx.stats().bytes], [3, 0, 0]);
    rx.close();
    reportRx.close();
  } finally {
    await stuck.terminate();
    await other.close();
  }
}, { timeout: 60_000 });

test("killed holding the send lock just past its commit point (send:published): the message stands and is delivered once; receivers never needed that lock", async () => {
  const stuck = await create({ name: "stuck-after-publish" });
  try {
    const [rx, tx] = createChannel<string>({ capacity: 4, name: "commit-send" });
    const memory = memoryOf(rx);
    const reached = newFlag();
    const stuckRun = outcome(stuck.exec(`${hookSource("send:published")} t.sendSync("PUBLISHED"); throw new Error("the hook returned");`, { bind: { t: tx.clone(), reached } }));
    await waitFlag(reached, 0, "the stuck sender to reach send:published");
    assert.ok(lockOwner(memory.header, H.SEND_LOCK) > 0, "the stuck sender holds the send lock");
    // A receive takes only the receive lock: it completes while the sender is stuck.
    assert.is(await rx.recv({ timeout: 5000 }), "PUBLISHED");
    await withTimeout(stuck.terminate(), 20_000, "terminate the stuck sender");
    assert.ok(!(await stuckRun).ok);
    await pollUntil(() => Atomics.load(memory.header, H.SEND_LOCK) === 0, "the supervisor to recover the send lock", { idle: true, ms: 15_000 });
    await tx.send("after", { timeout: 5000 });
    assert.is(await rx.recv({ timeout: 5000 }), "after");
    assert.equal(rx.tryRecv(), { ok: false, closed: false }, "PUBLISHED is not delivered twice");
    const stats = rx.stats();
    assert.equal([stats.length, stats.bytes, stats.sent, stats.received, stats.senders], [0, 0, 2, 2, 1]);
    await closeLastSender(tx, rx);
    rx.close();
  } finally {
    await stuck.terminate();
  }
}, { timeout: 60_000 });

test("killed holding the receive lock just past its commit point (recv:freed): the message it took is gone with it, never delivered again; senders never needed that lock", async () => {
  const stuck = await create({ name: "stuck-after-free" });
  try {
    const [rx, tx] = createChannel<string>({ capacity: 4, name: "commit-recv" });
    const memory = memoryOf(rx);
    await tx.send("first", { timeout: 1000 });
    await tx.send("second", { timeout: 1000 });
    const reached = newFlag();
    const stuckRun = outcome(stuck.exec(`${hookSource("recv:freed")} r.recvSync({ timeout: 20000 }); throw new Error("the hook returned");`, { bind: { r: rx.clone(), reached } }));
    await waitFlag(reached, 0, "the stuck receiver to reach recv:freed");
    assert.ok(lockOwner(memory.header, H.RECV_LOCK) > 0, "the stuck receiver holds the receive lock");
    // A send takes only the send lock: it completes while the receiver is stuck.
    await tx.send("third", { timeout: 5000 });
    await withTimeout(stuck.terminate(), 20_000, "terminate the stuck receiver");
    assert.ok(!(await stuckRun).ok);
    await pollUntil(() => Atomics.load(memory.header, H.RECV_LOCK) === 0, "the supervisor to recover the receive lock", { idle: true, ms: 15_000 });
    assert.is(await rx.recv({ timeout: 5000 }), "second");
    assert.is(await rx.recv({ timeout: 5000 }), "third");
    assert.equal(rx.tryRecv(), { ok: false, closed: false }, "first was taken by the dead receiver; it is not delivered again");
    const stats = rx.stats();
    assert.equal([stats.length, stats.bytes, stats.sent, stats.received, stats.receivers], [0, 0, 3, 3, 1]);
    tx.close();
    rx.close();
  } finally {
    await stuck.terminate();
  }
}, { timeout: 60_000 });

test("a receiver killed holding the receive lock while a live sender holds the send lock and waits for it: the supervisor recovers the lock alone, and the sender goes on", async () => {
  const stuck = await create({ name: "stuck-receiver-2" });
  const contender = await create({ name: "both-locks-sender" });
  try {
    const [rx, tx] = createChannel<string>({ capacity: 4, name: "lock-order" });
    const memory = memoryOf(rx);
    await tx.send("first", { timeout: 1000 });
    // Handles are passed before the receiver gets stuck: passing one takes both locks.
    await contender.exec(`globalThis.t = t;`, { bind: { t: tx.clone() } });
    const reached = newFlag();
    const stuckRun = outcome(stuck.exec(`${hookSource("recv:copied")} r.recvSync({ timeout: 20000 });`, { bind: { r: rx.clone(), reached } }));
    await waitFlag(reached, 0, "the stuck receiver to reach recv:copied");
    // trySend runs the full protocol: it takes the send lock, then waits for the receive lock.
    const contenderRun = outcome(contender.exec(`if (!globalThis.t.trySend("second")) throw new Error("no room"); globalThis.t.close();`));
    await pollUntil(() => lockOwner(memory.header, H.SEND_LOCK) > 0 && (Atomics.load(memory.header, H.RECV_LOCK) & CONTENDED) !== 0, "the contender to hold the send lock and wait for the receive lock");
    await withTimeout(stuck.terminate(), 20_000, "terminate the stuck receiver");
    const contended = await withTimeout(contenderRun, 20_000, "the contender's trySend after the receive lock is recovered");
    assert.ok(contended.ok, `contender: ${contended.ok ? "" : describeError(contended.error)}`);
    assert.ok(!(await stuckRun).ok);
    assert.is(await rx.recv({ timeout: 5000 }), "first", "the message the dead receiver had copied is still there");
    assert.is(await rx.recv({ timeout: 5000 }), "second");
    await closeLastSender(tx, rx);
    rx.close();
  } finally {
    await stuck.terminate();
    await contender.close();
  }
}, { timeout: 60_000 });

test("an interpreter dies as the last receiver of a channel whose buffered message carries another channel's only send end: the supervisor releases that end", async () => {
  const last = await create({ name: "last-receiver" });
  try {
    const [carrierRx, carrierTx] = createChannel<unknown>({ capacity: 4, name: "carrier" });
    const [carriedRx, carriedTx] = createChannel<string>({ name: "carried" });
    await last.exec(`globalThis.kept = c;`, { bind: { c: carrierRx } });
    await carrierTx.send({ end: carriedTx }, { timeout: 5000 }); // the only send end of "carried" moves into the message
    assert.is(carriedRx.stats().senders, 1, "the end inside the buffered message counts as a sender");
    await withTimeout(last.terminate(), 20_000, "terminate the last receiver");
    await expectClosed(carriedRx.recv({ timeout: 10_000 }), "recv on the carried channel once the message carrying its only send end is discarded");
    assert.is(carriedRx.stats().senders, 0);
    carrierTx.close();
    carriedRx.close();
  } finally {
    await last.terminate();
  }
}, { timeout: 60_000 });

const MiB = 1 << 20;
const STREAM_RING = 64 * 1024;

function pattern(length: number, salt: number): Uint8Array {
  const bytes = new Uint8Array(length);
  for (let i = 0; i < length; i++) bytes[i] = (i * 7 + (i >>> 12) + salt) & 255;
  return bytes;
}

function samePattern(bytes: Uint8Array, length: number, salt: number): boolean {
  if (bytes.length !== length) return false;
  for (let i = 0; i < length; i++) if (bytes[i] !== ((i * 7 + (i >>> 12) + salt) & 255)) return false;
  return true;
}

const patternSource = `
  const pattern = (length, salt) => {
    const bytes = new Uint8Array(length);
    for (let i = 0; i < length; i++) bytes[i] = (i * 7 + (i >>> 12) + salt) & 255;
    return bytes;
  };
`;

test("a sender killed mid-stream (8 MiB through a 64 KiB ring): the partial message is never delivered; the next one arrives whole", async () => {
  const streamer = await create({ name: "streamer" });
  const next = await create({ name: "next-sender" });
  try {
    const [rx, tx] = createChannel<Uint8Array>({ capacity: 1, bufferBytes: STREAM_RING, maxBufferBytes: STREAM_RING, name: "stream" });
    const memory = memoryOf(rx);
    // Main is the receiver: its recv takes pieces only when main's event loop runs.
    const receiving = outcome(rx.recv({ timeout: 60_000 }));
    const streamRun = outcome(
      streamer.exec(`${patternSource} t.sendSync(pattern(${8 * MiB}, 1), { timeout: 60000 }); throw new Error("the stream completed");`, {
        bind: { t: tx.clone() },
      }),
    );
    await pollUntil(() => Atomics.load(memory.header, H.STREAM_RECEIVER) === MAIN_SLOT_PLUS_ONE, "main's recv to claim the stream (its first piece taken)");
    assert.ok(Atomics.load(memory.header, H.STREAM_SENDER) !== 0, "the streamer is mid-stream");
    // Kill now, and block main until the supervisor has released the streamer: main takes no
    // piece meanwhile, so the streamer cannot finish (at most one ring of 8 MiB is in flight).
    const killing = streamer.terminate();
    const released = blockUntil(() => Atomics.load(memory.header, H.STREAM_SENDER) === 0, "the supervisor to abandon the stream");
    await withTimeout(killing, 20_000, "terminate the streamer");
    const streamOutcome = await streamRun;
    assert.ok(!streamOutcome.ok && streamOutcome.error instanceof InterpreterClosedError, `streamer: ${streamOutcome.ok ? "completed" : describeError(streamOutcome.error)}`);
    const after = rx.stats();
    assert.equal([after.length, after.sent, after.received, after.senders], [0, 0, 0, 1]);

    // Another sender's message (also streamed) reaches the same pending recv, whole.
    const nextRun = outcome(next.exec(`${patternSource} t.sendSync(pattern(${3 * MiB}, 2), { timeout: 60000 }); t.close();`, { bind: { t: tx.clone() } }));
    const received = await withTimeout(receiving, 60_000, "main's recv to complete");
    if (!received.ok) throw new Error(`seed=${SEED}: main's recv failed: ${describeError(received.error)}`);
    const got = received.value;
    assert.ok(samePattern(got, 3 * MiB, 2), `main received ${got.length} bytes that are not the next sender's message`);
    assert.ok((await withTimeout(nextRun, 60_000, "the next sender")).ok);
    // And main's own small message after it.
    await tx.send(pattern(1000, 3), { timeout: 5000 });
    assert.ok(samePattern(await rx.recv({ timeout: 5000 }), 1000, 3));
    const end = rx.stats();
    assert.equal([end.length, end.bytes, end.sent, end.received, end.senders], [0, 0, 2, 2, 1]);
    await closeLastSender(tx, rx);
    console.log(`    stream abandoned ${released.toFixed(0)} ms after terminate() began`);
    rx.close();
  } finally {
    await streamer.terminate();
    await next.close();
  }
}, { timeout: 90_000 });

test("a receiver killed mid-stream: the sender finishes, the rest is dropped, the next message goes whole to another receiver", async () => {
  const taker = await create({ name: "stream-taker" });
  try {
    const [rx, tx] = createChannel<Uint8Array>({ capacity: 1, bufferBytes: STREAM_RING, maxBufferBytes: STREAM_RING, name: "stream-recv" });
    const memory = memoryOf(rx);
    const takerRun = outcome(taker.exec(`r.recvSync({ timeout: 60000 }); throw new Error("the taker received the whole message");`, { bind: { r: rx.clone() } }));
    await pollUntil(() => rx.stats().waitingReceivers === 1, "the taker to wait", { idle: true });
    // Main is the sender: it writes pieces only when its event loop runs.
    const sending = outcome(tx.send(pattern(8 * MiB, 4), { timeout: 60_000 }));
    await pollUntil(() => {
      const claimed = Atomics.load(memory.header, H.STREAM_RECEIVER);
      return claimed !== 0 && claimed !== MAIN_SLOT_PLUS_ONE;
    }, "the taker to claim the stream");
    const receivers = Atomics.load(memory.header, H.RECV_HANDLES);
    const killing = taker.terminate();
    // The supervisor releases the taker's handle and drops its claim in one
    // section under both locks; main reads without locks, so it waits for the
    // section to end (both locks free: main holds none while it blocks here,
    // the taker is dead) before it looks at the claim.
    blockUntil(
      () => Atomics.load(memory.header, H.RECV_HANDLES) === receivers - 1 && Atomics.load(memory.header, H.SEND_LOCK) === 0 && Atomics.load(memory.header, H.RECV_LOCK) === 0,
      "the supervisor to release the taker",
    );
    assert.is(Atomics.load(memory.header, H.STREAM_RECEIVER), 0, "the dead taker's claim is dropped");
    await withTimeout(killing, 20_000, "terminate the taker");
    assert.ok(!(await takerRun).ok);
    // Main's own receive drops the orphaned pieces as the send writes them; the send completes.
    const receiving = outcome(rx.recv({ timeout: 60_000 }));
    const sent = await withTimeout(sending, 60_000, "main's send of the orphaned stream");
    if (!sent.ok) throw new Error(`seed=${SEED}: main's send of the orphaned stream failed: ${describeError(sent.error)}`);
    await tx.send(pattern(2 * MiB, 5), { timeout: 60_000 });
    const received = await withTimeout(receiving, 60_000, "main's recv");
    if (!received.ok) throw new Error(`seed=${SEED}: main's recv failed: ${describeError(received.error)}`);
    const got = received.value;
    assert.ok(samePattern(got, 2 * MiB, 5), `main received ${got.length} bytes that are not the next message`);
    const end = rx.stats();
    assert.equal([end.length, end.bytes, end.sent, end.received, end.receivers], [0, 0, 2, 1, 1]);
    await closeLastSender(tx, rx);
    rx.close();
  } finally {
    await taker.terminate();
  }
}, { timeout: 90_000 });

test("killed at send:committed right after growing the ring: the ring can still grow afterwards", async () => {
  const grower = await create({ name: "grower" });
  try {
    const [rx, tx] = createChannel<Uint8Array>({ capacity: Infinity, bufferBytes: 1024, maxBufferBytes: 1 << 20, name: "growing" });
    const reached = newFlag();
    const run = outcome(grower.exec(`${hookSource("send:committed")} t.sendSync(new Uint8Array(3000));`, { bind: { t: tx.clone(), reached } }));
    await waitFlag(reached, 0, "the grower to reach send:committed (after growing the ring)");
    await withTimeout(grower.terminate(), 20_000, "terminate the grower");
    assert.ok(!(await run).ok);
    const stats = rx.stats();
    assert.equal([stats.length, stats.bytes, stats.sent, stats.senders], [0, 0, 0, 1]);
    // The rollback restored DATA_SIZE to 1024 while the buffer stays grown: growing again must still work.
    const sizes = [1500, 600, 3000, 9000];
    for (const size of sizes) {
      const sent = await outcome(tx.send(pattern(size, size & 255), { timeout: 5000 }));
      assert.ok(sent.ok, `send of ${size} bytes after the rollback: ${sent.ok ? "" : describeError(sent.error)}`);
    }
    for (const size of sizes) assert.ok(samePattern(await rx.recv({ timeout: 5000 }), size, size & 255), `message of ${size} bytes`);
    tx.close();
    rx.close();
  } finally {
    await grower.terminate();
  }
}, { timeout: 60_000 });

// ---------------------------------------------------------------- 3. seeded chaos

const CHAOS_KILLS = Number(process.env.CHAOS_KILLS ?? 50);
if (!Number.isSafeInteger(CHAOS_KILLS) || CHAOS_KILLS < 1) throw new Error(`CHAOS_KILLS must be a positive integer, not ${process.env.CHAOS_KILLS}`);
const CHAOS_LONG = process.env.CHAOS_KILLS !== undefined;
const KILLS_PER_ROUND = 5;
const CHAOS_CAPACITIES = [0, 1, 7, Infinity];
const CHAOS_RINGS = [4096, 8192, 16384];
/** Sender indexes per round are below this (receivers range-check them). */
const MAX_SENDERS = 4096;
const SENDER_LOG_WORDS = 1 << 18;
const RECEIVER_LOG_WORDS = 1 << 20;
/** Bound on every wait inside the interpreters and of main's drain. */
const CHAOS_WAIT = 30_000;
/** A single wait longer than this fails (see ChaosOptions.stallMs). */
const CHAOS_STALL = 15_000;
/**
 * Once the channel is told to stop, nothing may wait this long (ms) for it
 * to drain and close; if anything does, every party is woken once by hand
 * (diagnosis: if that unblocks it, a wake-up was lost) and the round fails.
 */
const NUDGE_AFTER = 10_000;
const CHAOS_TIMEOUT = Math.max(300_000, CHAOS_KILLS * 3_000);
/** A third of the rounds start with a quarter of the ring and grow it in place (CHAOS_GROW=0: never). */
const CHAOS_GROW = process.env.CHAOS_GROW !== "0";
/** Sometimes kill two parties at once (CHAOS_MULTI=1); off by default, see the last test of this file. */
const CHAOS_MULTI = process.env.CHAOS_MULTI === "1";

/** Interpreters for the chaos: survivors of a round are reused; a few spares are created ahead. */
class Pool {
  private idle: Interpreter[] = [];
  private spares: Array<Promise<Interpreter>> = [];
  created = 0;
  constructor(private readonly ahead: number) {}

  private spawn(): Promise<Interpreter> {
    const made = create({ name: `chaos-${++this.created}` });
    made.catch(() => {});
    return made;
  }

  async take(): Promise<Interpreter> {
    const interp = this.idle.pop() ?? (await (this.spares.shift() ?? this.spawn()));
    while (this.spares.length < this.ahead) this.spares.push(this.spawn());
    return interp;
  }

  give(interp: Interpreter): void {
    this.idle.push(interp);
  }

  async closeAll(): Promise<void> {
    const spares = await Promise.all(this.spares.map((p) => p.catch(() => undefined)));
    await Promise.all([...this.idle, ...spares].map((i) => i?.close()));
    this.idle = [];
    this.spares = [];
  }
}

interface Party {
  role: "send" | "recv";
  index: number;
  interp: Interpreter;
  log: Int32Array;
  state?: Int32Array;
  run: Promise<unknown>;
  settled?: { ok: true } | { ok: false; error: unknown };
  killed: boolean;
}

interface ChaosTotals {
  rounds: number;
  kills: number;
  killedSenders: number;
  killedReceivers: number;
  accepted: number;
  received: number;
  streamed: number;
  drainedByMain: number;
  lostToKilledReceiver: number;
  acceptedNotLogged: number;
  rolledBack: number;
  /** ms spent waiting for an interpreter to be created, and for terminate() to resolve. */
  waitingForInterpreters: number;
  terminating: number;
  /** ms from "stop" to the round's books checked. */
  ending: number;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** The channel's header and every live party's wait, for stall reports. */
function dumpState(channel: object, parties: Party[]): string {
  const m = memoryOf(channel);
  const h = m.header;
  const bits = (word: number): string => Array.from({ length: 8 }, (_, i) => (h[word + i]! >>> 0).toString(16)).join(",");
  const perSlot = (word: number): string =>
    [...Array(256).keys()].filter((i) => h[word + i] !== 0).map((i) => `${i}:${h[word + i]}`).join(" ");
  const channelLine =
    `channel ${m.id}: locks s${h[H.SEND_LOCK]}/r${h[H.RECV_LOCK]} closed ${h[H.CLOSED]} length ${m.length()} used ${m.usedBytes()} ` +
    `handles s${h[H.SEND_HANDLES]}/r${h[H.RECV_HANDLES]} waiting s${h[H.WAITING_SENDERS]}/r${h[H.WAITING_RECEIVERS]} ` +
    `ring head ${h[H.HEAD]} tail ${h[H.TAIL]} read ${h[H.READ]} written ${h[H.WRITTEN]} size ${h[H.DATA_SIZE]} stream s${h[H.STREAM_SENDER]}/r${h[H.STREAM_RECEIVER]} ` +
    `seq ${h[H.SEQ_HEAD]}..${h[H.SEQ_TAIL]} removed ${h[H.REMOVED]} withdrawn ${h[H.WITHDRAWN]} journals s${h[4480 / 4]}/r${h[5440 / 4]} ` +
    `sendBits ${bits(192 / 4)} recvBits ${bits(224 / 4)} waitsSend [${perSlot(2376 / 4)}] waitsRecv [${perSlot(3400 / 4)}] ` +
    `holdSend [${perSlot(320 / 4)}] holdRecv [${perSlot(1348 / 4)}]`;
  const slots: string[] = [];
  for (let slot = 0; slot < 256; slot++) {
    const base = 16 + 16 * slot;
    if (control[base] === 0) continue;
    const party = parties.find((p) => p.interp.id === control[base + 1] && slot !== 0);
    const who = slot === 0 ? "main" : party ? `${party.killed ? "killed " : ""}${party.role}${party.index}${party.settled ? " (settled)" : ""}` : `id ${control[base + 1]}`;
    slots.push(`[slot ${slot} ${who}: state ${control[base]} park ${control[base + 2]} waitOp ${control[base + 7]} ch ${control[base + 8]} flags ${control[base + 9]}]`);
  }
  return `${channelLine}; parties ${slots.join(" ")}`;
}

/**
 * One round: a channel, 1-3 senders and 1-3 receivers; KILLS_PER_ROUND
 * times, after a seeded delay, a random live party is terminated and
 * replaced. Then stop, drain, and check the logs:
 * - no (sender, seq) is received twice; each receiver sees each sender's
 *   messages in order; every message verifies byte for byte;
 * - every received message was accepted (logged by its sender), or is the
 *   one a killed sender was sending: exactly its next seq (accepted but
 *   killed before it could log it);
 * - every accepted message is received, except at most one per killed
 *   receiver (the one it held in hand: taken, not yet logged);
 * - the channel ends drained, closed and consistent; no survivor hangs.
 */
async function chaosRound(round: number, chaosRandom: () => number, pool: Pool, totals: ChaosTotals): Promise<void> {
  const seed = (chaosRandom() * 2 ** 31) >>> 0;
  const capacity = CHAOS_CAPACITIES[Math.floor(chaosRandom() * CHAOS_CAPACITIES.length)]!;
  const ring = CHAOS_RINGS[Math.floor(chaosRandom() * CHAOS_RINGS.length)]!;
  const grows = CHAOS_GROW && chaosRandom() < 1 / 3;
  const initialSenders = 1 + Math.floor(chaosRandom() * 3);
  const initialReceivers = 1 + Math.floor(chaosRandom() * 3);
  const where = `seed=${SEED} round=${round} (round seed ${seed}, capacity ${capacity}, ring ${ring}${grows ? " growing" : ""})`;
  const options: ChaosOptions = { seed, ring, senders: MAX_SENDERS, timeout: CHAOS_WAIT, stallMs: CHAOS_STALL };
  const [rx, tx] = createChannel<unknown>({ capacity, bufferBytes: grows ? ring / 4 : ring, maxBufferBytes: ring, name: `chaos-${round}` });
  const controlBuffer = new SharedArrayBuffer(4);
  const stopFlag = new Int32Array(controlBuffer);
  const parties: Party[] = [];
  const senders: Party[] = [];
  const receivers: Party[] = [];

  const start = async (role: "send" | "recv"): Promise<void> => {
    const asked = performance.now();
    const interp = await pool.take();
    totals.waitingForInterpreters += performance.now() - asked;
    let party: Party;
    if (role === "send") {
      const logBuffer = new SharedArrayBuffer(4 * SENDER_LOG_WORDS);
      const stateBuffer = new SharedArrayBuffer(8);
      const index = senders.length;
      if (index >= MAX_SENDERS) throw new Error(`${where}: too many senders`);
      party = {
        role,
        index,
        interp,
        log: new Int32Array(logBuffer),
        state: new Int32Array(stateBuffer),
        killed: false,
        run: interp.call(chaosFixture, "sender", tx.clone(), logBuffer, stateBuffer, controlBuffer, index, options),
      };
      senders.push(party);
    } else {
      const logBuffer = new SharedArrayBuffer(4 * RECEIVER_LOG_WORDS);
      const index = receivers.length;
      party = { role, index, interp, log: new Int32Array(logBuffer), killed: false, run: interp.call(chaosFixture, "receiver", rx.clone(), logBuffer, index, options) };
      receivers.push(party);
    }
    party.run.then(
      () => (party.settled = { ok: true }),
      (error: unknown) => (party.settled = { ok: false, error }),
    );
    parties.push(party);
  };

  for (let i = 0; i < initialSenders; i++) await start("send");
  for (let i = 0; i < initialReceivers; i++) await start("recv");

  for (let k = 0; k < KILLS_PER_ROUND; ) {
    await sleep(Math.floor(chaosRandom() * 40)); // chooses the kill moment only
    const candidates = parties.filter((p) => !p.killed && !p.settled);
    if (candidates.length === 0) throw new Error(`${where}: every party ended before being told to stop: ${parties.map((p) => (p.settled && !p.settled.ok ? describeError(p.settled.error) : "ok")).join("; ")}`);
    // CHAOS_MULTI=1: sometimes two at once (as when an interpreter ends with its creator).
    const count = CHAOS_MULTI && candidates.length > 1 && chaosRandom() < 0.5 ? 2 : 1;
    const victims: Party[] = [];
    for (let i = 0; i < count; i++) {
      const left = candidates.filter((p) => !victims.includes(p));
      victims.push(left[Math.floor(chaosRandom() * left.length)]!);
    }
    const killedAt = performance.now();
    for (const victim of victims) victim.killed = true;
    await withTimeout(Promise.all(victims.map((v) => v.interp.terminate())), 20_000, `${where}: terminate ${victims.map((v) => `${v.role} ${v.index}`).join(" and ")}`);
    totals.terminating += performance.now() - killedAt;
    for (const victim of victims) {
      k++;
      totals.kills++;
      if (victim.role === "send") totals.killedSenders++;
      else totals.killedReceivers++;
      await start(victim.role);
    }
  }

  // Stop: senders finish the send in hand and close; main drains alongside the surviving receivers.
  const stoppedAt = performance.now();
  Atomics.store(stopFlag, 0, 1);
  Atomics.notify(stopFlag, 0);
  tx.close();
  const drained: Array<{ s: number; q: number }> = [];
  for (;;) {
    let value: unknown;
    const asked = performance.now();
    let stallReport = "";
    let nudgedAt = 0;
    const watch = setTimeout(() => {
      stallReport = dumpState(rx, parties);
      // Diagnosis: wake every party once. If the wait then ends at once, a wake-up was lost (the state was fine).
      nudgedAt = performance.now();
      for (let slot = 0; slot < 255; slot++) if (control[16 + 16 * slot] !== 0) wakeParty(slot);
    }, NUDGE_AFTER);
    try {
      value = await rx.recv({ timeout: CHAOS_WAIT });
    } catch (err) {
      if (!(err instanceof ChannelClosedError)) throw new Error(`${where}: main's drain: ${describeError(err)}`);
      value = undefined;
    }
    clearTimeout(watch);
    const took = performance.now() - asked;
    if (nudgedAt) {
      throw new Error(`${where}: main's drain waited ${took.toFixed(0)} ms in one recv: a lost wake-up? ${value === undefined ? "It then found the channel closed" : "It then got a message"}${nudgedAt ? `, ${(performance.now() - nudgedAt).toFixed(0)} ms after every party was woken once by hand` : ""}. State when nudged: ${stallReport}`);
    }
    if (value === undefined) break;
    drained.push(verifyMessage(value, seed, ring, MAX_SENDERS));
  }
  const drainedAt = performance.now();
  const survivors = parties.filter((p) => !p.killed);
  let survivorsReport = "";
  let survivorsNudgedAt = 0;
  const watchSurvivors = setTimeout(() => {
    survivorsReport = dumpState(rx, parties);
    survivorsNudgedAt = performance.now();
    for (let slot = 0; slot < 255; slot++) if (control[16 + 16 * slot] !== 0) wakeParty(slot);
  }, NUDGE_AFTER);
  const finished = await outcome(withTimeout(Promise.all(survivors.map((p) => outcome(p.run))), 60_000, `${where}: survivors to finish (a survivor hangs)`));
  clearTimeout(watchSurvivors);
  if (!finished.ok) throw new Error(`${describeError(finished.error)}; state when nudged: ${survivorsReport}`);
  const survivorsTook = performance.now() - drainedAt;
  if (survivorsNudgedAt) {
    throw new Error(
      `${where}: survivors took ${survivorsTook.toFixed(0)} ms to finish after the channel closed (the last ${(performance.now() - survivorsNudgedAt).toFixed(0)} ms after every party was woken once by hand); state when nudged: ${survivorsReport}`,
    );
  }
  for (const p of parties) {
    const settled = p.settled ?? (await withTimeout(outcome(p.run), 20_000, `${where}: ${p.role} ${p.index} to settle`));
    if (!p.killed && !settled.ok) throw new Error(`${where}: surviving ${p.role === "send" ? "sender" : "receiver"} ${p.index} failed: ${describeError(settled.error)}`);
    if (p.killed && !settled.ok && !(settled.error instanceof InterpreterClosedError)) {
      throw new Error(`${where}: killed ${p.role} ${p.index} had failed before its kill: ${describeError(settled.error)}`);
    }
  }
  if (process.env.DEATH_DEBUG) console.log(`    [debug] round ${round}: drain ${(drainedAt - stoppedAt).toFixed(0)} ms, survivors ${(performance.now() - drainedAt).toFixed(0)} ms`);
  const stats = rx.stats();
  const statsLine = JSON.stringify({ length: stats.length, bytes: stats.bytes, senders: stats.senders, receivers: stats.receivers, closed: stats.closed, waitingSenders: stats.waitingSenders, waitingReceivers: stats.waitingReceivers });
  if (stats.length !== 0 || stats.bytes !== 0 || stats.senders !== 0 || stats.receivers !== 1 || !stats.closed || stats.waitingSenders !== 0 || stats.waitingReceivers !== 0) {
    throw new Error(`${where}: channel not drained, closed and idle at the end: ${statsLine}`);
  }
  rx.close();
  for (const p of survivors) pool.give(p.interp);

  // ---- the books
  const accepted = senders.map((p) => Atomics.load(p.log, 0));
  for (const p of senders) {
    for (let q = 0; q < accepted[p.index]!; q++) if (p.log[1 + q] !== q) throw new Error(`${where}: sender ${p.index} log entry ${q} is ${p.log[1 + q]}`);
  }
  const seen = new Map<number, string>(); // s * 2^32 + q -> who received it
  const notLogged = new Set<number>();
  const check = (who: string, entries: Array<{ s: number; q: number }>): void => {
    const last = new Map<number, number>();
    for (const { s, q } of entries) {
      const key = s * 2 ** 32 + q;
      const previous = seen.get(key);
      if (previous !== undefined) throw new Error(`${where}: message (sender ${s}, seq ${q}) received twice: by ${previous} and by ${who}`);
      seen.set(key, who);
      if ((last.get(s) ?? -1) >= q) throw new Error(`${where}: ${who} received seq ${q} of sender ${s} after seq ${last.get(s)}`);
      last.set(s, q);
      const sender = senders[s];
      if (!sender) throw new Error(`${where}: ${who} received a message of sender ${s}, which never existed`);
      if (q < accepted[s]!) continue;
      if (sender.killed && q === accepted[s]) {
        notLogged.add(s);
        continue;
      }
      throw new Error(`${where}: ${who} received (sender ${s}, seq ${q}), which sender ${s} (${sender.killed ? "killed" : "survivor"}, ${accepted[s]} accepted) never had accepted`);
    }
  };
  for (const p of receivers) {
    const n = Atomics.load(p.log, 0);
    const entries: Array<{ s: number; q: number }> = [];
    for (let i = 0; i < n; i++) entries.push({ s: p.log[1 + 2 * i]!, q: p.log[2 + 2 * i]! });
    check(`${p.killed ? "killed " : ""}receiver ${p.index}`, entries);
  }
  check("main's drain", drained);
  const lost: string[] = [];
  for (const p of senders) for (let q = 0; q < accepted[p.index]!; q++) if (!seen.has(p.index * 2 ** 32 + q)) lost.push(`(${p.index}, ${q})`);
  const killedReceivers = receivers.filter((p) => p.killed).length;
  if (lost.length > killedReceivers) {
    throw new Error(`${where}: ${lost.length} accepted messages never received (${lost.slice(0, 10).join(" ")}), but only ${killedReceivers} receivers were killed`);
  }
  let rolledBack = 0;
  for (const p of senders) if (p.killed && Atomics.load(p.state!, 1) === 1 && !notLogged.has(p.index)) rolledBack++;
  let streamed = 0;
  for (const key of seen.keys()) if (planOf(seed, Math.floor(key / 2 ** 32), key % 2 ** 32, ring).size > ring) streamed++;

  totals.rounds++;
  totals.ending += performance.now() - stoppedAt;
  totals.accepted += accepted.reduce((a, b) => a + b, 0);
  totals.received += seen.size;
  totals.drainedByMain += drained.length;
  totals.streamed += streamed;
  totals.lostToKilledReceiver += lost.length;
  totals.acceptedNotLogged += notLogged.size;
  totals.rolledBack += rolledBack;
  if (CHAOS_LONG && round % 10 === 0) {
    console.log(`    [chaos] round ${round}: ${totals.kills} kills so far, ${totals.received} messages received, ${pool.created} interpreters created`);
  }
}

test(`chaos: ${CHAOS_KILLS}+ random kills of senders and receivers on one channel; exactly-once up to what the kills allow`, async () => {
  const chaosRandom = rng((SEED ^ 0x6a09e667) >>> 0);
  const pool = new Pool(2);
  const totals: ChaosTotals = {
    rounds: 0,
    kills: 0,
    killedSenders: 0,
    killedReceivers: 0,
    accepted: 0,
    received: 0,
    streamed: 0,
    drainedByMain: 0,
    lostToKilledReceiver: 0,
    acceptedNotLogged: 0,
    rolledBack: 0,
    waitingForInterpreters: 0,
    terminating: 0,
    ending: 0,
  };
  const started = performance.now();
  try {
    for (let round = 0; totals.kills < CHAOS_KILLS; round++) await chaosRound(round, chaosRandom, pool, totals);
  } finally {
    await pool.closeAll();
  }
  const seconds = (performance.now() - started) / 1000;
  console.log(
    `    chaos seed=${SEED}: ${totals.kills} kills (${totals.killedSenders} senders, ${totals.killedReceivers} receivers) in ${totals.rounds} rounds, ` +
      `${pool.created} interpreters, ${seconds.toFixed(1)} s; messages accepted ${totals.accepted}, received ${totals.received} ` +
      `(${totals.streamed} streamed, ${totals.drainedByMain} drained by main); lost to a killed receiver ${totals.lostToKilledReceiver}, ` +
      `accepted but killed before logging ${totals.acceptedNotLogged}, rolled back (killed mid-send, never delivered) ${totals.rolledBack}; ` +
      `${(totals.waitingForInterpreters / 1000).toFixed(1)} s waiting for new interpreters, ${(totals.terminating / 1000).toFixed(1)} s in terminate(), ${(totals.ending / 1000).toFixed(1)} s stopping and draining`,
  );
  assert.ok(totals.kills >= CHAOS_KILLS);
  assert.ok(totals.received > 0, `seed=${SEED}: nothing was received`);
}, { timeout: CHAOS_TIMEOUT });

// ---------------------------------------------------------------- 4. deaths around other parties' critical sections
// (after the chaos test: a failure of the last one leaves the supervisor stuck for the rest of the file)

test("a receiver killed after taking a message that carries a channel end, before claiming the end: that end is released", async () => {
  const holder = await create({ name: "inner-lock-holder" });
  const taker = await create({ name: "end-taker" });
  const reached = newFlag();
  try {
    const [innerRx, innerTx] = createChannel<string>({ capacity: 4, name: "carried" });
    const [outerRx, outerTx] = createChannel<unknown>({ capacity: 4, name: "carrier" });
    const inner = memoryOf(innerRx);
    const outer = memoryOf(outerRx);
    const holderTx = innerTx.clone();
    await outerTx.send({ end: innerTx }, { timeout: 1000 }); // the end travels inside the message
    assert.equal([inner.holders("send", 256), innerRx.stats().senders], [1, 2], "one send end in transit, one with main for the holder");
    // The holder sits in the inner channel's critical section, so that claiming the carried end must wait.
    const holderRun = outcome(holder.exec(`${releasableHookSource("send:committed")} t.sendSync("from the holder"); t.close();`, { bind: { t: holderTx, reached } }));
    await waitFlag(reached, 0, "the holder to reach send:committed on the inner channel");
    let takerEnded: string | undefined;
    const takerRun = outcome(taker.exec(`o.recvSync({ timeout: 20000 }); throw new Error("the taker claimed the end");`, { bind: { o: outerRx.clone() } }));
    void takerRun.then((result) => (takerEnded = result.ok ? "it returned" : describeError(result.error)));
    await pollUntil(
      () => {
        if (takerEnded !== undefined) throw new Error(`seed=${SEED}: the taker ended before it could be killed: ${takerEnded}`);
        return outer.length() === 0 && ((Atomics.load(inner.header, H.SEND_LOCK) & CONTENDED) !== 0 || inner.holders("send", 256) === 0);
      },
      "the taker to take the message and wait to claim the end it carries",
    );
    // Kill the taker with the message in hand, then let the holder go on once the taker's thread is gone.
    const takerGone = taker.terminate();
    await pollUntil(() => threadGone(taker.id), "the taker's thread to end", { idle: true });
    Atomics.store(reached, 1, 1);
    await withTimeout(takerGone, 20_000, "terminate the taker");
    assert.ok(!(await takerRun).ok);
    const held = await withTimeout(holderRun, 20_000, "the holder's send");
    assert.ok(held.ok, `holder: ${held.ok ? "" : describeError(held.error)}`);
    // The carried end died with the taker (the message it held is lost, as a killed receiver's may be).
    assert.is(await innerRx.recv({ timeout: 5000 }), "from the holder");
    const after = innerRx.stats();
    assert.equal(
      { senders: after.senders, inTransit: inner.holders("send", 256) },
      { senders: 0, inTransit: 0 },
      `the end carried by the lost message is still counted (seed=${SEED})`,
    );
    await expectClosed(innerRx.recv({ timeout: 5000 }), "recv on the carried end's channel once its every send end is gone");
    innerRx.close();
    outerTx.close();
    outerRx.close();
  } finally {
    Atomics.store(reached, 1, 1);
    await holder.terminate();
    await taker.terminate();
  }
}, { timeout: 60_000 });

test("two deaths: a party dies while another holds a channel lock and is then killed there: the supervisor recovers both", async () => {
  const stuck = await create({ name: "stuck-in-section" });
  const first = await create({ name: "first-to-die" });
  const [rx, tx] = createChannel<string>({ capacity: 8, name: "two-deaths" });
  const memory = memoryOf(rx);
  const reached = newFlag();
  const stuckRun = outcome(stuck.exec(`${hookSource("send:committed")} t.sendSync("POISON");`, { bind: { t: tx.clone(), reached } }));
  await first.exec(`globalThis.kept = t;`, { bind: { t: tx.clone() } });
  await waitFlag(reached, 0, "the stuck sender to reach send:committed");
  // The first death is handled while the lock is held by a live party; then that party dies too.
  const firstGone = outcome(first.terminate());
  await pollUntil(() => threadGone(first.id), "the first party's thread to end", { idle: true });
  const killedAt = performance.now();
  const stuckGone = outcome(stuck.terminate());
  // Never take this channel's lock before it is seen free: main would wait on it forever.
  await pollUntil(() => Atomics.load(memory.header, H.SEND_LOCK) === 0, `the lock of the dead party to be recovered (seed=${SEED}; owner is slot ${lockOwner(memory.header, H.SEND_LOCK)})`, {
    idle: true,
    ms: 15_000,
  });
  await withTimeout(Promise.all([firstGone, stuckGone]), 20_000, "both terminate() calls");
  const recovered = performance.now() - killedAt;
  assert.ok(!(await stuckRun).ok);
  const stats = rx.stats();
  assert.equal([stats.senders, stats.length, stats.bytes, stats.sent], [1, 0, 0, 0]);
  await tx.send("after", { timeout: 5000 });
  assert.is(await rx.recv({ timeout: 5000 }), "after");
  // The supervisor still cleans up after later deaths.
  const later = await create({ name: "later" });
  const [rx2, tx2] = createChannel<number>({ capacity: 1, name: "later" });
  await later.exec(`globalThis.kept = t;`, { bind: { t: tx2 } });
  await withTimeout(later.terminate(), 5000, "terminate a later interpreter");
  await expectClosed(rx2.recv({ timeout: 5000 }), "recv whose only sender died after the two deaths");
  console.log(`    both deaths cleaned up ${recovered.toFixed(0)} ms after the second kill began`);
  tx.close();
  rx.close();
  rx2.close();
}, { timeout: 60_000 });

test.run();
