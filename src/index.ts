/**
 * interpreters: isolated interpreters (worker threads, one V8 isolate
 * each) that share nothing but channels, in the spirit of Python's
 * PEP 554 / PEP 734. Everything public is exported from here, in the main
 * thread and inside interpreters alike.
 */
export * from "./core.js";
export { InterpreterPool } from "./pool/interpreter-pool.js";
export type { PoolOptions, PoolStats, PoolTask } from "./pool/interpreter-pool.js";
export { stage } from "./pipeline/stage.js";
export type { Stage, StageOptions, Overflow, Order, OnError } from "./pipeline/stage.js";
export { pipeline, Pipeline } from "./pipeline/pipeline.js";
export type { PipelineOptions, PipelineEvents } from "./pipeline/pipeline.js";
export type { PipelineStats, StageStats } from "./pipeline/stats.js";
export type { StageContext } from "./pipeline/runner.js";
export { merge } from "./pipeline/merge.js";
export type { MergeOptions } from "./pipeline/merge.js";
export { offload } from "./offload/offload.js";
export type {
  ConnectionInfo,
  Offload,
  OffloadInterpreterStats,
  OffloadOptions,
  OffloadStats,
  ProtocolConnection,
  ProtocolContext,
  ProtocolModule,
  Reply,
  ReplyBytes,
} from "./offload/types.js";

// Seeing a running system (src/inspect/); INTERPRETERS_INSPECT=host:port starts the page in any program.
export { inspect } from "./inspect/inspect.js";
export { serveInspector } from "./inspect/server.js";
export type { Inspector, InspectorOptions } from "./inspect/server.js";
export type { ChannelSnapshot, DeadlockSnapshot, InterpreterSnapshot, Snapshot, WaitForEdge, WaitSnapshot } from "./inspect/types.js";
import "./inspect/auto.js";

// Channels across machines (src/remote/).
export { connectChannel } from "./remote/connect-channel.js";
export type { ConnectChannelOptions } from "./remote/connect-channel.js";
export { remoteChannelStats, removeChannel } from "./remote/connect-channel.js";
export type { RemoteChannelStats } from "./remote/bridge.js";
