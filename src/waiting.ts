/**
 * The wait/notify layer.
 *
 * Every party (thread) owns one futex word, its *park word*, in the control
 * block. A party that cannot make progress registers itself on the channels
 * it waits for (a bit per party in each channel's waiter bitmap), re-checks,
 * and then sleeps on its own park word. Whoever changes a channel in a way a
 * registered party may care about bumps that party's park word and notifies
 * it. Because the word is per party, not per channel, one party can wait on
 * several channels at once (select) and be woken by any of them.
 *
 * The no-lost-wakeup rule, relied on by every wait here: read the park word
 * BEFORE attempting the operation (the attempt registers under the channel
 * lock), and sleep only while the word still holds that value. A notify that
 * lands anywhere after the read changes the word, so the sleep returns at once.
 *
 * Sync waits use `Atomics.wait`, after a short spin (only sync callers spin:
 * an idle party never burns a core beyond SPIN_MICROS). Async waits share
 * one `Atomics.waitAsync` per thread (the pump), which re-runs every pending
 * async operation of the thread when the park word moves. A pending async
 * wait holds a ref'd timer so the process stays alive while it waits
 * (Node 20 does not count a bare `waitAsync` as pending work).
 */
import {
  control,
  MAX_PUBLISHED_CASES,
  mySlot,
  P_ASYNC_SINCE,
  P_ASYNC_WAITS,
  P_WAIT_CHANNEL,
  P_WAIT_FLAGS,
  P_WAIT_OP,
  P_WAIT_SINCE,
  selectWord,
  slotWord,
  WORD_BLOCKED,
} from "./control.js";
import { TimeoutError } from "./errors.js";

const PARK_FIELD = 2;
const myParkWord = slotWord(mySlot, PARK_FIELD);

/** How long a sync waiter polls its park word before sleeping. */
const spinMicros = 50;


/** Wakes party `slot`: bumps its park word and notifies it if it sleeps there. */
export function wakeParty(slot: number): void {
  const word = slotWord(slot, PARK_FIELD);
  Atomics.add(control, word, 1);
  Atomics.notify(control, word);
}

/** The current value of this thread's park word (read it BEFORE attempting). */
export function parkValue(): number {
  return Atomics.load(control, myParkWord);
}

/**
 * Checks a `timeout` option: undefined means wait forever; otherwise a
 * number >= 0 (Infinity allowed). Throws RangeError for NaN, negatives and
 * non-numbers.
 */
export function checkTimeout(timeout: unknown, what: string): number {
  if (timeout === undefined) return Infinity;
  if (typeof timeout !== "number" || Number.isNaN(timeout) || timeout < 0) {
    throw new RangeError(`${what}: timeout must be a number of milliseconds >= 0 (or Infinity), got ${String(timeout)}`);
  }
  return timeout;
}

/** Milliseconds on a monotonic clock. */
export function now(): number {
  return performance.now();
}

/**
 * Sleeps until this thread's park word differs from `seen`, or until
 * `deadline` (monotonic ms; Infinity = none). Spins for up to the spin
 * window first. Woken by `wakeParty(mySlot)`; the caller re-checks its
 * condition after every return, whatever woke it.
 */
export function parkSync(seen: number, deadline: number, spinFor: number = spinMicros): void {
  if (spinFor > 0) {
    const spinUntil = now() + spinFor / 1000;
    for (let i = 0; ; i++) {
      if (Atomics.load(control, myParkWord) !== seen) return;
      // performance.now() costs ~60 ns: check the clock every 64 polls.
      if ((i & 63) === 63 && now() >= spinUntil) break;
    }
  }
  const remaining = deadline - now();
  if (remaining <= 0) return;
  Atomics.wait(control, myParkWord, seen, remaining === Infinity ? undefined : remaining);
}

/** What a party waits for, as published for deadlock detection (control.ts, party words 7-9). */
export const WaitOp = { NONE: 0, SEND: 1, RECV: 2, SELECT: 3, ACQUIRE: 4 } as const;
export const WAIT_SYNC = 1;
export const WAIT_HAS_TIMEOUT = 2;

/**
 * Publishes that this party is about to block synchronously in `op` on
 * channel `channelId` (the deadlock detector reads it; a wait with a
 * timeout is never reported). Cleared by clearWait.
 */
export function publishWait(op: number, channelId: number, hasTimeout: boolean): void {
  Atomics.store(control, slotWord(mySlot, P_WAIT_CHANNEL), channelId);
  Atomics.store(control, slotWord(mySlot, P_WAIT_FLAGS), WAIT_SYNC | (hasTimeout ? WAIT_HAS_TIMEOUT : 0));
  if (!hasTimeout) Atomics.add(control, WORD_BLOCKED, 1);
  Atomics.store(control, slotWord(mySlot, P_WAIT_SINCE), Date.now() % 2 ** 31);
  Atomics.store(control, slotWord(mySlot, P_WAIT_OP), op);
}

/**
 * Publishes a selectSync's cases (channel id and WaitOp.SEND/RECV each), then
 * the wait itself. More than MAX_PUBLISHED_CASES: published as count 0,
 * which the detector never reports.
 */
export function publishSelect(cases: Array<{ channelId: number; op: number }>, hasTimeout: boolean): void {
  const base = selectWord(mySlot);
  const count = cases.length <= MAX_PUBLISHED_CASES ? cases.length : 0;
  for (let i = 0; i < count; i++) {
    Atomics.store(control, base + 1 + 2 * i, cases[i]!.channelId);
    Atomics.store(control, base + 2 + 2 * i, cases[i]!.op);
  }
  Atomics.store(control, base, count);
  publishWait(WaitOp.SELECT, cases[0]?.channelId ?? 0, hasTimeout);
}

/**
 * Whether party `slot` is, as published, in a sync wait that receives on
 * channel `channelId` (a recvSync, or a selectSync with a receive case on
 * it). Such a party attempts that receive as soon as it is woken, so a
 * wake-up sent to it is one that gets used (channel-ops.ts wakeWaiters).
 * Any thread; a racy read, right whenever the party is registered there.
 *
 * A party with async operations pending (P_ASYNC_WAITS) never counts: its
 * registration on the channel may be one of them, which it attempts only
 * when its event loop runs again, maybe much later (right after its sync
 * operation completed, before it clears its published wait, it is
 * registered only by those). Counting it could spend the one wake-up a
 * sleeping party needed; uncounted, it is woken as well.
 */
export function waitsSyncToReceive(slot: number, channelId: number): boolean {
  if (hasAsyncWaits(slot)) return false;
  const op = Atomics.load(control, slotWord(slot, P_WAIT_OP));
  if (op === WaitOp.RECV) return Atomics.load(control, slotWord(slot, P_WAIT_CHANNEL)) === channelId;
  if (op !== WaitOp.SELECT) return false;
  const base = selectWord(slot);
  const count = Math.min(Atomics.load(control, base), MAX_PUBLISHED_CASES);
  for (let i = 0; i < count; i++) {
    if (Atomics.load(control, base + 1 + 2 * i) === channelId && Atomics.load(control, base + 2 + 2 * i) === WaitOp.RECV) return true;
  }
  return false;
}

/**
 * Whether party `slot` is, as published, in a sendSync on channel
 * `channelId`: it attempts that send as soon as it is woken (see
 * waitsSyncToReceive; channel-ops.ts WAKE_FOR_ROOM). A selectSync with a
 * send case is not counted, and is woken every time; nor is a party with
 * async operations pending (see waitsSyncToReceive).
 */
export function waitsSyncToSend(slot: number, channelId: number): boolean {
  if (hasAsyncWaits(slot)) return false;
  return Atomics.load(control, slotWord(slot, P_WAIT_OP)) === WaitOp.SEND && Atomics.load(control, slotWord(slot, P_WAIT_CHANNEL)) === channelId;
}

/** Whether party `slot` has async operations pending (its pump's count). */
function hasAsyncWaits(slot: number): boolean {
  return Atomics.load(control, slotWord(slot, P_ASYNC_WAITS)) !== 0;
}

export function clearWait(): void {
  clearWaitOf(mySlot);
}

/** Clears party `slot`'s published wait (its own, or a dead party's, by the supervisor). */
export function clearWaitOf(slot: number): void {
  if (Atomics.exchange(control, slotWord(slot, P_WAIT_OP), WaitOp.NONE) === WaitOp.NONE) return;
  if (!(Atomics.load(control, slotWord(slot, P_WAIT_FLAGS)) & WAIT_HAS_TIMEOUT)) Atomics.sub(control, WORD_BLOCKED, 1);
}

/** Whether any party is blocked in a sync wait without timeout right now. */
export function anyoneBlocked(): boolean {
  return Atomics.load(control, WORD_BLOCKED) > 0;
}

/** One operation driven by the async pump. */
export interface AsyncStep {
  /** Re-attempts the operation; returns true once it has settled (resolved or rejected). */
  step(): boolean;
}

const pending = new Set<AsyncStep>();
let pumping = false;

let holds = 0;
/**
 * Never fires in practice; ref'd while anything holds the process, unref'd
 * otherwise. Made when this module loads, not at the first hold: a timer
 * keeps the async context it was made in (AsyncLocalStorage stores) alive
 * for as long as it exists, and this one exists for good.
 */
const keepAlive: NodeJS.Timeout = setInterval(noop, 2 ** 30).unref();
/**
 * Keeps the process alive until the returned function is called (a bare
 * Atomics.waitAsync does not, on Node 20). Reference-counted; idempotent release.
 * One timer serves every hold, ref'd and unref'd: a task served by awaiting
 * a reply holds and releases once per task, and creating and clearing a
 * timer each time cost an allocation and two timer-list updates.
 */
export function holdProcess(): () => void {
  if (holds++ === 0) keepAlive.ref();
  let released = false;
  return () => {
    if (released) return;
    released = true;
    if (--holds === 0) keepAlive.unref();
  };
}
let releasePump: (() => void) | undefined;

/**
 * Adds `op` to this thread's async pump and runs it until it settles. The
 * pump waits with `Atomics.waitAsync` on the park word, so the event loop
 * stays free; a ref'd timer keeps the process alive while anything waits.
 */
export function pumpUntilSettled(op: AsyncStep): void {
  // Published for inspect(): how long this thread's async waits have stood.
  if (pending.size === 0) Atomics.store(control, slotWord(mySlot, P_ASYNC_SINCE), Date.now() % 2 ** 31);
  pending.add(op);
  Atomics.store(control, slotWord(mySlot, P_ASYNC_WAITS), pending.size);
  releasePump ??= holdProcess();
  if (!pumping) {
    pumping = true;
    void pump();
  }
}

/** Re-runs every pending async op now (after a local change they may wait for). */
export function kickPump(): void {
  if (pending.size > 0) wakeParty(mySlot);
}

function noop(): void {}

async function pump(): Promise<void> {
  try {
    while (pending.size > 0) {
      // Read before stepping: a wake after this read makes waitAsync return at once.
      const seen = Atomics.load(control, myParkWord);
      for (const op of [...pending]) {
        if (op.step()) pending.delete(op);
      }
      Atomics.store(control, slotWord(mySlot, P_ASYNC_WAITS), pending.size);
      if (pending.size === 0) break;
      const result = Atomics.waitAsync(control, myParkWord, seen);
      if (result.async) await result.value;
      else await null; // value already moved: yield once so timers and I/O still run
    }
  } finally {
    pumping = false;
    if (pending.size === 0) {
      releasePump?.();
      releasePump = undefined;
    } else {
      pumping = true;
      void pump();
    }
  }
}

/** Stops pumping `op` (it settled by other means: timeout or abort). */
export function removeFromPump(op: AsyncStep): void {
  pending.delete(op);
  Atomics.store(control, slotWord(mySlot, P_ASYNC_WAITS), pending.size);
  if (pending.size === 0) {
    releasePump?.();
    releasePump = undefined;
  }
}

/** A TimeoutError naming the operation and the channel. */
export function timeoutError(what: string, timeout: number): TimeoutError {
  return new TimeoutError(`${what} timed out after ${timeout} ms; retry, raise the timeout, or check that the other side is running`);
}
