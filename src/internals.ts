/**
 * The core's internals that layers built on it need, re-exported from one
 * place (re-exports only). Not part of the public API.
 *
 * inspect (src/inspect/): reads the control block's party table and every
 * channel's header without taking a lock, and asks the supervisor for the
 * channels only it knows. The lab (src/lab/): samples a channel's length
 * and ring size without taking its locks, so sampling does not slow the
 * channel it measures.
 */
export {
  control,
  isSupervisor,
  MAX_PARTIES,
  MAX_PUBLISHED_CASES,
  mySlot,
  P_ASYNC_SINCE,
  P_ASYNC_WAITS,
  P_PARK,
  P_WAIT_CHANNEL,
  P_WAIT_FLAGS,
  P_WAIT_OP,
  P_WAIT_SINCE,
  PartyState,
  selectWord,
  slotId,
  slotName,
  slotRunning,
  slotState,
  slotWord,
  SUPERVISOR_SLOT,
} from "./control.js";
export { CLOSED_NO_RECEIVERS, CLOSED_NO_SENDERS, ChannelMemory, H, HEADER_BYTES, OVERFLOW_NAMES, TRANSIT } from "./ring.js";
export { WAIT_HAS_TIMEOUT, WAIT_SYNC, WaitOp } from "./waiting.js";
export { deadlockMode, detectionMillis } from "./deadlock.js";
export { answerSnapshot, ensureSupervisor, snapshotFromSupervisor } from "./supervisor-link.js";
export { endOf } from "./transfer.js";
export { lockStateOf } from "./sync.js";
