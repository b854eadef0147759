/**
 * The control block: one SharedArrayBuffer per process, shared by the main
 * thread, every interpreter and the supervisor. It holds the id counters and
 * the party table: one slot per party (a thread that can wait on channels).
 *
 * The main thread creates it when the library is first loaded; interpreters
 * and the supervisor receive it in `workerData` and never create their own.
 *
 * Memory layout (Int32 words; byte offset = word * 4):
 *
 * | offset (bytes)            | size        | meaning                                   | written by                  |
 * |---------------------------|-------------|-------------------------------------------|-----------------------------|
 * | 0                         | 4           | next interpreter id (main is 0)           | creators (Atomics.add)      |
 * | 4                         | 4           | next channel id                           | createChannel (Atomics.add) |
 * | 8                         | 4           | next shared-object id (SABs, locks)       | senders (Atomics.add)       |
 * | 12                        | 4           | magic `0x1e7e5001` (layout version)       | main, once                  |
 * | 16                        | 4           | supervisor started (0/1)                  | main, once                  |
 * | 20                        | 4           | deadlock mode: 0 throw, 1 report, 2 off   | configureDeadlockDetection  |
 * | 24                        | 4           | deadlock detection time (ms)              | configureDeadlockDetection  |
 * | 28                        | 4           | parties in a sync wait without timeout    | those parties, supervisor   |
 * | 32                        | 4           | requests the supervisor refused (a party  | supervisor                  |
 * |                           |             | reaching for what it was not given)       |                             |
 * | 64                        | 64 × 256    | party table: slot `s` at 64 + 64·s        | see the slot table          |
 * | 64 + 64·256               | 64 × 256    | party names: UTF-8, NAME_BYTES per slot   | the creator, before start   |
 * | 64 + 128·256              | 68 × 256    | select cases of a party's selectSync:     | the party                   |
 * |                           |             | count, then up to 8 × (channel id, op)    |                             |
 * | 64 + 196·256              | 76 × 256    | claims: ends in a message the party took  | the party; supervisor reads |
 * |                           |             | but has not claimed yet: carrier channel  | it after the party died     |
 * |                           |             | id, message seq, count, 8 × (id, kind)    |                             |
 *
 * Party slot (16 words at byte 64 + 64·s):
 *
 * | word | meaning                                                        | written by                        |
 * |------|----------------------------------------------------------------|-----------------------------------|
 * | 0    | state: FREE, STARTING, LIVE, EXITED (awaiting cleanup)         | creator, the party, supervisor    |
 * | 1    | interpreter id                                                 | creator                           |
 * | 2    | park word: bumped (+1, notify) to wake the party               | any notifier                      |
 * | 3    | fetch reply flag: supervisor sets 1 when a fetch is answered   | supervisor; the party resets it   |
 * | 4    | running: exec/call bodies in progress                          | the party                         |
 * | 5    | creator slot                                                   | creator                           |
 * | 6    | name length in bytes                                           | creator                           |
 * | 7    | wait op (deadlock detection: 0 none, 1 send, 2 recv, ...)      | the party                         |
 * | 8    | wait channel id                                                | the party                         |
 * | 9    | wait flags (bit 0 sync, bit 1 has timeout)                     | the party                         |
 * | 10   | deadlock verdict: 0 none, else a verdict waits on the party's  | supervisor sets; the party clears |
 * |      | supervisor port (see deadlock.ts)                              |                                   |
 * | 11   | wait since: wall-clock ms (mod 2^31) when the sync wait began   | the party                         |
 * | 12   | async waits: operations of this party pending in its async pump | the party                         |
 * | 13   | registrations posted: channels and objects this party has told | the party (before each post);     |
 * |      | the supervisor of, ever (wrapping); see supervisor-link.ts     | reset by the creator at claim     |
 * | 14-15| reserved                                                       |                                   |
 *
 * Slot 0 is always the main thread. Slot SUPERVISOR_SLOT is reserved for
 * the supervisor (it owns channel locks while cleaning up after a death).
 * Invariant: a slot is FREE only after the supervisor has released every
 * channel end its last occupant held, so a new occupant never inherits one.
 */
import { isMainThread, threadId, workerData } from "node:worker_threads";

export const MAX_PARTIES = 256;
export const SUPERVISOR_SLOT = MAX_PARTIES - 1;
export const NAME_BYTES = 64;

const WORD_NEXT_INTERPRETER_ID = 0;
const WORD_NEXT_CHANNEL_ID = 1;
const WORD_NEXT_OBJECT_ID = 2;
const WORD_MAGIC = 3;
export const WORD_SUPERVISOR_STARTED = 4;
export const WORD_DEADLOCK_MODE = 5;
export const WORD_DEADLOCK_MS = 6;
/** Parties now blocked in a sync wait without timeout (the deadlock detector scans only while > 0). */
export const WORD_BLOCKED = 7;
/** Requests the supervisor refused (wrong capability, speaking for another party, malformed). */
export const WORD_REFUSED = 8;
const MAGIC = 0x1e7e5001;

const PARTY_TABLE_BYTES = 64;
const PARTY_WORDS = 16;
const NAMES_BYTES = PARTY_TABLE_BYTES + MAX_PARTIES * PARTY_WORDS * 4;
const SELECTS_BYTES = NAMES_BYTES + MAX_PARTIES * NAME_BYTES;
/** Most select cases published for deadlock detection (a larger select is never reported). */
export const MAX_PUBLISHED_CASES = 8;
const SELECT_WORDS = 1 + 2 * MAX_PUBLISHED_CASES;
const CLAIMS_BYTES = SELECTS_BYTES + MAX_PARTIES * SELECT_WORDS * 4;
/**
 * Most channel ends one message may carry: each is recorded in the
 * receiver's claims (below), so that none is lost if the receiver dies
 * while claiming them; a message carrying more is refused at the sender
 * (NotShareableError). (This was 8 with no check: ends past the 8th of a
 * message whose receiver died mid-claim stayed counted in transit forever,
 * so their channels never closed.)
 */
export const MAX_RECORDED_CLAIMS = 64;
const CLAIM_WORDS = 3 + 2 * MAX_RECORDED_CLAIMS;
const CONTROL_BYTES = CLAIMS_BYTES + MAX_PARTIES * CLAIM_WORDS * 4;

/**
 * Claims. A receiver that takes a message carrying channel ends records
 * them here, inside the critical section that takes the message, and marks
 * each one as it claims it (TRANSIT -> itself); then clears the record. If
 * it dies in between, the supervisor releases the ends still unclaimed, but
 * only if the message was really taken (its seq is behind the carrier's
 * SEQ_HEAD once any half-done critical section has been rolled back).
 */
export interface ClaimRecord {
  carrierId: number;
  seq: number;
  ends: Array<{ id: number; kind: number }>;
}
function claimWord(slot: number): number {
  return CLAIMS_BYTES / 4 + slot * CLAIM_WORDS;
}
export function writeClaims(carrierId: number, seq: number, ends: Array<{ id: number; kind: number }>): void {
  const base = claimWord(mySlot);
  const count = Math.min(ends.length, MAX_RECORDED_CLAIMS);
  Atomics.store(control, base + 2, 0);
  Atomics.store(control, base, carrierId);
  Atomics.store(control, base + 1, seq);
  for (let i = 0; i < count; i++) {
    Atomics.store(control, base + 3 + 2 * i, ends[i]!.id);
    Atomics.store(control, base + 4 + 2 * i, ends[i]!.kind);
  }
  Atomics.store(control, base + 2, count);
}
/** Marks the `index`-th recorded end as claimed. */
export function markClaimed(index: number): void {
  if (index < MAX_RECORDED_CLAIMS) Atomics.store(control, claimWord(mySlot) + 3 + 2 * index, 0);
}
export function clearClaims(): void {
  Atomics.store(control, claimWord(mySlot) + 2, 0);
}
/** Party `slot`'s unclaimed ends (the supervisor, after it died); clears the record. */
export function takeClaims(slot: number): ClaimRecord | undefined {
  const base = claimWord(slot);
  const count = Atomics.exchange(control, base + 2, 0);
  if (count <= 0 || count > MAX_RECORDED_CLAIMS) return undefined;
  const ends: Array<{ id: number; kind: number }> = [];
  for (let i = 0; i < count; i++) {
    const id = Atomics.load(control, base + 3 + 2 * i);
    if (id !== 0) ends.push({ id, kind: Atomics.load(control, base + 4 + 2 * i) });
  }
  return { carrierId: Atomics.load(control, base), seq: Atomics.load(control, base + 1), ends };
}

/** The word index of party `slot`'s select table (count, then id/op pairs). */
export function selectWord(slot: number): number {
  return SELECTS_BYTES / 4 + slot * SELECT_WORDS;
}

export const PartyState = { FREE: 0, STARTING: 1, LIVE: 2, EXITED: 3 } as const;

export const P_STATE = 0;
const P_ID = 1;
export const P_PARK = 2;
const P_FETCH = 3;
const P_RUNNING = 4;
const P_CREATOR = 5;
const P_NAME_LEN = 6;
export const P_WAIT_OP = 7;
export const P_WAIT_CHANNEL = 8;
export const P_WAIT_FLAGS = 9;
export const P_VERDICT = 10;
export const P_WAIT_SINCE = 11;
export const P_ASYNC_WAITS = 12;
export const P_POSTED = 13;

/** What a worker started by this library finds under this key of `workerData`. */
export const WORKER_DATA_KEY = "__interpreters";

/** The part of `workerData` every worker of ours receives. */
export interface BootData {
  control: SharedArrayBuffer;
  /** This worker's party slot, or SUPERVISOR_SLOT for the supervisor. */
  slot: number;
  /** This interpreter's id (unused by the supervisor). */
  id: number;
  name: string;
}

function inheritedBootData(): BootData | undefined {
  if (isMainThread) return undefined;
  const data = (workerData as Record<string, unknown> | null)?.[WORKER_DATA_KEY];
  return data as BootData | undefined;
}

const boot = inheritedBootData();

/** The process-wide control block (shared by every thread). */
export const controlBuffer: SharedArrayBuffer = boot?.control ?? new SharedArrayBuffer(CONTROL_BYTES);
export const control = new Int32Array(controlBuffer);
const nameBytes = new Uint8Array(controlBuffer, NAMES_BYTES, MAX_PARTIES * NAME_BYTES);

if (!boot) {
  // This thread owns a fresh control block: the main thread, or a worker
  // that was not started by this library (it then lives in a world of its own).
  Atomics.store(control, WORD_MAGIC, MAGIC);
  Atomics.store(control, WORD_NEXT_INTERPRETER_ID, 1);
  Atomics.store(control, WORD_NEXT_CHANNEL_ID, 1);
  Atomics.store(control, WORD_NEXT_OBJECT_ID, 1);
  Atomics.store(control, WORD_DEADLOCK_MS, 1000);
  initSlot(0, 0, 0, isMainThread ? "main" : `thread ${threadId}`);
  Atomics.store(control, slotWord(0, P_STATE), PartyState.LIVE);
}

/** This thread's party slot (0 in the main thread). */
export const mySlot: number = boot?.slot ?? 0;
/** This thread's interpreter id (0 in the main thread). */
export const myId: number = boot?.id ?? 0;
/** True in the supervisor worker. */
export const isSupervisor: boolean = mySlot === SUPERVISOR_SLOT;

/** The word index of field `field` of party slot `slot`. */
export function slotWord(slot: number, field: number): number {
  return PARTY_TABLE_BYTES / 4 + slot * PARTY_WORDS + field;
}

/** Ids are positive int32s; 0 means "none" in shared words (waits, claims). */
export const MAX_ID = 0x7fff_ffff;

/**
 * The next never-used channel id, or 0 once all 2^31 - 1 have been used
 * (registry.ts then reuses the ids of dead channels). The counter is
 * pinned at MAX_ID once passed, so it never wraps round to ids in use.
 */
export function nextChannelId(): number {
  return nextFresh(WORD_NEXT_CHANNEL_ID);
}
/** The next never-used shared-object id, or 0 once exhausted (see nextChannelId). */
export function nextObjectId(): number {
  return nextFresh(WORD_NEXT_OBJECT_ID);
}
/**
 * The next interpreter id. Interpreter ids only name interpreters (slots
 * identify parties), so after 2^31 - 1 interpreters they start again at 1
 * rather than going negative or reaching main's 0.
 */
export function nextInterpreterId(): number {
  for (;;) {
    const id = Atomics.add(control, WORD_NEXT_INTERPRETER_ID, 1);
    if (id > 0 && id < MAX_ID) return id;
    Atomics.compareExchange(control, WORD_NEXT_INTERPRETER_ID, id + 1, 1);
  }
}
function nextFresh(word: number): number {
  const id = Atomics.add(control, word, 1);
  if (id > 0 && id < MAX_ID) return id;
  Atomics.store(control, word, MAX_ID); // later adds return MAX_ID, or wrap negative: both "exhausted"
  return 0;
}
/** Tests only: makes the next fresh channel id `id` (to reach the end of the id space in a test). */
export function setNextChannelIdForTesting(id: number): void {
  Atomics.store(control, WORD_NEXT_CHANNEL_ID, id);
}

function initSlot(slot: number, id: number, creator: number, name: string): void {
  Atomics.store(control, slotWord(slot, P_ID), id);
  Atomics.store(control, slotWord(slot, P_CREATOR), creator);
  Atomics.store(control, slotWord(slot, P_RUNNING), 0);
  Atomics.store(control, slotWord(slot, P_FETCH), 0);
  Atomics.store(control, slotWord(slot, P_WAIT_OP), 0);
  Atomics.store(control, slotWord(slot, P_VERDICT), 0);
  Atomics.store(control, slotWord(slot, P_POSTED), 0);
  const encoded = new TextEncoder().encode(name).subarray(0, NAME_BYTES);
  nameBytes.set(encoded, slot * NAME_BYTES);
  Atomics.store(control, slotWord(slot, P_NAME_LEN), encoded.length);
}

/**
 * Claims a FREE party slot for a new interpreter (state becomes STARTING).
 * Throws when all MAX_PARTIES - 2 interpreter slots are taken.
 */
export function claimSlot(id: number, name: string): number {
  for (let slot = 1; slot < SUPERVISOR_SLOT; slot++) {
    const word = slotWord(slot, P_STATE);
    if (Atomics.compareExchange(control, word, PartyState.FREE, PartyState.STARTING) === PartyState.FREE) {
      initSlot(slot, id, mySlot, name);
      return slot;
    }
  }
  throw new RangeError(
    `cannot create interpreter "${name}": all ${MAX_PARTIES - 2} interpreter slots are in use; close interpreters you no longer need`,
  );
}

export function slotState(slot: number): number {
  return Atomics.load(control, slotWord(slot, P_STATE));
}
export function setSlotState(slot: number, state: number): void {
  Atomics.store(control, slotWord(slot, P_STATE), state);
  Atomics.notify(control, slotWord(slot, P_STATE));
}
export function slotId(slot: number): number {
  return Atomics.load(control, slotWord(slot, P_ID));
}
export function slotName(slot: number): string {
  if (slot === SUPERVISOR_SLOT) return "supervisor";
  const length = Math.min(Atomics.load(control, slotWord(slot, P_NAME_LEN)), NAME_BYTES);
  return new TextDecoder().decode(nameBytes.slice(slot * NAME_BYTES, slot * NAME_BYTES + length));
}
/** How many requests the supervisor has refused (see WORD_REFUSED). */
export function refusedRequests(): number {
  return Atomics.load(control, WORD_REFUSED);
}

/** The slot of the party that created party `slot` (its "attach" and "exited" are accepted only from there). */
export function slotCreator(slot: number): number {
  return Atomics.load(control, slotWord(slot, P_CREATOR));
}
export function slotRunning(slot: number): number {
  return Atomics.load(control, slotWord(slot, P_RUNNING));
}
export function addRunning(delta: number): void {
  Atomics.add(control, slotWord(mySlot, P_RUNNING), delta);
}


/** Slots of every live or starting interpreter, main included, in slot order. */
export function liveSlots(): number[] {
  const slots: number[] = [];
  for (let slot = 0; slot < SUPERVISOR_SLOT; slot++) {
    const state = slotState(slot);
    if (state === PartyState.LIVE || state === PartyState.STARTING) slots.push(slot);
  }
  return slots;
}

/** "interpreter 3 \"parser\"" — how messages name a party. */
export function describeSlot(slot: number): string {
  if (slot === SUPERVISOR_SLOT) return "the supervisor";
  const id = slotId(slot);
  return id === 0 ? `the main interpreter` : `interpreter ${id} "${slotName(slot)}"`;
}

/** Boot data for a worker that will occupy `slot`. */
export function bootDataFor(slot: number, id: number, name: string): BootData {
  return { control: controlBuffer, slot, id, name };
}
