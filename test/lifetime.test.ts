/**
 * A channel's memory is findable by every thread for as long as any end of
 * it exists anywhere (a handle, an end in flight or inside a buffered
 * message) and is freed after that, at the scale servers run: thousands of
 * channels, ends carried in messages, ids past the end of the id space.
 */
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { suite, assert, seedFromEnv, withTimeout } from "./_harness.js";
import { ChannelClosedError, create, createChannel, CorruptDataError, NotShareableError, type RecvChannel, type SendChannel } from "../src/index.js";
import { channelById } from "../src/registry.js";

const test = suite("lifetime");
const repoRoot = fileURLToPath(new URL("..", import.meta.url));

function runNode(args: string[], what: string, timeoutMs = 120_000): Promise<{ code: number | null; output: string }> {
  return withTimeout(
    new Promise((resolve) => {
      const child = spawn(process.execPath, args, { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
      let output = "";
      child.stdout.on("data", (d) => (output += d));
      child.stderr.on("data", (d) => (output += d));
      child.on("exit", (code) => resolve({ code, output }));
    }),
    timeoutMs,
    what,
  );
}

test("a reply end carried in each request, 3,000 times: every reply arrives (ids 256, 512, ... stalled)", async () => {
  const worker = await create({ name: "replier" });
  const [jobsRx, jobsTx] = createChannel<{ i: number; reply: SendChannel<number> }>({ capacity: 1 });
  const running = worker.exec(`for (const j of jobs) { j.reply.sendSync(j.i); j.reply.close(); }`, { bind: { jobs: jobsRx } });
  for (let i = 0; i < 3000; i++) {
    const [rx, tx] = createChannel<number>({ capacity: 1 });
    await jobsTx.send({ i, reply: tx }, { timeout: 10_000 });
    assert.is(await rx.recv({ timeout: 10_000 }), i, `reply ${i} on channel ${rx.id}`);
    rx.close();
  }
  jobsTx.close();
  await running;
  await worker.close();
}, { timeout: 120_000 });

test("receive ends created in an interpreter, 3,000 sent to main: each is found at once (a fetch blocked 30 s)", async () => {
  const worker = await create({ name: "maker" });
  const [outRx, outTx] = createChannel<RecvChannel<number>>({ capacity: 4 });
  const running = worker.exec(
    `import { createChannel } from ${JSON.stringify(new URL("../src/index.ts", import.meta.url).href)};
     for (let i = 0; i < 3000; i++) {
       const [rx, tx] = createChannel({ capacity: 1 });
       tx.sendSync(i); tx.close();
       out.sendSync(rx);
     }
     out.close();`,
    { bind: { out: outTx } },
  );
  let i = 0;
  for await (const rx of outRx) {
    assert.is(await rx.recv({ timeout: 10_000 }), i++);
    rx.close();
  }
  assert.is(i, 3000);
  await running;
  await worker.close();
}, { timeout: 120_000 });

test("creating and closing 100,000 channels in a loop that never yields: bounded mappings and memory, no abort", async () => {
  // Before: the process aborted (heap out of memory, or SIGSEGV) after ~30,000, its memory mappings used up.
  const script = `
    import { readFileSync } from "node:fs";
    import { createChannel } from "./src/index.ts";
    let maxMaps = 0, maxRss = 0;
    for (let i = 1; i <= 100_000; i++) {
      const [rx, tx] = createChannel({ capacity: 1 }); tx.close(); rx.close();
      if (i % 5000 === 0) {
        maxMaps = Math.max(maxMaps, readFileSync("/proc/self/maps", "utf8").split("\\n").length);
        maxRss = Math.max(maxRss, process.memoryUsage().rss);
      }
    }
    console.log("maps", maxMaps, "rss", Math.round(maxRss / 1e6));
  `;
  const { code, output } = await runNode(["--import", "tsx", "--input-type=module", "-e", script], "channel loop child exits");
  assert.is(code, 0, output);
  const [, maps, rss] = /maps (\d+) rss (\d+)/.exec(output) ?? [];
  assert.ok(maps !== undefined, output);
  assert.ok(Number(maps) < 5000, `memory mappings stay few (saw ${maps}; the limit is 65,530)`);
  assert.ok(Number(rss) < 1500, `resident memory stays bounded (saw ${rss} MB)`);
});

test("an id no channel has (or ever will) fails at once with CorruptDataError, not after a 30 s wait", async () => {
  const worker = await create({ name: "links the supervisor" });
  try {
    const thrown = assert.throws(() => channelById(1_999_999_999, [1, 2, 3, 4]), CorruptDataError, /channel 1999999999.*never registered/);
    assert.ok(!/did not answer/.test((thrown as Error).message));
  } finally {
    await worker.close();
  }
});

test("ids past the end of the id space are reused only from dead channels (main alone, then with interpreters)", async () => {
  const script = (withInterpreter: boolean) => `
    import { create, createChannel } from "./src/index.ts";
    import { setNextChannelIdForTesting, MAX_ID } from "./src/control.ts";
    const worker = ${withInterpreter} ? await create({ name: "echo" }) : undefined;
    const [keepRx, keepTx] = createChannel({ name: "long-lived" });   // a low id that must never be reused
    setNextChannelIdForTesting(MAX_ID - 40);
    const [jobsRx, jobsTx] = createChannel({ capacity: 1 });
    const running = worker?.exec("for (const j of jobs) { j.reply.sendSync(j.i); j.reply.close(); }", { bind: { jobs: jobsRx } });
    const seen = new Set();
    for (let i = 0; i < 3000; i++) {
      const [rx, tx] = createChannel({ capacity: 1 });
      if (!(rx.id > 0 && rx.id <= MAX_ID)) throw new Error("id out of range: " + rx.id);
      if (rx.id === keepRx.id || rx.id === jobsRx.id) throw new Error("a live channel's id was reused: " + rx.id);
      seen.add(rx.id);
      if (worker) {
        await jobsTx.send({ i, reply: tx });
        if ((await rx.recv({ timeout: 10000 })) !== i) throw new Error("wrong reply " + i);
      } else {
        tx.sendSync(i); tx.close();
        if (rx.recvSync({ timeout: 10000 }) !== i) throw new Error("wrong value " + i);
      }
      rx.close();
    }
    keepTx.sendSync("still here");
    if (keepRx.recvSync({ timeout: 10000 }) !== "still here") throw new Error("the long-lived channel broke");
    jobsTx.close();
    await running;
    await worker?.close();
    console.log("ok, distinct ids seen:", seen.size);
  `;
  for (const withInterpreter of [false, true]) {
    const { code, output } = await runNode(["--import", "tsx", "--input-type=module", "-e", script(withInterpreter)], `id space child (interpreter: ${withInterpreter})`);
    assert.is(code, 0, output);
    assert.match(output, /ok, distinct ids seen: \d+/);
  }
}, { timeout: 120_000 });

test("a message carrying more than 64 channel ends is refused at the sender, nothing moved; 64 travel", async () => {
  const [rx, tx] = createChannel<unknown[]>();
  const ends = Array.from({ length: 65 }, () => createChannel<number>({ capacity: 1 }));
  const thrown = assert.throws(() => tx.trySend(ends.map(([, s]) => s)), NotShareableError, /at most 64 channel ends.*65/);
  assert.ok(thrown);
  ends[64]![1].trySend(1); // still usable: nothing was moved
  assert.is(tx.stats().length, 0);
  assert.ok(tx.trySend(ends.slice(0, 64).map(([, s]) => s)));
  const arrived = (await rx.recv({ timeout: 5000 })) as Array<SendChannel<number>>;
  arrived.forEach((s, i) => s.trySend(i));
  for (let i = 0; i < 64; i++) assert.is(await ends[i]![0].recv({ timeout: 5000 }), i);
  arrived.forEach((s) => s.close());
  await assert.rejects(ends[0]![0].recv({ timeout: 5000 }), ChannelClosedError);
});

test("lifetime stress: 100,000 channels made by main and interpreters, ends both ways in messages and in messages inside carried channels, random close order, forced GC", async () => {
  const seed = seedFromEnv();
  const channels = Number(process.env.LIFETIME_CHANNELS ?? 100_000);
  const fixture = fileURLToPath(new URL("./fixtures/lifetime-stress.ts", import.meta.url));
  const { code, output } = await runNode(["--expose-gc", "--import", "tsx", fixture, String(seed), String(channels)], `lifetime stress (SEED=${seed})`, Math.max(240_000, channels * 3));
  assert.is(code, 0, `SEED=${seed}\n${output}`);
  assert.match(output, /^ok \d+ channels/m, `SEED=${seed}\n${output}`);
  process.stdout.write(`  lifetime stress SEED=${seed}: ${output.trim()}\n`);
}, { timeout: Math.max(300_000, Number(process.env.LIFETIME_CHANNELS ?? 0) * 3) });

test.run();
