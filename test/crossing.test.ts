/**
 * Values crossing between interpreters: round trips of every kind of value,
 * SharedArrayBuffers shared (not copied), channel ends sent over channels
 * into interpreters that never saw them (fetched from the supervisor), and
 * a pending async wait keeping the process alive.
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { suite, assert, withTimeout } from "./_harness.js";
import { ChannelClosedError, create, createChannel, type RecvChannel, type SendChannel } from "../src/index.js";

const test = suite("crossing");
const repoRoot = fileURLToPath(new URL("..", import.meta.url));

const samples = (): unknown[] => [
  "ascii",
  "héllo wörld ✓ 😀 — 日本語",
  "lone surrogate \ud800 end",
  "",
  0,
  -0,
  3.14,
  NaN,
  -Infinity,
  2n ** 200n,
  -(2n ** 70n),
  true,
  null,
  undefined,
  { nested: { deep: [1, { x: "y" }], empty: {} } },
  [1, , 3],
  new Map<unknown, unknown>([["a", 1], [2, new Set([3])]]),
  new Set(["x", 1n, null]),
  new Date(1_700_000_000_123),
  /ab+c/gi,
  new Uint8Array([0, 1, 255]),
  new Int32Array([-1, 2 ** 31 - 1]),
  new Float32Array([1.5]),
  new BigUint64Array([2n ** 64n - 1n]),
  new DataView(new ArrayBuffer(4)),
  new ArrayBuffer(5),
  new Uint8Array(100_000).fill(7),
  "z".repeat(200_000),
];

test("every kind of value survives main -> interpreter -> main", async () => {
  const echo = await create({ name: "echo" });
  try {
    const [toEchoRx, toEchoTx] = createChannel<unknown>({ capacity: 4, bufferBytes: 65536 });
    const [backRx, backTx] = createChannel<unknown>({ capacity: 4, bufferBytes: 65536 });
    const running = echo.exec(`for (const v of input) output.sendSync(v, { timeout: 30000 }); output.close();`, {
      bind: { input: toEchoRx, output: backTx },
    });
    const values = samples();
    const receiving = (async () => {
      const got: unknown[] = [];
      for await (const v of backRx) got.push(v);
      return got;
    })();
    for (const value of values) await toEchoTx.send(value, { timeout: 30_000 });
    toEchoTx.close();
    const got = await receiving;
    await running;
    assert.is(got.length, values.length);
    values.forEach((value, i) => assert.equal(got[i], value, `value ${i}`));
    assert.is(Object.getPrototypeOf(got[18]), Date.prototype);
  } finally {
    await echo.close();
  }
});

test("a SharedArrayBuffer is shared, not copied, across interpreters", async () => {
  const a = await create();
  try {
    const sab = new SharedArrayBuffer(16);
    const view = new Int32Array(sab);
    const [rx, tx] = createChannel<unknown>({ capacity: 1 });
    const [doneRx, doneTx] = createChannel<string>({ capacity: 1 });
    const running = a.exec(
      `const { shared } = rx.recvSync({ timeout: 30000 });
       const v = new Int32Array(shared);
       Atomics.store(v, 0, 42);
       done.sendSync("written");
       Atomics.wait(v, 1, 0, 30000);
       done.sendSync("saw " + Atomics.load(v, 1));`,
      { bind: { rx, done: doneTx } },
    );
    await tx.send({ shared: sab });
    assert.is(await doneRx.recv({ timeout: 30_000 }), "written");
    assert.is(Atomics.load(view, 0), 42);
    Atomics.store(view, 1, 7);
    Atomics.notify(view, 1);
    assert.is(await doneRx.recv({ timeout: 30_000 }), "saw 7");
    await running;
  } finally {
    await a.close();
  }
});

test("a channel end sent over a channel works in an interpreter that never saw the channel", async () => {
  const server = await create({ name: "server" });
  try {
    const [requestsRx, requestsTx] = createChannel<{ n: number; reply: SendChannel<number> }>({ capacity: 8, name: "requests" });
    const running = server.exec(
      `for (const { n, reply } of requests) { reply.sendSync(n * 2, { timeout: 30000 }); reply.close(); }`,
      { bind: { requests: requestsRx } },
    );
    for (let n = 0; n < 20; n++) {
      // a fresh reply channel per request: created here, never seen by the server before
      const [replyRx, replyTx] = createChannel<number>({ capacity: 1, name: `reply-${n}` });
      await requestsTx.send({ n, reply: replyTx }, { timeout: 30_000 });
      assert.is(await replyRx.recv({ timeout: 30_000 }), n * 2);
      // the server closes its (moved) handle after replying: then the channel ends
      await assert.rejects(replyRx.recv({ timeout: 30_000 }), ChannelClosedError);
    }
    requestsTx.close();
    await running;
  } finally {
    await server.terminate();
  }
});

test("recv ends travel too: a worker hands its input channel to another", async () => {
  const a = await create({ name: "a" });
  const b = await create({ name: "b" });
  try {
    const [handoffRx, handoffTx] = createChannel<RecvChannel<string>>({ capacity: 1 });
    const [dataRx, dataTx] = createChannel<string>({ capacity: 4 });
    const [outRx, outTx] = createChannel<string>({ capacity: 4 });
    await a.exec(`handoff.sendSync(data); handoff.close();`, { bind: { handoff: handoffTx, data: dataRx } });
    const running = b.exec(`const input = handoff.recvSync({ timeout: 30000 }); for (const s of input) out.sendSync(s.toUpperCase()); out.close();`, {
      bind: { handoff: handoffRx, out: outTx },
    });
    for (const s of ["x", "y", "z"]) await dataTx.send(s);
    dataTx.close();
    const got: string[] = [];
    for await (const s of outRx) got.push(s);
    assert.equal(got, ["X", "Y", "Z"]);
    await running;
  } finally {
    await a.close();
    await b.close();
  }
});

test("a pending async recv keeps the process alive until the message comes", async () => {
  const script = `
    import { create, createChannel } from "./src/index.ts";
    const a = await create();
    const [rx, tx] = createChannel();
    // exec resolves at once: nothing but the pending recv keeps this process alive
    await a.exec("setTimeout(() => tx.sendSync('late'), 300)", { bind: { tx } });
    console.log("received", await rx.recv());
  `;
  const result = await withTimeout(
    new Promise<{ code: number | null; output: string }>((resolve) => {
      const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
      let output = "";
      child.stdout.on("data", (d) => (output += d));
      child.stderr.on("data", (d) => (output += d));
      child.on("exit", (code) => resolve({ code, output }));
    }),
    60_000,
    "child process",
  );
  assert.is(result.code, 0, result.output);
  assert.match(result.output, /received late/);
});

test.run();
