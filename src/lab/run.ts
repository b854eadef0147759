/**
 * Runs the lab: each scenario at each capacity and overflow policy, in
 * real interpreters (party.ts), measured from the main thread.
 *
 * While a run goes, the main thread samples every millisecond, without
 * taking any channel lock (it reads the channel's header words, as
 * inspect() does): messages begun and received, the channel's length and
 * ring size, the producers' blocked time, and (every 20th sample) the
 * process's RSS. After the run it works out, over a steady window (from
 * the 5% of messages received first to the last send of the first
 * producer to finish):
 * - throughput (messages received per second in the window);
 * - latency from send to receive, p50/p99/p99.9 (every message timed);
 * - mean and peak buffered, peak ring bytes, peak RSS;
 * - the fraction of producer time spent blocked in send;
 * - Little's law: the sampled mean number of messages in the channel
 *   (sends begun, not yet received: buffered ones and those in a blocked
 *   send) against throughput × mean time from send to receive, whose
 *   error is printed on every row;
 * - the prediction of theory.ts where it has one, and a seeded simulation
 *   of the same system (simulate.ts) for every row;
 * - exactly once: every message begun was received, dropped or refused.
 */
import { cpus } from "node:os";
import { configureDeadlockDetection, create, createChannel, type Interpreter } from "../index.js";
import { type ChannelMemory, endOf, H, HEADER_BYTES } from "../internals.js";
import { formatArrival, formatService } from "./distributions.js";
import type { LabOptions, Overflow } from "./options.js";
import {
  absoluteNow,
  CONSUMER_PARTY,
  type ConsumerReport,
  MESSAGE_HEADER_BYTES,
  type PeerReport,
  runMemory,
  RunViews,
  STOP,
  W_CHAINS,
  W_DONE,
  W_HANDLED,
  W_STARTED,
  W_STOP,
} from "./party.js";
import { partySeed } from "./random.js";
import { simulate } from "./simulate.js";
import { littleLawError, predict, type Prediction } from "./theory.js";

const PARTY_MODULE = new URL(`./party.${import.meta.url.endsWith(".ts") ? "ts" : "js"}`, import.meta.url);
/** Most receive records kept per run (16 bytes each). */
const MAX_RECORDS = 4_000_000;
/** Points per queue-length series in the report. */
const QUEUE_POINTS = 300;
/** How long the recv-loop's deadlock detector waits before it acts (ms): short, so a deadlocked run ends soon. */
const RECV_LOOP_DETECTION_MS = 200;

export interface Row {
  capacity: number;
  overflow: Overflow;
  /** Messages received in the run (recv-loop: requests completed). */
  messages: number;
  /** Length of the run, in seconds. */
  seconds: number;
  /** Messages received per second in the steady window. */
  throughput: number;
  predictedThroughput?: number;
  /** Beyond the contract: measured / predicted. */
  ratio?: number;
  /** Beyond the contract: the model and what else it predicts. */
  prediction?: Prediction;
  /** Beyond the contract: the simulation's throughput for the same options and seed. */
  simulatedThroughput?: number;
  latencyUs: { p50: number; p99: number; p999: number; mean: number };
  meanBuffered: number;
  peakBuffered: number;
  peakRingBytes: number;
  peakRssBytes: number;
  senderBlockedFraction: number;
  dropped: number;
  /** Beyond the contract: sends that failed with ChannelFullError (overflow "error"). */
  refused: number;
  deadlock?: { cycle: unknown[]; message?: string; detectedAfterMs?: number };
  /** recv-loop: runs that deadlocked, of `runs`. */
  deadlocks?: number;
  /** recv-loop: messages the two peers handled before a run deadlocked (median over deadlocked runs). */
  handledBeforeDeadlock?: number;
  runs?: number;
  littleLawError: number;
  /**
   * Beyond the contract: the fraction of the run the producers and consumers
   * were off the CPU while they had work to do (other threads had the cores;
   * theory assumes 0). What moves a measurement away from theory on a busy machine.
   */
  offCpuFraction: number;
  /** Beyond the contract: the two sides of Little's law. */
  little: { meanInChannel: number; meanTimeMs: number };
  /** Beyond the contract: queue length over the run, [ms since start, messages buffered]. */
  queue: Array<[number, number]>;
  /** Exactly-once check: messages begun but neither received, dropped nor refused (must be 0), and out of order. */
  lost: number;
  outOfOrder: number;
}

export interface LabResult {
  scenario: string;
  options: Record<string, unknown>;
  rows: Row[];
  /** Combinations not run, and why (e.g. drop-oldest at capacity 0). */
  skipped: string[];
  machine: { cpus: number; node: string; load: number[] };
  startedAt: string;
}

export interface Progress {
  /** Called every ~100 ms and at the end of each run: messages done so far in all runs, the total, and what runs. */
  update(done: number, total: number, label: string): void;
}

/** The lab's channel memory, read without its locks (see the file comment). */
function sampleChannel(memory: ChannelMemory): { length: number; ringBytes: number; dropped: number } {
  const header = memory.header;
  const removed = Atomics.load(header, H.REMOVED);
  const withdrawn = Atomics.load(header, H.WITHDRAWN);
  const admitted = Atomics.load(header, H.SEQ_TAIL);
  return { length: Math.max(0, (admitted - removed - withdrawn) | 0), ringBytes: HEADER_BYTES + Atomics.load(header, H.DATA_SIZE), dropped: memory.dropped };
}

/** Whether this build's channels take an overflow policy (Channels part 2, issue 13). */
export function overflowSupported(policy: Overflow): boolean {
  if (policy === "wait") return true;
  try {
    const [rx, tx] = createChannel({ capacity: 1, overflow: policy } as Parameters<typeof createChannel>[0]);
    const stats = tx.stats() as unknown as Record<string, unknown>;
    rx.close();
    tx.close();
    return stats.overflow === policy;
  } catch {
    return false;
  }
}

function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

interface Sample {
  at: number;
  started: number;
  done: number;
  /** Discarded by the overflow policy so far. */
  dropped: number;
  length: number;
  ringBytes: number;
  blockedMs: number;
  rss: number;
}

/** Samples a run every millisecond until stopped (see the file comment). */
function startSampler(views: RunViews, memories: ChannelMemory[], producers: number, onTick: (s: Sample) => void): { samples: Sample[]; stop(): void } {
  const samples: Sample[] = [];
  let rss = process.memoryUsage.rss();
  let tick = 0;
  const timer = setInterval(() => {
    if (++tick % 20 === 0) rss = process.memoryUsage.rss();
    let length = 0;
    let ringBytes = 0;
    let dropped = 0;
    for (const memory of memories) {
      const c = sampleChannel(memory);
      length += c.length;
      ringBytes += c.ringBytes;
      dropped += c.dropped;
    }
    let blockedMs = 0;
    for (let p = 0; p < producers; p++) blockedMs += views.blockedMs(p);
    // Done before started: a message counted done was counted started before (never fewer in the channel than none).
    const done = Atomics.load(views.words, W_DONE);
    const sample = { at: absoluteNow(), started: Atomics.load(views.words, W_STARTED), done, dropped, length, ringBytes, blockedMs, rss };
    samples.push(sample);
    onTick(sample);
  }, 1);
  return {
    samples,
    stop: () => {
      clearInterval(timer);
      samples.push({ ...samples[samples.length - 1]!, rss: process.memoryUsage.rss() });
    },
  };
}

function downsample(samples: Sample[], t0: number, value: (s: Sample) => number): Array<[number, number]> {
  const step = Math.max(1, Math.ceil(samples.length / QUEUE_POINTS));
  const out: Array<[number, number]> = [];
  for (let i = 0; i < samples.length; i += step) out.push([Math.round((samples[i]!.at - t0) * 10) / 10, value(samples[i]!)]);
  return out;
}

/** Runs one capacity × policy of a pipeline-shaped scenario (pipeline, fan-in, bursty). */
async function runLine(options: LabOptions, capacity: number, overflow: Overflow, run: number, progress: Progress, offset: number, total: number): Promise<Row> {
  const { producers, consumers } = options;
  const records = Math.min(MAX_RECORDS, options.seconds ? Math.ceil(options.seconds * 200_000) : options.messages + 16);
  const shared = runMemory(records);
  const views = new RunViews(shared);
  const channelOptions: Record<string, unknown> = { capacity, name: `lab: capacity ${capacity}, ${overflow}` };
  if (overflow !== "wait") channelOptions.overflow = overflow;
  const [rx, tx] = createChannel<Uint8Array>(channelOptions);
  const memory = endOf(tx)!.memory;
  const probe = rx.clone(); // main's look at stats() at the end (dropped, sent); it never receives
  const interpreters: Interpreter[] = [];
  const label = `${options.scenario}, capacity ${capacity === Infinity ? "Infinity" : capacity}, ${overflow}`;
  try {
    for (let i = 0; i < consumers; i++) interpreters.push(await create({ name: `consumer ${i + 1}` }));
    for (let i = 0; i < producers; i++) interpreters.push(await create({ name: `producer ${i + 1}` }));
    const quotas = Array.from({ length: producers }, (_, i) => (options.seconds ? Infinity : Math.floor(options.messages / producers) + (i < options.messages % producers ? 1 : 0)));
    const expected = options.seconds ? Infinity : options.messages;
    const sampler = startSampler(views, [memory], producers, (s) => {
      if (s.done % 64 === 0) progress.update(offset + Math.min(s.done, expected), total, label);
    });
    const t0 = absoluteNow();
    const consumerRuns = interpreters.slice(0, consumers).map((interp, i) =>
      interp.call<ConsumerReport>(PARTY_MODULE, "consumer", rx.clone(), { index: i, seed: partySeed(options.seed, run, 2, i), service: options.service, producers }, shared),
    );
    rx.close();
    const producerRuns = interpreters.slice(consumers).map((interp, i) =>
      interp.call<number>(PARTY_MODULE, "producer", tx.clone(), { index: i, seed: partySeed(options.seed, run, 1, i), arrival: options.arrival, overflow, quota: quotas[i]!, size: options.size }, shared),
    );
    tx.close();
    let stopTimer: NodeJS.Timeout | undefined;
    if (options.seconds) stopTimer = setTimeout(() => Atomics.store(views.words, W_STOP, 1), options.seconds * 1000);
    try {
      await Promise.all(producerRuns);
      const reports = await Promise.all(consumerRuns);
      sampler.stop();
      const stats = probe.stats() as ReturnType<typeof probe.stats> & { dropped?: number };
      const tEnd = absoluteNow();
      const row = summarizeLine(options, capacity, overflow, views, sampler.samples, reports, stats.dropped ?? 0, t0, tEnd, run);
      progress.update(offset + (options.seconds ? row.messages : options.messages), total, label);
      return row;
    } finally {
      clearTimeout(stopTimer);
      sampler.stop();
    }
  } finally {
    probe.close();
    await Promise.all(interpreters.map((i) => i.terminate()));
  }
}

function summarizeLine(
  options: LabOptions,
  capacity: number,
  overflow: Overflow,
  views: RunViews,
  samples: Sample[],
  reports: ConsumerReport[],
  dropped: number,
  t0: number,
  tEnd: number,
  run: number,
): Row {
  const done = Atomics.load(views.words, W_DONE);
  const started = Atomics.load(views.words, W_STARTED);
  const refused = Atomics.load(views.words, 3);
  const kept = Math.min(done, views.records);
  const times = Float64Array.from(views.recvTimes.subarray(0, kept)).sort();
  // The steady window: after the first 5% of messages (at most 2000), until the first producer stopped sending.
  const warm = Math.min(2000, Math.max(0, Math.floor(kept * 0.05)));
  const windowStart = times[warm] ?? t0;
  let windowEnd = Infinity;
  for (let p = 0; p < options.producers; p++) windowEnd = Math.min(windowEnd, views.lastSendStart(p));
  if (!(windowEnd > windowStart)) windowEnd = times[kept - 1] ?? tEnd;
  const inWindow: number[] = [];
  let latencySum = 0;
  for (let i = 0; i < kept; i++) {
    const at = views.recvTimes[i]!;
    if (at >= windowStart && at <= windowEnd) {
      inWindow.push(views.latencies[i]!);
      latencySum += views.latencies[i]!;
    }
  }
  const windowMs = windowEnd - windowStart;
  const throughput = (1000 * inWindow.length) / windowMs;
  const latencies = Float64Array.from(inWindow).sort();
  const meanTimeMs = inWindow.length > 0 ? latencySum / inWindow.length : 0;
  const windowSamples = samples.filter((s) => s.at >= windowStart && s.at <= windowEnd);
  const mean = (f: (s: Sample) => number): number => (windowSamples.length > 0 ? windowSamples.reduce((sum, s) => sum + f(s), 0) / windowSamples.length : 0);
  // In the channel: sends begun, neither received nor discarded by the overflow policy.
  const meanInChannel = mean((s) => s.started - s.done - s.dropped);
  const first = windowSamples[0];
  const last = windowSamples[windowSamples.length - 1];
  const blockedInWindow = first && last && last.at > first.at ? (last.blockedMs - first.blockedMs) / ((last.at - first.at) * options.producers) : 0;
  const prediction = predict({ ...options, overflow, capacity });
  const simulated = simulate({
    producers: options.producers,
    consumers: options.consumers,
    capacity,
    overflow,
    arrival: options.arrival,
    service: options.service,
    warmup: 2000,
    messages: Math.max(30_000, inWindow.length),
    seed: partySeed(options.seed, run, 3, 0),
  });
  return {
    capacity,
    overflow,
    messages: done,
    seconds: (tEnd - t0) / 1000,
    throughput,
    ...(prediction ? { predictedThroughput: prediction.throughput, ratio: throughput / prediction.throughput, prediction } : {}),
    simulatedThroughput: simulated.throughput,
    latencyUs: { p50: 1000 * percentile(latencies, 0.5), p99: 1000 * percentile(latencies, 0.99), p999: 1000 * percentile(latencies, 0.999), mean: 1000 * meanTimeMs },
    meanBuffered: mean((s) => s.length),
    peakBuffered: samples.reduce((m, s) => Math.max(m, s.length), 0),
    peakRingBytes: samples.reduce((m, s) => Math.max(m, s.ringBytes), 0),
    peakRssBytes: samples.reduce((m, s) => Math.max(m, s.rss), 0),
    senderBlockedFraction: blockedInWindow,
    dropped,
    refused,
    littleLawError: littleLawError(meanInChannel, throughput, meanTimeMs),
    offCpuFraction: offCpu(views, options, (tEnd - t0)),
    little: { meanInChannel, meanTimeMs },
    queue: downsample(samples, t0, (s) => s.length),
    lost: started - done - dropped,
    outOfOrder: options.consumers === 1 ? reports.reduce((n, r) => n + r.outOfOrder, 0) : 0,
  };
}

/** The parties' off-CPU time as a fraction of the run (see party.ts, waitUntil). */
function offCpu(views: RunViews, options: LabOptions, runMs: number): number {
  let total = 0;
  for (let p = 0; p < options.producers; p++) total += views.offCpuMs(p);
  for (let c = 0; c < options.consumers; c++) total += views.offCpuMs(CONSUMER_PARTY + c);
  return runMs > 0 ? total / (runMs * (options.producers + options.consumers)) : 0;
}

/** One seeded run of recv-loop at one capacity. */
async function runRecvLoopOnce(options: LabOptions, capacity: number, run: number): Promise<{
  completed: number;
  handled: number;
  seconds: number;
  deadlock?: PeerReport["deadlock"];
  peakRingBytes: number;
  peakRssBytes: number;
  peakBuffered: number;
  meanBuffered: number;
  queue: Array<[number, number]>;
  finished: boolean;
}> {
  const shared = runMemory(16);
  const views = new RunViews(shared);
  const [aRx, aTx] = createChannel<Uint8Array>({ capacity, name: "inbox of A" });
  const [bRx, bTx] = createChannel<Uint8Array>({ capacity, name: "inbox of B" });
  const memories = [endOf(aTx)!.memory, endOf(bTx)!.memory];
  const interpreters = [await create({ name: "A" }), await create({ name: "B" }), await create({ name: "feeder" })];
  const [a, b, feed] = interpreters as [Interpreter, Interpreter, Interpreter];
  const sampler = startSampler(views, memories, 0, () => {});
  const t0 = absoluteNow();
  try {
    const peerConfig = (index: number) => ({ seed: partySeed(options.seed, run, 4, index), service: options.service, forward: options.forward, size: options.size, chains: options.messages });
    const peerA = a.call<PeerReport>(PARTY_MODULE, "peer", aRx, bTx.clone(), peerConfig(0), shared);
    const peerB = b.call<PeerReport>(PARTY_MODULE, "peer", bRx, aTx.clone(), peerConfig(1), shared);
    const feeding = feed.call<{ fed: number; deadlock?: PeerReport["deadlock"] }>(
      PARTY_MODULE,
      "feeder",
      aTx.clone(),
      bTx.clone(),
      { seed: partySeed(options.seed, run, 5, 0), arrival: options.arrival, count: options.messages, size: options.size },
      shared,
    );
    // Terminated at the end of a deadlocked run: their promises then reject, which is expected.
    for (const call of [peerA, peerB, feeding]) call.catch(() => undefined);
    // Every request completed (its chain ended), or a peer returned (a deadlock), or too long.
    let settled = false;
    const allDone = (async () => {
      for (;;) {
        const chains = Atomics.load(views.words, W_CHAINS);
        if (chains >= options.messages || settled) return "done" as const;
        const wait = Atomics.waitAsync(views.words, W_CHAINS, chains, 100);
        if (wait.async) await wait.value;
      }
    })();
    const limitMs = Math.max(30_000, (options.messages / options.arrival.rate) * 1000 * 10);
    let limitTimer: NodeJS.Timeout | undefined;
    const limit = new Promise<"limit">((resolve) => (limitTimer = setTimeout(() => resolve("limit"), limitMs)));
    const outcome = await Promise.race([allDone, peerA.then(() => "peer" as const), peerB.then(() => "peer" as const), limit]);
    settled = true;
    clearTimeout(limitTimer);
    let deadlock: PeerReport["deadlock"];
    if (outcome === "done") {
      const stop = new Uint8Array(options.size);
      new DataView(stop.buffer).setInt32(8, STOP, true);
      await aTx.send(stop, { timeout: 10_000 });
      await bTx.send(stop, { timeout: 10_000 });
      await Promise.all([peerA, peerB, feeding]);
    } else if (outcome === "peer") {
      // A peer returned before the work was done: only a deadlock ends it so. Let the rest of the verdicts arrive.
      const reports = await Promise.race([Promise.all([peerA, peerB]), new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), RECV_LOOP_DETECTION_MS * 10))]);
      deadlock = reports?.find((r) => r.deadlock)?.deadlock ?? (await Promise.race([peerA, peerB])).deadlock;
    }
    sampler.stop();
    const seconds = (absoluteNow() - t0) / 1000;
    const samples = sampler.samples;
    return {
      completed: Atomics.load(views.words, W_CHAINS),
      handled: Atomics.load(views.words, W_HANDLED),
      seconds,
      deadlock,
      finished: outcome === "done",
      peakRingBytes: samples.reduce((m, s) => Math.max(m, s.ringBytes), 0),
      peakRssBytes: samples.reduce((m, s) => Math.max(m, s.rss), 0),
      peakBuffered: samples.reduce((m, s) => Math.max(m, s.length), 0),
      meanBuffered: samples.length ? samples.reduce((sum, s) => sum + s.length, 0) / samples.length : 0,
      queue: downsample(samples, t0, (s) => s.length),
    };
  } finally {
    sampler.stop();
    aTx.close();
    bTx.close();
    await Promise.all(interpreters.map((i) => i.terminate()));
  }
}

async function runRecvLoop(options: LabOptions, capacity: number, progress: Progress, offset: number, total: number): Promise<Row> {
  const outcomes = [];
  const label = `recv-loop, capacity ${capacity === Infinity ? "Infinity" : capacity}`;
  for (let run = 0; run < options.runs; run++) {
    outcomes.push(await runRecvLoopOnce(options, capacity, run));
    progress.update(offset + (run + 1) * options.messages, total, label);
  }
  const deadlocked = outcomes.filter((o) => o.deadlock);
  const finished = outcomes.filter((o) => o.finished);
  const first = deadlocked[0]?.deadlock;
  const throughputs = finished.map((o) => o.completed / o.seconds).sort((x, y) => x - y);
  const handledBefore = deadlocked.map((o) => o.handled).sort((x, y) => x - y);
  return {
    capacity,
    overflow: "wait",
    messages: outcomes.reduce((n, o) => n + o.completed, 0),
    seconds: outcomes.reduce((n, o) => n + o.seconds, 0),
    throughput: throughputs.length ? throughputs[throughputs.length >> 1]! : 0,
    latencyUs: { p50: 0, p99: 0, p999: 0, mean: 0 },
    meanBuffered: outcomes.reduce((n, o) => n + o.meanBuffered, 0) / outcomes.length,
    peakBuffered: Math.max(...outcomes.map((o) => o.peakBuffered)),
    peakRingBytes: Math.max(...outcomes.map((o) => o.peakRingBytes)),
    peakRssBytes: Math.max(...outcomes.map((o) => o.peakRssBytes)),
    senderBlockedFraction: 0,
    dropped: 0,
    refused: 0,
    ...(first ? { deadlock: { cycle: first.cycle, message: first.message, detectedAfterMs: first.blockedMs } } : {}),
    deadlocks: deadlocked.length,
    runs: outcomes.length,
    ...(handledBefore.length ? { handledBeforeDeadlock: handledBefore[handledBefore.length >> 1] } : {}),
    littleLawError: 0,
    offCpuFraction: 0,
    little: { meanInChannel: 0, meanTimeMs: 0 },
    queue: outcomes[0]!.queue,
    lost: outcomes.filter((o) => !o.finished && !o.deadlock).length,
    outOfOrder: 0,
  };
}

/** Runs every capacity × policy of `options` (in that order); `progress` hears about each run. */
export async function runLab(options: LabOptions, progress: Progress): Promise<LabResult> {
  const startedAt = new Date().toISOString();
  const rows: Row[] = [];
  const skipped: string[] = [];
  const combos: Array<{ capacity: number; overflow: Overflow }> = [];
  for (const overflow of options.overflows) {
    for (const capacity of options.capacities) {
      if (overflow === "drop-oldest" && capacity === 0) {
        skipped.push("capacity 0 with drop-oldest: a rendezvous buffers nothing to drop (a RangeError by the contract)");
        continue;
      }
      combos.push({ capacity, overflow });
    }
  }
  const perRun = options.scenario === "recv-loop" ? options.messages * options.runs : options.seconds ? Math.ceil(options.seconds * 1000) : options.messages;
  const total = perRun * combos.length;
  if (options.scenario === "recv-loop") configureDeadlockDetection({ mode: "throw", after: RECV_LOOP_DETECTION_MS });
  let run = 0;
  for (const { capacity, overflow } of combos) {
    const offset = run * perRun;
    rows.push(options.scenario === "recv-loop" ? await runRecvLoop(options, capacity, progress, offset, total) : await runLine(options, capacity, overflow, run, progress, offset, total));
    run++;
  }
  const { out: _out, json: _json, progress: _progress, ...kept } = options;
  return {
    scenario: options.scenario,
    options: {
      ...kept,
      capacities: options.capacities.map((c) => (c === Infinity ? "Infinity" : c)),
      arrival: formatArrival(options.arrival),
      service: formatService(options.service),
      messageHeaderBytes: MESSAGE_HEADER_BYTES,
    },
    rows,
    skipped,
    machine: { cpus: cpus().length, node: process.version, load: (await import("node:os")).loadavg() },
    startedAt,
  };
}

