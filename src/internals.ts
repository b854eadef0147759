/**
 * The core's internals that layers built on it need, re-exported from one
 * place (re-exports only). Not part of the public API.
 *
 * inspect (src/inspect/): reads the control block's party table and every
 * channel's header without taking a lock, and asks the supervisor for the
 * channels only it knows. The lab (src/lab/): samples a channel's length
 * and ring size without taking its locks, so sampling does not slow the
 * channel it measures.
 *
 * The pool (src/pool/): its threads are started by tinypool, not by
 * create(), so it gives each one a party slot and a supervisor link itself
 * (attachParty, bootDataFor, waitForRelease), moves task arguments and
 * results with the channel codec so that the ends they carry are accounted
 * for exactly (encodeForChannel, decodeFromChannel, End, channelFromBuffer,
 * handleFor), and resolves, loads and runs modules and reports their
 * errors exactly as Interpreter.call does (resolveModule, importModule,
 * callExport, errorRecordOf, executionFailedFrom; bootEntriesFor for the
 * TypeScript loader).
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

// The pool's.
export { addRunning, bootDataFor, nextInterpreterId, nextObjectId, setSlotState, WORKER_DATA_KEY } from "./control.js";
export { attachParty, waitForRelease } from "./interpreter.js";
export { resolveModule } from "./module-specifier.js";
export type { ModuleBase } from "./module-specifier.js";
export { callExport, endsIn, errorRecordOf, importModule } from "./module-loading.js";
export { postToSupervisor } from "./supervisor-link.js";
export { bootEntriesFor, execArgvForWorkers } from "./spawn.js";
export { decodeFromChannel, decodeFromPost, encodeForChannel, encodeForPost, handleFor } from "./transfer.js";
export type { PostedValue } from "./transfer.js";
export { End } from "./handle.js";
export { R_ATTACH } from "./ring.js";
export { channelFromBuffer } from "./registry.js";
export { errorToRecord, executionFailedFrom } from "./errors.js";
export type { ErrorRecord } from "./errors.js";
// remote/wire.ts: messages cross machines in the core's own codec, so that a
// message's size on the wire is the size the local channel already checked
// against maxMessageBytes, and small values encode several times faster than
// with v8.serialize. Without an attacher the codec refuses SharedArrayBuffers.
export { Encoder, decode } from "./serialization.js";
