/**
 * The core's public API: interpreters, channels, select, sync primitives,
 * TaskGroup, the errors. src/index.ts re-exports all of it beside the
 * layers built on it; a layer (src/pool/, src/pipeline/, src/offload/,
 * src/inspect/, src/lab/, src/remote/) imports the core from here, as a
 * user would, and what it needs beyond that from src/internals.ts. (From
 * index.ts it could not: index.ts imports every layer.)
 */
import { isCloneable } from "./serialization.js";
import { isAttachable } from "./transfer.js";

export { create, current, list, main, Interpreter } from "./interpreter.js";
export type { CreateOptions, ExecOptions, InterpreterEvents, ReleaseBound, Shareable } from "./interpreter.js";
export type { Remote, RemoteMember } from "./wrap-types.js";
export { createChannel, RecvChannel, SendChannel } from "./channel.js";
export { configureDeadlockDetection } from "./deadlock.js";
export { Event, Lock, Semaphore } from "./sync.js";
export type { SyncWaitOptions } from "./sync.js";
export { select, selectSync } from "./select.js";
export { TaskGroup } from "./task-group.js";
export type { GroupError } from "./task-group.js";
export type { SelectCase, SelectResult, SelectResultOf } from "./select.js";
export type { DeadlockMode } from "./deadlock.js";
export type { ChannelOptions, ChannelStats, TryRecvResult, WaitOptions } from "./channel.js";
export {
  ChannelClosedError,
  ChannelFullError,
  CorruptDataError,
  DeadlockError,
  ExecutionFailed,
  InterpreterClosedError,
  InterpretersError,
  MessageTooLargeError,
  NotShareableError,
  StageFailed,
  TimeoutError,
} from "./errors.js";
export type { DeadlockParty, RemoteErrorInfo, StageItem } from "./errors.js";

/**
 * True when `value` can be sent over a channel or passed to an interpreter:
 * anything the structured clone algorithm accepts, SharedArrayBuffers
 * and sync primitives (Lock, Semaphore, Event: shared), and open channel
 * ends (moved). Never throws.
 */
export function isShareable(value: unknown): boolean {
  return isCloneable(value, isAttachable);
}
