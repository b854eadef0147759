/**
 * `pipeline()` and the Pipeline: SEDA stages in interpreters, joined by
 * channels, with backpressure end to end, order, errors that name the stage
 * and the item, cancellation, and per-stage statistics.
 *
 * Who does what. The main thread (this module) reads the source, taking
 * credits of the first stage before it reads (source.ts, outlet.ts);
 * starts every worker of every stage (an interpreter of its own running
 * runner.ts); collects the last stage's outputs into the pipeline's
 * iterator, within an output window of credits; relays skipped items as
 * 'skip' events; samples statistics (stats.ts); and, when anything fails or
 * the pipeline is cancelled, tears everything down: the control block is
 * cancelled (every wait on credits wakes), every interpreter is
 * terminated (which ends even a synchronous wait), the source's iterator
 * is returned. `done` settles after the last interpreter has exited.
 *
 * Channels. Stage k reads one channel (or, for a keyed stage, one per
 * worker), whose capacity is the stage's credits counted in messages, so
 * that a send for which credits were taken never waits. Each sender holds
 * its own handle: the source reader, or each worker of the stage before.
 * When the source ends, the reader closes its handles; a worker whose input
 * is closed and drained finishes, closes its own, and so on down the line
 * (the Go rule: a stage closes what it sends on when it is done).
 */
import { EventEmitter } from "node:events";
import type * as TypedEmitterTypes from "typed-emitter";
import {
  ChannelClosedError,
  create,
  createChannel,
  type Interpreter,
  isShareable,
  NotShareableError,
  type RecvChannel,
  type RemoteErrorInfo,
  SendChannel,
  StageFailed,
} from "../index.js";
import { Control, CURRENT_INDEX, Doorbell, ENTERED, PREVIEW_BYTES, UNBOUNDED_CREDITS, WORKER_STATS } from "./control.js";
import { type BatchMessage, Cancelled, DownstreamClosed, IntakeFull, intakeFullError, Outlet, type OutletSpec } from "./outlet.js";
import { registerPipeline, unregisterPipeline } from "./registry.js";
import { type FailureRecord, previewOf, type RunnerConfig, type RunnerResult, type SkipEvent } from "./runner.js";
import { isSource, openSource, type Source, type SourceReader } from "./source.js";
import type { InterpreterPool } from "./pool-type.js";
import { isStage, type Stage } from "./stage.js";
import { type PipelineStats, type Snapshot, type StageInfo, StatsReader } from "./stats.js";

export interface PipelineOptions<O = unknown> {
  /** Where the items come from; read only as fast as the first stage takes them. */
  source: Iterable<unknown> | AsyncIterable<unknown> | RecvChannel<unknown>;
  /** The stages, in order (at least one). */
  stages: Stage<any, any>[];
  /** Where the last stage's outputs go; else iterate the Pipeline. */
  sink?: SendChannel<O>;
  /** Shown in stats, errors and interpreter names; default "pipeline-N". */
  name?: string;
  /** Aborting cancels the pipeline (as cancel(signal.reason)). */
  signal?: AbortSignal;
  /**
   * Keep per-stage timing statistics (busy/back-pressured/idle time, service
   * times); default true. Counts are kept either way. (An addition to the
   * contract, for measuring what the statistics cost.)
   */
  stats?: boolean;
}

export type PipelineEvents = {
  /** About once a second while the pipeline runs. */
  stats: (stats: PipelineStats) => void;
  /** An item failed in a stage with onError "skip" (it is counted in that stage's `failed`). */
  skip: (error: StageFailed) => void;
};

type TypedEmitter<Events extends TypedEmitterTypes.EventMap> = TypedEmitterTypes.default<Events>;
const Emitter = EventEmitter as unknown as new () => TypedEmitter<PipelineEvents>;

const RUNNER = new URL(`./runner.${import.meta.url.endsWith(".ts") ? "ts" : "js"}`, import.meta.url).href;
/** Most items in one message between stages. */
const MAX_BATCH = 256;
/** Bounds of the output window (items the last stage may have sent that the iterator has not yet taken). */
const MIN_OUTPUT_WINDOW = 32;
const MAX_OUTPUT_WINDOW = 1024;
/** Room for skip events on their way to the main thread. */
const EVENTS_CAPACITY = 1024;
/** A pool stage whose items wait while a worker has had no interpreter from the pool this long fails the pipeline. */
const POOL_STARVED_MS = 10_000;
/** How often the 'stats' event fires. */
const STATS_INTERVAL_MS = 1000;
/** Items a lossy first stage is offered between two turns of the event loop. */
const LOSSY_CHUNK = 64;

let pipelines = 0;
const constructing = Symbol("constructing");

/**
 * Starts a pipeline: `source` flows through `stages` (each in interpreters
 * of its own, or on its pool), and the last stage's outputs go to `sink`
 * or to whoever iterates the returned Pipeline. Returns at once; the
 * interpreters start in the background.
 *
 * Throws TypeError for bad options (a source that is not iterable, no
 * stages, something not made by stage(), a sink that is not a SendChannel);
 * nothing is started then.
 */
export function pipeline<O = unknown>(options: PipelineOptions<O>): Pipeline<O> {
  return new Pipeline<O>(constructing, options);
}

/** One worker of one stage, as the main thread tracks it. */
interface WorkerRun {
  stage: number;
  worker: number;
  statsSlot: number;
  name: string;
  interpreter?: Interpreter;
  /** Pool stages: aborts the worker's task (the pool ends its interpreter). */
  abort?: AbortController;
  /** Pool stages: settles when the task has (its interpreter released what it held). */
  task?: Promise<unknown>;
}

/** How a pipeline ended (or is ending). */
type Ending = { kind: "completed" } | { kind: "failed"; error: unknown } | { kind: "cancelled"; reason: unknown } | { kind: "consumer" };

/**
 * A running pipeline. Iterate it (`for await`) for the last stage's
 * outputs, unless it was given a `sink`; await `done` for its final
 * statistics.
 *
 * Events: 'stats' (PipelineStats) about once a second while it runs; 'skip'
 * (StageFailed) for each item a stage with onError "skip" failed on.
 */
export class Pipeline<O = unknown> extends Emitter {
  readonly name: string;
  readonly #stages: Stage[];
  readonly #control: Control;
  readonly #reader: StatsReader;
  readonly #statsOn: boolean;
  readonly #source: SourceReader;
  readonly #sink: SendChannel<O> | undefined;
  readonly #signal: AbortSignal | undefined;
  readonly #startedAt: number;
  readonly #first: Snapshot;
  #recent: Snapshot[];
  readonly #runs: WorkerRun[] = [];
  /** Per stage, per channel: the pair as created (the main thread's originals). */
  readonly #inputs: Array<Array<[RecvChannel<BatchMessage>, SendChannel<BatchMessage>]>>;
  readonly #output: [RecvChannel<unknown[]>, SendChannel<unknown[]>] | undefined;
  readonly #events: [RecvChannel<SkipEvent>, SendChannel<SkipEvent>];
  readonly #feedOutlet: Outlet;
  readonly #outputWindow: number;
  /** The main thread's one wait for the workers (first stage's credits, outputs, ends). */
  readonly #bell: Doorbell;

  #ending: Ending | undefined;
  #tearingDown = false;
  readonly #teardown = new AbortController();
  readonly #done: Promise<PipelineStats>;
  #resolveDone!: (stats: PipelineStats) => void;
  #rejectDone!: (err: unknown) => void;
  #settled = false;
  #final: PipelineStats | undefined;
  #doneObserved = false;
  #failureDelivered = false;
  #statsTimer: NodeJS.Timeout | undefined;
  #onAbort: (() => void) | undefined;
  #issued = 0;

  // The output side, for iteration.
  readonly #outQueue: unknown[][] = [];
  #outHead = 0;
  #outPosition = 0;
  #collected = false;
  #wakeReader: (() => void) | undefined;
  #iterating = false;

  /** @internal Use pipeline(). */
  constructor(token: symbol, options: PipelineOptions<O>) {
    super();
    if (token !== constructing) throw new TypeError("use pipeline(options) to start a pipeline");
    if (options === null || typeof options !== "object") throw new TypeError("pipeline: options must be an object");
    const { source, stages, sink, signal } = options;
    this.name = options.name ?? `pipeline-${++pipelines}`;
    if (typeof this.name !== "string" || this.name.length === 0) throw new TypeError("pipeline: name must be a non-empty string");
    const what = `pipeline "${this.name}"`;
    if (!isSource(source)) throw new TypeError(`${what}: source must be an Iterable, an AsyncIterable or a RecvChannel`);
    if (!Array.isArray(stages) || stages.length === 0) throw new TypeError(`${what}: stages must be a non-empty array of stage(...)`);
    stages.forEach((s, i) => {
      if (!isStage(s)) throw new TypeError(`${what}: stages[${i}] was not made by stage(); describe each stage with stage(module, options)`);
    });
    if (sink !== undefined && !(sink instanceof SendChannel)) throw new TypeError(`${what}: sink must be a SendChannel`);
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw new TypeError(`${what}: signal must be an AbortSignal`);
    this.#stages = withUniqueNames(stages);
    this.#sink = sink;
    this.#signal = signal;
    this.#statsOn = options.stats ?? true;

    // The control block: one credit slot per stage, one for the output window.
    const totalWorkers = this.#stages.reduce((n, s) => n + s.workers, 0);
    this.#control = Control.allocate(stages.length + 1, totalWorkers);
    const infos: StageInfo[] = [];
    let statsSlot = 0;
    this.#stages.forEach((s, k) => {
      const wakeAt = k === 0 ? feederLeast(s) : Math.ceil(batchOf(creditsOf(s), s.workers) / 2);
      this.#control.initSlot(k, creditsOf(s), s.workers, wakeAt);
      infos.push({ name: s.name, workers: s.workers, capacity: s.capacity, overflow: s.overflow, firstWorker: statsSlot });
      for (let w = 0; w < s.workers; w++) {
        this.#runs.push({ stage: k, worker: w, statsSlot: statsSlot++, name: `${this.name}/${s.name}#${w}` });
      }
    });
    const last = this.#stages[this.#stages.length - 1]!;
    this.#outputWindow = Math.min(MAX_OUTPUT_WINDOW, Math.max(MIN_OUTPUT_WINDOW, creditsOf(last)));
    this.#control.initSlot(stages.length, this.#outputWindow, 1, Math.ceil(batchOf(this.#outputWindow, 1) / 2));
    this.#control.ringsMain(0);
    this.#bell = new Doorbell(this.#control);
    this.#reader = new StatsReader(this.#control, infos);

    // The channels.
    this.#inputs = this.#stages.map((s) => {
      const count = s.order === "key" ? s.workers : 1;
      const credits = creditsOf(s);
      return Array.from({ length: count }, (_, c) =>
        createChannel<BatchMessage>({
          capacity: credits >= UNBOUNDED_CREDITS ? Infinity : credits,
          name: `${this.name}/${s.name}${count > 1 ? `#${c}` : ""} in`,
        }),
      );
    });
    this.#output = sink ? undefined : createChannel<unknown[]>({ capacity: this.#outputWindow, name: `${this.name} out` });
    this.#events = createChannel<SkipEvent>({ capacity: EVENTS_CAPACITY, name: `${this.name} events` });
    this.#feedOutlet = new Outlet(this.#outletInto(0, false), this.#control);

    this.#source = openSource(source as Source);
    this.#done = new Promise<PipelineStats>((resolve, reject) => {
      this.#resolveDone = resolve;
      this.#rejectDone = reject;
    });
    this.#done.catch(() => {}); // reported through done/iteration/dispose, never as an unhandled rejection
    this.#startedAt = Date.now();
    this.#first = this.#reader.snapshot();
    this.#recent = [this.#first];
    registerPipeline(this);

    if (signal?.aborted) {
      this.#stop({ kind: "cancelled", reason: signal.reason });
      void this.#finish();
      return;
    }
    if (signal) {
      this.#onAbort = () => this.#stop({ kind: "cancelled", reason: signal.reason });
      signal.addEventListener("abort", this.#onAbort, { once: true });
    }
    this.#statsTimer = setInterval(() => this.#tick(), STATS_INTERVAL_MS);
    this.#statsTimer.unref();
    this.#run().catch((err: unknown) => {
      // Not expected (every part handles its own errors); if it happens, it fails the pipeline, never silently.
      this.#fail(err);
      void this.#finish();
    });
  }

  /**
   * Settles once the pipeline has ended and every interpreter of it has
   * exited: resolves with the final statistics (rates over the whole run)
   * when the source was read to its end and every stage finished, or when
   * the consumer stopped iterating early; rejects with StageFailed when a
   * stage failed, with the source's own error when reading the source
   * threw, and with the reason when it was cancelled (cancel(), signal).
   */
  get done(): Promise<PipelineStats> {
    this.#doneObserved = true;
    return this.#done;
  }

  /** The statistics now (rates over about the last second). Never blocks the pipeline. */
  stats(): PipelineStats {
    if (this.#final) return this.#final;
    const now = this.#reader.snapshot();
    // Compare with a snapshot at least a quarter of a second old when there is one.
    const base = this.#recent.findLast((s) => now.at - s.at >= 250) ?? this.#recent[0]!;
    return this.#reader.compute(this.name, this.#startedAt, base, now);
  }

  #tick(): void {
    if (this.#settled) return;
    const now = this.#reader.snapshot();
    const previous = this.#recent[this.#recent.length - 1]!;
    this.#recent = [previous, now];
    const stats = this.#reader.compute(this.name, this.#startedAt, previous, now);
    try {
      if (this.listenerCount("stats") > 0) this.emit("stats", stats);
    } catch (err) {
      this.#fail(err); // a 'stats' listener that throws fails the pipeline (rather than the process, from a timer)
      return;
    }
    this.#watchPools(stats);
  }

  /** Per pool stage: since when it has had items waiting, no worker taking them, and a worker still waiting for an interpreter. */
  readonly #starvedSince = new Map<number, number>();

  /**
   * A worker on a pool holds one of its interpreters for the pipeline's
   * life, so a pool with fewer free interpreters than the pipeline has
   * workers on it leaves some waiting, possibly forever (a keyed stage's
   * items for that worker, or a stage none of whose workers got one). Rather
   * than hang, the pipeline fails once a stage has had items waiting, taken
   * none, and a worker still without an interpreter, for POOL_STARVED_MS.
   */
  #watchPools(stats: PipelineStats): void {
    this.#stages.forEach((s, k) => {
      if (!s.pool) return;
      const waiting = this.#runs.find((run) => run.stage === k && this.#control.stats[run.statsSlot * WORKER_STATS + ENTERED] === 0);
      const st = stats.stages[k]!;
      if (!waiting || st.queued === 0 || st.itemsPerSecond > 0) {
        this.#starvedSince.delete(k);
        return;
      }
      const since = this.#starvedSince.get(k) ?? Date.now();
      this.#starvedSince.set(k, since);
      if (Date.now() - since < POOL_STARVED_MS) return;
      const remote = { name: "InterpretersError", message: `its pool gave worker ${waiting.worker} no interpreter for ${Math.round((Date.now() - since) / 1000)} s while ${st.queued} items waited`, stack: "" };
      this.#fail(
        this.#stageFailed(
          { stage: s.name, worker: waiting.worker, remote },
          undefined,
          undefined,
          `stage "${s.name}" worker ${waiting.worker} never got an interpreter from its pool (each worker of a stage on a pool holds one of its interpreters while the pipeline runs): give the pool at least as many interpreters as the workers of every pipeline on it, or fewer workers`,
        ),
      );
    });
  }

  /**
   * Cancels the pipeline: every stage ends at once (its interpreters are
   * terminated, even one blocked in a synchronous wait), the source's
   * iterator is returned, and `done` rejects with `reason` (default: an
   * AbortError). Resolves once every interpreter of the pipeline has
   * exited. Does nothing more when the pipeline has already ended.
   */
  async cancel(reason?: unknown): Promise<void> {
    this.#stop({ kind: "cancelled", reason: reason ?? new DOMException(`pipeline "${this.name}" was cancelled`, "AbortError") });
    await this.#done.catch(() => {});
  }

  /**
   * `await using p = pipeline(...)`: at the end of the block, a pipeline
   * still running is stopped as if its consumer had left (`done` resolves),
   * and this waits for its interpreters to exit. Rethrows the pipeline's
   * failure if nobody has seen it yet (neither through iteration nor `done`).
   */
  async [Symbol.asyncDispose](): Promise<void> {
    this.#stop({ kind: "consumer" });
    await this.#done.catch(() => {});
    const ending = this.#ending;
    if (ending?.kind === "failed" && !this.#failureDelivered && !this.#doneObserved) {
      this.#failureDelivered = true;
      throw ending.error;
    }
  }

  /**
   * The last stage's outputs, in the order the stages' `order` options
   * give. Ends when the pipeline has completed (after its interpreters have
   * exited); throws the pipeline's failure. Leaving the loop early (break,
   * return, throw) stops the pipeline: `done` then resolves. One iteration
   * per pipeline; a pipeline with a sink cannot be iterated.
   */
  [Symbol.asyncIterator](): AsyncIterator<O> {
    if (this.#sink) throw new TypeError(`pipeline "${this.name}" sends its outputs to its sink; iterate the sink's receive end instead`);
    if (this.#iterating) throw new TypeError(`pipeline "${this.name}" is already being iterated; a pipeline's outputs can be read once`);
    this.#iterating = true;
    return {
      next: () => this.#next(),
      return: async (): Promise<IteratorResult<O>> => {
        this.#stop({ kind: "consumer" });
        await this.#done.catch(() => {});
        return { value: undefined, done: true };
      },
    };
  }

  async #next(): Promise<IteratorResult<O>> {
    for (;;) {
      const ending = this.#ending;
      if (ending && ending.kind !== "completed") {
        await this.#done.catch(() => {});
        if (ending.kind === "consumer") return { value: undefined, done: true };
        this.#failureDelivered = true;
        throw ending.kind === "failed" ? ending.error : ending.reason;
      }
      if (this.#outHead < this.#outQueue.length) {
        const batch = this.#outQueue[this.#outHead]!;
        const value = batch[this.#outPosition++] as O;
        if (this.#outPosition === batch.length) {
          this.#outQueue[this.#outHead++] = undefined as never;
          this.#outPosition = 0;
          if (this.#outHead > 1024 && this.#outHead * 2 > this.#outQueue.length) {
            this.#outQueue.splice(0, this.#outHead);
            this.#outHead = 0;
          }
          this.#control.give(this.#stages.length, batch.length);
        }
        return { value, done: false };
      }
      if (this.#collected) {
        await this.#done.catch(() => {});
        if (this.#ending?.kind === "failed" || this.#ending?.kind === "cancelled") continue;
        return { value: undefined, done: true };
      }
      await new Promise<void>((resolve) => (this.#wakeReader = resolve));
    }
  }

  #wake(): void {
    const wake = this.#wakeReader;
    this.#wakeReader = undefined;
    wake?.();
  }

  // ---- running ----

  async #run(): Promise<void> {
    const feeding = this.#feed();
    const collecting = this.#collect();
    const relaying = this.#relayEvents();
    const lives = this.#runs.map((run) => this.#live(run));
    await Promise.allSettled(lives);
    // Every worker is gone. The output and events channels are closed for
    // their receivers now (every sender is), so these end by themselves.
    await Promise.allSettled([collecting, relaying]);
    // The source reader is waited for only when it is not stuck in the
    // source (a read that never answers must not keep `done` from settling).
    await Promise.race([feeding, this.#whenTornDown()]);
    if (!this.#ending) this.#stop({ kind: "completed" });
    await this.#finish();
  }

  #whenTornDown(): Promise<void> {
    const signal = this.#teardown.signal;
    if (signal.aborted) return Promise.resolve();
    return new Promise((resolve) => signal.addEventListener("abort", () => resolve(), { once: true }));
  }

  /** Starts one worker, runs it to its end, and resolves once its interpreter has exited (or, on a pool, its task has settled). */
  async #live(run: WorkerRun): Promise<void> {
    const pool = this.#stages[run.stage]!.pool;
    if (pool) return this.#liveOnPool(run, pool);
    let interpreter: Interpreter;
    try {
      const limits = this.#stages[run.stage]!.resourceLimits;
      interpreter = await create(limits ? { name: run.name, resourceLimits: limits } : { name: run.name });
    } catch (err) {
      this.#handedOut();
      this.#fail(this.#stageFailed({ stage: this.#stages[run.stage]!.name, worker: run.worker, remote: remoteOf(err) }, err, "could not start its interpreter"));
      return;
    }
    run.interpreter = interpreter;
    if (this.#tearingDown) {
      this.#handedOut();
      await interpreter.terminate();
      return;
    }
    const { config, handles } = this.#configFor(run);
    const calling = interpreter.call<RunnerResult>(RUNNER, "runStage", config);
    // The ends in `config` moved into the interpreter as the call was made;
    // closing these handles here is a no-op for them (and closes any that did not move).
    for (const handle of handles) handle.close();
    this.#handedOut();
    let result: RunnerResult;
    try {
      result = await calling;
    } catch (err) {
      if (!this.#tearingDown) this.#fail(this.#died(run, err));
      await interpreter.terminate();
      return;
    }
    if (!result.ok) this.#fail(this.#failureOf(result.failure));
    if (this.#tearingDown) await interpreter.terminate();
    else await interpreter.close();
  }

  /**
   * A worker as a task of `pool`: it holds one of the pool's interpreters
   * for as long as the stage runs. Cancelling aborts the task (the pool
   * ends that interpreter, which releases what it held, and replaces it);
   * the task settles only then.
   */
  async #liveOnPool(run: WorkerRun, pool: InterpreterPool): Promise<void> {
    if (this.#tearingDown) {
      this.#handedOut();
      return;
    }
    run.abort = new AbortController();
    const { config, handles } = this.#configFor(run);
    let task: Promise<RunnerResult>;
    try {
      task = pool.run<RunnerResult>({ module: RUNNER, export: "runStage", args: [config], signal: run.abort.signal });
    } catch (err) {
      task = Promise.reject(err);
    }
    run.task = task.catch(() => {});
    this.#handedOut();
    let result: RunnerResult;
    try {
      result = await task;
    } catch (err) {
      if (!this.#tearingDown) this.#fail(this.#died(run, err));
      return;
    } finally {
      // A pool may move the ends in when the task starts, not when it is queued:
      // these handles are closed only now (a no-op for those that moved).
      for (const handle of handles) handle.close();
    }
    if (!result.ok) this.#fail(this.#failureOf(result.failure));
  }

  /**
   * Counts workers that were given their ends (or never will be). Once all
   * were, the main thread's own handles of the channels between stages are
   * closed: from then on, each channel stays open exactly as long as one of
   * its senders does.
   */
  #handedOut(): void {
    if (++this.#issued !== this.#runs.length) return;
    this.#inputs.forEach((pairs, k) => {
      for (const [rx, tx] of pairs) {
        rx.close();
        if (k > 0) tx.close(); // stage 0's senders are the source reader's (closed when the source ends)
      }
    });
    this.#output?.[1].close();
    this.#events[1].close();
    this.#control.ringMain(); // the output channel may have closed just now (every worker already done)
  }

  /** What the sender into stage `k` (or into the output, k = n) uses; `clone`: handles of its own. */
  #outletInto(k: number, clone: boolean): OutletSpec {
    const n = this.#stages.length;
    if (k === n) {
      if (this.#sink) return { kind: "sink", slot: -1, name: "sink", channels: [clone ? this.#sink.clone() : this.#sink], overflow: "wait", batch: MAX_BATCH };
      const tx = this.#output![1];
      return { kind: "output", slot: n, name: "output", channels: [clone ? tx.clone() : tx], overflow: "wait", batch: batchOf(this.#outputWindow, 1) };
    }
    const target = this.#stages[k]!;
    const pairs = this.#inputs[k]!;
    const spec: OutletSpec = {
      kind: "stage",
      slot: k,
      name: target.name,
      channels: pairs.map(([, tx]) => (clone ? tx.clone() : tx)),
      overflow: target.overflow,
      batch: batchOf(creditsOf(target), target.workers),
    };
    if (target.key !== undefined) spec.key = target.key;
    if (target.overflow === "drop-oldest") spec.evict = pairs.map(([rx]) => rx.clone());
    return spec;
  }

  #configFor(run: WorkerRun): { config: RunnerConfig; handles: Array<{ close(): void }> } {
    const s = this.#stages[run.stage]!;
    const pairs = this.#inputs[run.stage]!;
    const input = pairs[s.order === "key" ? run.worker : 0]![0].clone();
    const outlet = this.#outletInto(run.stage + 1, true);
    const events = this.#events[1].clone();
    const config: RunnerConfig = {
      pipeline: this.name,
      stage: s.name,
      slot: run.stage,
      worker: run.worker,
      workers: s.workers,
      statsSlot: run.statsSlot,
      module: s.module,
      exportName: s.export,
      ordered: s.order === "input" && s.workers > 1,
      onError: s.onError,
      input,
      outlet,
      events,
      control: this.#control.buffers,
      stats: this.#statsOn,
    };
    return { config, handles: [input, events, ...outlet.channels, ...(outlet.evict ?? [])] };
  }

  /** Reads the source into the first stage, taking its credits before reading. */
  async #feed(): Promise<void> {
    const outlet = this.#feedOutlet;
    const control = this.#control;
    const source = this.#source;
    let index = 0;
    try {
      while (!this.#tearingDown) {
        if (outlet.lossy) {
          const { values, done } = await source.pull(LOSSY_CHUNK);
          for (const value of values) outlet.offer(value, index++);
          if (done) break;
          await new Promise((resolve) => setImmediate(resolve)); // a lossy intake never waits: let the loop breathe
          continue;
        }
        // The main thread is woken only when a good part of the first stage's room is free (see feederLeast).
        const least = feederLeast(this.#stages[0]!);
        const want = Math.max(outlet.spec.batch, least);
        const got = control.tryTake(0, want, least) || (await this.#creditsForSource(want, least));
        if (got === 0) break; // cancelled, or the first stage stopped taking items
        let pulled;
        try {
          pulled = await source.pull(got);
        } catch (err) {
          control.give(0, got);
          throw err;
        }
        const { values, done } = pulled;
        if (values.length < got) control.give(0, got - values.length);
        if (this.#tearingDown) break;
        if (values.length > 0) {
          try {
            outlet.sendReserved(values, index);
          } catch (err) {
            throw err instanceof NotShareableError ? this.#unshareableSourceItem(err, values, index) : err;
          }
        }
        index += values.length;
        if (done) break;
      }
    } catch (err) {
      if (err instanceof IntakeFull) {
        this.#fail(this.#failureOf({ stage: err.target, worker: -1, index: err.index, preview: previewOf(err.value), remote: remoteOf(intakeFullError(err)), reason: "full" }));
      } else if (!(err instanceof Cancelled || err instanceof DownstreamClosed)) {
        this.#fail(err); // the source's own error, as it threw it
      }
    } finally {
      try {
        outlet.close();
      } catch {
        // already closed
      }
      if (!source.exhausted) await source.close().catch(() => {});
    }
  }

  /**
   * Takes between `least` and `want` credits of the first stage, waiting on
   * the doorbell until that many are free (the give that makes them so
   * rings it). 0 when the pipeline is cancelled or the first stage closed.
   */
  async #creditsForSource(want: number, least: number): Promise<number> {
    const control = this.#control;
    for (;;) {
      const seen = this.#bell.arm();
      try {
        const got = control.tryTake(0, want, least);
        if (got > 0) return got;
        if (control.cancelled || control.isClosed(0)) return 0;
        await this.#bell.wait(seen);
      } finally {
        this.#bell.disarm();
      }
    }
  }

  /** A source item that cannot cross to an interpreter, named by its position (the codec's path points into a batch). */
  #unshareableSourceItem(err: NotShareableError, values: unknown[], first: number): NotShareableError {
    const at = values.findIndex((value) => !isShareable(value));
    if (at < 0) return err;
    return new NotShareableError(
      `pipeline "${this.name}": source item ${first + at} ${previewOf(values[at])} cannot be sent to stage "${this.#stages[0]!.name}": ${err.message.replace(/^[^:]*: /, "")} (items must be shareable: see isShareable())`,
      err.path.replace(/^value\[1\]\[\d+\]/, "value"),
    );
  }

  /** Moves the last stage's batches into the iterator's queue until the output channel ends. */
  async #collect(): Promise<void> {
    if (!this.#output) return;
    const rx = this.#output[0];
    try {
      for (;;) {
        let batch: unknown[];
        // Workers ring the doorbell after each output batch they send and when they end
        // (closing their ends), teardown rings it too: one wait shared with the source reader.
        const seen = this.#bell.arm();
        let tried;
        try {
          tried = rx.tryRecv();
          if (!tried.ok && !tried.closed && !this.#teardown.signal.aborted) await this.#bell.wait(seen);
        } finally {
          this.#bell.disarm();
        }
        if (tried.ok) batch = tried.value;
        else if (tried.closed || this.#teardown.signal.aborted) break;
        else continue;
        this.#outQueue.push(batch);
        this.#wake();
      }
    } catch (err) {
      this.#fail(err); // never lose outputs silently: whatever broke the output channel fails the pipeline
    } finally {
      rx.close();
      this.#collected = true;
      this.#wake();
    }
  }

  /** Turns skip reports from the workers into 'skip' events. */
  async #relayEvents(): Promise<void> {
    const rx = this.#events[0];
    try {
      for (;;) {
        let event: SkipEvent;
        try {
          event = await rx.recv({ signal: this.#teardown.signal });
        } catch (err) {
          if (err instanceof ChannelClosedError || this.#teardown.signal.aborted) break;
          throw err;
        }
        const error = this.#failureOf({ stage: event.stage, worker: event.worker, index: event.index, preview: event.preview, remote: event.remote }, "skipped");
        if (this.listenerCount("skip") > 0) this.emit("skip", error);
      }
    } catch (err) {
      this.#fail(err); // a 'skip' listener that throws, or a broken events channel: surfaced, not swallowed
    } finally {
      rx.close();
    }
  }

  // ---- ending ----

  #fail(error: unknown): void {
    this.#stop({ kind: "failed", error });
  }

  /** Records how the pipeline ends (the first ending wins) and tears it down unless it completed. */
  #stop(ending: Ending): void {
    if (this.#ending || this.#settled) return;
    this.#ending = ending;
    if (ending.kind !== "completed") this.#tearDown();
    this.#wake();
  }

  /**
   * Cancels the control block (every credit and turn wait wakes and gives
   * up), terminates every interpreter started so far (later ones are
   * terminated as they come up), and stops reading the source.
   */
  #tearDown(): void {
    if (this.#tearingDown) return;
    this.#tearingDown = true;
    this.#control.cancel(this.#stages.length + 1);
    this.#teardown.abort();
    for (const run of this.#runs) {
      void run.interpreter?.terminate().catch(() => {});
      run.abort?.abort(new DOMException(`pipeline "${this.name}" is ending`, "AbortError"));
    }
    if (!this.#source.reading) void this.#source.close().catch(() => {});
    else void this.#source.close().catch(() => {}); // returned without waiting (see SourceReader.close)
  }

  async #finish(): Promise<void> {
    if (this.#settled) return;
    // Wait for every interpreter to be gone (they all are on the normal path; a teardown before #run started has none).
    await Promise.allSettled(this.#runs.map((run) => run.task ?? run.interpreter?.terminate()));
    this.#closeHandles();
    const now = this.#reader.snapshot();
    const final = this.#reader.compute(this.name, this.#startedAt, this.#first, now);
    this.#final = final;
    this.#settled = true;
    clearInterval(this.#statsTimer);
    if (this.#onAbort) this.#signal?.removeEventListener("abort", this.#onAbort);
    unregisterPipeline(this);
    const ending = this.#ending ?? { kind: "completed" };
    if (ending.kind === "failed") this.#rejectDone(ending.error);
    else if (ending.kind === "cancelled") this.#rejectDone(ending.reason);
    else this.#resolveDone(final);
    this.#wake();
  }

  /** Closes every handle the main thread still holds (idempotent; moved ones stay moved). */
  #closeHandles(): void {
    for (const pairs of this.#inputs) {
      for (const [rx, tx] of pairs) {
        rx.close();
        tx.close();
      }
    }
    for (const channel of this.#feedOutlet.spec.evict ?? []) channel.close();
    this.#output?.[0].close();
    this.#output?.[1].close();
    this.#events[0].close();
    this.#events[1].close();
    try {
      this.#sink?.close();
    } catch {
      // the user's handle was already closed or moved
    }
  }

  // ---- errors ----

  #failureOf(record: FailureRecord, what = "failed"): StageFailed {
    const where = record.worker >= 0 ? `stage "${record.stage}" worker ${record.worker}` : `stage "${record.stage}"`;
    const item = record.index === undefined ? undefined : { index: record.index, preview: record.preview ?? "" };
    let message: string;
    if (record.reason === "full") message = `${where} refused item ${item?.index} ${item?.preview}: ${record.remote.message}`;
    else if (item) message = `${where} ${what} on item ${item.index} ${item.preview}: ${record.remote.name}: ${record.remote.message}`;
    else message = `${where} ${what}: ${record.remote.name}: ${record.remote.message}`;
    if (what === "failed" && record.reason !== "full") message += ` (fix the stage, or give it onError: "skip" to count such items and go on)`;
    return this.#stageFailed(record, undefined, undefined, message, item);
  }

  #stageFailed(record: FailureRecord, cause: unknown, happened?: string, message?: string, item?: { index: number; preview: string }): StageFailed {
    const text = message ?? `stage "${record.stage}" worker ${record.worker} ${happened}: ${record.remote.name}: ${record.remote.message}`;
    const fields: { stage: string; worker: number; item?: { index: number; preview: string }; remote: RemoteErrorInfo } = {
      stage: record.stage,
      worker: record.worker,
      remote: record.remote,
    };
    if (item) fields.item = item;
    const error = new StageFailed(`pipeline "${this.name}": ${text}`, fields, cause === undefined ? undefined : { cause });
    if (record.remote.stack) error.stack = `${error.stack}\nRemote stack (${record.remote.name} in stage "${record.stage}"):\n${record.remote.stack}`;
    return error;
  }

  /** A StageFailed for a worker whose interpreter died (exit, crash, out of memory) while running. */
  #died(run: WorkerRun, err: unknown): StageFailed {
    const s = this.#stages[run.stage]!;
    if (this.#control.stats[run.statsSlot * WORKER_STATS + ENTERED] === 0) {
      const where = s.pool ? "on its pool" : "in its interpreter";
      const remote = remoteOf(err);
      return this.#stageFailed({ stage: s.name, worker: run.worker, remote }, err, undefined, `stage "${s.name}" worker ${run.worker} could not start ${where}: ${remote.name}: ${remote.message}`);
    }
    const index = this.#control.stats[run.statsSlot * WORKER_STATS + CURRENT_INDEX]!;
    const preview = this.#previewLeftBy(run.statsSlot);
    const remote = remoteOf(err);
    const item = index >= 0 ? { index, preview: preview ?? "(unavailable: the interpreter died before it could describe the item)" } : undefined;
    const during = item ? `while processing item ${item.index} ${item.preview}` : "between items";
    return this.#stageFailed(
      { stage: s.name, worker: run.worker, remote },
      err,
      undefined,
      `stage "${s.name}" worker ${run.worker}: its interpreter died ${during}: ${remote.name}: ${remote.message}`,
      item,
    );
  }

  /** The preview a worker's exit hook left in shared memory, if any. */
  #previewLeftBy(statsSlot: number): string | undefined {
    const previews = this.#control.previews;
    const at = statsSlot * PREVIEW_BYTES;
    const length = previews[at]! | (previews[at + 1]! << 8);
    if (length === 0) return undefined;
    return new TextDecoder().decode(previews.slice(at + 2, at + 2 + length));
  }
}

/** The stages, with names made unique within the pipeline ("parse", "parse-2", ...) so that stats and errors tell them apart. */
function withUniqueNames(stages: Stage[]): Stage[] {
  const seen = new Map<string, number>();
  return stages.map((s) => {
    const count = (seen.get(s.name) ?? 0) + 1;
    seen.set(s.name, count);
    return count === 1 ? s : { ...s, name: `${s.name}-${count}` };
  });
}

/** A stage's credits: capacity + workers (no bound for capacity Infinity). */
function creditsOf(s: Stage): number {
  return s.capacity === Infinity ? UNBOUNDED_CREDITS : s.capacity + s.workers;
}

/**
 * Items per message into a stage: half its credits per worker (so that
 * while one batch is processed the next can be on its way, and every
 * worker can have one), between 1 and MAX_BATCH. (A third of the credits
 * for 2 workers, i.e. one spare batch for the stage instead of one per
 * worker, made fewer, bigger messages but ran 10-20% slower in
 * bench:pipeline case B: the workers waited for input more often.)
 */
function batchOf(credits: number, workers: number): number {
  return Math.max(1, Math.min(MAX_BATCH, Math.floor(credits / (2 * workers))));
}

/**
 * How many free credits of the first stage wake the source reader: half the
 * stage's room (at least half a batch, at most 4 batches). Waking the main
 * thread costs tens of microseconds (a turn of its event loop), so it reads
 * and sends a good part of the room at a time rather than a few items each
 * time a worker finishes some.
 */
function feederLeast(first: Stage): number {
  const credits = creditsOf(first);
  const batch = batchOf(credits, first.workers);
  return Math.max(1, Math.min(credits, Math.max(Math.ceil(batch / 2), Math.min(Math.floor(credits / 2), 4 * batch))));
}

function remoteOf(err: unknown): RemoteErrorInfo {
  const remote = (err as { remote?: RemoteErrorInfo })?.remote;
  if (remote && typeof remote.name === "string") return remote;
  if (err instanceof Error) return { name: err.name, message: err.message, stack: err.stack ?? "" };
  return { name: "Error", message: String(err), stack: "" };
}
