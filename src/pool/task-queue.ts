/**
 * The queue a pool gives tinypool (its `taskQueue` option): the tasks that
 * wait for a thread, first in first out, with O(1) push and shift
 * (tinypool's own queue shifts an array: O(n) per task at depth n).
 *
 * The pool reads which of its tasks an entry is from the entry's queue
 * options (tinypool's `Tinypool.queueOptionsSymbol`, set on the task
 * payload), and is told when one enters or leaves: an entry still here has
 * not been handed to any thread, so an abort can take it out (`remove`,
 * then `cancel`) without a thread ever seeing it.
 */
import type { Task, TaskQueue } from "tinypool";

export interface QueueHooks {
  /** `task` entered the queue (tinypool found no free thread for it). */
  entered(task: Task): void;
  /** `task` left the queue: tinypool is handing it to a thread, or it was removed. */
  left(task: Task): void;
}

export class PoolTaskQueue implements TaskQueue {
  #items: Array<Task | undefined> = [];
  #head = 0;
  /**
   * While true, a push goes to the front: the pool sets it around a
   * `run()` that delivers a task again (its delivery was lost with a
   * thread), so that the task keeps its place ahead of those that arrived
   * after it. tinypool pushes, if at all, inside that `run()` call.
   */
  toFront = false;

  constructor(private readonly hooks: QueueHooks) {}

  get size(): number {
    return this.#items.length - this.#head;
  }

  push(task: Task): void {
    if (this.toFront) {
      if (this.#head > 0) this.#items[--this.#head] = task;
      else this.#items.unshift(task);
    } else {
      this.#items.push(task);
    }
    this.hooks.entered(task);
  }

  shift(): Task | null {
    if (this.size === 0) return null;
    const task = this.#items[this.#head]!;
    this.#items[this.#head++] = undefined;
    if (this.#head >= 1024 && this.#head * 2 >= this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    this.hooks.left(task);
    return task;
  }

  /** Takes `task` out (no-op when it is not here). The caller cancels it. */
  remove(task: Task): void {
    const at = this.#items.indexOf(task, this.#head);
    if (at < 0) return;
    this.#items.splice(at, 1);
    this.hooks.left(task);
  }

  /** Takes out the newest entry (null when empty). The caller cancels it. */
  removeLast(): Task | null {
    if (this.size === 0) return null;
    const task = this.#items.pop()!;
    this.hooks.left(task);
    return task;
  }

  /** tinypool's cancelPendingTasks: every entry out, each cancelled. */
  cancel(): void {
    while (this.size > 0) this.shift()!.cancel();
  }
}
