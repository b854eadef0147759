/**
 * Capacity models. One channel API, three admission rules, one file each
 * (as crossbeam-channel keeps one file per flavor):
 *
 * | capacity | file           | `send` waits until                  | `trySend` succeeds when            |
 * |----------|----------------|-------------------------------------|------------------------------------|
 * | 0        | rendezvous.ts  | a receiver has taken this message   | a receiver is already waiting      |
 * | n        | bounded.ts     | fewer than n messages are buffered  | fewer than n are buffered          |
 * | Infinity | unbounded.ts   | never (but for the byte budget)     | the byte budget has room           |
 *
 * Byte room in the ring (and its growth up to maxBufferBytes) is checked by
 * the channel operations for every flavor; a flavor only counts messages.
 */
import type { ChannelMemory } from "../ring.js";
import { bounded } from "./bounded.js";
import { rendezvous } from "./rendezvous.js";
import { unbounded } from "./unbounded.js";

export interface Flavor {
  readonly name: "rendezvous" | "bounded" | "unbounded";
  /**
   * A blocking send may put a new message into the ring now (count-wise).
   * Called under the send lock (a stale count of taken messages only makes
   * it more cautious).
   */
  admits(memory: ChannelMemory): boolean;
  /**
   * trySend (and a select send case) may put a new message into the ring
   * now. `ownReceivers`: receive operations of the same select on this
   * channel, which must not count as partners (no self-pairing). Under both locks.
   */
  tryAdmits(memory: ChannelMemory, ownReceivers: number): boolean;
  /** A blocking send completes only once a receiver has taken its message. */
  readonly awaitsTake: boolean;
}

/** The flavor for a channel of `capacity` (-1 = Infinity, as stored in shared memory). */
export function flavorFor(capacity: number): Flavor {
  if (capacity === 0) return rendezvous;
  if (capacity < 0) return unbounded;
  return bounded;
}
