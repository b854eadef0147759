/**
 * Starting this library's workers, from the built package or from the
 * TypeScript source.
 *
 * Built (`dist/src/spawn.js`): the worker runs `dist/workers/<kind>.js`.
 * Source (`src/spawn.ts`, run through tsx): tsx does not register itself
 * inside workers on Node 20, so the worker starts from a small bootstrap
 * that registers tsx's loader first and then imports `workers/<kind>.ts`.
 *
 * Workers never inherit exec flags that cannot apply to them (`-e`,
 * `--input-type`, `--test`, ...) or that would load tsx a second time, nor
 * process-wide ones that Node refuses in a worker's execArgv (V8 flags such
 * as `--max-old-space-size`, `--stack-size`, `--expose-gc`): those already
 * apply to the whole process, worker isolates included.
 */
import { Worker, type ResourceLimits } from "node:worker_threads";

const fromSource = import.meta.url.endsWith(".ts");

/** Exec flags (with their value when separate) that a worker must not inherit. */
const FLAGS_NOT_FOR_WORKERS = new Set(["-e", "--eval", "-p", "--print", "--input-type", "--test", "--watch", "--watch-path", "-r", "--require", "--import", "--loader", "--experimental-loader", "--test-reporter", "--test-reporter-destination", "--test-name-pattern", "--env-file"]);
const FLAGS_WITH_VALUE = new Set(["-e", "--eval", "-p", "--print", "--input-type", "--watch-path", "-r", "--require", "--import", "--loader", "--experimental-loader", "--test-reporter", "--test-reporter-destination", "--test-name-pattern", "--env-file"]);

/** `process.execArgv` without the flags a worker cannot take. */
export function workerExecArgv(): string[] {
  const kept: string[] = [];
  const argv = process.execArgv;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const [flag] = arg.split("=", 1) as [string];
    if (FLAGS_NOT_FOR_WORKERS.has(flag)) {
      if (!arg.includes("=") && FLAGS_WITH_VALUE.has(flag)) i++;
      continue;
    }
    kept.push(arg);
  }
  return kept;
}

const BOOTSTRAP = `
const { workerData } = require("node:worker_threads");
const boot = workerData.__interpretersBoot;
import(boot.tsx)
  .then((tsx) => { tsx.register(); return import(boot.entry); })
  .catch((err) => { process.nextTick(() => { throw err; }); });
`;

export interface SpawnOptions {
  resourceLimits?: ResourceLimits;
  env?: Record<string, string>;
}

/** Starts worker `kind` ("interpreter" or "supervisor") with `data` as its workerData. */
export function spawnWorker(
  kind: "interpreter" | "supervisor",
  data: Record<string, unknown>,
  transferList: Array<import("node:worker_threads").TransferListItem>,
  name: string,
  options: SpawnOptions = {},
): Worker {
  const common = {
    workerData: data,
    transferList,
    name,
    execArgv: acceptedExecArgv ?? workerExecArgv(),
    resourceLimits: options.resourceLimits,
    env: options.env ?? { ...process.env },
    stdout: false,
    stderr: false,
  };
  const start = (execArgv: string[]): Worker => {
    if (!fromSource) return new Worker(new URL(`../workers/${kind}.js`, import.meta.url), { ...common, execArgv });
    const entry = new URL(`../workers/${kind}.ts`, import.meta.url).href;
    const tsx = import.meta.resolve("tsx/esm/api");
    return new Worker(BOOTSTRAP, { ...common, execArgv, eval: true, workerData: { ...data, __interpretersBoot: { entry, tsx } } });
  };
  try {
    return start(common.execArgv);
  } catch (err) {
    const refused = refusedExecArgv(err);
    if (refused === undefined) throw err;
    // Node checks execArgv before the worker starts and before anything in
    // transferList is moved, so starting again without the refused flags is safe.
    acceptedExecArgv = common.execArgv.filter((arg) => !refused.has(arg));
    return start(acceptedExecArgv);
  }
}

/** The exec flags a worker last started with, once Node refused some (computed once per process). */
let acceptedExecArgv: string[] | undefined;

/**
 * The exec flags for a worker started by someone else (the pool's threads,
 * which tinypool starts): those spawnWorker learned Node accepts, else
 * `workerExecArgv()`. In the main thread the supervisor's start has
 * learned them by the time a pool exists.
 */
export function execArgvForWorkers(): string[] {
  return acceptedExecArgv ?? workerExecArgv();
}

/**
 * The flags named by Node's ERR_WORKER_INVALID_EXEC_ARGV ("Initiated Worker
 * with invalid execArgv flags: --a, --b=1"), or undefined for any other
 * error. Node gives the list only in the message.
 */
function refusedExecArgv(err: unknown): Set<string> | undefined {
  if (!(err instanceof Error) || (err as NodeJS.ErrnoException).code !== "ERR_WORKER_INVALID_EXEC_ARGV") return undefined;
  const listed = err.message.slice(err.message.indexOf(": ") + 2);
  return new Set(listed.split(", "));
}

/** URL of the library's entry module as this thread loaded it (what `"interpreters"` means in exec code). */
export const libraryEntryUrl = new URL(`./index.${fromSource ? "ts" : "js"}`, import.meta.url).href;
