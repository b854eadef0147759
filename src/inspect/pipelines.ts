/**
 * Pipelines as the inspector shows them.
 *
 * Pipelines live in the thread that started them, so `inspect()` adds the
 * calling thread's own (the supervisor cannot see them). Until the
 * pipeline layer (issue 14, branch `pipeline`) lands on main and exposes
 * `livePipelines()` from src/pipeline/registry.ts, there are none: the
 * snapshot's `pipelines` is an empty list and the page draws no stages.
 */

/** PipelineStats as the contract (shared/API.md, "Pipelines") defines it. */
export interface PipelineStats {
  name: string;
  elapsedMs: number;
  inFlight: number;
  bottleneck?: string;
  stages: Array<{
    name: string;
    workers: number;
    capacity: number;
    overflow: string;
    queued: number;
    in: number;
    out: number;
    dropped: number;
    failed: number;
    busyMsPerSecond: number;
    backpressuredMsPerSecond: number;
    idleMsPerSecond: number;
    serviceUs: { p50: number; p99: number };
    itemsPerSecond: number;
  }>;
}

/** The pipelines running in this thread now (none until the pipeline layer exists). */
export function localPipelines(): PipelineStats[] {
  return [];
}
