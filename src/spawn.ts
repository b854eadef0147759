/**
 * Starting this library's workers, from the built package or from the
 * TypeScript source.
 *
 * Built (`dist/src/spawn.js`): the worker runs `dist/workers/<kind>.js`.
 * Source (`src/spawn.ts`, run through tsx): tsx does not register itself
 * inside workers on Node 20, so the worker starts from a small bootstrap
 * that registers tsx's loader first and then imports `workers/<kind>.ts`.
 *
 * TypeScript in interpreters: when the main program runs under tsx (`node
 * --import tsx main.ts`, `npx tsx main.ts`), interpreters register that same
 * tsx before they first import anything (workers/interpreter.ts), so that
 * `call`, `wrap` and `import` of a `.ts` module work there as in the main
 * program (Node 20 workers do not inherit the loaders of the thread that
 * starts them, and `--import tsx` in a worker's execArgv does not register
 * it there either). Not at start: registering tsx costs a worker 50-150 ms,
 * which an interpreter that only runs code given to `exec` never needs. The
 * tsx found is passed down in workerData, so interpreters created by
 * interpreters have it too. Under another TypeScript loader, an import of a
 * `.ts` file fails with an error that says how to make it work.
 *
 * Workers never inherit exec flags that cannot apply to them (`-e`,
 * `--input-type`, `--test`, ...) or that would load tsx a second time, nor
 * process-wide ones that Node refuses in a worker's execArgv (V8 flags such
 * as `--max-old-space-size`, `--stack-size`, `--expose-gc`): those already
 * apply to the whole process, worker isolates included.
 */
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Worker, workerData, type ResourceLimits } from "node:worker_threads";

const fromSource = import.meta.url.endsWith(".ts");

/** The key of workerData under which a worker finds what it must register at boot. */
const BOOT_KEY = "__interpretersBoot";

/** What a worker finds in workerData[BOOT_KEY]. */
interface Boot {
  /** The worker's own module (the bootstrap imports it, when there is one). */
  entry: string;
  /** URL of tsx's `esm/api` module: the bootstrap registers it before `entry` (from source), else the interpreter when it first imports. */
  tsx: string;
}

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
const boot = workerData.${BOOT_KEY};
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
  const entry = new URL(`../workers/${kind}.${fromSource ? "ts" : "js"}`, import.meta.url);
  // The supervisor runs no user code: it needs tsx only to load its own source.
  const tsx = fromSource ? import.meta.resolve("tsx/esm/api") : kind === "interpreter" ? typescriptLoader : undefined;
  const workerDataWithBoot = tsx === undefined ? data : { ...data, [BOOT_KEY]: { entry: entry.href, tsx } satisfies Boot };
  const start = (execArgv: string[]): Worker => {
    if (!fromSource) return new Worker(entry, { ...common, execArgv, workerData: workerDataWithBoot });
    return new Worker(BOOTSTRAP, { ...common, execArgv, eval: true, workerData: workerDataWithBoot });
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

const LOADER_FLAGS = new Set(["--import", "--loader", "--experimental-loader", "--require", "-r"]);

/**
 * The tsx of the main program, as the URL of its `esm/api` module, when the
 * main program runs under tsx: given in `--import`/`--loader`/`--require`
 * (`tsx`, `tsx/esm`, or a path into a tsx package, as the tsx command
 * passes), or inherited from the interpreter that created this one.
 * Undefined otherwise.
 */
export const typescriptLoader: string | undefined =
  ((workerData as Record<string, unknown> | null)?.[BOOT_KEY] as Boot | undefined)?.tsx ?? findTsxOfMainProgram();

/** tsx's `esm/api` URL when this interpreter must still register it (from source, the bootstrap already has). */
export const typescriptLoaderToRegister: string | undefined = fromSource ? undefined : typescriptLoader;

function findTsxOfMainProgram(): string | undefined {
  const argv = process.execArgv;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    const eq = arg.indexOf("=");
    const flag = eq >= 0 ? arg.slice(0, eq) : arg;
    if (!LOADER_FLAGS.has(flag)) continue;
    const value = eq >= 0 ? arg.slice(eq + 1) : argv[++i];
    if (value === undefined) continue;
    const found = tsxApiFor(value);
    if (found) return found;
  }
  return undefined;
}

/** tsx's `esm/api` URL for a loader flag's value that names tsx, else undefined. */
function tsxApiFor(value: string): string | undefined {
  try {
    if (value === "tsx" || value.startsWith("tsx/")) {
      // Node resolves a bare --import from the current directory: so do we.
      const packageJson = createRequire(join(process.cwd(), "noop.js")).resolve("tsx/package.json");
      return esmApiOf(packageJson);
    }
    const path = value.startsWith("file:") ? fileURLToPath(value) : value;
    const match = /^(.*[\\/]node_modules[\\/]tsx)[\\/]/.exec(path);
    return match ? esmApiOf(join(match[1]!, "package.json")) : undefined;
  } catch {
    return undefined;
  }
}

/** The file tsx's package.json exports as `./esm/api` for `import`. */
function esmApiOf(packageJson: string): string | undefined {
  const manifest = JSON.parse(readFileSync(packageJson, "utf8")) as { name?: string; exports?: Record<string, unknown> };
  if (manifest.name !== "tsx") return undefined;
  const entry = manifest.exports?.["./esm/api"] as { import?: string | { default?: string } } | undefined;
  const target = typeof entry?.import === "string" ? entry.import : entry?.import?.default;
  if (!target) return undefined;
  return pathToFileURL(join(dirname(packageJson), target)).href;
}
