/**
 * The owner's record of one thread of a pool, from the moment it asks for
 * its identity to the moment the supervisor has released what it held.
 *
 * Lifecycle (the same as an interpreter's, src/interpreter.ts): the owner
 * claims a party slot for it and attaches it to the supervisor (state
 * STARTING), the thread marks the slot LIVE once the library is loaded, and
 * after the thread is gone — whatever the cause: exit, uncaught error,
 * resource limits, terminate — the supervisor releases every channel end
 * and Lock it held and frees the slot. `gone` resolves only after that
 * release, so a task rejected for the thread's death is rejected after its
 * ends are released.
 */
import type { TinypoolWorker } from "tinypool";
import { createChannel, type RecvChannel } from "../index.js";
import { attachParty, bootDataFor, bootEntriesFor, encodeForPost, nextInterpreterId, postToSupervisor, waitForRelease, WORKER_DATA_KEY } from "../internals.js";
import { type Identity, IDENTITY_KIND, type TaskResult } from "./protocol.js";

export class PoolThread {
  /** What killed it, when it died of an uncaught error or its resource limits ('error'). */
  crash: Error | undefined;
  exitCode: number | undefined;
  /** True once its 'exit' event came. */
  exited = false;
  /** True once the pool has asked it to stop (to end a running task on abort, or the pool ending). */
  stopping = false;
  /** Resolves once it has exited and the supervisor has released what it held. */
  readonly gone: Promise<void>;
  #markGone!: () => void;

  private constructor(
    readonly worker: TinypoolWorker,
    readonly id: number,
    readonly slot: number,
    readonly name: string,
    /** This thread's results channel (the owner holds the receive end; the thread the send end). */
    readonly results: RecvChannel<TaskResult>,
  ) {
    this.gone = new Promise((resolve) => (this.#markGone = resolve));
  }

  /**
   * Makes tinypool's thread `worker` interpreter `name`: claims its party
   * slot, attaches it to the supervisor, creates its results channel and
   * posts it all to the thread (which waits for it, workers/pool-worker.ts,
   * the thread's `entry`), with the TypeScript loader an interpreter would
   * get (src/spawn.ts).
   * `onExit` runs on its 'exit' event. Throws RangeError when no party slot
   * is free (then nothing was claimed).
   */
  static attach(worker: TinypoolWorker, name: string, entry: URL, onExit: (thread: PoolThread) => void): PoolThread {
    const id = nextInterpreterId();
    const { slot, toSupervisor } = attachParty(id, name);
    let thread: PoolThread;
    let identity: Identity;
    try {
      const [results, resultsTx] = createChannel<TaskResult>({ capacity: Infinity, name: `${name} results` });
      thread = new PoolThread(worker, id, slot, name, results);
      identity = {
        kind: IDENTITY_KIND,
        workerData: { [WORKER_DATA_KEY]: bootDataFor(slot, id, name), [`${WORKER_DATA_KEY}Supervisor`]: toSupervisor, ...bootEntriesFor(entry) },
        results: encodeForPost(resultsTx, slot, `to ${thread.describe()}`),
      };
    } catch (err) {
      toSupervisor.close(); // the supervisor sees the link close and frees the slot
      throw err;
    }
    worker.on("error", (err: Error) => {
      // After 'exit', the only 'error' is the pool's own report to tinypool, not a cause of death.
      if (!thread.exited) thread.crash ??= err;
    });
    worker.on("exit", (code: number) => {
      thread.exited = true;
      thread.exitCode = code;
      onExit(thread);
    });
    worker.postMessage(identity, [toSupervisor]);
    return thread;
  }

  describe(): string {
    return `interpreter ${this.id} "${this.name}"`;
  }

  /** True when it is gone or going: its tasks end with it. */
  isEnding(): boolean {
    return this.exited || this.stopping || this.crash !== undefined;
  }

  /** Ends the thread now (its task, if any, with it). */
  stop(): void {
    if (this.stopping || this.exited) return;
    this.stopping = true;
    void this.worker.terminate();
  }

  /**
   * After its exit: tells the supervisor (which also notices by itself, its
   * port closing), waits for the release of everything it held, resolves
   * `gone`. The results channel stays open a moment longer (closeResults).
   */
  async settleExit(): Promise<void> {
    try {
      postToSupervisor({ type: "exited", slot: this.slot, id: this.id });
    } catch {
      // no supervisor link: nothing to release
    }
    await waitForRelease(this.slot, this.id);
    this.#markGone();
  }

  /**
   * Takes the next result off the results channel: the one of task `index`,
   * sent before the thread answered tinypool (or before it died). Undefined
   * when there is none.
   */
  takeResult(index: number): TaskResult | undefined {
    const taken = this.results.tryRecv();
    if (!taken.ok) return undefined;
    if (taken.value.index !== index) {
      throw new Error(`internal error: ${this.describe()} sent the result of task ${taken.value.index} where task ${index}'s was expected`);
    }
    return taken.value;
  }

  /**
   * Closes the results channel once the thread is gone: results nobody took
   * (tasks aborted while their result was on its way) are discarded, and
   * the channel ends inside them released.
   */
  closeResults(): void {
    this.results.close();
  }
}
