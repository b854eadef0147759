/**
 * P7: a producer far faster than its consumer. The producer sends N
 * 16 KiB Uint8Arrays as fast as it can; the consumer checks each and then
 * sleeps `workMicros` (Atomics.wait timeout: a consumer waiting on I/O). lib: a channel of capacity 64 (sendSync
 * blocks when 64 are buffered). pm: postMessage over a MessageChannel (no
 * backpressure: the backlog queues up in the port).
 *
 *   node dist/bench/memory.js --system lib|pm
 *
 * The main thread samples process RSS (and, for lib, the channel's stats)
 * every 10 ms; growth = peak - baseline, where the baseline is taken once
 * both sides are started and waiting. Both workers report the max of
 * v8.getHeapStatistics() of their own isolate.
 */
import { MessageChannel } from "node:worker_threads";
import { create, createChannel } from "../src/index.js";
import { MiB, count, phase, runChild, sleep } from "./lib/common.js";
import type { ConsumerReport, MemOptions, ProducerReport } from "./lib/interp-side.js";
import { payloadFor } from "./lib/payload.js";
import { startPm } from "./lib/pm.js";

const INTERP_SIDE = new URL("./lib/interp-side.js", import.meta.url);
const CAPACITY = 64;

runChild(async (args) => {
  const system = args.system ?? "lib";
  const opts: MemOptions = { kind: "kib16", messages: count(8000, 800), workMicros: 50 };
  const payload = payloadFor(opts.kind);
  let peakRss = 0;
  let peakBytes = 0;
  let peakLength = 0;
  let baseline = 0;
  let sampler: NodeJS.Timeout | undefined;
  let sampleStats: () => void = () => {};
  const startSampling = (): void => {
    baseline = process.memoryUsage.rss();
    peakRss = baseline;
    sampler = setInterval(() => {
      peakRss = Math.max(peakRss, process.memoryUsage.rss());
      sampleStats();
    }, 10);
  };

  let prod: ProducerReport;
  let cons: ConsumerReport;
  let started: number;
  if (system === "lib") {
    phase("create interpreters");
    const [p, c] = await Promise.all([create({ name: "producer" }), create({ name: "consumer" })]);
    const [rx, tx] = createChannel({ capacity: CAPACITY, name: "backpressured" });
    const [goRx, goTx] = createChannel({ capacity: 1, name: "go" });
    const watch = tx.clone();
    sampleStats = () => {
      const s = watch.stats();
      peakBytes = Math.max(peakBytes, s.bytes);
      peakLength = Math.max(peakLength, s.length);
    };
    const producing = p.call<ProducerReport>(INTERP_SIDE, "memProducer", tx, goRx, { ...opts });
    const consuming = c.call<ConsumerReport>(INTERP_SIDE, "memConsumer", rx, { ...opts });
    producing.catch(() => {});
    consuming.catch(() => {});
    phase("wait until both wait");
    while (watch.stats().waitingReceivers < 1 || goTx.stats().waitingReceivers < 1) await sleep(5);
    await sleep(50);
    startSampling();
    started = performance.now();
    phase("run");
    await goTx.send(1);
    [prod, cons] = await Promise.all([producing, consuming]);
    watch.close();
    phase("terminate");
    await Promise.all([p.terminate(), c.terminate()]);
  } else {
    phase("start workers");
    const { port1, port2 } = new MessageChannel();
    const c = startPm<ConsumerReport>("mem-consumer", opts, port2);
    const p = startPm<ProducerReport>("mem-producer", opts, port1);
    await Promise.all([c.ready, p.ready]);
    await sleep(50);
    startSampling();
    started = performance.now();
    phase("run");
    p.worker.postMessage("go");
    [prod, cons] = await Promise.all([p.result, c.result]);
    phase("terminate");
    await Promise.all([p.terminate(), c.terminate()]);
  }
  const wallMs = performance.now() - started;
  clearInterval(sampler);
  peakRss = Math.max(peakRss, process.memoryUsage.rss());
  const growthMiB = (peakRss - baseline) / MiB;
  // The most a capacity-64 ring must hold: 64 records of payload + header, x2 for growth by doubling.
  const ringBoundMiB = (2 * CAPACITY * (payload.bytes + 64)) / MiB;
  const metrics: Record<string, number> = {
    rssGrowthMiB: growthMiB,
    ringBoundMiB,
    producerLoopMs: prod.loopMs,
    consumerMs: cons.ms,
    wallMs,
    producerHeapMiB: prod.heapMax.usedHeap / MiB,
    consumerHeapMiB: cons.heapMax.usedHeap / MiB,
    consumerExternalMiB: cons.heapMax.external / MiB,
    producerHeapTotalMiB: prod.heapMax.totalHeap / MiB,
    consumerHeapTotalMiB: cons.heapMax.totalHeap / MiB,
  };
  if (system === "lib") {
    metrics.peakRingBytes = peakBytes;
    metrics.peakLength = peakLength;
  }
  const mib = (n: number): string => (n / MiB).toFixed(1);
  const heaps = `v8 heap used/total max: producer ${mib(prod.heapMax.usedHeap)}/${mib(prod.heapMax.totalHeap)} MiB, consumer ${mib(cons.heapMax.usedHeap)}/${mib(cons.heapMax.totalHeap)} MiB (consumer external ${mib(cons.heapMax.external)} MiB)`;
  const ring = system === "lib" ? `; peak buffered ${peakLength} msgs / ${(peakBytes / 1024).toFixed(0)} KiB` : "";
  const notes = `${cons.received} x 16 KiB checked, consumer sleeps ${opts.workMicros} µs/msg; producer loop ${prod.loopMs.toFixed(0)} ms, consumer ${cons.ms.toFixed(0)} ms; ${heaps}${ring}`;
  let error: string | undefined;
  if (cons.bad !== 0) error = `consumer found ${cons.bad} wrong messages`;
  else if (cons.received !== prod.sent) error = `sent ${prod.sent} but received ${cons.received}`;
  else if (system === "lib" && peakLength > CAPACITY) error = `capacity ${CAPACITY} but ${peakLength} messages were buffered`;
  return { metrics, notes, error };
});
