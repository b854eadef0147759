/**
 * The library's plumbing never hands one interpreter another's channels or
 * lets it speak for another (issue 18: each test is written as the attack).
 * Interpreters isolate state, not trust (README, "What an interpreter is
 * and is not"): code in one can still write shared memory it was given, or
 * exit the process; these tests are about what it was NOT given.
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { suite, assert, withTimeout } from "./_harness.js";
import { ChannelClosedError, create, createChannel } from "../src/index.js";
import { refusedRequests } from "../src/control.js";

const test = suite("security");
const internals = (file: string) => JSON.stringify(new URL(`../src/${file}`, import.meta.url).href);

/** Exec source that asks the supervisor, through the port in workerData, for a buffer; returns whether one came back. */
const forgeFetch = `
  import { workerData, receiveMessageOnPort } from "node:worker_threads";
  const port = workerData.__interpretersSupervisor;
  const boot = workerData.__interpreters;
  const flags = new Int32Array(boot.control);
  export async function ask(request) {
    const flag = 16 + boot.slot * 16 + 3; // this party's fetch flag (control.ts)
    Atomics.store(flags, flag, 0);
    port.postMessage({ ...request, slot: boot.slot });
    const until = Date.now() + 5000;
    while (Atomics.load(flags, flag) === 0 && Date.now() < until) Atomics.wait(flags, flag, 0, 50);
    for (let m; (m = receiveMessageOnPort(port)); ) if (m.message.kind === "fetch") return m.message.buffer ?? null;
    return "no answer";
  }
`;

test("ids alone open nothing: fetching channels 1..60 by id through the supervisor port returns no memory", async () => {
  const secrets = Array.from({ length: 20 }, (_, i) => createChannel<string>({ name: `secret-${i}` }));
  for (const [, tx] of secrets) tx.trySend("meant for someone else");
  const attacker = await create({ name: "attacker" });
  const [outRx, outTx] = createChannel<{ leaked: number; answered: number }>();
  const before = refusedRequests();
  try {
    await attacker.exec(
      `${forgeFetch}
       let leaked = 0, answered = 0;
       for (let id = 1; id <= 60; id++) {
         for (const token of [undefined, [0, 0, 0, 0]]) {
           const got = await ask({ type: "fetch", kind: "channel", id, token });
           if (got !== "no answer") answered++;
           if (got instanceof SharedArrayBuffer) leaked++;
         }
       }
       out.sendSync({ leaked, answered });`,
      { bind: { out: outTx } },
    );
    const { leaked, answered } = await outRx.recv({ timeout: 10_000 });
    assert.is(leaked, 0, "no channel memory handed out without its capability");
    assert.ok(refusedRequests() - before >= 80, "the malformed fetches and those of live channels with a wrong capability are counted as refused");
    assert.is(answered, 120, "every forged fetch is answered at once (refused), none left hanging");
    for (const [rx] of secrets) assert.is(await rx.recv({ timeout: 1000 }), "meant for someone else", "nothing was taken");
  } finally {
    await attacker.close();
  }
});

test("the library's internal modules cannot build a handle for a channel by id", async () => {
  const [secretRx, secretTx] = createChannel<string>({ name: "secret" });
  secretTx.trySend("private");
  const attacker = await create({ name: "attacker" });
  const [outRx, outTx] = createChannel<string>();
  try {
    await attacker.exec(
      `import { channelById } from ${internals("registry.ts")};
       let result = "opened";
       try { channelById(${secretRx.id}, [0, 0, 0, 0]); } catch (e) { result = e.name + ": " + e.message; }
       out.sendSync(result);`,
      { bind: { out: outTx } },
    );
    assert.match(await outRx.recv({ timeout: 10_000 }), /CorruptDataError: .*channel \d+.*capability/);
    assert.is(await secretRx.recv({ timeout: 1000 }), "private");
  } finally {
    await attacker.close();
  }
});

test("a forged 'exited' for the main thread releases nothing: main's ends stay open", async () => {
  const [rx, tx] = createChannel<string>({ name: "main sends" });
  const refusedBefore = refusedRequests();
  const attacker = await create({ name: "attacker" });
  const receiver = await create({ name: "receiver" });
  try {
    await attacker.exec(
      `import { workerData } from "node:worker_threads";
       workerData.__interpretersSupervisor.postMessage({ type: "exited", slot: 0, id: 0 });
       workerData.__interpretersSupervisor.postMessage({ type: "exited", slot: ${1}, id: 1 });`,
    );
    const receiving = receiver.exec(`got.sendSync(rx.recvSync({ timeout: 10000 }));`, { bind: { rx, got: gotTx } });
    await new Promise((resolve) => setTimeout(resolve, 300)); // long enough for a forged release to have happened
    await tx.send("still mine", { timeout: 5000 });
    await receiving;
    assert.is(await gotRx.recv({ timeout: 5000 }), "still mine");
    assert.is(refusedRequests() - refusedBefore, 2, "both forged reports refused and counted");
  } finally {
    await attacker.close();
    await receiver.close();
  }
});
const [gotRx, gotTx] = createChannel<string>();

test("a forged 'attach' for a slot the attacker did not create is refused", async () => {
  const victim = await create({ name: "victim" });
  const attacker = await create({ name: "attacker" });
  const [rx, tx] = createChannel<number>();
  try {
    await attacker.exec(
      `import { workerData, MessageChannel } from "node:worker_threads";
       const { port1, port2 } = new MessageChannel();
       for (let slot = 0; slot < 8; slot++) workerData.__interpretersSupervisor.postMessage({ type: "attach", slot, id: 99, port: port2 }, slot === 0 ? [port2] : []);`,
    ).catch(() => undefined); // transferring a port twice may throw: only the first matters
    // The victim still works and still has its ends released when it exits.
    await victim.exec(`tx.sendSync(1)`, { bind: { tx } });
    assert.is(await rx.recv({ timeout: 5000 }), 1);
    await victim.close();
    await assert.rejects(rx.recv({ timeout: 5000 }), ChannelClosedError, /every send handle is closed/);
  } finally {
    await attacker.close();
  }
});

test("ends passed legitimately keep working everywhere (the capability travels with them)", async () => {
  const a = await create({ name: "a" });
  const b = await create({ name: "b" });
  const [hopRx, hopTx] = createChannel<unknown>();
  const [finalRx, finalTx] = createChannel<string>();
  try {
    // main -> a (in a message) -> b (in a message) -> used there; and a SharedArrayBuffer along the same way.
    const shared = new Int32Array(new SharedArrayBuffer(8));
    await hopTx.send({ reply: finalTx, shared: shared.buffer });
    const relay = a.exec(`const m = hop.recvSync({ timeout: 10000 }); next.sendSync(m);`, { bind: { hop: hopRx.clone(), next: nextTx } });
    const use = b.exec(`const m = next.recvSync({ timeout: 10000 }); new Int32Array(m.shared)[0] = 42; m.reply.sendSync("through two hops");`, { bind: { next: nextRx } });
    await Promise.all([relay, use]);
    assert.is(await finalRx.recv({ timeout: 5000 }), "through two hops");
    assert.is(shared[0], 42);
  } finally {
    await a.close();
    await b.close();
  }
});
const [nextRx, nextTx] = createChannel<unknown>();

test("a registration of memory that is not a channel does not stop the supervisor (it refuses it and goes on)", async () => {
  // Made before any interpreter, so the supervisor sees the channel only when it starts: corrupt by then.
  const script = `
    import { create, createChannel } from "./src/index.ts";
    import { endOf } from "./src/transfer.ts";
    import { refusedRequests } from "./src/control.ts";
    const [badRx] = createChannel({ name: "bad" });
    Atomics.store(endOf(badRx).memory.header, 0, 12345); // the magic word
    const a = await create({ name: "a" });
    const [rx, tx] = createChannel();
    await a.exec("tx.sendSync('alive')", { bind: { tx } });   // a fetch-free round trip
    console.log(await rx.recv({ timeout: 10000 }));
    const b = await create({ name: "b" });
    const [r2, t2] = createChannel();
    await b.exec("globalThis.keep = t2", { bind: { t2 } });
    await b.terminate();                                          // death cleanup still runs
    try { await r2.recv({ timeout: 10000 }); } catch (e) { console.log(e.name); }
    console.log("refused", refusedRequests() >= 1);
    await a.close();
  `;
  const root = fileURLToPath(new URL("..", import.meta.url));
  const { code, output } = await withTimeout(
    new Promise<{ code: number | null; output: string }>((resolve) => {
      const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
      let output = "";
      child.stdout.on("data", (d) => (output += d));
      child.stderr.on("data", (d) => (output += d));
      child.on("exit", (code) => resolve({ code, output }));
    }),
    60_000,
    "child with a corrupt channel exits",
  );
  assert.is(code, 0, output);
  assert.match(output, /alive\s+ChannelClosedError\s+refused true/);
});

test.run();
