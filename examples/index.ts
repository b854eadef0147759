/**
 * `npm start`: the same producer/consumer program run over channels of
 * capacity 0 (rendezvous), 16 (bounded) and Infinity (unbounded), with the
 * producer and the consumer in two interpreters. Prints what happened and
 * how long it took, so the effect of the buffer is visible.
 */
import { create, createChannel, type ChannelStats } from "interpreters";

const MESSAGES = 20_000;

const PRODUCER = `
  for (let i = 0; i < count; i++) jobs.sendSync({ id: i, payload: "job-" + i });
  jobs.close();
`;

const CONSUMER = `
  let sum = 0, n = 0;
  for (const job of jobs) { sum += job.id; n++; }
  results.sendSync({ n, sum });
  results.close();
`;

interface Run {
  capacity: number;
  ms: number;
  received: number;
  sumOk: boolean;
  peakLength: number;
  peakBytes: number;
}

async function runOnce(capacity: number): Promise<Run> {
  const producer = await create({ name: `producer-${capacity}` });
  const consumer = await create({ name: `consumer-${capacity}` });
  try {
    const [jobsRx, jobsTx] = createChannel<{ id: number; payload: string }>({ capacity, name: `jobs(${capacity})` });
    const [resultsRx, resultsTx] = createChannel<{ n: number; sum: number }>({ capacity: 1, name: "results" });
    // Keep clones to watch the channel's stats while the interpreters use it.
    const watch = jobsTx.clone();
    let peakLength = 0;
    let peakBytes = 0;
    const sample = (stats: ChannelStats): void => {
      peakLength = Math.max(peakLength, stats.length);
      peakBytes = Math.max(peakBytes, stats.bytes);
    };
    const started = performance.now();
    const producing = producer.exec(PRODUCER, { bind: { jobs: jobsTx, count: MESSAGES } });
    const consuming = consumer.exec(CONSUMER, { bind: { jobs: jobsRx, results: resultsTx } });
    const sampler = setInterval(() => sample(watch.stats()), 1);
    await producing;
    watch.close(); // now the consumer sees the end of the stream once it drains
    const result = await resultsRx.recv({ timeout: 120_000 });
    const ms = performance.now() - started;
    clearInterval(sampler);
    await consuming;
    const expected = (MESSAGES * (MESSAGES - 1)) / 2;
    return { capacity, ms, received: result.n, sumOk: result.sum === expected, peakLength, peakBytes };
  } finally {
    await producer.close();
    await consumer.close();
  }
}

async function rendezvousDemo(): Promise<void> {
  const worker = await create({ name: "greeter" });
  try {
    const [rx, tx] = createChannel<string>({ capacity: 0, name: "handshake" });
    const sending = worker.exec(`
      const t0 = performance.now();
      tx.sendSync("hello from " + (await import("interpreters")).current().name);
      tx.close();
      globalThis.waited = performance.now() - t0;
    `, { bind: { tx } });
    // Wait until the sender has offered its message and parked (the interpreter has to start first).
    const since = performance.now();
    while (rx.stats().waitingSenders === 0 && performance.now() - since < 10_000) await new Promise((resolve) => setTimeout(resolve, 5));
    await new Promise((resolve) => setTimeout(resolve, 200));
    const stats = rx.stats();
    console.log(`  capacity 0: 200 ms after it offered its message the sender is still waiting (waitingSenders=${stats.waitingSenders}, length=${stats.length}), since nobody has received`);
    console.log(`  main receives: ${JSON.stringify(await rx.recv())}; only now does the sender's sendSync return`);
    await sending;
  } finally {
    await worker.close();
  }
}

console.log(`interpreters demo: ${MESSAGES.toLocaleString("en-US")} messages from a producer interpreter to a consumer interpreter\n`);
await rendezvousDemo();
console.log("");
console.log("  capacity   time (ms)   msgs/s      received  correct  peak buffered  peak ring bytes");
for (const capacity of [0, 16, Infinity]) {
  const run = await runOnce(capacity);
  const rate = Math.round((run.received / run.ms) * 1000).toLocaleString("en-US");
  console.log(
    `  ${String(run.capacity).padEnd(9)}  ${run.ms.toFixed(0).padStart(9)}   ${rate.padStart(10)}  ${String(run.received).padStart(8)}  ${run.sumOk ? "yes" : "NO "}      ${String(run.peakLength).padStart(13)}  ${String(run.peakBytes).padStart(15)}`,
  );
}
console.log(`
  capacity 0 hands over every message in person (each send waits for its receive);
  16 lets the producer run ahead by at most 16 messages (backpressure);
  Infinity lets it run ahead as far as memory allows (watch the peak columns).`);
