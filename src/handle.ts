/**
 * Channel handles as held by one thread: their state (open, closed, moved
 * away) and their accounting in the channel's holder table (ring.ts).
 *
 * Every open handle is counted exactly once in shared memory, under the
 * party that holds it or under TRANSIT while it travels inside a message.
 * The counts change only under both channel locks, so the per-side totals
 * (SEND_HANDLES, RECV_HANDLES) are always the sums of the table, and the
 * supervisor can release exactly what a dead party held.
 */
import { mySlot } from "./control.js";
import { ChannelClosedError, CorruptDataError } from "./errors.js";
import { locked, releaseHandles, wakeWaiters } from "./channel-ops.js";
import { type ChannelMemory, type Side, TRANSIT } from "./ring.js";
import { releaseCarriedEnds } from "./transfer.js";
import { forgetIfDead, liveChannelIfCached } from "./registry.js";
import { kickPump } from "./waiting.js";

export type EndState = "open" | "moving" | "moved" | "closed";

/**
 * Closes a handle that was garbage-collected while open (PEP 554's release
 * on GC): one handle of `side` held by this thread is released on channel
 * `id`. Nobody can catch what a finalizer throws, so a channel whose memory
 * is corrupt is reported as a warning instead of ending the process.
 *
 * What is registered is not the handle but a token object that only its
 * End refers to, and the held value is two numbers. V8's young-generation
 * collections treat a registered target (and its held value) as alive
 * until a full collection, even after `unregister`: registering the handle
 * itself, or holding its End, kept every channel made and closed between
 * two full collections alive, memory and all (measured: 2 GB of channel
 * buffers in a loop of 100,000). A token is a few bytes.
 */
interface Forgotten {
  id: number;
  side: Side;
}
const closeForgotten = new FinalizationRegistry<Forgotten>(({ id, side }) => {
  const memory = liveChannelIfCached(id);
  if (!memory) return; // cannot be: an open handle keeps its channel alive and cached here
  try {
    const { wake, discarded } = locked(memory, () => releaseHandles(memory, side, mySlot, 1));
    wakeWaiters(memory, wake);
    releaseCarriedEnds(discarded);
    forgetIfDead(memory);
  } catch (err) {
    if (!(err instanceof CorruptDataError)) throw err;
    process.emitWarning(`interpreters: a garbage-collected handle of ${memory.describe()} could not be closed: ${err.message}`);
  }
});

/** One handle (one end of one channel) in this thread. */
export class End {
  state: EndState = "open";
  /** Where a moved handle went, for the error a later use raises. */
  movedTo = "";

  constructor(
    readonly memory: ChannelMemory,
    readonly side: Side,
  ) {}

  /** Registered with closeForgotten while open; dies with this End (so with its handle). */
  private gcToken: object | undefined;

  /** Releases this End's handle count if its handle (the only holder of this End) is collected while open. */
  watch(): void {
    this.gcToken = {};
    closeForgotten.register(this.gcToken, { id: this.memory.id, side: this.side }, this.gcToken);
  }

  /** The End is no longer open here (closed or moved): nothing left for a finalizer to do. */
  private unwatch(): void {
    if (this.gcToken === undefined) return;
    closeForgotten.unregister(this.gcToken);
    this.gcToken = undefined;
  }

  /** A new handle held by this thread (createChannel, clone). */
  static acquire(memory: ChannelMemory, side: Side): End {
    locked(memory, () => memory.addHolders(side, mySlot, 1));
    return new End(memory, side);
  }

  /** Throws ChannelClosedError unless this handle can be used for `operation`. */
  ensureOpen(operation: string): void {
    if (this.state === "open") return;
    const where = `${operation} on ${this.memory.describe()}`;
    if (this.state === "closed") throw new ChannelClosedError(`${where}: this ${this.side} handle is closed`);
    if (this.state === "moving") throw new ChannelClosedError(`${where}: this ${this.side} handle is being sent in a message; clone() it first to keep one`);
    throw new ChannelClosedError(`${where}: this ${this.side} handle was moved ${this.movedTo}; clone() it before passing it to keep one here`);
  }

  /**
   * Closes this handle (idempotent; a moved handle stays moved). When it was
   * the last of its side, the channel closes on that side and every waiter
   * is woken, this thread's own pending operations included.
   */
  close(): void {
    if (this.state !== "open") return;
    this.state = "closed";
    this.unwatch();
    const memory = this.memory;
    const { wake, discarded } = locked(memory, () => releaseHandles(memory, this.side, mySlot, 1));
    wakeWaiters(memory, wake);
    kickPump(); // this thread's own pending operations on this handle must see it closed
    releaseCarriedEnds(discarded);
    forgetIfDead(memory);
  }

  /** Starts moving this handle into a message: this thread's count goes to TRANSIT. */
  beginMove(): void {
    this.ensureOpen("send");
    const memory = this.memory;
    locked(memory, () => {
      memory.addHolders(this.side, mySlot, -1);
      memory.addHolders(this.side, TRANSIT, 1);
    });
    this.state = "moving";
  }

  /** The message carrying this handle was accepted: the handle is gone from here. */
  commitMove(destination: string): void {
    this.unwatch();
    this.state = "moved";
    this.movedTo = destination;
  }

  /** The message carrying this handle was refused or withdrawn: the handle is back here. */
  undoMove(): void {
    const memory = this.memory;
    locked(memory, () => {
      memory.addHolders(this.side, TRANSIT, -1);
      memory.addHolders(this.side, mySlot, 1);
    });
    this.state = "open";
  }

  /** Moves this handle straight to party `slot` (passed by postMessage to a known interpreter). */
  moveToParty(slot: number, destination: string): void {
    this.ensureOpen("pass");
    const memory = this.memory;
    locked(memory, () => {
      memory.addHolders(this.side, mySlot, -1);
      memory.addHolders(this.side, slot, 1);
    });
    this.commitMove(destination);
  }

  /** Takes over a handle that arrived in a message (it was counted under TRANSIT). */
  static claimFromTransit(memory: ChannelMemory, side: Side): End {
    locked(memory, () => {
      memory.addHolders(side, TRANSIT, -1);
      memory.addHolders(side, mySlot, 1);
    });
    return new End(memory, side);
  }
}
