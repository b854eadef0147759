/**
 * Capacity 0: CSP rendezvous. A blocking send puts its message in the ring
 * at once (so that a receiver, or a tryRecv, can take it) and then waits
 * until a receiver has taken it (SEQ_HEAD passes the message's seq); a send
 * that times out or is aborted before then withdraws it (tombstone). trySend
 * succeeds only when more receivers wait than messages are already offered
 * to them, so it never leaves a message behind that nobody was waiting for.
 */
import type { Flavor } from "./index.js";
import { H } from "../ring.js";

export const rendezvous: Flavor = {
  name: "rendezvous",
  admits: () => true,
  tryAdmits: (memory, ownReceivers) => memory.get(H.WAITING_RECEIVERS) - ownReceivers > memory.buffered(),
  awaitsTake: true,
};
