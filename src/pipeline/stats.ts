/**
 * A pipeline's statistics, read from its control block (control.ts)
 * without stopping anyone: per stage, items in/out/queued/dropped/failed,
 * the time its workers spent busy, back-pressured (waiting for room in the
 * next stage) and idle (waiting for input) per second, service-time
 * percentiles and throughput, and the bottleneck by Flink's rule.
 *
 * Rates are differences between two snapshots of the cumulative counters:
 * the 'stats' event compares with the snapshot of a second before, the
 * final statistics (what `done` resolves to) with the start.
 */
import {
  BACKPRESSURED,
  BACKPRESSURED_MS,
  BUSY,
  BUSY_MS,
  bucketUpperUs,
  type Control,
  DROPPED,
  epochMs,
  EVICTED,
  FAILED,
  HISTOGRAM_BUCKETS,
  IDLE,
  IDLE_MS,
  IN,
  OUT,
  SENT,
  SINCE,
  STARTED,
  STATE,
  WORKER_STATS,
} from "./control.js";

/** What a pipeline reports about itself (API.md "Pipelines"). */
export interface PipelineStats {
  name: string;
  elapsedMs: number;
  /** Items pulled from the source and not yet out of the last stage. */
  inFlight: number;
  /** The first stage busy more than 50% of the time and back-pressured less than 10% (Flink's rule); absent when none is. */
  bottleneck?: string;
  stages: StageStats[];
}

export interface StageStats {
  name: string;
  workers: number;
  capacity: number;
  overflow: string;
  /** Items waiting in the stage's input, not yet taken by a worker. */
  queued: number;
  /** Items taken by the stage's workers, ever. */
  in: number;
  /** Outputs the stage sent on, ever. */
  out: number;
  /** Items discarded at the stage's intake by its overflow policy. */
  dropped: number;
  /** Items that failed under onError "skip". */
  failed: number;
  /** Per worker, averaged; the three sum to about 1000. */
  busyMsPerSecond: number;
  backpressuredMsPerSecond: number;
  idleMsPerSecond: number;
  /** Time one item takes in the stage's code (sampled), in microseconds. */
  serviceUs: { p50: number; p99: number };
  itemsPerSecond: number;
}

/** The static description of a stage the reader needs. */
export interface StageInfo {
  name: string;
  workers: number;
  capacity: number;
  overflow: string;
  /** Index of the stage's first worker in the statistics arrays. */
  firstWorker: number;
}

/** Cumulative counters at one moment. */
export interface Snapshot {
  at: number;
  /** Per worker: busy, back-pressured, idle ms (including the state it is in now), in, out, failed. */
  workers: Float64Array;
  histogram: Int32Array;
}

const PER_WORKER = 6;

/** A stage counts as back-pressured above this many ms per second (Flink's "OK" level is up to 10%). */
export const BACKPRESSURED_THRESHOLD = 100;
/** A stage counts as busy above this many ms per second (50%). */
export const BUSY_THRESHOLD = 500;

export class StatsReader {
  readonly #control: Control;
  readonly #stages: StageInfo[];
  readonly #workers: number;

  constructor(control: Control, stages: StageInfo[]) {
    this.#control = control;
    this.#stages = stages;
    this.#workers = stages.reduce((n, s) => n + s.workers, 0);
  }

  snapshot(): Snapshot {
    const at = epochMs();
    const stats = this.#control.stats;
    const workers = new Float64Array(this.#workers * PER_WORKER);
    for (let w = 0; w < this.#workers; w++) {
      const base = w * WORKER_STATS;
      const out = w * PER_WORKER;
      let busy = stats[base + BUSY_MS]!;
      let backpressured = stats[base + BACKPRESSURED_MS]!;
      let idle = stats[base + IDLE_MS]!;
      if (stats[base + STARTED]! > 0) {
        const open = Math.max(0, at - stats[base + SINCE]!);
        const state = stats[base + STATE];
        if (state === BUSY) busy += open;
        else if (state === BACKPRESSURED) backpressured += open;
        else if (state === IDLE) idle += open;
      }
      workers[out] = busy;
      workers[out + 1] = backpressured;
      workers[out + 2] = idle;
      workers[out + 3] = stats[base + IN]!;
      workers[out + 4] = stats[base + OUT]!;
      workers[out + 5] = stats[base + FAILED]!;
    }
    return { at, workers, histogram: this.#control.histogram.slice(0, this.#workers * HISTOGRAM_BUCKETS) };
  }

  /** Statistics over the time from `since` to `now` (counts are totals at `now`). */
  compute(name: string, startedAt: number, since: Snapshot, now: Snapshot): PipelineStats {
    const control = this.#control;
    const seconds = Math.max(1e-9, (now.at - since.at) / 1000);
    const stages: StageStats[] = [];
    let inFlight = 0;
    let bottleneck: string | undefined;
    this.#stages.forEach((info, slot) => {
      let busy = 0;
      let backpressured = 0;
      let idle = 0;
      let taken = 0;
      let out = 0;
      let failed = 0;
      let takenBefore = 0;
      const histogram = new Float64Array(HISTOGRAM_BUCKETS);
      const total = new Float64Array(HISTOGRAM_BUCKETS);
      for (let w = info.firstWorker; w < info.firstWorker + info.workers; w++) {
        const at = w * PER_WORKER;
        busy += now.workers[at]! - since.workers[at]!;
        backpressured += now.workers[at + 1]! - since.workers[at + 1]!;
        idle += now.workers[at + 2]! - since.workers[at + 2]!;
        taken += now.workers[at + 3]!;
        out += now.workers[at + 4]!;
        failed += now.workers[at + 5]!;
        takenBefore += since.workers[at + 3]!;
        for (let b = 0; b < HISTOGRAM_BUCKETS; b++) {
          const h = w * HISTOGRAM_BUCKETS + b;
          histogram[b]! += now.histogram[h]! - since.histogram[h]!;
          total[b]! += now.histogram[h]!;
        }
      }
      const covered = busy + backpressured + idle;
      const perSecond = (ms: number): number => (covered > 0 ? Math.round((ms / covered) * 1000) : 0);
      const sampled = histogram.some((n) => n > 0) ? histogram : total;
      const held = control.held(slot);
      inFlight += held;
      const stats: StageStats = {
        name: info.name,
        workers: info.workers,
        capacity: info.capacity,
        overflow: info.overflow,
        queued: Math.max(0, control.read(slot, SENT) - taken - control.read(slot, EVICTED)),
        in: taken,
        out,
        dropped: control.read(slot, DROPPED),
        failed,
        busyMsPerSecond: perSecond(busy),
        backpressuredMsPerSecond: perSecond(backpressured),
        idleMsPerSecond: perSecond(idle),
        serviceUs: { p50: percentile(sampled, 0.5), p99: percentile(sampled, 0.99) },
        itemsPerSecond: Math.round((taken - takenBefore) / seconds),
      };
      if (bottleneck === undefined && stats.busyMsPerSecond > BUSY_THRESHOLD && stats.backpressuredMsPerSecond < BACKPRESSURED_THRESHOLD) {
        bottleneck = info.name;
      }
      stages.push(stats);
    });
    const result: PipelineStats = { name, elapsedMs: Math.round(now.at - startedAt), inFlight, stages };
    if (bottleneck !== undefined) result.bottleneck = bottleneck;
    return result;
  }
}

/** The `q` quantile of a histogram, as its bucket's upper edge (µs, 3 significant digits); 0 when empty. */
function percentile(histogram: Float64Array, q: number): number {
  let count = 0;
  for (const n of histogram) count += n;
  if (count === 0) return 0;
  const rank = Math.ceil(q * count);
  let seen = 0;
  for (let b = 0; b < histogram.length; b++) {
    seen += histogram[b]!;
    if (seen >= rank) return Number(bucketUpperUs(b).toPrecision(3));
  }
  return Number(bucketUpperUs(histogram.length - 1).toPrecision(3));
}
