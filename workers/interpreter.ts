/**
 * An interpreter's side of the control protocol (src/interpreter.ts is the
 * creator's side): runs exec/call/prepareMain/wrap requests and replies.
 *
 * `exec` source runs as an ES module from a data: URL that carries, as a
 * media-type parameter, the URL its imports resolve against (the file that
 * called `exec`; see src/module-specifier.ts). A module resolve hook,
 * registered on first use, makes `import ... from "interpreters"` mean this
 * very library (the same module instance as ours, so errors are instances
 * of the same classes), and resolves the imports of such data: modules
 * against the base they carry. A bare specifier given to `call` or `wrap` is
 * imported the same way, through a one-line data: module with the caller's
 * base (`export * as ns from "<specifier>"`).
 */
import { register } from "node:module";
import { parentPort } from "node:worker_threads";
import { fileURLToPath, pathToFileURL } from "node:url";
import { readFileSync } from "node:fs";
import * as Comlink from "comlink/dist/esm/comlink.mjs";
import nodeEndpoint from "comlink/dist/esm/node-adapter.mjs";
import { addRunning, describeSlot, mySlot, PartyState, setSlotState } from "../src/control.js";
import { type ErrorRecord, errorToRecord } from "../src/errors.js";
import type { ControlReply, ControlRequest, ReleaseBound } from "../src/interpreter.js";
import { execSourceName, type ModuleBase } from "../src/module-specifier.js";
import { libraryEntryUrl, typescriptLoader, typescriptLoaderToRegister } from "../src/spawn.js";
import { locateSyntaxError } from "../src/syntax-location.js";
import { decodeFromPost, encodeForPost, endOf } from "../src/transfer.js";
import "../src/index.js";

const port = parentPort!;

const RESOLVE_HOOK = `
const CWD = ${JSON.stringify(pathToFileURL(process.cwd() + "/").href)};
function baseOf(dataUrl) {
  const params = dataUrl.slice(5, dataUrl.indexOf(","));
  const match = /;base=([^;,]*)/.exec(params);
  return match ? decodeURIComponent(match[1]) : CWD;
}
export async function resolve(specifier, context, nextResolve) {
  if (specifier === "interpreters") return { url: ${JSON.stringify(libraryEntryUrl)}, shortCircuit: true };
  if (context.parentURL?.startsWith("data:") && !specifier.startsWith("data:") && !specifier.startsWith("node:")) {
    return nextResolve(specifier, { ...context, parentURL: baseOf(context.parentURL) });
  }
  return nextResolve(specifier, context);
}`;

let loaders: Promise<void> | undefined;
/**
 * Registers, once, what imports in this interpreter need: tsx when the main
 * program runs under it (src/spawn.ts), then the resolve hook above (the
 * hook registered last runs first: ours must see a data: parent before tsx
 * does). Costs a loader thread (~50-100 ms, more with tsx) the first time,
 * so only code that imports pays it.
 */
function ensureLoaders(): Promise<void> {
  return (loaders ??= (async () => {
    if (typescriptLoaderToRegister !== undefined) {
      const tsx = (await import(typescriptLoaderToRegister)) as { register(): unknown };
      tsx.register();
    }
    register(`data:text/javascript,${encodeURIComponent(RESOLVE_HOOK)}`);
  })());
}

/** This file, as Node names it in "imported from ..." (never shown to users: the caller's base is). */
const THIS_FILE = fileURLToPath(import.meta.url);

function reply(message: ControlReply, transfer: Array<import("node:worker_threads").TransferListItem> = []): void {
  port.postMessage(message, transfer);
}

function setGlobals(bindings: unknown): void {
  if (bindings === null || typeof bindings !== "object") return;
  for (const [name, value] of Object.entries(bindings)) {
    (globalThis as Record<string, unknown>)[name] = value;
  }
}

/** A data: URL for module text whose imports resolve against `base`. */
function dataModuleUrl(text: string, base: ModuleBase): string {
  return `data:text/javascript;base=${encodeURIComponent(base.url)};charset=utf-8,${encodeURIComponent(text)}`;
}

/** The base of an exec whose creator sent none (its source has no import): the current directory. */
const CWD_BASE: ModuleBase = { url: pathToFileURL(`${process.cwd()}/`).href, fromCaller: false };

/**
 * A failure to load or evaluate something, as the record posted back: the
 * original error's class, code and fields, with `context` (what was being
 * imported, against which base) before its message, and Node's
 * "imported from <this file>" left out (it names the library, not the
 * caller).
 */
class LoadFailure {
  constructor(
    readonly error: unknown,
    readonly how: {
      /** Before the error's message: what was being loaded. */
      context?: string;
      /** After it, in parentheses: where in the source the error is. */
      location?: string;
      /** After that: how to make it work. */
      advice?: string;
      /** Lines of source with a caret, shown under the message. */
      frame?: string;
      /** A stack frame naming the place, shown instead of the loader's internal frames. */
      at?: string;
    },
  ) {}

  toRecord(): ErrorRecord {
    const record = errorToRecord(this.error);
    const clean = (text: string): string => text.split(` imported from ${THIS_FILE}`).join("");
    const { context, location, advice, frame, at } = this.how;
    const message = `${context ? `${context}: ` : ""}${clean(record.message)}${location ? ` (${location})` : ""}${advice ? `. ${advice}` : ""}`;
    const frames = at ? `    at ${at}` : clean(record.stack).split("\n").filter((line) => /^\s+at /.test(line)).join("\n");
    return { ...record, message, stack: `${record.name}: ${message}${frame ? `\n${frame}` : ""}\n${frames}` };
  }
}

/** The error code Node gives an import of a file whose extension it has no loader for. */
const UNKNOWN_EXTENSION = "ERR_UNKNOWN_FILE_EXTENSION";

/** What to add to an import failure to say how to make it work, if anything. */
function adviceFor(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  const message = err instanceof Error ? err.message : "";
  if (code === UNKNOWN_EXTENSION && /\.[mc]?tsx?"/.test(message) && typescriptLoader === undefined) {
    return (
      "This interpreter has no TypeScript loader: interpreters load TypeScript when the main program runs under " +
      "tsx (`node --import tsx main.ts` or `npx tsx main.ts`), by registering the same tsx. Run it under tsx, or " +
      "give call/wrap/import the compiled JavaScript (.js) instead"
    );
  }
  return undefined;
}

/**
 * For a SyntaxError in the ES module at `url` itself (a file: URL of
 * JavaScript), its line and column there; undefined otherwise (an error in
 * a module it imports, TypeScript, unreadable, or CommonJS, whose syntax
 * errors already name their file and line).
 */
function locateInFile(err: unknown, url: string): { location: string; frame: string; at: string } | undefined {
  if (!(err instanceof SyntaxError) || !url.startsWith("file:") || !/\.(m|c)?js$/.test(new URL(url).pathname)) return undefined;
  try {
    if (err.stack?.includes(fileURLToPath(url))) return undefined; // already says where
    const place = locateSyntaxError(readFileSync(fileURLToPath(url), "utf8"));
    const at = place && `${url}:${place.line}:${place.column}`;
    return place && { location: `at ${at}`, frame: place.frame, at: at! };
  } catch {
    return undefined;
  }
}

/** Imports a module for call/wrap: `module` is an absolute URL, or a bare specifier resolved against `base`. */
async function importModule(module: string, base: ModuleBase | undefined, label: string): Promise<Record<string, unknown>> {
  const absolute = /^[a-zA-Z][a-zA-Z0-9+.-]*:/.test(module);
  try {
    // A module given by URL needs no hook, unless it may be TypeScript.
    if (!absolute || typescriptLoaderToRegister !== undefined) await ensureLoaders();
    if (absolute) return (await import(module)) as Record<string, unknown>;
    const via = dataModuleUrl(`export * as ns from ${JSON.stringify(module)};`, base ?? CWD_BASE);
    return ((await import(via)) as { ns: Record<string, unknown> }).ns;
  } catch (err) {
    const advice = adviceFor(err);
    const located = absolute ? locateInFile(err, module) : undefined;
    throw new LoadFailure(err, { context: `cannot import ${label}`, advice, ...located });
  }
}

/** Runs `source` as an ES module; imports in it resolve against `base`. */
async function runExec(source: string, base: ModuleBase): Promise<void> {
  if (/\bimport\b/.test(source)) await ensureLoaders();
  // The name (a file URL beside the base, "file:///app/[exec-3]", as Node names `-e` code)
  // shows in stack traces of this code and tells module-specifier.ts the base of calls this
  // code makes; being unique, it also lets the same text run twice.
  const name = execSourceName(base);
  const url = dataModuleUrl(`${source}\n//# sourceURL=${name}`, base);
  try {
    await import(url);
  } catch (err) {
    const advice = adviceFor(err);
    if (advice) throw new LoadFailure(err, { advice });
    if (!(err instanceof SyntaxError)) throw err;
    throw syntaxErrorInExec(err, source, name);
  }
}

/**
 * A SyntaxError while running exec source, told where it is: its line and
 * column in the source when the source itself does not parse (V8 does not
 * say), or, for a link error (an import of a missing export), Node's own
 * location with the data: URL replaced by the source's name.
 */
function syntaxErrorInExec(err: SyntaxError, source: string, name: string): unknown {
  const place = locateSyntaxError(source);
  if (place) {
    return new LoadFailure(err, {
      location: `line ${place.line}, column ${place.column} of the exec source`,
      frame: place.frame,
      at: `${name}:${place.line}:${place.column}`,
    });
  }
  // Node prefixes the stack of a link error with "<module>:<line>", the line's text and a marker.
  const stack = err.stack ?? "";
  const decorated = /^(.*):(\d+)\n/.exec(stack);
  if (decorated?.[1] !== name) return err; // from a module the source imports: its stack names it
  const marked = stack.slice(decorated[0].length, stack.indexOf(`\n${err.name}: `)).split("\n");
  const frame = marked.length === 2 ? `> ${decorated[2]} | ${marked[0]}\n  ${" ".repeat(decorated[2]!.length)} | ${marked[1]}` : undefined;
  return new LoadFailure(err, { location: `line ${decorated[2]} of the exec source`, frame, at: `${name}:${decorated[2]}` });
}

async function runCall(module: string, base: ModuleBase | undefined, label: string, exportName: string, args: unknown[]): Promise<unknown> {
  const namespace = await importModule(module, base, label);
  const target = namespace[exportName];
  if (typeof target !== "function") {
    throw new TypeError(`call: export "${exportName}" of ${label} is ${target === undefined ? "missing" : `a ${typeof target}, not a function`}`);
  }
  return await (target as (...a: unknown[]) => unknown)(...args);
}

/** Every channel end inside `value` (the globals bound by an exec), however deep. */
function endsIn(value: unknown, found: Array<{ close(): void }> = [], seen = new Set<unknown>()): Array<{ close(): void }> {
  if (value === null || typeof value !== "object" || seen.has(value)) return found;
  seen.add(value);
  if (endOf(value)) {
    found.push(value as { close(): void });
    return found;
  }
  if (value instanceof Map) for (const [k, v] of value) (endsIn(k, found, seen), endsIn(v, found, seen));
  else if (value instanceof Set || Array.isArray(value)) for (const v of value) endsIn(v, found, seen);
  else if (Object.getPrototypeOf(value) === Object.prototype || Object.getPrototypeOf(value) === null) {
    for (const v of Object.values(value)) endsIn(v, found, seen);
  }
  return found;
}

/** Closes each end (a moved or closed one is left as it is); returns the first error. */
function closeAll(ends: Array<{ close(): void }>): unknown {
  let first: unknown;
  for (const end of ends) {
    try {
      end.close();
    } catch (err) {
      first ??= err;
    }
  }
  return first;
}

async function runExecRequest(bind: unknown, source: string, base: ModuleBase, release: ReleaseBound | undefined): Promise<void> {
  const ends = release ? endsIn(bind) : [];
  setGlobals(bind);
  let failed = false;
  try {
    await runExec(source, base);
  } catch (err) {
    failed = true;
    throw err;
  } finally {
    // Released before the reply, so that a creator who sees the exec settle sees the ends released.
    if (release === "settled" || (release === "failed" && failed)) {
      const closeError = closeAll(ends);
      if (closeError !== undefined && !failed) throw closeError;
    }
  }
}

async function handle(request: ControlRequest): Promise<void> {
  try {
    switch (request.type) {
      case "exec":
        addRunning(1);
        try {
          await runExecRequest(decodeFromPost(request.bind), request.source, request.base ?? CWD_BASE, request.release);
        } finally {
          addRunning(-1);
        }
        reply({ type: "reply", req: request.req, ok: true });
        return;
      case "call": {
        addRunning(1);
        let result: unknown;
        try {
          const label = request.label ?? request.module;
          result = await runCall(request.module, request.base, label, request.exportName, decodeFromPost(request.args) as unknown[]);
        } finally {
          addRunning(-1);
        }
        const value = encodeForPost(result, request.creatorSlot, `to ${describeSlot(request.creatorSlot)}`);
        reply({ type: "reply", req: request.req, ok: true, value });
        return;
      }
      case "prepareMain":
        setGlobals(decodeFromPost(request.bind));
        reply({ type: "reply", req: request.req, ok: true });
        return;
      case "wrap": {
        let namespace: Record<string, unknown>;
        try {
          namespace = await importModule(request.module, request.base, request.label ?? request.module);
        } catch (err) {
          request.port.close(); // nothing will answer on it: the creator rejects every call with this error
          throw err;
        }
        Comlink.expose(namespace, nodeEndpoint(request.port));
        reply({ type: "reply", req: request.req, ok: true });
        return;
      }
      case "close":
        await whenIdle();
        reply({ type: "reply", req: request.req, ok: true });
        // Ends are released by the supervisor when this thread is gone.
        setImmediate(() => process.exit(0));
        return;
    }
  } catch (err) {
    const error = err instanceof LoadFailure ? err.toRecord() : errorToRecord(err);
    reply({ type: "reply", req: request.req, ok: false, error });
  }
}

let running = 0;
let idleWaiters: Array<() => void> = [];
function whenIdle(): Promise<void> {
  if (running === 0) return Promise.resolve();
  return new Promise((resolve) => idleWaiters.push(resolve));
}

port.on("message", (request: ControlRequest) => {
  if (request.type === "close") {
    void handle(request);
    return;
  }
  running++;
  void handle(request).finally(() => {
    if (--running === 0) {
      const waiters = idleWaiters;
      idleWaiters = [];
      for (const resolve of waiters) resolve();
    }
  });
});

setSlotState(mySlot, PartyState.LIVE);
reply({ type: "ready" });
