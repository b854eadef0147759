/**
 * Pipelines as the inspector shows them.
 *
 * Pipelines live in the thread that started them (their control blocks are
 * shared memory, but only that thread knows where they are), so `inspect()`
 * adds the calling thread's own: the supervisor cannot see them. Each
 * running pipeline registers itself with src/pipeline/registry.ts when it
 * starts and leaves when its `done` settles; reading their statistics reads
 * counters in shared memory and never blocks a pipeline.
 */
import { livePipelines } from "../pipeline/registry.js";
import type { PipelineStats } from "../pipeline/stats.js";

export type { PipelineStats } from "../pipeline/stats.js";

/** The pipelines running in this thread now, oldest first. */
export function localPipelines(): PipelineStats[] {
  return livePipelines();
}
