/**
 * Structured concurrency: a TaskGroup owns the tasks and interpreters
 * started in it, and nothing started in it outlives it.
 *
 *     await TaskGroup.run(async (group) => {
 *       const worker = await group.create({ name: "parser" });
 *       group.spawn((signal) => jobs.send(job, { signal }));
 *       group.spawn(() => worker.exec(source));
 *     });
 *
 * or `await using group = new TaskGroup()` in a block. When any task fails
 * (or an interpreter of the group dies of an uncaught error), the group is
 * cancelled: its signal aborts with that error as the reason, so every
 * channel wait that was given the signal rejects with it, and every
 * interpreter of the group is terminated (which wakes its sync waits: they
 * end with the interpreter). The group then waits for every task to
 * settle, terminates its interpreters, and rethrows the first error, with
 * the other failures attached as `error.suppressed` (failures that are just
 * the cancellation itself are not repeated there).
 *
 * Channel, select and Lock/Semaphore/Event waits started inside a task honour
 * the group's cancellation even if the task does not pass `signal` on (the
 * group is found through the async context: effectiveSignal).
 */
import { create, type CreateOptions, type Interpreter } from "./interpreter.js";
import { InterpretersError } from "./errors.js";
import { runInGroup } from "./cancellation.js";


/** Failures of a group beyond the first, attached to the error it throws. */
export interface GroupError extends Error {
  suppressed?: unknown[];
}

export class TaskGroup {
  readonly #controller = new AbortController();
  readonly #tasks = new Set<Promise<void>>();
  readonly #interpreters = new Set<Interpreter>();
  readonly #errors: unknown[] = [];
  #closing = false;
  #closed = false;

  /** Aborts (with the first failure as its reason) when the group is cancelled. Pass it to channel waits. */
  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  /** True once the group has been cancelled (by a failure or by cancel()). */
  get cancelled(): boolean {
    return this.#controller.signal.aborted;
  }

  /**
   * Runs `body(signal)` as a task of the group and returns its result. If
   * it throws, the group is cancelled. The returned promise is the task's
   * own: awaiting it is optional (the group awaits every task).
   * Throws InterpretersError if the group has already finished.
   */
  spawn<T>(body: (signal: AbortSignal) => T | Promise<T>): Promise<T> {
    this.#checkOpen("spawn");
    const result = runInGroup(this.signal, async () => body(this.signal));
    const tracked = result.then(
      () => {},
      (err) => this.#fail(err),
    );
    this.#tasks.add(tracked);
    void tracked.finally(() => this.#tasks.delete(tracked));
    result.catch(() => {}); // the group reports it; an un-awaited task is not an unhandled rejection
    return result;
  }

  /**
   * Creates an interpreter that belongs to the group: it is terminated when
   * the group is cancelled and when the group ends. An uncaught error in it
   * cancels the group.
   */
  async create(options: CreateOptions = {}): Promise<Interpreter> {
    this.#checkOpen("create");
    const signal = options.signal ? AbortSignal.any([options.signal, this.signal]) : this.signal;
    const interpreter = await this.spawn(() => create({ ...options, signal }));
    this.#interpreters.add(interpreter);
    interpreter.on("error", (err) => this.#fail(err));
    interpreter.once("exit", () => this.#interpreters.delete(interpreter));
    if (this.cancelled) void interpreter.terminate();
    return interpreter;
  }

  /** Cancels the group (as a failure would, but without an error to rethrow unless `reason` is given). */
  cancel(reason: unknown = new InterpretersError("task group cancelled")): void {
    if (this.cancelled) return;
    this.#controller.abort(reason);
    for (const interpreter of this.#interpreters) void interpreter.terminate().catch(() => {});
  }

  #fail(err: unknown): void {
    if (this.cancelled && err === this.signal.reason) return; // the cancellation itself, echoed by a task
    this.#errors.push(err);
    this.cancel(err);
  }

  #checkOpen(what: string): void {
    if (this.#closed || this.#closing) throw new InterpretersError(`${what} on a task group that has finished; start work inside the group's scope`);
  }

  /**
   * Waits for every task, terminates the group's interpreters, and throws
   * the first failure (others in `.suppressed`). Called by `await using`
   * and by TaskGroup.run.
   */
  async [Symbol.asyncDispose](): Promise<void> {
    if (this.#closed) return;
    this.#closing = true;
    while (this.#tasks.size > 0) await Promise.all([...this.#tasks]);
    await Promise.all([...this.#interpreters].map((interpreter) => interpreter.terminate().catch(() => {})));
    this.#closed = true;
    if (this.#errors.length > 0) {
      const [first, ...others] = this.#errors;
      if (others.length > 0 && first instanceof Error) (first as GroupError).suppressed = others;
      throw first;
    }
  }

  /** Runs `body(group)` in a new group and waits for everything started in it; rethrows the first failure. */
  static async run<T>(body: (group: TaskGroup) => Promise<T>): Promise<T> {
    const group = new TaskGroup();
    let result: T | undefined;
    const main = group.spawn(async () => {
      result = await body(group);
    });
    try {
      await main;
    } catch {
      // recorded by the group; rethrown by dispose
    }
    await group[Symbol.asyncDispose]();
    return result as T;
  }
}
