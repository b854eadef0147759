/**
 * Capacity Infinity: a queue. Every send is admitted by count; only the byte
 * budget (maxBufferBytes, up to which the ring grows in place) can make a
 * sender wait or trySend fail. Choosing this is choosing to let memory,
 * not the producer, absorb a slow consumer.
 */
import type { Flavor } from "./index.js";

export const unbounded: Flavor = {
  name: "unbounded",
  admits: () => true,
  tryAdmits: () => true,
  awaitsTake: false,
};
