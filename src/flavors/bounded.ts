/**
 * Capacity n: a bounded buffer. A send is admitted while fewer than n
 * messages are buffered (a message streamed through the ring counts as one
 * until its last piece is taken); otherwise the sender waits for a receiver
 * to take one. This is where backpressure comes from.
 */
import type { Flavor } from "./index.js";

export const bounded: Flavor = {
  name: "bounded",
  admits: (memory) => memory.lengthBelow(memory.capacity),
  tryAdmits: (memory) => memory.lengthBelow(memory.capacity),
  awaitsTake: false,
};
