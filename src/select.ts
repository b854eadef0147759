/**
 * select / selectSync: wait on several channel operations at once and
 * complete exactly one of them.
 *
 * Each case is an ordinary channel operation (channel-ops.ts): a receive,
 * or a send in "offer" mode (admitted only if it completes without waiting,
 * as trySend: for capacity 0, only when a receiver waits for it). A round
 * attempts the cases in a fresh random order and stops at the first that
 * completes; because operations complete themselves (nobody completes an
 * operation on another party's behalf), at most one case can ever complete,
 * and the cases that did not stay untouched: no message is taken and lost.
 * A case that cannot complete stays registered as a waiter on its channel,
 * so that any of the channels can wake this party (one park word per party,
 * waiting.ts); after a wake-up, a new round.
 *
 * Fairness: the order of every round is a uniform random permutation, so
 * among ready cases each is chosen with equal probability, and none is
 * starved by another that is always ready.
 *
 * A receive case that has begun taking a streamed message must finish it:
 * the select then commits to that case. A closed case (receive: drained and
 * no senders; send: no receivers) rejects the select with
 * ChannelClosedError instead of being ready forever (no spinning on it).
 */
import { attemptOnce, type DrivenOp, heedVerdict, settleSent, withdrawOnce } from "./channel.js";
import type { RecvChannel, SendChannel } from "./channel.js";
import { RecvOp, SendOp } from "./channel-ops.js";
import { mySlot } from "./control.js";
import { verdictFlag } from "./deadlock.js";
import { MessageTooLargeError } from "./errors.js";
import { H } from "./ring.js";
import { ensureSupervisor } from "./supervisor-link.js";
import { effectiveSignal } from "./cancellation.js";
import { type ChannelMessage, decodeFromChannel, encodeForChannel, endOf } from "./transfer.js";
import {
  checkTimeout,
  clearWait,
  now,
  parkSync,
  parkValue,
  publishSelect,
  pumpUntilSettled,
  removeFromPump,
  timeoutError,
  WaitOp,
} from "./waiting.js";

/** A case: a receive end, or `[sendEnd, value]`. */
export type SelectCase = RecvChannel<any> | [SendChannel<any>, unknown];

export interface SelectResult {
  /** Which case completed (its index in the array given). */
  index: number;
  /** What a receive case received (undefined for a send case). */
  value?: unknown;
}

interface Armed {
  index: number;
  op: SendOp | RecvOp;
  message?: ChannelMessage;
}

function describeCases(cases: readonly unknown[]): string {
  return `select over ${cases.length} case${cases.length === 1 ? "" : "s"}`;
}

/** Builds one operation per case; encodes send values first (NotShareableError: nothing happened). */
function arm(cases: readonly SelectCase[]): Armed[] {
  if (!Array.isArray(cases) || cases.length === 0) {
    throw new RangeError("select: give at least one case (a RecvChannel, or [SendChannel, value])");
  }
  const armed: Armed[] = [];
  try {
    cases.forEach((entry, index) => armed.push(armOne(entry, index, armed)));
  } catch (err) {
    for (const a of armed) a.message?.undo();
    throw err;
  }
  return armed;
}

function armOne(entry: SelectCase, index: number, armed: Armed[]): Armed {
  if (Array.isArray(entry)) {
    const [channel, value] = entry;
    const end = endOf(channel);
    if (!end || end.side !== "send") throw new TypeError(`select: case ${index} is an array but its first item is not a SendChannel`);
    end.ensureOpen("select send");
    const message = encodeForChannel(value);
    // Every case's bytes must outlive the next case's encode, which reuses
    // the thread's encoder scratch (and an async select outlives the call).
    message.detach();
    const memory = end.memory;
    const limit = memory.get(H.MAX_MESSAGE_BYTES);
    if (message.length > limit) {
      message.undo();
      throw new MessageTooLargeError(`select send case ${index} on ${memory.describe()}: ${message.length} bytes is over maxMessageBytes (${limit})`);
    }
    // Receive cases of this same select on this channel are not partners.
    const ownReceivers = (): number => armed.filter((a) => a.op instanceof RecvOp && a.op.memory === memory && a.op.isRegistered).length;
    const op = new SendOp(memory, message, true, () => end.ensureOpen("select send"), ownReceivers);
    return { index, op, message };
  }
  const end = endOf(entry);
  if (!end || end.side !== "recv") throw new TypeError(`select: case ${index} must be a RecvChannel or [SendChannel, value]`);
  end.ensureOpen("select recv");
  return { index, op: new RecvOp(end.memory, () => end.ensureOpen("select recv")) };
}

/** Fisher-Yates shuffle of [0, n). */
function randomOrder(n: number): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

type Round = { done: Armed } | { committed: Armed } | undefined;

/** One round: attempts every case in random order; stops at the first that completes. */
function round(armed: Armed[]): Round {
  for (const i of randomOrder(armed.length)) {
    const candidate = armed[i]!;
    if (attemptOnce(candidate.op)) return { done: candidate };
    if (candidate.op instanceof RecvOp && candidate.op.midStream) return { committed: candidate };
  }
  return undefined;
}

/** Unregisters every case but `winner`, and gives back the ends the other send cases carried. */
function disarm(armed: Armed[], winner: Armed | undefined): void {
  for (const a of armed) {
    if (a === winner) continue;
    withdrawOnce(a.op, false);
    a.message?.undo();
  }
}

function resultOf(winner: Armed): SelectResult {
  if (winner.op instanceof RecvOp) return { index: winner.index, value: decodeFromChannel(winner.op.received!) };
  settleSent(winner.message!, winner.op, winner.op.memory);
  return { index: winner.index };
}

/** Finishes a receive case that holds part of a streamed message (it cannot be withdrawn). */
function finishCommitted(op: DrivenOp): void {
  for (;;) {
    const seen = parkValue();
    if (attemptOnce(op)) return;
    parkSync(seen, Infinity);
  }
}

/**
 * Waits until one of `cases` can complete, completes exactly that one, and
 * returns which (and, for a receive, the value). Blocks this thread
 * (Atomics.wait); for interpreters. Throws TimeoutError after `timeout` ms
 * (nothing completed), ChannelClosedError when a case's channel is closed
 * (a receive case drained with no senders left, or a send case with no
 * receivers), NotShareableError/MessageTooLargeError for a send value
 * (nothing happened), DeadlockError when detection finds this wait can never
 * complete, RangeError for no cases or a bad timeout.
 */
export function selectSync(cases: SelectCase[], options?: { timeout?: number }): SelectResult {
  const timeout = checkTimeout(options?.timeout, "selectSync");
  const armed = arm(cases);
  const deadline = timeout === Infinity ? Infinity : now() + timeout;
  let winner: Armed | undefined;
  if (timeout === Infinity) ensureSupervisor();
  publishSelect(
    armed.map((a) => ({ channelId: a.op.memory.id, op: a.op instanceof SendOp ? WaitOp.SEND : WaitOp.RECV })),
    timeout !== Infinity,
  );
  try {
    for (;;) {
      const seen = parkValue();
      const outcome = round(armed);
      if (outcome && "done" in outcome) {
        winner = outcome.done;
        break;
      }
      if (outcome && "committed" in outcome) {
        winner = outcome.committed;
        disarm(armed, winner);
        finishCommitted(winner.op);
        return resultOf(winner);
      }
      if (now() >= deadline) throw timeoutError(describeCases(cases), timeout);
      parkSync(seen, deadline);
      if (verdictFlag(mySlot) !== 0) heedVerdict(armed[0]!.op);
    }
  } catch (err) {
    disarm(armed, undefined);
    throw err;
  } finally {
    clearWait();
  }
  disarm(armed, winner);
  return resultOf(winner);
}

/**
 * Like selectSync, without blocking the event loop; also takes `signal`
 * (aborting rejects with its reason, nothing completed).
 */
export function select(cases: SelectCase[], options?: { timeout?: number; signal?: AbortSignal }): Promise<SelectResult> {
  let armed: Armed[];
  let timeout: number;
  try {
    timeout = checkTimeout(options?.timeout, "select");
    armed = arm(cases);
  } catch (err) {
    return Promise.reject(err);
  }
  const signal = effectiveSignal(options?.signal);
  if (signal?.aborted) {
    disarm(armed, undefined);
    return Promise.reject(signal.reason);
  }
  return new Promise<SelectResult>((resolve, reject) => {
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    let committed: Armed | undefined;
    const finish = (winner: Armed | undefined, error?: unknown): void => {
      settled = true;
      if (timer) clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      removeFromPump(pumped);
      if (!winner) {
        disarm(armed, undefined);
        reject(error);
        return;
      }
      disarm(armed, winner);
      try {
        resolve(resultOf(winner));
      } catch (err) {
        reject(err);
      }
    };
    const step = (): void => {
      if (settled) return;
      try {
        if (committed) {
          if (attemptOnce(committed.op)) finish(committed);
          return;
        }
        const outcome = round(armed);
        if (outcome && "done" in outcome) finish(outcome.done);
        else if (outcome && "committed" in outcome) {
          committed = outcome.committed;
          if (timer) clearTimeout(timer);
          // As selectSync does: the other cases stop waiting now (a case left
          // registered would take wake-ups meant for other receivers, and
          // count as a waiting receiver for a rendezvous trySend).
          disarm(armed, committed);
          armed.splice(0, armed.length, committed);
        }
      } catch (err) {
        finish(undefined, err);
      }
    };
    const pumped = {
      step(): boolean {
        step();
        return settled;
      },
    };
    const giveUp = (reason: () => unknown, finalRound: boolean): void => {
      if (settled || committed) return;
      if (finalRound) step(); // a case that can complete at the deadline completes
      if (!settled && !committed) finish(undefined, reason());
    };
    const onAbort = (): void => giveUp(() => signal!.reason, false);
    step();
    if (settled) return;
    if (timeout !== Infinity) timer = setTimeout(() => giveUp(() => timeoutError(describeCases(cases), timeout), true), timeout);
    signal?.addEventListener("abort", onAbort, { once: true });
    pumpUntilSettled(pumped);
  });
}
