/**
 * The library's error classes. Each has a stable `code` (what programs test)
 * and a message that says what happened, on which channel or interpreter,
 * and what to do about it.
 *
 * Errors raised inside an interpreter are instances of the classes of the
 * library there; exec/call failures cross back as ExecutionFailed with the
 * remote error's name, message and stack (errorToRecord).
 */

/** Base class: every error this library throws on purpose extends it. */
export class InterpretersError extends Error {
  /** Stable machine-readable code, e.g. `"ERR_CHANNEL_CLOSED"`. */
  readonly code: string = "ERR_INTERPRETERS";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
  }
}

/**
 * The channel (or this handle of it) is closed: every send handle is gone and
 * the buffer is drained (receivers), every recv handle is gone (senders), this
 * handle was closed, or it was moved to another interpreter.
 */
export class ChannelClosedError extends InterpretersError {
  override readonly code = "ERR_CHANNEL_CLOSED";
}

/** A wait reached its `timeout` (milliseconds) before it could complete. */
export class TimeoutError extends InterpretersError {
  override readonly code = "ERR_TIMEOUT";
}

/** One party in a cycle of parties that can only be woken by one another. */
export interface DeadlockParty {
  interpreter: { id: number; name: string };
  op: "send" | "recv" | "select" | "acquire";
  channel?: { id: number; name: string };
}

/** The wait can never complete: the parties in `cycle` wait only on one another. */
export class DeadlockError extends InterpretersError {
  override readonly code = "ERR_DEADLOCK";
  readonly cycle: DeadlockParty[];
  constructor(message: string, cycle: DeadlockParty[] = []) {
    super(message);
    this.cycle = cycle;
  }
}

/** A value (or a part of it, named by `path`) cannot cross into another interpreter. */
export class NotShareableError extends InterpretersError {
  override readonly code = "ERR_NOT_SHAREABLE";
  /** Where in the value the offending part sits, e.g. `value.handlers[2]`. */
  readonly path: string;
  constructor(message: string, path = "value") {
    super(message);
    this.path = path;
  }
}

/** A message's serialized size is over the channel's `maxMessageBytes`. */
export class MessageTooLargeError extends InterpretersError {
  override readonly code = "ERR_MESSAGE_TOO_LARGE";
}

/**
 * Shared memory or a serialized message failed a consistency check: a length
 * or index out of range, an unknown tag, a truncated value. Raised instead of
 * reading out of bounds or looping; the channel named in the message should
 * be considered broken.
 */
export class CorruptDataError extends InterpretersError {
  override readonly code = "ERR_CORRUPT_DATA";
}

/** What is known of an error raised inside another interpreter. */
export interface RemoteErrorInfo {
  name: string;
  message: string;
  stack: string;
}

/**
 * Code run by `exec` or `call` (or an uncaught error in an interpreter)
 * failed. `.remote` is the original error's name, message and stack; the
 * message starts with `"<name>: <message>"`.
 */
export class ExecutionFailed extends InterpretersError {
  override readonly code = "ERR_EXECUTION_FAILED";
  readonly remote: RemoteErrorInfo;
  constructor(remote: RemoteErrorInfo, where?: string) {
    super(`${remote.name}: ${remote.message}${where ? ` (${where})` : ""}`);
    this.remote = remote;
  }
}

/** The interpreter has exited, was closed or terminated, and cannot run code. */
export class InterpreterClosedError extends InterpretersError {
  override readonly code = "ERR_INTERPRETER_CLOSED";
}

/**
 * A send found no room and the channel's `overflow` policy is `"error"`, or
 * a pool's queue of waiting tasks is at its `maxQueue`: the fast-fail path
 * (refused at once, nothing queued, the channel or pool unchanged).
 */
export class ChannelFullError extends InterpretersError {
  override readonly code = "ERR_CHANNEL_FULL";
}

/** Where in a pipeline's source a failing item came from. */
export interface StageItem {
  /** The item's position in the pipeline's source (0-based). */
  index: number;
  /** A short printable preview of the item. */
  preview: string;
}

/**
 * A pipeline stage failed on an item (or its interpreter died): `.stage`
 * names the stage, `.worker` the worker index within it, `.item` the item's
 * position in the source and a preview, `.remote` the remote error.
 */
export class StageFailed extends InterpretersError {
  override readonly code = "ERR_STAGE_FAILED";
  readonly stage: string;
  readonly worker: number;
  readonly item: StageItem | undefined;
  readonly remote: RemoteErrorInfo;
  constructor(message: string, fields: { stage: string; worker: number; item?: StageItem; remote: RemoteErrorInfo }, options?: { cause?: unknown }) {
    super(message, options);
    this.stage = fields.stage;
    this.worker = fields.worker;
    this.item = fields.item;
    this.remote = fields.remote;
  }
}


/** Plain data describing an error, safe to post to another thread. */
export interface ErrorRecord {
  name: string;
  message: string;
  stack: string;
  cycle?: DeadlockParty[];
  remote?: RemoteErrorInfo;
  path?: string;
}

/** Describes `err` as plain data, safe to post to another thread. */
export function errorToRecord(err: unknown): ErrorRecord {
  if (err instanceof Error) {
    const record: ErrorRecord = { name: err.name, message: err.message, stack: err.stack ?? `${err.name}: ${err.message}` };
    if (err instanceof DeadlockError) record.cycle = err.cycle;
    if (err instanceof ExecutionFailed) record.remote = err.remote;
    if (err instanceof NotShareableError) record.path = err.path;
    return record;
  }
  const text = describeThrown(err);
  return { name: "Error", message: text, stack: `Error: ${text}` };
}


/** A readable description of any thrown value (not only Errors). */
export function describeThrown(value: unknown): string {
  if (value instanceof Error) return `${value.name}: ${value.message}`;
  try {
    return typeof value === "string" ? value : JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
