/**
 * A pool thread's side of a task, once the thread is an interpreter
 * (workers/pool-worker.ts made it one and loads this module then): claim
 * the task in the task table, take its arguments, import the module and
 * call the export, answer with the result (or the error; a result carrying
 * channel ends goes on the thread's results channel), mark the task
 * finished. Every task is claimed before anything else happens, so a task
 * the owner cancelled, or that another delivery already started, is
 * skipped untouched. Modules load, and their failures are told, as in any
 * interpreter (src/module-loading.ts).
 */
// The whole library loads here, as in any interpreter: channel handles, Lock/Semaphore/Event.
import { InterpretersError, type RecvChannel, type SendChannel } from "../index.js";
import {
  addRunning,
  callExport,
  channelFromBuffer,
  decodeFromPost,
  encodeForChannel,
  End,
  endsIn,
  errorRecordOf,
  errorToRecord,
  handleFor,
  importModule,
  mySlot,
  PartyState,
  R_ATTACH,
  setSlotState,
} from "../internals.js";
import { copyOut, decodeEncoded } from "./encoded.js";
import { type Identity, isPlainData, type PoolWorkerData, SKIPPED, type TaskOutcome, type TaskPayload, type TaskResult } from "./protocol.js";
import { TaskTableView } from "./task-table.js";

/**
 * Starts serving as an interpreter of the pool: takes the results channel,
 * marks this thread's party slot LIVE. Returns the task handler.
 */
export function startServing(identity: Extract<Identity, { results: unknown }>, data: PoolWorkerData): (payload: TaskPayload) => Promise<TaskOutcome> {
  const results = decodeFromPost(identity.results) as SendChannel<TaskResult>;
  const table = new TaskTableView(data.table);
  setSlotState(mySlot, PartyState.LIVE);
  return async (payload) => {
    const { index } = payload;
    if (!table.start(index, mySlot)) return SKIPPED;
    let outcome: TaskOutcome;
    let passedEnds: Array<{ close(): void }> = [];
    addRunning(1);
    try {
      let args: unknown[];
      if (payload.plain) {
        args = payload.plain;
      } else if (payload.carrier) {
        args = takeCarriedArgs(payload.carrier);
        passedEnds = endsIn(args);
      } else {
        args = decodeEncoded(payload.args!) as unknown[];
      }
      const value = await callExport(await cachedImport(payload), payload.label ?? payload.module, payload.exportName, args);
      try {
        outcome = answer(value, index, results);
      } catch (err) {
        const error = errorToRecord(err);
        error.message = `the task's result cannot be sent back: ${error.message}`;
        outcome = { slot: mySlot, error };
      }
    } catch (err) {
      outcome = { slot: mySlot, error: errorRecordOf(err) };
    } finally {
      addRunning(-1);
    }
    // The ends the task was given are the task's: released when it ends (those it moved on, into a
    // message or its result, are not here any more: closing them is a no-op). Before answering
    // tinypool, so that whoever gets the result sees them released.
    for (const end of passedEnds) end.close();
    table.finish(index, mySlot);
    return outcome;
  };
}

/**
 * The answer for a task that returned `value`: a primitive as it is, a
 * value without channel ends encoded, a value with ends sent on the
 * results channel (they move with the message). Throws NotShareableError
 * (or MessageTooLargeError) with nothing moved when it cannot cross.
 */
function answer(value: unknown, index: number, results: SendChannel<TaskResult>): TaskOutcome {
  if (isPlainData(value)) return { slot: mySlot, value };
  const message = encodeForChannel(value); // checks that it can cross, finds what it shares or moves
  // Nothing shared or moved: tinypool's structured clone of the answer makes the same copy, for less than
  // posting the codec's bytes. (tinypool posts the answer right after this returns, or once its stdout
  // is flushed: a timer the task left could still change the value in between.)
  if ((message.flags & R_ATTACH) === 0) return { slot: mySlot, value };
  if (message.ends.length === 0) return { slot: mySlot, encoded: copyOut(message) };
  message.undo(); // the ends come back here; the channel's send moves them again
  results.sendSync({ index, value });
  return { slot: mySlot, inChannel: true };
}

/**
 * Takes the arguments from their channel: this thread becomes one of its
 * receivers, takes the one message (claiming the ends in it: if this
 * thread dies meanwhile, the supervisor releases exactly the ends not yet
 * claimed), and lets go of the channel.
 */
function takeCarriedArgs(buffer: SharedArrayBuffer): unknown[] {
  const carrier = handleFor(End.acquire(channelFromBuffer(buffer), "recv")) as RecvChannel<unknown[]>;
  try {
    const taken = carrier.tryRecv();
    if (!taken.ok) throw new InterpretersError("the task's arguments are gone from their channel (internal error: the task was withdrawn after it started)");
    return taken.value;
  } finally {
    carrier.close();
  }
}

/**
 * The modules tasks of this thread imported, by URL (and base, for a bare
 * specifier). `import()` of a module already loaded still goes through the
 * loader's resolve (and its hooks, e.g. tsx's, in another thread): a task
 * of a few microseconds should not pay that each time. A module that
 * failed to load is tried again next time.
 */
const modules = new Map<string, Promise<Record<string, unknown>>>();

function cachedImport(payload: TaskPayload): Promise<Record<string, unknown>> {
  const key = payload.base === undefined ? payload.module : `${payload.base.url} ${payload.module}`;
  let namespace = modules.get(key);
  if (namespace === undefined) {
    namespace = importModule(payload.module, payload.base, payload.label ?? payload.module);
    modules.set(key, namespace);
    namespace.catch(() => modules.delete(key));
  }
  return namespace;
}
