/**
 * Module specifiers given to `call`, `wrap` and imports in `exec` source:
 * what they resolve against, and how errors name them.
 *
 * A `URL` (or a string with a scheme: `file:`, `data:`, `node:`) is used as
 * it is, and an absolute path becomes a `file:` URL. A relative string
 * (`./x.js`, `../lib/x.js`) and a bare one (`lodash`, `#internal`) resolve
 * as they would in an `import` written in the file that made the call: the
 * first file on the calling stack that is not part of this library. When no
 * such file is known (code typed at the REPL, a stack trace limit of 0,
 * `eval`), they resolve against the current working directory, and an error
 * about the module says so.
 *
 * Inside an interpreter, the calling file of code run by `exec` is the file
 * whose `exec` sent it (its base), so nested interpreters resolve as their
 * parent's code would.
 */
import { pathToFileURL } from "node:url";

/** Where a module specifier was resolved against. */
export interface ModuleBase {
  /** A URL (the calling file, or the current directory with a trailing slash). */
  url: string;
  /** True when `url` is the calling file; false when no file is known and `url` is the current directory. */
  fromCaller: boolean;
}

/** A module named by a caller, resolved as far as this thread can. */
export interface ModuleTarget {
  /** What the caller gave, for messages. */
  specifier: string;
  /**
   * The absolute URL to import, or the bare specifier (a package name,
   * `#import`) that the interpreter resolves against `base`.
   */
  module: string;
  /** Where `specifier` was (or is to be) resolved against. */
  base: ModuleBase;
  /** How errors name it: the specifier, the base and what it resolved to. */
  label: string;
}

/** The folders of this library's own code: frames there are never "the calling file". */
const LIBRARY_FOLDERS = [new URL(".", import.meta.url).href, new URL("../workers/", import.meta.url).href];

/**
 * Bases of code run by `exec` in this thread, by its source name (see
 * execSourceName): a call made from that code resolves against the file
 * whose `exec` sent it. Bounded: for older code, its name, a file URL in the
 * base's folder, is the calling file (which resolves the same way).
 */
const execBases = new Map<string, ModuleBase>();
const MAX_EXEC_BASES = 1024;
let execCount = 0;

/**
 * A new name for a piece of `exec` source, remembering its base: a file URL
 * beside the base, `file:///app/[exec-3]` (as Node names `-e` code
 * `[eval1]`). It is the source's `//# sourceURL`, so stack traces show it;
 * being a URL in the base's folder, anything that resolves a specifier
 * against it (Node does, to explain a missing export) gets the base's
 * answer.
 */
export function execSourceName(base: ModuleBase): string {
  const name = new URL(`[exec-${++execCount}]`, base.url).href;
  execBases.set(name, base);
  if (execBases.size > MAX_EXEC_BASES) execBases.delete(execBases.keys().next().value!);
  return name;
}

/** The current working directory as a URL with a trailing slash. */
function cwdBase(): ModuleBase {
  return { url: pathToFileURL(`${process.cwd()}/`).href, fromCaller: false };
}

/**
 * The call sites of the current stack (V8's structured stack trace API).
 * Error.prepareStackTrace is swapped only for the duration of this
 * synchronous call, and the stack is read before it is put back.
 */
function callSites(): NodeJS.CallSite[] {
  const savedPrepare = Error.prepareStackTrace;
  const savedLimit = Error.stackTraceLimit;
  try {
    Error.prepareStackTrace = (_error, sites) => sites;
    Error.stackTraceLimit = 50;
    const holder: { stack?: unknown } = {};
    Error.captureStackTrace(holder, callSites);
    const sites = holder.stack;
    return Array.isArray(sites) ? (sites as NodeJS.CallSite[]) : [];
  } catch {
    return [];
  } finally {
    Error.prepareStackTrace = savedPrepare;
    Error.stackTraceLimit = savedLimit;
  }
}

/** A frame's file as a URL: file URLs as they are, absolute paths converted; undefined for anything else. */
function frameFileUrl(fileName: string): string | undefined {
  if (fileName.startsWith("file:")) return fileName;
  if (fileName.startsWith("/") || /^[a-zA-Z]:[\\/]/.test(fileName)) return pathToFileURL(fileName).href;
  return undefined;
}

/**
 * The file that called into the library: the first frame on the stack
 * outside this library's folders and outside Node's own code. Code run by
 * `exec` counts as its sender's file. Falls back to the current directory.
 */
export function callerBase(): ModuleBase {
  for (const site of callSites()) {
    // The source's //# sourceURL when it has one (exec code does), else its file.
    const fileName = site.getScriptNameOrSourceURL?.() ?? site.getFileName();
    if (!fileName || fileName.startsWith("node:")) continue;
    const fromExec = execBases.get(fileName) ?? baseOfDataModule(fileName);
    if (fromExec) return fromExec;
    const url = frameFileUrl(fileName);
    if (url === undefined) continue;
    if (LIBRARY_FOLDERS.some((folder) => url.startsWith(folder))) continue;
    return { url, fromCaller: true };
  }
  return cwdBase();
}

/** The base a data: module of exec source carries (workers/interpreter.ts), if `url` is one. */
function baseOfDataModule(url: string): ModuleBase | undefined {
  if (!url.startsWith("data:")) return undefined;
  const match = /;base=([^;,]*)/.exec(url.slice(0, url.indexOf(",")));
  return match ? { url: decodeURIComponent(match[1]!), fromCaller: true } : undefined;
}

/** True for a string that is an absolute URL (has a scheme). Windows drive paths (`C:\`) are not. */
function hasScheme(specifier: string): boolean {
  return /^[a-zA-Z][a-zA-Z0-9+.-]*:/.test(specifier) && !/^[a-zA-Z]:[\\/]/.test(specifier);
}

function isRelative(specifier: string): boolean {
  return specifier.startsWith("./") || specifier.startsWith("../") || specifier === "." || specifier === "..";
}

/** How messages name a base: "file:///app/main.ts (the calling file)". */
export function describeBase(base: ModuleBase): string {
  return base.fromCaller
    ? `${base.url} (the calling file)`
    : `${base.url} (the current directory: no calling file is known; pass a URL, e.g. new URL("./x.js", import.meta.url))`;
}

/**
 * Resolves `module` as given to `api` ("call", "wrap"): a URL or absolute
 * path as it is, a relative or bare specifier against the calling file.
 * Throws TypeError for anything but a non-empty string or a URL.
 */
export function resolveModule(module: string | URL, api: string): ModuleTarget {
  if (module instanceof URL) {
    return { specifier: module.href, module: module.href, base: { url: module.href, fromCaller: false }, label: module.href };
  }
  if (typeof module !== "string" || module === "") {
    throw new TypeError(`${api}: module must be a URL or a non-empty string (a path or specifier), got ${module === "" ? "an empty string" : typeof module}`);
  }
  if (hasScheme(module)) return { specifier: module, module, base: { url: module, fromCaller: false }, label: module };
  if (module.startsWith("/") || /^[a-zA-Z]:[\\/]/.test(module)) {
    const href = pathToFileURL(module).href;
    return { specifier: module, module: href, base: { url: href, fromCaller: false }, label: `${JSON.stringify(module)} (${href})` };
  }
  const base = callerBase();
  if (isRelative(module)) {
    const href = new URL(module, base.url).href;
    return { specifier: module, module: href, base, label: `${JSON.stringify(module)}, resolved against ${describeBase(base)} to ${href}` };
  }
  return { specifier: module, module, base, label: `${JSON.stringify(module)}, resolved against ${describeBase(base)}` };
}
