/**
 * The postMessage side of every comparison: a plain worker_threads Worker
 * that plays one role, talking over a MessageChannel port it was given
 * (worker->worker rows) or over parentPort (main<->worker rows). Results
 * go to parentPort as one message `{ result }`.
 *
 * Same payloads and checks as interp-side.ts (payload.ts).
 */
import { parentPort, workerData, type MessagePort } from "node:worker_threads";
import { heapNow, maxHeap, work, type HeapSample, type MemOptions, type OnewayOptions, type RttOptions } from "./interp-side.js";
import { batchFor, payloadFor } from "./payload.js";
import { nowNs, summarize } from "./common.js";

const parent = parentPort!;
const data = workerData as { role: string; port?: MessagePort; opts: unknown };

// Stay alive until the benchmark terminates this worker: a worker that has
// posted its result must not exit (and close its port) while a message it
// sent may still be queued on the other side.
setInterval(() => {}, 1 << 30);

function done(result: unknown): void {
  parent.postMessage({ result });
}

function nextMessage(port: MessagePort | typeof parent): Promise<unknown> {
  return new Promise((resolve) => port.once("message", resolve));
}

async function onewaySend(port: MessagePort, opts: OnewayOptions): Promise<void> {
  const payload = payloadFor(opts.kind);
  const batch = batchFor(opts.kind);
  const acked = nextMessage(port);
  const warmDeadline = nowNs() + opts.warmupSeconds * 1e9;
  for (let i = 0; i < opts.warmup && ((i & 63) !== 63 || nowNs() < warmDeadline); i++) port.postMessage(payload.make(i));
  port.postMessage(payload.warmEnd);
  await acked;
  const rssBefore = process.memoryUsage().rss;
  const t0 = nowNs();
  const deadline = t0 + opts.seconds * 1e9;
  let seq = 0;
  // No backpressure: the whole loop runs synchronously, the backlog sits in the port.
  do {
    for (let k = 0; k < batch; k++) port.postMessage(payload.make(seq++));
  } while (nowNs() < deadline);
  const tLoopEnd = nowNs();
  const rssAfterLoop = process.memoryUsage().rss;
  port.postMessage(payload.end);
  done({ sent: seq, t0, tLoopEnd, rssBefore, rssAfterLoop });
}

function onewayRecv(port: MessagePort, opts: OnewayOptions): void {
  const payload = payloadFor(opts.kind);
  let bad = 0;
  let warmedUp = 0;
  let warming = true;
  let n = 0;
  port.on("message", (value: unknown) => {
    if (warming) {
      if (payload.isWarmEnd(value)) {
        warming = false;
        port.postMessage("ack");
      } else if (!payload.check(value, warmedUp++)) bad++;
      return;
    }
    if (payload.isEnd(value)) {
      const tEnd = nowNs();
      done({ received: n, bad, tEnd, warmedUp });
      port.close();
      return;
    }
    if (!payload.check(value, n)) bad++;
    n++;
  });
}

/** Ping over `port` (worker<->worker) or parentPort is not used here: P4's pm ping side is the main thread. */
function ping(port: MessagePort, opts: RttOptions): void {
  let bad = 0;
  let warm = 0;
  let warming = true;
  const warmDeadline = performance.now() + opts.warmupSeconds * 1000;
  const lat = new Float64Array(opts.maxSamples);
  let n = 0;
  let start = 0;
  let deadline = 0;
  let t = 0;
  port.on("message", (v: unknown) => {
    const t2 = performance.now();
    if (warming) {
      if (v !== warm) bad++;
      warm++;
      if (warm >= opts.warmup || t2 >= warmDeadline) {
        warming = false;
        start = performance.now();
        deadline = start + opts.seconds * 1000;
        t = performance.now();
        port.postMessage(0);
      } else port.postMessage(warm);
      return;
    }
    if (v !== n) bad++;
    lat[n++] = t2 - t;
    if ((t2 >= deadline && n >= opts.minSamples) || n >= opts.maxSamples) {
      const seconds = (performance.now() - start) / 1000;
      port.postMessage(-1);
      done({ ...summarize(lat, n), seconds, bad, warmedUp: warm });
      port.close();
      return;
    }
    t = performance.now();
    port.postMessage(n);
  });
  port.postMessage(0);
}

function pong(port: MessagePort): void {
  let n = 0;
  port.on("message", (v: unknown) => {
    if (v === -1) {
      done(n);
      port.close();
      return;
    }
    port.postMessage(v);
    n++;
  });
}

function echoParent(): void {
  parent.on("message", (v: unknown) => parent.postMessage(v));
  parent.postMessage("ready");
}

async function memProducer(port: MessagePort, opts: MemOptions): Promise<void> {
  const payload = payloadFor(opts.kind);
  parent.postMessage("ready");
  await nextMessage(parent);
  let heapMax: HeapSample = heapNow();
  const t0 = performance.now();
  for (let i = 0; i < opts.messages; i++) {
    port.postMessage(payload.make(i));
    if ((i & 255) === 255) heapMax = maxHeap(heapMax, heapNow());
  }
  const loopMs = performance.now() - t0;
  const heapAfterLoop = heapNow();
  port.postMessage(payload.end);
  done({ sent: opts.messages, loopMs, heapAfterLoop, heapMax: maxHeap(heapMax, heapAfterLoop) });
}

function memConsumer(port: MessagePort, opts: MemOptions): void {
  const payload = payloadFor(opts.kind);
  let bad = 0;
  let n = 0;
  let heapMax = heapNow();
  let t0 = 0;
  port.on("message", (value: unknown) => {
    if (n === 0) t0 = performance.now();
    if (payload.isEnd(value)) {
      done({ received: n, bad, ms: performance.now() - t0, heapMax: maxHeap(heapMax, heapNow()) });
      port.close();
      return;
    }
    if (!payload.check(value, n)) bad++;
    work(opts.workMicros);
    n++;
    if ((n & 63) === 0) heapMax = maxHeap(heapMax, heapNow());
  });
  parent.postMessage("ready");
}

function idle(): void {
  parent.once("message", (v: unknown) => done(v));
  parent.postMessage("ready");
}

switch (data.role) {
  case "oneway-send":
    await onewaySend(data.port!, data.opts as OnewayOptions);
    break;
  case "oneway-recv":
    onewayRecv(data.port!, data.opts as OnewayOptions);
    break;
  case "ping":
    ping(data.port!, data.opts as RttOptions);
    break;
  case "pong":
    pong(data.port!);
    break;
  case "echo":
    echoParent();
    break;
  case "mem-producer":
    await memProducer(data.port!, data.opts as MemOptions);
    break;
  case "mem-consumer":
    memConsumer(data.port!, data.opts as MemOptions);
    break;
  case "idle":
    idle();
    break;
  default:
    throw new Error(`pm-worker: unknown role ${data.role}`);
}
