/**
 * The lock inside a channel's shared state: a futex mutex in one Int32 word
 * that records its owner, so that a lock held by a party that died can be
 * recognised (and recovered, see recoverLock).
 *
 * Word value: 0 when free; otherwise `(ownerSlot + 1) | CONTENDED` where the
 * CONTENDED bit says that someone may be sleeping on the word.
 *
 * Critical sections are short (header updates and one memcpy of at most one
 * ring's worth of bytes), so a waiter spins briefly before it sleeps. Every
 * thread may sleep here, the main thread included: the wait is bounded by
 * the owner's critical section, not by another party's progress.
 */
import { MAX_PARTIES, PartyState, slotState } from "./control.js";
import { CorruptDataError } from "./errors.js";

const CONTENDED = 1 << 30;
const OWNER_MASK = CONTENDED - 1;
const SPIN_TRIES = 200;
/** A sleeping locker re-checks at least this often (ms), e.g. for a dead owner. */
const RECHECK_MS = 50;

/**
 * Acquires the lock word `index` of `words` for party `slot`. If it has to
 * take the lock over from an owner that is gone, it calls `recovered()`
 * holding the lock (to roll back what the owner left half done); if that
 * throws, the lock is released and the error thrown.
 */
export function lock(words: Int32Array, index: number, slot: number, recovered: () => void): void {
  const mine = slot + 1;
  if (Atomics.compareExchange(words, index, 0, mine) === 0) return;
  for (let i = 0; i < SPIN_TRIES; i++) {
    if (Atomics.load(words, index) === 0 && Atomics.compareExchange(words, index, 0, mine) === 0) return;
  }
  lockSlow(words, index, mine, recovered);
}

function lockSlow(words: Int32Array, index: number, mine: number, recovered: () => void): void {
  for (;;) {
    const seen = Atomics.load(words, index);
    if (seen === 0) {
      // Taken over a free word after contention: keep CONTENDED so that our
      // unlock wakes the next sleeper (others may still be asleep).
      if (Atomics.compareExchange(words, index, 0, mine | CONTENDED) === 0) return;
      continue;
    }
    if ((seen & OWNER_MASK) === mine) {
      throw new CorruptDataError("channel lock is already held by this thread (re-entrant lock): internal error");
    }
    if ((seen & CONTENDED) === 0 && Atomics.compareExchange(words, index, seen, seen | CONTENDED) !== seen) continue;
    // Woken by unlock()'s notify (or RECHECK_MS passing); re-checks the word.
    if (Atomics.wait(words, index, seen | CONTENDED, RECHECK_MS) === "timed-out" && takeOverIfOwnerIsGone(words, index, mine)) {
      recoverOrRelease(words, index, recovered);
      return;
    }
  }
}

/**
 * Holding a lock taken over from a dead owner: rolls back what it left half
 * done. If that fails (a corrupt journal: CorruptDataError), the lock is
 * released before the error goes up, so that no other party waits for a
 * lock whose holder has given up on it.
 */
function recoverOrRelease(words: Int32Array, index: number, recovered: () => void): void {
  try {
    recovered();
  } catch (err) {
    unlock(words, index);
    throw err;
  }
}

/**
 * After a long wait: a lock word naming no valid party is corrupt; one whose
 * owner's slot is FREE (the supervisor has already released that party) can
 * never be unlocked by anyone, so the waiter takes it over.
 */
function takeOverIfOwnerIsGone(words: Int32Array, index: number, mine: number): boolean {
  const value = Atomics.load(words, index);
  if (value === 0) return false;
  const owner = (value & OWNER_MASK) - 1;
  if (owner < 0 || owner >= MAX_PARTIES) throw new CorruptDataError(`channel lock word names party ${owner}, which cannot exist`);
  return slotState(owner) === PartyState.FREE && recoverLock(words, index, owner, mine - 1);
}

/**
 * Takes the lock for party `slot` if that is possible within about
 * `spinTries` attempts; never sleeps. For the supervisor, which must never
 * block on a lock (the owner may be the next party to die, and only the
 * supervisor can notice that).
 */
export function tryLock(words: Int32Array, index: number, slot: number, spinTries: number): boolean {
  const mine = slot + 1;
  for (let i = 0; i <= spinTries; i++) {
    if (Atomics.load(words, index) === 0 && Atomics.compareExchange(words, index, 0, mine | CONTENDED) === 0) return true;
  }
  return false;
}

/** Releases the lock; wakes one sleeper if the word says someone may sleep. */
export function unlock(words: Int32Array, index: number): void {
  const previous = Atomics.exchange(words, index, 0);
  if (previous & CONTENDED) Atomics.notify(words, index, 1);
}

/** The slot that holds the lock, or -1 when it is free. */
export function lockOwner(words: Int32Array, index: number): number {
  const value = Atomics.load(words, index);
  return value === 0 ? -1 : (value & OWNER_MASK) - 1;
}

/**
 * Takes over a lock whose owner `deadSlot` is known to be dead, for party
 * `slot`. Returns false when the lock is no longer held by `deadSlot`.
 */
export function recoverLock(words: Int32Array, index: number, deadSlot: number, slot: number): boolean {
  for (;;) {
    const seen = Atomics.load(words, index);
    if (seen === 0 || (seen & OWNER_MASK) !== deadSlot + 1) return false;
    if (Atomics.compareExchange(words, index, seen, (slot + 1) | CONTENDED) === seen) return true;
  }
}
