/**
 * What a stage needs of an InterpreterPool (API.md "Pools of interpreters"):
 * `run` a task (a module's export with arguments, abortable by a signal) on
 * one of its interpreters. The pool itself is built elsewhere; this is the
 * shape a stage's `pool` option accepts.
 */
export interface InterpreterPool {
  run<R>(task: { module: string | URL; export?: string; args?: unknown[]; signal?: AbortSignal }): Promise<R>;
}
