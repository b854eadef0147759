/**
 * Cancellation scopes: which task group (if any) the running code belongs
 * to, found through the async context, so that every wait joins the group's
 * cancellation without being handed its signal. (TaskGroup is in
 * task-group.ts; this module has no imports so every wait can use it.)
 */
import { AsyncLocalStorage } from "node:async_hooks";

/** The cancellation signal of the task group whose task is running. */
const scope = new AsyncLocalStorage<AbortSignal>();

/** Runs `body` as part of a group cancelled by `signal`. */
export function runInGroup<T>(signal: AbortSignal, body: () => T): T {
  return scope.run(signal, body);
}

/**
 * The signal a wait should honour: the one it was given, combined with the
 * cancellation of the task group it runs in (if any).
 */
export function effectiveSignal(given: AbortSignal | undefined): AbortSignal | undefined {
  const group = scope.getStore();
  if (!group) return given;
  if (!given || given === group) return group;
  return AbortSignal.any([given, group]);
}
