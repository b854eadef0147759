/**
 * `npm start`: what the library is for, in about 20 seconds.
 *
 * 1. A rendezvous (capacity 0), watched from outside: what `stats()` shows
 *    while a sender waits, in plain words.
 * 2. The same producer/consumer program, a producer interpreter sending
 *    small objects to a consumer interpreter, over channels of capacity 0,
 *    16 and Infinity, and beside them the same program over `postMessage`
 *    (two plain workers and a MessageChannel), in the same run: messages per
 *    second, and how far the producer ran ahead of the consumer (the memory
 *    a backlog holds). Every side is warmed up first; each run sends for
 *    SECONDS (as many messages as the machine moves in that time: hundreds
 *    of thousands on an idle one), and the table shows the median of
 *    REPEATS runs taken round-robin (a single run can mislead).
 *
 * DEMO_SECONDS and DEMO_REPEATS override the sizes (the test suite runs a
 * short version).
 */
import { availableParallelism, loadavg } from "node:os";
import { MessageChannel, Worker } from "node:worker_threads";
import { create, createChannel, type Interpreter } from "interpreters";
import { PROGRESS_BYTES, RECEIVED, SENT } from "./demo-parties.js";

const SECONDS = Number(process.env.DEMO_SECONDS ?? 1);
const REPEATS = Number(process.env.DEMO_REPEATS ?? 3);
const WARMUP_SECONDS = Math.min(SECONDS, 0.5);
const PARTIES = new URL("./demo-parties.js", import.meta.url);

const count = (n: number): string => Math.round(n).toLocaleString("en-US");

// ---------------------------------------------------------------------------
// 1. A rendezvous, watched from outside

async function rendezvous(): Promise<void> {
  const greeter = await create({ name: "greeter" });
  try {
    const [rx, tx] = createChannel<string>({ capacity: 0, name: "handshake" });
    const sending = greeter.exec(
      `
      const started = performance.now();
      tx.sendSync("hello from the greeter");
      globalThis.waited = performance.now() - started;
      tx.close();
    `,
      { bind: { tx } },
    );
    // Wait until the greeter has offered its message and is waiting (it has to start up first).
    const since = performance.now();
    while (rx.stats().waitingSenders === 0 && performance.now() - since < 10_000) await new Promise((resolve) => setTimeout(resolve, 5));
    await new Promise((resolve) => setTimeout(resolve, 200));
    const stats = rx.stats();
    console.log(`1. Capacity 0 is a rendezvous: a send completes only when a receiver takes the message.

   An interpreter called tx.sendSync("hello ...") on a channel of capacity 0 and nobody
   has received yet. 200 ms later, rx.stats() says: waitingSenders=${stats.waitingSenders}, length=${stats.length}.

     length=${stats.length}          its message is in the channel, offered, not taken by anyone yet;
     waitingSenders=${stats.waitingSenders}  its sender is blocked in sendSync until a receiver takes it.

   Capacity 0 does not mean "a message cannot be in the channel"; it means the sender does
   not move on until its message has been received: a handshake, as with Go's unbuffered
   channels. With capacity 16, sendSync would have returned at once (length=1, nobody waiting).`);
    console.log(`\n   main: await rx.recv() -> ${JSON.stringify(await rx.recv({ timeout: 10_000 }))}; only now does the greeter's sendSync return.`);
    await sending;
  } finally {
    await greeter.close();
  }
}

// ---------------------------------------------------------------------------
// 2. Producer -> consumer: channels of three capacities, and postMessage

interface Outcome {
  messages: number;
  msgsPerSecond: number;
  /** Most messages sent but not yet received, seen while it ran (sampled every 5 ms). */
  peakBacklog: number;
  correct: boolean;
}

interface System {
  label: string;
  /** Sends for `seconds`, then waits for the consumer to receive everything. */
  run(seconds: number): Promise<Outcome>;
  close(): Promise<void>;
}

/** Samples sent - received every 5 ms until stopped; returns the largest seen. */
function watchBacklog(progress: SharedArrayBuffer): () => number {
  const counts = new Int32Array(progress);
  let peak = 0;
  const timer = setInterval(() => {
    peak = Math.max(peak, Atomics.load(counts, SENT) - Atomics.load(counts, RECEIVED));
  }, 5);
  return () => {
    clearInterval(timer);
    return peak;
  };
}

/** The producer and the consumer in two interpreters, over a new channel of `capacity` each run. */
async function channelSystem(capacity: number, producer: Interpreter, consumer: Interpreter): Promise<System> {
  const label = capacity === 0 ? "channel, capacity 0" : capacity === Infinity ? "channel, capacity Infinity" : `channel, capacity ${capacity}`;
  return {
    label,
    async run(seconds) {
      const [jobsRx, jobsTx] = createChannel({ capacity, name: `jobs (${label})` });
      const progress = new SharedArrayBuffer(PROGRESS_BYTES);
      const stopWatching = watchBacklog(progress);
      const started = performance.now();
      const [sent, result] = await Promise.all([
        producer.call<number>(PARTIES, "produce", jobsTx, seconds, progress),
        consumer.call<{ received: number; inOrder: boolean }>(PARTIES, "consume", jobsRx, progress),
      ]);
      const elapsed = (performance.now() - started) / 1000;
      return { messages: sent, msgsPerSecond: result.received / elapsed, peakBacklog: stopWatching(), correct: result.received === sent && result.inOrder };
    },
    async close() {},
  };
}

/** The same program in two plain workers over a MessageChannel: what one would write without this library. */
const POST_MESSAGE_SIDE = `
const { workerData, parentPort } = require("node:worker_threads");
const { role, port } = workerData;
parentPort.on("message", ({ seconds, progress }) => {
  const counts = new Int32Array(progress);
  if (role === "produce") {
    const deadline = performance.now() + seconds * 1000;
    let sent = 0;
    while (performance.now() < deadline) {
      for (let i = 0; i < 256; i++, sent++) {
        port.postMessage({ id: sent, payload: "job-" + sent });
        Atomics.store(counts, ${SENT}, sent + 1);
      }
    }
    port.postMessage(null); // the end of the stream
    parentPort.postMessage(sent);
    return;
  }
  let received = 0, inOrder = true;
  const onJob = (job) => {
    if (job === null) {
      port.off("message", onJob);
      parentPort.postMessage({ received, inOrder });
      return;
    }
    if (job.id !== received || job.payload !== "job-" + received) inOrder = false;
    received++;
    Atomics.store(counts, ${RECEIVED}, received);
  };
  port.on("message", onJob);
  parentPort.postMessage("listening");
});
`;

function postMessageSystem(): System {
  const { port1, port2 } = new MessageChannel();
  const start = (role: string, port: import("node:worker_threads").MessagePort): Worker =>
    new Worker(POST_MESSAGE_SIDE, { eval: true, workerData: { role, port }, transferList: [port], name: `postMessage ${role}r` });
  const producer = start("produce", port1);
  const consumer = start("consume", port2);
  const next = (worker: Worker): Promise<unknown> =>
    new Promise((resolve, reject) => {
      worker.once("message", resolve);
      worker.once("error", reject);
    });
  return {
    label: "postMessage (MessageChannel)",
    async run(seconds) {
      const progress = new SharedArrayBuffer(PROGRESS_BYTES);
      const listening = next(consumer);
      consumer.postMessage({ seconds, progress });
      await listening;
      const stopWatching = watchBacklog(progress);
      const started = performance.now();
      const done = Promise.all([next(producer), next(consumer)]);
      producer.postMessage({ seconds, progress });
      const [sent, result] = (await done) as [number, { received: number; inOrder: boolean }];
      const elapsed = (performance.now() - started) / 1000;
      return { messages: sent, msgsPerSecond: result.received / elapsed, peakBacklog: stopWatching(), correct: result.received === sent && result.inOrder };
    },
    async close() {
      await Promise.all([producer.terminate(), consumer.terminate()]);
    },
  };
}

/** A sentence about the machine's load when it is busy enough to change the numbers, else "". */
function loadNote(): string {
  const [load] = loadavg();
  const cores = availableParallelism();
  if (load! < cores) return "";
  return `
   This machine is busy (load average ${load!.toFixed(1)} on ${cores} cores): threads here often wait for
   a core, and every number above drops. Capacity 0 drops most: a handover needs the sender and
   the receiver running at the same moment, on two cores. Run it again on a quieter machine.`;
}

async function throughput(): Promise<void> {
  console.log(`
2. The same program, small objects ({ id, payload }) from a producer to a consumer, worker
   to worker, over channels and over postMessage. Every side is warmed up first; then the
   producer sends for ${SECONDS} s, ${REPEATS} times each, in turn; the median run is shown.
`);
  const producer = await create({ name: "producer" });
  const consumer = await create({ name: "consumer" });
  const systems = [
    await channelSystem(0, producer, consumer),
    await channelSystem(16, producer, consumer),
    await channelSystem(Infinity, producer, consumer),
    postMessageSystem(),
  ];
  try {
    for (const system of systems) await system.run(WARMUP_SECONDS);
    const outcomes = new Map<System, Outcome[]>(systems.map((s) => [s, []]));
    for (let repeat = 0; repeat < REPEATS; repeat++) {
      for (const system of systems) outcomes.get(system)!.push(await system.run(SECONDS));
    }
    const medianRun = (runs: Outcome[]): Outcome => [...runs].sort((a, b) => a.msgsPerSecond - b.msgsPerSecond)[Math.floor(runs.length / 2)]!;
    const postMessageRate = medianRun(outcomes.get(systems[3]!)!).msgsPerSecond;
    console.log("   what carries the messages        msgs/s   vs postMessage   messages   peak backlog   all received, in order");
    for (const system of systems) {
      const runs = outcomes.get(system)!;
      const run = medianRun(runs);
      const ratio = system === systems[3] ? "1.0x" : `${Number((run.msgsPerSecond / postMessageRate).toPrecision(2))}x`;
      console.log(
        `   ${system.label.padEnd(29)} ${count(run.msgsPerSecond).padStart(10)}   ${ratio.padStart(14)}   ${count(run.messages).padStart(8)}   ${count(run.peakBacklog).padStart(12)}   ${runs.every((o) => o.correct) ? "yes" : "NO"}`,
      );
    }
  } finally {
    await Promise.all([...systems.map((s) => s.close()), producer.close(), consumer.close()]);
  }
  console.log(`
   peak backlog = most messages sent that the consumer had not finished with, at any moment
   (sampled every 5 ms): the memory a slow consumer makes the program hold.
     capacity 0         the producer never gets ahead: each send waits for its receive.
     capacity 16        at most 16 wait in the channel (plus the one the consumer holds);
                        then sendSync waits until there is room (backpressure).
     capacity Infinity  the producer runs ahead as far as the memory budget allows (maxBufferBytes).
     postMessage        no backpressure at all: nothing stops the producer, the backlog is
                        whatever the consumer has not caught up with.
   Messages per second depend on the machine and on what else runs on it: compare the rows,
   not the numbers. Capacity 0 hands over one message at a time, so it is the slowest channel;
   a bigger buffer lets both sides work at once. With 64-byte Uint8Arrays instead of objects
   (no encoding), capacity Infinity moves several million messages a second: bench/RESULTS.md
   has the full comparison (npm run bench).${loadNote()}`);
}

const started = performance.now();
console.log("interpreters: isolated interpreters (worker threads) that share nothing but channels\n");
await rendezvous();
await throughput();
console.log(`
3. More to run: node dist/examples/deadlock.js (two interpreters waiting on each other: a
   DeadlockError naming the cycle instead of a hang), dist/examples/task-group.js (one worker
   fails: the group cancels the rest), dist/examples/fan-in.js (select over three producers:
   a fair choice, nobody starved).
   What the library is for, each in one command:
   - protocols offloaded: node dist/examples/http-server.js --port 8080 --interpreters 1 --workers 2
     (or dist/examples/resp-server.js, then redis-cli -p PORT); sockets in main, parsing in interpreters;
   - buffer semantics: npx interpreters lab (capacities 0, 1, 4, 16, Infinity, measured beside
     queueing theory; --out DIR writes a report.html);
   - CPU pipelines: npm run example:pipeline-hash (stages in interpreters, speed-up over one thread).

(${((performance.now() - started) / 1000).toFixed(1)} s)`);
