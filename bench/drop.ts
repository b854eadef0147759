/**
 * Dropping overflow policies under a producer about 10x faster than its
 * consumer: memory stays flat (the channel holds at most `capacity`
 * messages, whatever the producer does) and the drop count is exact
 * (received + dropped = sent, checked message by message).
 *
 *   node dist/bench/drop.js --overflow drop-oldest|drop-newest [--capacity 64]
 *
 * The producer sends 16 KiB messages with sendSync as fast as it can for a
 * fixed time; the consumer checks each message (a strictly increasing
 * sequence number) and then works ~10x longer than a send takes (it spins
 * on the clock for 10x the producer's measured per-send time). The main
 * thread samples RSS every 10 ms; growth = peak - baseline.
 */
import { create, createChannel } from "../src/index.js";
import { MiB, parseCapacity, phase, runChild, sized } from "./lib/common.js";

const SIDE = new URL("./lib/drop-side.js", import.meta.url);

runChild(async (args) => {
  const overflow = (args.overflow ?? "drop-oldest") as "drop-oldest" | "drop-newest";
  const capacity = parseCapacity(args.capacity ?? "64");
  const seconds = sized(2, 0.3);
  phase("create interpreters");
  const [producer, consumer] = await Promise.all([create({ name: "producer" }), create({ name: "consumer" })]);
  const [rx, tx] = createChannel<Uint8Array>({ capacity, overflow, name: `drop(${overflow})` });
  const stats = rx.clone();
  const baseline = process.memoryUsage().rss;
  let peak = baseline;
  const sampler = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 10);
  phase("run");
  const [sent, got] = await Promise.all([
    producer.call<{ sent: number; sendNs: number }>(SIDE, "produce", tx, seconds),
    consumer.call<{ received: number; outOfOrder: number; workNs: number }>(SIDE, "consume", rx),
  ]);
  clearInterval(sampler);
  const s = stats.stats();
  stats.close();
  phase("terminate");
  await Promise.all([producer.terminate(), consumer.terminate()]);
  const metrics = {
    rssGrowthMiB: (peak - baseline) / MiB,
    sent: sent.sent,
    received: got.received,
    dropped: s.dropped,
    speedRatio: got.workNs / sent.sendNs,
    msgsPerSec: got.received / seconds,
  };
  let error: string | undefined;
  if (got.outOfOrder !== 0) error = `${got.outOfOrder} messages out of order`;
  else if (got.received + s.dropped !== sent.sent) error = `received ${got.received} + dropped ${s.dropped} != sent ${sent.sent}`;
  else if (s.sent !== sent.sent) error = `stats().sent ${s.sent} != ${sent.sent}`;
  const notes = `${sent.sent} sent, ${got.received} received, ${s.dropped} dropped (exact: received + dropped = sent); consumer works ${metrics.speedRatio.toFixed(1)}x a send; RSS +${metrics.rssGrowthMiB.toFixed(1)} MiB (ring: ${capacity} x 16 KiB)`;
  return { metrics, notes, error };
});
