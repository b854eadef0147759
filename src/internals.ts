/**
 * Internals of the core that layers built beside it need, re-exported from
 * one place (re-exports only; nothing here is public API).
 *
 * The pool (src/pool) needs them because its threads are started by
 * tinypool, not by create(): it gives each one a party slot and a
 * supervisor link itself (attachParty, bootDataFor, waitForRelease), moves
 * task arguments and results with the channel codec so that the ends they
 * carry are accounted for exactly (encodeForChannel, decodeFromChannel,
 * End, channelFromBuffer, handleFor), and resolves, loads and runs modules
 * and reports their errors exactly as Interpreter.call does
 * (resolveModule, importModule, callExport, errorRecordOf,
 * executionFailedFrom; bootEntriesFor for the TypeScript loader).
 */
export { addRunning, mySlot, MAX_PARTIES, nextInterpreterId, nextObjectId, PartyState, setSlotState, WORKER_DATA_KEY, bootDataFor } from "./control.js";
export { attachParty, waitForRelease } from "./interpreter.js";
export { resolveModule } from "./module-specifier.js";
export type { ModuleBase } from "./module-specifier.js";
export { callExport, endsIn, errorRecordOf, importModule } from "./module-loading.js";
export { ensureSupervisor, postToSupervisor } from "./supervisor-link.js";
export { bootEntriesFor, execArgvForWorkers } from "./spawn.js";
export { decodeFromChannel, decodeFromPost, encodeForChannel, encodeForPost, endOf, handleFor } from "./transfer.js";
export type { PostedValue } from "./transfer.js";
export { End } from "./handle.js";
export { channelFromBuffer } from "./registry.js";
export { errorToRecord, executionFailedFrom } from "./errors.js";
export type { ErrorRecord } from "./errors.js";
