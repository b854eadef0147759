/**
 * Code that runs INSIDE interpreters (loaded there with `interp.call(url,
 * name, ...ends)`; the channel ends passed as arguments move in). Every
 * function returns a small plain object that crosses back as the call's
 * result, so the main thread only awaits (stays idle) while they run.
 *
 * The postMessage twins of these loops are in pm-worker.ts; both use the
 * payloads of payload.ts so that the work per message is the same.
 */
import { getHeapStatistics } from "node:v8";
import type { RecvChannel, SendChannel } from "../../src/index.js";
import { batchFor, payloadFor, type PayloadKind } from "./payload.js";
import { nowNs, summarize } from "./common.js";

export interface HeapSample {
  usedHeap: number;
  totalHeap: number;
  external: number;
  malloced: number;
}

export function heapNow(): HeapSample {
  const h = getHeapStatistics();
  return { usedHeap: h.used_heap_size, totalHeap: h.total_heap_size, external: h.external_memory, malloced: h.malloced_memory };
}

export function maxHeap(a: HeapSample, b: HeapSample): HeapSample {
  return {
    usedHeap: Math.max(a.usedHeap, b.usedHeap),
    totalHeap: Math.max(a.totalHeap, b.totalHeap),
    external: Math.max(a.external, b.external),
    malloced: Math.max(a.malloced, b.malloced),
  };
}

// ---------------------------------------------------------------- one-way (P1, P2, P5)

export interface OnewayOptions {
  kind: PayloadKind;
  /** Warm-up: at most this many messages... */
  warmup: number;
  /** ...and at most this long (then an end-of-warm-up marker; the receiver acks it). */
  warmupSeconds: number;
  seconds: number;
}

export interface SendReport {
  sent: number;
  t0: number;
  tLoopEnd: number;
  rssBefore: number;
  rssAfterLoop: number;
}

export interface RecvReport {
  received: number;
  bad: number;
  tEnd: number;
  warmedUp: number;
}

/**
 * Warms up (up to `warmup` messages or `warmupSeconds`, then the warm-up
 * marker), waits for the receiver's ack (it has them all),
 * then sends for `seconds` (clock checked every batch), then the end marker.
 */
export function onewaySend(tx: SendChannel<unknown>, ack: RecvChannel<unknown>, opts: OnewayOptions): SendReport {
  const payload = payloadFor(opts.kind);
  const batch = batchFor(opts.kind);
  const warmDeadline = nowNs() + opts.warmupSeconds * 1e9;
  for (let i = 0; i < opts.warmup && ((i & 63) !== 63 || nowNs() < warmDeadline); i++) tx.sendSync(payload.make(i));
  tx.sendSync(payload.warmEnd);
  ack.recvSync();
  const rssBefore = process.memoryUsage().rss;
  const t0 = nowNs();
  const deadline = t0 + opts.seconds * 1e9;
  let seq = 0;
  do {
    for (let k = 0; k < batch; k++) tx.sendSync(payload.make(seq++));
  } while (nowNs() < deadline);
  const tLoopEnd = nowNs();
  const rssAfterLoop = process.memoryUsage().rss;
  tx.sendSync(payload.end);
  return { sent: seq, t0, tLoopEnd, rssBefore, rssAfterLoop };
}

export function onewayRecv(rx: RecvChannel<unknown>, ack: SendChannel<unknown>, opts: OnewayOptions): RecvReport {
  const payload = payloadFor(opts.kind);
  let bad = 0;
  let warmedUp = 0;
  for (;;) {
    const value = rx.recvSync();
    if (payload.isWarmEnd(value)) break;
    if (!payload.check(value, warmedUp)) bad++;
    warmedUp++;
  }
  ack.sendSync(1);
  let n = 0;
  for (;;) {
    const value = rx.recvSync();
    if (payload.isEnd(value)) break;
    if (!payload.check(value, n)) bad++;
    n++;
  }
  const tEnd = nowNs();
  return { received: n, bad, tEnd, warmedUp };
}

/**
 * The batched twin of onewaySend: the same messages and markers, sent
 * `opts.batch` at a time with sendManySync (each message a fresh copy: a
 * batch holds several messages at once, so one reused array will not do).
 */
export function onewaySendMany(tx: SendChannel<unknown>, ack: RecvChannel<unknown>, opts: OnewayOptions & { batch: number }): SendReport {
  const payload = payloadFor(opts.kind);
  const copy = (v: unknown): unknown => (v instanceof Uint8Array ? v.slice() : v);
  const batchOf = (from: number): unknown[] => Array.from({ length: opts.batch }, (_, k) => copy(payload.make(from + k)));
  const warmDeadline = nowNs() + opts.warmupSeconds * 1e9;
  for (let i = 0; i < opts.warmup && nowNs() < warmDeadline; i += opts.batch) tx.sendManySync(batchOf(i));
  tx.sendSync(payload.warmEnd);
  ack.recvSync();
  const rssBefore = process.memoryUsage().rss;
  const t0 = nowNs();
  const deadline = t0 + opts.seconds * 1e9;
  let seq = 0;
  do {
    tx.sendManySync(batchOf(seq));
    seq += opts.batch;
  } while (nowNs() < deadline);
  const tLoopEnd = nowNs();
  const rssAfterLoop = process.memoryUsage().rss;
  tx.sendSync(payload.end);
  return { sent: seq, t0, tLoopEnd, rssBefore, rssAfterLoop };
}

/** The batched twin of onewayRecv: recvManySync(batch), every message checked. */
export function onewayRecvMany(rx: RecvChannel<unknown>, ack: SendChannel<unknown>, opts: OnewayOptions & { batch: number }): RecvReport {
  const payload = payloadFor(opts.kind);
  let bad = 0;
  let warmedUp = 0;
  let n = 0;
  let warm = true;
  for (;;) {
    for (const value of rx.recvManySync(opts.batch)) {
      if (warm) {
        if (payload.isWarmEnd(value)) {
          warm = false;
          ack.sendSync(1);
        } else if (!payload.check(value, warmedUp++)) bad++;
        continue;
      }
      if (payload.isEnd(value)) return { received: n, bad, tEnd: nowNs(), warmedUp };
      if (!payload.check(value, n)) bad++;
      n++;
    }
  }
}

/**
 * The same 64-byte messages through ringbuf.js (a lock-free single-producer
 * single-consumer ring over a SharedArrayBuffer, what users would otherwise
 * take): the producer waits for room by spinning, the consumer spins for
 * data (ringbuf.js has no waiting) and pops each message into a fresh
 * Uint8Array, as a channel receiver gets one; the same checks and markers.
 */
export async function ringbufSend(sab: SharedArrayBuffer, opts: OnewayOptions): Promise<SendReport> {
  const { RingBuffer } = await import("ringbuf.js");
  const ring = new RingBuffer(sab, Uint8Array);
  const payload = payloadFor(opts.kind);
  const push = (message: unknown): void => {
    const bytes = message as Uint8Array;
    const framed = framedOf(bytes);
    while (ring.availableWrite() < framed.length) {
      /* spin: ringbuf.js has no way to wait */
    }
    ring.push(framed);
  };
  const warmDeadline = nowNs() + opts.warmupSeconds * 1e9;
  for (let i = 0; i < opts.warmup && ((i & 63) !== 63 || nowNs() < warmDeadline); i++) push(payload.make(i));
  push(payload.warmEnd);
  const rssBefore = process.memoryUsage().rss;
  const t0 = nowNs();
  const deadline = t0 + opts.seconds * 1e9;
  let seq = 0;
  do {
    for (let k = 0; k < 256; k++) push(payload.make(seq++));
  } while (nowNs() < deadline);
  const tLoopEnd = nowNs();
  const rssAfterLoop = process.memoryUsage().rss;
  push(payload.end);
  return { sent: seq, t0, tLoopEnd, rssBefore, rssAfterLoop };
}

/** A message framed for ringbuf.js: one length byte, then the bytes (the markers are 0 and 1 bytes long). */
const frame = new Uint8Array(65);
function framedOf(bytes: Uint8Array): Uint8Array {
  frame[0] = bytes.length;
  frame.set(bytes, 1);
  return frame.subarray(0, 1 + bytes.length);
}

export async function ringbufRecv(sab: SharedArrayBuffer, opts: OnewayOptions): Promise<RecvReport> {
  const { RingBuffer } = await import("ringbuf.js");
  const ring = new RingBuffer(sab, Uint8Array);
  const payload = payloadFor(opts.kind);
  const length = new Uint8Array(1);
  const pop = (): Uint8Array => {
    while (ring.availableRead() < 1) {
      /* spin */
    }
    ring.pop(length);
    const message = new Uint8Array(length[0]!);
    while (ring.availableRead() < message.length) {
      /* spin: the producer writes a frame whole, but be safe */
    }
    if (message.length > 0) ring.pop(message);
    return message;
  };
  let bad = 0;
  let warmedUp = 0;
  for (;;) {
    const value = pop();
    if (payload.isWarmEnd(value)) break;
    if (!payload.check(value, warmedUp)) bad++;
    warmedUp++;
  }
  let n = 0;
  for (;;) {
    const value = pop();
    if (payload.isEnd(value)) break;
    if (!payload.check(value, n)) bad++;
    n++;
  }
  return { received: n, bad, tEnd: nowNs(), warmedUp };
}

// ---------------------------------------------------------------- round trips (P3, P4)

export interface RttOptions {
  /** Warm-up: at most this many round trips and at most warmupSeconds. */
  warmup: number;
  warmupSeconds: number;
  seconds: number;
  /** Measure at least this many round trips, even past `seconds`. */
  minSamples: number;
  maxSamples: number;
}

export interface RttReport {
  samples: number;
  p50us: number;
  p99us: number;
  meanus: number;
  maxus: number;
  seconds: number;
  bad: number;
  warmedUp: number;
}

/** The timing side: sends seq, waits for it back, records each round trip; -1 ends the pong side. */
export function rttPing(tx: SendChannel<number>, rx: RecvChannel<number>, opts: RttOptions): RttReport {
  let bad = 0;
  const warmDeadline = performance.now() + opts.warmupSeconds * 1000;
  let warmedUp = 0;
  while (warmedUp < opts.warmup && performance.now() < warmDeadline) {
    tx.sendSync(warmedUp);
    if (rx.recvSync() !== warmedUp) bad++;
    warmedUp++;
  }
  const lat = new Float64Array(opts.maxSamples);
  let n = 0;
  const start = performance.now();
  const deadline = start + opts.seconds * 1000;
  while (n < opts.maxSamples) {
    const t = performance.now();
    tx.sendSync(n);
    const v = rx.recvSync();
    const t2 = performance.now();
    if (v !== n) bad++;
    lat[n++] = t2 - t;
    if (t2 >= deadline && n >= opts.minSamples) break;
  }
  const seconds = (performance.now() - start) / 1000;
  tx.sendSync(-1);
  return { ...summarize(lat, n), seconds, bad, warmedUp };
}

/** Echoes every number until -1. Returns how many it echoed. */
export function echo(rx: RecvChannel<number>, tx: SendChannel<number>): number {
  let n = 0;
  for (;;) {
    const v = rx.recvSync();
    if (v === -1) return n;
    tx.sendSync(v);
    n++;
  }
}

// ---------------------------------------------------------------- tiny tasks (P6)

export interface TaskRequest {
  id: number;
  x: number;
}
export interface TaskReply {
  id: number;
  r: number;
}

/** The task itself (the pools run the same function: pool-task.ts). */
export function task(x: number): number {
  return x * 2 + 1;
}

/** Serves requests until the request channel is closed and drained; returns how many it served. */
export function taskServer(requests: RecvChannel<TaskRequest>, replies: SendChannel<TaskReply>): number {
  let served = 0;
  for (const req of requests) {
    replies.sendSync({ id: req.id, r: task(req.x) });
    served++;
  }
  replies.close();
  return served;
}

// ---------------------------------------------------------------- backpressure memory (P7)

export interface MemOptions {
  kind: PayloadKind;
  messages: number;
  /** Time the consumer sleeps per message, microseconds. */
  workMicros: number;
}

export interface ProducerReport {
  sent: number;
  loopMs: number;
  heapAfterLoop: HeapSample;
  heapMax: HeapSample;
}

export interface ConsumerReport {
  received: number;
  bad: number;
  ms: number;
  heapMax: HeapSample;
}

const napWord = new Int32Array(new SharedArrayBuffer(4));
/**
 * The slow consumer's per-message "work": sleeps `micros` (Atomics.wait
 * with a timeout; in practice 60-300 µs), like a consumer waiting on I/O.
 * Sleeping rather than spinning keeps the two cores for the two systems.
 */
export function work(micros: number): void {
  Atomics.wait(napWord, 0, 0, micros / 1000);
}

export function memProducer(tx: SendChannel<unknown>, go: RecvChannel<unknown>, opts: MemOptions): ProducerReport {
  const payload = payloadFor(opts.kind);
  go.recvSync();
  let heapMax = heapNow();
  const t0 = performance.now();
  for (let i = 0; i < opts.messages; i++) {
    tx.sendSync(payload.make(i));
    if ((i & 255) === 255) heapMax = maxHeap(heapMax, heapNow());
  }
  const loopMs = performance.now() - t0;
  const heapAfterLoop = heapNow();
  tx.sendSync(payload.end);
  return { sent: opts.messages, loopMs, heapAfterLoop, heapMax: maxHeap(heapMax, heapAfterLoop) };
}

export function memConsumer(rx: RecvChannel<unknown>, opts: MemOptions): ConsumerReport {
  const payload = payloadFor(opts.kind);
  let bad = 0;
  let n = 0;
  let heapMax = heapNow();
  const t0 = performance.now();
  for (;;) {
    const value = rx.recvSync();
    if (payload.isEnd(value)) break;
    if (!payload.check(value, n)) bad++;
    work(opts.workMicros);
    n++;
    if ((n & 63) === 0) heapMax = maxHeap(heapMax, heapNow());
  }
  return { received: n, bad, ms: performance.now() - t0, heapMax: maxHeap(heapMax, heapNow()) };
}

// ---------------------------------------------------------------- idle receiver (P8)

/** Blocks in recvSync (nothing is sent until the measurement is over); returns what arrived. */
export function idleRecv(rx: RecvChannel<string>): string {
  return rx.recvSync();
}
