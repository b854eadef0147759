/**
 * A stage's worker: the code each interpreter of a stage runs (through
 * `Interpreter.call(runner, "runStage", config)`). It imports the stage's
 * module, then takes batches from the stage's input channel, runs the
 * stage's function (or drives its generator) on every item, and sends the
 * outputs on through its Outlet, until the input ends, the stage after it
 * stops taking items, an item fails, or the pipeline is cancelled (the
 * main thread then terminates this interpreter).
 *
 * Credits (control.ts) taken by whoever sent a batch are given back here
 * once the batch's outputs have left: after each batch for function stages,
 * when the generator asks for the item after the batch for generator
 * stages. Before it sleeps waiting for input, a worker always flushes its
 * outputs and gives back every credit it holds, so a stage never waits for
 * input while holding the room its sender needs.
 *
 * Input order across several workers ("input", function stages): a worker
 * takes a batch under the stage's intake lock and numbers it; its outputs
 * leave only when the turnstile says every earlier batch has left. While it
 * waits for its turn it keeps taking batches if any are there (they wait,
 * finished, in its stash, within the stage's credits); it never sleeps on
 * the input with a stash, so the worker that holds the oldest batch always
 * makes progress.
 *
 * Synchronous stage code gets synchronous waits (recvSync, Atomics.wait);
 * an async function or async generator, or a function that returns a
 * promise, gets asynchronous waits, so that its timers and I/O run while
 * the worker waits.
 */
import { inspect } from "node:util";
import { ChannelClosedError, isShareable, NotShareableError, type RecvChannel, type RemoteErrorInfo, type SendChannel } from "../index.js";
import {
  BACKPRESSURED,
  BACKPRESSURED_MS,
  BUSY,
  BUSY_MS,
  Control,
  type ControlBuffers,
  CURRENT_INDEX,
  ENTERED,
  epochMs,
  FAILED,
  FINISHED,
  HISTOGRAM_BUCKETS,
  IDLE,
  IDLE_MS,
  IN,
  OUT,
  PREVIEW_BYTES,
  SAMPLED,
  SINCE,
  STARTED,
  STATE,
  TOTAL,
  WORKER_STATS,
  bucketOf,
} from "./control.js";
import { type BatchMessage, Cancelled, DownstreamClosed, IntakeFull, Outlet, type OutletSpec, type WaitObserver } from "./outlet.js";

/** What the main thread gives each worker (ends move in, buffers are shared). */
export interface RunnerConfig {
  pipeline: string;
  stage: string;
  /** The stage's credit slot (its position in the pipeline). */
  slot: number;
  /** This worker's index within its stage. */
  worker: number;
  /** How many workers the stage has. */
  workers: number;
  /** This worker's index in the statistics arrays (across all stages). */
  statsSlot: number;
  module: string;
  exportName: string;
  /** Function stages with several workers and order "input": number batches and take turns. */
  ordered: boolean;
  onError: "fail" | "skip";
  input: RecvChannel<BatchMessage>;
  outlet: OutletSpec;
  events: SendChannel<SkipEvent>;
  control: ControlBuffers;
  stats: boolean;
}

/** An item that failed under onError "skip", reported to the main thread. */
export interface SkipEvent {
  stage: string;
  worker: number;
  index: number;
  preview: string;
  remote: RemoteErrorInfo;
}

/** How a worker ended. */
export type RunnerResult =
  | { ok: true }
  | { ok: false; failure: FailureRecord };

export interface FailureRecord {
  /** The stage that failed (for a refused item: the stage that refused it). */
  stage: string;
  /** Worker index in that stage; -1 when the stage refused an item at its intake. */
  worker: number;
  index?: number;
  preview?: string;
  remote: RemoteErrorInfo;
  /** "full": refused by a stage with overflow "error". */
  reason?: "full";
}

/** What a stage's code is given with each item (or with its items). */
export interface StageContext {
  /** The stage's name. */
  stage: string;
  /** This worker's index within the stage (0-based). */
  worker: number;
  /** Aborted when the pipeline is cancelled or fails. */
  signal: AbortSignal;
}

/**
 * A batch could not be sent because one of its outputs cannot cross to
 * another interpreter: names the first such output and the item it came
 * from (the codec's path points into the batch, which the user never saw).
 */
export class UnshareableOutput extends Error {
  constructor(readonly index: number, readonly output: unknown, cause: NotShareableError) {
    super(`the output for item ${index} cannot be sent to the next stage: ${cause.message.replace(/^[^:]*: /, "")} (outputs must be shareable: see isShareable())`, { cause });
    this.name = "NotShareableError";
  }
}

function unshareableOutput(err: NotShareableError, values: unknown[], indices: number[]): Error {
  const at = values.findIndex((value) => !isShareable(value));
  return at < 0 ? err : new UnshareableOutput(indices[at]!, values[at], err);
}

/** A short printable preview of an item (for errors). */
export function previewOf(value: unknown): string {
  let text: string;
  try {
    text = inspect(value, { depth: 2, breakLength: Infinity, maxArrayLength: 8, maxStringLength: 80, compact: true });
  } catch {
    text = Object.prototype.toString.call(value);
  }
  return text.length > 120 ? `${text.slice(0, 117)}...` : text;
}

export function errorInfo(err: unknown): RemoteErrorInfo {
  if (err instanceof Error) return { name: err.name, message: err.message, stack: err.stack ?? `${err.name}: ${err.message}` };
  let text: string;
  try {
    text = typeof err === "string" ? err : (JSON.stringify(err) ?? String(err));
  } catch {
    text = String(err);
  }
  return { name: "Error", message: `a non-Error value was thrown: ${text}`, stack: "" };
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return value !== null && (typeof value === "object" || typeof value === "function") && typeof (value as { then?: unknown }).then === "function";
}

const AsyncFunction = (async () => {}).constructor;
const GeneratorFunction = function* () {}.constructor;
const AsyncGeneratorFunction = async function* () {}.constructor;

/**
 * The per-worker statistics (control.ts, WORKER_STATS): the state the
 * worker is in since when, time accumulated per state, counts, and a
 * sampled histogram of per-item service times. With statistics off, only
 * the counts are kept.
 */
class Recorder implements WaitObserver {
  readonly #stats: Float64Array;
  readonly #histogram: Int32Array;
  readonly #base: number;
  readonly #histBase: number;
  readonly on: boolean;
  #state = IDLE;
  #since = 0;

  constructor(control: Control, slot: number, on: boolean) {
    this.#stats = control.stats;
    this.#histogram = control.histogram;
    this.#base = slot * WORKER_STATS;
    this.#histBase = slot * HISTOGRAM_BUCKETS;
    this.on = on;
    if (on) {
      this.#since = epochMs();
      this.#stats[this.#base + STATE] = BUSY;
      this.#state = BUSY;
      this.#stats[this.#base + SINCE] = this.#since;
      this.#stats[this.#base + STARTED] = this.#since;
    }
  }

  /** Enters `state` now, adding the time spent in the previous one to its total. */
  enter(state: number): void {
    if (!this.on || state === this.#state) return;
    const now = epochMs();
    const field = this.#state === BUSY ? BUSY_MS : this.#state === BACKPRESSURED ? BACKPRESSURED_MS : IDLE_MS;
    this.#stats[this.#base + SINCE] = now;
    this.#stats[this.#base + field] += now - this.#since;
    this.#stats[this.#base + STATE] = state;
    this.#state = state;
    this.#since = now;
  }

  waiting(): void {
    this.enter(BACKPRESSURED);
  }

  resumed(): void {
    this.enter(BUSY);
  }

  finish(): void {
    this.enter(FINISHED);
  }

  countIn(n: number): void {
    this.#stats[this.#base + IN] += n;
  }

  countOut(n: number): void {
    this.#stats[this.#base + OUT] += n;
  }

  countFailed(): void {
    this.#stats[this.#base + FAILED] += 1;
  }

  current(index: number): void {
    this.#stats[this.#base + CURRENT_INDEX] = index;
  }

  /** Records `count` items that took `us` microseconds each. */
  sample(us: number, count = 1): void {
    this.#histogram[this.#histBase + bucketOf(us)]! += count;
    this.#stats[this.#base + SAMPLED] += count;
  }
}

/** The item being processed right now (for the exit hook's preview). */
let currentItem: { value: unknown } | undefined;
let exitHookFor: { previews: Uint8Array; at: number } | undefined;

let exitHookInstalled = false;
/**
 * If the interpreter exits (process.exit) while an item is being processed,
 * leave its preview behind. One listener per thread (a pooled interpreter
 * runs many workers in turn); it describes the current worker's item.
 */
function installExitHook(control: Control, statsSlot: number): void {
  exitHookFor = { previews: control.previews, at: statsSlot * PREVIEW_BYTES };
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    if (!exitHookFor || !currentItem) return;
    const bytes = new TextEncoder().encode(previewOf(currentItem.value)).subarray(0, PREVIEW_BYTES - 2);
    const { previews, at } = exitHookFor;
    previews.set(bytes, at + 2);
    previews[at] = bytes.length & 0xff;
    previews[at + 1] = bytes.length >> 8;
  });
}

type StageFunction = (item: unknown, context: StageContext) => unknown;
type StageGenerator = (items: Iterable<unknown> | AsyncIterable<unknown>, context: StageContext) => Iterator<unknown> | AsyncIterator<unknown>;

/** Runs one worker of a stage until its input ends; see the module comment. Never throws for a stage's own failure: it returns it. */
export async function runStage(config: RunnerConfig): Promise<RunnerResult> {
  const control = new Control(config.control);
  control.stats[config.statsSlot * WORKER_STATS + ENTERED] = 1;
  installExitHook(control, config.statsSlot);
  const controller = new AbortController();
  watchCancel(control, config.statsSlot, controller);
  const context: StageContext = { stage: config.stage, worker: config.worker, signal: controller.signal };
  const failure = (err: unknown, index?: number, value?: unknown): RunnerResult => ({
    ok: false,
    failure: {
      stage: config.stage,
      worker: config.worker,
      index,
      preview: index === undefined ? undefined : previewOf(value),
      remote: errorInfo(err),
    },
  });

  let handler: unknown;
  try {
    const namespace = (await import(config.module)) as Record<string, unknown>;
    handler = namespace[config.exportName];
    if (typeof handler !== "function") {
      throw new TypeError(`export "${config.exportName}" of ${config.module} is ${handler === undefined ? "missing" : `a ${typeof handler}, not a function or generator function`}`);
    }
  } catch (err) {
    closeAll(config);
    control.stopReceiving(config.slot);
    control.ringMain(); // the main thread may be waiting on the ends this worker closed
    unwatchCancel(control, config.statsSlot);
    return failure(err);
  }

  // Statistics start once the stage's code is loaded: loading is not the stage's work.
  const recorder = new Recorder(control, config.statsSlot, config.stats);
  const outlet = new Outlet(config.outlet, control, recorder);
  const isGenerator = handler instanceof GeneratorFunction || handler instanceof AsyncGeneratorFunction;
  if (isGenerator) config.ordered = false; // a generator's outputs are not tied to its inputs: no turns to take
  const worker = new Worker(config, control, recorder, outlet, context);
  let result: RunnerResult;
  try {
    if (isGenerator) {
      result = await worker.runGenerator(handler as StageGenerator, handler instanceof AsyncGeneratorFunction);
    } else {
      result = await worker.runFunction(handler as StageFunction, handler instanceof AsyncFunction);
    }
  } catch (err) {
    if (err instanceof IntakeFull) {
      result = {
        ok: false,
        failure: {
          stage: err.target,
          worker: -1,
          index: err.index,
          preview: previewOf(err.value),
          remote: errorInfo(err),
          reason: "full",
        },
      };
    } else if (err instanceof UnshareableOutput) {
      result = { ok: false, failure: { stage: config.stage, worker: config.worker, index: err.index, preview: previewOf(err.output), remote: errorInfo(err) } };
    } else if (err instanceof Cancelled || err instanceof DownstreamClosed) {
      // The next stage stopped taking items: so does this one, and siblings waiting for a turn stop too.
      control.endTurns(config.slot);
      result = { ok: true };
    } else {
      result = failure(err, worker.currentIndex, currentItem?.value);
    }
  }
  currentItem = undefined;
  recorder.current(-1);
  closeAll(config);
  control.stopReceiving(config.slot);
  control.ringMain(); // the main thread may be waiting on the ends this worker closed
  recorder.finish();
  unwatchCancel(control, config.statsSlot);
  currentItem = undefined;
  return result;
}

/** Closes every channel end this worker holds (the Go rule: what it sends on, once it is done). */
function closeAll(config: RunnerConfig): void {
  for (const channel of config.outlet.channels) channel.close();
  for (const channel of config.outlet.evict ?? []) channel.close();
  config.input.close();
  config.events.close();
}

/**
 * Aborts the stage's signal when the pipeline is cancelled: waits
 * (Atomics.waitAsync) on this worker's signal word, which main sets to 1 on
 * cancel and the worker to 2 when it ends (so no wait outlives it).
 */
function watchCancel(control: Control, statsSlot: number, controller: AbortController): void {
  const wait = Atomics.waitAsync(control.signals, statsSlot, 0);
  const check = (): void => {
    if (Atomics.load(control.signals, statsSlot) === 1) controller.abort(new Cancelled());
  };
  if (wait.async) void wait.value.then(check);
  else check();
}

/** This worker is done: its cancel watcher may go. */
function unwatchCancel(control: Control, statsSlot: number): void {
  if (Atomics.compareExchange(control.signals, statsSlot, 0, 2) === 0) Atomics.notify(control.signals, statsSlot);
}

/** A batch taken from the input. */
interface Taken {
  indices: number | Float64Array;
  values: unknown[];
  /** Its number, under input order with several workers. */
  seq: number;
}

/** Outputs of a finished batch waiting for their turn to leave (input order). */
interface Finished {
  seq: number;
  values: unknown[];
  indices: number[];
  /** Items the batch had: credits given back once it has left. */
  inputs: number;
}

/** Consecutive finished batches as one (their outputs in order; their inputs' credits together). */
function joined(batches: Finished[]): Finished {
  const into: Finished = { seq: batches[0]!.seq, values: [], indices: [], inputs: 0 };
  for (const batch of batches) {
    for (let i = 0; i < batch.values.length; i++) {
      into.values.push(batch.values[i]);
      into.indices.push(batch.indices[i]!);
    }
    into.inputs += batch.inputs;
  }
  return into;
}

/** Most inputs a worker holds, done, before it sends their outputs on (see #runUnordered). */
const MAX_HELD_INPUTS = 1024;

/** take() found no batch it may take without sleeping while it has a stash: wait for a turn instead. */
const WAIT_TURN = Symbol("wait for turn");

class Worker {
  readonly #config: RunnerConfig;
  readonly #control: Control;
  readonly #recorder: Recorder;
  readonly #outlet: Outlet;
  readonly #context: StageContext;
  readonly #slot: number;
  /** Synchronous waits (recvSync, Atomics.wait) or asynchronous ones. */
  #sync = true;
  currentIndex: number | undefined;
  /** When the last batch finished processing (performance.now()), 0 before the first. */
  #lastBatchEnd = 0;
  /** Items between two timed ones (adapted to the items' cost: see #adaptSampling). */
  #sampleEvery = 1;
  #untilSample = 1;

  constructor(config: RunnerConfig, control: Control, recorder: Recorder, outlet: Outlet, context: StageContext) {
    this.#config = config;
    this.#control = control;
    this.#recorder = recorder;
    this.#outlet = outlet;
    this.#context = context;
    this.#slot = config.slot;
  }

  // ---- taking input ----

  /**
   * The next batch: without sleeping if one is there; else, with an empty
   * stash, sleeping until one comes (null: the input ended); with a
   * non-empty stash, WAIT_TURN instead of sleeping.
   */
  async #take(stashed: boolean): Promise<Taken | null | typeof WAIT_TURN> {
    const input = this.#config.input;
    if (!this.#config.ordered) {
      const tried = input.tryRecv();
      if (tried.ok) return this.#taken(tried.value, -1);
      if (tried.closed) return null;
      return this.#sleepForInput(-1);
    }
    const slot = this.#slot;
    if (stashed) {
      if (!this.#control.tryLockIntake(slot)) return WAIT_TURN;
      try {
        const tried = input.tryRecv();
        if (!tried.ok) return WAIT_TURN;
        return this.#taken(tried.value, this.#control.nextIntakeSeq(slot));
      } finally {
        this.#control.unlockIntake(slot);
      }
    }
    this.#recorder.enter(IDLE);
    const locked = this.#sync ? this.#control.lockIntakeSync(slot) : await this.#control.lockIntakeAsync(slot);
    if (!locked) throw new Cancelled();
    try {
      const tried = input.tryRecv();
      if (tried.ok) return this.#taken(tried.value, this.#control.nextIntakeSeq(slot));
      if (tried.closed) return null;
      return await this.#sleepForInput(0);
    } finally {
      this.#control.unlockIntake(slot);
      this.#recorder.enter(BUSY);
    }
  }

  /** Sleeps on the input channel (idle) until a batch comes; numbers it if `seq` >= 0. */
  async #sleepForInput(seq: number): Promise<Taken | null> {
    const input = this.#config.input;
    this.#recorder.enter(IDLE);
    let message: BatchMessage;
    try {
      message = this.#sync ? input.recvSync() : await input.recv();
    } catch (err) {
      if (err instanceof ChannelClosedError) return null;
      throw err;
    } finally {
      this.#recorder.enter(BUSY);
    }
    return this.#taken(message, seq < 0 ? -1 : this.#control.nextIntakeSeq(this.#slot));
  }

  #taken(message: BatchMessage, seq: number): Taken {
    const [indices, values] = message;
    this.#recorder.countIn(values.length);
    return { indices, values, seq };
  }

  // ---- function stages ----

  async runFunction(fn: StageFunction, isAsync: boolean): Promise<RunnerResult> {
    this.#sync = !isAsync;
    if (!this.#config.ordered) return this.#runUnordered(fn);
    const ordered = true;
    const stash: Finished[] = [];
    for (;;) {
      if (ordered) await this.#emitReady(stash);
      const taken = await this.#take(stash.length > 0);
      if (taken === WAIT_TURN) {
        await this.#awaitTurn(stash[0]!.seq);
        continue;
      }
      if (taken === null) {
        if (stash.length === 0) break;
        await this.#awaitTurn(stash[0]!.seq);
        continue;
      }
      const finished: Finished = { seq: taken.seq, values: [], indices: [], inputs: taken.values.length };
      const failed = await this.#process(fn, taken, finished);
      if (failed) return failed;
      if (!ordered) {
        await this.#emit(finished);
      } else if (stash.length === 0 && this.#control.isTurn(this.#slot, finished.seq)) {
        await this.#emit(finished);
        this.#control.passTurn(this.#slot, finished.seq);
      } else {
        stash.push(finished);
      }
    }
    return { ok: true };
  }

  /**
   * A function stage whose outputs need not wait for turns (one worker, or
   * order "completion" or key). While more input is there at once, the
   * outputs of several batches go on together, up to half a batch of the
   * next hop or this worker's share of its stage's credits, so that a stage
   * of costly items (a few per batch) does not wake its receiver, maybe the
   * main thread, for every few items. Before it would wait for input it
   * always sends what it holds and gives the credits back.
   */
  async #runUnordered(fn: StageFunction): Promise<RunnerResult> {
    const input = this.#config.input;
    const share = Math.max(1, Math.min(MAX_HELD_INPUTS, Math.floor(this.#control.read(this.#slot, TOTAL) / this.#config.workers)));
    const enough = Math.max(1, Math.ceil(this.#outlet.spec.batch / 2));
    let held: Finished = { seq: -1, values: [], indices: [], inputs: 0 };
    for (;;) {
      let taken: Taken | null;
      const tried = input.tryRecv();
      if (tried.ok) taken = this.#taken(tried.value, -1);
      else {
        if (held.inputs > 0) {
          await this.#emit(held);
          held = { seq: -1, values: [], indices: [], inputs: 0 };
        }
        if (tried.closed) break;
        taken = await this.#sleepForInput(-1);
        if (taken === null) break;
      }
      held.inputs += taken.values.length;
      const failed = await this.#process(fn, taken, held);
      if (failed) return failed;
      if (held.values.length >= enough || held.inputs >= share) {
        await this.#emit(held);
        held = { seq: -1, values: [], indices: [], inputs: 0 };
      }
    }
    if (held.inputs > 0) await this.#emit(held);
    return { ok: true };
  }

  /** Runs `fn` on every item of the batch; outputs go to `into`. Returns a failure under onError "fail". */
  async #process(fn: StageFunction, taken: Taken, into: Finished): Promise<RunnerResult | undefined> {
    const { indices, values } = taken;
    const context = this.#context;
    const recorder = this.#recorder;
    const timing = recorder.on;
    // The batch is timed from the end of the one before (what lies between, a send and a take, is
    // small): one clock read per batch (about 60 ns) instead of two.
    const started = this.#lastBatchEnd;
    const holder = { value: undefined as unknown };
    currentItem = holder;
    for (let i = 0; i < values.length; i++) {
      const index = typeof indices === "number" ? indices + i : indices[i]!;
      const value = values[i];
      holder.value = value;
      this.currentIndex = index;
      recorder.current(index);
      let result: unknown;
      const timed = timing && --this.#untilSample <= 0;
      const t0 = timed ? performance.now() : 0;
      try {
        result = fn(value, context);
        if (isThenable(result)) {
          this.#sync = false; // it waits on promises: let its event loop run while the worker waits too
          result = await result;
        }
      } catch (err) {
        if (this.#config.onError === "fail") return { ok: false, failure: { stage: this.#config.stage, worker: this.#config.worker, index, preview: previewOf(value), remote: errorInfo(err) } };
        await this.#skip(err, index, value);
        continue;
      }
      if (timed) {
        recorder.sample((performance.now() - t0) * 1000);
        this.#untilSample = this.#sampleEvery;
      }
      if (result !== undefined) {
        into.values.push(result);
        into.indices.push(index);
      }
    }
    if (timing) {
      const ended = performance.now();
      if (started > 0) this.#adaptSampling(ended - started, values.length);
      this.#lastBatchEnd = ended;
    }
    return undefined;
  }

  /**
   * Times one item in 1 (items of 10 µs and more: two clock reads, about
   * 120 ns, are about 1% of the work), in 16 (1-10 µs) or in 256 (cheaper
   * items), so that the statistics cost stays under 2% of any stage's work
   * (measured with bench:pipeline, case D).
   */
  #adaptSampling(batchMs: number, items: number): void {
    if (items === 0) return;
    const meanUs = (batchMs * 1000) / items;
    this.#sampleEvery = meanUs >= 10 ? 1 : meanUs >= 1 ? 16 : 256;
    if (this.#untilSample > this.#sampleEvery) this.#untilSample = this.#sampleEvery;
  }

  /** Counts a failed item under onError "skip" and reports it to the main thread. */
  async #skip(err: unknown, index: number, value: unknown): Promise<void> {
    this.#recorder.countFailed();
    const event: SkipEvent = { stage: this.#config.stage, worker: this.#config.worker, index, preview: previewOf(value), remote: errorInfo(err) };
    const events = this.#config.events;
    try {
      if (!events.trySend(event)) {
        if (this.#sync) events.sendSync(event);
        else await events.send(event);
      }
    } catch (sendErr) {
      if (!(sendErr instanceof ChannelClosedError)) throw sendErr;
    }
  }

  /** Sends a finished batch's outputs on and gives back its credits. */
  async #emit(finished: Finished): Promise<void> {
    const outlet = this.#outlet;
    const { values, indices } = finished;
    for (let i = 0; i < values.length; i++) outlet.push(values[i], indices[i]!);
    try {
      if (this.#sync) outlet.flushSync();
      else await outlet.flushAsync();
    } catch (err) {
      throw err instanceof NotShareableError ? unshareableOutput(err, values, indices) : err;
    }
    this.#recorder.countOut(values.length);
    this.#control.give(this.#slot, finished.inputs);
  }

  /**
   * Emits every stashed batch whose turn has come, oldest first. Batches
   * this worker took one after the other (consecutive numbers) leave
   * together, in one flush: the turn is this worker's for all of them, and
   * one message (one wake-up of the receiver) instead of several.
   */
  async #emitReady(stash: Finished[]): Promise<void> {
    while (stash.length > 0 && this.#control.isTurn(this.#slot, stash[0]!.seq)) {
      let run = 1;
      while (run < stash.length && stash[run]!.seq === stash[run - 1]!.seq + 1) run++;
      const leaving = stash.splice(0, run);
      await this.#emit(run === 1 ? leaving[0]! : joined(leaving));
      for (const finished of leaving) this.#control.passTurn(this.#slot, finished.seq);
    }
  }

  /** Waits until batch `seq` may leave (counted as busy: the stage's own work holds it). */
  async #awaitTurn(seq: number): Promise<void> {
    const ok = this.#sync ? this.#control.awaitTurnSync(this.#slot, seq) : await this.#control.awaitTurnAsync(this.#slot, seq);
    if (!ok) throw new Cancelled();
  }

  // ---- generator stages ----

  /**
   * Drives the stage's generator over this worker's items. Its outputs are
   * sent on in batches; the credits of a batch of inputs are given back
   * when the generator asks for the item after it (the generator holds one
   * item at a time, as far as the pipeline can tell; what it keeps in its
   * own state is its business). Under onError "skip" a generator that
   * throws is counted, reported, and started again on the remaining items
   * (its state is lost, as with Akka's Restart).
   */
  async runGenerator(generator: StageGenerator, isAsync: boolean): Promise<RunnerResult> {
    this.#sync = !isAsync;
    const outlet = this.#outlet;
    const recorder = this.#recorder;
    let batch: Taken | undefined;
    let position = 0;
    let ended = false;
    const holder = { value: undefined as unknown };
    currentItem = holder;
    let batchStarted = 0;

    /** Gives back the finished batch's credits (after sending what it led to); true when there is a next one. */
    const release = (): number => {
      if (!batch) return 0;
      const inputs = batch.values.length;
      batch = undefined;
      if (recorder.on) recorder.sample(((performance.now() - batchStarted) * 1000) / inputs, inputs);
      return inputs;
    };
    const started = (taken: Taken | null): boolean => {
      if (taken === null) {
        ended = true;
        return false;
      }
      batch = taken;
      position = 0;
      batchStarted = recorder.on ? performance.now() : 0;
      return true;
    };
    const refillSync = (): boolean => {
      const inputs = release();
      this.#outlet.flushSync();
      this.#control.give(this.#slot, inputs);
      return started(this.#takeSync());
    };
    const refillAsync = async (): Promise<boolean> => {
      const inputs = release();
      await this.#outlet.flushAsync();
      this.#control.give(this.#slot, inputs);
      const taken = await this.#take(false);
      return started(taken === WAIT_TURN ? null : taken);
    };
    const nextItem = (): IteratorResult<unknown> => {
      const current = batch!;
      const value = current.values[position];
      const index = typeof current.indices === "number" ? current.indices + position : current.indices[position]!;
      position++;
      holder.value = value;
      this.currentIndex = index;
      recorder.current(index);
      return { value, done: false };
    };
    const done: IteratorResult<unknown> = { value: undefined, done: true };

    // A sync generator gets a sync iterable whose waits are synchronous; an async one an async iterable.
    const items: Iterable<unknown> & AsyncIterable<unknown> = {
      [Symbol.iterator]: () => ({
        next: (): IteratorResult<unknown> => {
          if (ended) return done;
          if (batch && position < batch.values.length) return nextItem();
          return refillSync() ? nextItem() : done;
        },
      }),
      [Symbol.asyncIterator]: () => ({
        next: async (): Promise<IteratorResult<unknown>> => {
          if (ended) return done;
          if (batch && position < batch.values.length) return nextItem();
          return (await refillAsync()) ? nextItem() : done;
        },
      }),
    };

    for (;;) {
      let iterator: Iterator<unknown> | AsyncIterator<unknown>;
      try {
        iterator = generator(items, this.#context);
      } catch (err) {
        return { ok: false, failure: { stage: this.#config.stage, worker: this.#config.worker, remote: errorInfo(err) } };
      }
      try {
        for (;;) {
          const step = this.#sync ? (iterator as Iterator<unknown>).next() : await (iterator as AsyncIterator<unknown>).next();
          if (step.done) break;
          if (step.value !== undefined) {
            outlet.push(step.value, this.currentIndex ?? -1);
            recorder.countOut(1);
            if (outlet.pending >= outlet.spec.batch) await this.#flush();
          }
        }
        break;
      } catch (err) {
        if (err instanceof Cancelled || err instanceof DownstreamClosed || err instanceof IntakeFull) throw err;
        if (this.#config.onError === "fail") {
          return { ok: false, failure: { stage: this.#config.stage, worker: this.#config.worker, index: this.currentIndex, preview: this.currentIndex === undefined ? undefined : previewOf(holder.value), remote: errorInfo(err) } };
        }
        await this.#skip(err, this.currentIndex ?? -1, holder.value);
        if (ended) break;
      }
    }
    // The generator is done (or returned early): send what it left, give back what is held.
    await this.#flush();
    if (batch) this.#control.give(this.#slot, batch.values.length);
    return { ok: true };
  }

  /** #take for unordered stages, fully synchronous (sync generators call it from their items' next()). */
  #takeSync(): Taken | null {
    const input = this.#config.input;
    const tried = input.tryRecv();
    if (tried.ok) return this.#taken(tried.value, -1);
    if (tried.closed) return null;
    this.#recorder.enter(IDLE);
    try {
      return this.#taken(input.recvSync(), -1);
    } catch (err) {
      if (err instanceof ChannelClosedError) return null;
      throw err;
    } finally {
      this.#recorder.enter(BUSY);
    }
  }

  async #flush(): Promise<void> {
    if (this.#sync) this.#outlet.flushSync();
    else await this.#outlet.flushAsync();
  }
}
