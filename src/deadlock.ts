/**
 * Deadlock detection.
 *
 * A party is *stuck* while it waits in a synchronous operation without a
 * timeout (published in its party slot: op, channel; see waiting.ts) and
 * nothing changes: its park word (bumped by every wake-up) and the
 * channel's progress counters stay the same for half the detection time.
 * Since a waiter is always woken when the channel changes in a way that
 * concerns it (no lost wakeups), a stuck party cannot complete in the
 * current state.
 *
 * A set of stuck parties is deadlocked when they can only be woken by each
 * other: every holder of the opposite end of each awaited channel is in the
 * set. We start from all stuck parties and remove, until nothing changes,
 * every party that some holder outside the set could wake. Anything that
 * could still act rules a deadlock out: a running party, one waiting
 * asynchronously or with a timeout, one starting up, a dead one whose ends
 * are about to be released, and an end in transit (inside a message or on
 * its way to an interpreter). No false reports: when in doubt, not stuck.
 *
 * A Lock wait (WaitOp.ACQUIRE, published with the lock's id; sync.ts)
 * can be ended only by the lock's owner, read from the lock's memory (the
 * supervisor looks locks up by id): it is woken from outside unless the
 * owner is in the set. Semaphore and Event waits publish nothing, so they
 * are never reported, and a party in one counts as able to act.
 *
 * The supervisor runs `scan` periodically; each party of a deadlocked set
 * gets a verdict (supervisor-link.ts) and is woken: it then fails with
 * DeadlockError (or, in report mode, warns once and keeps waiting).
 */
import {
  control,
  describeSlot,
  liveSlots,
  MAX_PUBLISHED_CASES,
  mySlot,
  selectWord,
  P_PARK,
  P_VERDICT,
  P_WAIT_CHANNEL,
  P_WAIT_FLAGS,
  P_WAIT_OP,
  slotId,
  slotName,
  slotWord,
  WORD_DEADLOCK_MODE,
  WORD_DEADLOCK_MS,
} from "./control.js";
import { writeSync } from "node:fs";
import { DeadlockError, type DeadlockParty } from "./errors.js";
import { takeFromSupervisor } from "./supervisor-link.js";
import { CLOSED_NO_RECEIVERS, CLOSED_NO_SENDERS, type ChannelMemory, H, type Side, TRANSIT } from "./ring.js";
import { WAIT_HAS_TIMEOUT, WAIT_SYNC, WaitOp } from "./waiting.js";
import { MAX_PARTIES } from "./control.js";

export type DeadlockMode = "throw" | "report" | "off";
const MODES: DeadlockMode[] = ["throw", "report", "off"];

/**
 * Configures deadlock detection for the whole process (every interpreter).
 * `mode`: "throw" (default) fails each party of a deadlock with
 * DeadlockError; "report" only emits a warning in each of them (they keep
 * waiting); "off" disables detection. `after`: how long (ms, default 1000)
 * a deadlock may last before it is reported. Throws RangeError for bad values.
 */
export function configureDeadlockDetection(options: { mode?: DeadlockMode; after?: number }): void {
  if (options.mode !== undefined) {
    const index = MODES.indexOf(options.mode);
    if (index < 0) throw new RangeError(`configureDeadlockDetection: mode must be "throw", "report" or "off", got ${String(options.mode)}`);
    Atomics.store(control, WORD_DEADLOCK_MODE, index);
  }
  if (options.after !== undefined) {
    if (typeof options.after !== "number" || !Number.isFinite(options.after) || options.after < 20) {
      throw new RangeError(`configureDeadlockDetection: after must be a number of milliseconds >= 20, got ${String(options.after)}`);
    }
    Atomics.store(control, WORD_DEADLOCK_MS, Math.round(options.after));
  }
}

export function deadlockMode(): DeadlockMode {
  return MODES[Atomics.load(control, WORD_DEADLOCK_MODE)] ?? "throw";
}
export function detectionMillis(): number {
  return Atomics.load(control, WORD_DEADLOCK_MS) || 1000;
}

/** A Lock as the detector sees it: its id and its owner's slot (-1 when free). */
export interface LockState {
  id: number;
  owner: number;
}

/** A stuck candidate: waiting on a channel (`memory`) or for a Lock (`lock`). */
type Waiter = {
  slot: number;
  op: number;
  /** What must stay the same for the party to count as stuck. */
  signature: string;
} & (
  | { memory: ChannelMemory; lock?: undefined; cases?: undefined }
  | { lock: LockState; memory?: undefined; cases?: undefined }
  | { cases: SelectCaseState[]; memory?: undefined; lock?: undefined }
);

/** One case of a selectSync, as published: a send or receive on a channel. */
interface SelectCaseState {
  op: number;
  memory: ChannelMemory;
}

/** Per-party: since when its current wait has looked exactly the same. */
interface Observation {
  signature: string;
  since: number;
  reported: boolean;
}

function progressOf(memory: ChannelMemory): string {
  return [H.SEQ_HEAD, H.SEQ_TAIL, H.READ, H.WRITTEN, H.REMOVED, H.WITHDRAWN, H.CLOSED, H.SEND_HANDLES, H.RECV_HANDLES, H.STREAM_SENDER, H.CAPACITY].map((f) => memory.get(f)).join(",");
}

/** The supervisor's detector: call `scan` every detectionMillis() / 4. */
export class DeadlockDetector {
  private readonly observed = new Map<number, Observation>();

  constructor(
    private readonly channelById: (id: number) => ChannelMemory | undefined,
    /**
     * Gives every party in `slots` the verdict, then wakes them: all of them
     * hold it before any runs on (one that ran on first, say by closing an
     * end, would otherwise wake another with something else to fail with).
     */
    private readonly deliver: (slots: number[], verdict: { mode: "throw" | "report"; message: string; cycle: DeadlockParty[] }) => void,
    /** The Lock deposited under an id, with its owner now (undefined if unknown or not a lock). */
    private readonly lockById: (id: number) => LockState | undefined = () => undefined,
  ) {}

  /** One look at every party; reports deadlocks that have lasted long enough. */
  scan(now: number): void {
    const mode = deadlockMode();
    if (mode === "off") {
      this.observed.clear();
      return;
    }
    const waiters = this.stuckCandidates(now);
    if (waiters.size === 0) return;
    const confirmed = new Map<number, Waiter>();
    const patience = detectionMillis() / 2;
    for (const [slot, waiter] of waiters) {
      const seen = this.observed.get(slot)!;
      if (now - seen.since >= patience && !seen.reported) confirmed.set(slot, waiter);
    }
    if (confirmed.size === 0) return;
    const deadlocked = this.closeUnder(confirmed);
    if (deadlocked.size === 0) return;
    const { message, cycle } = describe(deadlocked);
    for (const slot of deadlocked.keys()) this.observed.get(slot)!.reported = true;
    this.deliver([...deadlocked.keys()], { mode, message, cycle });
  }

  /** Parties in a sync wait without timeout, with how long their wait has looked the same. */
  private stuckCandidates(now: number): Map<number, Waiter> {
    const waiters = new Map<number, Waiter>();
    for (const slot of liveSlots()) {
      const op = Atomics.load(control, slotWord(slot, P_WAIT_OP));
      const flags = Atomics.load(control, slotWord(slot, P_WAIT_FLAGS));
      if (op === WaitOp.NONE || !(flags & WAIT_SYNC) || flags & WAIT_HAS_TIMEOUT) continue;
      if (op === WaitOp.ACQUIRE) {
        const lock = this.lockById(Atomics.load(control, slotWord(slot, P_WAIT_CHANNEL)));
        if (!lock) continue;
        // The owner in the signature: a new owner is progress, even if this party lost the race again.
        const signature = `${op}:${lock.id}:${Atomics.load(control, slotWord(slot, P_PARK))}:${lock.owner}`;
        const seen = this.observed.get(slot);
        if (!seen || seen.signature !== signature) this.observed.set(slot, { signature, since: now, reported: false });
        waiters.set(slot, { slot, op, lock, signature });
        continue;
      }
      if (op === WaitOp.SELECT) {
        const cases = this.selectCases(slot);
        if (!cases) continue;
        const park = Atomics.load(control, slotWord(slot, P_PARK));
        const signature = `${op}:${park}:${cases.map((c) => `${c.op}/${c.memory.id}/${progressOf(c.memory)}`).join(";")}`;
        const seen = this.observed.get(slot);
        if (!seen || seen.signature !== signature) this.observed.set(slot, { signature, since: now, reported: false });
        waiters.set(slot, { slot, op, cases, signature });
        continue;
      }
      if (op !== WaitOp.SEND && op !== WaitOp.RECV) continue;
      const memory = this.channelById(Atomics.load(control, slotWord(slot, P_WAIT_CHANNEL)));
      if (!memory) continue;
      const park = Atomics.load(control, slotWord(slot, P_PARK));
      const signature = `${op}:${memory.id}:${park}:${progressOf(memory)}`;
      const seen = this.observed.get(slot);
      if (!seen || seen.signature !== signature) this.observed.set(slot, { signature, since: now, reported: false });
      waiters.set(slot, { slot, op, memory, signature });
    }
    for (const slot of this.observed.keys()) if (!waiters.has(slot)) this.observed.delete(slot);
    return waiters;
  }

  /** The published cases of party `slot`'s selectSync; undefined if too many, or a channel is unknown. */
  private selectCases(slot: number): SelectCaseState[] | undefined {
    const base = selectWord(slot);
    const count = Atomics.load(control, base);
    if (count <= 0 || count > MAX_PUBLISHED_CASES) return undefined;
    const cases: SelectCaseState[] = [];
    for (let i = 0; i < count; i++) {
      const memory = this.channelById(Atomics.load(control, base + 1 + 2 * i));
      const op = Atomics.load(control, base + 2 + 2 * i);
      if (!memory || (op !== WaitOp.SEND && op !== WaitOp.RECV)) return undefined;
      cases.push({ op, memory });
    }
    return cases;
  }

  /**
   * Removes, until nothing changes, every party that a holder outside the
   * set could wake. What remains can only be woken from inside: deadlocked.
   */
  private closeUnder(set: Map<number, Waiter>): Map<number, Waiter> {
    const remaining = new Map(set);
    let changed = true;
    while (changed) {
      changed = false;
      for (const [slot, waiter] of remaining) {
        if (couldBeWokenFromOutside(waiter, remaining)) {
          remaining.delete(slot);
          changed = true;
        }
      }
    }
    return remaining;
  }
}

function opposite(op: number): Side {
  return op === WaitOp.SEND ? "recv" : "send";
}

function couldBeWokenFromOutside(waiter: Waiter, set: Map<number, Waiter>): boolean {
  // Only the owner can release a lock (or the supervisor, once the owner is dead: then it is not live, so not in the set).
  // A free lock: the waiter is about to take it.
  if (waiter.lock) return waiter.lock.owner < 0 || !set.has(waiter.lock.owner);
  // A select is woken by any of its cases.
  if (waiter.cases) return waiter.cases.some((c) => channelCaseWakeable(c.op, c.memory, set));
  return channelCaseWakeable(waiter.op, waiter.memory, set);
}

/** Could a send/recv (`op`) on `memory` be woken by a holder outside `set`? */
function channelCaseWakeable(op: number, memory: ChannelMemory, set: Map<number, Waiter>): boolean {
  const closed = memory.get(H.CLOSED);
  // A closed side means the operation fails rather than waits: not stuck.
  if (op === WaitOp.RECV && closed & CLOSED_NO_SENDERS) return true;
  if (op === WaitOp.SEND && closed & CLOSED_NO_RECEIVERS) return true;
  // A receive on a channel holding a message it can take (none being streamed
  // to another receiver) is not stuck, whoever is to wake it: never report it.
  if (op === WaitOp.RECV && memory.length() > 0 && memory.get(H.STREAM_RECEIVER) === 0) return true;
  const side = opposite(op);
  if (memory.holders(side, TRANSIT) > 0) return true; // an end on its way somewhere could act
  for (let slot = 0; slot < MAX_PARTIES; slot++) {
    if (memory.holders(side, slot) > 0 && !set.has(slot)) return true;
  }
  return false;
}

function partyData(slot: number, waiter: Waiter): DeadlockParty {
  if (waiter.lock) return { interpreter: { id: slotId(slot), name: slotName(slot) }, op: "acquire" };
  if (waiter.cases) {
    const first = waiter.cases[0]!.memory;
    return { interpreter: { id: slotId(slot), name: slotName(slot) }, op: "select", channel: { id: first.id, name: first.name } };
  }
  return {
    interpreter: { id: slotId(slot), name: slotName(slot) },
    op: waiter.op === WaitOp.SEND ? "send" : "recv",
    channel: { id: waiter.memory.id, name: waiter.memory.name },
  };
}

function holdersOf(memory: ChannelMemory, side: Side): number[] {
  const slots: number[] = [];
  for (let slot = 0; slot < MAX_PARTIES; slot++) if (memory.holders(side, slot) > 0) slots.push(slot);
  return slots;
}

function sendState(memory: ChannelMemory): string {
  const capacity = memory.capacity;
  if (capacity === 0) return " (capacity 0: waiting for a receiver to take it)";
  if (capacity > 0) return ` (full, capacity ${capacity})`;
  return ` (its byte budget of ${memory.get(H.MAX_DATA_SIZE)} bytes is used up)`;
}

function listParties(slots: number[], self: number): string {
  const names = slots.map((s) => (s === self ? "itself" : describeSlot(s)));
  if (names.length === 1) return names[0]!;
  return `${names.slice(0, -1).join(", ")} and ${names[names.length - 1]}`;
}

/** What `waiter` (party `slot`) waits for, as a clause ("waits to ..."), and who alone could end the wait. */
function explainWait(waiter: Waiter, slot: number): { text: string; holders: number[] } {
  if (waiter.lock) {
    const holders = waiter.lock.owner < 0 ? [] : [waiter.lock.owner];
    return { text: `waits to acquire lock ${waiter.lock.id}, held by ${listParties(holders, slot)}`, holders };
  }
  if (waiter.cases) {
    const clauses = waiter.cases.map((c) => explainChannelCase(c.op, c.memory, slot));
    const holders = [...new Set(clauses.flatMap((c) => c.holders))];
    return { text: `waits in select ${clauses.map((c) => `(${c.text})`).join(" or ")}`, holders };
  }
  const { text, holders } = explainChannelCase(waiter.op, waiter.memory, slot);
  return { text: `waits ${text}`, holders };
}

/** "to send on channel 4 "x" (full, capacity 8), whose only receiver is ..." */
function explainChannelCase(op: number, memory: ChannelMemory, slot: number): { text: string; holders: number[] } {
  const side = opposite(op);
  const holders = holdersOf(memory, side);
  const role = side === "send" ? "sender" : "receiver";
  const who = holders.length === 1 ? `whose only ${role} is` : `whose ${role}s are`;
  const verb = op === WaitOp.SEND ? "send" : "recv";
  return {
    text: `to ${verb} on ${memory.describe()}${op === WaitOp.SEND ? sendState(memory) : ""}, ${who} ${listParties(holders, slot)}`,
    holders,
  };
}

/** A sentence walking the cycle, and the same as data. */
export function describe(deadlocked: Map<number, Waiter>): { message: string; cycle: DeadlockParty[] } {
  const slots = [...deadlocked.keys()].sort((a, b) => a - b);
  const order: number[] = [];
  let slot = slots[0]!;
  const parts: string[] = [];
  while (!order.includes(slot)) {
    order.push(slot);
    const waiter = deadlocked.get(slot)!;
    const lead = order.length === 1 ? describeSlot(slot) : "which";
    const { text, holders } = explainWait(waiter, slot);
    parts.push(`${lead} ${text}`);
    const next = holders.find((h) => deadlocked.has(h) && !order.includes(h)) ?? holders.find((h) => deadlocked.has(h));
    if (next === undefined || next === slot) break;
    slot = next;
  }
  for (const rest of slots) if (!order.includes(rest)) order.push(rest);
  const waiters = [...deadlocked.values()];
  const locks = waiters.some((w) => w.lock);
  const ends = waiters.some((w) => w.memory || w.cases);
  const why = !locks
    ? "nothing else holds those ends, so none of these waits can ever complete (close an end, add a timeout, or change a capacity)"
    : !ends
      ? "no party outside this cycle can release those locks, so none of these waits can ever complete (acquire locks in one order, release a lock before waiting, or add a timeout)"
      : "nothing else holds those ends or locks, so none of these waits can ever complete (close an end, release a lock before waiting, add a timeout, or change a capacity)";
  const message = `deadlock: ${parts.join(", ")}; ${why}`;
  return { message, cycle: order.map((s) => partyData(s, deadlocked.get(s)!)) };
}

/** Party side: a verdict is waiting for this party (the supervisor set the flag). */
export function verdictFlag(slot: number): number {
  return Atomics.load(control, slotWord(slot, P_VERDICT));
}
export function setVerdictFlag(slot: number, value: number): void {
  Atomics.store(control, slotWord(slot, P_VERDICT), value);
}

/**
 * Party side, in a sync wait that found its verdict flag set: clears the
 * flag and takes the verdict. In throw mode returns the DeadlockError to
 * throw (the caller withdraws first, and completes instead if it can); in
 * report mode writes the warning and returns undefined (keep waiting), as
 * it does when no verdict has arrived.
 */
export function takeVerdict(): DeadlockError | undefined {
  setVerdictFlag(mySlot, 0);
  const verdict = takeFromSupervisor("verdict");
  if (!verdict) return undefined;
  if (verdict.mode === "report") {
    // Written synchronously: this thread goes straight back to waiting, maybe forever.
    writeSync(2, `DeadlockWarning: ${verdict.message}\n`);
    return undefined;
  }
  return new DeadlockError(verdict.message, verdict.cycle);
}
