/**
 * InterpreterPool: a pool of interpreters on tinypool. tinypool starts,
 * queues for, dispatches to, idles out and replaces the threads; this
 * module makes each of its threads an interpreter (pool-thread.ts,
 * workers/pool-worker.ts) and gives tasks the library's guarantees: channel
 * ends passed as arguments move in and are released whatever dies when,
 * errors come back as ExecutionFailed, a dead thread's task is rejected only
 * after what it held is released.
 *
 * A task's way (see protocol.ts and task-table.ts):
 *
 * 1. `run` checks the input and the queue limit, takes an entry in the task
 *    table (state QUEUED), encodes the arguments (nothing is moved if they
 *    cannot cross) and hands the payload to tinypool: one *delivery*.
 * 2. A thread that receives a delivery claims the task in the table
 *    (QUEUED -> started by its slot); a delivery that finds it claimed or
 *    cancelled is skipped. So a task runs at most once however often it is
 *    delivered, and the pool may deliver it again whenever a delivery is
 *    lost with a thread, without asking where it went.
 * 3. The thread sends the result on its results channel, marks the task
 *    finished, and answers tinypool with its slot; the owner takes the
 *    result off that thread's channel.
 * 4. A task settles once; its table entry is reused (and its arguments'
 *    channel closed) once every delivery of it has come back.
 *
 * Where tinypool cannot serve, and what this module does instead:
 *
 * - Thread identity: tinypool gives every thread the same workerData and
 *   no hook when it starts one, so a new thread asks for its party slot and
 *   supervisor link on a BroadcastChannel and gets them through
 *   `TinypoolWorker.postMessage` (pool-thread.ts).
 * - A thread that exits without an error (`process.exit()` in a task, or
 *   terminated to abort its task): tinypool listens only for 'error', so
 *   the thread would stay in its list and its task would never settle. The
 *   pool emits 'error' on tinypool's worker for it (onThreadExit).
 * - Refilling after a death: tinypool replaces a dead thread only up to
 *   `minThreads`, so with tasks queued and fewer threads alive the queue
 *   would stall until the next `run()` (piscina 5 does the same). The pool
 *   hands the newest queued task to tinypool again, which starts a thread
 *   for it (refill).
 * - Aborts: tinypool's abort rejects a running task at once, before its
 *   thread has exited and its ends are released; and a task refused by
 *   tinypool's maxQueue keeps its abort listener, which throws (an
 *   assertion in its queue's `remove`) if the signal is aborted later. So
 *   signals never reach tinypool: a queued task is taken out of the queue
 *   (this pool's PoolTaskQueue), a running one's thread is terminated, and
 *   the queue limit is checked here, before anything is encoded.
 * - Idle threads: tinypool's default `useAtomics` parks an idle thread in a
 *   synchronous Atomics.wait, where its event loop does not run (timers,
 *   async channel operations a task left behind would stall); an
 *   interpreter's event loop runs, so the pool sets `useAtomics: false`.
 */
import { availableParallelism } from "node:os";
import { BroadcastChannel } from "node:worker_threads";
import { fileURLToPath } from "node:url";
import Tinypool, { type Task, type TinypoolWorker } from "tinypool";
import type { ResourceLimits } from "node:worker_threads";
import { ChannelFullError, createChannel, ExecutionFailed, InterpreterClosedError, InterpretersError, type RecvChannel, type Shareable } from "../index.js";
import {
  encodeForChannel,
  endOf,
  ensureSupervisor,
  type ErrorRecord,
  errorToRecord,
  execArgvForWorkers,
  executionFailedFrom,
  MAX_PARTIES,
  nextObjectId,
  R_ATTACH,
  resolveModule,
} from "../internals.js";
import { PoolThread } from "./pool-thread.js";
import { copyOut, decodeEncoded } from "./encoded.js";
import { type EncodedArgs, HANDLER_NAME, type Identity, IDENTITY_KIND, type IdentityRequest, isPlain, isPlainData, type PoolWorkerData, SKIPPED, type TaskOutcome, type TaskPayload, type TaskResult } from "./protocol.js";
import { PoolTaskQueue } from "./task-queue.js";
import { MAX_TASKS, slotOfState, TaskState, TaskTable } from "./task-table.js";

export interface PoolOptions {
  /** Shown in errors and in its interpreters' names (`<name>-1`, ...). Default `pool-<n>`. */
  name?: string;
  /** Interpreters kept even when idle (started at once). Default 0. */
  minInterpreters?: number;
  /** Most interpreters at once. Default `os.availableParallelism()`. */
  maxInterpreters?: number;
  /** Milliseconds an idle interpreter above `minInterpreters` lives. Default 10 000; Infinity keeps them. */
  idleTimeout?: number;
  /** Tasks that may wait for an interpreter while all are busy. Default Infinity; 0 = never wait. */
  maxQueue?: number;
  /** V8 limits of each interpreter's heap and stack (a task that exceeds them ends its interpreter). */
  resourceLimits?: ResourceLimits;
  /** process.env in each interpreter (default: a copy of this thread's). */
  env?: Record<string, string>;
}

export interface PoolTask {
  /**
   * The module to import in the interpreter, as for Interpreter.call: a URL,
   * an absolute path, or a relative (`"./tasks.js"`) or bare (`"lodash"`)
   * specifier, resolved against the file that called `call`/`run`.
   */
  module: string | URL;
  /** The export to call (default `"default"`). */
  export?: string;
  /** Its arguments, each moved or copied as by a channel (ends move in; Lock, Semaphore, Event, SharedArrayBuffer are shared). */
  args?: Shareable[];
  /** Aborting removes the task if it waits, or ends its interpreter if it runs (rejecting with the signal's reason). */
  signal?: AbortSignal;
}

export interface PoolStats {
  /** Interpreters alive (starting ones included). */
  interpreters: number;
  /** Interpreters running a task. */
  busy: number;
  /** Tasks waiting for an interpreter. */
  queued: number;
  /** Tasks that resolved. */
  completed: number;
  /** Tasks that rejected after they were accepted (threw, their interpreter died, aborted, pool terminated). */
  failed: number;
}

/** One accepted task, from `run` until its last delivery has come back. */
interface PendingTask {
  readonly index: number;
  readonly label: string;
  readonly payload: TaskPayload;
  /** The receive end of the arguments' channel (when they carry ends): closed when the task is done. */
  readonly carrier: RecvChannel<unknown> | undefined;
  readonly resolve: (value: unknown) => void;
  readonly reject: (reason: unknown) => void;
  readonly signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
  settled: boolean;
  /** Deliveries handed to tinypool and not yet come back. */
  deliveries: number;
  /** This task's entry in the queue, while it waits there. */
  queued: Task | undefined;
  /** Arguments posted as they are, by structured clone, until their first delivery is posted or queued (see #encode). */
  unposted: ReturnType<typeof encodeForChannel> | typeof PLAIN_DATA | undefined;
  /** Aborted while running: its thread is being ended; the result, if any, is dropped. */
  aborted: boolean;
  /** Waiting for its thread to be gone (once). */
  awaitingThread: boolean;
  finished: boolean;
}

/** The payload's queue options (tinypool's symbol; see PoolTaskQueue): the pending task. Symbol keys are not posted. */
const PENDING = Tinypool.queueOptionsSymbol;
const DEFAULT_IDLE_TIMEOUT = 10_000;
/** PendingTask.unposted for arguments that isPlainData accepted (no codec bytes were made). */
const PLAIN_DATA = Symbol("plain data");
/** setTimeout's longest delay: tinypool's idle timer with a longer one would fire at once. */
const LONGEST_TIMEOUT = 2 ** 31 - 1;

let poolsCreated = 0;

/**
 * A pool of interpreters that run tasks: `call(module, export, ...args)`
 * imports `module` in a free interpreter and calls the export, as
 * Interpreter.call does. Built on tinypool. Every thread of the pool is an
 * interpreter: `current()` works there, channel ends passed as arguments
 * move in, Lock/Semaphore/Event are shared, deadlock detection covers it,
 * and when it dies (exit, crash, resource limits, abort) every end and Lock
 * it held is released and the pool replaces it.
 *
 * An idle pool never keeps the process alive; a pending task does.
 */
export class InterpreterPool {
  readonly name: string;
  readonly #min: number;
  readonly #max: number;
  readonly #maxQueue: number;
  readonly #table = new TaskTable();
  readonly #queue: PoolTaskQueue;
  readonly #tinypool: Tinypool;
  readonly #requests: BroadcastChannel;
  /** Threads that have an identity, by party slot, until the supervisor has released them. */
  readonly #threads = new Map<number, PoolThread>();
  readonly #identified = new WeakSet<TinypoolWorker>();
  /** Tasks not finished (unsettled, or with deliveries out), by table index. */
  readonly #tasks = new Map<number, PendingTask>();
  #threadsStarted = 0;
  #deliveries = 0;
  #completed = 0;
  #failed = 0;
  #state: "open" | "closing" | "terminating" | "closed" = "open";
  #idleWaiters: Array<() => void> = [];
  #closing: Promise<void> | undefined;
  #shutdown: Promise<void> | undefined;

  /**
   * Creates the pool; `minInterpreters` interpreters start at once, the
   * others when tasks need them. Throws RangeError or TypeError for bad
   * options (nothing is started).
   */
  constructor(options: PoolOptions = {}) {
    if (options === null || typeof options !== "object") throw new TypeError(`InterpreterPool: options must be an object, got ${options === null ? "null" : typeof options}`);
    const name = options.name ?? `pool-${++poolsCreated}`;
    if (typeof name !== "string" || name === "") throw new TypeError(`InterpreterPool: name must be a non-empty string, got ${JSON.stringify(name) ?? typeof name}`);
    const what = `InterpreterPool "${name}"`;
    this.name = name;
    this.#min = checkCount(what, "minInterpreters", options.minInterpreters, 0, 0);
    this.#max = checkCount(what, "maxInterpreters", options.maxInterpreters, availableParallelism(), 1);
    if (this.#max > MAX_PARTIES - 2) throw new RangeError(`${what}: maxInterpreters must be at most ${MAX_PARTIES - 2} (the process's interpreter slots), got ${this.#max}`);
    if (this.#min > this.#max) throw new RangeError(`${what}: minInterpreters (${this.#min}) must not exceed maxInterpreters (${this.#max})`);
    this.#maxQueue = options.maxQueue === Infinity ? Infinity : checkCount(what, "maxQueue", options.maxQueue, Infinity, 0);
    const idleTimeout = checkIdleTimeout(what, options.idleTimeout);
    checkEnv(what, options.env);
    if (options.resourceLimits !== undefined && (options.resourceLimits === null || typeof options.resourceLimits !== "object")) {
      throw new TypeError(`${what}: resourceLimits must be an object (maxOldGenerationSizeMb, ...), got ${typeof options.resourceLimits}`);
    }

    // The supervisor first: its start learns which exec flags Node lets workers have (execArgvForWorkers).
    ensureSupervisor();
    const requests = `interpreters:pool:${nextObjectId()}`;
    this.#requests = new BroadcastChannel(requests);
    this.#requests.onmessage = (event) => this.#onIdentityRequest((event as { data: IdentityRequest }).data);
    this.#requests.unref();
    this.#queue = new PoolTaskQueue({
      entered: (entry) => (pendingOf(entry).queued = entry),
      left: (entry) => {
        const pending = pendingOf(entry);
        if (pending.queued === entry) pending.queued = undefined;
      },
    });
    const workerData: PoolWorkerData = { pool: name, requests, table: this.#table.buffer };
    try {
      this.#tinypool = this.#startTinypool(idleTimeout, options, workerData);
    } catch (err) {
      this.#requests.close();
      throw err;
    }
    this.#tinypool.on("error", (err: unknown) => this.#onIdleThreadError(err));
  }

  #startTinypool(idleTimeout: number, options: PoolOptions, workerData: PoolWorkerData): Tinypool {
    return new Tinypool({
      filename: workerFilename(),
      name: HANDLER_NAME,
      minThreads: this.#min,
      maxThreads: this.#max,
      idleTimeout: Math.min(idleTimeout, LONGEST_TIMEOUT),
      maxQueue: Infinity, // the limit is checked in run(), before anything is encoded
      concurrentTasksPerWorker: 1,
      useAtomics: false,
      taskQueue: this.#queue,
      resourceLimits: options.resourceLimits,
      env: options.env,
      execArgv: execArgvForWorkers(),
      workerData,
    });
  }

  /**
   * The most interpreters this pool runs at once (its `maxInterpreters`
   * option, or its default `os.availableParallelism()`): as many tasks run
   * at the same time, the others wait in the queue. Fixed for the pool's
   * life. offload() runs one protocol shard per interpreter slot, so this
   * many.
   */
  get maxInterpreters(): number {
    return this.#max;
  }

  /**
   * Runs `module`'s export `exportName` (default "default") with `args` in
   * a free interpreter of the pool: `run({ module, export: exportName, args })`.
   */
  call<R = unknown>(module: string | URL, exportName = "default", ...args: Shareable[]): Promise<R> {
    return this.run<R>({ module, export: exportName, args });
  }

  /**
   * Imports `task.module` in a free interpreter and calls its export
   * `task.export` (default "default") with `task.args`; resolves with the
   * (awaited) result, which crosses back like a channel message (ends in it
   * move to this thread). Waits in the queue while every interpreter is
   * busy.
   *
   * Refused at once, with nothing moved or queued: ChannelFullError when
   * `maxQueue` tasks already wait, InterpreterClosedError after
   * close()/terminate(), NotShareableError for arguments that cannot cross,
   * TypeError for bad input, the signal's reason if already aborted.
   *
   * Rejects with ExecutionFailed (`.remote`: the error's name, message and
   * stack) when the task throws, its module cannot be imported, the export
   * is not a function, or its interpreter dies of an error (resource
   * limits included); with InterpreterClosedError when its interpreter
   * exits meanwhile (`process.exit()`) or the pool is terminated; with the
   * signal's reason when aborted. A task whose interpreter died is rejected
   * only after the supervisor has released every end and Lock it held.
   *
   * Ends passed in are the task's: released when it ends unless it moved
   * them on, and released too if it never ran (aborted while queued).
   */
  run<R = unknown>(task: PoolTask): Promise<R> {
    try {
      return this.#run<R>(task);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** run(), throwing what it refuses. */
  #run<R>(task: PoolTask): Promise<R> {
    if (task === null || typeof task !== "object") throw new TypeError(`run on pool "${this.name}": expected { module, export?, args?, signal? }, got ${task === null ? "null" : typeof task}`);
    const exportName = task.export ?? "default";
    const what = `call of ${typeof exportName === "string" ? exportName : "?"} on pool "${this.name}"`;
    const module = task.module;
    if (!(module instanceof URL) && (typeof module !== "string" || module === "")) {
      throw new TypeError(`${what}: module must be a URL or a non-empty string (a path or specifier), got ${module === "" ? "an empty string" : typeof module}`);
    }
    if (typeof exportName !== "string") throw new TypeError(`${what}: export must be a string (the export's name), got ${typeof exportName}`);
    const args = task.args ?? [];
    if (!Array.isArray(args)) throw new TypeError(`${what}: args must be an array, got ${typeof args}`);
    const signal = task.signal;
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw new TypeError(`${what}: signal must be an AbortSignal`);
    this.#checkOpen(what);
    signal?.throwIfAborted();
    if (this.#tasks.size >= this.#max + this.#maxQueue) {
      throw new ChannelFullError(
        `${what}: ${this.#queue.size} tasks already wait for an interpreter (maxQueue ${this.#maxQueue}) while all ${this.#max} interpreters are busy; retry once some finish, or raise maxQueue`,
      );
    }
    const index = this.#table.allocate();
    if (index < 0) throw new ChannelFullError(`${what}: ${MAX_TASKS} tasks are pending already; wait for some to finish`);
    // As Interpreter.call: a relative or bare specifier resolves against the calling file.
    const target = resolveModule(module, what);
    let resolve!: (value: unknown) => void;
    let reject!: (reason: unknown) => void;
    const promise = new Promise<R>((res, rej) => {
      resolve = res as (value: unknown) => void;
      reject = rej;
    });
    const pending = {
      index,
      label: `call of ${exportName} from ${target.specifier}`,
      carrier: undefined as RecvChannel<unknown> | undefined,
      resolve,
      reject,
      signal,
      onAbort: undefined,
      settled: false,
      deliveries: 0,
      queued: undefined,
      unposted: undefined as ReturnType<typeof encodeForChannel> | typeof PLAIN_DATA | undefined,
      aborted: false,
      awaitingThread: false,
      finished: false,
    };
    let encoded: { payload: TaskPayload; carrier?: RecvChannel<unknown> };
    try {
      encoded = this.#encode(pending, taskTarget(target, exportName), args);
    } catch (err) {
      this.#table.release(index);
      throw err;
    }
    const accepted: PendingTask = Object.assign(pending, encoded);
    this.#tasks.set(index, accepted);
    if (signal) {
      accepted.onAbort = () => this.#abort(accepted);
      signal.addEventListener("abort", accepted.onAbort, { once: true });
    }
    this.#deliver(accepted, false);
    return promise;
  }

  /** Counts, now. */
  stats(): PoolStats {
    const interpreters = this.#tinypool.threads.length;
    return {
      interpreters,
      busy: Math.max(0, Math.min(interpreters, this.#deliveries - this.#queue.size)),
      queued: this.#queue.size,
      completed: this.#completed,
      failed: this.#failed,
    };
  }

  /**
   * Graceful stop: refuses new tasks at once, lets every accepted task
   * (queued ones included) finish, then ends every interpreter. Resolves
   * once all are gone and what they held is released. Idempotent.
   */
  close(): Promise<void> {
    if (this.#state === "open") this.#state = "closing";
    this.#closing ??= this.#whenIdle().then(() => this.#shutDown());
    return this.#closing;
  }

  /**
   * Hard stop: queued tasks are rejected with InterpreterClosedError at
   * once, running ones end with their interpreters (rejected once those are
   * gone). Resolves once every interpreter is gone and what they held is
   * released.
   */
  async terminate(): Promise<void> {
    if (this.#state === "open" || this.#state === "closing") {
      this.#state = "terminating";
      for (const pending of this.#tasks.values()) {
        if (pending.settled || !this.#table.cancel(pending.index)) continue;
        this.#takeOutOfQueue(pending);
        this.#settle(pending, false, new InterpreterClosedError(`${pending.label} on pool "${this.name}": the pool was terminated before the task started`));
      }
    }
    await this.#shutDown();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #checkOpen(what: string): void {
    if (this.#state === "open") return;
    const state = this.#state === "closing" ? "closing" : this.#state === "terminating" ? "being terminated" : "closed";
    throw new InterpreterClosedError(`${what}: the pool is ${state}; create a new InterpreterPool`);
  }

  /**
   * The payload for task `index`. Arguments that are all primitives go as
   * they are; others without channel ends as channel-codec bytes; arguments
   * with ends go into a channel of their own (one message, capacity
   * Infinity so that the send never waits), whose buffer the payload names:
   * the thread takes them from there, and closing that channel when the
   * task is done releases them if no thread ever did. Throws
   * NotShareableError with nothing moved.
   */
  #encode(
    pending: Omit<PendingTask, "payload">,
    target: Pick<TaskPayload, "module" | "base" | "label" | "exportName">,
    args: unknown[],
  ): { payload: TaskPayload; carrier?: RecvChannel<unknown> } {
    const index = pending.index;
    // A copy: the task gets the arguments as they were at the call, as a channel message would (tinypool
    // posts the payload only when a thread is free).
    if (args.every(isPlain)) return { payload: { index, ...target, plain: args.slice(), [PENDING]: pending } as TaskPayload };
    // Nothing shared or moved in them: tinypool's structured clone makes the same copy the codec would, for
    // less than posting the codec's bytes. It clones when it posts: at once, unless the task waits in the
    // queue; then #deliver takes a copy, so that the task still gets the arguments as they were at the call.
    if (isPlainData(args)) {
      pending.unposted = PLAIN_DATA;
      return { payload: { index, ...target, plain: args, [PENDING]: pending } as TaskPayload };
    }
    const message = encodeForChannel(args); // checks that they can cross (NotShareableError), finds what they share or move
    if ((message.flags & R_ATTACH) === 0) {
      pending.unposted = message; // the copy #deliver takes if queued: these bytes
      return { payload: { index, ...target, plain: args, [PENDING]: pending } as TaskPayload };
    }
    if (message.ends.length === 0) return { payload: { index, ...target, args: copyOut(message), [PENDING]: pending } as TaskPayload };
    message.undo(); // the ends come back here; the channel's send moves them again
    const [carrier, carrierTx] = createChannel<unknown>({ capacity: Infinity, bufferBytes: 4096, name: `pool "${this.name}" task ${index} arguments` });
    try {
      carrierTx.sendSync(args);
    } catch (err) {
      carrier.close();
      throw err;
    } finally {
      carrierTx.close();
    }
    return { payload: { index, ...target, carrier: endOf(carrier)!.memory.buffer, [PENDING]: pending } as TaskPayload, carrier };
  }

  /** Hands `pending` to tinypool once more (`again`: it keeps its place at the head of the queue). */
  #deliver(pending: PendingTask, again: boolean): void {
    let delivery: Promise<TaskOutcome>;
    this.#queue.toFront = again;
    try {
      delivery = this.#tinypool.run(pending.payload) as Promise<TaskOutcome>;
    } catch (err) {
      // tinypool could not start a thread (Node refused the Worker): nothing was queued.
      if (this.#table.cancel(pending.index)) this.#settle(pending, false, err);
      this.#finishIfDone(pending);
      return;
    } finally {
      this.#queue.toFront = false;
    }
    if (pending.unposted !== undefined) {
      // The first delivery, posted (the arguments were copied) or queued (see #encode): then a copy now. The
      // codec's bytes are still in this thread's encoder: nothing was encoded since #encode.
      if (pending.queued !== undefined) {
        if (pending.unposted === PLAIN_DATA) {
          pending.payload.plain = structuredClone(pending.payload.plain);
        } else {
          pending.payload.args = copyOut(pending.unposted);
          pending.payload.plain = undefined;
        }
      }
      pending.unposted = undefined;
    }
    pending.deliveries++;
    this.#deliveries++;
    delivery.then(
      (outcome) => this.#delivered(pending, outcome),
      (err: unknown) => this.#notDelivered(pending, err),
    );
  }

  #deliveryBack(pending: PendingTask): void {
    pending.deliveries--;
    this.#deliveries--;
  }

  /** A thread answered a delivery of `pending`. */
  #delivered(pending: PendingTask, outcome: TaskOutcome): void {
    this.#deliveryBack(pending);
    if (outcome === SKIPPED) {
      // Cancelled, or started by another delivery: nothing ran here.
    } else if ("bootError" in outcome) {
      // The thread could not become an interpreter (no party slot free, a broken install): it ran nothing.
      if (this.#table.cancel(pending.index)) {
        this.#settle(pending, false, executionFailedFrom(outcome.bootError, `${pending.label} on pool "${this.name}": no interpreter could be started for it`));
      }
    } else {
      const thread = this.#threads.get(outcome.slot);
      if (pending.aborted || pending.settled) {
        // Aborted: its thread is being ended (a result on the thread's channel is released with it).
        // Settled already cannot happen with a live thread; were it to, ending the thread keeps its channel in step.
        if (pending.settled && thread !== undefined && !thread.isEnding() && "inChannel" in outcome) thread.stop();
        this.#settleAfterThread(pending, thread);
      } else if ("value" in outcome) {
        this.#settle(pending, true, outcome.value);
      } else if ("encoded" in outcome) {
        this.#settleDecoded(pending, outcome.encoded);
      } else if ("error" in outcome) {
        this.#settle(pending, false, executionFailedFrom(outcome.error, `${pending.label} on pool "${this.name}"${thread ? `, ${thread.describe()}` : ""}`));
      } else if (thread === undefined) {
        this.#settleAfterThread(pending, thread);
      } else {
        this.#settleWithResult(pending, this.#takeResult(pending, thread), thread);
      }
    }
    this.#finishIfDone(pending);
  }

  #settleDecoded(pending: PendingTask, encoded: EncodedArgs): void {
    let value: unknown;
    try {
      value = decodeEncoded(encoded);
    } catch (err) {
      return this.#settle(pending, false, err);
    }
    this.#settle(pending, true, value);
  }

  /** tinypool rejected a delivery of `pending`: cancelled by this pool, or its thread is gone. */
  #notDelivered(pending: PendingTask, err: unknown): void {
    this.#deliveryBack(pending);
    if (!isTinypoolCancel(err)) {
      const state = this.#table.state(pending.index);
      if (state === TaskState.QUEUED) {
        // No thread started it: this delivery was lost with its thread, or the pool is being terminated.
        if (!pending.settled && pending.deliveries === 0) {
          if (this.#state === "terminating" || this.#state === "closed") {
            if (this.#table.cancel(pending.index)) this.#settle(pending, false, new InterpreterClosedError(`${pending.label} on pool "${this.name}": the pool was terminated before the task started`));
          } else {
            this.#deliver(pending, true);
          }
        }
      } else if (state !== TaskState.CANCELLED) {
        const thread = this.#threads.get(slotOfState(state));
        // A live thread runs it from another delivery, which will settle it; otherwise it died with its thread.
        if (thread === undefined || thread.isEnding()) this.#settleAfterThread(pending, thread);
      }
    }
    this.#finishIfDone(pending);
  }

  /**
   * `pending` was started by `thread`, which is gone or going: settles it
   * once the supervisor has released what the thread held. With the result
   * the thread sent before it died, if any (and the task was not aborted);
   * else with why the thread died.
   */
  #settleAfterThread(pending: PendingTask, thread: PoolThread | undefined): void {
    if (pending.awaitingThread || pending.settled) return;
    pending.awaitingThread = true;
    void (async () => {
      if (thread !== undefined) await thread.gone;
      if (pending.settled) return;
      if (pending.aborted) return this.#settle(pending, false, pending.signal!.reason);
      if (this.#state === "terminating" || this.#state === "closed") {
        return this.#settle(pending, false, new InterpreterClosedError(`${pending.label} on pool "${this.name}": the pool was terminated while the task ran`));
      }
      // Synchronously after `gone`: the results channel closes only after a macrotask (onThreadExit).
      const result = thread === undefined ? undefined : this.#takeResult(pending, thread);
      if (pending.settled) return; // taking it failed
      if (result !== undefined) return this.#settleWithResult(pending, result, thread!);
      this.#settle(pending, false, deathError(pending, thread, this.name));
    })().catch((err: unknown) => this.#settle(pending, false, err));
  }

  /** The result of `pending` off `thread`'s results channel; undefined (and `pending` rejected) if it cannot be read. */
  #takeResult(pending: PendingTask, thread: PoolThread): TaskResult | undefined {
    try {
      return thread.takeResult(pending.index);
    } catch (err) {
      this.#settle(pending, false, err);
      return undefined;
    }
  }

  #settleWithResult(pending: PendingTask, result: TaskResult | undefined, thread: PoolThread): void {
    if (result === undefined) {
      this.#settle(pending, false, new InterpretersError(`${pending.label} on pool "${this.name}": internal error: ${thread.describe()} answered but sent no result`));
    } else {
      this.#settle(pending, true, result.value);
    }
  }

  #settle(pending: PendingTask, ok: boolean, outcome: unknown): void {
    if (pending.settled) return;
    pending.settled = true;
    if (pending.onAbort) pending.signal!.removeEventListener("abort", pending.onAbort);
    if (ok) {
      this.#completed++;
      pending.resolve(outcome);
    } else {
      this.#failed++;
      pending.reject(outcome);
    }
    this.#finishIfDone(pending);
  }

  /** Once settled with no delivery out: the table entry is free again, the arguments' channel closed. */
  #finishIfDone(pending: PendingTask): void {
    if (pending.finished || !pending.settled || pending.deliveries > 0) return;
    pending.finished = true;
    this.#tasks.delete(pending.index);
    this.#table.release(pending.index);
    pending.carrier?.close();
    if (this.#tasks.size === 0) {
      const waiters = this.#idleWaiters;
      this.#idleWaiters = [];
      for (const wake of waiters) wake();
    }
  }

  #takeOutOfQueue(pending: PendingTask): void {
    const entry = pending.queued;
    if (entry === undefined) return;
    this.#queue.remove(entry);
    entry.cancel(); // tinypool rejects that delivery (CancelError): #notDelivered counts it back
  }

  /**
   * The signal of `pending` was aborted. Not started: cancelled (taken out
   * of the queue, or skipped by the thread it is on its way to) and
   * rejected at once. Running: its thread is ended; rejected once the
   * thread is gone. Finished: too late, it settles with its result.
   */
  #abort(pending: PendingTask): void {
    if (pending.settled) return;
    if (this.#table.cancel(pending.index)) {
      this.#takeOutOfQueue(pending);
      this.#settle(pending, false, pending.signal!.reason);
      return;
    }
    const state = this.#table.state(pending.index);
    if (state <= 0) return; // finished (its result is on its way) or cancelled already
    pending.aborted = true;
    const thread = this.#threads.get(slotOfState(state));
    thread?.stop();
    this.#settleAfterThread(pending, thread);
  }

  /** A new thread asks who it is: it becomes interpreter `<pool>-<n>` (or learns why it cannot). */
  #onIdentityRequest(request: IdentityRequest): void {
    if (this.#shutdown !== undefined) return; // every thread is being ended
    const worker = this.#tinypool.threads.find((thread) => thread.threadId === request?.threadId);
    if (worker === undefined || this.#identified.has(worker)) return; // ended meanwhile, or asked twice
    this.#identified.add(worker);
    try {
      const thread = PoolThread.attach(worker, `${this.name}-${++this.#threadsStarted}`, WORKER_ENTRY, (exited) => this.#onThreadExit(exited));
      this.#threads.set(thread.slot, thread);
    } catch (err) {
      worker.postMessage({ kind: IDENTITY_KIND, error: poolError(err, `pool "${this.name}" cannot start an interpreter`) } satisfies Identity);
    }
    this.#table.bumpEpoch();
  }

  /**
   * A thread with an identity exited. Tells tinypool if it does not know
   * (see the top of this file), synchronously: Node removes every listener
   * of a Worker, tinypool's included, right after its 'exit' event. Then
   * delivers queued tasks again so that threads are started for them
   * (refill), and lets go of the thread's record once the supervisor has
   * released what it held.
   *
   * An answer the thread posted to tinypool just before it died may not
   * have been handled yet; tinypool then drops it with the thread's port.
   * Nothing is lost: the task's delivery is rejected, the task is marked
   * finished in the table, and #settleAfterThread takes its result from the
   * thread's results channel.
   */
  #onThreadExit(thread: PoolThread): void {
    this.#tellTinypoolOfExit(thread);
    this.#refill();
    void thread.settleExit().then(() => {
      // A task that waited for `gone` takes its result synchronously after it; the channel closes later.
      setImmediate(() => {
        this.#threads.delete(thread.slot);
        thread.closeResults();
      });
    });
  }

  #tellTinypoolOfExit(thread: PoolThread): void {
    if (!this.#tinypool.threads.includes(thread.worker)) return; // it knows (an 'error', or it ended the thread)
    try {
      thread.worker.emit("error", new InterpreterClosedError(`pool "${this.name}": ${thread.describe()} exited (code ${thread.exitCode})`));
    } catch (err) {
      // tinypool's handler failed: say so rather than end the process from an 'exit' listener.
      process.emitWarning(`interpreters: pool "${this.name}": tinypool failed to handle the exit of ${thread.describe()}: ${String(err)}`);
    }
  }

  /**
   * While tasks wait and fewer than maxInterpreters threads are alive,
   * hands the newest waiting task to tinypool again: with its queue not
   * empty, tinypool starts a thread for it (it would not by itself, see
   * the top of this file). The task keeps its place at the back.
   */
  #refill(): void {
    if (this.#state === "terminating" || this.#state === "closed") return;
    let room = this.#max - this.#tinypool.threads.length;
    while (room-- > 0 && this.#queue.size > 0) {
      const entry = this.#queue.removeLast()!;
      entry.cancel();
      this.#deliver(pendingOf(entry), false);
    }
  }

  /**
   * tinypool's 'error' event: a thread died with no task on it. When a task
   * left something behind that killed it (a timer that throws), say so;
   * this pool's own report of an exit (#tellTinypoolOfExit) is not news.
   */
  #onIdleThreadError(err: unknown): void {
    if (err instanceof InterpreterClosedError) return;
    const text = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
    process.emitWarning(`interpreters: an idle interpreter of pool "${this.name}" failed (left behind by an earlier task?): ${text}`);
  }

  #whenIdle(): Promise<void> {
    if (this.#tasks.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.#idleWaiters.push(resolve));
  }

  /** Ends every thread (tinypool's destroy), then waits until each is released and every task settled. */
  #shutDown(): Promise<void> {
    this.#shutdown ??= (async () => {
      const threads = [...this.#threads.values()];
      await this.#tinypool.destroy();
      this.#requests.close();
      await Promise.all(threads.map((thread) => thread.gone));
      await this.#whenIdle();
      this.#state = "closed";
    })();
    return this.#shutdown;
  }
}

/** What a payload says of the module: its base and label only when they are needed (see TaskPayload). */
function taskTarget(target: ReturnType<typeof resolveModule>, exportName: string): Pick<TaskPayload, "module" | "base" | "label" | "exportName"> {
  const fields: Pick<TaskPayload, "module" | "base" | "label" | "exportName"> = { module: target.module, exportName };
  if (!target.module.includes(":")) fields.base = target.base; // a bare specifier
  if (target.label !== target.module) fields.label = target.label;
  return fields;
}

/** The pending task of a queue entry (tinypool's TaskInfo): the payload's queue options. */
function pendingOf(entry: Task): PendingTask {
  return (entry as unknown as Record<symbol, PendingTask>)[PENDING]!;
}

/** tinypool's rejection of a delivery this pool cancelled (Task.cancel). */
function isTinypoolCancel(err: unknown): boolean {
  return err instanceof Error && err.name === "CancelError";
}

function poolError(err: unknown, where: string): ErrorRecord {
  const record = errorToRecord(err);
  record.message = `${where}: ${record.message}`;
  return record;
}

/** Why a task whose thread died (and sent no result) failed. */
function deathError(pending: PendingTask, thread: PoolThread | undefined, pool: string): Error {
  const where = `${pending.label} on pool "${pool}"${thread ? `, ${thread.describe()}` : ""}`;
  const crash = thread?.crash;
  if (crash !== undefined) {
    return new ExecutionFailed(
      { name: crash.name ?? "Error", message: crash.message ?? String(crash), stack: crash.stack ?? "" },
      `${where}: the interpreter died; the pool replaces it`,
      { cause: crash },
    );
  }
  return new InterpreterClosedError(`${where}: the interpreter exited (code ${thread?.exitCode ?? "unknown"}) while the task ran; the pool replaces it`);
}

function checkCount(what: string, option: string, value: unknown, fallback: number, least: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isInteger(value) || value < least) {
    throw new RangeError(`${what}: ${option} must be an integer >= ${least}${option === "maxQueue" ? " or Infinity" : ""}, got ${String(value)}`);
  }
  return value;
}

function checkIdleTimeout(what: string, value: unknown): number {
  if (value === undefined) return DEFAULT_IDLE_TIMEOUT;
  if (typeof value !== "number" || Number.isNaN(value) || value < 0) {
    throw new RangeError(`${what}: idleTimeout must be a number of milliseconds >= 0 (or Infinity), got ${String(value)}`);
  }
  return value;
}

function checkEnv(what: string, env: unknown): void {
  if (env === undefined) return;
  if (env === null || typeof env !== "object") throw new TypeError(`${what}: env must be an object of strings, got ${env === null ? "null" : typeof env}`);
  for (const [key, value] of Object.entries(env)) {
    if (typeof value !== "string") throw new TypeError(`${what}: env.${key} must be a string, got ${typeof value}`);
  }
}

const fromSource = import.meta.url.endsWith(".ts");

/**
 * tinypool's `filename`: the pool worker's entry. Built: its file. From
 * source (run through tsx): tsx does not register itself in workers on
 * Node 20, so a small module registers it first, then loads the entry and
 * hands its export on (as src/spawn.ts does for interpreters).
 */
const WORKER_ENTRY = new URL(`../../workers/pool-worker.${fromSource ? "ts" : "js"}`, import.meta.url);

function workerFilename(): string {
  const entry = WORKER_ENTRY;
  if (!fromSource) return fileURLToPath(entry);
  const tsx = import.meta.resolve("tsx/esm/api");
  const bootstrap = [
    `const tsx = await import(${JSON.stringify(tsx)});`,
    `tsx.register();`,
    `const entry = await import(${JSON.stringify(entry.href)});`,
    `export const ${HANDLER_NAME} = entry.${HANDLER_NAME};`,
  ].join("\n");
  return `data:text/javascript,${encodeURIComponent(bootstrap)}`;
}
