/**
 * Channels: the public API (createChannel, SendChannel, RecvChannel) and
 * the drivers that run an operation to completion, synchronously
 * (Atomics.wait) or asynchronously (Atomics.waitAsync via the pump).
 *
 * The protocol itself (what a send or a receive does to shared memory) is
 * in channel-ops.ts; the capacity rules in flavors/; the memory layout in
 * ring.ts; how values are encoded and ends moved in transfer.ts.
 */
import { mySlot } from "./control.js";
import { takeVerdict, verdictFlag } from "./deadlock.js";
import { ChannelClosedError, CorruptDataError, MessageTooLargeError } from "./errors.js";
import { ensureSupervisor } from "./supervisor-link.js";
import { effectiveSignal } from "./cancellation.js";
import { enterCritical, enterSide, Fast, leaveCritical, leaveSide, lockSide, locked, unlockSide, RecvOp, SendOp, WAKE_RECEIVERS, WAKE_SENDERS, wakeWaiters, type Withdrawal } from "./channel-ops.js";
import { End } from "./handle.js";
import { allocateChannelId, registerNewChannel } from "./registry.js";
import { releaseCarriedEnds } from "./transfer.js";
import { CLOSED_NO_RECEIVERS, CLOSED_NO_SENDERS, ChannelMemory, createChannelMemory, H, Locks, Overflow, OVERFLOW_NAMES, type OverflowPolicy } from "./ring.js";
import { bindHandle, type ChannelMessage, decodeFromChannel, encodeForChannel, installHandleFactory } from "./transfer.js";
import {
  checkTimeout,
  clearWait,
  now,
  parkSync,
  parkValue,
  publishWait,
  pumpUntilSettled,
  removeFromPump,
  timeoutError,
  WaitOp,
} from "./waiting.js";

/** Initial ring size when `bufferBytes` is not given. */
export const DEFAULT_BUFFER_BYTES = 4 * 1024;
/** The ring's budget when `maxBufferBytes` is not given (address space is reserved, memory is not). */
export const DEFAULT_MAX_BUFFER_BYTES = 256 * 1024 * 1024;
/** The largest ring budget a channel may have. */
export const LIMIT_BUFFER_BYTES = 1024 * 1024 * 1024;
/** The largest message (serialized bytes) when `maxMessageBytes` is not given, and at most. */
export const LIMIT_MESSAGE_BYTES = 2 ** 31 - 1;

export interface ChannelOptions {
  /** 0 = rendezvous, n = bounded, Infinity = unbounded (the default). */
  capacity?: number;
  /** Initial size of the shared ring, in bytes (default 4 KiB; it grows as needed up to maxBufferBytes). */
  bufferBytes?: number;
  /** The ring's memory budget in bytes, for every capacity (default 256 MiB, at most 1 GiB). */
  maxBufferBytes?: number;
  /** Largest serialized message; a larger one fails with MessageTooLargeError (default and maximum 2 GiB - 1). */
  maxMessageBytes?: number;
  /** Shown in stats, errors and deadlock reports. */
  name?: string;
  /**
   * What a send does when the channel has no room (its capacity is reached,
   * or its byte budget is used up): "wait" (the default: backpressure),
   * "drop-newest" (completes at once; this message is discarded),
   * "drop-oldest" (completes at once; the oldest buffered message no
   * receiver has started to take is discarded to make room; not at
   * capacity 0), "error" (fails at once with ChannelFullError). Discarded
   * messages are counted in `stats().dropped`; channel ends inside them are
   * closed.
   */
  overflow?: OverflowPolicy;
}

export interface ChannelStats {
  id: number;
  name: string;
  capacity: number;
  /** Messages buffered (for capacity 0: offered by senders still waiting for a receiver). */
  length: number;
  /** Bytes the buffered records take in the ring. */
  bytes: number;
  /** The ring's effective budget in bytes. */
  maxBufferBytes: number;
  /** Open send handles in all interpreters (ends inside messages included). */
  senders: number;
  receivers: number;
  waitingSenders: number;
  waitingReceivers: number;
  /** Sends that completed (a message discarded by drop-newest included): sent = received + dropped + length, for a channel at rest. */
  sent: number;
  received: number;
  /** The overflow policy (see ChannelOptions.overflow). */
  overflow: OverflowPolicy;
  /** Messages the overflow policy discarded, ever. */
  dropped: number;
  /** No message can ever be received again. */
  closed: boolean;
}

export interface WaitOptions {
  /** Milliseconds; 0 never waits; Infinity (the default) waits forever. */
  timeout?: number;
  /** Aborting rejects the wait with the signal's reason; nothing is sent or taken. */
  signal?: AbortSignal;
}

export type TryRecvResult<T> = { ok: true; value: T } | { ok: false; closed: boolean };

/** Only this module may construct handles. */
const constructing = Symbol("constructing");

export interface DrivenOp {
  readonly memory: ChannelMemory;
  wake: number;
  discarded: Uint8Array[];
  probing: boolean;
  fastLock(): number;
  attemptFast(): Fast;
  attempt(): boolean;
  withdraw(finalAttempt: boolean): Withdrawal;
  abandon(): void;
}

/**
 * Leaves the critical section `op` ran in (`side`: one lock, or 0 for
 * both), then wakes whoever it said to wake (after unlocking, so the woken
 * do not run into the lock), even if the operation threw.
 */
function leaveAndWake(op: DrivenOp, side: number): void {
  if (side === 0) leaveCritical(op.memory);
  else leaveSide(op.memory, side);
  const wake = op.wake;
  if (wake !== 0) {
    op.wake = 0;
    wakeWaiters(op.memory, wake);
  }
  if (op.discarded.length > 0) {
    // Messages the overflow policy discarded carried channel ends: close them.
    const discarded = op.discarded;
    op.discarded = [];
    releaseCarriedEnds(discarded);
  }
}

/**
 * One fast attempt under the one lock `op.fastLock()` names (channel-ops.ts).
 * Returns Fast.SLOW without locking when the operation is not eligible.
 * When `stamp` is given, the channel's progress stamp as it was just before
 * the attempt is stored in `stamp.value`: read before, because the other
 * side (which does not need our lock) may move the channel during the
 * attempt; a change read after it would be taken for one the attempt saw,
 * and a spinning waiter would wait for another that may never come.
 */
function attemptFastOnce(op: DrivenOp, stamp?: { value: number }): Fast {
  const side = op.fastLock();
  if (side === 0) return Fast.SLOW;
  if (stamp) stamp.value = op.memory.progressStamp();
  enterSide(op.memory, side);
  try {
    return op.attemptFast();
  } finally {
    leaveAndWake(op, side);
  }
}

/**
 * Fast attempts of one operation after another under a single hold of
 * their side's lock (batches: sendMany, recvMany). `next()` gives the next
 * operation (reused or fresh), or undefined when there is none; `completed`
 * is told of each that completed, in order, while the lock is held (a
 * receive decodes its value there: the decoder runs no user code, and
 * records with channel ends inside take the slow path). Each attempt is a
 * journaled section of its own (ring.ts: a one-lock section has one commit
 * point), so a thread killed in the middle leaves the earlier ones done.
 * Stops at the first that does not complete and returns it (with its
 * outcome, BLOCKED or SLOW), for the caller to drive; wake-ups are
 * gathered and sent once, after unlocking.
 */
export function attemptFastBatch<Op extends DrivenOp>(
  memory: ChannelMemory,
  side: Locks,
  next: () => Op | undefined,
  completed: (op: Op) => void,
): { op: Op; outcome: Fast } | undefined {
  let wake = 0;
  let discarded: Uint8Array[] = [];
  let stopped: { op: Op; outcome: Fast } | undefined;
  lockSide(memory, side);
  try {
    for (;;) {
      const op = next();
      if (op === undefined) break;
      memory.beginJournal(side);
      let outcome: Fast;
      try {
        outcome = op.fastLock() === side ? op.attemptFast() : Fast.SLOW;
      } finally {
        memory.endJournal(side);
        wake |= op.wake;
        op.wake = 0;
        if (op.discarded.length > 0) discarded = [...discarded, ...op.discarded];
        op.discarded = [];
      }
      if (outcome !== Fast.DONE) {
        stopped = { op, outcome };
        break;
      }
      completed(op);
    }
  } finally {
    unlockSide(memory, side);
    if (wake !== 0) wakeWaiters(memory, wake);
    if (discarded.length > 0) releaseCarriedEnds(discarded);
  }
  return stopped;
}

/** One attempt: the fast path if it completes, else the full protocol under both locks (registering if blocked). */
export function attemptOnce(op: DrivenOp): boolean {
  if (attemptFastOnce(op) === Fast.DONE) return true;
  return attemptFull(op);
}

/**
 * `op.attempt()` under both locks. An attempt that throws abandons the
 * operation: it no longer counts as waiting, and a receive passes on a
 * wake-up it may have been given (senders wake only as many waiting
 * receivers as there are messages: WAKE_FOR_MESSAGE in channel-ops.ts).
 * When it fails and `stamp` is given, stores the progress stamp it saw.
 */
function attemptFull(op: DrivenOp, stamp?: { value: number }): boolean {
  enterCritical(op.memory);
  try {
    if (op.attempt()) return true;
    // Read before unlocking: under both locks nobody else moves the channel,
    // so this is the state the attempt saw (see attemptFastOnce).
    if (stamp) stamp.value = op.memory.progressStamp();
    return false;
  } catch (err) {
    op.abandon();
    throw err;
  } finally {
    leaveAndWake(op, 0);
  }
}

const stampSeen = { value: 0 };
/**
 * Like attemptOnce; when the attempt fails, returns the channel's progress
 * stamp as it was then.
 */
function attemptAndStamp(op: DrivenOp): number | true {
  const fast = attemptFastOnce(op, stampSeen);
  if (fast === Fast.DONE) return true;
  // BLOCKED stands for the full attempt only while probing: a waiter that is
  // about to sleep must register, which takes the full protocol.
  if (fast === Fast.BLOCKED && op.probing) return stampSeen.value;
  return attemptFull(op, stampSeen) ? true : stampSeen.value;
}

/** Gives up `op` under both locks (see SendOp/RecvOp.withdraw). */
export function withdrawOnce(op: DrivenOp, finalAttempt: boolean): Withdrawal {
  enterCritical(op.memory);
  try {
    return op.withdraw(finalAttempt);
  } catch (err) {
    op.abandon(); // as in attemptFull
    throw err;
  } finally {
    leaveAndWake(op, 0);
  }
}

/**
 * Runs `op` to completion on this thread, blocking it. Each round reads the
 * park word, attempts (registering as a waiter if blocked), then sleeps
 * until the word moves (a wake from whoever changed the channel) or the
 * deadline. At the deadline, a final attempt; a receive holding part of a
 * streamed message runs on to its end. `verb` names the call in errors
 * ("recvSync"), which add the channel: that text is built only then.
 */
function runSync(op: DrivenOp, timeout: number, verb: string): void {
  let deadline = timeout === Infinity ? Infinity : now() + timeout;
  const memory = op.memory;
  // Phase 1 (probing): attempt without registering and spin on the channel's
  // progress stamp, so that a busy peer pays nothing to wake us. Phase 2:
  // publish the wait (for the deadlock detector), register (in the attempt)
  // and sleep on the park word until woken. A party still spinning is not
  // published: it is about to make progress or to enter phase 2 and be seen.
  let probing = memory.spinMicros > 0;
  let published = false;
  // The last spin saw the channel move; how many moves in a row were not for us.
  let moved = false;
  let movesForOthers = 0;
  try {
    for (;;) {
      if (op instanceof SendOp && op.completedWithoutLock()) {
        if (moved) spinPaid(memory);
        return;
      }
      if (!probing && !published) {
        if (timeout === Infinity) ensureSupervisor(); // the deadlock detector runs there
        publishWait(op instanceof SendOp ? WaitOp.SEND : WaitOp.RECV, op.memory.id, timeout !== Infinity);
        published = true;
      }
      const seen = parkValue();
      op.probing = probing;
      // The stamp comes from the attempt: read before a one-lock attempt (the
      // other side moves without our lock), after a full one under both locks
      // (nobody else moves then; a rendezvous offer the attempt itself made
      // does not look like progress).
      const before = attemptAndStamp(op);
      if (before === true) {
        if (moved) spinPaid(memory);
        return;
      }
      if (moved) {
        // The channel moved, but for someone else (another receiver took the
        // message): spinning on did not pay. A few such moves in a row, and
        // this waiter sleeps: it must not keep a core busy that the party
        // doing the work may need.
        moved = false;
        spinWasted(memory);
        if (probing && ++movesForOthers >= MAX_MOVES_FOR_OTHERS) {
          probing = false;
          continue; // the next attempt registers before sleeping
        }
      }
      if (now() >= deadline) {
        op.probing = false;
        const outcome = withdrawOnce(op, true);
        if (outcome === "done") return;
        if (outcome === "withdrawn") throw timeoutError(`${verb} on ${memory.describe()}`, timeout);
        deadline = Infinity;
      }
      if (probing) {
        // A receiver marks itself as probing for the spin only: senders then
        // leave the wake-up of registered receivers to it (wakeWaiters). The
        // mark is cleared before the next attempt, which always follows.
        // Only worth its two atomic writes when receivers are registered (a
        // mark missed because one registers meanwhile costs a wake-up, no more).
        const marked = op instanceof RecvOp && memory.load(H.WAITING_RECEIVERS) > 0;
        if (marked) memory.setProbing(mySlot, true);
        try {
          if (spinUntilChanged(memory, before, deadline)) moved = true;
          else probing = false;
        } finally {
          if (marked) memory.setProbing(mySlot, false);
        }
        continue;
      }
      parkSync(seen, deadline, 0);
      if (verdictFlag(mySlot) !== 0 && heedVerdict(op)) return;
    }
  } finally {
    op.probing = false;
    if (published) clearWait();
  }
}

const MAX_ASYNC_SPIN_MICROS = 20;
const asyncSpin = new WeakMap<ChannelMemory, number>();

/**
 * For an async operation that could not complete at once: spins up to this
 * thread's async budget for the channel (starting at 2 µs, doubling when it
 * pays, halving when not, within [1, MAX_ASYNC_SPIN_MICROS]) for the
 * channel to move. Returns whether it moved.
 */
function spinBeforeAsyncWait(op: DrivenOp): boolean {
  const memory = op.memory;
  const budget = asyncSpin.get(memory) ?? 2;
  const before = memory.progressStamp();
  const until = now() + budget / 1000;
  for (let i = 0; ; i++) {
    if (memory.progressStamp() !== before) {
      asyncSpin.set(memory, Math.min(MAX_ASYNC_SPIN_MICROS, budget * 2));
      return true;
    }
    if ((i & 15) === 15 && now() >= until) break;
  }
  asyncSpin.set(memory, Math.max(1, budget / 2));
  return false;
}

/**
 * Spins (Atomics loads, no lock) until the channel's progress stamp moves
 * away from `before`, for at most the channel's adaptive spin budget.
 * Returns whether it moved. The budget doubles after a spin that paid off
 * (the attempt after it completed) and halves after one that did not,
 * within [MIN, MAX]: two busy parties keep handing over without sleeping,
 * while a party whose peer is slow, or who keeps losing the message to
 * another receiver, soon stops burning its core.
 */
const MIN_SPIN_MICROS = 25;
const MAX_SPIN_MICROS = 200;
const MAX_MOVES_FOR_OTHERS = 3;
function spinUntilChanged(memory: ChannelMemory, before: number, deadline: number): boolean {
  const until = Math.min(now() + memory.spinMicros / 1000, deadline);
  for (let i = 0; ; i++) {
    if (memory.progressStamp() !== before) return true;
    // performance.now() costs ~60 ns: look at the clock every 32 polls.
    if ((i & 31) === 31 && now() >= until) break;
  }
  spinWasted(memory);
  return false;
}

function spinPaid(memory: ChannelMemory): void {
  memory.spinMicros = Math.min(MAX_SPIN_MICROS, memory.spinMicros * 2);
}

function spinWasted(memory: ChannelMemory): void {
  memory.spinMicros = Math.max(MIN_SPIN_MICROS, memory.spinMicros / 2);
}

/**
 * The supervisor found this party deadlocked (deadlock.ts). In throw mode,
 * withdraws the operation and throws DeadlockError (unless it completed
 * after all: returns true); in report mode, warns and goes on waiting.
 */
export function heedVerdict(op: DrivenOp): boolean {
  const error = takeVerdict();
  if (!error) return false;
  if (withdrawOnce(op, false) === "done") return true;
  throw error;
}

/**
 * Runs `op` without blocking the event loop: one attempt now, then under
 * this thread's pump (Atomics.waitAsync on the park word), with a timer for
 * the deadline and a listener for the signal. `done` computes the result.
 * `verb` names the call in errors, as for runSync.
 */
function runAsync<T>(
  op: DrivenOp,
  options: WaitOptions | undefined,
  verb: string,
  done: () => T,
  undo: () => void,
  beforeWait: () => void = () => {},
): Promise<T> {
  const timeout = checkTimeout(options?.timeout, verb);
  const signal = effectiveSignal(options?.signal);
  if (signal?.aborted) {
    undo();
    return Promise.reject(signal.reason);
  }
  try {
    // First the fast path; when it is merely blocked, a short synchronous
    // spin pays when the peer answers within microseconds (a request/reply
    // with a busy interpreter): it saves a trip through the event loop and a
    // wake-up. Adaptive, at most MAX_ASYNC_SPIN_MICROS of event loop time.
    // Then a full attempt, which registers the operation if it is blocked.
    const first = attemptFastOnce(op);
    if (first === Fast.DONE) return Promise.resolve(done());
    if (first === Fast.BLOCKED && timeout !== 0 && spinBeforeAsyncWait(op) && attemptFastOnce(op) === Fast.DONE) return Promise.resolve(done());
    if (attemptOnce(op)) return Promise.resolve(done());
  } catch (err) {
    undo();
    return Promise.reject(err);
  }
  beforeWait();
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    const settle = (outcome: "done" | Error | unknown, failed: boolean): void => {
      settled = true;
      if (timer) clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      removeFromPump(pumped);
      if (!failed) {
        try {
          resolve(done());
        } catch (err) {
          reject(err);
        }
      } else {
        undo();
        reject(outcome);
      }
    };
    const pumped = {
      step(): boolean {
        if (settled) return true;
        try {
          if (attemptOnce(op)) settle("done", false);
        } catch (err) {
          settle(err, true);
        }
        return settled;
      },
    };
    const giveUp = (finalAttempt: boolean, reason: () => unknown): void => {
      if (settled) return;
      try {
        const outcome = withdrawOnce(op, finalAttempt);
        if (outcome === "done") settle("done", false);
        else if (outcome === "withdrawn") settle(reason(), true);
        // "busy": a streamed message is being taken; the pump finishes it.
      } catch (err) {
        settle(err, true);
      }
    };
    const onAbort = (): void => giveUp(false, () => signal!.reason);
    if (timeout !== Infinity) {
      timer = setTimeout(() => giveUp(true, () => timeoutError(`${verb} on ${op.memory.describe()}`, timeout)), timeout);
    }
    signal?.addEventListener("abort", onAbort, { once: true });
    pumpUntilSettled(pumped);
  });
}

/** Most messages, and about the most bytes, one lock hold of sendMany writes. */
const BATCH_MESSAGES = 256;
const BATCH_BYTES = 256 * 1024;

function deadlineOf(timeout: number): number {
  return timeout === Infinity ? Infinity : now() + timeout;
}
function remainingOf(deadline: number): number {
  return deadline === Infinity ? Infinity : Math.max(0, deadline - now());
}

/** `err` with `sent` (how many values of a sendMany went in); a thrown non-object is wrapped. */
function withSent(err: unknown, sent: number): unknown {
  if (typeof err === "object" && err !== null) {
    Object.defineProperty(err, "sent", { value: sent, enumerable: true, configurable: true, writable: true });
    return err;
  }
  const wrapped = new Error(String(err));
  (wrapped as Error & { sent: number }).sent = sent;
  return wrapped;
}

function checkMax(max: unknown, verb: string, memory: ChannelMemory): void {
  if (typeof max !== "number" || !Number.isInteger(max) || max < 1) {
    throw new RangeError(`${verb} on ${memory.describe()}: max must be a positive integer (the most messages to take), got ${String(max)}`);
  }
}

/**
 * A send completed: the ends its message carries now belong to whoever
 * receives it, or, if the overflow policy discarded the message
 * (drop-newest), are closed.
 */
export function settleSent(message: ChannelMessage, op: SendOp, carrier: ChannelMemory): void {
  if (op.droppedOwn) message.discard(carrier);
  else message.commit(carrier);
}

/**
 * Changes the capacity of the channel behind `memory` (setCapacity on
 * either end): under both locks, then wakes every waiter, which re-checks
 * under the new rule. Buffered messages stay (above the new capacity,
 * senders wait until the length falls below it).
 */
function setCapacityOf(memory: ChannelMemory, capacity: unknown, verb: string): void {
  const checked = checkCapacity(capacity, `${verb} on ${memory.describe()}`);
  if (checked === 0 && memory.overflow === Overflow.DROP_OLDEST) {
    throw new RangeError(`${verb} on ${memory.describe()}: capacity 0 cannot go with overflow "drop-oldest" (a rendezvous buffers nothing to drop)`);
  }
  const stored = checked === Infinity ? -1 : checked;
  locked(memory, () => memory.set(H.CAPACITY, stored));
  wakeWaiters(memory, WAKE_SENDERS | WAKE_RECEIVERS);
}

function statsOf(memory: ChannelMemory): ChannelStats {
  return locked(memory, () => {
    const closedBits = memory.get(H.CLOSED);
    const drained = memory.length() === 0 && memory.get(H.STREAM_SENDER) === 0;
    return {
      id: memory.id,
      name: memory.name,
      capacity: memory.capacity < 0 ? Infinity : memory.capacity,
      length: memory.length(),
      bytes: memory.usedBytes(),
      maxBufferBytes: memory.get(H.MAX_DATA_SIZE),
      senders: memory.get(H.SEND_HANDLES),
      receivers: memory.get(H.RECV_HANDLES),
      waitingSenders: memory.get(H.WAITING_SENDERS),
      waitingReceivers: memory.get(H.WAITING_RECEIVERS),
      sent: memory.sent,
      received: memory.received,
      overflow: OVERFLOW_NAMES[memory.overflow] ?? "wait",
      dropped: memory.dropped,
      closed: (closedBits & CLOSED_NO_RECEIVERS) !== 0 || ((closedBits & CLOSED_NO_SENDERS) !== 0 && drained),
    };
  });
}

/**
 * The sending end of a channel. Every method may be called from any
 * interpreter that holds this handle; passing the handle to another
 * interpreter moves it (clone() first to keep one).
 */
export class SendChannel<T = unknown> {
  readonly #end: End;

  /** @internal Use createChannel(). */
  constructor(token: symbol, end: End) {
    if (token !== constructing) throw new TypeError("use createChannel() to make channels");
    this.#end = end;
    bindHandle(this, end);
    end.watch();
  }

  /** The channel's id (the same for every handle of the channel, in every interpreter). */
  get id(): number {
    return this.#end.memory.id;
  }

  #prepare(value: T): ChannelMessage {
    this.#end.ensureOpen("send");
    const message = encodeForChannel(value);
    const limit = this.#end.memory.get(H.MAX_MESSAGE_BYTES);
    if (message.length > limit) {
      message.undo();
      throw new MessageTooLargeError(
        `send on ${this.#end.memory.describe()}: the message is ${message.length} bytes serialized, over this channel's maxMessageBytes (${limit}); send it in parts or create the channel with a larger maxMessageBytes`,
      );
    }
    return message;
  }

  /** Made once per handle: the per-operation check that this handle is still usable. */
  readonly #checkOpen = (): void => {
    if (this.#end.state !== "open") this.#end.ensureOpen("send");
  };

  #op(message: ChannelMessage, isTry: boolean): SendOp {
    return new SendOp(this.#end.memory, message, isTry, this.#checkOpen);
  }

  /** The operation object sendSync reuses (a blocked thread runs one sync send at a time). */
  #syncOp: SendOp | undefined;

  /**
   * Sends `value`. Resolves when the channel has accepted it: for capacity
   * 0 once a receiver has taken it, for capacity n once fewer than n
   * messages were buffered, for Infinity at once (unless the byte budget is
   * full). Waits without blocking the event loop.
   *
   * Rejects with ChannelClosedError (this handle closed or moved, or every
   * recv handle closed), NotShareableError (nothing sent), MessageTooLargeError,
   * TimeoutError after `timeout` ms, or the signal's reason when aborted.
   * A send that times out or is aborted is withdrawn: nobody receives it.
   */
  send(value: T, options?: WaitOptions): Promise<void> {
    let message: ChannelMessage;
    try {
      checkTimeout(options?.timeout, "send");
      message = this.#prepare(value);
    } catch (err) {
      return Promise.reject(err);
    }
    const op = this.#op(message, false);
    const memory = this.#end.memory;
    // A send that waits must own its bytes (the encoder's scratch and the caller's array move on).
    return runAsync(op, options, "send", () => settleSent(message, op, memory), () => message.undo(), () => message.detach());
  }

  /**
   * Sends `value`, blocking this thread (Atomics.wait) until the channel
   * accepts it (see send). For interpreters; on the main thread it blocks
   * the event loop. Throws what send rejects with (no signal here).
   */
  sendSync(value: T, options?: { timeout?: number }): void {
    const timeout = checkTimeout(options?.timeout, "sendSync");
    const message = this.#prepare(value);
    const op = this.#syncOp?.reuse(message) ?? (this.#syncOp = this.#op(message, false));
    const memory = this.#end.memory;
    try {
      // No copy while waiting: this thread is blocked, so neither the caller's
      // array nor the encoder's scratch can change under the message.
      if (attemptFastOnce(op) !== Fast.DONE) runSync(op, timeout, "sendSync");
    } catch (err) {
      message.undo();
      throw err;
    } finally {
      op.forgetMessage(); // the reused operation must not keep the caller's value alive
    }
    settleSent(message, op, memory);
  }

  /**
   * Encodes up to BATCH_MESSAGES of `values` (or BATCH_BYTES of them), each
   * owning its bytes (the next encode reuses the encoder's scratch): what
   * one lock hold of a batch writes.
   */
  #prepareBatch(values: Iterator<T>, into: ChannelMessage[]): void {
    let bytes = 0;
    while (into.length < BATCH_MESSAGES && bytes < BATCH_BYTES) {
      const next = values.next();
      if (next.done) return;
      const message = this.#prepare(next.value);
      message.detach();
      into.push(message);
      bytes += message.length;
    }
  }

  /**
   * Sends every value of `values`, in order, with the guarantees of one
   * send each (exactly once, per-sender order), but amortising the lock and
   * the wake-ups: as many as the channel has room for go in under one hold
   * of the send lock, with one wake-up for all of them. Waits (without
   * blocking the event loop) whenever the channel is full, as send does;
   * `timeout` is for the whole batch. Rejects as send does; on a timeout or
   * an abort the error has `sent`: how many of the values went in (those
   * are delivered, the rest are not). Also rejects (with `sent`) when a
   * value is not shareable, and nothing after it is sent.
   */
  async sendMany(values: Iterable<T>, options?: WaitOptions): Promise<void> {
    let sent = 0;
    const pending: ChannelMessage[] = [];
    const deadline = deadlineOf(checkTimeout(options?.timeout, "sendMany"));
    try {
      const iterator = values[Symbol.iterator]();
      for (;;) {
        if (pending.length === 0) this.#prepareBatch(iterator, pending);
        if (pending.length === 0) return;
        const fast = this.#sendPendingFast(pending);
        sent += fast.done;
        if (pending.length === 0) continue;
        // The first pending message needs waiting (or the full protocol): one send of it, then batches again.
        const message = pending.shift()!;
        const op = fast.midFlight ?? this.#op(message, false);
        const memory = this.#end.memory;
        await runAsync(op, { timeout: remainingOf(deadline), signal: options?.signal }, "sendMany", () => settleSent(message, op, memory), () => message.undo());
        sent++;
      }
    } catch (err) {
      for (const message of pending) message.undo();
      throw withSent(err, sent);
    }
  }

  /** Like sendMany, but blocks this thread (Atomics.wait). For interpreters. Throws what sendMany rejects with. */
  sendManySync(values: Iterable<T>, options?: { timeout?: number }): void {
    let sent = 0;
    const pending: ChannelMessage[] = [];
    const deadline = deadlineOf(checkTimeout(options?.timeout, "sendManySync"));
    try {
      const iterator = values[Symbol.iterator]();
      for (;;) {
        if (pending.length === 0) this.#prepareBatch(iterator, pending);
        if (pending.length === 0) return;
        const fast = this.#sendPendingFast(pending);
        sent += fast.done;
        if (pending.length === 0) continue;
        const message = pending.shift()!;
        const op = fast.midFlight ?? this.#op(message, false);
        try {
          if (attemptFastOnce(op) !== Fast.DONE) runSync(op, remainingOf(deadline), "sendManySync");
        } catch (err) {
          message.undo();
          throw err;
        }
        settleSent(message, op, this.#end.memory);
        sent++;
      }
    } catch (err) {
      for (const message of pending) message.undo();
      throw withSent(err, sent);
    }
  }

  /**
   * Writes pending messages from the front under one hold of the send lock,
   * as far as they go without waiting; returns how many, and the operation
   * of the next one if it is already under way (a rendezvous offer: the
   * caller drives it to its end before anything else).
   */
  #sendPendingFast(pending: ChannelMessage[]): { done: number; midFlight?: SendOp } {
    const memory = this.#end.memory;
    let index = 0;
    let op: SendOp | undefined;
    let done = 0;
    const dropped: boolean[] = [];
    const stopped = attemptFastBatch(
      memory,
      Locks.SEND,
      () => {
        if (index >= pending.length) return undefined;
        const message = pending[index++]!;
        op = op?.reuse(message) ?? this.#op(message, false);
        return op;
      },
      (completed) => {
        dropped.push(completed.droppedOwn);
        done++;
      },
    );
    // Settled after unlocking: closing the ends of a discarded message takes their channels' locks.
    for (let i = 0; i < done; i++) {
      if (dropped[i]) pending[i]!.discard(memory);
      else pending[i]!.commit(memory);
    }
    pending.splice(0, done);
    return stopped?.op.started ? { done, midFlight: stopped.op } : { done };
  }

  /**
   * Sends `value` only if that needs no waiting: returns false when the
   * channel is open but has no room (capacity 0: no receiver waiting for
   * it). Throws ChannelClosedError, NotShareableError, MessageTooLargeError
   * (also for a message too large for the ring, which must be streamed by send).
   */
  trySend(value: T): boolean {
    const message = this.#prepare(value);
    const op = this.#op(message, true);
    try {
      if (attemptOnce(op)) {
        settleSent(message, op, this.#end.memory);
        return true;
      }
      withdrawOnce(op, false);
    } catch (err) {
      message.undo();
      throw err;
    }
    message.undo();
    return false;
  }

  /**
   * Closes this handle (idempotent). When every send handle of the channel
   * is closed, receivers get what is buffered, then ChannelClosedError.
   */
  close(): void {
    this.#end.close();
  }

  /**
   * Changes the channel's capacity, for every handle in every interpreter,
   * to any value createChannel accepts (0, a positive integer, Infinity).
   * Buffered messages are never discarded: above the new capacity, senders
   * wait until the length falls below it. Waiting senders and receivers
   * re-check at once under the new rule (a rendezvous sender whose message
   * is offered completes once the capacity is above 0). Throws RangeError
   * for another value (and for 0 under overflow "drop-oldest"),
   * ChannelClosedError if this handle is closed or moved.
   */
  setCapacity(capacity: number): void {
    this.#end.ensureOpen("setCapacity");
    setCapacityOf(this.#end.memory, capacity, "setCapacity");
  }

  /** A new, independently closable send handle of the same channel. Throws ChannelClosedError if this one is not open. */
  clone(): SendChannel<T> {
    this.#end.ensureOpen("clone");
    return new SendChannel<T>(constructing, End.acquire(this.#end.memory, "send"));
  }

  stats(): ChannelStats {
    return statsOf(this.#end.memory);
  }

  get [Symbol.toStringTag](): string {
    return `SendChannel ${this.#end.memory.describe()}`;
  }
}

/**
 * The receiving end of a channel. Many receivers may share a channel:
 * each message goes to exactly one of them.
 */
export class RecvChannel<T = unknown> {
  readonly #end: End;

  /** @internal Use createChannel(). */
  constructor(token: symbol, end: End) {
    if (token !== constructing) throw new TypeError("use createChannel() to make channels");
    this.#end = end;
    bindHandle(this, end);
    end.watch();
  }

  get id(): number {
    return this.#end.memory.id;
  }

  readonly #checkOpen = (): void => {
    if (this.#end.state !== "open") this.#end.ensureOpen("recv");
  };

  #op(): RecvOp {
    return new RecvOp(this.#end.memory, this.#checkOpen);
  }

  /** The operation object recvSync reuses. */
  #syncOp: RecvOp | undefined;

  /**
   * Receives the oldest message, waiting (without blocking the event loop)
   * until there is one. Rejects with ChannelClosedError once every send
   * handle is closed and the buffer is drained (at once, never a hang),
   * TimeoutError after `timeout` ms (a message there at the deadline is
   * still taken), or the signal's reason when aborted (nothing is taken).
   * A receive that has begun taking a streamed message finishes it.
   */
  recv(options?: WaitOptions): Promise<T> {
    let op: RecvOp;
    try {
      checkTimeout(options?.timeout, "recv");
      this.#end.ensureOpen("recv");
      op = this.#op();
    } catch (err) {
      return Promise.reject(err);
    }
    return runAsync(op, options, "recv", () => decodeFromChannel(op.received!) as T, () => {});
  }

  /** Like recv, but blocks this thread (Atomics.wait). For interpreters. */
  recvSync(options?: { timeout?: number }): T {
    const timeout = checkTimeout(options?.timeout, "recvSync");
    this.#end.ensureOpen("recv");
    const op = this.#syncOp?.reuse() ?? (this.#syncOp = this.#op());
    if (attemptFastOnce(op) !== Fast.DONE) runSync(op, timeout, "recvSync");
    try {
      return decodeFromChannel(op.received!) as T;
    } finally {
      op.forgetReceived(); // the reused operation must not keep a received value alive
    }
  }

  /**
   * Takes up to `max` messages there now, under one hold of the receive
   * lock (one wake-up for the senders of all of them), appending their
   * values to `into`.
   */
  #takeMany(max: number, into: T[]): void {
    let op: RecvOp | undefined;
    while (into.length < max) {
      const stopped = attemptFastBatch(
        this.#end.memory,
        Locks.RECV,
        () => {
          if (into.length >= max) return undefined;
          op = op?.reuse() ?? this.#op();
          return op;
        },
        (completed) => {
          into.push(decodeFromChannel(completed.received!) as T);
          completed.forgetReceived();
        },
      );
      if (!stopped || stopped.outcome === Fast.BLOCKED) return;
      // A message the fast path does not take (channel ends inside, a stream, a
      // withdrawn record first): the full protocol, still without waiting.
      const slow = this.#op();
      try {
        if (!attemptOnce(slow)) {
          const outcome = withdrawOnce(slow, false);
          if (outcome === "withdrawn") return;
          if (outcome === "busy") runSync(slow, Infinity, "recvMany"); // a streamed message begun is taken whole, as tryRecv does
        }
      } catch (err) {
        if (err instanceof ChannelClosedError && into.length > 0) return;
        throw err;
      }
      into.push(decodeFromChannel(slow.received!) as T);
    }
  }

  /**
   * Waits, like recv, until at least one message is there, then returns up
   * to `max` messages that are there without waiting (tokio's recv_many),
   * oldest first, taken under one hold of the receive lock where the
   * channel allows it. Rejects with RangeError unless `max` is a positive
   * integer, ChannelClosedError once the channel is closed and drained,
   * TimeoutError or the signal's reason as recv does (nothing taken).
   */
  async recvMany(max: number, options?: WaitOptions): Promise<T[]> {
    checkMax(max, "recvMany", this.#end.memory);
    const values: T[] = [];
    this.#end.ensureOpen("recvMany");
    this.#takeMany(max, values);
    if (values.length > 0) return values;
    values.push(await this.recv(options));
    this.#takeMany(max, values);
    return values;
  }

  /** Like recvMany, but blocks this thread (Atomics.wait). For interpreters. */
  recvManySync(max: number, options?: { timeout?: number }): T[] {
    checkMax(max, "recvManySync", this.#end.memory);
    const values: T[] = [];
    this.#end.ensureOpen("recvManySync");
    this.#takeMany(max, values);
    if (values.length > 0) return values;
    values.push(this.recvSync(options));
    this.#takeMany(max, values);
    return values;
  }

  /**
   * Takes a message if one is there now. `{ ok: false, closed: true }` when
   * every send handle is closed and nothing is left; throws
   * ChannelClosedError if this handle is closed or moved. (A streamed
   * message already in progress is taken whole, which may wait for its sender.)
   */
  tryRecv(): TryRecvResult<T> {
    this.#end.ensureOpen("tryRecv");
    const op = this.#op();
    try {
      if (attemptOnce(op)) return { ok: true, value: decodeFromChannel(op.received!) as T };
      if (op.midStream) {
        runSync(op, Infinity, "tryRecv");
        return { ok: true, value: decodeFromChannel(op.received!) as T };
      }
      withdrawOnce(op, false);
      return { ok: false, closed: false };
    } catch (err) {
      if (err instanceof ChannelClosedError && this.#end.state === "open") return { ok: false, closed: true };
      throw err;
    }
  }

  /** Iterates messages until the channel is closed and drained. */
  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    for (;;) {
      let value: T;
      try {
        value = await this.recv();
      } catch (err) {
        if (err instanceof ChannelClosedError) return;
        throw err;
      }
      yield value;
    }
  }

  /** Blocking iteration (recvSync) until the channel is closed and drained. For interpreters. */
  *[Symbol.iterator](): Iterator<T> {
    for (;;) {
      let value: T;
      try {
        value = this.recvSync();
      } catch (err) {
        if (err instanceof ChannelClosedError) return;
        throw err;
      }
      yield value;
    }
  }

  /**
   * Closes this handle (idempotent). When every recv handle is closed,
   * buffered messages are dropped and senders fail with ChannelClosedError.
   */
  close(): void {
    this.#end.close();
  }

  /** Changes the channel's capacity: see SendChannel.setCapacity. */
  setCapacity(capacity: number): void {
    this.#end.ensureOpen("setCapacity");
    setCapacityOf(this.#end.memory, capacity, "setCapacity");
  }

  clone(): RecvChannel<T> {
    this.#end.ensureOpen("clone");
    return new RecvChannel<T>(constructing, End.acquire(this.#end.memory, "recv"));
  }

  stats(): ChannelStats {
    return statsOf(this.#end.memory);
  }

  get [Symbol.toStringTag](): string {
    return `RecvChannel ${this.#end.memory.describe()}`;
  }
}

installHandleFactory((end) => (end.side === "send" ? new SendChannel(constructing, end) : new RecvChannel(constructing, end)));

function checkByteOption(name: string, value: unknown, fallback: number, limit: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== "number" || !Number.isInteger(value) || value <= 0) {
    throw new RangeError(`createChannel: ${name} must be a positive integer number of bytes, got ${String(value)}`);
  }
  if (value > limit) throw new RangeError(`createChannel: ${name} must be at most ${limit} bytes, got ${value}`);
  return value;
}

function checkCapacity(capacity: unknown, where = "createChannel"): number {
  if (capacity === undefined && where === "createChannel") return Infinity;
  if (capacity === Infinity) return Infinity;
  if (typeof capacity !== "number" || !Number.isInteger(capacity) || capacity < 0 || capacity > 2 ** 31 - 1) {
    throw new RangeError(`${where}: capacity must be 0 (rendezvous), a positive integer (bounded) or Infinity (unbounded), got ${String(capacity)}`);
  }
  return capacity;
}

function checkOverflow(overflow: unknown, capacity: number): number {
  if (overflow === undefined) return Overflow.WAIT;
  const code = (OVERFLOW_NAMES as readonly unknown[]).indexOf(overflow);
  if (code < 0) {
    throw new RangeError(`createChannel: overflow must be one of ${OVERFLOW_NAMES.map((n) => `"${n}"`).join(", ")}, got ${typeof overflow === "string" ? `"${overflow}"` : String(overflow)}`);
  }
  if (code === Overflow.DROP_OLDEST && capacity === 0) {
    throw new RangeError(`createChannel: overflow "drop-oldest" needs a capacity above 0 (a rendezvous buffers nothing to drop); use "drop-newest" or "error" at capacity 0`);
  }
  return code;
}

/**
 * Creates a channel and returns its ends, receiving end first (PEP 554
 * order). Throws RangeError for a capacity that is not 0, a positive
 * integer or Infinity, and for byte options that are not positive integers.
 */
export function createChannel<T = unknown>(options: ChannelOptions = {}): [RecvChannel<T>, SendChannel<T>] {
  const capacity = checkCapacity(options.capacity);
  const maxBufferBytes = checkByteOption("maxBufferBytes", options.maxBufferBytes, DEFAULT_MAX_BUFFER_BYTES, LIMIT_BUFFER_BYTES);
  const bufferBytes = checkByteOption("bufferBytes", options.bufferBytes, Math.min(DEFAULT_BUFFER_BYTES, maxBufferBytes), LIMIT_BUFFER_BYTES);
  if (bufferBytes > maxBufferBytes) {
    throw new RangeError(`createChannel: bufferBytes (${bufferBytes}) must not exceed maxBufferBytes (${maxBufferBytes})`);
  }
  const maxMessageBytes = checkByteOption("maxMessageBytes", options.maxMessageBytes, LIMIT_MESSAGE_BYTES, LIMIT_MESSAGE_BYTES);
  const name = options.name ?? "";
  if (typeof name !== "string") throw new TypeError(`createChannel: name must be a string, got ${typeof name}`);
  const overflow = checkOverflow(options.overflow, capacity);
  const buffer = createChannelMemory({ id: allocateChannelId(), capacity, bufferBytes, maxBufferBytes, maxMessageBytes, name, overflow });
  const memory = new ChannelMemory(buffer);
  const recv = new RecvChannel<T>(constructing, End.acquire(memory, "recv"));
  const send = new SendChannel<T>(constructing, End.acquire(memory, "send"));
  // Registered only once both ends are counted: the supervisor forgets a
  // channel whose handle counts are both 0, and it may look at once.
  registerNewChannel(memory);
  return [recv, send];
}
