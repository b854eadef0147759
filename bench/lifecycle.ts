/**
 * `npm run bench:lifecycle`: what a channel costs to create and close, and a
 * channel per request (a fresh reply end carried into an interpreter, the
 * pattern servers use) against what a user would pick instead: a fresh
 * MessageChannel per request whose port is transferred to the worker. One
 * run, side by side, rounds alternating.
 *
 * Rows:
 * - create+close, main alone (no interpreter yet: no supervisor to tell);
 * - create+close with the supervisor running (each channel is registered);
 * - request/reply with a fresh reply channel per request, through one
 *   interpreter (round trip, sequential);
 * - the same with `new MessageChannel()` per request and a plain worker.
 */
import { Worker } from "node:worker_threads";
import { create, createChannel, type SendChannel } from "../src/index.js";
import { count, median } from "./lib/common.js";

const CREATES = count(100_000, 5000);
const REQUESTS = count(20_000, 2000);
const ROUNDS = 3;

function createClose(n: number): number {
  const started = performance.now();
  for (let i = 0; i < n; i++) {
    const [rx, tx] = createChannel({ capacity: 1 });
    tx.close();
    rx.close();
  }
  return ((performance.now() - started) * 1000) / n;
}

async function channelPerRequest(jobsTx: SendChannel<{ i: number; reply: SendChannel<number> }>, n: number): Promise<number> {
  const started = performance.now();
  for (let i = 0; i < n; i++) {
    const [rx, tx] = createChannel<number>({ capacity: 1 });
    await jobsTx.send({ i, reply: tx });
    if ((await rx.recv({ timeout: 10_000 })) !== i) throw new Error(`wrong reply to request ${i}`);
    rx.close();
  }
  return ((performance.now() - started) * 1000) / n;
}

async function portPerRequest(worker: Worker, n: number): Promise<number> {
  const started = performance.now();
  for (let i = 0; i < n; i++) {
    const { port1, port2 } = new MessageChannel();
    const reply = new Promise<number>((resolve) => port1.once("message", resolve));
    worker.postMessage({ i, reply: port2 }, [port2]);
    if ((await reply) !== i) throw new Error(`wrong reply to request ${i}`);
    port1.close();
  }
  return ((performance.now() - started) * 1000) / n;
}

const rows: Record<string, number[]> = { alone: [], supervised: [], channel: [], port: [] };
rows.alone!.push(createClose(CREATES)); // before any interpreter exists: no supervisor
const interp = await create({ name: "replier" });
const [jobsRx, jobsTx] = createChannel<{ i: number; reply: SendChannel<number> }>({ capacity: 1 });
const running = interp.exec(`for (const j of jobs) { j.reply.sendSync(j.i); j.reply.close(); }`, { bind: { jobs: jobsRx } });
const worker = new Worker(`require("node:worker_threads").parentPort.on("message", ({ i, reply }) => { reply.postMessage(i); reply.close(); });`, { eval: true });
await channelPerRequest(jobsTx, 1000); // warm-up
await portPerRequest(worker, 1000);
for (let round = 0; round < ROUNDS; round++) {
  rows.supervised!.push(createClose(CREATES));
  rows.channel!.push(await channelPerRequest(jobsTx, REQUESTS));
  rows.port!.push(await portPerRequest(worker, REQUESTS));
}
jobsTx.close();
await running;
await interp.close();
await worker.terminate();

const fmt = (us: number) => `${us.toFixed(1)} µs`;
const m = (k: string) => median(rows[k]!);
console.log(`| what | median of ${ROUNDS} (µs per channel or request) |`);
console.log(`|---|---|`);
console.log(`| createChannel + close both ends, main alone (${CREATES}) | ${fmt(m("alone"))} (one run) |`);
console.log(`| createChannel + close both ends, supervisor running (${CREATES}) | ${fmt(m("supervised"))} |`);
console.log(`| request/reply, fresh reply channel per request (${REQUESTS}) | ${fmt(m("channel"))} |`);
console.log(`| request/reply, fresh MessageChannel per request, port transferred (${REQUESTS}) | ${fmt(m("port"))} |`);
console.log(`\nchannel per request vs MessageChannel per request: ${(m("port") / m("channel")).toFixed(2)}x the requests per second`);
console.log(`peak RSS ${(process.memoryUsage().rss / 1e6).toFixed(0)} MB`);
