/**
 * Deadlock detection: cycles that must be reported (each party fails with
 * DeadlockError naming the cycle, within the detection time), and
 * situations that look stuck for a while but must never be reported.
 * Times to detection are printed.
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { suite, assert, withTimeout } from "./_harness.js";
import { create, createChannel, type DeadlockParty, type Interpreter, type RecvChannel } from "../src/index.js";

const test = suite("deadlock");
const repoRoot = fileURLToPath(new URL("..", import.meta.url));

interface Outcome {
  name: string;
  error: string;
  message: string;
  cycle: DeadlockParty[];
  ms: number;
}

/**
 * Code run in each party: `body` may block forever; any error is reported
 * on `report` (never blocking: capacity Infinity, main receives async).
 */
const wrapBody = (body: string): string => `
  const started = performance.now();
  try {
    ${body}
    report.sendSync({ name: current().name, error: "none", message: "", cycle: [], ms: performance.now() - started });
  } catch (e) {
    report.sendSync({ name: current().name, error: e.name, message: e.message, cycle: e.cycle ?? [], ms: performance.now() - started });
  }
`;

async function runParties(
  parties: Array<{ name: string; body: string; bind: Record<string, unknown> }>,
  expect: number,
): Promise<Outcome[]> {
  const [reportRx, reportTx] = createChannel<Outcome>({ capacity: Infinity, name: "report" });
  const interpreters: Interpreter[] = [];
  try {
    const runs: Promise<void>[] = [];
    for (const party of parties) {
      const interp = await create({ name: party.name });
      interpreters.push(interp);
      runs.push(
        interp.exec(`import { current } from "interpreters";\n${wrapBody(party.body)}`, {
          bind: { ...party.bind, report: reportTx.clone() },
        }),
      );
    }
    reportTx.close();
    const outcomes: Outcome[] = [];
    for (let i = 0; i < expect; i++) outcomes.push(await reportRx.recv({ timeout: 20_000 }));
    await Promise.all(runs);
    return outcomes;
  } finally {
    await Promise.all(interpreters.map((i) => i.terminate()));
  }
}

function expectDeadlock(outcomes: Outcome[], names: string[]): void {
  for (const outcome of outcomes) {
    assert.is(outcome.error, "DeadlockError", `${outcome.name}: ${outcome.error} ${outcome.message}`);
    for (const name of names) assert.match(outcome.message, `"${name}"`);
    assert.equal(outcome.cycle.map((p) => p.interpreter.name).sort(), [...names].sort());
  }
  const slowest = Math.max(...outcomes.map((o) => o.ms));
  console.log(`    detected in ${slowest.toFixed(0)} ms: ${outcomes[0]!.message}`);
}

test("two parties receiving from each other", async () => {
  const [c1r, c1t] = createChannel<number>({ capacity: 0, name: "c1" });
  const [c2r, c2t] = createChannel<number>({ capacity: 0, name: "c2" });
  const outcomes = await runParties(
    [
      { name: "A", body: "inp.recvSync(); out.sendSync(1);", bind: { inp: c1r, out: c2t } },
      { name: "B", body: "inp.recvSync(); out.sendSync(1);", bind: { inp: c2r, out: c1t } },
    ],
    2,
  );
  expectDeadlock(outcomes, ["A", "B"]);
  const cycle = outcomes[0]!.cycle;
  assert.equal(cycle.map((p) => p.op), ["recv", "recv"]);
  assert.match(outcomes[0]!.message, /interpreter \d+ "A" waits to recv on channel \d+ "c1", whose only sender is interpreter \d+ "B", which waits to recv on channel \d+ "c2", whose only sender is interpreter \d+ "A"/);
});

test("three parties sending into full bounded channels", async () => {
  const channels = [0, 1, 2].map((i) => createChannel<number>({ capacity: 8, name: `ring${i}` }));
  const body = "for (let i = 0; ; i++) out.sendSync(i);"; // fills its outgoing channel, then blocks
  const outcomes = await runParties(
    ["P0", "P1", "P2"].map((name, i) => ({ name, body, bind: { out: channels[i]![1], inp: channels[(i + 2) % 3]![0] } })),
    3,
  );
  expectDeadlock(outcomes, ["P0", "P1", "P2"]);
  assert.match(outcomes[0]!.message, /waits to send on channel \d+ "ring\d" \(full, capacity 8\)/);
});

test("self-deadlock inside an interpreter", async () => {
  const outcomes = await runParties(
    [{ name: "lonely", body: `const [rx, tx] = createChannel({ capacity: 0, name: "mine" }); rx.recvSync();`, bind: {} }].map((p) => ({
      ...p,
      body: `const { createChannel } = await import("interpreters"); ${p.body}`,
    })),
    1,
  );
  expectDeadlock(outcomes, ["lonely"]);
  assert.match(outcomes[0]!.message, /whose only sender is itself/);
});

test("a rendezvous cycle: both send first", async () => {
  const [c1r, c1t] = createChannel<number>({ capacity: 0, name: "ab" });
  const [c2r, c2t] = createChannel<number>({ capacity: 0, name: "ba" });
  const outcomes = await runParties(
    [
      { name: "A", body: "out.sendSync(1); inp.recvSync();", bind: { inp: c2r, out: c1t } },
      { name: "B", body: "out.sendSync(2); inp.recvSync();", bind: { inp: c1r, out: c2t } },
    ],
    2,
  );
  expectDeadlock(outcomes, ["A", "B"]);
  assert.match(outcomes[0]!.message, /capacity 0: waiting for a receiver to take it/);
});

test("a cycle through a full capacity-1 channel", async () => {
  const [oneRx, oneTx] = createChannel<number>({ capacity: 1, name: "one" });
  const [zeroRx, zeroTx] = createChannel<number>({ capacity: 0, name: "zero" });
  const outcomes = await runParties(
    [
      // A fills "one", then waits for room; only B could receive from it.
      { name: "A", body: "out.sendSync(1); out.sendSync(2);", bind: { out: oneTx, holdsZero: zeroTx } },
      // B waits on "zero"; only A could send on it.
      { name: "B", body: "inp.recvSync();", bind: { inp: zeroRx, holdsOne: oneRx } },
    ],
    2,
  );
  expectDeadlock(outcomes, ["A", "B"]);
  assert.match(outcomes.find((o) => o.name === "A")!.message, /\(full, capacity 1\)/);
});

test("a selectSync whose every case can only be woken by a stuck party", async () => {
  const [aRx, aTx] = createChannel<number>({ capacity: 0, name: "a" });
  const [bRx, bTx] = createChannel<number>({ capacity: 0, name: "b" });
  const [cRx, cTx] = createChannel<number>({ capacity: 0, name: "c" });
  const outcomes = await runParties(
    [
      { name: "selector", body: `const { selectSync } = await import("interpreters"); selectSync([a, b]); c.sendSync(1);`, bind: { a: aRx, b: bRx, c: cTx } },
      { name: "feeder", body: "c.recvSync(); a.sendSync(1); b.sendSync(2);", bind: { a: aTx, b: bTx, c: cRx } },
    ],
    2,
  );
  expectDeadlock(outcomes, ["selector", "feeder"]);
  assert.match(outcomes[0]!.message, /waits in select \(to recv on channel \d+ "a", whose only sender is interpreter \d+ "feeder"\) or \(to recv on channel \d+ "b"/);
  assert.ok(outcomes[0]!.cycle.some((p) => p.op === "select"));
});

/** Runs `script` (ESM, importing ./src/index.ts) in a child Node process. */
function runChild(script: string, what: string, opts: { killWhen?: RegExp } = {}): Promise<{ code: number | null; output: string }> {
  return withTimeout(
    new Promise((resolve) => {
      const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
      let output = "";
      const onData = (d: Buffer): void => {
        output += d;
        if (opts.killWhen?.test(output)) child.kill("SIGKILL");
      };
      child.stdout.on("data", onData);
      child.stderr.on("data", onData);
      child.on("exit", (code) => resolve({ code, output }));
    }),
    60_000,
    what,
  );
}

test("the main thread in a cycle: main waits on an interpreter that waits on main", async () => {
  const { code, output } = await runChild(
    `
    import { create, createChannel, DeadlockError } from "./src/index.ts";
    const worker = await create({ name: "W" });
    const [toMain, fromWorker] = createChannel({ capacity: 0, name: "to-main" });
    const [toWorker, fromMain] = createChannel({ capacity: 0, name: "to-worker" });
    const running = worker.exec("inp.recvSync(); out.sendSync(1);", { bind: { inp: toWorker, out: fromWorker } });
    running.catch((e) => console.log("worker:", e.remote?.name));
    const started = Date.now();
    try { toMain.recvSync(); console.log("no error"); }
    catch (e) { console.log("main:", e.name, Date.now() - started, "ms:", e.message); }
    fromMain.close();
    await running.catch(() => {});
    await worker.terminate();
    `,
    "main-thread deadlock child",
  );
  assert.is(code, 0, output);
  assert.match(output, /main: DeadlockError/);
  assert.match(output, /worker: DeadlockError/);
  assert.match(output, /the main interpreter waits to recv on channel \d+ "to-main", whose only sender is interpreter \d+ "W"/);
  console.log(`    ${/main: DeadlockError (\d+) ms/.exec(output)?.[1]} ms for the main thread`);
});

test("self-deadlock of the main thread, with no interpreter at all", async () => {
  const { code, output } = await runChild(
    `
    import { createChannel } from "./src/index.ts";
    const [rx, tx] = createChannel({ capacity: 0, name: "alone" });
    try { rx.recvSync(); } catch (e) { console.log(e.name, e.message); }
    `,
    "main self-deadlock child",
  );
  assert.is(code, 0, output);
  assert.match(output, /DeadlockError deadlock: the main interpreter waits to recv on channel \d+ "alone", whose only sender is itself/);
});

test("report-only mode warns and keeps waiting", async () => {
  const { output } = await runChild(
    `
    import { createChannel, configureDeadlockDetection } from "./src/index.ts";
    configureDeadlockDetection({ mode: "report", after: 200 });
    const [rx, tx] = createChannel({ capacity: 0, name: "reported" });
    rx.recvSync();
    console.log("returned?!", tx.id);
    `,
    "report-only child",
    { killWhen: /DeadlockWarning: deadlock:.*"reported"/ },
  );
  assert.match(output, /DeadlockWarning: deadlock: the main interpreter waits to recv on channel \d+ "reported"/);
  assert.not.match(output, /returned/);
});

// ---- must not report ----

function expectNoDeadlock(outcomes: Outcome[]): void {
  for (const outcome of outcomes) assert.is(outcome.error, "none", `${outcome.name}: ${outcome.error}: ${outcome.message}`);
}

test("not reported: a wait with a timeout (it times out instead)", async () => {
  const outcomes = await runParties(
    [{ name: "patient", body: `const { createChannel } = await import("interpreters"); const [rx, tx] = createChannel({ capacity: 0 }); try { rx.recvSync({ timeout: 2500 }); } catch (e) { if (e.name !== "TimeoutError") throw e; }`, bind: {} }],
    1,
  );
  expectNoDeadlock(outcomes);
});

test("not reported: the peer holding the other end is busy computing", async () => {
  const [r, t] = createChannel<number>({ capacity: 0, name: "slow" });
  const outcomes = await runParties(
    [
      { name: "waiter", body: "inp.recvSync();", bind: { inp: r } },
      { name: "busy", body: "const until = Date.now() + 2500; while (Date.now() < until) {} out.sendSync(1);", bind: { out: t } },
    ],
    2,
  );
  expectNoDeadlock(outcomes);
});

test("not reported: the other end is held by the main thread, which waits asynchronously", async () => {
  const [r, t] = createChannel<number>({ capacity: 0, name: "async-peer" });
  const [reportRx, reportTx] = createChannel<Outcome>({ capacity: Infinity });
  const waiter = await create({ name: "waiter" });
  try {
    const running = waiter.exec(`import { current } from "interpreters";\n${wrapBody("inp.recvSync();")}`, { bind: { inp: r, report: reportTx } });
    await new Promise((resolve) => setTimeout(resolve, 2500)); // main is idle on a timer, but could act
    await t.send(1, { timeout: 10_000 });
    expectNoDeadlock([await reportRx.recv({ timeout: 10_000 })]);
    await running;
  } finally {
    await waiter.terminate();
  }
});

test("not reported: a selectSync with one case a busy party can still complete", async () => {
  const [aRx, aTx] = createChannel<number>({ capacity: 0, name: "a" });
  const [bRx, bTx] = createChannel<number>({ capacity: 0, name: "b" });
  const outcomes = await runParties(
    [
      { name: "selector", body: `const { selectSync } = await import("interpreters"); selectSync([a, b]);`, bind: { a: aRx, b: bRx, keepA: aTx } },
      { name: "busy", body: "const until = Date.now() + 2500; while (Date.now() < until) {} b.sendSync(1);", bind: { b: bTx } },
    ],
    2,
  );
  expectNoDeadlock(outcomes);
});

test("not reported: the only sender is in transit inside a buffered message", async () => {
  const [r, t] = createChannel<number>({ capacity: 0, name: "payload" });
  const [carrierRx, carrierTx] = createChannel<unknown>({ capacity: 1, name: "carrier" });
  const [reportRx, reportTx] = createChannel<Outcome>({ capacity: Infinity });
  const waiter = await create({ name: "waiter" });
  const courier = await create({ name: "courier" });
  try {
    await carrierTx.send(t); // the send end now sits inside a message
    const running = waiter.exec(`import { current } from "interpreters";\n${wrapBody("inp.recvSync();")}`, { bind: { inp: r, report: reportTx } });
    // the courier picks the end up only after a while, then sends
    const courierRun = courier.exec(`const until = Date.now() + 2500; while (Date.now() < until) {} const out = carrier.recvSync({ timeout: 10000 }); out.sendSync(1);`, {
      bind: { carrier: carrierRx },
    });
    expectNoDeadlock([await reportRx.recv({ timeout: 20_000 })]);
    await running;
    await courierRun;
  } finally {
    await waiter.terminate();
    await courier.terminate();
  }
});

test("not reported: a long transfer of a large message through a small ring", async () => {
  const [r, t] = createChannel<Uint8Array>({ capacity: 0, name: "big", bufferBytes: 16384, maxBufferBytes: 16384 });
  const outcomes = await runParties(
    [
      { name: "sender", body: "for (let i = 0; i < 3; i++) out.sendSync(new Uint8Array(32 * 1024 * 1024));", bind: { out: t } },
      { name: "receiver", body: "for (let i = 0; i < 3; i++) if (inp.recvSync().length !== 32 * 1024 * 1024) throw new Error('short');", bind: { inp: r } },
    ],
    2,
  );
  expectNoDeadlock(outcomes);
}, { timeout: 120_000 });

test.run();

export type { RecvChannel };
