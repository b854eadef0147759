/**
 * Shareable sync primitives: Lock, Semaphore, Event.
 *
 * Each is 64 bytes of its own SharedArrayBuffer. Passing one to another
 * interpreter (bind, prepareMain, call arguments, inside a message) shares
 * it, as a SharedArrayBuffer is shared: the other side gets an instance
 * over the same bytes (transfer.ts, registerSharedKind). The creator
 * deposits the buffer with the supervisor at once (registry.ts), so the
 * supervisor knows every primitive, whether or not it ever travels: it
 * releases the Locks of a party that dies, and the deadlock detector reads
 * a Lock's owner.
 *
 * Memory layout (Int32 words; byte offset = word × 4):
 *
 * | offset | size | meaning                                                          | written by                                  |
 * |--------|------|------------------------------------------------------------------|---------------------------------------------|
 * | 0      | 4    | MAGIC: 0x53594e00 + tag (tag 1 Lock, 2 Semaphore, 3 Event)        | creator                                     |
 * | 4      | 4    | ID: object id the creator deposited the buffer under             | creator                                     |
 * | 8      | 4    | STATE: Lock: owner slot + 1, 0 when free; Semaphore: permits     | acquirers, releasers (CAS); the supervisor  |
 * |        |      | available; Event: 1 set, 0 clear                                 | for a Lock whose owner died                 |
 * | 12     | 4    | WAITERS: parties whose bit is set in WAITER_BITS                 | each waiting party, for itself; supervisor  |
 * | 16     | 4    | AUX: Semaphore: permits at creation; Event: SETS, bumped by every | creator (Semaphore); set() (Event)          |
 * |        |      | set(); Lock: 0                                                   |                                             |
 * | 20     | 12   | reserved (0)                                                     |                                             |
 * | 32     | 32   | WAITER_BITS: bit s of word s >> 5 = party s waits here           | each waiting party, its own bit only;       |
 * |        |      |                                                                  | the supervisor, for a party that died       |
 *
 * Waiting needs no mutex: one CAS (or store) on STATE is the whole
 * operation. A party that cannot proceed registers (sets its bit, THEN adds
 * one to WAITERS), re-attempts, and sleeps on its own park word
 * (waiting.ts), which it read BEFORE the attempt. Whoever changes STATE in a
 * way a waiter may care about (release, set) loads WAITERS AFTER the change
 * and, if it is not 0, wakes every party whose bit is set. Atomics are
 * sequentially consistent, so either that load comes after the waiter's
 * registration (the releaser sees the bit and bumps the park word, which
 * then differs from what the waiter read: its sleep returns at once), or it
 * comes before, and then the change precedes the waiter's re-attempt, which
 * sees it. No wakeup is lost.
 *
 * Invariants:
 *  A party's bit is set while at least one of its waits on the primitive is
 *  pending (a thread counts its own waits, keyed by ID: several instances
 *  in one thread may share the memory). Only the party sets or clears it;
 *  the supervisor clears it after the party died.
 *  WAITERS counts set bits, but lags a bit being set: a releaser that reads
 *  0 ran before that party's re-attempt.
 *  A Lock's STATE is cleared only by its owner (release) or by the
 *  supervisor once the owner is dead, before the owner's slot is reused.
 *
 * Every registered party is woken, not just one: a woken waiter that then
 * gives up (timeout, abort) can never swallow a release another waiter
 * needed. Losers of the race go back to sleep, still registered.
 *
 * Ownership. A Lock belongs to the party (interpreter or main thread) that
 * acquired it: only that party may release it, and when the party dies the
 * supervisor releases it (workers/supervisor.ts, partyGone), waking its
 * waiters. Within one party any code may release it, async tasks included.
 * A Semaphore's permits are not owned: a permit acquired by one party is
 * often released by another (a semaphore used as a signal or a counter of
 * items), and nothing records who holds how many. So the permits a dead
 * party held are NOT returned; returning them would guess, and could let
 * more parties in than the semaphore admits. An Event has no owner.
 *
 * Deadlock detection (deadlock.ts): a sync Lock wait without a timeout
 * publishes WaitOp.ACQUIRE with the lock's ID; only the lock's owner can
 * end it. Semaphore and Event waits publish nothing and are never
 * reported: any party may release or set them.
 */
import { describeSlot, mySlot, SUPERVISOR_SLOT } from "./control.js";
import { takeVerdict, type LockState, verdictFlag } from "./deadlock.js";
import { CorruptDataError, InterpretersError } from "./errors.js";
import { depositObject } from "./registry.js";
import { effectiveSignal } from "./cancellation.js";
import { ensureSupervisor } from "./supervisor-link.js";
import { registerSharedKind } from "./transfer.js";
import {
  type AsyncStep,
  checkTimeout,
  clearWait,
  now,
  parkSync,
  parkValue,
  publishWait,
  pumpUntilSettled,
  removeFromPump,
  timeoutError,
  wakeParty,
  WaitOp,
} from "./waiting.js";

const BYTES = 64;
const W_MAGIC = 0;
const W_ID = 1;
const W_STATE = 2;
const W_WAITERS = 3;
const W_AUX = 4;
const W_WAITER_BITS = 8;
const BITMAP_WORDS = 8;
const MAGIC_BASE = 0x53594e00;

const TAG_LOCK = 1;
const TAG_SEMAPHORE = 2;
const TAG_EVENT = 3;
const KIND_NAMES = ["", "lock", "semaphore", "event"] as const;

/** The most permits a Semaphore can hold. */
const MAX_PERMITS = 2 ** 31 - 1;
/** Attempts a sync waiter makes before it registers and sleeps. */
const SPIN_TRIES = 100;

/** This thread's pending waits per primitive (by ID): its bit is set while > 0. */
const localWaits = new Map<number, number>();

/** One thread's view of a primitive's memory. */
class PrimitiveMemory {
  readonly buffer: SharedArrayBuffer;
  readonly words: Int32Array;
  readonly tag: number;
  readonly id: number;

  constructor(buffer: SharedArrayBuffer, tag: number) {
    if (buffer.byteLength !== BYTES) throw new CorruptDataError(`shared ${KIND_NAMES[tag]} memory is ${buffer.byteLength} bytes, not ${BYTES}`);
    this.buffer = buffer;
    this.words = new Int32Array(buffer);
    this.tag = tag;
    const magic = Atomics.load(this.words, W_MAGIC);
    if (magic !== MAGIC_BASE + tag) throw new CorruptDataError(`shared memory is not a ${KIND_NAMES[tag]} (magic word 0x${(magic >>> 0).toString(16)})`);
    this.id = Atomics.load(this.words, W_ID);
  }

  /** Allocates, initialises and deposits a new primitive's memory. */
  static create(tag: number, state: number, aux: number): PrimitiveMemory {
    const buffer = new SharedArrayBuffer(BYTES);
    const words = new Int32Array(buffer);
    Atomics.store(words, W_MAGIC, MAGIC_BASE + tag);
    Atomics.store(words, W_STATE, state);
    Atomics.store(words, W_AUX, aux);
    Atomics.store(words, W_ID, depositObject(buffer).id);
    return new PrimitiveMemory(buffer, tag);
  }

  get state(): number {
    return Atomics.load(this.words, W_STATE);
  }

  describe(): string {
    return `${KIND_NAMES[this.tag]} ${this.id}`;
  }

  /** Counts one more pending wait of this thread here; the first sets its bit, then WAITERS. */
  register(): void {
    const count = localWaits.get(this.id) ?? 0;
    localWaits.set(this.id, count + 1);
    if (count > 0) return;
    Atomics.or(this.words, W_WAITER_BITS + (mySlot >>> 5), 1 << (mySlot & 31));
    Atomics.add(this.words, W_WAITERS, 1);
  }

  /** Undoes one register(); the last one takes this thread off WAITERS and clears its bit. */
  unregister(): void {
    const count = localWaits.get(this.id) ?? 0;
    if (count > 1) {
      localWaits.set(this.id, count - 1);
      return;
    }
    localWaits.delete(this.id);
    if (count === 0) return;
    Atomics.sub(this.words, W_WAITERS, 1);
    Atomics.and(this.words, W_WAITER_BITS + (mySlot >>> 5), ~(1 << (mySlot & 31)));
  }

  /** Wakes every registered party (this one included: its async waits may care). Call AFTER changing STATE. */
  wakeWaiters(): void {
    if (Atomics.load(this.words, W_WAITERS) === 0) return;
    wakeBits(this.words);
  }
}

function wakeBits(words: Int32Array): void {
  for (let w = 0; w < BITMAP_WORDS; w++) {
    let bits = Atomics.load(words, W_WAITER_BITS + w);
    while (bits !== 0) {
      const bit = 31 - Math.clz32(bits & -bits);
      wakeParty(w * 32 + bit);
      bits &= bits - 1;
    }
  }
}

/**
 * Blocks this thread (Atomics.wait on its park word) until `attempt`
 * succeeds, or throws TimeoutError at the deadline (an attempt made at the
 * deadline that succeeds wins). `publish`: a Lock wait, published for the
 * deadlock detector; a verdict then ends it with DeadlockError.
 */
function waitSync(memory: PrimitiveMemory, attempt: () => boolean, timeout: number, what: string, publish: boolean): void {
  for (let i = 0; i < SPIN_TRIES; i++) if (attempt()) return;
  if (timeout === 0) throw timeoutError(what, timeout);
  const deadline = timeout === Infinity ? Infinity : now() + timeout;
  if (publish) {
    if (timeout === Infinity) ensureSupervisor(); // the deadlock detector runs there
    publishWait(WaitOp.ACQUIRE, memory.id, timeout !== Infinity);
  }
  memory.register();
  try {
    for (;;) {
      // Read before the attempt: a wake after this read makes parkSync return at once.
      const seen = parkValue();
      if (attempt()) return;
      if (now() >= deadline) throw timeoutError(what, timeout);
      // Woken by a release/set (wakeWaiters), a verdict, or the deadline.
      parkSync(seen, deadline);
      if (publish && verdictFlag(mySlot) !== 0) {
        const deadlock = takeVerdict();
        if (deadlock) {
          if (attempt()) return;
          throw deadlock;
        }
      }
    }
  } finally {
    memory.unregister();
    if (publish) clearWait();
  }
}

/** Async wait options: milliseconds (Infinity by default) and an AbortSignal. */
export interface SyncWaitOptions {
  /** Milliseconds; 0 never waits; Infinity (the default) waits forever. */
  timeout?: number;
  /** Aborting rejects the wait with the signal's reason; nothing is acquired. */
  signal?: AbortSignal;
}

/**
 * Waits for `attempt` to succeed without blocking the event loop: under
 * this thread's pump (waiting.ts), which keeps the process alive meanwhile,
 * with a timer for the deadline and a listener for the signal.
 */
function waitAsync(memory: PrimitiveMemory, attempt: () => boolean, options: SyncWaitOptions | undefined, what: string): Promise<void> {
  let timeout: number;
  try {
    timeout = checkTimeout(options?.timeout, what);
  } catch (err) {
    return Promise.reject(err);
  }
  const signal = effectiveSignal(options?.signal);
  if (signal?.aborted) return Promise.reject(signal.reason);
  if (attempt()) return Promise.resolve();
  if (timeout === 0) return Promise.reject(timeoutError(what, timeout));
  return new Promise<void>((resolve, reject) => {
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    const settle = (failure?: { reason: unknown }): void => {
      settled = true;
      if (timer) clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      removeFromPump(pumped);
      memory.unregister();
      if (failure) reject(failure.reason);
      else resolve();
    };
    const pumped: AsyncStep = {
      step(): boolean {
        if (!settled && attempt()) settle();
        return settled;
      },
    };
    const onAbort = (): void => {
      if (!settled) settle({ reason: signal!.reason });
    };
    memory.register();
    // Has it become possible just now? (A change after this attempt wakes the pump: we are registered.)
    if (attempt()) {
      memory.unregister();
      resolve();
      return;
    }
    if (timeout !== Infinity) {
      timer = setTimeout(() => {
        if (settled) return;
        if (attempt()) settle();
        else settle({ reason: timeoutError(what, timeout) });
      }, timeout);
    }
    signal?.addEventListener("abort", onAbort, { once: true });
    pumpUntilSettled(pumped);
  });
}

/** The instance constructors pick up when fromBuffer rebuilds one over existing memory. */
let adopted: PrimitiveMemory | undefined;
function adopt<T>(memory: PrimitiveMemory, make: () => T): T {
  adopted = memory;
  try {
    return make();
  } finally {
    adopted = undefined;
  }
}
function takeAdopted(tag: number): PrimitiveMemory | undefined {
  const memory = adopted;
  adopted = undefined;
  return memory?.tag === tag ? memory : undefined;
}

/**
 * A mutual-exclusion lock shared by every interpreter it is passed to.
 * It is owned by the party (interpreter or main thread) that acquired it:
 * only that party may release it, and it is released for it if the party
 * ends (exit, crash, terminate). Not re-entrant: a party that waits for a
 * lock it holds waits until another of its async tasks releases it, and a
 * sync wait for a lock it holds is a deadlock (reported as one).
 */
export class Lock {
  readonly #memory: PrimitiveMemory;

  constructor() {
    this.#memory = takeAdopted(TAG_LOCK) ?? PrimitiveMemory.create(TAG_LOCK, 0, 0);
  }

  /** The lock's id (the same in every interpreter; deadlock reports name it). */
  get id(): number {
    return this.#memory.id;
  }

  #attempt = (): boolean => {
    const words = this.#memory.words;
    return Atomics.load(words, W_STATE) === 0 && Atomics.compareExchange(words, W_STATE, 0, mySlot + 1) === 0;
  };

  /**
   * Acquires the lock, waiting without blocking the event loop while
   * another party (or another task of this one) holds it. Rejects with
   * TimeoutError after `timeout` ms, with the signal's reason when aborted
   * (the lock is then not acquired), RangeError for a bad timeout.
   * Wakes: the holder's release(), or the holder's death.
   */
  acquire(options?: SyncWaitOptions): Promise<void> {
    return waitAsync(this.#memory, this.#attempt, options, `acquire of ${this.#memory.describe()}`);
  }

  /**
   * Acquires the lock, blocking this thread (Atomics.wait) while another
   * party holds it. Throws TimeoutError after `timeout` ms; DeadlockError
   * when, without a timeout, the holder can never release it (it waits,
   * directly or through others, for this thread).
   */
  acquireSync(options?: { timeout?: number }): void {
    const timeout = checkTimeout(options?.timeout, "acquireSync");
    waitSync(this.#memory, this.#attempt, timeout, `acquireSync of ${this.#memory.describe()}`, true);
  }

  /** Acquires the lock if it is free now; never waits. */
  tryAcquire(): boolean {
    return this.#attempt();
  }

  /**
   * Releases the lock and wakes its waiters. Throws InterpretersError if
   * this party does not hold it (it is free, or another party holds it).
   */
  release(): void {
    const memory = this.#memory;
    const mine = mySlot + 1;
    const previous = Atomics.compareExchange(memory.words, W_STATE, mine, 0);
    if (previous !== mine) {
      const held =
        previous === 0
          ? "it is not held"
          : `it is held by ${describeSlot(previous - 1)}; only the interpreter that acquired a lock may release it`;
      throw new InterpretersError(`release of ${memory.describe()} by ${describeSlot(mySlot)}: ${held}`);
    }
    memory.wakeWaiters();
  }

  get [Symbol.toStringTag](): string {
    return `Lock ${this.#memory.id}`;
  }

  static {
    registerSharedKind({
      tag: TAG_LOCK,
      bufferOf: (value) => (#memory in value ? value.#memory.buffer : undefined),
      fromBuffer: (buffer) => adopt(new PrimitiveMemory(buffer, TAG_LOCK), () => new Lock()),
    });
  }
}

/**
 * A counting semaphore shared by every interpreter it is passed to:
 * acquire takes one of its permits (waiting while there is none), release
 * gives one back. Permits are not owned: any party may release, and the
 * permits of a party that ends are not returned.
 */
export class Semaphore {
  readonly #memory: PrimitiveMemory;

  /** `permits`: how many acquires may succeed before a release (an integer from 0 to 2^31 - 1). */
  constructor(permits: number) {
    const memory = takeAdopted(TAG_SEMAPHORE);
    if (memory) {
      this.#memory = memory;
      return;
    }
    if (typeof permits !== "number" || !Number.isInteger(permits) || permits < 0 || permits > MAX_PERMITS) {
      throw new RangeError(`new Semaphore: permits must be an integer from 0 to ${MAX_PERMITS}, got ${String(permits)}`);
    }
    this.#memory = PrimitiveMemory.create(TAG_SEMAPHORE, permits, permits);
  }

  get id(): number {
    return this.#memory.id;
  }

  #attempt = (): boolean => {
    const words = this.#memory.words;
    for (;;) {
      const permits = Atomics.load(words, W_STATE);
      if (permits <= 0) return false;
      if (Atomics.compareExchange(words, W_STATE, permits, permits - 1) === permits) return true;
    }
  };

  /**
   * Takes a permit, waiting without blocking the event loop while there is
   * none. Rejects with TimeoutError, the signal's reason, or RangeError, as
   * Lock.acquire. Wakes: any party's release().
   */
  acquire(options?: SyncWaitOptions): Promise<void> {
    return waitAsync(this.#memory, this.#attempt, options, `acquire of ${this.#memory.describe()}`);
  }

  /** Takes a permit, blocking this thread while there is none. Throws TimeoutError after `timeout` ms. Never reported as a deadlock. */
  acquireSync(options?: { timeout?: number }): void {
    const timeout = checkTimeout(options?.timeout, "acquireSync");
    waitSync(this.#memory, this.#attempt, timeout, `acquireSync of ${this.#memory.describe()}`, false);
  }

  /** Takes a permit if one is available now; never waits. */
  tryAcquire(): boolean {
    return this.#attempt();
  }

  /** Gives a permit back (any party may) and wakes waiters. RangeError past 2^31 - 1 permits. */
  release(): void {
    const memory = this.#memory;
    for (;;) {
      const permits = Atomics.load(memory.words, W_STATE);
      if (permits >= MAX_PERMITS) throw new RangeError(`release of ${memory.describe()}: it already holds ${MAX_PERMITS} permits, the most it can`);
      if (Atomics.compareExchange(memory.words, W_STATE, permits, permits + 1) === permits) break;
    }
    memory.wakeWaiters();
  }

  get [Symbol.toStringTag](): string {
    return `Semaphore ${this.#memory.id}`;
  }

  static {
    registerSharedKind({
      tag: TAG_SEMAPHORE,
      bufferOf: (value) => (#memory in value ? value.#memory.buffer : undefined),
      fromBuffer: (buffer) => adopt(new PrimitiveMemory(buffer, TAG_SEMAPHORE), () => new Semaphore(0)),
    });
  }
}

/**
 * A flag shared by every interpreter it is passed to: wait() returns once
 * it is set. A wait in progress when set() is called returns even if
 * clear() follows at once.
 */
export class Event {
  readonly #memory: PrimitiveMemory;

  constructor() {
    this.#memory = takeAdopted(TAG_EVENT) ?? PrimitiveMemory.create(TAG_EVENT, 0, 0);
  }

  get id(): number {
    return this.#memory.id;
  }

  /** An attempt that succeeds once the flag is set, or once set() has been called since it was made. */
  #attemptFrom(): () => boolean {
    const words = this.#memory.words;
    const sets = Atomics.load(words, W_AUX);
    return () => Atomics.load(words, W_STATE) === 1 || Atomics.load(words, W_AUX) !== sets;
  }

  /** Sets the flag and wakes every waiter, in every interpreter. */
  set(): void {
    const words = this.#memory.words;
    Atomics.store(words, W_STATE, 1);
    Atomics.add(words, W_AUX, 1);
    this.#memory.wakeWaiters();
  }

  /** Clears the flag: later waits wait for the next set(). */
  clear(): void {
    Atomics.store(this.#memory.words, W_STATE, 0);
  }

  /** Whether the flag is set now (may be stale by the time it returns: another party can change it). */
  isSet(): boolean {
    return this.#memory.state === 1;
  }

  /**
   * Resolves once the flag is set, waiting without blocking the event loop.
   * Rejects with TimeoutError after `timeout` ms, the signal's reason when
   * aborted, RangeError for a bad timeout. Wakes: any party's set().
   */
  wait(options?: SyncWaitOptions): Promise<void> {
    return waitAsync(this.#memory, this.#attemptFrom(), options, `wait on ${this.#memory.describe()}`);
  }

  /** Returns once the flag is set, blocking this thread. Throws TimeoutError after `timeout` ms. Never reported as a deadlock. */
  waitSync(options?: { timeout?: number }): void {
    const timeout = checkTimeout(options?.timeout, "waitSync");
    waitSync(this.#memory, this.#attemptFrom(), timeout, `waitSync on ${this.#memory.describe()}`, false);
  }

  get [Symbol.toStringTag](): string {
    return `Event ${this.#memory.id}`;
  }

  static {
    registerSharedKind({
      tag: TAG_EVENT,
      bufferOf: (value) => (#memory in value ? value.#memory.buffer : undefined),
      fromBuffer: (buffer) => adopt(new PrimitiveMemory(buffer, TAG_EVENT), () => new Event()),
    });
  }
}

// ---- the supervisor's side (workers/supervisor.ts) ----

/**
 * Words of `buffer` if it holds a primitive of `tag` deposited under `id`
 * (the creator's deposit; later deposits of the same memory under other
 * ids are skipped, so each primitive is visited once). Plain user buffers
 * do not match: size, magic word and id all must.
 */
function primitiveWords(buffer: SharedArrayBuffer, id: number, tag?: number): Int32Array | undefined {
  if (buffer.byteLength !== BYTES) return undefined;
  const words = new Int32Array(buffer);
  const magic = Atomics.load(words, W_MAGIC);
  if (tag === undefined ? magic <= MAGIC_BASE || magic > MAGIC_BASE + TAG_EVENT : magic !== MAGIC_BASE + tag) return undefined;
  return Atomics.load(words, W_ID) === id ? words : undefined;
}

/**
 * After party `slot` died (supervisor only): releases every Lock it owned
 * among `objects` (id → deposited buffer), waking their waiters, and takes
 * it off every primitive's waiters. Semaphore permits it held are not
 * returned (see the file comment). Returns how many locks were released.
 */
export function releasePrimitivesOfDeadParty(objects: Map<number, SharedArrayBuffer>, slot: number): number {
  let released = 0;
  const bit = 1 << (slot & 31);
  for (const [id, buffer] of objects) {
    const words = primitiveWords(buffer, id);
    if (!words) continue;
    if (Atomics.and(words, W_WAITER_BITS + (slot >>> 5), ~bit) & bit) Atomics.sub(words, W_WAITERS, 1);
    if (Atomics.load(words, W_MAGIC) === MAGIC_BASE + TAG_LOCK && Atomics.compareExchange(words, W_STATE, slot + 1, 0) === slot + 1) {
      released++;
      if (Atomics.load(words, W_WAITERS) !== 0) wakeBits(words);
    }
  }
  return released;
}

/** The lock deposited under `id` and who holds it, for the deadlock detector; undefined if `buffer` is not that lock. */
export function lockStateOf(buffer: SharedArrayBuffer | undefined, id: number): LockState | undefined {
  const words = buffer && primitiveWords(buffer, id, TAG_LOCK);
  if (!words) return undefined;
  const owner = Atomics.load(words, W_STATE) - 1;
  return { id, owner: owner >= 0 && owner < SUPERVISOR_SLOT ? owner : -1 };
}
