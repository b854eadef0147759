/**
 * `node dist/bench/ceiling.js`: what this machine allows at all, measured
 * without the library. Two workers move 64-byte records through a minimal
 * single-producer single-consumer ring in a SharedArrayBuffer (one writer
 * per index, cached remote index, no locks, no waiting, no codec, no
 * checks), with room for 1, 64 and 800 records; and two workers ping-pong
 * one Int32 (the smallest possible round trip). Not part of `npm run bench`'s
 * table: a reference for reading it (a capacity-1 channel cannot beat the
 * 1-slot ring, whatever it does).
 */
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";

const RECORD = 16 + 64;
const DURATION_MS = 500;

interface RingJob {
  kind: "ring";
  role: "producer" | "consumer";
  sab: SharedArrayBuffer;
  slots: number;
}
interface PingJob {
  kind: "ping";
  role: "a" | "b";
  sab: SharedArrayBuffer;
}

function producer(job: RingJob): void {
  const size = job.slots * RECORD;
  const control = new Int32Array(job.sab, 0, 64); // [0] tail (bytes written), [16] head (bytes freed), [32] stop
  const words = new Int32Array(job.sab, 256, size / 4);
  const data = new Uint8Array(job.sab, 256, size);
  const payload = new Uint8Array(64).fill(7);
  let tail = 0;
  let knownHead = 0;
  let seq = 0;
  const start = performance.now();
  for (let i = 1; ; i++) {
    if (tail - knownHead + RECORD > size) {
      knownHead = Atomics.load(control, 16);
      if (tail - knownHead + RECORD > size) continue;
    }
    const at = tail % size;
    words[at >> 2] = 64;
    words[(at >> 2) + 1] = seq++;
    data.set(payload, at + 16);
    tail += RECORD;
    Atomics.store(control, 0, tail);
    if ((i & 1023) === 0 && performance.now() - start > DURATION_MS) break;
  }
  Atomics.store(control, 32, 1);
}

function consumer(job: RingJob): { messages: number; ms: number } {
  const size = job.slots * RECORD;
  const control = new Int32Array(job.sab, 0, 64);
  const words = new Int32Array(job.sab, 256, size / 4);
  const data = new Uint8Array(job.sab, 256, size);
  let head = 0;
  let knownTail = 0;
  let messages = 0;
  let start = 0;
  for (;;) {
    if (head === knownTail) {
      knownTail = Atomics.load(control, 0);
      if (head === knownTail) {
        if (Atomics.load(control, 32) === 1 && head === Atomics.load(control, 0)) break;
        continue;
      }
    }
    if (messages === 0) start = performance.now();
    const at = head % size;
    if (words[(at >> 2) + 1] !== messages) throw new Error(`record ${messages} out of order`);
    const copy = data.slice(at + 16, at + 16 + words[at >> 2]!); // the receiver's own copy, as a channel gives
    if (copy.length !== 64) throw new Error("bad length");
    head += RECORD;
    messages++;
    Atomics.store(control, 16, head);
  }
  return { messages, ms: performance.now() - start };
}

function ping(job: PingJob): { p50us: number } | undefined {
  const word = new Int32Array(job.sab);
  const rounds = 200_000;
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

if (isMainThread) {
  for (const slots of [1, 64, 800]) {
    const sab = new SharedArrayBuffer(256 + slots * RECORD);
    const [result] = await Promise.all([
      run<{ messages: number; ms: number }>({ kind: "ring", role: "consumer", sab, slots }),
      run<void>({ kind: "ring", role: "producer", sab, slots }),
    ]);
    console.log(`ideal ring, ${slots} slot(s), 64-byte records: ${((result.messages / result.ms) * 1000 / 1e6).toFixed(2)} M msgs/s`);
  }
  const sab = new SharedArrayBuffer(128);
  const [a] = await Promise.all([run<{ p50us: number }>({ kind: "ping", role: "a", sab }), run<void>({ kind: "ping", role: "b", sab })]);
  console.log(`ideal round trip (one Int32 ping-pong, spinning): p50 ${a.p50us.toFixed(2)} µs`);
} else {
  const job = workerData as RingJob | PingJob;
  if (job.kind === "ping") parentPort!.postMessage(ping(job));
  else if (job.role === "consumer") parentPort!.postMessage(consumer(job));
  else {
    producer(job);
    parentPort!.postMessage(undefined);
  }
}
