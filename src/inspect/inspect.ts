/**
 * `inspect()`: the state of every interpreter and channel of the process,
 * from any interpreter.
 *
 * Only the supervisor knows every channel, so the snapshot is built there
 * (collect.ts, reading shared memory without taking any lock) and sent
 * back; this thread waits for it synchronously, as a fetch of a channel
 * end does (supervisor-link.ts). The supervisor never blocks, so the wait
 * is short (a fraction of a millisecond when it is idle). This thread then
 * adds its own pipelines, which live here and nowhere else.
 */
import { ensureSupervisor, snapshotFromSupervisor } from "../internals.js";
import { collectSnapshot } from "./collect.js";
import { localPipelines } from "./pipelines.js";
import type { Snapshot } from "./types.js";

/** How long the first snapshot may take (the supervisor may be starting), and later ones. */
const FIRST_TIMEOUT_MS = 10_000;
const TIMEOUT_MS = 2_000;
/** After a snapshot timed out, until one succeeds: the supervisor is probably gone or stuck. */
const AFTER_FAILURE_TIMEOUT_MS = 250;

let answered = false;
let failed = false;

/**
 * A snapshot of the whole process: interpreters and what each waits for,
 * channels (fill, holders of each end, waiters), the wait-for graph,
 * deadlocks and possible deadlocks, and this thread's pipelines.
 *
 * Works in any interpreter and the main thread (where it starts the
 * supervisor if no interpreter was created yet). Never takes a channel's
 * lock and never blocks another thread: it waits only for the supervisor,
 * which answers at once. Never throws: if the supervisor does not answer
 * (within 10 s the first time, 2 s after that), the snapshot lists the
 * interpreters only and `error` says why.
 */
export function inspect(): Snapshot {
  ensureSupervisor();
  const timeout = failed ? AFTER_FAILURE_TIMEOUT_MS : answered ? TIMEOUT_MS : FIRST_TIMEOUT_MS;
  const snapshot = snapshotFromSupervisor(timeout) as Snapshot | undefined;
  if (snapshot) {
    answered = true;
    failed = false;
    return { ...snapshot, pipelines: localPipelines() };
  }
  failed = true;
  // No channels known here: the parties alone, read from the control block.
  const partial = collectSnapshot([], () => undefined);
  return {
    ...partial,
    pipelines: localPipelines(),
    error: `the supervisor did not answer within ${timeout} ms, so channels are not shown; if this persists, the process's supervisor thread has died or is stuck`,
  };
}
