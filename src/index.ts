/**
 * interpreters: isolated interpreters (worker threads, one V8 isolate
 * each) that share nothing but channels, in the spirit of Python's
 * PEP 554 / PEP 734. Everything public is exported from here, in the main
 * thread and inside interpreters alike.
 */
import { isCloneable } from "./serialization.js";
import { isAttachable } from "./transfer.js";

export { create, current, list, main, Interpreter } from "./interpreter.js";
export type { CreateOptions, InterpreterEvents, Shareable } from "./interpreter.js";
export { createChannel, RecvChannel, SendChannel } from "./channel.js";
export { configureDeadlockDetection } from "./deadlock.js";
export { Event, Lock, Semaphore } from "./sync.js";
export type { SyncWaitOptions } from "./sync.js";
export { select, selectSync } from "./select.js";
export { TaskGroup } from "./task-group.js";
export type { GroupError } from "./task-group.js";
export type { SelectCase, SelectResult } from "./select.js";
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
export { connectChannel } from "./remote/connect-channel.js";
export type { ConnectChannelOptions } from "./remote/connect-channel.js";
export { remoteChannelStats, removeChannel } from "./remote/connect-channel.js";
export type { RemoteChannelStats } from "./remote/bridge.js";
