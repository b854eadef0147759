/**
 * inspect(): holders, waiters, fill levels, deadlock cycles, async waits
 * and possible deadlocks appear as they are; a corrupt channel shows as
 * such without breaking the snapshot; no lock is taken (a channel whose
 * locks look held forever is inspected at once); a busy system is read
 * many times without an exception and without a false deadlock. Plus the
 * wait-for rules on hand-made states (waitgraph.ts).
 */
import { suite, assert } from "./_harness.js";
import {
  configureDeadlockDetection,
  create,
  createChannel,
  inspect,
  type Interpreter,
  Lock,
  type Snapshot,
} from "../src/index.js";
import { endOf } from "../src/transfer.js";
import { H } from "../src/ring.js";
import { analyseWaits, type ChannelModel, type PartyModel } from "../src/inspect/waitgraph.js";
import { snapshotFromJson, snapshotToJson } from "../src/inspect/types.js";

const test = suite("inspect");
// Deadlocks stay in place while we look at them (report mode: warned, not thrown), then are ended by terminate().
configureDeadlockDetection({ mode: "report", after: 60_000 });

function memoryOf(handle: object) {
  const end = endOf(handle);
  if (!end) throw new Error("not a channel handle");
  return end.memory;
}

/** Polls inspect() until `ready` holds (a deadline, not a sleep: the state forms in other threads). */
async function snapshotWhen(ready: (s: Snapshot) => boolean, what: string, timeoutMs = 10_000): Promise<Snapshot> {
  const deadline = performance.now() + timeoutMs;
  let last = inspect();
  while (!ready(last)) {
    if (performance.now() > deadline) throw new Error(`inspect() never showed ${what}; last snapshot: ${snapshotToJson(last)}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
    last = inspect();
  }
  return last;
}

const interpreters: Interpreter[] = [];
test.after.each(async () => {
  await Promise.all(interpreters.splice(0).map((i) => i.terminate()));
});

test("fill levels, holders of each end and waiters, named by interpreter id", async () => {
  const [rx, tx] = createChannel<number>({ capacity: 8, name: "fill-me" });
  for (let i = 0; i < 3; i++) assert.ok(tx.trySend(i));
  const [idleRx, idleTx] = createChannel<number>({ capacity: 0, name: "idle" });
  const worker = await create({ name: "waiter" });
  interpreters.push(worker);
  const running = worker.exec("inbox.recvSync()", { bind: { inbox: idleRx } });
  const s = await snapshotWhen((s) => s.interpreters.some((i) => i.id === worker.id && i.state === "waiting"), "the worker waiting");
  const fill = s.channels.find((c) => c.name === "fill-me")!;
  assert.equal([fill.capacity, fill.length, fill.sent, fill.received, fill.closed], [8, 3, 3, 0, false]);
  assert.equal([fill.senders, fill.receivers], [[0], [0]]);
  assert.ok(fill.bytes > 0);
  const idle = s.channels.find((c) => c.name === "idle")!;
  assert.equal([idle.senders, idle.receivers, idle.waitingReceivers, idle.waitingSenders], [[0], [worker.id], [worker.id], []]);
  const me = s.interpreters.find((i) => i.id === worker.id)!;
  assert.equal(me.name, "waiter");
  assert.equal(me.waiting?.map((w) => [w.op, w.channel, w.async]), [["recv", idle.id, false]]);
  assert.ok(me.waiting![0]!.sinceMs >= 0);
  assert.ok(s.waitFor.some((e) => e.from === worker.id && e.to === 0 && e.channel === idle.id));
  assert.equal(s.deadlocks, []);
  idleTx.sendSync(1, { timeout: 10_000 });
  await running;
  rx.close();
  tx.close();
});

test("overflow policy and dropped messages as the channel has them", async () => {
  const [rx, tx] = createChannel<number>({ capacity: 2, overflow: "drop-newest", name: "lossy" });
  for (let i = 0; i < 5; i++) tx.trySend(i);
  const c = inspect().channels.find((c) => c.name === "lossy")!;
  assert.equal([c.overflow, c.length, c.dropped, c.sent], ["drop-newest", 2, 3, 5]);
  rx.close();
  tx.close();
});

test("a deadlock cycle appears with its parties, channels and how long it has stood", async () => {
  const [aRx, aTx] = createChannel<number>({ capacity: 0, name: "to-A" });
  const [bRx, bTx] = createChannel<number>({ capacity: 1, name: "to-B" });
  const a = await create({ name: "A" });
  const b = await create({ name: "B" });
  interpreters.push(a, b);
  // Each waits to receive from the other: nobody else holds a send end.
  void a.exec("inbox.recvSync(); peer.sendSync(1)", { bind: { inbox: aRx, peer: bTx } }).catch(() => {});
  void b.exec("inbox.recvSync(); peer.sendSync(1)", { bind: { inbox: bRx, peer: aTx } }).catch(() => {});
  const s = await snapshotWhen((s) => s.deadlocks.length > 0, "the deadlock");
  assert.equal(s.deadlocks.length, 1);
  const cycle = s.deadlocks[0]!.cycle;
  assert.equal(cycle.map((p) => [p.interpreter.id, p.interpreter.name, p.op, p.channel?.name]).sort(), [
    [a.id, "A", "recv", "to-A"],
    [b.id, "B", "recv", "to-B"],
  ].sort());
  assert.ok(s.deadlocks[0]!.sinceMs >= 100, `sinceMs ${s.deadlocks[0]!.sinceMs}`);
  assert.ok(s.waitFor.some((e) => e.from === a.id && e.to === b.id));
  assert.ok(s.waitFor.some((e) => e.from === b.id && e.to === a.id));
  assert.equal(s.possibleDeadlocks, []);
  const later = await snapshotWhen((l) => l.deadlocks[0] !== undefined && l.deadlocks[0].sinceMs > s.deadlocks[0]!.sinceMs + 100, "the deadlock standing longer");
  assert.equal(later.deadlocks.length, 1);
});

test("a lock cycle: each interpreter holds one lock and waits for the other's", async () => {
  const first = new Lock();
  const second = new Lock();
  const a = await create({ name: "holds-first" });
  const b = await create({ name: "holds-second" });
  interpreters.push(a, b);
  const [readyRx, readyTx] = createChannel<number>({ capacity: Infinity });
  const body = (mine: string, theirs: string) => `${mine}.acquireSync(); ready.sendSync(1); while (ready2.tryRecv().ok === false) {} ${theirs}.acquireSync();`;
  const [goRx, goTx] = createChannel<number>({ capacity: Infinity });
  void a.exec(body("first", "second"), { bind: { first, second, ready: readyTx.clone(), ready2: goRx.clone() } }).catch(() => {});
  void b.exec(body("second", "first"), { bind: { first, second, ready: readyTx, ready2: goRx } }).catch(() => {});
  await readyRx.recv({ timeout: 10_000 });
  await readyRx.recv({ timeout: 10_000 });
  goTx.trySend(1);
  goTx.trySend(1);
  const s = await snapshotWhen((s) => s.deadlocks.length > 0, "the lock deadlock");
  assert.equal(s.deadlocks[0]!.cycle.map((p) => p.op), ["acquire", "acquire"]);
  assert.ok(s.waitFor.some((e) => e.from === a.id && e.to === b.id && e.lock !== undefined));
});

test("an async wait is in the wait-for graph; a cycle only it keeps open is a possible deadlock, never thrown", async () => {
  const [mainRx, mainTx] = createChannel<number>({ capacity: 1, name: "to-main" });
  const [workerRx, workerTx] = createChannel<number>({ capacity: 1, name: "to-worker" });
  const worker = await create({ name: "replier" });
  interpreters.push(worker);
  const running = worker.exec("inbox.recvSync(); out.sendSync(2)", { bind: { inbox: workerRx, out: mainTx } });
  // main awaits a reply it never asked for: only main could send the request.
  const reply = mainRx.recv({ timeout: 30_000 });
  const s = await snapshotWhen((s) => s.possibleDeadlocks.length > 0, "the possible deadlock");
  const main = s.interpreters.find((i) => i.id === 0)!;
  assert.equal(main.state, "waiting");
  assert.ok(main.waiting!.some((w) => w.async && w.op === "recv" && w.channel === s.channels.find((c) => c.name === "to-main")!.id));
  assert.ok(s.waitFor.some((e) => e.from === 0 && e.to === worker.id && e.async === true));
  assert.equal(s.deadlocks, []);
  assert.equal(s.possibleDeadlocks[0]!.cycle.map((p) => p.interpreter.id).sort(), [0, worker.id]);
  const first = s.possibleDeadlocks[0]!.sinceMs;
  const later = await snapshotWhen((l) => (l.possibleDeadlocks[0]?.sinceMs ?? 0) >= first + 200, "the possible deadlock standing longer");
  assert.equal(later.possibleDeadlocks.length, 1);
  // The event loop acts: main sends the request, and everything completes.
  workerTx.trySend(1);
  assert.equal(await reply, 2);
  await running;
  const after = await snapshotWhen((l) => l.possibleDeadlocks.length === 0, "the possible deadlock gone");
  assert.equal(after.deadlocks, []);
});

test("a corrupt channel shows as such; the rest of the snapshot is whole", async () => {
  const [goodRx, goodTx] = createChannel<number>({ capacity: 4, name: "good" });
  goodTx.trySend(1);
  const [badRx] = createChannel<number>({ capacity: 4, name: "bad" });
  const [countRx] = createChannel<number>({ capacity: 4, name: "bad-count" });
  // The supervisor takes the registrations first (a snapshot request queues behind them): this test is
  // about a channel that goes corrupt while known, not one the supervisor refuses to register.
  inspect();
  const bad = memoryOf(badRx).header;
  const count = memoryOf(countRx).header;
  const savedMagic = Atomics.load(bad, H.MAGIC);
  const savedTail = Atomics.load(count, H.SEQ_TAIL);
  Atomics.store(bad, H.MAGIC, 0x12345678);
  Atomics.store(count, H.SEQ_TAIL, savedTail - 100_000);
  try {
    const s = inspect();
    const byName = new Map(s.channels.map((c) => [c.name, c]));
    assert.match(byName.get("bad")!.corrupt ?? "", /magic/);
    assert.match(byName.get("bad-count")!.corrupt ?? "", /count/);
    assert.equal(byName.get("good")!.corrupt, undefined);
    assert.equal(byName.get("good")!.length, 1);
    assert.ok(s.interpreters.some((i) => i.id === 0));
  } finally {
    Atomics.store(bad, H.MAGIC, savedMagic);
    Atomics.store(count, H.SEQ_TAIL, savedTail);
  }
  goodRx.close();
});

test("no lock is taken: a channel whose both locks look held forever is inspected at once", async () => {
  const [rx, tx] = createChannel<number>({ capacity: 4, name: "locked" });
  tx.trySend(7);
  const header = memoryOf(rx).header;
  // Owner "party 200" (never live) holds both locks: stats() would wait for them; inspect() must not.
  Atomics.store(header, H.SEND_LOCK, 201);
  Atomics.store(header, H.RECV_LOCK, 201);
  try {
    const started = performance.now();
    const s = inspect();
    const took = performance.now() - started;
    const c = s.channels.find((c) => c.name === "locked")!;
    assert.equal(c.length, 1);
    assert.ok(took < 2000, `inspect() took ${took} ms`);
  } finally {
    Atomics.store(header, H.SEND_LOCK, 0);
    Atomics.store(header, H.RECV_LOCK, 0);
  }
  assert.equal(rx.tryRecv(), { ok: true, value: 7 });
});

test("inspect() from inside an interpreter sees main's channels and itself", async () => {
  const [rx, tx] = createChannel<string>({ capacity: 2, name: "seen-from-inside" });
  tx.trySend("x");
  const worker = await create({ name: "inspector-inside" });
  interpreters.push(worker);
  const [outRx, outTx] = createChannel<string>({ capacity: 1 });
  await worker.exec(
    `import { inspect } from "interpreters";
     const s = inspect();
     out.sendSync(JSON.stringify({ names: s.channels.map((c) => c.name), me: s.interpreters.find((i) => i.name === "inspector-inside")?.state }));`,
    { bind: { out: outTx } },
  );
  const seen = JSON.parse(await outRx.recv({ timeout: 10_000 })) as { names: string[]; me: string };
  assert.ok(seen.names.includes("seen-from-inside"), JSON.stringify(seen));
  assert.equal(seen.me, "running");
  rx.close();
});

test("an interpreter that exited is shown as exited for a while", async () => {
  const worker = await create({ name: "short-lived" });
  inspect();
  await worker.close();
  const s = await snapshotWhen((s) => s.interpreters.some((i) => i.id === worker.id && i.state === "exited"), "the exited interpreter");
  assert.equal(s.interpreters.find((i) => i.id === worker.id)!.name, "short-lived");
});

test("a busy system read 300 times: no exception, no corrupt flag, no false deadlock, counts in range", async () => {
  const [pingRx, pingTx] = createChannel<number>({ capacity: 0, name: "ping" });
  const [pongRx, pongTx] = createChannel<number>({ capacity: 1, name: "pong" });
  const [streamRx, streamTx] = createChannel<Uint8Array>({ capacity: 16, name: "stream" });
  const a = await create({ name: "pinger" });
  const b = await create({ name: "ponger" });
  interpreters.push(a, b);
  // Both run until told to stop (shared flag), so the test lasts as long as the looks take.
  const shared = new Int32Array(new SharedArrayBuffer(8));
  const runA = a.exec(
    `const flags = new Int32Array(shared); let i = 0;
     for (; Atomics.load(flags, 0) === 0; i++) { ping.sendSync(i); pong.recvSync(); stream.sendSync(new Uint8Array(i % 300)); }
     ping.sendSync(-1); flags[1] = i; stream.close();`,
    { bind: { ping: pingTx, pong: pongRx, stream: streamTx, shared: shared.buffer } },
  );
  const runB = b.exec(`for (;;) { if (ping.recvSync() === -1) break; pong.sendSync(0); }`, { bind: { ping: pingRx, pong: pongTx } });
  let drained = 0;
  const drain = (async () => {
    for await (const _ of streamRx) drained++;
  })();
  let looks = 0;
  for (; looks < 300; looks++) {
    const s = inspect();
    for (const c of s.channels) {
      assert.equal(c.corrupt, undefined, `${c.name}: ${c.corrupt}`);
      const bound = c.capacity === Infinity ? Infinity : c.capacity + 2;
      assert.ok(c.length >= 0 && c.length <= bound, `${c.name}: length ${c.length}`);
    }
    assert.equal(s.deadlocks, [], `false deadlock: ${snapshotToJson(s)}`);
    if (looks % 10 === 0) await new Promise((resolve) => setImmediate(resolve));
  }
  Atomics.store(shared, 0, 1);
  await Promise.all([runA, runB, drain]);
  assert.equal(drained, shared[1]);
  assert.ok(drained > 0);
});

test("JSON: an infinite capacity travels as \"Infinity\"; a name that reads Infinity stays a name", () => {
  const [rx] = createChannel({ name: "Infinity" });
  const s = inspect();
  const text = snapshotToJson(s);
  const back = snapshotFromJson(text);
  const c = back.channels.find((c) => c.id === rx.id)!;
  assert.equal(c.capacity, Infinity);
  assert.equal(c.name, "Infinity");
  assert.ok(text.includes('"capacity":"Infinity"'));
  rx.close();
});

// ---- the rules, on hand-made states ----

function channel(id: number, fields: Partial<ChannelModel>): ChannelModel {
  return { id, name: `c${id}`, capacity: 0, length: 0, closedNoSenders: false, closedNoReceivers: false, streamReceiver: false, sendHolders: [], recvHolders: [], transitSenders: 0, transitReceivers: 0, corrupt: false, ...fields };
}
function waiting(id: number, op: "send" | "recv", on: number, more: Partial<PartyModel["waits"][number]> = {}): PartyModel {
  return { id, name: `p${id}`, waits: [{ op, cases: [{ op, channel: on }], async: false, timeout: false, sinceMs: 500, stable: true, ...more }] };
}

test("rules: a two-party cycle is a deadlock; a third holder outside it, a message, a closed side, an end in transit or a timeout each rule it out", () => {
  const base = (fields: Partial<ChannelModel> = {}) =>
    new Map([
      [1, channel(1, { sendHolders: [2], recvHolders: [1], ...fields })],
      [2, channel(2, { sendHolders: [1], recvHolders: [2] })],
    ]);
  const parties = [waiting(1, "recv", 1), waiting(2, "recv", 2)];
  assert.equal(analyseWaits(parties, base(), new Map()).deadlocks.length, 1);
  assert.equal(analyseWaits(parties, base({ sendHolders: [2, 3] }), new Map()).deadlocks.length, 0);
  assert.equal(analyseWaits(parties, base({ length: 1 }), new Map()).deadlocks.length, 0);
  assert.equal(analyseWaits(parties, base({ closedNoSenders: true }), new Map()).deadlocks.length, 0);
  assert.equal(analyseWaits(parties, base({ transitSenders: 1 }), new Map()).deadlocks.length, 0);
  assert.equal(analyseWaits([waiting(1, "recv", 1, { timeout: true }), waiting(2, "recv", 2)], base(), new Map()).deadlocks.length, 0);
  assert.equal(analyseWaits([waiting(1, "recv", 1, { stable: false }), waiting(2, "recv", 2)], base(), new Map()).deadlocks.length, 0);
});

test("rules: a full bounded channel deadlocks its senders; room rules it out; a select is stuck only if every case is", () => {
  const channels = new Map([
    [1, channel(1, { capacity: 2, length: 2, sendHolders: [1], recvHolders: [2] })],
    [2, channel(2, { capacity: 2, length: 2, sendHolders: [2], recvHolders: [1] })],
    [3, channel(3, { capacity: 2, length: 0, sendHolders: [9], recvHolders: [1] })],
  ]);
  const parties = [waiting(1, "send", 1), waiting(2, "send", 2)];
  assert.equal(analyseWaits(parties, channels, new Map()).deadlocks.length, 1);
  channels.set(1, channel(1, { capacity: 2, length: 1, sendHolders: [1], recvHolders: [2] }));
  assert.equal(analyseWaits(parties, channels, new Map()).deadlocks.length, 0);
  channels.set(1, channel(1, { capacity: 2, length: 2, sendHolders: [1], recvHolders: [2] }));
  const select: PartyModel = { id: 1, name: "p1", waits: [{ op: "select", cases: [{ op: "send", channel: 1 }, { op: "recv", channel: 3 }], async: false, timeout: false, sinceMs: 500, stable: true }] };
  // Its receive case can be ended by party 9, outside.
  assert.equal(analyseWaits([select, waiting(2, "send", 2)], channels, new Map()).deadlocks.length, 0);
});

test("rules: a self-deadlock; async waiters make possible deadlocks only; wait-for edges name channel and lock", () => {
  const channels = new Map([[1, channel(1, { sendHolders: [1], recvHolders: [1] })]]);
  const self = analyseWaits([waiting(1, "recv", 1)], channels, new Map());
  assert.equal(self.deadlocks.length, 1);
  assert.equal(self.waitFor, [{ from: 1, to: 1, channel: 1 }]);
  const asAsync = analyseWaits([waiting(1, "recv", 1, { async: true })], channels, new Map());
  assert.equal([asAsync.deadlocks.length, asAsync.possibleDeadlocks.length], [0, 1]);
  assert.equal(asAsync.waitFor, [{ from: 1, to: 1, channel: 1, async: true }]);
  const lock: PartyModel = { id: 3, name: "p3", waits: [{ op: "acquire", cases: [], lock: 77, async: false, timeout: false, sinceMs: 500, stable: true }] };
  const locked = analyseWaits([lock], new Map(), new Map([[77, 4]]));
  assert.equal(locked.waitFor, [{ from: 3, to: 4, lock: 77 }]);
  assert.equal(locked.deadlocks.length, 0);
  const ownLock = analyseWaits([lock], new Map(), new Map([[77, 3]]));
  assert.equal(ownLock.deadlocks.length, 1);
});

test.run();
