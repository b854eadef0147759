/**
 * `node dist/bench/minimal.js`: the same messages moved between two threads
 * with almost nothing else done, no library, in the same run as the rest
 * (`npm run bench` runs it in every repetition, round-robin with the other
 * rows, and shows each P1 target against it). A reference, not a hard
 * bound: it publishes both indices for every message, and when the two
 * vCPUs sit far apart (cross-core traffic is then slow, and this host
 * moves between such states within minutes) a channel that caches the
 * other side's counter can beat it. When they sit close, nothing with
 * locks, waits and checks comes near it.
 *
 * Two workers move records through a minimal single-producer
 * single-consumer ring in a SharedArrayBuffer: one writer per index, the
 * other side's index cached, no locks, no waiting (both spin), no codec,
 * no bounds checks, no death safety. The work per message is the P1/P5
 * workloads' own (payload.ts): the producer makes message `seq` and copies
 * it into the ring; the consumer copies it out into a fresh Uint8Array
 * (what a channel must give its receiver) and checks it.
 *
 * - ring1, ring64, ring800: 64-byte messages with room for 1, 64 and 800
 *   records (msgs/s): the bounds the P1 targets are read against. A
 *   capacity-0 or capacity-1 channel has one message in flight, like the
 *   1-slot ring; a capacity-64 channel compares with the 64-slot ring;
 *   ring800 stands for an unbounded one.
 * - mibMBps: 1 MiB messages (filled whole before each send), 64 slots.
 *   For reference only, not a bound: it swings 2-7 GB/s between runs
 *   minutes apart, with how the receiver's fresh 1 MiB arrays are paged in.
 * - rttP50us: two workers ping-pong one Int32, spinning: the smallest round trip.
 */
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import { payloadFor, type PayloadKind } from "./lib/payload.js";
import { phase, runChild, sized } from "./lib/common.js";

const RECORD_HEADER = 16;
const DURATION_MS = sized(0.5, 0.05) * 1000;
/** The producer runs this much longer; the consumer's clock starts after the first warmUpMessages (as in oneway.ts). */
const WARMUP_MS = sized(0.15, 0.02) * 1000;
const warmUpMessages = (payload: PayloadKind): number => (payload === "mib" ? 50 : 20_000);
/** Control words: [0] bytes written, [16] bytes freed, [32] stop (each on its own 64-byte line). */
const CONTROL_BYTES = 256;

interface RingJob {
  kind: "ring";
  role: "producer" | "consumer";
  sab: SharedArrayBuffer;
  payload: PayloadKind;
  /** Bytes per record (header + payload, a multiple of 8). */
  record: number;
  slots: number;
}
interface PingJob {
  kind: "ping";
  role: "a" | "b";
  sab: SharedArrayBuffer;
}

function producer(job: RingJob): void {
  const size = job.slots * job.record;
  const control = new Int32Array(job.sab, 0, CONTROL_BYTES / 4);
  const words = new Int32Array(job.sab, CONTROL_BYTES, size / 4);
  const data = new Uint8Array(job.sab, CONTROL_BYTES, size);
  const payload = payloadFor(job.payload);
  // Byte counters wrap at 2^32 like the channel's (| 0); `at` is the write position in the ring.
  let tail = 0;
  let knownHead = 0;
  let at = 0;
  let seq = 0;
  const start = performance.now();
  for (let i = 1; ; i++) {
    if (((tail - knownHead) | 0) + job.record > size) {
      knownHead = Atomics.load(control, 16);
      if (((tail - knownHead) | 0) + job.record > size) continue;
    }
    const message = payload.make(seq) as Uint8Array;
    words[at >> 2] = message.length;
    words[(at >> 2) + 1] = seq++;
    data.set(message, at + RECORD_HEADER);
    at += job.record;
    if (at === size) at = 0;
    tail = (tail + job.record) | 0;
    Atomics.store(control, 0, tail);
    if ((job.payload === "mib" || (i & 1023) === 0) && performance.now() - start > DURATION_MS + WARMUP_MS) break;
  }
  Atomics.store(control, 32, 1);
}

function consumer(job: RingJob): { messages: number; ms: number; bad: number } {
  const size = job.slots * job.record;
  const control = new Int32Array(job.sab, 0, CONTROL_BYTES / 4);
  const words = new Int32Array(job.sab, CONTROL_BYTES, size / 4);
  const data = new Uint8Array(job.sab, CONTROL_BYTES, size);
  const payload = payloadFor(job.payload);
  let head = 0;
  let knownTail = 0;
  let at = 0;
  let messages = 0;
  let bad = 0;
  let start = 0;
  const warm = warmUpMessages(job.payload);
  for (;;) {
    if (head === knownTail) {
      knownTail = Atomics.load(control, 0);
      if (head === knownTail) {
        if (Atomics.load(control, 32) === 1 && head === Atomics.load(control, 0)) break;
        continue;
      }
    }
    if (messages === warm) start = performance.now();
    if (words[(at >> 2) + 1] !== messages) throw new Error(`record ${messages} out of order`);
    const from = at + RECORD_HEADER;
    const copy = data.slice(from, from + words[at >> 2]!); // the receiver's own copy, as a channel gives
    if (!payload.check(copy, messages)) bad++;
    at += job.record;
    if (at === size) at = 0;
    head = (head + job.record) | 0;
    messages++;
    Atomics.store(control, 16, head);
  }
  if (messages <= warm) throw new Error(`minimal ring (${job.payload}): only ${messages} messages, none after the warm-up`);
  return { messages: messages - warm, ms: performance.now() - start, bad };
}

function ping(job: PingJob): { p50us: number } | undefined {
  const word = new Int32Array(job.sab);
  const rounds = Math.round(sized(200_000, 2000));
  if (job.role === "b") {
    for (let i = 1; i <= rounds; i++) {
      while (Atomics.load(word, 0) !== i);
      Atomics.store(word, 16, i);
    }
    return undefined;
  }
  const took = new Float64Array(rounds);
  for (let i = 1; i <= rounds; i++) {
    const t = performance.now();
    Atomics.store(word, 0, i);
    while (Atomics.load(word, 16) !== i);
    took[i - 1] = performance.now() - t;
  }
  took.sort();
  return { p50us: took[rounds >> 1]! * 1000 };
}

function run<T>(job: RingJob | PingJob): Promise<T> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL(import.meta.url), { workerData: job });
    worker.once("message", resolve);
    worker.once("error", reject);
  });
}

/** Messages per second (and payload MB/s) through a minimal ring of `slots` records. */
async function ring(payload: PayloadKind, slots: number): Promise<{ msgsPerSec: number; MBps: number }> {
  const bytes = payloadFor(payload).bytes;
  const record = RECORD_HEADER + ((bytes + 7) & ~7);
  const sab = new SharedArrayBuffer(CONTROL_BYTES + slots * record);
  const [result] = await Promise.all([
    run<{ messages: number; ms: number; bad: number }>({ kind: "ring", role: "consumer", sab, payload, record, slots }),
    run<void>({ kind: "ring", role: "producer", sab, payload, record, slots }),
  ]);
  if (result.bad !== 0) throw new Error(`minimal ring (${payload}, ${slots} slots): ${result.bad} wrong messages`);
  const msgsPerSec = (result.messages / result.ms) * 1000;
  return { msgsPerSec, MBps: (msgsPerSec * bytes) / 1e6 };
}

if (isMainThread) {
  runChild(async () => {
    phase("rings");
    const ring1 = await ring("bytes64", 1);
    const ring64 = await ring("bytes64", 64);
    const ring800 = await ring("bytes64", 800);
    const mib = await ring("mib", 64);
    phase("ping");
    const sab = new SharedArrayBuffer(128);
    const [a] = await Promise.all([run<{ p50us: number }>({ kind: "ping", role: "a", sab }), run<void>({ kind: "ping", role: "b", sab })]);
    const metrics = { ring1: ring1.msgsPerSec, ring64: ring64.msgsPerSec, ring800: ring800.msgsPerSec, mibMBps: mib.MBps, rttP50us: a.p50us };
    const m = (v: number): string => `${(v / 1e6).toFixed(2)} M`;
    const notes = `minimal ring, 64-byte messages: 1 slot ${m(ring1.msgsPerSec)}, 64 slots ${m(ring64.msgsPerSec)}, 800 slots ${m(ring800.msgsPerSec)} msgs/s; 1 MiB messages, 64 slots: ${mib.MBps.toFixed(0)} MB/s; Int32 ping-pong p50 ${a.p50us.toFixed(2)} µs`;
    return { metrics, notes };
  });
} else {
  const job = workerData as RingJob | PingJob;
  if (job.kind === "ping") parentPort!.postMessage(ping(job));
  else if (job.role === "consumer") parentPort!.postMessage(consumer(job));
  else {
    producer(job);
    parentPort!.postMessage(undefined);
  }
}
