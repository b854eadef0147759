/**
 * The pipelines running in this thread, for the inspector
 * (`inspect().pipelines`): each registers itself when it starts and leaves
 * when its `done` settles.
 */
import type { PipelineStats } from "./stats.js";

/** What the registry needs of a pipeline. */
export interface Registered {
  stats(): PipelineStats;
}

const live = new Set<Registered>();

/** @internal Called by a pipeline when it starts. */
export function registerPipeline(pipeline: Registered): void {
  live.add(pipeline);
}

/** @internal Called by a pipeline when its `done` settles. */
export function unregisterPipeline(pipeline: Registered): void {
  live.delete(pipeline);
}

/**
 * The statistics of every pipeline of this thread that is still running
 * (started and whose `done` has not settled), oldest first. Reading them
 * never blocks a pipeline: it reads counters in shared memory.
 */
export function livePipelines(): PipelineStats[] {
  return [...live].map((pipeline) => pipeline.stats());
}
