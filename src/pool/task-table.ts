/**
 * A pool's task table: one growable SharedArrayBuffer per pool, created by
 * its owner and shared with every thread of the pool (tinypool's
 * workerData). One word per task handed to tinypool says whether a thread
 * has started it. Starting is a compare-and-swap, so a task runs at most
 * once however many times tinypool was asked to deliver it, and a task the
 * owner cancelled (abort, terminate) never starts: the owner and the
 * threads agree on who owns a task without a message.
 *
 * Memory layout (Int32 words; byte offset = word × 4):
 *
 * | offset (bytes) | size | meaning                                              | written by                          |
 * |----------------|------|------------------------------------------------------|-------------------------------------|
 * | 0              | 4    | identity epoch: +1 after each identity the owner     | the owner (Atomics.add, notify)     |
 * |                |      | posts; a new thread waits on it for its own          |                                     |
 * | 4              | 60   | reserved (zero)                                      |                                     |
 * | 64 + 4·i       | 4    | state of task i (see TaskState)                      | owner: QUEUED on allocation, CAS    |
 * |                |      |                                                      | QUEUED -> CANCELLED; the thread:    |
 * |                |      |                                                      | CAS QUEUED -> started, then finished|
 *
 * Task state: QUEUED (0): not started (waiting in tinypool's queue, or on
 * its way to a thread). CANCELLED (-1): the owner withdrew it; no thread
 * will start it. `slot + 1` (> 0): started by the thread in party slot
 * `slot`. `-(slot + 2)` (< -1): finished by that thread, its result sent.
 *
 * The buffer grows (in place, by the owner) as more tasks are pending at
 * once; a thread's length-tracking view sees the new words. An index is
 * reused only once no delivery of its task can still reach a thread.
 */

export const WORD_EPOCH = 0;
const FIRST_TASK_WORD = 16;
const INITIAL_TASKS = 256;
/** Most tasks a pool can have pending at once (queued, running, or being delivered). */
export const MAX_TASKS = 1 << 20;

export const TaskState = { QUEUED: 0, CANCELLED: -1 } as const;

/** The state a thread in `slot` writes when it starts a task. */
export function startedBy(slot: number): number {
  return slot + 1;
}
/** The state a thread in `slot` writes when it has sent a task's result. */
export function finishedBy(slot: number): number {
  return -(slot + 2);
}
/** The slot of the thread that started or finished a task in `state`, or -1 (queued, cancelled). */
export function slotOfState(state: number): number {
  if (state > 0) return state - 1;
  if (state < -1) return -state - 2;
  return -1;
}

/** The owner's side: allocates and frees task entries, cancels. */
export class TaskTable {
  readonly buffer: SharedArrayBuffer;
  readonly #words: Int32Array;
  readonly #free: number[] = [];
  #next = 0;

  constructor() {
    this.buffer = new SharedArrayBuffer(4 * (FIRST_TASK_WORD + INITIAL_TASKS), { maxByteLength: 4 * (FIRST_TASK_WORD + MAX_TASKS) });
    this.#words = new Int32Array(this.buffer); // length-tracking: follows grow()
  }

  /** An entry for a new task, in state QUEUED; -1 when MAX_TASKS are pending. */
  allocate(): number {
    let index = this.#free.pop();
    if (index === undefined) {
      if (this.#next >= MAX_TASKS) return -1;
      index = this.#next++;
      const needed = 4 * (FIRST_TASK_WORD + index + 1);
      if (needed > this.buffer.byteLength) {
        this.buffer.grow(Math.min(this.buffer.maxByteLength, Math.max(needed, this.buffer.byteLength * 2)));
      }
    }
    Atomics.store(this.#words, FIRST_TASK_WORD + index, TaskState.QUEUED);
    return index;
  }

  /** Gives entry `index` back (once no delivery of its task can reach a thread any more). */
  release(index: number): void {
    this.#free.push(index);
  }

  state(index: number): number {
    return Atomics.load(this.#words, FIRST_TASK_WORD + index);
  }

  /** QUEUED -> CANCELLED; false if a thread started it first (or it was cancelled already). */
  cancel(index: number): boolean {
    return Atomics.compareExchange(this.#words, FIRST_TASK_WORD + index, TaskState.QUEUED, TaskState.CANCELLED) === TaskState.QUEUED;
  }

  /** Wakes new threads waiting for their identity (after one was posted). */
  bumpEpoch(): void {
    Atomics.add(this.#words, WORD_EPOCH, 1);
    Atomics.notify(this.#words, WORD_EPOCH);
  }
}

/** A thread's side: claims a task before running it, marks it finished after sending its result. */
export class TaskTableView {
  readonly #words: Int32Array;
  constructor(buffer: SharedArrayBuffer) {
    this.#words = new Int32Array(buffer);
  }
  /** QUEUED -> started by `slot`; false when the owner cancelled it or another delivery started it. */
  start(index: number, slot: number): boolean {
    return Atomics.compareExchange(this.#words, FIRST_TASK_WORD + index, TaskState.QUEUED, startedBy(slot)) === TaskState.QUEUED;
  }
  finish(index: number, slot: number): void {
    Atomics.store(this.#words, FIRST_TASK_WORD + index, finishedBy(slot));
  }
  /**
   * Waits (synchronously, at most `ms`) for the identity epoch to move past
   * `seen`. Woken by the owner's bumpEpoch; the caller re-checks its port.
   */
  waitForEpoch(seen: number, ms: number): void {
    Atomics.wait(this.#words, WORD_EPOCH, seen, ms);
  }
  epoch(): number {
    return Atomics.load(this.#words, WORD_EPOCH);
  }
}
