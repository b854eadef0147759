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
import { ChannelClosedError } from "./errors.js";
import { locked, releaseHandles, wakeWaiters } from "./channel-ops.js";
import { type ChannelMemory, type Side, TRANSIT } from "./ring.js";
import { releaseCarriedEnds } from "./transfer.js";
import { kickPump } from "./waiting.js";

export type EndState = "open" | "moving" | "moved" | "closed";

/** One handle (one end of one channel) in this thread. */
export class End {
  state: EndState = "open";
  /** Where a moved handle went, for the error a later use raises. */
  movedTo = "";

  constructor(
    readonly memory: ChannelMemory,
    readonly side: Side,
  ) {}

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
    const memory = this.memory;
    const { wake, discarded } = locked(memory, () => releaseHandles(memory, this.side, mySlot, 1));
    wakeWaiters(memory, wake);
    kickPump(); // this thread's own pending operations on this handle must see it closed
    releaseCarriedEnds(discarded);
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
