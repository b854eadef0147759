/**
 * Reading the library's party table (src/control.ts) from a benchmark: which
 * slot an interpreter has, and how many wake-ups were sent to it.
 */
import { control, MAX_PARTIES, PartyState, slotId, slotState, slotWord } from "../../src/control.js";

/** The party slot of live interpreter `id`, for reading its park word. */
export function slotOf(id: number): number {
  for (let slot = 1; slot < MAX_PARTIES; slot++) if (slotId(slot) === id && slotState(slot) === PartyState.LIVE) return slot;
  throw new Error(`no live party slot for interpreter ${id}`);
}

/** Wake-ups sent to party `slot` so far: its park word (control.ts slot table, word 2), a wrapping count. */
export function wakeupsSentTo(slot: number): number {
  return Atomics.load(control, slotWord(slot, 2));
}
