/**
 * Interpreters: lifecycle, exec/call/prepareMain/wrap, errors crossing
 * back, ends moving in and out, and the release of everything an
 * interpreter held when it exits, throws or is terminated.
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { suite, assert, withTimeout } from "./_harness.js";
import {
  ChannelClosedError,
  create,
  createChannel,
  current,
  ExecutionFailed,
  InterpreterClosedError,
  list,
  main,
  NotShareableError,
  type Interpreter,
} from "../src/index.js";

const test = suite("interpreter");
const fixture = new URL("./fixtures/module.ts", import.meta.url);
const repoRoot = fileURLToPath(new URL("..", import.meta.url));

function exitOf(interpreter: Interpreter): Promise<number> {
  return new Promise((resolve) => interpreter.once("exit", resolve));
}

test("create, list, current, main", async () => {
  assert.is(current().id, 0);
  assert.is(main().id, 0);
  assert.is(main().name, "main");
  const a = await create({ name: "alpha" });
  try {
    assert.ok(a.id > 0);
    assert.is(a.name, "alpha");
    assert.ok(list().some((i) => i.id === a.id && i.name === "alpha"));
    assert.ok(list().some((i) => i.id === 0));
    const seen = await a.call<{ id: number; name: string }>(fixture, "whoAmI");
    assert.equal(seen, { id: a.id, name: "alpha" });
    await a.exec(`
      import { current, list, main } from "interpreters";
      if (current().id !== ${a.id}) throw new Error("current() is " + current().id);
      if (main().id !== 0) throw new Error("main() is " + main().id);
      if (!list().some((i) => i.id === 0)) throw new Error("list() lacks main");
    `);
  } finally {
    await a.close();
  }
  assert.not.ok(list().some((i) => i.id === a.id));
});

test("exec: bind names become globals, top-level await works, globals persist", async () => {
  const a = await create();
  try {
    const [rx, tx] = createChannel<string>({ capacity: 1 });
    await a.exec(
      `
      await new Promise((resolve) => setTimeout(resolve, 1));
      globalThis.greeting = prefix + " world";
      out.sendSync(greeting);
    `,
      { bind: { prefix: "hello", out: tx } },
    );
    assert.is(await rx.recv({ timeout: 10_000 }), "hello world");
    await a.exec(`out.sendSync(greeting + " again"); out.close();`);
    assert.is(await rx.recv({ timeout: 10_000 }), "hello world again");
    await assert.rejects(rx.recv({ timeout: 10_000 }), ChannelClosedError);
  } finally {
    await a.close();
  }
});

test("exec: a thrown error becomes ExecutionFailed with the remote name, message and stack", async () => {
  const a = await create({ name: "thrower" });
  try {
    const err = (await assert.rejects(a.exec(`throw new TypeError("bad thing")`), ExecutionFailed)) as ExecutionFailed;
    assert.is(err.remote.name, "TypeError");
    assert.is(err.remote.message, "bad thing");
    assert.ok(err.message.startsWith("TypeError: bad thing"), err.message);
    assert.ok(err.remote.stack.includes("bad thing"));
    await assert.rejects(a.exec(`syntax error here (`), ExecutionFailed, /SyntaxError/);
    // errors from the library inside an interpreter are its own classes there
    await a.exec(`
      import { createChannel, ChannelClosedError } from "interpreters";
      const [rx, tx] = createChannel();
      tx.close();
      try { rx.recvSync({ timeout: 1000 }); throw new Error("no error"); }
      catch (e) { if (!(e instanceof ChannelClosedError)) throw new Error("wrong class: " + e); }
    `);
    // the interpreter survives a failed exec
    await a.exec(`globalThis.still = "alive"`);
  } finally {
    await a.close();
  }
});

test("call: imports a module, calls an export, returns the result", async () => {
  const a = await create();
  try {
    assert.is(await a.call<number>(fixture, undefined, 2, 3), 5);
    assert.is(await a.call<number>(fixture.href, "default", 10, 20), 30);
    const err = (await assert.rejects(a.call(fixture, "fail", "nope"), ExecutionFailed)) as ExecutionFailed;
    assert.is(err.remote.name, "RangeError");
    await assert.rejects(a.call(fixture, "notAFunction"), ExecutionFailed, /not a function/);
    await assert.rejects(a.call(fixture, "missing"), ExecutionFailed, /missing/);
    await assert.rejects(a.call(fixture, "default", () => 1), NotShareableError, /value\[0\]/);
  } finally {
    await a.close();
  }
});

test("call: channel ends passed as arguments move; work flows both ways", async () => {
  const producer = await create({ name: "producer" });
  const consumer = await create({ name: "consumer" });
  try {
    const [rx, tx] = createChannel<number>({ capacity: 4 });
    const producing = producer.call<number>(fixture, "produce", tx, 1000);
    const summing = consumer.call<number>(fixture, "sumAll", rx);
    assert.throws(() => tx.trySend(1), ChannelClosedError, /moved to interpreter \d+ "producer"/);
    assert.throws(() => rx.tryRecv(), ChannelClosedError, /moved/);
    assert.is(await producing, 1000);
    assert.is(await summing, (999 * 1000) / 2);
  } finally {
    await producer.close();
    await consumer.close();
  }
});

test("prepareMain sets globals", async () => {
  const a = await create();
  try {
    const [rx, tx] = createChannel<unknown>({ capacity: 1 });
    await a.prepareMain({ config: { mode: "fast", n: 3 }, out: tx });
    await a.exec(`out.sendSync(config.mode + config.n)`);
    assert.is(await rx.recv({ timeout: 10_000 }), "fast3");
  } finally {
    await a.close();
  }
});

test("wrap: comlink proxy to a module's exports; pending calls reject when the interpreter dies", async () => {
  const a = await create();
  const remote = a.wrap<typeof import("./fixtures/module.js")>(fixture);
  assert.is(await remote.default(4, 5), 9);
  assert.is(await remote.slowEcho("x", 1), "x");
  const pending = assert.rejects(remote.slowEcho("never", 60_000), InterpreterClosedError);
  await a.terminate();
  await pending;
});

test("isRunning is true only while exec/call runs", async () => {
  const a = await create();
  try {
    assert.is(a.isRunning(), false);
    const [rx, tx] = createChannel<string>({ capacity: 0 });
    const [goRx, goTx] = createChannel<string>({ capacity: 0 });
    const running = a.exec(`started.sendSync("in"); go.recvSync();`, { bind: { started: tx, go: goRx } });
    assert.is(await rx.recv({ timeout: 10_000 }), "in");
    assert.is(a.isRunning(), true);
    await goTx.send("go", { timeout: 10_000 });
    await running;
    assert.is(a.isRunning(), false);
  } finally {
    await a.close();
  }
});

test("terminate: ends are released, a waiting receiver gets ChannelClosedError", async () => {
  const a = await create({ name: "doomed" });
  const [rx, tx] = createChannel<number>({ capacity: 1 });
  await a.prepareMain({ tx });
  assert.is(rx.stats().senders, 1);
  const waiting = assert.rejects(rx.recv({ timeout: 20_000 }), ChannelClosedError);
  const exited = exitOf(a);
  await a.terminate();
  await waiting;
  assert.is(rx.stats().senders, 0);
  assert.type(await exited, "number");
  await assert.rejects(a.exec("1"), InterpreterClosedError, /has exited/);
});

test("an interpreter that throws outside exec emits 'error' then 'exit'; its ends are released", async () => {
  const a = await create({ name: "crasher" });
  const [rx, tx] = createChannel<number>({ capacity: 1 });
  const events: string[] = [];
  const errored = new Promise<ExecutionFailed>((resolve) => a.once("error", (e) => (events.push("error"), resolve(e))));
  const exited = new Promise<number>((resolve) => a.once("exit", (code) => (events.push("exit"), resolve(code))));
  await a.exec(`setTimeout(() => { throw new Error("boom later"); }, 1);`, { bind: { tx } });
  const err = await errored;
  assert.instance(err, ExecutionFailed);
  assert.is(err.remote.message, "boom later");
  assert.is(await exited, 1);
  assert.equal(events, ["error", "exit"]);
  await assert.rejects(rx.recv({ timeout: 10_000 }), ChannelClosedError);
});

test("a pending exec rejects when its interpreter is terminated", async () => {
  const a = await create();
  const [rx, tx] = createChannel<string>({ capacity: 0 });
  const forever = assert.rejects(a.exec(`tx.sendSync("started"); await new Promise(() => {});`, { bind: { tx } }), InterpreterClosedError, /while exec was pending/);
  assert.is(await rx.recv({ timeout: 10_000 }), "started");
  await a.terminate();
  await forever;
});

test("the main thread blocked in recvSync is woken when the last sender's interpreter exits", async () => {
  const a = await create();
  const [rx, tx] = createChannel<number>({ capacity: 1 });
  await a.exec(`tx.sendSync(1); setTimeout(() => process.exit(0), 50);`, { bind: { tx } });
  assert.is(rx.recvSync({ timeout: 20_000 }), 1);
  // Woken by the release (ChannelClosedError), not by the timeout (which would be TimeoutError).
  assert.throws(() => rx.recvSync({ timeout: 20_000 }), ChannelClosedError);
});

test("an interpreter blocked in recvSync is woken when the sender's interpreter is terminated", async () => {
  const sender = await create({ name: "sender" });
  const receiver = await create({ name: "receiver" });
  try {
    const [rx, tx] = createChannel<number>({ capacity: 0 });
    await sender.prepareMain({ tx });
    const outcome = receiver.exec(
      `
      import { ChannelClosedError } from "interpreters";
      try { rx.recvSync(); throw new Error("got a message"); }
      catch (e) { if (!(e instanceof ChannelClosedError)) throw e; }
    `,
      { bind: { rx } },
    );
    await sender.terminate();
    await outcome;
  } finally {
    await receiver.close();
  }
});

test("Symbol.asyncDispose closes the interpreter", async () => {
  let id = -1;
  {
    await using a = await create();
    id = a.id;
    assert.ok(list().some((i) => i.id === id));
  }
  assert.not.ok(list().some((i) => i.id === id));
});

test("create with an aborted signal, and abort after creation terminates", async () => {
  const controller = new AbortController();
  controller.abort(new Error("no thanks"));
  await assert.rejects(create({ signal: controller.signal }), Error, /no thanks/);
  const later = new AbortController();
  const a = await create({ signal: later.signal });
  const exited = exitOf(a);
  later.abort();
  await exited;
  await assert.rejects(a.exec("1"), InterpreterClosedError);
});

test("interpreters can create interpreters; env is passed through", async () => {
  const a = await create({ name: "parent", env: { GREETING: "hi" } });
  try {
    const [rx, tx] = createChannel<string>({ capacity: 1 });
    await a.exec(
      `
      import { create } from "interpreters";
      const child = await create({ name: "child" });
      await child.exec("out.sendSync(process.env.GREETING + ' from ' + 'child')", { bind: { out } });
      await child.close();
    `,
      { bind: { out: tx } },
    );
    assert.is(await rx.recv({ timeout: 10_000 }), "hi from child");
  } finally {
    await a.close();
  }
});

function runNode(args: string[], what: string, timeout = 60_000): Promise<{ code: number | null; output: string }> {
  return withTimeout(
    new Promise((resolve) => {
      const child = spawn(process.execPath, args, { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
      let output = "";
      child.stdout.on("data", (d) => (output += d));
      child.stderr.on("data", (d) => (output += d));
      child.on("exit", (code) => resolve({ code, output }));
    }),
    timeout,
    what,
  );
}

test("an idle interpreter does not keep the process alive (from source)", async () => {
  const script = `
    import { create, createChannel } from "./src/index.ts";
    const a = await create();
    const [rx, tx] = createChannel();
    await a.exec("tx.sendSync(1)", { bind: { tx } });
    console.log("got", await rx.recv());
  `;
  const { code, output } = await runNode(["--import", "tsx", "--input-type=module", "-e", script], "source child exits");
  assert.is(code, 0, output);
  assert.match(output, /got 1/);
});

test("the built package works: workers run from dist", async () => {
  const script = `
    import { create, createChannel } from "interpreters";
    const a = await create({ name: "built" });
    const [rx, tx] = createChannel({ capacity: 0 });
    const done = a.exec("import { current } from 'interpreters'; tx.sendSync('hello from ' + current().name)", { bind: { tx } });
    console.log(await rx.recv());
    await done;
  `;
  const { code, output } = await runNode(["--input-type=module", "-e", script], "built child exits");
  assert.is(code, 0, output);
  assert.match(output, /hello from built/);
});

// Node refuses V8 flags in a worker's execArgv (ERR_WORKER_INVALID_EXEC_ARGV);
// they apply process-wide, so the interpreter must start without them and
// still see them in effect (--expose-gc: gc() exists inside the interpreter).
const V8_FLAGS = ["--max-old-space-size=4096", "--expose-gc"];
const seesProcessFlags = `
    const a = await create({ name: "flagged" });
    const [rx, tx] = createChannel();
    await a.exec("tx.sendSync(typeof gc)", { bind: { tx } });
    console.log("gc in interpreter:", await rx.recv({ timeout: 10_000 }));
    await a.close();
  `;

test("V8 flags on the command line (--max-old-space-size, --expose-gc) do not stop interpreters (from source)", async () => {
  const script = `import { create, createChannel } from "./src/index.ts";` + seesProcessFlags;
  const { code, output } = await runNode([...V8_FLAGS, "--import", "tsx", "--input-type=module", "-e", script], "source child with V8 flags exits");
  assert.is(code, 0, output);
  assert.match(output, /gc in interpreter: function/);
});

test("V8 flags on the command line do not stop interpreters (built package)", async () => {
  const script = `import { create, createChannel } from "interpreters";` + seesProcessFlags;
  const { code, output } = await runNode([...V8_FLAGS, "--input-type=module", "-e", script], "built child with V8 flags exits");
  assert.is(code, 0, output);
  assert.match(output, /gc in interpreter: function/);
});

test("a garbage-collected handle of a corrupt channel is reported as a warning, not thrown from the finalizer", async () => {
  // What a FinalizationRegistry callback throws cannot be caught: it would end the process.
  const script = `
    import { createChannel } from "./src/index.ts";
    import { H } from "./src/ring.ts";
    import { endOf } from "./src/transfer.ts";
    let warned = false;
    process.on("warning", (w) => { if (/could not be closed/.test(w.message)) { warned = true; console.log("warning:", w.message); } });
    (() => {
      const [rx] = createChannel({ name: "forgotten" });
      Atomics.store(endOf(rx).memory.header, H.SEND_LOCK, 4000);
    })();
    for (let i = 0; i < 200 && !warned; i++) {
      gc();
      await new Promise((resolve) => setImmediate(resolve));
    }
    console.log("still running, warned:", warned);
  `;
  const { code, output } = await runNode(["--expose-gc", "--import", "tsx", "--input-type=module", "-e", script], "child with a forgotten corrupt handle exits");
  assert.is(code, 0, output);
  assert.match(output, /still running, warned: true/);
  assert.match(output, /forgotten.*cannot exist/);
});

test("a finished sendSync or recvSync keeps no value alive, and the first wait keeps no async context alive", async () => {
  // Each value is held only through a WeakRef when gc() runs: it must be collected.
  const script = `
    import { AsyncLocalStorage } from "node:async_hooks";
    import { createChannel } from "./src/index.ts";
    const tick = () => new Promise((resolve) => setImmediate(resolve));
    async function collected(ref) {
      for (let i = 0; i < 20 && ref.deref() !== undefined; i++) { await tick(); gc(); }
      return ref.deref() === undefined;
    }
    const als = new AsyncLocalStorage();
    let storeRef;
    await als.run({ request: new Uint8Array(1 << 20) }, async () => {
      storeRef = new WeakRef(als.getStore());
      const [rx, tx] = createChannel({ capacity: 1 });
      const waiting = rx.recv(); // the first wait in this process
      setImmediate(() => tx.sendSync("reply"));
      await waiting;
    });
    console.log("async context collected:", await collected(storeRef));
    const [rx, tx] = createChannel({ capacity: Infinity, name: "big" });
    let sentRef, receivedRef;
    (() => {
      const value = new Uint8Array(1 << 20);
      sentRef = new WeakRef(value);
      tx.sendSync(value);
    })();
    (() => {
      receivedRef = new WeakRef(rx.recvSync({ timeout: 10000 }));
    })();
    console.log("sent value collected:", await collected(sentRef));
    console.log("received value collected:", await collected(receivedRef));
  `;
  const { code, output } = await runNode(["--expose-gc", "--import", "tsx", "--input-type=module", "-e", script], "child checking what stays alive exits");
  assert.is(code, 0, output);
  assert.match(output, /async context collected: true/);
  assert.match(output, /sent value collected: true/);
  assert.match(output, /received value collected: true/);
});

test.run();
