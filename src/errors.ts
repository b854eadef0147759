/**
 * The library's error classes. Each has a stable `code` (what programs test)
 * and a message that says what happened, on which channel or interpreter,
 * and what to do about it.
 *
 * Errors raised inside an interpreter are instances of the classes of the
 * library there; exec/call failures cross back as ExecutionFailed with the
 * remote error's name, message and stack, and with `cause` rebuilt on this
 * side: an instance of the same library class with the same fields (a
 * DeadlockError keeps its `.cycle`), or of the same built-in error class
 * (errorToRecord, then errorFromRecord).
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
  /**
   * `options.cause` is what was thrown, rebuilt on this side when it is an
   * error: an instance of the library's own class with its fields (e.g.
   * `err.cause instanceof DeadlockError`, `err.cause.cycle`) or of the
   * built-in class (RangeError, ...).
   */
  constructor(remote: RemoteErrorInfo, where?: string, options?: { cause?: unknown }) {
    super(`${remote.name}: ${remote.message}${where ? ` (${where})` : ""}`, options);
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
  /** `code` of the error (for a library error, which class to rebuild on the other side). */
  code?: string;
  /** True when the error is one of the library's classes (InterpretersError or a subclass). */
  library?: boolean;
  /** The error's own enumerable fields (`cycle`, `path`, `stage`, ...), those that can be cloned. */
  fields?: Record<string, unknown>;
  /** The error's `cause`, when it is an error too. */
  cause?: ErrorRecord;
  /** @deprecated read `fields.cycle`; kept for readers of the earlier record. */
  cycle?: DeadlockParty[];
  /** @deprecated read `fields.remote`. */
  remote?: RemoteErrorInfo;
  /** @deprecated read `fields.path`. */
  path?: string;
}

/**
 * Every error class of the library, by `code`: what errorFromRecord
 * rebuilds (a library error of a code not listed comes back as an
 * InterpretersError). A class added to this file must be listed here (a test throws
 * every class exported from the package root inside an interpreter and
 * checks what comes back).
 */
const LIBRARY_ERRORS: ReadonlyMap<string, abstract new (...args: never[]) => InterpretersError> = new Map<string, abstract new (...args: never[]) => InterpretersError>([
  ["ERR_INTERPRETERS", InterpretersError],
  ["ERR_CHANNEL_CLOSED", ChannelClosedError],
  ["ERR_TIMEOUT", TimeoutError],
  ["ERR_DEADLOCK", DeadlockError],
  ["ERR_NOT_SHAREABLE", NotShareableError],
  ["ERR_MESSAGE_TOO_LARGE", MessageTooLargeError],
  ["ERR_CORRUPT_DATA", CorruptDataError],
  ["ERR_EXECUTION_FAILED", ExecutionFailed],
  ["ERR_INTERPRETER_CLOSED", InterpreterClosedError],
  ["ERR_CHANNEL_FULL", ChannelFullError],
  ["ERR_STAGE_FAILED", StageFailed],
]);

/** The built-in error classes a record may name (anything else comes back as an Error). */
const BUILT_IN_ERRORS: Record<string, new (message?: string) => Error> = {
  Error, EvalError, RangeError, ReferenceError, SyntaxError, TypeError, URIError,
};

/** Own enumerable properties of an error that are not name/message/stack/cause: its fields. */
function ownFields(err: Error): Record<string, unknown> | undefined {
  let fields: Record<string, unknown> | undefined;
  for (const key of Object.keys(err)) {
    if (key === "name" || key === "message" || key === "stack" || key === "cause") continue;
    const value = (err as unknown as Record<string, unknown>)[key];
    if (typeof value === "function" || typeof value === "symbol") continue;
    try {
      // Only what survives postMessage: one field that cannot must not lose the others.
      (fields ??= {})[key] = structuredClone(value);
    } catch {
      // not cloneable (a handle, a proxy, ...): left out
    }
  }
  return fields;
}

/** Describes `err` as plain data, safe to post to another thread. */
export function errorToRecord(err: unknown, depth = 0): ErrorRecord {
  if (err instanceof Error) {
    const record: ErrorRecord = { name: err.name, message: err.message, stack: err.stack ?? `${err.name}: ${err.message}` };
    const fields = ownFields(err);
    if (fields) record.fields = fields;
    const code = (err as { code?: unknown }).code;
    if (typeof code === "string") record.code = code;
    if (err instanceof InterpretersError) record.library = true;
    if (err instanceof DeadlockError) record.cycle = err.cycle;
    if (err instanceof ExecutionFailed) record.remote = err.remote;
    if (err instanceof NotShareableError) record.path = err.path;
    if (err.cause instanceof Error && depth < 8) record.cause = errorToRecord(err.cause, depth + 1);
    return record;
  }
  const text = describeThrown(err);
  return { name: "Error", message: text, stack: `Error: ${text}` };
}

/**
 * Rebuilds an error described by errorToRecord: an instance of the
 * library's class named by its `code` (with its fields, its stack and its
 * cause), else of the built-in class named by `name`, else a plain Error
 * with that name. Library classes are rebuilt without running their
 * constructors, so a class whose constructor takes other arguments comes
 * back with exactly the fields it was thrown with.
 */
export function errorFromRecord(record: ErrorRecord): Error {
  const libraryClass = record.library ? (LIBRARY_ERRORS.get(record.code ?? "") ?? InterpretersError) : undefined;
  let error: Error;
  if (libraryClass) {
    error = Object.create(libraryClass.prototype) as Error;
    Object.defineProperty(error, "message", { value: record.message, writable: true, configurable: true });
  } else {
    const builtIn = Object.hasOwn(BUILT_IN_ERRORS, record.name) ? BUILT_IN_ERRORS[record.name]! : Error;
    error = new builtIn(record.message);
  }
  Object.assign(error, record.fields ?? {});
  if (error.name !== record.name) Object.defineProperty(error, "name", { value: record.name, writable: true, configurable: true, enumerable: Boolean(libraryClass) });
  Object.defineProperty(error, "stack", { value: record.stack, writable: true, configurable: true });
  if (record.cause) Object.defineProperty(error, "cause", { value: errorFromRecord(record.cause), writable: true, configurable: true });
  return error;
}

/** An ExecutionFailed for `record` (what failed, `where`), with `cause` rebuilt from the record. */
export function executionFailedFrom(record: ErrorRecord, where?: string): ExecutionFailed {
  const { name, message, stack } = record;
  return new ExecutionFailed({ name, message, stack }, where, { cause: errorFromRecord(record) });
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
