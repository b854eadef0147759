/**
 * The channel protocol: what a send, a receive and a release do to a
 * channel's shared state (ring.ts). Every `attempt`/`withdraw` here runs
 * with both channel locks held (see `locked`); an `attemptFast` runs with
 * only its own side's lock, for the common case that needs nothing else (a
 * one-record message into room the ring has, the oldest plain record out).
 * Waiting happens outside, in the drivers of channel.ts, which sleep on the
 * party's park word (waiting.ts) between attempts.
 *
 * An operation that cannot complete registers itself as a waiter in the
 * same critical section in which it found it could not (bit in the waiter
 * bitmap + WAITING_* count), so that whoever changes the state next sees
 * the registration and wakes it: no lost wakeups. Registration holds both
 * locks, so a fast path (holding one of them) runs wholly before or after
 * it: before, and the registering attempt sees its change; after, and the
 * fast path sees WAITING_* set when it checks, after unlocking, whom to
 * wake. Whoever changes state records which side to wake (`wake`), and the
 * driver wakes it after releasing the lock.
 */
import { MAX_PARTIES, mySlot, PartyState, slotState, writeClaims } from "./control.js";
import { carriedEnds } from "./transfer.js";
import { ChannelClosedError, ChannelFullError, CorruptDataError, MessageTooLargeError } from "./errors.js";
import { flavorFor } from "./flavors/index.js";
import { lock, lockOwner, recoverLock, tryLock, unlock } from "./mutex.js";
import {
  ChannelMemory,
  Locks,
  CLOSED_NO_RECEIVERS,
  CLOSED_NO_SENDERS,
  H,
  Overflow,
  R_ATTACH,
  R_FIRST,
  R_LAST,
  R_RAW_BUFFER,
  R_RAW_BYTES,
  R_CHECKSUM,
  R_TOMBSTONE,
  CHECKSUM_BYTES,
  MESSAGE_FLAGS,
  RECORD_HEADER_BYTES,
  recordBytes,
  align8,
  type Side,
} from "./ring.js";
import { waitsSyncToReceive, waitsSyncToSend, wakeParty } from "./waiting.js";
import { crc32, crc32Word } from "./crc32.js";

export const WAKE_SENDERS = 1;
export const WAKE_RECEIVERS = 2;
/**
 * Receivers may care: a message was added (or one a woken receiver was
 * woken for is still there). Unlike WAKE_RECEIVERS, which wakes every
 * registered receiver, this wakes only as many as there are messages that
 * no probing receiver will take (ChannelMemory.messagesNoProberTakes):
 * waking more costs futex wake-ups and cores that the parties doing the
 * work need (one request on a channel shared by a pool of sleeping
 * interpreters wakes one of them, not the whole pool).
 *
 * Only receivers known to attempt at once when woken count: parties in a
 * published sync wait that receives on this channel (recvSync, selectSync:
 * waiting.ts waitsSyncToReceive). Any other registered receiver (an async
 * receive, whose thread may be busy or blocked elsewhere for long) is woken
 * as before, without counting. And a counted receiver that does not take
 * the message it was woken for passes the wake-up on: one that takes a
 * message under both locks while more are buffered wakes for those
 * (RecvOp.attempt), one that withdraws (timeout, abort, another select
 * case) or whose attempt throws does the same while messages are buffered
 * (RecvOp.withdraw, Operation.abandon), and a party that dies is cleaned up
 * by the supervisor, which wakes every receiver (releaseParty). A woken
 * receiver that finds no message was beaten to it by another taker.
 */
export const WAKE_FOR_MESSAGE = 4;
/**
 * Senders may care: a bounded channel has a free slot again (or one a
 * woken sender was woken for is still free). The sender side of
 * WAKE_FOR_MESSAGE: instead of every registered sender, only as many as
 * there are free slots (ChannelMemory.freeSlots: capacity - buffered, or
 * all of them while a message is streamed in, which waits for bytes) are
 * woken, counting only parties in a published sendSync on this channel
 * (waiting.ts waitsSyncToSend); any other registered sender is woken as
 * before. A fan-in of many senders into a full channel then costs its
 * receiver one wake-up per message taken, not one per sender.
 *
 * A counted sender that does not use the slot passes the wake-up on while
 * slots are free: one that sends under both locks (SendOp.attempt), one
 * that withdraws (timeout) or whose attempt throws (SendOp.withdraw,
 * SendOp.abandon); a party that dies is cleaned up by the supervisor, which
 * wakes every sender (releaseParty). A woken sender that finds no slot (a
 * spinning sender took it) goes back to sleep: the next message taken
 * wakes a sender again. One that finds a slot but not the bytes for its
 * message (a byte-limited ring, messages of mixed sizes) may hold the
 * wake-up a smaller message needed: it wakes every sender, and the channel
 * wakes them all for each message taken until no sender waits
 * (SendOp.shortOfBytes). Rendezvous and unbounded channels keep
 * WAKE_SENDERS: their senders wait for their own message to be taken, or
 * for bytes.
 */
export const WAKE_FOR_ROOM = 8;

/**
 * Test hook: called at named points inside critical sections (with the
 * lock held), so that tests can stop or kill a thread exactly there.
 * Points: "send:committed" (a message's first record is written and counted
 * but not yet published: the store of WRITTEN is next), "send:published"
 * (just after that store, the commit point), "recv:copied" (a message is
 * copied out but not yet counted or popped), "recv:freed" (just after the
 * store of READ that frees it, the commit point).
 */
let testHook: ((point: string) => void) | undefined;
export function setTestHook(hook: ((point: string) => void) | undefined): void {
  testHook = hook;
}

/** Smallest piece a streamed message is cut into while the ring is busy (bytes). */
const MIN_STREAM_CHUNK = 1024;

/** What a fast attempt found: done, blocked (a full attempt would only register), or needs the full protocol. */
export const enum Fast {
  DONE,
  BLOCKED,
  SLOW,
}

/**
 * Runs `body` with both channel locks held by this thread, as one journaled
 * critical section (ring.ts): if this thread dies inside it, whoever takes
 * the locks over undoes it.
 */
export function locked<T>(memory: ChannelMemory, body: () => T): T {
  enterCritical(memory);
  try {
    return body();
  } finally {
    leaveCritical(memory);
  }
}

/** Takes both channel locks (send lock first) and opens a journaled critical section (pair with leaveCritical). */
export function enterCritical(memory: ChannelMemory): void {
  lock(memory.header, H.SEND_LOCK, mySlot, memory.rollbackSendBound);
  try {
    lock(memory.header, H.RECV_LOCK, mySlot, memory.rollbackRecvBound);
  } catch (err) {
    unlock(memory.header, H.SEND_LOCK);
    throw err;
  }
  memory.beginJournal(Locks.BOTH);
}

/** Closes the critical section (its changes stand) and releases both locks. */
export function leaveCritical(memory: ChannelMemory): void {
  memory.endJournal(Locks.BOTH);
  unlock(memory.header, H.RECV_LOCK);
  unlock(memory.header, H.SEND_LOCK);
}

/** Takes one side's lock (Locks.SEND or Locks.RECV) and opens a journaled section for it (pair with leaveSide). */
export function enterSide(memory: ChannelMemory, side: Locks): void {
  lockSide(memory, side);
  memory.beginJournal(side);
}

/** Takes one side's lock without opening a section (a batch opens one per operation: see channel.ts attemptFastBatch). */
export function lockSide(memory: ChannelMemory, side: Locks): void {
  if (side === Locks.SEND) lock(memory.header, H.SEND_LOCK, mySlot, memory.rollbackSendBound);
  else lock(memory.header, H.RECV_LOCK, mySlot, memory.rollbackRecvBound);
}

/** Releases one side's lock (its last section already ended). */
export function unlockSide(memory: ChannelMemory, side: Locks): void {
  unlock(memory.header, side === Locks.SEND ? H.SEND_LOCK : H.RECV_LOCK);
}

/** Closes a one-side section and releases that lock. */
export function leaveSide(memory: ChannelMemory, side: Locks): void {
  memory.endJournal(side);
  unlock(memory.header, side === Locks.SEND ? H.SEND_LOCK : H.RECV_LOCK);
}

/** Is lock `index` held by `deadSlot`, or by a party whose slot is already free? */
function heldByTheDead(memory: ChannelMemory, index: number, deadSlot: number): boolean {
  const owner = lockOwner(memory.header, index);
  if (owner >= MAX_PARTIES) throw memory.corrupt(`lock word names party ${owner}, which cannot exist`);
  return owner === deadSlot || (owner >= 0 && slotState(owner) === PartyState.FREE);
}

/**
 * For the supervisor: takes back the locks a dead party held, rolls back
 * what it left half done under them, and releases them, before anything
 * else. Each lock on its own: a live sender may hold the send lock while
 * it waits for the receive lock the dead party holds, and would wait
 * forever if recovering that lock required the send lock. The receive
 * side is rolled back first, so that no sender sees receive-side counters
 * of a section that is about to be undone.
 */
function recoverLocksOfTheDead(memory: ChannelMemory, deadSlot: number): void {
  const header = memory.header;
  // Both owners are checked before either lock is taken, and the locks are
  // released even if a rollback fails: a corrupt lock word or journal throws
  // CorruptDataError, and a lock kept by the (living) supervisor would make
  // every user of the channel wait for it forever.
  const sendHeldByTheDead = heldByTheDead(memory, H.SEND_LOCK, deadSlot);
  const recvHeldByTheDead = heldByTheDead(memory, H.RECV_LOCK, deadSlot);
  const send = sendHeldByTheDead && recoverLock(header, H.SEND_LOCK, lockOwner(header, H.SEND_LOCK), mySlot);
  const recv = recvHeldByTheDead && recoverLock(header, H.RECV_LOCK, lockOwner(header, H.RECV_LOCK), mySlot);
  try {
    if (recv) memory.rollbackRecv();
    if (send) memory.rollbackSend();
  } finally {
    if (recv) unlock(header, H.RECV_LOCK);
    if (send) unlock(header, H.SEND_LOCK);
  }
}

/**
 * For the supervisor cleaning up after party `deadSlot`: runs `body` under
 * both channel locks, after taking back (and rolling back) any lock the
 * dead party held. Never sleeps: if a live party holds a lock, returns
 * `undefined` and the caller retries later (that party may die there too,
 * and only the supervisor would notice).
 */
export function tryLockedAfterDeath<T>(memory: ChannelMemory, deadSlot: number, body: () => T): { value: T } | undefined {
  // Before any lock is touched: a rollback may write the data area, and the
  // supervisor may not have its newest generation yet (it then throws, and
  // the caller retries, with nothing changed).
  memory.refreshData();
  recoverLocksOfTheDead(memory, deadSlot);
  if (!tryLock(memory.header, H.SEND_LOCK, mySlot, 1000)) return undefined;
  if (!tryLock(memory.header, H.RECV_LOCK, mySlot, 1000)) {
    unlock(memory.header, H.SEND_LOCK);
    return undefined;
  }
  memory.beginJournal(Locks.BOTH);
  try {
    memory.refreshData(); // grown since the check above? Throws before the body changes anything
    return { value: body() };
  } finally {
    leaveCritical(memory);
  }
}

function isLiveParty(slot: number): boolean {
  return slotState(slot) === PartyState.LIVE;
}

/** Scratch lists of party slots for wakeWaiters (reused: nothing there re-enters it). */
const wakeSlots: number[] = [];
const countedWaiters: number[] = [];

/**
 * Wakes the parties registered as waiting on the sides in `wake` (call
 * after unlocking): every waiting sender for WAKE_SENDERS, every waiting
 * receiver for WAKE_RECEIVERS, and for WAKE_FOR_MESSAGE only as many
 * receivers as there are messages no prober will take.
 */
export function wakeWaiters(memory: ChannelMemory, wake: number): void {
  if (wake === 0) return;
  let senders = 0; // how many to wake; Infinity = all
  if (wake & (WAKE_SENDERS | WAKE_FOR_ROOM) && memory.get(H.WAITING_SENDERS) > 0) {
    senders = wake & WAKE_SENDERS ? Infinity : memory.freeSlots();
  }
  let receivers = 0;
  if (wake & (WAKE_RECEIVERS | WAKE_FOR_MESSAGE) && memory.get(H.WAITING_RECEIVERS) > 0) {
    receivers = wake & WAKE_RECEIVERS ? Infinity : memory.messagesNoProberTakes(isLiveParty);
  }
  if (senders === 0 && receivers === 0) return; // the common case: nobody parked, nothing to do
  const slots = wakeSlots;
  if (senders > 0) {
    slots.length = 0;
    memory.collectWaiters("send", slots);
    wakeSome(memory, slots, senders, waitsSyncToSend);
  }
  if (receivers > 0) {
    slots.length = 0;
    memory.collectWaiters("recv", slots);
    wakeSome(memory, slots, receivers, waitsSyncToReceive);
  }
}

/**
 * Wakes `count` of the parties in `slots` that `counts` (waiting.ts: in a
 * sync wait on this side of this channel, so they attempt as soon as they
 * wake), in turns across calls so that one party is not always the one
 * woken, and every other party in `slots` (see WAKE_FOR_MESSAGE and
 * WAKE_FOR_ROOM). A count that covers them all wakes them all, reading
 * nothing more.
 */
function wakeSome(memory: ChannelMemory, slots: number[], count: number, counts: (slot: number, channelId: number) => boolean): void {
  if (count >= slots.length) {
    for (const slot of slots) wakeParty(slot);
    return;
  }
  const waitingHere = countedWaiters;
  waitingHere.length = 0;
  for (const slot of slots) {
    if (counts(slot, memory.id)) waitingHere.push(slot);
    else wakeParty(slot);
  }
  if (count >= waitingHere.length) {
    for (const slot of waitingHere) wakeParty(slot);
    return;
  }
  const first = memory.wakeRotation++ % waitingHere.length;
  for (let i = 0; i < count; i++) wakeParty(waitingHere[(first + i) % waitingHere.length]!);
}

/** Is seq `a` after seq `b`, on a 32-bit wrapping counter? */
export function seqAfter(a: number, b: number): boolean {
  return ((a - b) | 0) > 0;
}

const NOTHING_RECEIVED = new Uint8Array(0);
/** Shared by every operation that discarded nothing (never written to). */
const NO_DISCARDS: Uint8Array[] = [];

/** A message ready to be written into a ring. */
export interface OutgoingMessage {
  /** Payload bytes in all. */
  readonly length: number;
  /** Record flags every record of it carries (R_ATTACH or 0). */
  readonly flags: number;
  /** Copies payload bytes [from, from + count) to `target` (whose 32-bit view is `targetWords`) at `at`. */
  copyTo(target: Uint8Array, targetWords: Int32Array, at: number, from: number, count: number): void;
}

/** What a finished send operation holds instead of its message. */
const NO_MESSAGE: OutgoingMessage = { length: 0, flags: 0, copyTo() {} };

/** Common part of send and receive operations: waiter registration. */
abstract class Operation {
  wake = 0;
  /**
   * Payloads of messages this operation discarded (drop-oldest) that carry
   * channel ends: released by whoever runs it, after unlocking
   * (transfer.ts releaseCarriedEnds). Empty almost always.
   */
  discarded: Uint8Array[] = NO_DISCARDS;
  /** When set, a blocked attempt does not register as a waiter (the caller spins instead). */
  probing = false;
  private registered = false;
  constructor(
    readonly memory: ChannelMemory,
    readonly side: Side,
  ) {}

  /** Counts this operation as waiting (under both locks). */
  protected register(): false {
    if (!this.registered && !this.probing) {
      this.registered = true;
      this.memory.addWaits(this.side, mySlot, 1);
      // A new receiver is what a rendezvous trySend / select send case waits for.
      if (this.side === "recv" && this.memory.capacity === 0) this.wake |= WAKE_SENDERS;
    }
    return false;
  }

  /** True while this operation counts as waiting on its channel. */
  get isRegistered(): boolean {
    return this.registered;
  }

  /** The one lock `attemptFast` needs now (Locks.SEND or Locks.RECV), or 0 when only `attempt` can move it. */
  abstract fastLock(): number;
  /** Under the lock `fastLock` named (only). */
  abstract attemptFast(): Fast;

  /**
   * Under both locks, when an attempt or a withdrawal threw: stops counting
   * this operation as waiting (a receive also passes on the wake-up it may
   * have been given: RecvOp.abandon).
   */
  abandon(): void {
    this.unregister();
  }

  /** Stops counting this operation as waiting (under both locks); idempotent. */
  unregister(): void {
    if (!this.registered) return;
    this.registered = false;
    this.memory.addWaits(this.side, mySlot, -1);
  }
}

const enum SendPhase {
  ADMIT,
  STREAM,
  AWAIT_TAKE,
  DONE,
}

/** Outcome of a withdraw: the operation completed after all, was withdrawn, or cannot be withdrawn now. */
export type Withdrawal = "done" | "withdrawn" | "busy";

/**
 * One send. `attempt` moves it forward as far as the state allows:
 * admission (flavor + STREAM_SENDER free), writing one record (or, for a
 * message larger than the ring can ever hold, streaming records), and for
 * a rendezvous waiting until the receiver has taken it.
 */
export class SendOp extends Operation {
  private phase = SendPhase.ADMIT;
  private seq = 0;
  private written = 0;
  /** The send completed by discarding its own message (drop-newest): the caller releases the ends it carried. */
  droppedOwn = false;
  /** Checked before each attempt: throws if the sending handle is no longer usable. */
  constructor(
    memory: ChannelMemory,
    private message: OutgoingMessage,
    private readonly isTry: boolean,
    private readonly checkHandle: () => void,
    /** Receive operations of the same select on this channel (not partners for a rendezvous). */
    private readonly ownReceivers: () => number = () => 0,
  ) {
    super(memory, "send");
  }

  /**
   * Makes this finished operation a fresh one for `message` (a handle's
   * sync sends reuse one object: a blocked thread runs one at a time).
   * Returns undefined when it cannot be reused (still counted as waiting).
   */
  reuse(message: OutgoingMessage): this | undefined {
    if (this.isRegistered) return undefined;
    this.message = message;
    this.phase = SendPhase.ADMIT;
    this.seq = 0;
    this.written = 0;
    this.wake = 0;
    this.probing = false;
    this.droppedOwn = false;
    return this;
  }

  /** Drops the message once the send is over (a reused operation would keep it alive until the next send). */
  forgetMessage(): void {
    this.message = NO_MESSAGE;
  }

  /** True once a part of the message is in the ring (a timeout must then withdraw it). */
  get started(): boolean {
    return this.phase !== SendPhase.ADMIT;
  }

  fastLock(): number {
    if (this.isRegistered || this.isTry) return 0;
    return this.phase === SendPhase.ADMIT || this.phase === SendPhase.AWAIT_TAKE ? Locks.SEND : 0;
  }

  /**
   * Under the send lock only: admits a message that fits in one record into
   * room the ring has now, and publishes it; for a rendezvous, then checks
   * whether it was taken. BLOCKED means what a probing `attempt` would
   * find (no room by count or bytes, or not taken yet); SLOW, anything else
   * (a stream, growth, a closed channel, another sender streaming).
   */
  attemptFast(): Fast {
    const m = this.memory;
    if (this.phase === SendPhase.AWAIT_TAKE) {
      if (this.completedWithoutLock()) return Fast.DONE;
      // Closed, or setCapacity made it buffered (the offered message then stands): the full attempt decides.
      return m.get(H.CLOSED) !== 0 || m.capacity !== 0 ? Fast.SLOW : Fast.BLOCKED;
    }
    this.checkHandle();
    // Any closed bit, a stream, or no receive handle counted: the full attempt
    // decides, and checks those words (a corrupt value lands there too).
    if (m.get(H.CLOSED) !== 0 || m.get(H.STREAM_SENDER) !== 0 || m.get(H.RECV_HANDLES) <= 0) return Fast.SLOW;
    const capacity = m.checkedCapacity();
    // A rendezvous under a policy other than "wait" needs the waiting receivers, a both-locks word.
    if (capacity === 0 && m.overflow !== Overflow.WAIT) return Fast.SLOW;
    if (!flavorFor(capacity).admits(m)) return this.fullUnderOneLock();
    const total = this.message.length;
    const bytes = recordBytes(total);
    const maxDataSize = m.maxDataSize();
    if (bytes > maxDataSize) return Fast.SLOW;
    const at = m.findRoom(bytes);
    // No room now: growing or repositioning an empty ring needs both locks.
    if (at < 0) return m.get(H.DATA_SIZE) < maxDataSize || m.usedBytes() === 0 ? Fast.SLOW : this.fullUnderOneLock();
    this.publish(at);
    if (this.phase === SendPhase.DONE) return Fast.DONE;
    return Fast.BLOCKED; // a rendezvous: published, now waiting for a receiver to take it
  }

  /**
   * Under the send lock only: no room, by count or bytes. "wait": BLOCKED;
   * "drop-newest": this message is discarded, the send complete; "error":
   * ChannelFullError; "drop-oldest" needs both locks (SLOW).
   */
  private fullUnderOneLock(): Fast {
    switch (this.memory.overflow) {
      case Overflow.DROP_NEWEST:
        this.dropOwn();
        return Fast.DONE;
      case Overflow.DROP_OLDEST:
        return Fast.SLOW;
      case Overflow.ERROR:
        throw this.fullError();
      default:
        return Fast.BLOCKED;
    }
  }

  /** drop-newest: the send completes and its message is discarded (counted in sent and in dropped). */
  private dropOwn(): void {
    const m = this.memory;
    m.sent += 1;
    m.dropped += 1;
    this.droppedOwn = true;
    this.phase = SendPhase.DONE;
  }

  private fullError(): ChannelFullError {
    const m = this.memory;
    const capacity = m.capacity;
    const why =
      capacity === 0 ? "no receiver is waiting for it, at capacity 0"
      : capacity > 0 && !m.lengthBelow(capacity) ? `${capacity} messages are buffered (its capacity)`
      : `its byte budget of ${m.maxDataSize()} bytes (maxBufferBytes) is used up`;
    return new ChannelFullError(`send on ${m.describe()}: the channel is full (${why}) and its overflow policy is "error"; nothing was sent (retry later, or use overflow "wait" to wait for room)`);
  }

  /** Under the send lock: writes the whole message as one record at `at` (from reserve) and publishes it. */
  private publish(at: number): void {
    const m = this.memory;
    const total = this.message.length;
    this.seq = m.get(H.SEQ_TAIL);
    m.set(H.SEQ_TAIL, (this.seq + 1) | 0);
    m.sent += 1;
    this.writeRecord(at, 0, total, R_FIRST | R_LAST);
    this.wake |= WAKE_FOR_MESSAGE;
    this.phase = m.capacity === 0 && !this.isTry ? SendPhase.AWAIT_TAKE : SendPhase.DONE;
  }

  /** Under both locks. Returns true when the send is complete; false when it waits (registered). */
  attempt(): boolean {
    if (!this.isRegistered) return this.attemptOnce();
    const done = this.attemptOnce();
    if (done) this.passOnIfRoom(); // it may have been woken for a slot, and more are free
    return done;
  }

  override abandon(): void {
    const wasRegistered = this.isRegistered;
    super.abandon();
    if (wasRegistered) this.passOnIfRoom();
  }

  /**
   * Under both locks, after a registered send completed or gave up: if a
   * bounded channel still has a free slot, the wake-up this sender may have
   * had for one is passed on (see WAKE_FOR_ROOM).
   */
  private passOnIfRoom(): void {
    const m = this.memory;
    if (m.capacity > 0 && m.lengthBelow(m.capacity)) this.wake |= WAKE_FOR_ROOM;
  }

  private attemptOnce(): boolean {
    const m = this.memory;
    if (this.phase === SendPhase.AWAIT_TAKE) return this.checkTaken();
    try {
      this.checkHandle();
    } catch (err) {
      // Its handle was closed or moved while the message was streaming in:
      // take the pieces back, or every other sender would wait for
      // STREAM_SENDER to clear, and the receiver of the stream for its end.
      if (this.phase === SendPhase.STREAM) this.withdraw(false);
      throw err;
    }
    if (m.closedForSender() & CLOSED_NO_RECEIVERS) {
      this.unregister();
      throw new ChannelClosedError(`send on ${m.describe()}: every receive handle is closed, so nobody can receive it`);
    }
    if (this.phase === SendPhase.ADMIT && !this.admit()) return this.register();
    if (this.phase === SendPhase.STREAM && !this.streamPieces()) return this.register();
    if ((this.phase as SendPhase) === SendPhase.AWAIT_TAKE) return this.checkTaken();
    return this.finish();
  }

  private admit(): boolean {
    const m = this.memory;
    const streamer = m.streamSender();
    if (streamer !== 0) {
      m.checkStreamUnderWay(streamer);
      return false;
    }
    if (!this.admitsByCount()) {
      const made = this.onFull();
      if (made !== "room") return made === "done";
    }
    const total = this.message.length;
    const maxDataSize = m.maxDataSize();
    if (recordBytes(total) > maxDataSize) {
      if (this.isTry) {
        throw new MessageTooLargeError(
          `trySend on ${m.describe()}: the message (${total} bytes) is larger than the ring can ever hold (${maxDataSize} bytes) and must be streamed; use send()`,
        );
      }
      this.seq = m.get(H.SEQ_TAIL);
      m.set(H.SEQ_TAIL, (this.seq + 1) | 0);
      m.set(H.STREAM_SENDER, mySlot + 1);
      m.set(H.STREAM_SEQ, this.seq);
      this.phase = SendPhase.STREAM;
      return true;
    }
    let at = m.reserve(recordBytes(total), true);
    while (at < 0) {
      if (m.overflow === Overflow.WAIT || (this.isTry && m.overflow === Overflow.ERROR)) {
        this.shortOfBytes();
        return false;
      }
      const made = this.onFull();
      if (made !== "room") return made === "done";
      at = m.reserve(recordBytes(total), true);
    }
    this.publish(at);
    return true;
  }

  /**
   * Under both locks: may a new message go in now, by count? trySend and
   * select send cases use the flavor's try rule; at capacity 0 a policy
   * other than "wait" admits only when a receiver waits (as trySend).
   */
  private admitsByCount(): boolean {
    const m = this.memory;
    const capacity = m.checkedCapacity();
    const flavor = flavorFor(capacity);
    if (this.isTry || (capacity === 0 && m.overflow !== Overflow.WAIT)) return flavor.tryAdmits(m, this.ownReceivers());
    return flavor.admits(m);
  }

  /**
   * Under both locks: no room (by count, or by bytes after growing). What
   * the overflow policy makes of it: "wait" (and trySend under "error"):
   * not now; "drop-newest": done, this message discarded; "drop-oldest":
   * room made by discarding the oldest message a receiver has not started
   * to take (or not now, if there is none); "error": ChannelFullError.
   */
  private onFull(): "done" | "not now" | "room" {
    const m = this.memory;
    switch (m.overflow) {
      case Overflow.DROP_NEWEST:
        this.dropOwn();
        return "done";
      case Overflow.DROP_OLDEST: {
        const dropped = m.dropOldest();
        if (dropped === false) return "not now";
        if (dropped !== true) this.discarded = this.discarded === NO_DISCARDS ? [dropped] : [...this.discarded, dropped];
        this.wake |= WAKE_SENDERS; // bytes or a slot may be free for another sender too
        return this.admitsByCount() ? "room" : this.onFull();
      }
      case Overflow.ERROR:
        if (this.isTry) return "not now";
        throw this.fullError();
      default:
        return "not now";
    }
  }

  /**
   * Under both locks: a slot is free but the ring has not the bytes for
   * this message. The wake-up this sender may have been given for the slot
   * could serve a sender whose message fits, so from now until no sender
   * waits, every sender is woken for every message taken (freeSlots), and
   * the first to find this wakes them all once now. Only the first: senders
   * all short of bytes must not wake each other in a loop. Only a sendSync
   * or send that is or will be registered: a spinning one was given no
   * wake-up, and trySend and select send cases are not counted (always woken).
   */
  private shortOfBytes(): void {
    const m = this.memory;
    if (this.isTry || (this.probing && !this.isRegistered)) return;
    if (m.capacity <= 0 || m.get(H.SENDERS_SHORT_OF_BYTES) !== 0) return;
    m.set(H.SENDERS_SHORT_OF_BYTES, 1);
    this.wake |= WAKE_SENDERS;
  }

  /** Writes and publishes one record of this message (its payload bytes [from, from + count)). */
  private writeRecord(at: number, from: number, count: number, flags: number): void {
    const m = this.memory;
    this.message.copyTo(m.data, m.dataWords, at + RECORD_HEADER_BYTES, from, count);
    const written = m.writeRecord(at, count, flags | this.message.flags, this.seq, this.message.length);
    if (from === 0) testHook?.("send:committed");
    m.publishWritten(written); // the commit point: last
    if (from === 0) testHook?.("send:published");
    this.written = from + count;
  }

  /** Writes as many pieces of a streamed message as fit; true when the last one is in. */
  private streamPieces(): boolean {
    const m = this.memory;
    const total = this.message.length;
    const largestPiece = (m.maxDataSize() - RECORD_HEADER_BYTES) & ~7;
    while (this.written < total) {
      const remaining = total - this.written;
      let count = Math.min(remaining, largestPiece);
      let at = m.reserve(recordBytes(count), true);
      if (at < 0) {
        // Not enough room for a full piece: take what is free now, unless that is tiny.
        const room = m.largestRoom() & ~7;
        if (room < Math.min(remaining, MIN_STREAM_CHUNK)) return false;
        count = Math.min(remaining, room);
        at = m.reserve(recordBytes(count), false);
        if (at < 0) throw m.corrupt(`no room for a piece of ${count} bytes that largestRoom promised`);
      }
      const flags = (this.written === 0 ? R_FIRST : 0) | (this.written + count === total ? R_LAST : 0);
      this.writeRecord(at, this.written, count, flags);
      this.wake |= WAKE_RECEIVERS;
    }
    m.set(H.STREAM_SENDER, 0);
    m.sent += 1;
    this.wake |= WAKE_SENDERS; // other senders wait for STREAM_SENDER to clear
    this.phase = m.capacity === 0 && !this.isTry ? SendPhase.AWAIT_TAKE : SendPhase.DONE;
    return true;
  }

  /**
   * Without the lock: a rendezvous send that is not registered as a waiter
   * is complete once SEQ_HEAD has passed its message (a receiver took it).
   * Saves a lock round trip per message on the hot handover path.
   */
  completedWithoutLock(): boolean {
    if (this.phase !== SendPhase.AWAIT_TAKE || this.isRegistered) return false;
    const seqHead = Atomics.load(this.memory.header, H.SEQ_HEAD);
    if (!seqAfter(seqHead, this.seq)) return false;
    this.memory.checkSeqHead(seqHead); // taken, or corrupt: past every seq given out
    this.phase = SendPhase.DONE;
    return true;
  }

  private checkTaken(): boolean {
    const m = this.memory;
    if (seqAfter(m.checkSeqHead(m.get(H.SEQ_HEAD)), this.seq)) return this.finish();
    // setCapacity made the channel buffered: a message in the ring is admitted.
    if (m.checkedCapacity() !== 0) return this.finish();
    // Not the sender's closed check: its own handle may have been closed while it waited.
    const closed = m.closedBits();
    m.checkClosed(closed, "recv");
    if (closed & CLOSED_NO_RECEIVERS) {
      this.unregister();
      throw new ChannelClosedError(`send on ${m.describe()}: every receive handle was closed before a receiver took the message`);
    }
    return this.register();
  }

  private finish(): true {
    this.unregister();
    this.phase = SendPhase.DONE;
    return true;
  }

  /**
   * Under both locks: the deadline passed or the signal aborted. Completes if
   * it can (`finalAttempt`), otherwise takes the message back out of the
   * ring so that nobody ever receives it.
   */
  withdraw(finalAttempt: boolean): Withdrawal {
    if (finalAttempt) {
      try {
        if (this.attempt()) return "done";
      } catch (err) {
        if (!(err instanceof ChannelClosedError)) throw err;
      }
    }
    const m = this.memory;
    if (this.isRegistered) {
      this.unregister();
      this.passOnIfRoom();
    }
    if (this.phase === SendPhase.STREAM) {
      this.tombstone();
      m.set(H.STREAM_SENDER, 0);
      // Its taker, if it has one, drops what it has (a receiver still taking an older message goes on).
      if (m.get(H.STREAM_RECEIVER) !== 0 && m.streamTakerIsOn(this.seq)) m.set(H.STREAM_RECEIVER, 0);
      m.add(H.WITHDRAWN, 1);
      this.wake |= WAKE_RECEIVERS | WAKE_SENDERS;
    } else if (this.phase === SendPhase.AWAIT_TAKE) {
      if (seqAfter(m.checkSeqHead(m.get(H.SEQ_HEAD)), this.seq)) return "done";
      this.tombstone();
      m.add(H.WITHDRAWN, 1);
      m.sent -= 1;
      this.wake |= WAKE_RECEIVERS | WAKE_SENDERS;
    }
    this.phase = SendPhase.DONE;
    return "withdrawn";
  }

  /** Marks every record of this message still in the ring as withdrawn. */
  private tombstone(): void {
    const m = this.memory;
    m.forEachRecord((offset) => {
      if (m.recordSeq(offset) === this.seq) m.setRecordFlags(offset, m.recordFlags(offset) | R_TOMBSTONE);
    });
  }
}

/** What a completed receive took: decode it at once (transfer.ts decodeFromChannel). */
export interface Received {
  /**
   * The payload is bytes [0, length): a fresh copy of exactly that length
   * when the record is RAW (the value's own bytes, which transfer.ts hands
   * out as they are), else this thread's receive scratch, valid until the
   * next receive.
   */
  bytes: Uint8Array;
  length: number;
  flags: number;
}

/** Payloads up to this size are copied word by word (no view of either buffer to allocate). */
const WORD_COPY_MAX_BYTES = 128;
let scratch = new Uint8Array(4096);
let scratchWords = new Int32Array(scratch.buffer);

/**
 * Copies the payload of the record at `at` into the thread's receive
 * scratch (grown as needed), under the lock that keeps it there. Small
 * payloads go word by word: a payload starts 4-aligned and its record is
 * padded to a multiple of 8, so the last word read stays inside the record.
 */
function copyToScratch(m: ChannelMemory, at: number, length: number): Uint8Array {
  if (length + 3 > scratch.length) {
    scratch = new Uint8Array(Math.max(align8(length + 3), scratch.length * 2)); // a whole number of words
    scratchWords = new Int32Array(scratch.buffer);
  }
  const start = at + RECORD_HEADER_BYTES;
  if (length <= WORD_COPY_MAX_BYTES) {
    const words = m.dataWords;
    const first = start >>> 2;
    for (let i = 0, n = (length + 3) >>> 2; i < n; i++) scratchWords[i] = words[first + i]!;
  } else {
    scratch.set(m.data.subarray(start, start + length));
  }
  return scratch;
}

/**
 * One receive. Takes the oldest message: a single record at once, or a
 * streamed message piece by piece (claiming STREAM_RECEIVER so that no
 * other receiver takes a piece of it). Withdrawn records are skipped.
 */
export class RecvOp extends Operation {
  received: Received | undefined;
  /** What `received` points to once a message is taken: one object per operation, filled in place. */
  private readonly taken: Received = { bytes: NOTHING_RECEIVED, length: 0, flags: 0 };
  private assembly: Uint8Array | undefined;
  /** Payload bytes of the streamed message taken so far (its checksum included). */
  private assembled = 0;
  private streamSeq = 0;
  /** With the checksum option: the CRC-32 of what the assembly holds so far, and the stored one, read as its bytes arrive. */
  private streamCrc = 0;
  private storedCrc = 0;
  /**
   * The fast attempt declined the message at the head because its checksum
   * failed (it leaves it there; the full attempt takes it and throws): a
   * batch (recvMany) returns what it took before it, and the next receive
   * reports it.
   */
  corruptAhead = false;

  constructor(
    memory: ChannelMemory,
    private readonly checkHandle: () => void,
  ) {
    super(memory, "recv");
  }

  /** Makes this finished receive a fresh one (see SendOp.reuse); undefined if it cannot be reused. */
  reuse(): this | undefined {
    if (this.isRegistered) return undefined;
    this.received = undefined;
    this.assembly = undefined;
    this.assembled = 0;
    this.streamSeq = 0;
    this.corruptAhead = false;
    this.wake = 0;
    this.probing = false;
    return this;
  }

  /** True while part of a streamed message has been taken: the receive then runs to its end. */
  get midStream(): boolean {
    return this.assembly !== undefined;
  }

  fastLock(): number {
    return this.isRegistered || this.midStream ? 0 : Locks.RECV;
  }

  /**
   * Under the recv lock only: takes the oldest message if it is one plain
   * record (no stream, no withdrawn record, no channel ends inside). BLOCKED
   * when the ring is empty and the channel open (what a probing `attempt`
   * finds); SLOW for anything else.
   */
  attemptFast(): Fast {
    const m = this.memory;
    this.checkHandle();
    if (m.get(H.STREAM_RECEIVER) !== 0) return Fast.SLOW;
    const at = m.headRecord();
    // Empty: closed (or a corrupt closed word, or no sender counted) is the full attempt's to check.
    if (at < 0) return m.get(H.CLOSED) !== 0 || m.get(H.SEND_HANDLES) <= 0 ? Fast.SLOW : Fast.BLOCKED;
    const flags = m.recordFlags(at);
    if ((flags & ~(R_RAW_BYTES | R_RAW_BUFFER | R_CHECKSUM)) !== (R_FIRST | R_LAST)) return Fast.SLOW;
    return this.takeWhole(at, flags, true) ? Fast.DONE : Fast.SLOW;
  }

  /** Under both locks. True when a message was taken (see `received`); false when it waits. */
  attempt(): boolean {
    const m = this.memory;
    if (!this.midStream) this.checkHandle();
    for (;;) {
      if (this.midStream && m.get(H.STREAM_RECEIVER) !== mySlot + 1) this.dropAssembly(); // its sender withdrew it
      const at = m.headRecord();
      if (at < 0) return this.whenEmpty();
      const flags = m.recordFlags(at);
      if (flags & R_TOMBSTONE) {
        m.popRecord(at);
        this.wake |= WAKE_SENDERS;
        continue;
      }
      if (flags & R_FIRST) {
        if (this.midStream) throw m.corrupt("a new message starts inside a streamed one");
        // A receiver taking a stream holds STREAM_RECEIVER from the stream's
        // first piece (which it took at once) to its last, and no message is
        // admitted behind a stream before its last piece: so a first piece at
        // the head while another party holds it is a corrupt header.
        const claimedBy = m.streamReceiver();
        if (claimedBy !== 0 && claimedBy !== mySlot + 1) throw m.corrupt(`stream receiver ${claimedBy}, while a new message (seq ${m.recordSeq(at)}) is at the head`);
        if (flags & R_LAST) {
          this.takeWhole(at, flags, false);
          this.passOnIfBuffered();
          return true;
        }
        this.claimStream(at);
        continue;
      }
      if (!this.midStream || m.recordSeq(at) !== this.streamSeq) {
        if (m.get(H.STREAM_RECEIVER) !== 0) return this.register(); // another receiver's piece
        // A piece of a message whose taker died: nobody can take the rest of it.
        if (flags & R_LAST) this.completeMessage(m.recordSeq(at), false);
        m.popRecord(at);
        this.wake |= WAKE_SENDERS;
        continue;
      }
      if (this.takePiece(at, flags)) return this.finish();
    }
  }

  override abandon(): void {
    const wasRegistered = this.isRegistered;
    super.abandon();
    if (wasRegistered) this.passOnIfBuffered();
  }

  /**
   * Under both locks, after this receive took a message or gave up: if
   * messages are still buffered, the wake-up this receiver may have had for
   * one of them is passed on (see WAKE_FOR_MESSAGE).
   */
  private passOnIfBuffered(): void {
    if (this.memory.buffered() > 0) this.wake |= WAKE_FOR_MESSAGE;
  }

  private whenEmpty(): boolean {
    const m = this.memory;
    // Mid-stream, this receiver's own handle may have been closed since it began.
    const closed = this.midStream ? m.closedBits() : m.closedForReceiver();
    if (!this.midStream && closed & CLOSED_NO_SENDERS && m.streamSender() === 0) {
      this.unregister();
      throw new ChannelClosedError(`recv on ${m.describe()}: every send handle is closed and the channel is drained`);
    }
    return this.register();
  }

  /**
   * Takes the one-record message at `at`. With the checksum option, a
   * message whose CRC-32 fails is taken all the same (counted, its bytes
   * freed: the channel goes on) and CorruptDataError is thrown after, with
   * the section's changes complete; the ends its attachment table lists
   * are not claimed (the table cannot be trusted), so they stay counted as
   * in transit. With `mayDecline` (the fast path) such a message is left
   * where it is instead, and false returned: nothing changed.
   */
  private takeWhole(at: number, flags: number, mayDecline: boolean): boolean {
    const m = this.memory;
    const start = at + RECORD_HEADER_BYTES;
    let failure: string | undefined;
    if (m.checksumFlag === 0 && (flags & R_CHECKSUM) === 0) {
      const length = m.recordLength(at);
      // A top-level Uint8Array or ArrayBuffer: its bytes are copied once, straight into the value.
      const raw = flags & (R_RAW_BYTES | R_RAW_BUFFER);
      this.setReceived(raw ? m.data.slice(start, start + length) : copyToScratch(m, at, length), length, flags);
    } else {
      failure = this.copyChecked(at, flags);
      if (failure !== undefined && mayDecline) {
        this.received = undefined;
        this.corruptAhead = true;
        return false;
      }
    }
    testHook?.("recv:copied");
    if (flags & R_ATTACH && failure === undefined) recordCarriedEnds(m.id, m.recordSeq(at), this.received!.bytes.subarray(0, this.received!.length));
    this.completeMessage(m.recordSeq(at));
    m.popRecord(at);
    testHook?.("recv:freed");
    this.finish();
    if (failure !== undefined) {
      this.received = undefined;
      throw new CorruptDataError(failure);
    }
    return true;
  }

  /**
   * Copies the one-record message at `at` out of a checksummed channel and
   * checks its CRC-32 on the copy (see the record format in ring.ts): the
   * stored CRC is read once, the bytes hashed are the ones the receiver
   * keeps. Returns why it fails, or undefined; `received` holds the copy
   * without the CRC either way.
   */
  private copyChecked(at: number, flags: number): string | undefined {
    const m = this.memory;
    const start = at + RECORD_HEADER_BYTES;
    const recordLength = m.recordLength(at);
    const length = recordLength - CHECKSUM_BYTES;
    if ((flags & R_CHECKSUM) !== m.checksumFlag || length < 0) {
      this.setReceived(NOTHING_RECEIVED, 0, flags);
      return this.checksumFailure(m.recordSeq(at), (flags & R_CHECKSUM) !== m.checksumFlag ? `its record ${m.checksumFlag ? "lacks" : "carries"} the checksum flag` : "it is too short to hold one");
    }
    let bytes: Uint8Array;
    let stored: number;
    if (flags & (R_RAW_BYTES | R_RAW_BUFFER)) {
      bytes = m.data.slice(start, start + length);
      stored = readChecksum(m.data, start + length);
    } else {
      bytes = copyToScratch(m, at, recordLength);
      stored = readChecksum(bytes, length);
    }
    this.setReceived(bytes, length, flags);
    const computed = crc32Word(flags & MESSAGE_FLAGS, crc32(bytes, 0, length));
    return computed === stored ? undefined : this.checksumFailure(m.recordSeq(at), `CRC-32 0x${hex8(computed)} where its sender wrote 0x${hex8(stored)}`);
  }

  private checksumFailure(seq: number, why: string): string {
    return `recv on ${this.memory.describe()}: message ${seq} fails its checksum (${why}): its bytes were changed in shared memory after it was sent. It was taken and dropped; the channel goes on with the next message`;
  }

  /** Drops what was received once it is decoded (a reused operation would keep it alive until the next receive). */
  forgetReceived(): void {
    this.received = undefined;
    this.taken.bytes = NOTHING_RECEIVED;
  }

  private setReceived(bytes: Uint8Array, length: number, flags: number): void {
    const taken = this.taken;
    taken.bytes = bytes;
    taken.length = length;
    taken.flags = flags;
    this.received = taken;
  }

  private claimStream(at: number): void {
    const m = this.memory;
    const total = m.recordTotal(at);
    if (total < m.trailerBytes) throw m.corrupt(`streamed message of ${total} bytes is too short for its checksum`);
    m.set(H.STREAM_RECEIVER, mySlot + 1);
    // The message's bytes only: a checksum at the end is read aside (the
    // assembly becomes the value itself for a raw message).
    this.assembly = new Uint8Array(total - m.trailerBytes);
    this.assembled = 0;
    this.streamCrc = 0;
    this.storedCrc = 0;
    this.streamSeq = m.recordSeq(at);
    this.takePiece(at, m.recordFlags(at));
  }

  /**
   * Copies one piece into the assembly; true when it was the last. With the
   * checksum option, the CRC-32 is computed piece by piece on the copy
   * (while it is in the cache) and checked at the last piece: a failure
   * ends the stream as a success would (the message is taken) and then
   * throws CorruptDataError, as takeWhole does.
   */
  private takePiece(at: number, flags: number): boolean {
    const m = this.memory;
    const piece = m.payload(at);
    const assembly = this.assembly!;
    const total = assembly.length + m.trailerBytes;
    if (this.assembled + piece.length > total) throw m.corrupt(`streamed message overflows its total ${total}`);
    if (m.trailerBytes === 0) {
      assembly.set(piece, this.assembled);
    } else {
      // A piece may end inside the checksum, so the next one may hold only the rest of it.
      const bytes = Math.max(0, Math.min(piece.length, assembly.length - this.assembled));
      if (bytes > 0) {
        assembly.set(bytes === piece.length ? piece : piece.subarray(0, bytes), this.assembled);
        this.streamCrc = crc32(assembly, this.assembled, this.assembled + bytes, this.streamCrc);
      }
      for (let i = bytes; i < piece.length; i++) this.storedCrc |= piece[i]! << (8 * (this.assembled + i - assembly.length));
    }
    this.assembled += piece.length;
    m.popRecord(at);
    this.wake |= WAKE_SENDERS;
    if (!(flags & R_LAST)) return false;
    if (this.assembled !== total) throw m.corrupt(`streamed message ended at ${this.assembled} of ${total} bytes`);
    const failure = m.trailerBytes === 0 && (flags & R_CHECKSUM) === 0 ? undefined : this.streamChecksumFailure(flags);
    if (failure === undefined) {
      this.setReceived(assembly, assembly.length, flags);
      if (flags & R_ATTACH) recordCarriedEnds(m.id, this.streamSeq, assembly);
    }
    this.assembly = undefined;
    m.set(H.STREAM_RECEIVER, 0);
    this.wake |= WAKE_RECEIVERS; // receivers parked behind this stream may go on now
    this.completeMessage(this.streamSeq);
    if (failure !== undefined) {
      this.finish();
      throw new CorruptDataError(failure);
    }
    return true;
  }

  /** At a streamed message's last piece (flags): why its checksum fails, or undefined. */
  private streamChecksumFailure(flags: number): string | undefined {
    const m = this.memory;
    if ((flags & R_CHECKSUM) !== m.checksumFlag) return this.checksumFailure(this.streamSeq, `its last record ${m.checksumFlag ? "lacks" : "carries"} the checksum flag`);
    const computed = crc32Word(flags & MESSAGE_FLAGS, this.streamCrc);
    const stored = this.storedCrc >>> 0;
    return computed === stored ? undefined : this.checksumFailure(this.streamSeq, `CRC-32 0x${hex8(computed)} where its sender wrote 0x${hex8(stored)}`);
  }

  private completeMessage(seq: number, delivered = true): void {
    const m = this.memory;
    m.add(H.REMOVED, 1);
    m.set(H.SEQ_HEAD, (seq + 1) | 0); // what a rendezvous sender spins on (published by the READ store that follows)
    if (delivered) m.received += 1;
    // A slot is free: in a bounded channel, one sender per free slot is woken.
    this.wake |= m.capacity > 0 ? WAKE_FOR_ROOM : WAKE_SENDERS;
  }

  private dropAssembly(): void {
    this.assembly = undefined;
    this.assembled = 0;
  }

  private finish(): true {
    this.unregister();
    return true;
  }

  /**
   * Under both locks: the deadline passed or the signal aborted. A receive
   * that already holds part of a streamed message is "busy": it completes.
   * `finalAttempt` (timeouts) takes a message that is there right now.
   */
  withdraw(finalAttempt: boolean): Withdrawal {
    if (this.midStream) return this.attempt() ? "done" : "busy";
    if (finalAttempt) {
      try {
        if (this.attempt()) return "done";
      } catch (err) {
        if (!(err instanceof ChannelClosedError)) throw err;
        this.unregister();
        throw err; // closed takes precedence over timed out
      }
      if (this.midStream) return "busy";
    }
    this.unregister();
    this.passOnIfBuffered();
    return "withdrawn";
  }
}

/** The CRC-32 stored little-endian at `at` of `bytes`, each byte read once. */
function readChecksum(bytes: Uint8Array, at: number): number {
  return (bytes[at]! | (bytes[at + 1]! << 8) | (bytes[at + 2]! << 16) | (bytes[at + 3]! << 24)) >>> 0;
}

function hex8(n: number): string {
  return n.toString(16).padStart(8, "0");
}

/** In the critical section that takes a message: records the ends it carries (control.ts, claims). */
function recordCarriedEnds(carrierId: number, seq: number, payload: Uint8Array): void {
  writeClaims(carrierId, seq, carriedEnds(payload));
}

/** Channel ends carried inside records that a release discarded (their transit counts must be released). */
export type DiscardedRecords = Uint8Array[];

/**
 * Under both locks: `count` handles of `side` held by `holder` (a party slot,
 * or TRANSIT) are released. When it was the last handle of its side, the
 * channel closes on that side: with no receivers left, the buffer is
 * discarded (its payloads with attachments are returned so the caller can
 * release the ends they carry); either way every waiter is woken.
 */
export function releaseHandles(memory: ChannelMemory, side: Side, holder: number, count: number): { wake: number; discarded: DiscardedRecords } {
  const discarded: DiscardedRecords = [];
  if (count === 0) return { wake: 0, discarded };
  memory.addHolders(side, holder, -count);
  const left = memory.get(side === "send" ? H.SEND_HANDLES : H.RECV_HANDLES);
  if (left < 0) throw new CorruptDataError(`${memory.describe()}: ${side} handle count went negative`);
  memory.checkHandleCount(side); // the total is the sum of the holders: a wrong one would never reach 0, or reach it early
  if (left > 0) return { wake: 0, discarded };
  if (side === "send") {
    memory.set(H.CLOSED, memory.get(H.CLOSED) | CLOSED_NO_SENDERS);
  } else {
    memory.set(H.CLOSED, memory.get(H.CLOSED) | CLOSED_NO_RECEIVERS);
    memory.forEachRecord((offset) => {
      const flags = memory.recordFlags(offset);
      if (flags & R_ATTACH && !(flags & R_TOMBSTONE) && flags & R_FIRST) discarded.push(memory.payload(offset).slice());
    });
    memory.clearRing();
  }
  return { wake: WAKE_SENDERS | WAKE_RECEIVERS, discarded };
}

/**
 * Under both locks: party `slot` is gone (exited, crashed, terminated).
 * Releases every handle it held, forgets its parked operations, and
 * abandons a message it was streaming in or out (never delivered in part).
 * Returns what to wake and the discarded payloads (see releaseHandles).
 */
export function releaseParty(memory: ChannelMemory, slot: number): { wake: number; discarded: DiscardedRecords } {
  let wake = 0;
  const discarded: DiscardedRecords = [];
  // It died spinning for a message: a sender may have left a wake-up to it.
  if (memory.setProbing(slot, false)) wake |= WAKE_RECEIVERS;
  for (const side of ["send", "recv"] as const) {
    const waits = memory.waits(side, slot);
    if (waits > 0) {
      memory.addWaits(side, slot, -waits);
      // It may have died holding a wake-up it was given for a message or a free slot.
      wake |= side === "recv" ? WAKE_RECEIVERS : WAKE_SENDERS;
    }
    const held = memory.holders(side, slot);
    if (held > 0) {
      // It may have changed the channel and died before waking anyone: wake both sides (a spurious wake is harmless).
      wake |= WAKE_SENDERS | WAKE_RECEIVERS;
      const released = releaseHandles(memory, side, slot, held);
      wake |= released.wake;
      discarded.push(...released.discarded);
    }
  }
  if (memory.get(H.STREAM_SENDER) === slot + 1) {
    // Half-written: withdraw every piece of it, so nobody receives part of it.
    const seq = memory.get(H.STREAM_SEQ);
    memory.forEachRecord((offset) => {
      if (memory.recordSeq(offset) === seq) memory.setRecordFlags(offset, memory.recordFlags(offset) | R_TOMBSTONE);
    });
    memory.set(H.STREAM_SENDER, 0);
    // Its taker drops what it has; a receiver still taking an older message (whose sender finished) goes on.
    if (memory.get(H.STREAM_RECEIVER) !== 0 && memory.streamTakerIsOn(seq)) memory.set(H.STREAM_RECEIVER, 0);
    memory.add(H.WITHDRAWN, 1);
    wake |= WAKE_SENDERS | WAKE_RECEIVERS;
  }
  if (memory.get(H.STREAM_RECEIVER) === slot + 1) {
    // Its taker died mid-message: the rest of that message is dropped as it arrives.
    memory.set(H.STREAM_RECEIVER, 0);
    wake |= WAKE_SENDERS | WAKE_RECEIVERS;
  }
  return { wake, discarded };
}
