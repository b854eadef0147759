/**
 * `stage()`: the description of one stage of a pipeline (a module whose
 * export handles items, and how it runs: workers, input capacity, overflow,
 * order, errors, pool). A Stage is plain, frozen data: the same Stage may
 * be used in several pipelines; each pipeline starts its own workers.
 */
import { basename, extname } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { ResourceLimits } from "node:worker_threads";
import type { InterpreterPool } from "./pool-type.js";

export type Overflow = "wait" | "drop-newest" | "drop-oldest" | "error";
export type Order = "input" | "completion";
export type OnError = "fail" | "skip";

export interface StageOptions {
  /**
   * Shown in stats and errors; default: the module's file name without
   * extension, followed by `.export` when `export` is not "default".
   */
  name?: string;
  /** The module's export that handles items; default "default". */
  export?: string;
  /** Interpreters running this stage; default 1. */
  workers?: number;
  /** Items that may wait in the stage's input, beyond one per worker; default 16 (0 and Infinity allowed). */
  capacity?: number;
  /** What a sender does when the stage is full; default "wait" (backpressure). */
  overflow?: Overflow;
  /** "input" (default): outputs leave in the order inputs arrived; "completion": as they finish. */
  order?: Order;
  /** Property of the item: items with the same key go to the same worker, in arrival order. */
  key?: string;
  /** "fail" (default): the first error fails the pipeline; "skip": the item is counted and the pipeline goes on. */
  onError?: OnError;
  /** Run the workers on this pool instead of interpreters of their own. */
  pool?: InterpreterPool;
  /**
   * worker_threads' resource limits for each of the stage's own interpreters
   * (a worker that exceeds them dies, and the pipeline fails with
   * StageFailed saying so). Not with `pool` (the pool has its own). An
   * addition to the contract.
   */
  resourceLimits?: ResourceLimits;
}

/** A stage of a pipeline: what `stage()` returns. */
export interface Stage<I = unknown, O = unknown> {
  readonly name: string;
  /** The module's URL (href). */
  readonly module: string;
  readonly export: string;
  readonly workers: number;
  readonly capacity: number;
  readonly overflow: Overflow;
  readonly order: Order | "key";
  readonly key: string | undefined;
  readonly onError: OnError;
  readonly pool: InterpreterPool | undefined;
  readonly resourceLimits: ResourceLimits | undefined;
  /** Phantom types: what the stage takes and gives. */
  readonly __types?: (input: I) => O;
}

const OVERFLOWS: readonly Overflow[] = ["wait", "drop-newest", "drop-oldest", "error"];
const ORDERS: readonly Order[] = ["input", "completion"];
const ON_ERRORS: readonly OnError[] = ["fail", "skip"];

/** The default input capacity of a stage (the contract's, and Akka's and Node's object-mode default). */
export const DEFAULT_CAPACITY = 16;

/**
 * Describes a stage: `module`'s export handles the items, in `workers`
 * interpreters (or on `pool`). The export is either a function called once
 * per item, `(item, context) => output | Promise<output>` (`undefined` sends
 * nothing downstream: a filter), or a generator function (sync or async)
 * `(items, context) => yields outputs`, which gets the items of its worker
 * as an iterable and may keep state. `context` is `{ stage, worker, signal }`.
 *
 * `module` is a URL or a path (a relative path is resolved against the
 * current directory, as `Interpreter.call` does; prefer
 * `new URL("./stage.js", import.meta.url)`). Nothing is loaded here: the
 * module is imported by each worker when a pipeline starts, and a module
 * that cannot be loaded fails that pipeline with StageFailed.
 *
 * Throws TypeError or RangeError, naming the option, for bad options:
 * workers must be a positive integer; capacity 0, a positive integer or
 * Infinity; overflow, order and onError one of their values; capacity 0
 * with "drop-oldest" is refused (nothing is ever buffered to drop);
 * `key` with order "input" is refused (a key keeps order per key only).
 */
export function stage<I = unknown, O = unknown>(module: string | URL, options: StageOptions = {}): Stage<I, O> {
  const href = moduleHref(module);
  if (options === null || typeof options !== "object") throw new TypeError(`stage(${href}): options must be an object`);
  const exportOption = options.export ?? "default";
  const name = options.name ?? (exportOption === "default" ? defaultName(href) : `${defaultName(href)}.${String(exportOption)}`);
  if (typeof name !== "string" || name.length === 0) throw new TypeError(`stage(${href}): name must be a non-empty string`);
  const what = `stage "${name}"`;
  const exportName = options.export ?? "default";
  if (typeof exportName !== "string" || exportName.length === 0) throw new TypeError(`${what}: export must be a non-empty string`);
  const workers = options.workers ?? 1;
  if (typeof workers !== "number" || !Number.isInteger(workers) || workers < 1 || workers > 256) {
    throw new RangeError(`${what}: workers must be an integer from 1 to 256, got ${String(workers)}`);
  }
  const capacity = options.capacity ?? DEFAULT_CAPACITY;
  if (typeof capacity !== "number" || !(capacity === Infinity || (Number.isInteger(capacity) && capacity >= 0 && capacity <= 2 ** 29))) {
    throw new RangeError(`${what}: capacity must be 0, a positive integer (at most 2^29) or Infinity, got ${String(capacity)}`);
  }
  const overflow = options.overflow ?? "wait";
  if (!OVERFLOWS.includes(overflow)) throw new RangeError(`${what}: overflow must be one of ${OVERFLOWS.join(", ")}; got ${String(overflow)}`);
  if (overflow === "drop-oldest" && capacity === 0) {
    throw new RangeError(`${what}: overflow "drop-oldest" needs a capacity above 0 (at capacity 0 nothing waits in the stage's input to be dropped)`);
  }
  const key = options.key;
  if (key !== undefined && (typeof key !== "string" || key.length === 0)) throw new TypeError(`${what}: key must be a non-empty property name`);
  const order = options.order;
  if (order !== undefined && !ORDERS.includes(order)) throw new RangeError(`${what}: order must be "input" or "completion"; got ${String(order)}`);
  if (key !== undefined && order === "input") {
    throw new RangeError(`${what}: key "${key}" keeps the order of each key, not of the whole input; drop order: "input" (or use order: "completion")`);
  }
  const onError = options.onError ?? "fail";
  if (!ON_ERRORS.includes(onError)) throw new RangeError(`${what}: onError must be "fail" or "skip"; got ${String(onError)}`);
  const pool = options.pool;
  if (pool !== undefined && (pool === null || typeof (pool as { run?: unknown }).run !== "function")) {
    throw new TypeError(`${what}: pool must be an InterpreterPool`);
  }
  const resourceLimits = options.resourceLimits;
  if (resourceLimits !== undefined && (resourceLimits === null || typeof resourceLimits !== "object")) throw new TypeError(`${what}: resourceLimits must be an object (worker_threads' ResourceLimits)`);
  if (resourceLimits !== undefined && pool !== undefined) throw new TypeError(`${what}: resourceLimits and pool cannot be combined; the pool's interpreters have the pool's limits`);
  const described: Stage<I, O> = Object.freeze({
    name,
    module: href,
    export: exportName,
    workers,
    capacity,
    overflow,
    order: key !== undefined ? "key" : (order ?? "input"),
    key,
    onError,
    pool,
    resourceLimits,
  });
  stages.add(described);
  return described;
}

const stages = new WeakSet<object>();

/** True for what stage() returned. */
export function isStage(value: unknown): value is Stage {
  return typeof value === "object" && value !== null && stages.has(value);
}

function moduleHref(module: string | URL): string {
  if (module instanceof URL) return module.href;
  if (typeof module !== "string" || module.length === 0) throw new TypeError(`stage: module must be a URL or a path, got ${typeof module}`);
  if (/^[a-z][a-z0-9+.-]*:/i.test(module)) return module;
  if (module.startsWith("/")) return pathToFileURL(module).href;
  if (module.startsWith("./") || module.startsWith("../")) return new URL(module, pathToFileURL(`${process.cwd()}/`)).href;
  return module; // a bare specifier: resolved by the interpreter
}

function defaultName(href: string): string {
  let file = href;
  try {
    if (href.startsWith("file:")) file = fileURLToPath(href);
  } catch {
    // keep the href
  }
  const base = basename(file.split("?")[0]!);
  return base.slice(0, base.length - extname(base).length) || base;
}
