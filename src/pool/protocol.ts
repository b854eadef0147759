/**
 * What a pool's owner and its threads say to each other. Shared by both
 * sides; imports types only, so that the pool worker's entry
 * (workers/pool-worker.ts) can load it before the library itself (which a
 * pool thread may load only once it knows its party slot).
 *
 * Three paths, each chosen for what it must guarantee:
 *
 * - Identity (owner -> thread, once, before the thread serves tasks): the
 *   thread asks on the pool's BroadcastChannel, the owner answers through
 *   tinypool's `TinypoolWorker.postMessage` with the thread's party slot,
 *   its supervisor link (a MessagePort) and the send end of its results
 *   channel. tinypool starts the threads and gives them no per-thread data,
 *   so this is how a tinypool thread becomes an interpreter.
 * - Tasks (owner -> thread): tinypool's own `run(payload)`. Arguments that
 *   share and move nothing travel as they are (tinypool's structured
 *   clone; the codec checked them); arguments with a Lock, Semaphore, Event
 *   or SharedArrayBuffer as channel-codec bytes (those are shared by id);
 *   arguments that carry ends travel in a channel of their own (the payload
 *   names its buffer), so that every end is accounted for whatever dies
 *   when.
 * - Results (thread -> owner): in tinypool's answer (as it is when it
 *   shares and moves nothing, else as channel-codec bytes; an error as a
 *   record), except a result that carries channel ends: that one goes on
 *   the thread's results channel, before the thread answers tinypool, and the answer
 *   only says which thread to read. A result in a channel survives its
 *   thread: the owner can read it after the thread died, and what nobody
 *   reads is released with the channel. (A result in an answer is lost
 *   with a thread that dies before the answer is read: the task then fails
 *   as its thread died, nothing held is lost.)
 */
import { isProxy } from "node:util/types";
import type { ErrorRecord, ModuleBase, PostedValue } from "../internals.js";

/** The export of the pool worker's entry that tinypool calls for each task. */
export const HANDLER_NAME = "runPoolTask";

/** Marks an identity message on a pool thread's parentPort. */
export const IDENTITY_KIND = "interpreters:pool-identity";

/** tinypool's `workerData` for a pool: the same for every thread of it. */
export interface PoolWorkerData {
  /** The pool's name, for messages. */
  pool: string;
  /** Name of the BroadcastChannel on which a new thread asks for its identity. */
  requests: string;
  /** The pool's task table (task-table.ts). */
  table: SharedArrayBuffer;
}

/** A new thread's request for its identity (on the pool's BroadcastChannel). */
export interface IdentityRequest {
  threadId: number;
}

/** The owner's answer (on the thread's parentPort). */
export type Identity =
  | {
      kind: typeof IDENTITY_KIND;
      /** Entries to add to the thread's workerData before the library loads (boot data and supervisor port). */
      workerData: Record<string, unknown>;
      /** The send end of the thread's results channel, moved to the thread's slot. */
      results: PostedValue;
    }
  | { kind: typeof IDENTITY_KIND; error: ErrorRecord };

/** Arguments with no channel end in them: channel-codec bytes [0, length). */
export interface EncodedArgs {
  bytes: Uint8Array;
  length: number;
  flags: number;
}

/** What tinypool carries to a thread for one task. */
export interface TaskPayload {
  /** The task's entry in the task table. */
  index: number;
  /** An absolute URL, or a bare specifier the thread resolves against `base` (src/module-specifier.ts). */
  module: string;
  /** For a bare specifier only (every field is copied for every task: what is not needed is left out). */
  base?: ModuleBase;
  /** How errors name the module, when that is not just `module`: the specifier, what it was resolved against and to. */
  label?: string;
  exportName: string;
  /** Exactly one of plain, args and carrier. Arguments that share and move nothing, as they are (structured clone). */
  plain?: unknown[];
  /** Arguments with no channel end in them, encoded. */
  args?: EncodedArgs;
  /** Buffer of the channel holding the arguments (one message), when they carry channel ends. */
  carrier?: SharedArrayBuffer;
}

/** One message on a thread's results channel (a result that carries channel ends). */
export interface TaskResult {
  index: number;
  value: unknown;
}

/**
 * A thread's answer to tinypool for one delivery: the task's result (from
 * the interpreter in party slot `slot`), SKIPPED, or why the thread is not
 * an interpreter.
 */
export type TaskOutcome =
  | typeof SKIPPED
  /** The result is a primitive. */
  | { slot: number; value: unknown }
  /** The result, encoded (no channel end in it). */
  | { slot: number; encoded: EncodedArgs }
  /** The result carries channel ends: it is on that slot's results channel. */
  | { slot: number; inChannel: true }
  /** The task threw (or its module failed, or its result could not cross). */
  | { slot: number; error: ErrorRecord }
  | { bootError: ErrorRecord };

/** The task was cancelled before this thread could start it: nothing was run, nothing sent. */
export const SKIPPED = -1;

/** True for values that cross as they are in a structured clone, with the same meaning as through a channel. */
export function isPlain(value: unknown): boolean {
  const type = typeof value;
  return value === null || (type !== "object" && type !== "function" && type !== "symbol");
}

/** Deeper than this, isPlainData gives up (and the codec decides: it handles cycles and depth). */
const PLAIN_DATA_MAX_DEPTH = 16;

/**
 * True when `value` is made only of primitives, plain objects and arrays,
 * at most PLAIN_DATA_MAX_DEPTH deep: a structured clone copies it exactly
 * as the channel codec would, and nothing in it is shared or moved. A
 * cheaper check than encoding it; false means "ask the codec" (a Map, a
 * Date, a typed array, a Lock, a channel end, a function, a cycle ...).
 */
export function isPlainData(value: unknown, depth = 0): boolean {
  if (isPlain(value)) return true;
  if (typeof value !== "object" || depth >= PLAIN_DATA_MAX_DEPTH || isProxy(value)) return false;
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) if (!isPlainData(value[i], depth + 1)) return false;
    return true;
  }
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return false;
  for (const key of Object.keys(value as object)) if (!isPlainData((value as Record<string, unknown>)[key], depth + 1)) return false;
  return true;
}
